//! Vellum beside the embedded stores a user would pick instead: okaywal (a write-ahead log), redb
//! (a copy-on-write B-tree) and heed (LMDB), under the same workloads of 1 KiB records, every
//! store durable per commit as its defaults say, with raw-disk baselines measured in the same run.
//!
//! ```text
//! cargo bench --bench peers                                   # full scale, 3 rounds (~2-4 min, ~1 GiB of disk)
//! cargo bench --bench peers -- --scale 0.1 --peers vellum,heed --rounds 1
//! ```
//!
//! Options: `--scale F` (or `PEERS_SCALE`) multiplies every size; `--peers a,b` picks engines
//! (vellum, vellum-noarchive, vellum-stored, okaywal, redb, heed); `--rounds N` (default 3): engines run
//! interleaved within each round, each round starting one engine later than the last, and each
//! cell is the median [min–max] over rounds. The
//! markdown table is printed and written to `target/peers.md` (or `PEERS_MD`). Scratch files
//! live in a fresh directory under `std::env::temp_dir()`: point `TMPDIR` at the disk to
//! measure. The exit status is 1 if any workload failed (the table says which; the other
//! workloads and engines still ran).
//!
//! `cargo test --benches` (no `--bench`) runs every workload once at the smallest sizes as a
//! smoke test, writes no file, and fails if any workload failed.
//!
//! Vellum is driven through the crate-root API only (`Store::create/open/begin/insert/get/close`,
//! `Transaction::insert/commit`, and `Store::log_info`'s commit and fdatasync counters around the
//! timed w2) with default `Options`; the one exception is w2's extra counting pass, which wraps
//! the default `Options::storage` to count the log's fdatasyncs independently
//! (`peers/counting.rs`).

#[path = "peers/counting.rs"]
mod counting;
#[path = "peers/engines.rs"]
mod engines;
#[path = "peers/raw_group.rs"]
mod raw_group;
#[path = "peers/report.rs"]
mod report;
#[path = "peers/sys.rs"]
mod sys;
#[path = "peers/workloads.rs"]
mod workloads;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use workloads::{Ctx, Outcome, Pool, Sizes};

/// Every fallible step of the bench: errors are reported in the table, never unwrapped.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The engines, in table order.
const ENGINES: &[&str] = &["vellum", "vellum-noarchive", "vellum-stored", "okaywal", "redb", "heed"];

/// Runs `$body` with `$E` the engine type named `$name` (one of [`ENGINES`]).
macro_rules! with_engine {
    ($name:expr, $E:ident => $body:expr) => {
        match $name {
            "vellum" => {
                type $E = engines::Vellum;
                $body
            }
            "vellum-noarchive" => {
                type $E = engines::VellumNoArchive;
                $body
            }
            "vellum-stored" => {
                type $E = engines::VellumStored;
                $body
            }
            "okaywal" => {
                type $E = engines::OkayWal;
                $body
            }
            "redb" => {
                type $E = engines::Redb;
                $body
            }
            "heed" => {
                type $E = engines::Heed;
                $body
            }
            other => panic!("engine names are checked when parsed, and {other:?} is not one"),
        }
    };
}

const USAGE: &str = "usage: cargo bench --bench peers -- [--scale F] [--peers vellum,okaywal,redb,heed] [--rounds N]";

struct Args {
    scale: f64,
    engines: Vec<&'static str>,
    rounds: usize,
    /// `cargo test --benches` (no `--bench`), `--test`: the smallest sizes, one round, no file.
    quick: bool,
    /// `--list`, or a criterion-style filter that does not name this bench: nothing to run.
    skip: bool,
}

fn parse_args() -> Res<Args> {
    let mut args = Args {
        scale: std::env::var("PEERS_SCALE")
            .map_or(Ok(1.0), |s| s.parse())
            .map_err(|e| format!("PEERS_SCALE: {e}"))?,
        engines: ENGINES.to_vec(),
        rounds: 3,
        quick: true,
        skip: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--scale" => args.scale = value("--scale")?.parse().map_err(|e| format!("--scale: {e}"))?,
            "--rounds" => args.rounds = value("--rounds")?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--peers" => args.engines = parse_engines(&value("--peers")?)?,
            "--bench" => args.quick = false,
            "--test" => args.quick = true,
            "--list" => args.skip = true,
            filter if !filter.starts_with('-') => args.skip |= !"peers".contains(filter),
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    if !(args.scale > 0.0 && args.scale.is_finite()) {
        return Err(format!("the scale must be a positive number, not {}", args.scale).into());
    }
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    if args.quick {
        args.scale = args.scale.min(0.001);
        args.rounds = 1;
    }
    Ok(args)
}

fn parse_engines(list: &str) -> Res<Vec<&'static str>> {
    let mut engines = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let known = ENGINES.iter().find(|e| **e == name);
        engines.push(*known.ok_or_else(|| format!("unknown engine {name:?}; known: {}", ENGINES.join(",")))?);
    }
    if engines.is_empty() {
        return Err("--peers names no engine".into());
    }
    Ok(engines)
}

