//! `vellum import <DIR> <FILE>`: loads records in transactions of `--batch` records.
//!
//! Records are upserted: an id already present is replaced, so an interrupted import can be run
//! again from the start. With `--ack`, a line holding the running total of committed records
//! goes to stdout after each commit once it is durable, and nothing else does.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use vellum::{Lsn, SyncMode};

use super::common::{Failure, SyncArgs, open_store, progress_bar, spinner};
use super::input::{self, Format};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store.
    pub dir: PathBuf,
    /// The input file.
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
    let format = match args.format.or_else(|| Format::from_path(&args.file)) {
        Some(format) => format,
        None => {
            return Err(Failure::usage(format!(
                "cannot tell the format of {} from its extension; pass --format jsonl, fvecs or npy",
                args.file.display()
            )));
        }
    };
    let sync = args.sync.mode()?;
    let store = open_store(&args.dir, sync)?;
    let (mut source, total_bytes) = input::open(&args.file, format, store.dimension())?;
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
    let mut committed = 0u64;
    let mut next = source.next_record()?;
    while next.is_some() {
        let mut tx = store
            .begin()
            .map_err(|e| Failure::from_error(format!("starting a transaction in {}", args.dir.display()), e))?;
        let mut in_batch = 0u64;
        while let Some(record) = next.take() {
            let metadata: Vec<(&str, &str)> = record.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            if let Err(error) = tx.upsert(&record.id, &record.vector, &metadata) {
                drop(tx);
                let code = super::common::error_code(&error);
                let code = if code == super::common::EXIT_USAGE {
                    super::common::EXIT_INPUT
                } else {
                    code
                };
                return Err(Failure::new(
                    code,
                    format!(
                        "{} {}: {error} (import stopped; the {committed} records committed before it stay)",
                        args.file.display(),
                        record.location
                    ),
                ));
            }
            in_batch += 1;
            if in_batch == args.batch {
                break;
            }
            next = match source.next_record() {
                Ok(next) => next,
                Err(failure) => return Err(stopped(failure, committed)),
            };
        }
        let lsn = tx.commit().map_err(|e| {
            Failure::from_error(
                format!(
                    "committing records up to {} of {} to {} (the {committed} records committed before stay)",
                    source.location(),
                    args.file.display(),
                    args.dir.display()
                ),
                e,
            )
        })?;
        committed += in_batch;
        acks.waiting.push_back((lsn, committed));
        if sync == SyncMode::Always {
            // The commit returned after its record was durable.
            acks.release(Lsn(u64::MAX))?;
        } else {
            acks.release(store.wal().durable_lsn())?;
        }
        bar.set_position(source.bytes_read());
        if next.is_none() {
            next = match source.next_record() {
                Ok(next) => next,
                Err(failure) => return Err(stopped(failure, committed)),
            };
        }
    }
    bar.finish_and_clear();
    store
        .close()
        .map_err(|e| Failure::from_error(format!("closing {}", args.dir.display()), e))?;
    acks.release(Lsn(u64::MAX))?;
    if !acks.enabled {
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "imported {committed} records from {} into {} in {seconds:.2} s ({:.0} records/s)",
            args.file.display(),
            args.dir.display(),
            committed as f64 / seconds.max(1e-9)
        );
    }
    Ok(())
}

/// An input failure after `committed` records: the message says those stay.
fn stopped(failure: Failure, committed: u64) -> Failure {
    Failure::new(
        failure.code,
        format!(
            "{} (import stopped; the {committed} records committed before it stay)",
            failure.message
        ),
    )
}
