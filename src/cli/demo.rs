//! `vellum demo [DIR]`: the crash-safety story in one command.
//!
//! 1. Generates unit-normalised embeddings (dimension 384) deterministically from a seed and
//!    writes them to a .npy file.
//! 2. Creates a store and imports the file with `vellum import --ack-lsn`, run as a child
//!    process, in transactions of a fixed size; kills the child with SIGKILL once 40% of the
//!    batches are acknowledged.
//! 3. Reopens the store (recovery), prints the recovery report and proves that every
//!    acknowledged vector is there bit for bit, that the batch in flight is wholly present or
//!    wholly absent, and that nothing else is.
//! 4. Searches (a query equal to a stored vector must find it first), checkpoints, restores to
//!    the commit LSN of an earlier batch into a second directory and compares, verifies.
//!
//! `VELLUM_DEMO_VECTORS=N` changes the number of vectors (default 200,000).

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vellum::rng::SplitMix64;
use vellum::{Lsn, Metric, RestoreTarget, Store};

use super::common::{EXIT_STORE, Failure, human_bytes, ms, progress_bar};
use super::input::npy_header;

/// The dimension of the demo's embeddings.
pub const DIMENSION: usize = 384;
/// The seed every demo vector derives from.
pub const SEED: u64 = 0x5645_4C4C_554D_0001;
const DEFAULT_VECTORS: u64 = 200_000;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to work (default: a new directory under the system's temporary directory).
    pub dir: Option<PathBuf>,
}

/// The demo vector of row `id`: components uniform in [-1, 1), scaled to unit length.
pub fn embedding(seed: u64, id: u64, out: &mut [f32]) {
    let mut rng = SplitMix64::new(seed ^ id.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut norm = 0f64;
    for x in out.iter_mut() {
        *x = rng.next_f32() * 2.0 - 1.0;
        norm += f64::from(*x) * f64::from(*x);
    }
    let scale = 1.0 / norm.sqrt().max(f64::MIN_POSITIVE);
    for x in out.iter_mut() {
        *x = (f64::from(*x) * scale) as f32;
    }
}

fn vector_of(id: u64) -> Vec<f32> {
    let mut v = vec![0f32; DIMENSION];
    embedding(SEED, id, &mut v);
    v
}

fn demo_failure(message: impl Into<String>) -> Failure {
    Failure::new(EXIT_STORE, message)
}

/// Rows of the summary table.
struct Summary {
    rows: Vec<(String, String)>,
}

impl Summary {
    fn add(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.rows.push((key.into(), value.into()));
    }

    fn print(&self) {
        let width_k = self.rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let width_v = self.rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
        let rule = format!("+-{}-+-{}-+", "-".repeat(width_k), "-".repeat(width_v));
        println!("{rule}");
        for (k, v) in &self.rows {
            let pad_k = width_k - k.chars().count();
            let pad_v = width_v - v.chars().count();
            println!("| {k}{} | {v}{} |", " ".repeat(pad_k), " ".repeat(pad_v));
        }
        println!("{rule}");
    }
}

/// What the killed import acknowledged: (records committed so far, commit LSN) per batch.
struct ImportRun {
    acks: Vec<(u64, Lsn)>,
    killed: bool,
    elapsed: Duration,
    pid: u32,
}

impl ImportRun {
    /// The records committed when the last acknowledged batch committed (0 if none was).
    fn acked(&self) -> u64 {
        self.acks.last().map_or(0, |a| a.0)
    }
}

/// The demo's settings and paths, and the summary and problems its steps add to.
struct Demo {
    /// The number of vectors generated and imported.
    vectors: u64,
    /// Records per transaction of the import.
    batch: u64,
    base: PathBuf,
    store_dir: PathBuf,
    restored_dir: PathBuf,
    npy: PathBuf,
    summary: Summary,
    problems: Vec<String>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let started = Instant::now();
    let mut demo = Demo::prepare(args)?;
    println!("Vellum demo in {}", demo.base.display());
    demo.generate_vectors()?;
    demo.create_store()?;
    let import = demo.import_until_killed()?;
    let store = demo.reopen_store()?;
    let present = demo.check_vectors(&store, &import)?;
    demo.search_vectors(&store, present)?;
    demo.checkpoint_and_close(store)?;
    demo.restore_earlier_batch(&import, present);
    demo.verify_checksums();
    demo.finish(started)
}

/// The number of vectors the demo uses: `VELLUM_DEMO_VECTORS` if set, else the default.
fn vector_count() -> Result<u64, Failure> {
    match std::env::var("VELLUM_DEMO_VECTORS") {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n >= 10)
            .ok_or_else(|| Failure::usage(format!("VELLUM_DEMO_VECTORS={text:?} must be a number of at least 10"))),
        Err(_) => Ok(DEFAULT_VECTORS),
    }
}