fn main() {
    if let Ok(spec) = std::env::var(workloads::CRASH_CHILD_VAR) {
        // The crash child: exits inside `crash_child` once its commit is durable.
        if let Err(e) = crash_child(&spec) {
            eprintln!("peers crash child: {e}");
        }
        std::process::exit(2);
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("peers: {e}");
            std::process::exit(2);
        }
    };
    if args.skip {
        return;
    }
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("peers: {e}");
            std::process::exit(2);
        }
    }
}

/// `ENGINE,FIRST_SEQ,RECORDS,DIR`, as `workloads::crash` sets it.
fn crash_child(spec: &str) -> Res<()> {
    let mut fields = spec.splitn(4, ',');
    let mut field = || {
        fields
            .next()
            .ok_or_else(|| format!("malformed {}: {spec:?}", workloads::CRASH_CHILD_VAR))
    };
    let engine = field()?;
    let first_seq: u64 = field()?.parse()?;
    let records: usize = field()?.parse()?;
    let dir = PathBuf::from(field()?);
    let engine = ENGINES
        .iter()
        .find(|e| **e == engine)
        .ok_or_else(|| format!("unknown engine {engine:?}"))?;
    with_engine!(*engine, E => workloads::crash_child::<E>(&dir, first_seq, records))
}

/// The whole run: rounds of every engine, each just after its raw baselines; the table printed and
/// written.
/// Returns whether every workload succeeded.
fn run(args: &Args) -> Res<bool> {
    let started = Instant::now();
    if args.quick {
        assert_eq!(sys::civil_date(0), "1970-01-01", "the epoch");
        assert_eq!(sys::civil_date(20_513), "2026-03-01", "a day after the end of February");
    }
    let scratch = tempfile::Builder::new()
        .prefix("vellum-peers-")
        .tempdir_in(std::env::temp_dir())?;
    let sizes = Sizes::scaled(args.scale);
    let pool = Pool::new();
    let log_bytes_per_commit = engines::vellum_log_bytes_per_commit(scratch.path())?;
    eprintln!(
        "vellum logs {log_bytes_per_commit} bytes for one w2 commit (the last raw group-commit baseline's record)"
    );
    let mut raw_runs = Vec::new();
    let mut rounds: Vec<Vec<Outcome>> = args.engines.iter().map(|_| Vec::new()).collect();
    for round in 1..=args.rounds {
        // Each round starts one engine later: every engine runs at every place in the order,
        // so that what the one before leaves (the device still writing back, the page cache
        // full of its files) falls on each in turn.
        let count = args.engines.len();
        for place in 0..count {
            let index = (place + round - 1) % count;
            let (engine, outcomes) = (&args.engines[index], &mut rounds[index]);
            eprintln!("-- {engine} (round {round}/{}): raw baselines first", args.rounds);
            let t = Instant::now();
            let raw = raw_baselines(scratch.path(), &sizes, log_bytes_per_commit);
            let ctx = Ctx {
                dir: scratch.path().join(engine),
                sizes: &sizes,
                pool: &pool,
            };
            let mut outcome = with_engine!(*engine, E => workloads::run_engine::<E>(&ctx));
            report::add_ratios(&mut outcome.metrics, &raw);
            outcomes.push(outcome);
            raw_runs.push(raw);
            eprintln!("   {engine} took {:.1} s", t.elapsed().as_secs_f64());
        }
    }
    let markdown = render(args, &sizes, scratch.path(), &raw_runs, &rounds, started);
    println!("{markdown}");
    if !args.quick {
        let path = std::env::var_os("PEERS_MD").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers.md"),
            PathBuf::from,
        );
        std::fs::write(&path, &markdown).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("table written to {}", path.display());
    }
    let raw_ok = raw_runs
        .iter()
        .all(|raw| raw.contains_key("raw_pwrite_per_s") && raw.contains_key("raw_seq_mb_per_s"));
    Ok(raw_ok && rounds.iter().flatten().all(|outcome| outcome.failed.is_empty()))
}

