//! `vellum restore <SRC> <DEST> (--lsn N | --time T | --latest)`: point-in-time restore into a
//! new store. `SRC` is not modified; a restore that fails leaves no `DEST`.
//!
//! A restore shows its phases when run interactively (a bar for the bytes staged, a spinner
//! for the others). SIGINT or SIGTERM stops it at its next file operation: what it staged is
//! removed, there is no `DEST`, and the exit code is 130 or 143 (`backup` does the same).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};
use vellum::{Lsn, RestorePhase, RestoreProgress, RestoreReport, RestoreTarget};

use super::common::{
    Failure, PhaseBar, check_not_busy, coarse_bytes_bar, duration, parse_lsn, parse_time, print_json, spinner,
};
use super::signals::{catch_stop_signals, stop_signal, stopped_by};

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
    // Absolute paths: the parent of a bare relative name is "", which is no directory to sync.
    let absolute = |path: &PathBuf| std::path::absolute(path).unwrap_or_else(|_| path.clone());
    let src = if remote { args.src.clone() } else { absolute(&args.src) };
    let context = || format!("cannot restore {} into {}", args.src.display(), args.dest.display());
    let report = watched("restore", &args.dest, context, |watcher| {
        vellum::restore_watched(src, absolute(&args.dest), target, watcher)
    })?;
    let done = format!("restored {} into {}", args.src.display(), args.dest.display());
    print_report(&done, &report, args.json);
    Ok(())
}

/// Runs `restore` (a restore or a backup into `dest`, called `what`) watched: a bar per phase,
/// and SIGINT or SIGTERM stop it (exit 130 or 143, nothing kept). Other failures are put in
/// `context`.
pub fn watched(
    what: &str,
    dest: &Path,
    context: impl Fn() -> String,
    restore: impl FnOnce(&mut dyn FnMut(RestoreProgress) -> ControlFlow<()>) -> vellum::Result<RestoreReport>,
) -> Result<RestoreReport, Failure> {
    catch_stop_signals()?;
    let started = Instant::now();
    let mut bar = PhaseBar::new();
    let result = restore(&mut |progress| {
        show(&mut bar, progress);
        match stop_signal() {
            Some(_) => ControlFlow::Break(()),
            None => ControlFlow::Continue(()),
        }
    });
    bar.finish();
    match result {
        Err(vellum::Error::Interrupted(_)) => {
            let signal = stop_signal().expect("only a stop signal stops a restore");
            let kept = format!(
                "the {what} stopped after {}; nothing of it was kept, and {} was not made",
                duration(started.elapsed()),
                dest.display()
            );
            Err(stopped_by(signal, &kept))
        }
        Err(e) => Err(Failure::from_error(context(), e)),
        Ok(report) => Ok(report),
    }
}

/// Shows a restore's progress: a bar of bytes for a phase with a measure, else a spinner.
fn show(bar: &mut PhaseBar<RestorePhase>, progress: RestoreProgress) {
    let message = match progress.phase {
        RestorePhase::Planning => "reading the archive",
        RestorePhase::StageArena => "staging the base image",
        RestorePhase::StageLog => "staging the log",
        RestorePhase::FindCut => "finding the target",
        RestorePhase::Replay => "replaying the log",
        _ => "starting the new timeline",
    };
    bar.show(progress.phase, progress.done, || match progress.total {
        0 => spinner(message),
        total => coarse_bytes_bar(total, message),
    });
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