/// The directory the demo works in: `dir` if given, else a new name in the temporary directory.
fn base_dir(dir: Option<PathBuf>) -> PathBuf {
    match dir {
        Some(dir) => dir,
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            std::env::temp_dir().join(format!("vellum-demo-{}-{nanos:08x}", std::process::id()))
        }
    }
}

impl Demo {
    /// Reads the settings, refuses a directory that holds the demo's stores and creates it.
    fn prepare(args: Args) -> Result<Demo, Failure> {
        let vectors = vector_count()?;
        let batch = (vectors / 40).clamp(1, 5000);
        let base = base_dir(args.dir);
        let store_dir = base.join("store");
        let restored_dir = base.join("restored");
        let npy = base.join("vectors.npy");
        for path in [&store_dir, &restored_dir] {
            if path.exists() {
                return Err(Failure::usage(format!(
                    "{} exists: give the demo a new or empty directory",
                    path.display()
                )));
            }
        }
        std::fs::create_dir_all(&base).map_err(|e| Failure::io(format!("creating {}", base.display()), e))?;
        Ok(Demo {
            vectors,
            batch,
            base,
            store_dir,
            restored_dir,
            npy,
            summary: Summary { rows: Vec::new() },
            problems: Vec::new(),
        })
    }

    /// Step 1: writes the demo vectors to the .npy file.
    fn generate_vectors(&mut self) -> Result<(), Failure> {
        let (vectors, npy) = (self.vectors, &self.npy);
        let t = Instant::now();
        write_vectors(npy, vectors)?;
        let npy_bytes = std::fs::metadata(npy).map_or(0, |m| m.len());
        println!(
            " 1. generated {vectors} unit vectors of dimension {DIMENSION} from seed {SEED:#x} into {} ({}) in {:.2} s",
            npy.display(),
            human_bytes(npy_bytes),
            t.elapsed().as_secs_f64()
        );
        self.summary.add(
            format!("vectors generated (dimension {DIMENSION})"),
            vectors.to_string(),
        );
        Ok(())
    }

    /// Step 2: creates the store, empty.
    fn create_store(&self) -> Result<(), Failure> {
        let store_dir = &self.store_dir;
        Store::create(store_dir, DIMENSION as u32, super::common::base_options())
            .and_then(Store::close)
            .map_err(|e| Failure::from_error(format!("creating {}", store_dir.display()), e))?;
        println!(
            " 2. created {} (16 KiB pages, 16 MiB segments, sync always)",
            store_dir.display()
        );
        Ok(())
    }

    /// Step 3: imports the .npy file in a child process and kills it with SIGKILL part way.
    fn import_until_killed(&mut self) -> Result<ImportRun, Failure> {
        let (vectors, batch) = (self.vectors, self.batch);
        let total_batches = vectors.div_ceil(batch);
        let kill_after = (total_batches * 2 / 5).max(1);
        let import = run_import(&self.store_dir, &self.npy, batch, total_batches, kill_after)?;
        let acked = import.acked();
        let rate = acked as f64 / import.elapsed.as_secs_f64().max(1e-9);
        if import.killed {
            println!(
                " 3. `vellum import --ack` (pid {}) committed batches of {batch}: SIGKILL after {} of {total_batches} \
                 batches were acknowledged ({acked} vectors in {:.2} s, {rate:.0} vectors/s)",
                import.pid,
                import.acks.len(),
                import.elapsed.as_secs_f64()
            );
        } else {
            println!(
                " 3. `vellum import --ack` (pid {}) finished all {total_batches} batches before the kill landed",
                import.pid
            );
        }
        self.summary.add(
            "acknowledged before SIGKILL",
            format!("{acked} vectors ({} batches of {batch})", import.acks.len()),
        );
        self.summary
            .add("import rate (durable commits)", format!("{rate:.0} vectors/s"));
        Ok(import)
    }

