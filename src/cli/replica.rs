//! `vellum replica <URL> <DEST>`: a read replica of the remote archive a store ships to. The
//! first run restores `DEST` from the bucket alone; then (and on later runs) it fetches the log
//! as the primary ships it, printing one line per refresh, until stopped (SIGINT, SIGTERM: the
//! directory is consistent at every instant) or, with `--once`, once it has caught up.
//! Readers open `DEST` as any store (`get`, `search`, `stats`): it opens read-only.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use vellum::{Replica, ReplicaOptions, ReplicaStatus, Store};

use super::common::{Failure, parse_duration, print_json};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The remote archive: s3://bucket/prefix, gs://…, az://…, file:///…
    pub url: String,
    /// The replica's directory (restored from the bucket if it does not exist).
    pub dest: PathBuf,
    /// How often to look for new log.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub poll: Duration,
    /// The generation to follow (`<store id>-<timeline>`); default: the one shipped to last.
    #[arg(long, value_name = "NAME")]
    pub generation: Option<String>,
    /// Catch up once and exit.
    #[arg(long)]
    pub once: bool,
    /// Print each refresh as one JSON object a line.
    #[arg(long)]
    pub json: bool,
}

fn status_json(status: &ReplicaStatus) -> Value {
    json!({
        "url": status.url,
        "generation": status.generation,
        "base_lsn": status.base_lsn,
        "applied_lsn": status.applied_lsn,
        "refreshes": status.refreshes,
        "rebases": status.rebases,
        "last_error": status.last_error,
    })
}

/// The `ship` object of `stats --json`: null for a store that does not ship.
pub fn ship_json(store: &Store) -> Value {
    let Some(status) = store.ship_now(Duration::from_secs(5)) else {
        return Value::Null;
    };
    json!({
        "url": status.url,
        "generation": status.generation,
        "shipped_lsn": status.shipped_lsn,
        "durable_lsn": status.durable_lsn,
        "lag_bytes": status.lag_bytes,
        "lag_seconds": status.lag_seconds,
        "pending_files": status.pending_files,
        "uploaded_objects": status.uploaded_objects,
        "uploaded_bytes": status.uploaded_bytes,
        "refused": status.refused,
        "last_error": status.last_error,
    })
}

fn report(status: &ReplicaStatus, json: bool) {
    if json {
        print_json(&status_json(status));
    } else {
        println!(
            "applied to LSN {} (base image {}, generation {})",
            status.applied_lsn, status.base_lsn, status.generation
        );
    }
}

pub fn run(args: Args) -> Result<(), Failure> {
    let options = ReplicaOptions {
        poll: args.poll,
        generation: args.generation.clone(),
        ..ReplicaOptions::default()
    };
    let fail = |e| Failure::from_error(format!("replica of {} at {}", args.url, args.dest.display()), e);
    let replica = Replica::open(&args.url, &args.dest, options).map_err(fail)?;
    replica.poll().map_err(fail)?;
    report(&replica.status(), args.json);
    if args.once {
        return Ok(());
    }
    loop {
        std::thread::sleep(args.poll);
        match replica.poll() {
            Ok(true) => report(&replica.status(), args.json),
            Ok(false) => {}
            Err(e) => eprintln!("vellum: replica: {e} (retrying)"),
        }
    }
}
