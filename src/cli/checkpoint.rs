//! `vellum checkpoint <DIR>`: writes every dirty page, moves the recovery start forward and
//! archives the log it released (and whatever earlier closes left for the archiver).

use std::path::PathBuf;
use std::time::Instant;

use vellum::SyncMode;

use super::common::{Failure, ms, open_store};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store.
    pub dir: PathBuf,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let store = open_store(&args.dir, SyncMode::Always)?;
    let started = Instant::now();
    let lsn = store
        .checkpoint()
        .map_err(|e| Failure::from_error(format!("checkpointing {}", args.dir.display()), e))?;
    // A short-lived process archives what it released before it closes (a close would leave
    // it, and what earlier closes left, to the next session).
    store
        .archive_now()
        .map_err(|e| Failure::from_error(format!("archiving the log of {}", args.dir.display()), e))?;
    let took = started.elapsed();
    store
        .close()
        .map_err(|e| Failure::from_error(format!("closing {}", args.dir.display()), e))?;
    println!("checkpoint at LSN {lsn} ({})", ms(took));
    Ok(())
}
