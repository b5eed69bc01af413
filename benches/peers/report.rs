//! The markdown table: one row per figure, one column per engine, each cell the median over the
//! rounds with [min–max]; then the raw baselines, the workloads, each engine's durability
//! settings, and the failures.

use std::fmt::Write as _;

use crate::workloads::{Metrics, Outcome, Sizes};

/// A row of the main table: the metric's key, its label, the workload that produces it, and
/// whether it is a ratio (printed with `×`).
struct Row {
    key: &'static str,
    label: &'static str,
    workload: &'static str,
    ratio: bool,
}

const fn row(key: &'static str, label: &'static str, workload: &'static str) -> Row {
    Row {
        key,
        label,
        workload,
        ratio: false,
    }
}

const fn ratio(key: &'static str, label: &'static str, workload: &'static str) -> Row {
    Row {
        key,
        label,
        workload,
        ratio: true,
    }
}

const ROWS: &[Row] = &[
    row(
        "w1_commits_per_s",
        "w1 commits/s (1 writer, one durable commit per record)",
        "w1",
    ),
    ratio("w1_vs_raw", "w1 ÷ raw pwrite 4 KiB + fdatasync", "w1"),
    ratio("w1_vs_raw_direct", "w1 ÷ raw pwrite 4 KiB O_DIRECT + O_DSYNC", "w1"),
    row("w1_p50_us", "w1 commit p50 (µs)", "w1"),
    row("w1_p99_us", "w1 commit p99 (µs)", "w1"),
    row("w2_commits_per_s", "w2 commits/s (4 writers, total)", "w2"),
    ratio("w2_vs_raw", "w2 ÷ raw pwrite 4 KiB + fdatasync", "w2"),
    ratio(
        "w2_vs_raw_group_gathered",
        "w2 ÷ raw group commit of 4 writers with no engine work, gathered (the best raw sharing: see the baselines)",
        "w2",
    ),
    ratio(
        "w2_vs_raw_group_log",
        "w2 ÷ the same raw group commit, each record as many bytes as Vellum logs for one commit",
        "w2",
    ),
    row(
        "w2_engine_commits_per_s",
        "w2 with no commit made durable (`SyncMode::Never`): the engine's own commits/s at w2's shape",
        "w2engine",
    ),
    row(
        "w2_ceiling_per_s",
        "w2 ceiling: the raw group commit at Vellum's log bytes with the engine's time a commit added in series (commits/s; the four writers all wait on each flush, so no row's work can overlap it)",
        "w2engine",
    ),
    row("w2_p50_us", "w2 commit p50 (µs)", "w2"),
    row("w2_p99_us", "w2 commit p99 (µs)", "w2"),
    row(
        "w2_commits_per_sync",
        "w2 commits per log fdatasync (the store's counters, timed run)",
        "w2",
    ),
    row(
        "w2_commits_per_sync_counted",
        "w2 commits per log fdatasync (second pass, counted by a wrapping storage)",
        "w2count",
    ),
    row(
        "w3_mb_per_s",
        "w3 bulk MB/s (one durable commit per 1,000 records)",
        "w3",
    ),
    ratio("w3_vs_raw", "w3 ÷ raw write 1 MiB + fdatasync", "w3"),
    row(
        "w3_device_ceiling_mb_per_s",
        "w3 ceiling of the device: raw sequential MB/s ÷ the bytes the device wrote per byte loaded (what the load could reach with the device 100% busy)",
        "reopen",
    ),
    row(
        "w3_cpu_s_per_gb",
        "w3 CPU seconds per GB loaded (every thread, during the load)",
        "w3",
    ),
    row(
        "w3_cores_busy",
        "w3 cores busy during the load (CPU time ÷ wall time)",
        "w3",
    ),
    row(
        "w3_mem_mb_per_s",
        "w3 bulk MB/s in memory (the same load on tmpfs: no device, what the CPU allows)",
        "w3mem",
    ),
    ratio("w3_disk_vs_mem", "w3 on the disk ÷ w3 in memory", "w3mem"),
    row(
        "w3_mem_cpu_s_per_gb",
        "w3 in memory: CPU seconds per GB loaded (every thread)",
        "w3mem",
    ),
    row(
        "w3_device_written_per_byte",
        "w3 bytes the device wrote per byte loaded (load and close)",
        "reopen",
    ),
    ratio(
        "w3_device_vs_raw",
        "w3 device write rate (MB/s × bytes per byte) ÷ raw sequential write: how busy the load kept the device",
        "reopen",
    ),
    row("size_mib", "w3 store on disk after close (MiB allocated)", "reopen"),
    row("close_ms", "close after w3 (ms)", "reopen"),
    row("warm_ms", "reopen, warm page cache (ms)", "reopen"),
    row("cold_ms", "reopen, cold page cache (ms)", "reopen"),
    row("crash_ms", "reopen after a crash, cold page cache (ms)", "crash"),
    row(
        "crash_log_mib",
        "reopen after a crash: the log it recovered from (MiB: the crash child's one commit of 1,000 records)",
        "crash",
    ),
    row(
        "crash_floor_ms",
        "reopen after a crash: its floor, a cold read of that much log in one request (ms)",
        "crash",
    ),
    ratio("crash_vs_floor", "reopen after a crash ÷ its floor", "crash"),
    row(
        "read_batch_ns",
        "point read, one read txn per 1,000 reads (ns/op)",
        "reads",
    ),
    row("read_single_ns", "point read, one read txn per read (ns/op)", "reads"),
    row("read_p50_ns", "point read p50, each read timed (ns)", "reads"),
    row("read_p99_ns", "point read p99, each read timed (ns)", "reads"),
    row(
        "cold_read_p50_us",
        "point read from a cold page cache, p50 (µs; random reads right after the cold reopen)",
        "reads",
    ),
    row(
        "cold_read_p99_us",
        "point read from a cold page cache, p99 (µs)",
        "reads",
    ),
    row(
        "cold_read_kib",
        "point read from a cold page cache: KiB the device read per read",
        "reads",
    ),
];

