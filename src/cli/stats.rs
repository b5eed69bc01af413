//! `vellum stats <DIR>`: counts, sizes, LSNs, the last checkpoint, the archive, and the report
//! of the recovery this command's own open ran.
//!
//! The checkpoint shown is the one the control file named before this open (every open ends
//! its recovery with a checkpoint of its own); the recovery report is that of this open, which
//! is the store's last recovery: after a crash it is the one that repaired the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use vellum::format::control::Control;
use vellum::format::{FORMAT_VERSION_MAJOR, FORMAT_VERSION_MINOR};
use vellum::{IndexInfo, LogInfo, RecoveryReport, Store};

use super::common::{Failure, dir_usage, human_bytes, open_store_read_only, print_json, recovery_json, rfc3339_us};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store.
    pub dir: PathBuf,
    /// Print one JSON object (README, "stats --json").
    #[arg(long)]
    pub json: bool,
    /// For a store that ships its archive: open it for writing (as its shipper runs only for a
    /// writer), take a shipping round and report how far the remote copy is behind. Without
    /// it, stats opens the store read-only and shows only where it ships.
    #[arg(long)]
    pub ship: bool,
}

/// Files of one kind in a directory: how many and how large.
#[derive(Default, Clone, Copy)]
struct Files {
    count: u64,
    bytes: u64,
}

fn files_matching(dir: &Path, keep: impl Fn(&str) -> bool) -> Files {
    let mut files = Files::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !keep(name) {
            continue;
        }
        if let Ok(meta) = entry.metadata()
            && meta.is_file()
        {
            files.count += 1;
            files.bytes += meta.len();
        }
    }
    files
}

/// Archive files by extension (`lz4`, ...; `none` without one), recursively.
fn archive_by_extension(dir: &Path) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let ext = path
                    .extension()
                    .map_or("none".to_string(), |e| e.to_string_lossy().into_owned());
                *counts.entry(ext).or_insert(0) += 1;
            }
        }
    }
    counts
}

fn checkpoint_json(control: &Control) -> Value {
    if control.checkpoint_lsn.is_none() {
        return Value::Null;
    }
    json!({
        "lsn": control.checkpoint_lsn.get(),
        "end_lsn": control.checkpoint_end_lsn.get(),
        "redo_lsn": control.redo_lsn.get(),
        "time": rfc3339_us(control.checkpoint_us),
        "time_us": control.checkpoint_us,
        "next_txn_id": control.next_txn_id,
        "truncate_lsn": control.truncate_lsn.get(),
    })
}

/// What stats reads of the store and its directory while the store is open.
struct Gathered {
    log: LogInfo,
    spares: Files,
    /// Log segments released by the last checkpoint but still in `wal/`.
    awaiting_archiver: u64,
    catalog: Files,
    vectors: Files,
    doublewrite_bytes: u64,
    archive_dir: PathBuf,
    archive_files: u64,
    archive_bytes: u64,
    /// Entries of the archive directory that are no archive files.
    unknown: Vec<String>,
    report: RecoveryReport,
    index: Option<IndexInfo>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let dir = &args.dir;
    let before = vellum::inspect::read_control(dir)
        .map_err(|e| Failure::from_error(format!("cannot read the control file of {}", dir.display()), e))?;
    let store = if args.ship {
        super::common::open_store(dir, vellum::SyncMode::Always)?
    } else {
        open_store_read_only(dir)?
    };
    #[cfg(feature = "object-store")]
    let ship = super::replica::ship_json(&store);
    #[cfg(not(feature = "object-store"))]
    let ship = Value::Null;
    let gathered = gather(dir, &before, &store)?;
    let mut stats = stats_json(dir, &before, &store, &gathered);
    drop(store);
    stats["ship"] = ship;
    if args.json {
        print_json(&stats);
        return Ok(());
    }
    print_text(dir, &before, &gathered, &stats);
    Ok(())
}

