//! `vellum restore <SRC> <DEST> (--lsn N | --time T | --latest)`: point-in-time restore into a
//! new store. `SRC` is not modified; a restore that fails leaves no `DEST`.

use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::{Value, json};
use vellum::{Lsn, RestoreReport, RestoreTarget};

use super::common::{Failure, check_not_busy, duration, parse_lsn, parse_time, print_json, spinner};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["lsn", "time", "latest"])))]
pub struct Args {
    /// The store to restore from (with its archive), or the URL of the remote archive a store
    /// ships to (s3://bucket/prefix, gs://…, az://…, file:///…).
    pub src: PathBuf,
    /// Where the restored store goes: must not exist.
    pub dest: PathBuf,
    /// Include every record at or before this LSN (e.g. a commit LSN from wal-dump).
    #[arg(long, value_name = "LSN", value_parser = parse_lsn)]
    pub lsn: Option<u64>,
    /// Include every transaction committed at or before this RFC 3339 instant.
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub time: Option<SystemTime>,
    /// Everything in the log.
    #[arg(long)]
    pub latest: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The JSON form of a restore report (README, "restore --json").
pub fn report_json(report: &RestoreReport) -> Value {
    json!({
        "base_image_lsn": report.base_image_lsn.get(),
        "target_lsn": report.target_lsn.get(),
        "wal_bytes": report.wal_bytes,
        "records_redone": report.records_redone,
        "rolled_back": report.rolled_back,
        "segments_from_archive": report.segments_from_archive,
        "segments_live": report.segments_live,
        "timeline": report.timeline,
        "duration_us": report.duration.as_micros() as u64,
        "phases_us": report
            .phases
            .iter()
            .map(|(name, time)| json!([name, time.as_micros() as u64]))
            .collect::<Vec<_>>(),
    })
}

pub fn run(args: Args) -> Result<(), Failure> {
    let target = match (args.lsn, args.time, args.latest) {
        (Some(lsn), None, false) => RestoreTarget::Lsn(Lsn(lsn)),
        (None, Some(time), false) => RestoreTarget::Time(time),
        (None, None, true) => RestoreTarget::Latest,
        _ => return Err(Failure::usage("give exactly one of --lsn, --time and --latest")),
    };
    if args.dest.exists() {
        return Err(Failure::usage(format!(
            "{} already exists; restore makes a new store",
            args.dest.display()
        )));
    }
    let remote = args.src.to_str().is_some_and(vellum::is_archive_url);
    if !remote {
        check_not_busy(&args.src)?;
    }
    let bar = spinner(&format!(
        "restoring {} into {}",
        args.src.display(),
        args.dest.display()
    ));
    // Absolute paths: the parent of a bare relative name is "", which is no directory to sync.
    let absolute = |path: &PathBuf| std::path::absolute(path).unwrap_or_else(|_| path.clone());
    let src = if remote { args.src.clone() } else { absolute(&args.src) };
    let result = vellum::restore(src, absolute(&args.dest), target);
    bar.finish_and_clear();
    let report = result.map_err(|e| {
        Failure::from_error(
            format!("cannot restore {} into {}", args.src.display(), args.dest.display()),
            e,
        )
    })?;
    let done = format!("restored {} into {}", args.src.display(), args.dest.display());
    print_report(&done, &report, args.json);
    Ok(())
}

/// Prints a restore report (also a backup's): as one JSON object, or as lines that begin with
/// `done` ("restored A into B").
pub fn print_report(done: &str, report: &RestoreReport, json: bool) {
    if json {
        print_json(&report_json(report));
        return;
    }
    println!(
        "{done} at LSN {} (timeline {}) in {}",
        report.target_lsn,
        report.timeline,
        duration(report.duration)
    );
    println!(
        "from the base image at LSN {}: {} log bytes, {} records redone, {} archived and {} live segments",
        report.base_image_lsn,
        report.wal_bytes,
        report.records_redone,
        report.segments_from_archive,
        report.segments_live
    );
    if !report.rolled_back.is_empty() {
        println!(
            "rolled back {} transactions open at the target: {:?}",
            report.rolled_back.len(),
            report.rolled_back
        );
    }
}