/// The raw baselines' rows: key, label.
const RAW_ROWS: &[(&str, &str)] = &[
    (
        "raw_pwrite_per_s",
        "pwrite 4 KiB + fdatasync per op, zero-filled preallocated file (ops/s)",
    ),
    ("raw_pwrite_p50_us", "  p50 (µs)"),
    ("raw_pwrite_p99_us", "  p99 (µs)"),
    (
        "raw_allocated_per_s",
        "the same into a file allocated with fallocate, not written (unwritten extents: each sync also commits an extent change) (ops/s)",
    ),
    (
        "raw_direct_per_s",
        "pwrite 4 KiB, O_DIRECT + O_DSYNC (durable on return, no fdatasync), same file (ops/s)",
    ),
    ("raw_direct_p50_us", "  p50 (µs)"),
    (
        "raw_group_per_s",
        "4 writers, 1 KiB each appended under a lock, one leader writes all appended as whole 4 KiB blocks O_DIRECT + O_DSYNC, one flush in flight, no other work (commits/s)",
    ),
    ("raw_group_per_flush", "  commits per durable write"),
    (
        "raw_group_gathered_per_s",
        "the same, the leader first waiting for all four records (60 µs at most), as Vellum's does (commits/s)",
    ),
    ("raw_group_gathered_per_flush", "  commits per durable write"),
    (
        "raw_group2_per_s",
        "the same, two flushes in flight, each on fresh blocks, a commit durable when its own flush returns (commits/s)",
    ),
    ("raw_group2_per_flush", "  commits per durable write"),
    (
        "raw_group2g_per_s",
        "the same, two flushes in flight, each leader first waiting for two records (60 µs at most) (commits/s)",
    ),
    ("raw_group2g_per_flush", "  commits per durable write"),
    (
        "raw_group_log_per_s",
        "gathered as the second, each record as many bytes as Vellum's log takes for one w2 commit (commits/s)",
    ),
    ("raw_group_log_per_flush", "  commits per durable write"),
    (
        "raw_seq_mb_per_s",
        "sequential write 1 MiB + fdatasync per MiB, new file (MB/s)",
    ),
];