/// The raw baselines run just before an engine (the disk's latency drifts within minutes on a
/// shared machine); a failure leaves its figures out (the table says FAILED).
fn raw_baselines(dir: &Path, sizes: &Sizes, log_bytes_per_commit: usize) -> workloads::Metrics {
    let mut raw = workloads::Metrics::new();
    match sys::raw_pwrite_fdatasync(dir, sizes.raw_ops, false, sys::Prepared::ZeroFilled) {
        Ok((per_s, latency)) => {
            raw.insert("raw_pwrite_per_s", per_s);
            raw.insert("raw_pwrite_p50_us", latency.p50_us);
            raw.insert("raw_pwrite_p99_us", latency.p99_us);
        }
        Err(e) => eprintln!("  !! raw pwrite + fdatasync failed: {e}"),
    }
    // What a log whose segments were allocated, not written, would pay a small commit.
    match sys::raw_pwrite_fdatasync(dir, sizes.raw_ops, false, sys::Prepared::Allocated) {
        Ok((per_s, _)) => {
            raw.insert("raw_allocated_per_s", per_s);
        }
        Err(e) => eprintln!("  !! raw pwrite + fdatasync into an allocated file: {e}"),
    }
    match sys::raw_pwrite_fdatasync(dir, sizes.raw_ops, true, sys::Prepared::ZeroFilled) {
        Ok((per_s, latency)) => {
            raw.insert("raw_direct_per_s", per_s);
            raw.insert("raw_direct_p50_us", latency.p50_us);
        }
        // tmpfs and some other file systems have no direct I/O: the row stays empty.
        Err(e) => eprintln!("  !! raw O_DIRECT | O_DSYNC write: {e}"),
    }
    // w2's shape with no engine: four writers sharing durable writes (peers/raw_group.rs).
    let per_writer = (sizes.w2_per_thread / 2).max(10);
    for sharing in raw_group::Sharing::ALL {
        let (per_s, per_flush) = sharing.keys();
        let record_bytes = match sharing {
            raw_group::Sharing::GatheredLogBytes => log_bytes_per_commit,
            _ => raw_group::RECORD_BYTES,
        };
        match raw_group::raw_group_commit(dir, per_writer, sharing, record_bytes) {
            Ok(figures) => {
                raw.insert(per_s, figures.commits_per_s);
                raw.insert(per_flush, figures.commits_per_flush);
            }
            Err(e) => eprintln!("  !! raw group commit ({sharing:?}): {e}"),
        }
    }
    match sys::raw_sequential_fdatasync(dir, sizes.raw_sequential_bytes) {
        Ok(mb_per_s) => {
            raw.insert("raw_seq_mb_per_s", mb_per_s);
        }
        Err(e) => eprintln!("  !! raw sequential write failed: {e}"),
    }
    raw
}

fn render(
    args: &Args,
    sizes: &Sizes,
    dir: &Path,
    raw_runs: &[workloads::Metrics],
    rounds: &[Vec<Outcome>],
    started: Instant,
) -> String {
    let columns: Vec<String> = args.engines.iter().map(|e| engine_header(e)).collect();
    let mut md = format!(
        "### Beside its peers\n\n{}, {}. Scale {}, {} round(s), engines interleaved within each round (each round starting one engine later); cells are the \
         median{} over rounds; each ratio is to the raw baseline measured just before that engine's run. \
         Run time {:.0} s, load average at the end {}.\n\n",
        sys::today_utc(),
        sys::machine(dir),
        args.scale,
        args.rounds,
        if args.rounds > 1 { " [min–max]" } else { "" },
        started.elapsed().as_secs_f64(),
        sys::load_average(),
    );
    md.push_str(&report::table(&columns, rounds));
    md.push('\n');
    md.push_str(&report::raw_table(raw_runs));
    let _ = write!(md, "\n{}\n\nDurability settings:\n\n", report::workloads(sizes));
    for engine in &args.engines {
        let durability = with_engine!(*engine, E => <E as engines::Engine>::durability());
        let _ = writeln!(md, "- **{engine}**: {durability}");
    }
    let _ = write!(
        md,
        "\nOn disk after the close that follows w3 (last round), by top-level entry:"
    );
    for (engine, outcomes) in args.engines.iter().zip(rounds) {
        let breakdown = outcomes
            .iter()
            .rev()
            .find_map(|o| o.size_breakdown.as_deref())
            .unwrap_or("FAILED");
        let _ = write!(md, " **{engine}**: {breakdown}.");
    }
    md.push('\n');
    let resident: Vec<f64> = rounds
        .iter()
        .flatten()
        .filter_map(|o| o.metrics.get("cold_resident_pct").copied())
        .collect();
    let resident_max = resident.iter().copied().fold(0.0, f64::max);
    let _ = writeln!(
        md,
        "\nBefore each cold reopen at most {resident_max:.1}% of the store's pages were in the page cache \
         (mincore). The host may still cache the virtual disk, so a cold open can be faster than real media."
    );
    md.push_str(&failures(args, rounds));
    md
}

fn engine_header(engine: &str) -> String {
    let version = match engine {
        "vellum" | "vellum-noarchive" | "vellum-stored" => env!("CARGO_PKG_VERSION").to_string(),
        other => engines::locked_version(other),
    };
    format!("{engine} {version}")
}

fn failures(args: &Args, rounds: &[Vec<Outcome>]) -> String {
    let mut out = String::from("\nFailures: ");
    let mut any = false;
    for (engine, outcomes) in args.engines.iter().zip(rounds) {
        for (round, outcome) in outcomes.iter().enumerate() {
            for (workload, error) in &outcome.failed {
                let _ = write!(out, "\n- round {}, {engine}, {workload}: {error}", round + 1);
                any = true;
            }
        }
    }
    if !any {
        out.push_str("none.");
    }
    out.push('\n');
    out
}