/// Reads the log, file, archive, recovery and index figures of the open `store` in `dir`.
fn gather(dir: &Path, before: &Control, store: &Store) -> Result<Gathered, Failure> {
    let log = store.log_info();
    let spares = files_matching(&dir.join("wal"), |n| n.starts_with("spare-"));
    // Released by the last checkpoint (wholly before its truncation point) but still in `wal/`:
    // the archiver has not copied them yet (a session that ended without a close left them).
    let released_below = before.truncate_lsn.get() / before.segment_size_bytes.max(1);
    let awaiting_archiver = log.segments.iter().filter(|&&n| n < released_below).count() as u64;
    let catalog = files_matching(&dir.join("arena"), |n| {
        n.starts_with("catalog-") && n.ends_with(".pages")
    });
    let vectors = files_matching(&dir.join("arena"), |n| {
        n.starts_with("vector-") && n.ends_with(".pages")
    });
    let doublewrite_bytes = std::fs::metadata(dir.join("DOUBLEWRITE")).map_or(0, |m| m.len());
    let archive_dir = dir.join("archive");
    let (archive_files, archive_bytes) = dir_usage(&archive_dir);
    // Entries that are no archive files: reported, never read (they do not stop an open).
    let unknown: Vec<String> = vellum::inspect::archive_entries(dir)
        .map(|entries| entries.unknown.iter().map(|p| p.display().to_string()).collect())
        .unwrap_or_default();
    let report = store.recovery_report();
    let index = store
        .index_info()
        .map_err(|e| Failure::from_error(format!("reading the index of {}", dir.display()), e))?;
    Ok(Gathered {
        log,
        spares,
        awaiting_archiver,
        catalog,
        vectors,
        doublewrite_bytes,
        archive_dir,
        archive_files,
        archive_bytes,
        unknown,
        report,
        index,
    })
}

/// The stats of the open `store` in `dir` as one JSON object (README, "stats --json"), its
/// "ship" field left for the caller.
fn stats_json(dir: &Path, before: &Control, store: &Store, g: &Gathered) -> Value {
    let (log, segments, spares) = (&g.log, &g.log.segments, g.spares);
    let page = u64::from(before.page_size_bytes);
    json!({
        "store": dir.display().to_string(),
        "store_id": format!("{:016x}", before.store_id),
        "timeline": before.timeline,
        "created": rfc3339_us(before.created_us),
        "created_us": before.created_us,
        "dimension": store.dimension(),
        "format": format!("{FORMAT_VERSION_MAJOR}.{FORMAT_VERSION_MINOR}"),
        "page_size": before.page_size_bytes,
        "segment_size": before.segment_size_bytes,
        "vectors": store.len(),
        "wal": {
            "segments": segments,
            "segment_count": segments.len(),
            "bytes": log.segment_bytes,
            "spares": spares.count,
            "spare_bytes": spares.bytes,
            "awaiting_archiver": g.awaiting_archiver,
            "awaiting_archiver_bytes": g.awaiting_archiver * before.segment_size_bytes,
            "first_lsn": log.first_lsn.get(),
            "end_lsn": log.end_lsn.get(),
            "durable_lsn": log.durable_lsn.get(),
        },
        "checkpoint": checkpoint_json(before),
        "arena": {
            "catalog_files": g.catalog.count,
            "catalog_bytes": g.catalog.bytes,
            "catalog_pages": g.catalog.bytes / page,
            "vector_files": g.vectors.count,
            "vector_bytes": g.vectors.bytes,
            "vector_pages": g.vectors.bytes / page,
        },
        "doublewrite_bytes": g.doublewrite_bytes,
        "archive": {
            "present": g.archive_dir.is_dir(),
            "files": g.archive_files,
            "bytes": g.archive_bytes,
            "by_extension": archive_by_extension(&g.archive_dir),
            "unknown": g.unknown,
        },
        "recovery": recovery_json(&g.report),
        "index": g.index.map_or(Value::Null, |i| json!({
            "metric": format!("{:?}", i.metric).to_lowercase(),
            "m": i.m,
            "ef_construction": i.ef_construction,
            "ef_search": i.ef_search,
            "live": i.live,
            "tombstones": i.deleted,
            "node_pages": i.node_pages,
            "upper_pages": i.upper_pages,
            "bytes": i.size_bytes,
        })),
    })
}

/// Prints the stats as text: `s` is their JSON object (with "ship").
fn print_text(dir: &Path, before: &Control, g: &Gathered, s: &Value) {
    print_store_and_log(dir, before, g, s);
    print_checkpoint(before);
    print_files_and_index(g, s);
    print_archive_and_shipping(g, s);
    println!("recovery (this open):");
    for line in g.report.to_string().lines() {
        println!("  {line}");
    }
}

