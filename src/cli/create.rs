//! `vellum create <DIR> --dim <N>`: a new, empty store.

use std::path::PathBuf;

use vellum::{Error, Options, Store};

use super::common::{Failure, SyncArgs, parse_bytes};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The directory of the new store (created if missing; must not hold a store).
    pub dir: PathBuf,
    /// The number of components of every vector.
    #[arg(long, value_name = "N")]
    pub dim: u32,
    /// Page size of the log and the arena: a power of two from 4 KiB to 1 MiB.
    #[arg(long, value_name = "BYTES", default_value = "16384", value_parser = parse_page_size)]
    pub page_size: u32,
    /// Size of each log segment and arena file: a multiple of the page size, at least 5 pages.
    #[arg(long, value_name = "BYTES", default_value = "16777216", value_parser = parse_bytes)]
    pub segment_size: u64,
    /// What the archive keeps, stored in the store for every later open: keep-all,
    /// keep-last:N (base images, with the log they need; default keep-last:2) or max-bytes:SIZE.
    #[arg(long, value_name = "POLICY", value_parser = super::archive::parse_retention)]
    pub retention: Option<vellum::Retention>,
    #[command(flatten)]
    pub sync: SyncArgs,
    /// Ship the archive to object storage: s3://bucket/prefix, gs://…, az://…, file:///…
    /// (stored: every later open ships). Credentials come from the environment.
    #[arg(long, value_name = "URL")]
    pub archive_url: Option<String>,
    /// With --archive-url: ship the live log after this long (e.g. 10s; stored).
    #[arg(long, value_name = "DURATION", value_parser = super::common::parse_duration, requires = "archive_url")]
    pub archive_timeout: Option<std::time::Duration>,
}

fn parse_page_size(text: &str) -> Result<u32, String> {
    let bytes = parse_bytes(text)?;
    u32::try_from(bytes).map_err(|_| format!("page size {bytes} is larger than 1 MiB"))
}

pub fn run(args: Args) -> Result<(), Failure> {
    let options = Options {
        sync: args.sync.mode()?,
        page_size_bytes: args.page_size,
        segment_size_bytes: args.segment_size,
        retention: args.retention.unwrap_or(vellum::Retention::Stored),
        archive_url: args.archive_url.clone(),
        archive_timeout: args.archive_timeout,
        ..super::common::base_options()
    };
    let dir = &args.dir;
    let store = match Store::create(dir, args.dim, options) {
        Ok(store) => store,
        Err(Error::AlreadyExists) => {
            return Err(Failure::usage(format!("a store already exists at {}", dir.display())));
        }
        Err(e) => {
            return Err(Failure::from_error(
                format!("cannot create a store at {}", dir.display()),
                e,
            ));
        }
    };
    store
        .close()
        .map_err(|e| Failure::from_error(format!("closing the new store at {}", dir.display()), e))?;
    println!(
        "created {} (dimension {}, {}-byte pages, {}-byte segments)",
        dir.display(),
        args.dim,
        args.page_size,
        args.segment_size
    );
    Ok(())
}
