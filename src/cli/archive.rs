//! `vellum archive prune <DIR> [--retention POLICY]`: applies the archive's retention now, or
//! sets a new policy (stored in the store: every later open applies it) and applies it.

use std::path::PathBuf;

use vellum::{Retention, SyncMode};

use super::common::{Failure, dir_usage, human_bytes, open_store};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Delete the base images and archived log the retention policy does not keep (nothing a
    /// kept base image needs). With --retention, first store that policy for the store.
    Prune(PruneArgs),
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// The store.
    pub dir: PathBuf,
    /// The policy to store and apply: keep-all, keep-last:N (base images) or max-bytes:SIZE.
    #[arg(long, value_name = "POLICY", value_parser = parse_retention)]
    pub retention: Option<Retention>,
}

/// A retention policy as the command line takes it (`max-bytes` takes size suffixes).
pub fn parse_retention(text: &str) -> Result<Retention, String> {
    if let Some(size) = text.strip_prefix("max-bytes:") {
        return Ok(Retention::MaxBytes(super::common::parse_bytes(size)?));
    }
    match text.parse::<Retention>()? {
        Retention::Stored => Err("give a policy: keep-all, keep-last:N or max-bytes:SIZE".into()),
        policy => Ok(policy),
    }
}

pub fn run(command: Command) -> Result<(), Failure> {
    let Command::Prune(args) = command;
    let dir = &args.dir;
    let (_, before) = dir_usage(&dir.join("archive"));
    let store = open_store(dir, SyncMode::Always)?;
    let pruned = match args.retention {
        Some(policy) => store.set_retention(policy),
        None => store.prune_archive(),
    };
    pruned.map_err(|e| Failure::from_error(format!("pruning the archive of {}", dir.display()), e))?;
    let policy = store.retention();
    store
        .close()
        .map_err(|e| Failure::from_error(format!("closing {}", dir.display()), e))?;
    let (files, after) = dir_usage(&dir.join("archive"));
    println!(
        "archive of {} kept under {policy}: {files} files, {} (was {})",
        dir.display(),
        human_bytes(after),
        human_bytes(before)
    );
    Ok(())
}