    /// Step 4: reopens the store, which recovers it, and prints the recovery report.
    fn reopen_store(&mut self) -> Result<Store, Failure> {
        let t = Instant::now();
        let store = Store::open(&self.store_dir, super::common::base_options())
            .map_err(|e| Failure::from_error(format!("reopening {}", self.store_dir.display()), e))?;
        let open_time = t.elapsed();
        let report = store.recovery_report();
        println!(" 4. reopened the store in {}: recovery report", ms(open_time));
        for line in report.to_string().lines() {
            println!("      {line}");
        }
        self.summary.add("recovery (open) time", ms(open_time));
        self.summary.add(
            "recovery: redone / losers / CLRs",
            format!(
                "{} records / {} / {}",
                report.records_redone,
                report.losers.len(),
                report.clrs_written
            ),
        );
        self.summary.add(
            "torn tail",
            match &report.scan.torn_tail {
                Some(torn) => format!("at LSN {} ({} bytes)", torn.lsn, torn.garbage_bytes),
                None => "none".into(),
            },
        );
        Ok(store)
    }

    /// Step 5: checks that every acknowledged vector is there bit for bit, that the batch in
    /// flight is wholly present or wholly absent, and that nothing else is; returns the count.
    fn check_vectors(&mut self, store: &Store, import: &ImportRun) -> Result<u64, Failure> {
        let vectors = self.vectors;
        let acked = import.acked();
        let t = Instant::now();
        let present = store.len() as u64;
        let in_flight_end = (acked + self.batch).min(vectors);
        let fate = self.fate_of_batch_in_flight(present, acked, in_flight_end, import.killed);
        let check_upto = present.max(acked).min(vectors);
        let (mismatched, missing) = count_mismatched_and_missing(store, check_upto)?;
        let extra = count_present(store, check_upto..vectors);
        if mismatched + missing + extra > 0 {
            self.problems.push(format!(
                "{missing} acknowledged vectors missing, {mismatched} differing, {extra} present that never committed"
            ));
        }
        println!(
            " 5. {present} vectors present: {fate}; ids 0..{check_upto} equal the generator bit for bit \
             ({mismatched} differ, {missing} missing), ids {check_upto}..{vectors} absent ({extra} present) \
             — checked in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        self.summary
            .add("present after recovery", format!("{present} ({fate})"));
        self.summary.add(
            "acknowledged vectors lost / altered",
            format!("{missing} / {mismatched}"),
        );
        Ok(present)
    }

    /// What became of the batch in flight at the kill, given the `present` count; a count that
    /// is neither `acked` nor `in_flight_end` is a problem.
    fn fate_of_batch_in_flight(&mut self, present: u64, acked: u64, in_flight_end: u64, killed: bool) -> String {
        if present == acked {
            format!("the batch in flight ({acked}..{in_flight_end}) is wholly absent")
        } else if present == in_flight_end && killed {
            format!(
                "the batch in flight ({acked}..{in_flight_end}) is wholly present: it committed, its ack was never printed"
            )
        } else {
            self.problems.push(format!(
                "{present} vectors after recovery: expected {acked} (acknowledged) or {in_flight_end} (with the batch in flight)"
            ));
            format!("PARTIAL: {present} vectors")
        }
    }

    /// Step 6: searches for stored vectors (each must come first) and for one not in the store.
    fn search_vectors(&mut self, store: &Store, present: u64) -> Result<(), Failure> {
        if present == 0 {
            return Ok(());
        }
        let probes = [(present / 3, Metric::Cosine), (present - 1, Metric::L2)];
        let mut times = Vec::new();
        for (id, metric) in probes {
            let query = vector_of(id);
            let t = Instant::now();
            let hits = store
                .search(&query, 10, metric)
                .map_err(|e| Failure::from_error("searching", e))?;
            let took = t.elapsed();
            times.push(took);
            let top = hits.first().cloned().unwrap_or_default();
            let ok = top.0 == id.to_string();
            if !ok {
                self.problems
                    .push(format!("the query equal to id {id} found {:?} first", top.0));
            }
            println!(
                " 6. search k=10 {metric:?} for the vector of id {id}: top hit {:?} (score {:.6}) in {}{}",
                top.0,
                top.1,
                ms(took),
                if ok { "" } else { "  <-- WRONG" }
            );
        }
        let query = vector_of(self.vectors + 7);
        let t = Instant::now();
        let hits = store
            .search(&query, 5, Metric::Cosine)
            .map_err(|e| Failure::from_error("searching", e))?;
        let took = t.elapsed();
        times.push(took);
        let shown: Vec<String> = hits.iter().map(|(id, s)| format!("{id} ({s:.4})")).collect();
        println!(
            "    search k=5 Cosine for a vector not in the store: {} in {}",
            shown.join(", "),
            ms(took)
        );
        times.sort();
        self.summary.add(
            format!("exact search, k=10, {present} vectors"),
            format!("median {}", ms(times[times.len() / 2])),
        );
        Ok(())
    }

    /// Step 7: checkpoints the store, then closes it.
    fn checkpoint_and_close(&self, store: Store) -> Result<(), Failure> {
        let t = Instant::now();
        let checkpoint = store
            .checkpoint()
            .map_err(|e| Failure::from_error("checkpointing", e))?;
        println!(" 7. checkpoint at LSN {checkpoint} in {}", ms(t.elapsed()));
        store
            .close()
            .map_err(|e| Failure::from_error(format!("closing {}", self.store_dir.display()), e))
    }

    /// Step 8: a point-in-time restore to the commit of an earlier batch, compared with it.
    fn restore_earlier_batch(&mut self, import: &ImportRun, present: u64) {
        let half = import.acks.len() / 2;
        if half == 0 {
            println!(" 8. restore skipped: fewer than two batches were acknowledged");
            return;
        }
        let (count, lsn) = import.acks[half - 1];
        match restore_and_compare(&self.store_dir, &self.restored_dir, lsn, count, present) {
            Ok(line) => {
                println!(" 8. {line}");
                self.summary.add(
                    format!("restore to LSN {lsn} (batch {half})"),
                    format!("{count} vectors, as expected"),
                );
            }
            Err(reason) => {
                println!(" 8. restore to LSN {lsn} FAILED: {reason}");
                self.summary
                    .add(format!("restore to LSN {lsn} (batch {half})"), "FAILED");
                self.problems.push(format!("restore: {reason}"));
            }
        }
    }

    /// Step 9: verifies every checksum of the store.
    fn verify_checksums(&mut self) {
        let t = Instant::now();
        match super::verify::verify_store(&self.store_dir, false) {
            Ok(report) => {
                let verdict = if report.clean() {
                    "clean".to_string()
                } else {
                    self.problems.push(format!(
                        "verify: {}",
                        report.problems.first().map(|p| p.describe()).unwrap_or_default()
                    ));
                    format!("{} failures", report.failures())
                };
                println!(
                    " 9. verify: {verdict}: {} log records, {} catalog and {} vector pages checked in {:.2} s",
                    report.wal_records,
                    report.catalog_pages,
                    report.vector_pages,
                    t.elapsed().as_secs_f64()
                );
                self.summary.add("verify (every checksum)", verdict);
            }
            Err(failure) => self.problems.push(format!("verify: {}", failure.message)),
        }
    }

    /// Removes the .npy file, prints the summary and where the stores are; fails if a step
    /// found a problem.
    fn finish(mut self, started: Instant) -> Result<(), Failure> {
        let (base, store_dir, problems) = (&self.base, &self.store_dir, &self.problems);
        let _ = std::fs::remove_file(&self.npy);
        self.summary
            .add("wall time", format!("{:.1} s", started.elapsed().as_secs_f64()));
        println!();
        self.summary.print();
        println!(
            "The stores are left in {} (vectors.npy was removed): try `vellum stats {}` or `vellum wal-dump {} | tail`; \
             remove them with `rm -r {}`.",
            base.display(),
            store_dir.display(),
            store_dir.display(),
            base.display()
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(demo_failure(format!(
                "the demo found {} problems: {}",
                problems.len(),
                problems.join("; ")
            )))
        }
    }
}

/// Counts the ids below `check_upto` whose vector differs from the generator's, and those
/// missing; returns (mismatched, missing).
fn count_mismatched_and_missing(store: &Store, check_upto: u64) -> Result<(u64, u64), Failure> {
    let mut mismatched = 0u64;
    let mut missing = 0u64;
    for id in 0..check_upto {
        match store.get(&id.to_string()) {
            Ok(Some(found)) => {
                let expected = vector_of(id);
                if found.len() != DIMENSION || found.iter().zip(&expected).any(|(a, b)| a.to_bits() != b.to_bits()) {
                    mismatched += 1;
                }
            }
            Ok(None) => missing += 1,
            Err(e) => return Err(Failure::from_error(format!("reading id {id}"), e)),
        }
    }
    Ok((mismatched, missing))
}

/// Counts the ids in `ids` the store holds.
fn count_present(store: &Store, ids: std::ops::Range<u64>) -> u64 {
    let mut extra = 0u64;
    for id in ids {
        if matches!(store.get(&id.to_string()), Ok(Some(_))) {
            extra += 1;
        }
    }
    extra
}

/// Writes `count` demo vectors as a float32 .npy file.
fn write_vectors(path: &Path, count: u64) -> Result<(), Failure> {
    let io = |e| Failure::io(format!("writing {}", path.display()), e);
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = BufWriter::with_capacity(4 << 20, file);
    out.write_all(&npy_header(count, DIMENSION as u64)).map_err(io)?;
    let mut v = vec![0f32; DIMENSION];
    let mut bytes = Vec::with_capacity(DIMENSION * 4);
    for id in 0..count {
        embedding(SEED, id, &mut v);
        bytes.clear();
        for x in &v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        out.write_all(&bytes).map_err(io)?;
    }
    out.flush().map_err(io)
}

/// Runs `vellum import --ack-lsn` as a child and kills it with SIGKILL after `kill_after`
/// acknowledged batches; returns every acknowledgement it printed before it died.
fn run_import(store: &Path, npy: &Path, batch: u64, total_batches: u64, kill_after: u64) -> Result<ImportRun, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::io("finding the vellum executable", e))?;
    let started = Instant::now();
    let mut child = Command::new(&exe)
        .arg("import")
        .arg(store)
        .arg(npy)
        .args(["--batch", &batch.to_string(), "--ack-lsn"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::io(format!("starting {} import", exe.display()), e))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let mut acks = Vec::new();
    let mut killed = false;
    let mut elapsed = Duration::ZERO;
    let bar = progress_bar(total_batches, "acknowledged batches", false);
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| Failure::io("reading the import's acknowledgements", e))?;
        let parsed = line
            .split_once(' ')
            .and_then(|(count, lsn)| Some((count.parse().ok()?, Lsn(lsn.parse().ok()?))));
        let Some(ack) = parsed else {
            let _ = child.kill();
            return Err(demo_failure(format!(
                "the import printed {line:?}, not \"<count> <lsn>\""
            )));
        };
        acks.push(ack);
        bar.set_position(acks.len() as u64);
        if !killed && acks.len() as u64 >= kill_after {
            // Let the next batch get well under way (its first records reach the log file),
            // so recovery has a loser to roll back; then SIGKILL: no destructor, no flush, no
            // close runs in the child. Acknowledgements printed meanwhile are read below.
            elapsed = started.elapsed();
            let per_batch = elapsed / acks.len() as u32;
            std::thread::sleep(per_batch.mul_f64(0.4));
            child.kill().map_err(|e| Failure::io("killing the import", e))?;
            killed = true;
        }
    }
    bar.finish_and_clear();
    // Lines printed before the kill landed were read above: they are acknowledgements too.
    let status = child.wait().map_err(|e| Failure::io("waiting for the import", e))?;
    if !killed {
        elapsed = started.elapsed();
    }
    let mut errors = String::new();
    let _ = stderr.read_to_string(&mut errors);
    if !killed && !status.success() {
        return Err(demo_failure(format!("the import failed ({status}): {}", errors.trim())));
    }
    Ok(ImportRun {
        acks,
        killed,
        elapsed,
        pid,
    })
}

