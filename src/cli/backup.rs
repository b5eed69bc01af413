//! `vellum backup <DIR> <DEST>`: a consistent copy of a store as a new store at `DEST` (a
//! checkpoint with a base image, then a restore of everything committed; `Store::backup`).
//! A store open in another process is refused (exit 5): only its owner can back it up online.
//! SIGINT or SIGTERM stops the copy (exit 130 or 143): no `DEST`, the store closed as it was.

use std::path::PathBuf;

use vellum::SyncMode;

use super::common::{Failure, open_store};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store to back up.
    pub dir: PathBuf,
    /// Where the copy goes: must not exist.
    pub dest: PathBuf,
    /// Print the report as one JSON object (the fields of `restore --json`).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    if args.dest.exists() {
        return Err(Failure::usage(format!(
            "{} already exists; backup makes a new store",
            args.dest.display()
        )));
    }
    let store = open_store(&args.dir, SyncMode::Always)?;
    // Absolute: the parent of a bare relative name is "", which is no directory to sync.
    let dest = std::path::absolute(&args.dest).unwrap_or_else(|_| args.dest.clone());
    let context = || format!("cannot back up {} into {}", args.dir.display(), args.dest.display());
    let watched = super::restore::watched("backup", &args.dest, context, |watcher| {
        store.backup_watched(&dest, watcher)
    });
    let report = match watched {
        Ok(report) => report,
        Err(failure) => {
            // Closed first either way: a stopped backup leaves the store as it was.
            let _ = store.close();
            return Err(failure);
        }
    };
    store
        .close()
        .map_err(|e| Failure::from_error(format!("closing {}", args.dir.display()), e))?;
    let done = format!("backed up {} into {}", args.dir.display(), args.dest.display());
    super::restore::print_report(&done, &report, args.json);
    Ok(())
}
