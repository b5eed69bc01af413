//! `vellum verify <DIR>`: checks every checksum of the store without changing anything
//! (`vellum::inspect::verify_store`), and prints what it found.

use std::path::PathBuf;

use serde_json::{Value, json};
use vellum::inspect::{Progress, Report, Severity};

use super::common::{EXIT_NOT_FOUND, Failure, human_bytes, print_json, progress_bar};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store.
    pub dir: PathBuf,
    /// Print the report as one JSON object (README, "verify --json").
    #[arg(long)]
    pub json: bool,
}

/// A progress bar as verify's progress.
struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn phase(&self, message: &str, total: u64) {
        self.0.set_message(message.to_string());
        self.0.set_length(total);
        self.0.set_position(0);
    }

    fn position(&self, done: u64) {
        self.0.set_position(done);
    }
}

/// Verifies the store in `dir` (a progress bar on stderr if `show_progress` and interactive).
pub fn verify_store(dir: &std::path::Path, show_progress: bool) -> Result<Report, Failure> {
    let bar = Bar(if show_progress {
        progress_bar(1, "verifying", true)
    } else {
        indicatif::ProgressBar::hidden()
    });
    let report = vellum::inspect::verify_store(dir, &bar)
        .map_err(|e| Failure::from_error(format!("cannot verify {}", dir.display()), e));
    bar.0.finish_and_clear();
    report
}

pub fn run(args: Args) -> Result<(), Failure> {
    let report = verify_store(&args.dir, true)?;
    if args.json {
        print_json(&to_json(&report));
    } else {
        print_text(&report);
    }
    if report.clean() {
        return Ok(());
    }
    let first = report
        .problems
        .iter()
        .find(|p| p.severity == Severity::Failure)
        .map(|p| p.describe())
        .unwrap_or_default();
    Err(Failure::new(
        EXIT_NOT_FOUND,
        format!(
            "{} failed verification with {} failures (first: {first})",
            args.dir.display(),
            report.failures()
        ),
    ))
}

pub fn to_json(report: &Report) -> Value {
    let this = report;
    json!({
        "store": this.store.display().to_string(),
        "clean": this.clean(),
        "failures": this.failures(),
        "warnings": this.warnings(),
        "control": {
            "slots": this.slots.iter().enumerate().map(|(i, s)| json!({
                "slot": i,
                "valid": s.valid,
                "sequence": s.sequence,
                "error": s.error,
            })).collect::<Vec<_>>(),
            "in_force": this.in_force,
        },
        "wal": {
            "checked": this.wal_checked,
            "segments": this.wal_segments,
            "records": this.wal_records,
            "start_lsn": this.wal_start_lsn,
            "end_lsn": this.wal_end_lsn,
            "torn_tail": this.torn_tail.as_ref().map(|(lsn, reason)| json!({"lsn": lsn, "reason": reason})),
        },
        "arena": {
            "checked": this.arena_checked,
            "catalog_pages": this.catalog_pages,
            "vector_pages": this.vector_pages,
            "damaged_pages": this.damaged_pages,
        },
        "doublewrite": {
            "present": this.doublewrite_present,
            "valid_header": this.doublewrite_valid_header,
            "batch_seq": this.doublewrite_batch_seq,
            "images": this.doublewrite_images,
            "intact_images": this.doublewrite_intact_images,
        },
        "archive": {
            "present": this.archive_present,
            "checked": this.archive_checked,
            "checked_files": this.archive_checked_files,
            "files": this.archive_files,
            "bytes": this.archive_bytes,
        },
        "notes": this.notes,
        "problems": this.problems.iter().map(|p| json!({
            "severity": match p.severity { Severity::Failure => "failure", Severity::Warning => "warning" },
            "component": p.component,
            "file": p.file,
            "page": p.page,
            "lsn": p.lsn,
            "reason": p.reason,
        })).collect::<Vec<_>>(),
    })
}

pub fn print_text(report: &Report) {
    let this = report;
    println!("store: {}", this.store.display());
    println!("control: {}", control_slots(this).join("; "));
    print_wal_and_arena(this);
    print_doublewrite_and_archive(this);
    print_findings(this);
}

/// One phrase per control file slot: valid (with its sequence), invalid or unread.
fn control_slots(report: &Report) -> Vec<String> {
    let this = report;
    this.slots
        .iter()
        .enumerate()
        .map(|(i, s)| match (&s.error, s.sequence) {
            (None, Some(seq)) => {
                let force = if this.in_force == Some(i) { ", in force" } else { "" };
                format!("slot {i} valid (sequence {seq}{force})")
            }
            (Some(e), _) => format!("slot {i} INVALID ({e})"),
            (None, None) => format!("slot {i} unread"),
        })
        .collect()
}

/// Prints what the check of the log and of the arena found (or that they were not checked).
fn print_wal_and_arena(report: &Report) {
    let this = report;
    if this.wal_checked {
        let end = match &this.torn_tail {
            Some((lsn, _)) => format!("torn tail at {lsn}"),
            None => "clean end".into(),
        };
        println!(
            "wal: {} segments, {} records, LSN {}..{}, {end}",
            this.wal_segments, this.wal_records, this.wal_start_lsn, this.wal_end_lsn
        );
    } else {
        println!("wal: not checked");
    }
    if this.arena_checked {
        println!(
            "arena: {} catalog pages, {} vector pages, {} damaged",
            this.catalog_pages, this.vector_pages, this.damaged_pages
        );
    } else {
        println!("arena: not checked");
    }
}

/// Prints what the check of the doublewrite file and of the archive found.
fn print_doublewrite_and_archive(report: &Report) {
    let this = report;
    if this.doublewrite_present {
        match this.doublewrite_batch_seq {
            Some(seq) => println!(
                "doublewrite: batch {seq}, {} images, {} intact (informational)",
                this.doublewrite_images, this.doublewrite_intact_images
            ),
            None => println!("doublewrite: no batch written yet (informational)"),
        }
    } else {
        println!("doublewrite: none yet");
    }
    if this.archive_present {
        println!(
            "archive: {} files, {}, {} checked",
            this.archive_files,
            human_bytes(this.archive_bytes),
            this.archive_checked_files
        );
    } else {
        println!("archive: none");
    }
}

/// Prints the notes, each problem with its severity, and the verdict.
fn print_findings(report: &Report) {
    let this = report;
    for note in &this.notes {
        println!("note: {note}");
    }
    for problem in &this.problems {
        let label = match problem.severity {
            Severity::Failure => "FAILURE",
            Severity::Warning => "WARNING",
        };
        println!("{label} {}", problem.describe());
    }
    if this.clean() {
        println!("clean ({} warnings)", this.warnings());
    } else {
        println!("NOT CLEAN: {} failures, {} warnings", this.failures(), this.warnings());
    }
}