/// Prints the store's identity, size and geometry, and its log.
fn print_store_and_log(dir: &Path, before: &Control, g: &Gathered, s: &Value) {
    let (segments, spares, awaiting_archiver) = (&g.log.segments, g.spares, g.awaiting_archiver);
    println!(
        "store:        {} (id {}, timeline {})",
        dir.display(),
        s["store_id"].as_str().unwrap_or(""),
        before.timeline
    );
    println!("created:      {}", s["created"].as_str().unwrap_or(""));
    println!("vectors:      {} of dimension {}", s["vectors"], s["dimension"]);
    println!(
        "geometry:     {}-byte pages, {}-byte segments; format {}",
        before.page_size_bytes,
        before.segment_size_bytes,
        s["format"].as_str().unwrap_or("")
    );
    println!(
        "wal:          {} segments {:?} ({}), {} spares; LSN {}..{} (durable to {})",
        segments.len(),
        segments,
        human_bytes(g.log.segment_bytes),
        spares.count,
        s["wal"]["first_lsn"],
        s["wal"]["end_lsn"],
        s["wal"]["durable_lsn"]
    );
    if awaiting_archiver > 0 {
        println!(
            "              {} of them ({}) released, waiting for the archiver (the next session that writes archives them; `vellum checkpoint` does now)",
            awaiting_archiver,
            human_bytes(awaiting_archiver * before.segment_size_bytes)
        );
    }
}

/// Prints the checkpoint the control file named before this open.
fn print_checkpoint(before: &Control) {
    if before.checkpoint_lsn.is_none() {
        println!("checkpoint:   none before this open");
    } else {
        println!(
            "checkpoint:   LSN {} (end {}) at {}, next txn {}, log kept from {}",
            before.checkpoint_lsn,
            before.checkpoint_end_lsn,
            rfc3339_us(before.checkpoint_us),
            before.next_txn_id,
            before.truncate_lsn
        );
    }
}

/// Prints the arena's files, the doublewrite file and the index.
fn print_files_and_index(g: &Gathered, s: &Value) {
    let (catalog, vectors) = (g.catalog, g.vectors);
    println!(
        "arena:        {} catalog files ({}), {} vector files ({})",
        catalog.count,
        human_bytes(catalog.bytes),
        vectors.count,
        human_bytes(vectors.bytes)
    );
    println!("doublewrite:  {}", human_bytes(g.doublewrite_bytes));
    match g.index {
        Some(i) => println!(
            "index:        HNSW, {} M {} ef_construction {} (searches: ef {}); {} vectors, {} tombstones; {} ({} node, {} upper pages)",
            s["index"]["metric"].as_str().unwrap_or(""),
            i.m,
            i.ef_construction,
            if i.ef_search == u32::MAX as usize {
                "scan: no list reached recall 0.96 on this data".to_string()
            } else {
                i.ef_search.to_string()
            },
            i.live,
            i.deleted,
            human_bytes(i.size_bytes),
            i.node_pages,
            i.upper_pages
        ),
        None => println!("index:        none (searches scan)"),
    }
}

/// Prints the archive (and its entries that are no archive files) and where it ships.
fn print_archive_and_shipping(g: &Gathered, s: &Value) {
    if g.archive_dir.is_dir() {
        println!(
            "archive:      {} files ({})",
            g.archive_files,
            human_bytes(g.archive_bytes)
        );
        for path in &g.unknown {
            println!("warning:      {path} is not an archive file (ignored)");
        }
    } else {
        println!("archive:      none");
    }
    if !s["ship"].is_null() {
        let ship = &s["ship"];
        println!(
            "shipping:     to {} ({}): shipped to LSN {}, {} bytes ({:.1} s) behind; {} files pending{}",
            ship["url"].as_str().unwrap_or(""),
            ship["generation"].as_str().unwrap_or(""),
            ship["shipped_lsn"],
            ship["lag_bytes"],
            ship["lag_seconds"].as_f64().unwrap_or(0.0),
            ship["pending_files"],
            ship["last_error"]
                .as_str()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        );
    }
}
