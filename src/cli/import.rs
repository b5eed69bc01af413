//! `vellum import <DIR> <FILE>`: loads records in transactions of `--batch` records.
//!
//! Records are upserted: an id already present is replaced, so an interrupted import can be run
//! again from the start. With `--ack`, a line holding the running total of committed records
//! goes to stdout after each commit once it is durable, and nothing else does.
//!
//! SIGINT or SIGTERM stops an import between batches: the batch in flight is committed, the
//! store is closed (so every commit is durable), stderr says how many records that is, and the
//! exit code is 130 or 143. The handler resets itself, so a second signal ends the process at
//! once (the next open recovers, as after a crash).

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::ProgressBar;
use vellum::{Error, Lsn, Store, SyncMode};

use super::common::{
    EXIT_INPUT, EXIT_USAGE, Failure, SyncArgs, error_code, open_store, open_store_with, progress_bar, spinner,
};
use super::input::{self, Format};
use super::read_ahead::{self, Batch, Read};
use super::signals::{catch_stop_signals, stop_signal, stopped_by};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store.
    pub dir: PathBuf,
    /// The input file; `-` reads standard input (give `--format`, default jsonl).
    pub file: PathBuf,
    /// The input format (default: from the extension: .jsonl/.ndjson/.json, .fvecs, .npy).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Records per transaction.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// After each durable commit, print the total number of records committed so far (and
    /// nothing else on stdout).
    #[arg(long)]
    pub ack: bool,
    /// Like --ack, with the commit record's LSN after the count ("<count> <lsn>").
    #[arg(long, hide = true)]
    pub ack_lsn: bool,
    /// Write each vector to the disk once: this run keeps no archive (point-in-time restore
    /// cannot reach into it; the next run with the archive stores a base image) and writes the
    /// fresh pages it fills itself before each commit, their vectors logged as stored writes
    /// (fewer bytes on the disk; slower on the reference machine: see the README).
    #[arg(long)]
    pub stored_writes: bool,
    #[command(flatten)]
    pub sync: SyncArgs,
}

/// Acknowledgements waiting for their commit to become durable.
struct Acks {
    enabled: bool,
    with_lsn: bool,
    waiting: VecDeque<(Lsn, u64)>,
}

impl Acks {
    /// Prints every waiting acknowledgement whose commit record lies below `durable`.
    fn release(&mut self, durable: Lsn) -> Result<(), Failure> {
        let mut out = std::io::stdout().lock();
        while let Some(&(lsn, count)) = self.waiting.front() {
            if lsn >= durable {
                break;
            }
            self.waiting.pop_front();
            if !self.enabled {
                continue;
            }
            let line = if self.with_lsn {
                writeln!(out, "{count} {}", lsn.get())
            } else {
                writeln!(out, "{count}")
            };
            line.and_then(|()| out.flush())
                .map_err(|e| Failure::io("writing an acknowledgement to stdout", e))?;
        }
        Ok(())
    }
}

pub fn run(args: Args) -> Result<(), Failure> {
    let format = input_format(&args)?;
    let sync = args.sync.mode()?;
    catch_stop_signals()?;
    let store = open_for_import(&args, sync)?;
    let (source, total_bytes) = input::open(&args.file, format, store.dimension())?;
    let bar = match total_bytes {
        Some(total) => progress_bar(total, "importing", true),
        None => spinner("importing"),
    };
    let mut acks = Acks {
        enabled: args.ack || args.ack_lsn,
        with_lsn: args.ack_lsn,
        waiting: VecDeque::new(),
    };
    let started = Instant::now();
    let outcome = read_ahead::spawn(source, args.batch, read_ahead::parse_threads())
        .and_then(|batches| import_batches(&args, &store, &batches, &mut acks, &bar, sync));
    bar.finish_and_clear();
    // However the import ends (the input's end, a bad record, a signal), the store is closed,
    // which makes every commit durable whatever the sync mode: what the messages say stays,
    // stays. (Dropping it would not sync.) Then the acknowledgements still due are printed.
    let closed = store
        .close()
        .map_err(|e| Failure::from_error(format!("closing {}", args.dir.display()), e));
    let committed = committed_once_closed(outcome, closed, &mut acks)?;
    acks.release(Lsn(u64::MAX))?;
    report_end(&args, &acks, committed, started)
}

/// The input's format: `--format`, else the one its file name's extension says.
fn input_format(args: &Args) -> Result<Format, Failure> {
    if args.file.as_os_str() == input::STDIN {
        return Ok(args.format.unwrap_or(Format::Jsonl));
    }
    match args.format.or_else(|| Format::from_path(&args.file)) {
        Some(format) => Ok(format),
        None => Err(Failure::usage(format!(
            "cannot tell the format of {} from its extension; pass --format jsonl, fvecs or npy",
            input::display_name(&args.file)
        ))),
    }
}

/// Opens the store to import into (without its archive and with stored writes under
/// `--stored-writes`).
fn open_for_import(args: &Args, sync: SyncMode) -> Result<Store, Failure> {
    if args.stored_writes {
        let options = vellum::Options {
            archive: false,
            stored_writes: true,
            ..super::common::base_options()
        };
        open_store_with(&args.dir, sync, options)
    } else {
        open_store(&args.dir, sync)
    }
}

