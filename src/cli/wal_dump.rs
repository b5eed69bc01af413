//! `vellum wal-dump <DIR>`: the log, one record a line, like pg_waldump.
//!
//! The store is not opened (recovery would release old segments and append records): the log
//! is opened read-only with the geometry and identity the control file holds, and scanned with
//! `RecoveryMode::TolerateTornTail`, so a torn tail ends the dump (with a note on stderr).

use std::io::Write;
use std::path::PathBuf;

use indicatif::ProgressBar;
use serde_json::{Value, json};
use vellum::format::page::{PageId, Space};
use vellum::format::record::{self, Edit, EditKind, Kind, Payload};
use vellum::inspect::{LogDump, Record};

use super::common::{Failure, parse_lsn, progress_bar, rfc3339_us};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store.
    pub dir: PathBuf,
    /// Only records at or after this LSN.
    #[arg(long, value_name = "LSN", value_parser = parse_lsn)]
    pub from: Option<u64>,
    /// Only records at or before this LSN.
    #[arg(long, value_name = "LSN", value_parser = parse_lsn)]
    pub to: Option<u64>,
    /// One JSON object a line (README, "wal-dump --json").
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let from = args.from.unwrap_or(0);
    let to = args.to.unwrap_or(u64::MAX);
    if from > to {
        return Err(Failure::usage(format!("--from {from} is after --to {to}")));
    }
    let dir = &args.dir;
    let dump =
        LogDump::open(dir).map_err(|e| Failure::from_error(format!("cannot read the log of {}", dir.display()), e))?;
    let scan = dump.scan();
    let start = dump.first_lsn();
    let end = scan.end_lsn;
    let bar = progress_bar(end.get().saturating_sub(start.get().max(from)), "reading the log", true);
    let undecodable = print_records(&args, &dump, from, to, &bar)?;
    bar.finish_and_clear();
    if let Some(torn) = &scan.torn_tail {
        eprintln!(
            "vellum: note: the log ends at a torn tail at LSN {} ({}); the next open erases it",
            torn.lsn, torn.reason
        );
    }
    if let Some(first) = undecodable.first() {
        return Err(Failure::store(format!(
            "{} records of {} have payloads that do not decode (first: {first})",
            undecodable.len(),
            dir.display()
        )));
    }
    Ok(())
}

/// Prints the records of `dump` from LSN `from` to `to`, one a line; returns a note on each
/// record whose payload does not decode.
fn print_records(args: &Args, dump: &LogDump, from: u64, to: u64, bar: &ProgressBar) -> Result<Vec<String>, Failure> {
    let page_size_bytes = dump.page_size_bytes();
    let start = dump.first_lsn();
    let mut reader = dump.reader();
    // Lines go out in chunks, each while the progress bar (if any) is off the screen.
    let mut out = Vec::with_capacity(1 << 17);
    let mut undecodable = Vec::new();
    let mut count = 0u64;
    loop {
        let rec = match reader.next_record() {
            Ok(Some(rec)) => rec,
            Ok(None) => break,
            Err(e) => {
                write_chunk(&mut out, bar)?;
                return Err(Failure::from_error(
                    format!("reading the log of {}", args.dir.display()),
                    e,
                ));
            }
        };
        if rec.lsn.get() > to {
            break;
        }
        if rec.lsn.get() < from {
            continue;
        }
        count += 1;
        if count.is_multiple_of(1024) {
            bar.set_position(rec.lsn.get().saturating_sub(start.get().max(from)));
        }
        let decoded = record::decode(rec.header.kind, rec.payload, rec.lsn, page_size_bytes);
        if let Err(e) = &decoded {
            undecodable.push(format!("LSN {}: {e}", rec.lsn));
        }
        let line = if args.json {
            json_line(&rec, &decoded).to_string()
        } else {
            text_line(&rec, &decoded)
        };
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        if out.len() >= 1 << 16 {
            write_chunk(&mut out, bar)?;
        }
    }
    write_chunk(&mut out, bar)?;
    Ok(undecodable)
}

/// Writes the lines in `out` to stdout while `bar` is off the screen, and empties `out`.
fn write_chunk(out: &mut Vec<u8>, bar: &ProgressBar) -> Result<(), Failure> {
    let written = bar.suspend(|| {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out).and_then(|()| stdout.flush())
    });
    out.clear();
    written.map_err(|e| Failure::io("writing to stdout", e))
}

fn kind_name(kind: u8) -> String {
    match Kind::from_u8(kind) {
        Some(kind) => kind.name().to_string(),
        None => format!("unknown({kind})"),
    }
}