/// Restores `src` to `lsn` into `dest` and checks it holds exactly the first `count` vectors.
fn restore_and_compare(src: &Path, dest: &Path, lsn: Lsn, count: u64, source_count: u64) -> Result<String, String> {
    let t = Instant::now();
    let report = vellum::restore(src, dest, RestoreTarget::Lsn(lsn)).map_err(|e| e.to_string())?;
    let took = t.elapsed();
    let restored =
        Store::open(dest, super::common::base_options()).map_err(|e| format!("opening the restored store: {e}"))?;
    let len = restored.len() as u64;
    if len != count {
        return Err(format!("the restored store holds {len} vectors, expected {count}"));
    }
    let last = count - 1;
    match restored.get(&last.to_string()) {
        Ok(Some(v)) if v.iter().zip(&vector_of(last)).all(|(a, b)| a.to_bits() == b.to_bits()) => {}
        other => {
            return Err(format!(
                "id {last} is not intact in the restored store ({:?})",
                other.map(|o| o.is_some())
            ));
        }
    }
    let missing = if count < source_count {
        match restored.get(&count.to_string()) {
            Ok(None) => format!("; id {count} is in the source but not in the restored store"),
            _ => {
                return Err(format!(
                    "id {count} committed after the target but is in the restored store"
                ));
            }
        }
    } else {
        String::new()
    };
    drop(restored);
    Ok(format!(
        "restored to LSN {lsn} (the commit of the batch ending at {count}) in {}: {} holds {len} vectors, \
         the source {source_count}{missing}; {} log records redone from the base image at LSN {}",
        ms(took),
        dest.display(),
        report.records_redone,
        report.base_image_lsn
    ))
}