/// Adds the ratios to the raw baselines run just before the engine to its figures.
pub fn add_ratios(metrics: &mut Metrics, raw: &Metrics) {
    if let (Some(disk), Some(memory)) = (metrics.get("w3_mb_per_s"), metrics.get("w3_mem_mb_per_s")) {
        let value = disk / memory;
        metrics.insert("w3_disk_vs_mem", value);
    }
    let device = (
        metrics.get("w3_mb_per_s").copied(),
        metrics.get("w3_device_written_per_byte").copied(),
    );
    if let ((Some(mb_per_s), Some(per_byte)), Some(&sequential)) = (device, raw.get("raw_seq_mb_per_s")) {
        let value = mb_per_s * per_byte / sequential;
        metrics.insert("w3_device_vs_raw", value);
        metrics.insert("w3_device_ceiling_mb_per_s", sequential / per_byte);
    }
    // Four closed-loop writers: a round's rows are made while no flush runs (every writer waits
    // on the last one), so the engine's time a commit adds to the raw round's.
    if let (Some(&engine), Some(&raw)) = (metrics.get("w2_engine_commits_per_s"), raw.get("raw_group_log_per_s")) {
        let value = 1.0 / (1.0 / raw + 1.0 / engine);
        metrics.insert("w2_ceiling_per_s", value);
    }
    for (key, figure, baseline) in [
        ("w1_vs_raw", "w1_commits_per_s", "raw_pwrite_per_s"),
        ("w1_vs_raw_direct", "w1_commits_per_s", "raw_direct_per_s"),
        ("w2_vs_raw", "w2_commits_per_s", "raw_pwrite_per_s"),
        (
            "w2_vs_raw_group_gathered",
            "w2_commits_per_s",
            "raw_group_gathered_per_s",
        ),
        ("w2_vs_raw_group_log", "w2_commits_per_s", "raw_group_log_per_s"),
        ("w3_vs_raw", "w3_mb_per_s", "raw_seq_mb_per_s"),
    ] {
        if let (Some(x), Some(b)) = (metrics.get(figure), raw.get(baseline)) {
            let value = x / b;
            metrics.insert(key, value);
        }
    }
}

