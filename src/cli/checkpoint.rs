//! `vellum checkpoint <DIR>`: writes every dirty page, moves the recovery start forward and
//! archives the log it released (and whatever a session that ended without a close left for
//! the archiver).

use std::path::PathBuf;
use std::time::Instant;

use vellum::SyncMode;

use super::common::{Failure, duration, open_store};

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
    // Archives what it released, and what a session that ended without a close left, before
    // it closes (which would archive it too: this says so before `checkpoint at` is printed).
    store
        .archive_now()
        .map_err(|e| Failure::from_error(format!("archiving the log of {}", args.dir.display()), e))?;
    let took = started.elapsed();
    store
        .close()
        .map_err(|e| Failure::from_error(format!("closing {}", args.dir.display()), e))?;
    println!("checkpoint at LSN {lsn} ({})", duration(took));
    Ok(())
}