fn space_name(page: PageId) -> &'static str {
    match page.space() {
        Space::Catalog => "catalog",
        Space::Vector => "vector",
    }
}

/// `lsn=4128 len=210 txn=3 prev=0 kind=update op=insert id="doc-1" edits=3 ts=…`
pub fn text_line(rec: &Record<'_>, decoded: &vellum::Result<Payload<'_>>) -> String {
    let h = rec.header;
    let mut line = format!(
        "lsn={} len={} txn={} prev={} kind={}",
        rec.lsn,
        h.total_len.get(),
        h.txn_id.get(),
        h.prev_lsn.get(),
        kind_name(h.kind)
    );
    match decoded {
        Ok(Payload::Update { op, id, edits }) => {
            line.push_str(&format!(" op={} id={id:?} edits={}", op.name(), edits.len()));
        }
        Ok(Payload::Clr { undo_next, edits }) => {
            line.push_str(&format!(" undo_next={undo_next} edits={}", edits.len()));
        }
        Ok(Payload::CheckpointEnd(c)) => {
            line.push_str(&format!(
                " begin={} next_txn={} txns={} dirty={}",
                c.begin_lsn,
                c.next_txn_id,
                c.txns.len(),
                c.dirty.len()
            ));
        }
        Ok(Payload::PageInit { page, init }) => {
            let (a, b) = init.fields();
            line.push_str(&format!(
                " space={} page={} page_kind={} a={a} b={b}",
                space_name(*page),
                page.page_no(),
                init.kind().name()
            ));
        }
        Ok(Payload::Commit | Payload::Abort | Payload::End | Payload::CheckpointBegin) => {}
        Err(e) => line.push_str(&format!(" error={:?}", e.to_string())),
    }
    line.push_str(&format!(" ts={}", rfc3339_us(h.timestamp_us.get())));
    line
}

fn edits_json(edits: &[Edit<'_>]) -> Vec<Value> {
    edits
        .iter()
        .map(|e| {
            let (edit, len) = match e.kind {
                EditKind::Write => ("write", e.after.len()),
                EditKind::Insert { .. } => ("insert", e.after.len()),
                EditKind::Remove { len, .. } => ("remove", len as usize),
                EditKind::Stored { len } => ("stored", len as usize),
            };
            json!({
                "edit": edit,
                "space": space_name(e.page),
                "page": e.page.page_no(),
                "offset": e.offset,
                "len": len,
                "before": e.before.is_some(),
            })
        })
        .collect()
}

/// One record as a JSON object (README, "wal-dump --json").
pub fn json_line(rec: &Record<'_>, decoded: &vellum::Result<Payload<'_>>) -> Value {
    let h = rec.header;
    let mut object = json!({
        "lsn": rec.lsn.get(),
        "end": rec.end,
        "len": h.total_len.get(),
        "txn": h.txn_id.get(),
        "prev": h.prev_lsn.get(),
        "kind": kind_name(h.kind),
        "timestamp_us": h.timestamp_us.get(),
        "epoch": h.epoch.get(),
        "durable_lsn": h.durable_lsn.get(),
        "flags": h.flags,
    });
    let fields = object.as_object_mut().expect("an object");
    let extra = match decoded {
        Ok(Payload::Update { op, id, edits }) => json!({"op": op.name(), "id": id, "edits": edits_json(edits)}),
        Ok(Payload::Clr { undo_next, edits }) => json!({"undo_next": undo_next.get(), "edits": edits_json(edits)}),
        Ok(Payload::CheckpointEnd(c)) => json!({
            "begin_lsn": c.begin_lsn.get(),
            "next_txn_id": c.next_txn_id,
            "txns": c.txns.iter().map(|t| json!({
                "txn": t.txn_id,
                "last_lsn": t.last_lsn.get(),
                "undo_next": t.undo_next.get(),
                "state": t.state,
            })).collect::<Vec<_>>(),
            "dirty": c.dirty.iter().map(|d| json!({
                "space": space_name(d.page),
                "page": d.page.page_no(),
                "rec_lsn": d.rec_lsn.get(),
            })).collect::<Vec<_>>(),
        }),
        Ok(Payload::PageInit { page, init }) => json!({
            "space": space_name(*page),
            "page": page.page_no(),
            "page_kind": init.kind().name(),
            "a": init.fields().0,
            "b": init.fields().1,
        }),
        Ok(Payload::Commit | Payload::Abort | Payload::End | Payload::CheckpointBegin) => json!({}),
        Err(e) => json!({"error": e.to_string()}),
    };
    if let Value::Object(extra) = extra {
        fields.extend(extra);
    }
    object
}