/// About three significant digits, with thousands separators from 100,000 up.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        format!("{x}")
    } else if a >= 100_000.0 {
        let digits = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 { format!("-{out}") } else { out }
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Median [min–max] of `values` (at least one).
fn summary(values: &mut [f64], ratio: bool) -> String {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    let unit = if ratio { "×" } else { "" };
    let mut cell = format!("{}{unit}", fmt_num(median));
    if n > 1 {
        let _ = write!(cell, " [{}–{}]", fmt_num(values[0]), fmt_num(values[n - 1]));
    }
    cell
}

/// One engine's cell for `row` over its rounds: the summary, `FAILED`, or `n/a` (the engine has
/// no such figure).
fn cell(rounds: &[Outcome], row: &Row) -> String {
    let mut values: Vec<f64> = rounds.iter().filter_map(|r| r.metrics.get(row.key).copied()).collect();
    let failed = rounds.iter().filter(|r| r.failed.contains_key(row.workload)).count();
    match (values.is_empty(), failed) {
        (true, 0) => "n/a".into(),
        (true, _) => "FAILED".into(),
        (false, 0) => summary(&mut values, row.ratio),
        (false, f) => format!(
            "{} ({f} of {} rounds FAILED)",
            summary(&mut values, row.ratio),
            rounds.len()
        ),
    }
}

/// The main table: `columns` are the engines' headers, `rounds[i]` the outcomes of engine `i`.
pub fn table(columns: &[String], rounds: &[Vec<Outcome>]) -> String {
    let mut out = String::from("| workload / figure |");
    for column in columns {
        let _ = write!(out, " {column} |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(columns.len()));
    out.push('\n');
    for row in ROWS {
        let _ = write!(out, "| {} |", row.label);
        for engine_rounds in rounds {
            let _ = write!(out, " {} |", cell(engine_rounds, row));
        }
        out.push('\n');
    }
    out
}

/// The raw baselines' table, one cell per figure over every run of them.
pub fn raw_table(raw_runs: &[Metrics]) -> String {
    let mut out = String::from("| raw baseline (before every engine's run) | median [min–max] |\n|---|---|\n");
    for (key, label) in RAW_ROWS {
        let mut values: Vec<f64> = raw_runs.iter().filter_map(|m| m.get(key).copied()).collect();
        let value = if values.is_empty() {
            "FAILED".into()
        } else {
            summary(&mut values, false)
        };
        let _ = writeln!(out, "| {label} | {value} |");
    }
    out
}

/// What each workload does, at these sizes.
pub fn workloads(sizes: &Sizes) -> String {
    format!(
        "Records are 1 KiB (pseudo-random bytes with bit 30 of every 32-bit word cleared, so that Vellum \
         stores the same bytes as a 256-dim f32 vector of finite floats), the same records for every store. \
         **w1**: {} records, one durable commit each, one writer. **w2**: {} writer threads x {} records, one \
         durable commit each; for Vellum, commits per log fdatasync from the store's own counters \
         (`Store::log_info`) over the timed run, and a second pass, kept out of the timings, counts the \
         log's fdatasyncs through a wrapping storage, and a third, on a store that makes no commit durable \
         (Vellum's `SyncMode::Never`), measures the engine's own work a commit at w2's shape. \
         **w3**: {} MiB ({} records), one durable commit per {} records; MB/s over the time inside commits; \
         then close (timed), size on disk, reopen (warm page cache), close, drop the store's pages from the \
         page cache (fsync + posix_fadvise(DONTNEED) on every file), reopen (cold). **w3 in memory**: the \
         same load again in a directory of `/dev/shm` (tmpfs; `PEERS_MEMORY_DIR` names another), where \
         writes and syncs reach no device: its rate is what the engine's CPU work allows, beside w3's on \
         the disk. **Point reads**: first, from the cold page cache the cold reopen left, {} uniform \
         random reads each timed on its own (p50, p99), and the bytes the device read for them (its \
         sectors-read counter), a read; then every \
         record read once in key order (checked byte for byte), then {} uniform random reads timed, each pass \
         capped at 4 s: a pass of one read transaction per 1,000 reads, one of one per read (the mean of \
         each), and a third of one per read with each read timed on its own (p50, p99). \
         **Crash**: a child process opens the w3 store, commits {} more records durably and exits \
         without closing; the parent drops the page cache and times the open; for a store that replays a \
         log (Vellum), the floor of that open: the log it recovered from (redo start to end), written to a \
         scratch file, synced, dropped from the page cache and read back in one request, timed. The record \
         count is verified \
         after every reopen. **Raw baselines**, just before every engine's run in every round: {} \
         pwrites of 4 KiB + fdatasync each into a zero-filled, synced file; {} MiB written sequentially to a \
         new file in 1 MiB writes, fdatasync after each; w2's shape with no engine (4 writers x {} commits of \
         a 1 KiB record counted under a lock, a leader writing everything appended as whole blocks with one \
         O_DIRECT | O_DSYNC pwrite; waiters yield for 100 us, then sleep; benches/peers/raw_group.rs): one \
         flush in flight; the same with the leader waiting for all four records first; two flushes in flight; \
         two, each leader waiting for two records; and the second again with each record as long as Vellum's \
         log bytes for one w2 commit (measured on a scratch store before the run).",
        sizes.w1_records,
        sizes.w2_threads,
        sizes.w2_per_thread,
        sizes.w3_bytes >> 20,
        sizes.w3_records(),
        sizes.w3_batch,
        crate::workloads::COLD_READS,
        sizes.reads,
        sizes.crash_records,
        sizes.raw_ops,
        sizes.raw_sequential_bytes >> 20,
        (sizes.w2_per_thread / 2).max(10),
    )
}