/// The records the import committed, given how it ended (`outcome`) and how the store's close
/// did; a failure of either is the error, after the acknowledgements due if the close succeeded.
fn committed_once_closed(
    outcome: Result<u64, Failure>,
    closed: Result<(), Failure>,
    acks: &mut Acks,
) -> Result<u64, Failure> {
    match (outcome, closed) {
        (Ok(committed), Ok(())) => Ok(committed),
        (Err(failure), Ok(())) => {
            acks.release(Lsn(u64::MAX))?;
            Err(failure)
        }
        (Ok(_), Err(close)) => Err(close),
        (Err(failure), Err(close)) => Err(Failure::new(
            close.code,
            format!("{} (after: {})", close.message, failure.message),
        )),
    }
}

/// Reports how the import ended: an error naming the stop signal if one stopped it, else
/// (without acknowledgements) a line with the records imported and the rate.
fn report_end(args: &Args, acks: &Acks, committed: u64, started: Instant) -> Result<(), Failure> {
    if let Some(signal) = stop_signal() {
        let what = format!(
            "the import stopped between batches; {committed} records are committed and durable in {} (records \
             are upserted: run the import again to load the rest)",
            args.dir.display()
        );
        return Err(stopped_by(signal, &what));
    }
    if !acks.enabled {
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "imported {committed} records from {} into {} in {seconds:.2} s ({:.0} records/s)",
            input::display_name(&args.file),
            args.dir.display(),
            committed as f64 / seconds.max(1e-9)
        );
    }
    Ok(())
}

/// Commits batch after batch, as the reader thread hands them over, until the input ends or a
/// stop signal arrives (checked before each batch); returns the number of records committed.
fn import_batches(
    args: &Args,
    store: &Store,
    batches: &read_ahead::Batches,
    acks: &mut Acks,
    bar: &ProgressBar,
    sync: SyncMode,
) -> Result<u64, Failure> {
    let mut committed = 0u64;
    while stop_signal().is_none() {
        let batch = match batches.next() {
            Read::Batch(batch) => batch,
            Read::End => break,
            Read::Failed { failure, first: true } => return Err(failure),
            Read::Failed { failure, first: false } => return Err(stopped(failure, &args.dir, committed)),
        };
        let (lsn, in_batch) = import_batch(args, store, &batch, committed)?;
        committed += in_batch;
        acks.waiting.push_back((lsn, committed));
        if sync == SyncMode::Always {
            // The commit returned after its record was durable.
            acks.release(Lsn(u64::MAX))?;
        } else {
            acks.release(store.durable_lsn())?;
        }
        bar.set_position(batch.bytes_read);
    }
    Ok(committed)
}

/// Upserts `batch` in one transaction and commits it; returns the commit's LSN and how many
/// records it holds. A bad record rolls the batch back.
fn import_batch(args: &Args, store: &Store, batch: &Batch, committed: u64) -> Result<(Lsn, u64), Failure> {
    let mut tx = store
        .begin()
        .map_err(|e| Failure::from_error(format!("starting a transaction in {}", args.dir.display()), e))?;
    let records = &batch.records;
    let metadata: Vec<Vec<(&str, &str)>> = records
        .iter()
        .map(|r| r.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .collect();
    let rows: Vec<vellum::Row<'_>> = records
        .iter()
        .zip(&metadata)
        .map(|(r, m)| (r.id.as_str(), r.vector.as_slice(), m.as_slice()))
        .collect();
    // The bulk path: many rows to a log record. Every row is checked before any is written,
    // so a bad one is found (and named) by trying the rows one by one: the batch is rolled
    // back either way.
    if let Err(error) = tx.upsert_many(&rows) {
        let at = match error {
            Error::InvalidArgument(_) => rows
                .iter()
                .position(|row| tx.upsert_many(std::slice::from_ref(row)).is_err()),
            _ => None,
        };
        drop(tx);
        let code = match error_code(&error) {
            EXIT_USAGE => EXIT_INPUT,
            code => code,
        };
        let (location, error) = match at {
            Some(at) => (records[at].location.clone(), strip_row(&error)),
            None => (format!("records up to {}", batch.location), error.to_string()),
        };
        return Err(Failure::new(
            code,
            format!(
                "{} {location}: {error} (import stopped; {})",
                input::display_name(&args.file),
                what_stays(&args.dir, committed),
            ),
        ));
    }
    let in_batch = records.len() as u64;
    let lsn = tx.commit().map_err(|e| {
        Failure::from_error(
            format!(
                "committing records up to {} of {} to {} ({})",
                batch.location,
                input::display_name(&args.file),
                args.dir.display(),
                what_stays(&args.dir, committed),
            ),
            e,
        )
    })?;
    Ok((lsn, in_batch))
}

/// A bulk load's error about one row, without the row number (the caller names the row's
/// place in the input instead).
fn strip_row(error: &Error) -> String {
    let text = error.to_string();
    match text.split_once("): ") {
        Some((head, rest)) if head.contains("row ") => {
            let prefix = head.split("row ").next().unwrap_or_default();
            format!("{prefix}{rest}")
        }
        _ => text,
    }
}

/// An input failure after `committed` records: the message says what became of those.
fn stopped(failure: Failure, dir: &Path, committed: u64) -> Failure {
    Failure::new(
        failure.code,
        format!("{} (import stopped; {})", failure.message, what_stays(dir, committed)),
    )
}

/// What became of the `committed` records an import made durable in the store at `dir` before
/// it stopped: they stay, unless the store's directory itself is gone (moved or deleted while
/// the import wrote: the error is then the next file operation's). Before, the message said
/// they stay in that case too.
fn what_stays(dir: &Path, committed: u64) -> String {
    if dir.join(vellum::format::control::CONTROL_FILE_NAME).is_file() {
        format!("the {committed} records committed before it stay")
    } else {
        format!(
            "the store is no longer at {}: it was moved or deleted while the import wrote, with the {committed} \
             records committed before",
            dir.display()
        )
    }
}
