//! What the peers bench needs from the machine: the raw baselines (what the disk allows with no
//! engine at all), page-cache control, sizes on disk, latency summaries and the machine's
//! description for the report.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Res;

pub const MIB: usize = 1 << 20;

/// p50 and p99 of a set of per-operation latencies (nearest rank).
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Latency {
    pub fn from_ns(mut samples_ns: Vec<u64>) -> Latency {
        assert!(!samples_ns.is_empty(), "a latency summary needs at least one sample");
        samples_ns.sort_unstable();
        let n = samples_ns.len();
        let pick = |q: f64| samples_ns[((n as f64 * q).ceil() as usize).clamp(1, n) - 1] as f64 / 1e3;
        Latency {
            p50_us: pick(0.50),
            p99_us: pick(0.99),
        }
    }
}

pub fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// How the raw baseline's file is made before its timed writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Filled with zeros and synced: no timed write changes the file's metadata (how Vellum's
    /// log segments are made, and recycled).
    ZeroFilled,
    /// Allocated with `fallocate` (no bytes written) and synced: on ext4 and XFS the blocks are
    /// "unwritten", and the first write to each makes `fdatasync` commit the extent's change to
    /// the journal as well. A log segment made this way costs no device bytes (a segment kept
    /// as the archive's copy, by rename or link, needs a new one made for each it keeps); this
    /// row is what its small commits would pay.
    Allocated,
}

/// Raw baseline: `pwrite` 4 KiB at increasing offsets + `fdatasync` per op, into a file made as
/// `prepared` says. With `direct`, each op is one `pwrite` of the file opened `O_DIRECT |
/// O_DSYNC` instead (the page cache skipped, the write durable on return), what Vellum's small
/// flushes do. Returns ops/s and the per-op latency.
pub fn raw_pwrite_fdatasync(dir: &Path, ops: usize, direct: bool, prepared: Prepared) -> Res<(f64, Latency)> {
    use std::os::unix::fs::OpenOptionsExt;
    const OP_BYTES: usize = 4096;
    let path = dir.join("raw-pwrite");
    let file = create_file(&path)?;
    let file_bytes = (ops * OP_BYTES).div_ceil(MIB) * MIB;
    match prepared {
        Prepared::ZeroFilled => {
            let zeros = vec![0u8; MIB];
            for offset in (0..file_bytes).step_by(MIB) {
                file.write_all_at(&zeros, offset as u64)?;
            }
        }
        Prepared::Allocated => {
            use std::os::fd::AsRawFd;
            let len = libc::off_t::try_from(file_bytes).map_err(|_| "file too large")?;
            // SAFETY: fallocate takes the descriptor of a file we own and plain integers.
            let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
            if rc != 0 {
                return Err(format!("fallocate {}: {}", path.display(), std::io::Error::last_os_error()).into());
            }
        }
    }
    file.sync_all()?;
    let file = if direct {
        let options = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(&path);
        options.map_err(|e| format!("opening {} O_DIRECT: {e}", path.display()))?
    } else {
        file
    };
    // Aligned for O_DIRECT: a window of a larger buffer.
    let mut memory = vec![0u8; 2 * OP_BYTES];
    let at = memory.as_ptr().align_offset(OP_BYTES);
    let payload = &mut memory[at..at + OP_BYTES];
    payload.iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7 + 1) as u8);
    let mut samples_ns = Vec::with_capacity(ops);
    let start = Instant::now();
    for op in 0..ops {
        let t = Instant::now();
        file.write_all_at(payload, (op * OP_BYTES) as u64)?;
        if !direct {
            file.sync_data()?;
        }
        samples_ns.push(ns(t.elapsed()));
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(file);
    fs::remove_file(&path)?;
    Ok((ops as f64 / seconds, Latency::from_ns(samples_ns)))
}

/// Raw baseline: sequential `write` of `bytes` in 1 MiB chunks to a new file, `fdatasync` after
/// every MiB. Returns MB/s (10^6 bytes).
pub fn raw_sequential_fdatasync(dir: &Path, bytes: usize) -> Res<f64> {
    let path = dir.join("raw-sequential");
    let file = create_file(&path)?;
    let chunk: Vec<u8> = (0..MIB).map(|i| (i * 13 + 5) as u8).collect();
    let start = Instant::now();
    for offset in (0..bytes).step_by(MIB) {
        file.write_all_at(&chunk, offset as u64)?;
        file.sync_data()?;
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(file);
    fs::remove_file(&path)?;
    Ok(bytes as f64 / seconds / 1e6)
}

/// A cold read of `bytes` (ms): a file of that size is written and synced in `dir`, its pages
/// dropped from the page cache, then timed: open, one read of it all (asked ahead with
/// `posix_fadvise(WILLNEED)`, as a log scan asks), close. The floor of an open that must read
/// that much of its log from the disk before it can answer.
pub fn cold_read_ms(dir: &Path, bytes: usize) -> Res<f64> {
    let path = dir.join("raw-cold-read");
    let file = create_file(&path)?;
    let content: Vec<u8> = (0..bytes).map(|i| (i * 13 + 5) as u8).collect();
    file.write_all_at(&content, 0)?;
    file.sync_all()?;
    // SAFETY: the descriptor belongs to `file`, alive across the call; no pointers are passed.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    drop(file);
    if rc != 0 {
        return Err(format!("posix_fadvise({}): error {rc}", path.display()).into());
    }
    let mut read = vec![0u8; bytes];
    let start = Instant::now();
    let file = File::open(&path)?;
    // SAFETY: as above.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, bytes as libc::off_t, libc::POSIX_FADV_WILLNEED) };
    file.read_exact_at(&mut read, 0)?;
    drop(file);
    let ms = start.elapsed().as_secs_f64() * 1e3;
    fs::remove_file(&path)?;
    if read != content {
        return Err("the cold read returned other bytes than were written".into());
    }
    Ok(ms)
}

fn create_file(path: &Path) -> Res<File> {
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(path);
    file.map_err(|e| format!("creating {}: {e}", path.display()).into())
}

/// A fresh, empty directory at `dir` (whatever was there is removed).
pub fn fresh_dir(dir: &Path) -> Res<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    Ok(())
}

/// Every regular file below `dir`.
pub fn files_under(dir: &Path) -> Res<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    Ok(files)
}

/// Bytes allocated on disk (blocks, as `du` counts them) by the files below `dir`.
pub fn allocated_bytes(dir: &Path) -> Res<u64> {
    let mut total = 0;
    for path in files_under(dir)? {
        total += fs::metadata(&path)?.blocks() * 512;
    }
    Ok(total)
}

/// Bytes allocated under each entry of `dir` (descending into a lone subdirectory), largest
/// first, as `name 123 MiB, ...`: where a store's size on disk goes.
pub fn size_breakdown(dir: &Path) -> Res<String> {
    let mut dir = dir.to_path_buf();
    let mut entries: Vec<PathBuf> = fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    while let [only] = entries.as_slice() {
        if !only.is_dir() {
            break;
        }
        dir = only.clone();
        entries = fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
    }
    let mut sizes = Vec::new();
    for entry in entries {
        let bytes = if entry.is_dir() {
            allocated_bytes(&entry)?
        } else {
            fs::metadata(&entry)?.blocks() * 512
        };
        let name = entry
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        sizes.push((bytes, name));
    }
    sizes.sort_by(|a, b| b.cmp(a));
    let parts: Vec<String> = sizes
        .iter()
        .filter(|(bytes, _)| *bytes > 0)
        .map(|(bytes, name)| format!("{name} {} MiB", crate::report::fmt_num(*bytes as f64 / MIB as f64)))
        .collect();
    Ok(parts.join(", "))
}

/// Drops the pages of every file below `dir` from the page cache, so the next open reads from
/// the disk: `fsync` first (only clean pages can be dropped; everything measured was already
/// durable, so this changes nothing on disk), then `posix_fadvise(DONTNEED)`.
pub fn evict_page_cache(dir: &Path) -> Res<()> {
    for path in files_under(dir)? {
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(_) => File::open(&path)?,
        };
        file.sync_all()?;
        // SAFETY: the descriptor belongs to `file`, which lives across the call; posix_fadvise
        // takes no pointers and only advises the kernel about the file's cached pages.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(format!("posix_fadvise({}): error {rc}", path.display()).into());
        }
    }
    Ok(())
}

/// Fraction of the 4 KiB pages of the files below `dir` that are in the page cache (`mincore`):
/// checks that an eviction took effect.
pub fn resident_fraction(dir: &Path) -> Res<f64> {
    const PAGE_BYTES: usize = 4096;
    let (mut total, mut resident) = (0usize, 0usize);
    for path in files_under(dir)? {
        let file = File::open(&path)?;
        let len = usize::try_from(file.metadata()?.len())?;
        if len == 0 {
            continue;
        }
        // SAFETY: the mapping is only handed to mincore, which reads page-table state, never
        // the mapped bytes, so a concurrent change of the file cannot be observed through it.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let mut flags = vec![0u8; len.div_ceil(PAGE_BYTES)];
        // SAFETY: `map` is a live mapping of `len` bytes and `flags` has one byte for each of
        // its pages, as mincore writes.
        let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, flags.as_mut_ptr()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        total += flags.len();
        resident += flags.iter().filter(|&&f| f & 1 == 1).count();
    }
    Ok(if total == 0 {
        0.0
    } else {
        resident as f64 / total as f64
    })
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today_utc() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    civil_date(i64::try_from(days).unwrap_or(0))
}

/// Days since 1970-01-01 as a civil date `YYYY-MM-DD` (proleptic Gregorian, in 400-year eras).
pub fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The machine in one line: cores, CPU model, memory, kernel, and the file system under `dir`.
pub fn machine(dir: &Path) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = proc_field(&cpuinfo, "model name").unwrap_or_else(|| "unknown CPU".into());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = proc_field(&meminfo, "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(|| "?".into(), |kib| format!("{:.0}", kib / (1024.0 * 1024.0)));
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores (nproc), {cpu}, {mem_gib} GiB RAM, Linux {}, data on {}",
        kernel.trim(),
        file_system(dir)
    )
}

fn proc_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|line| line.split(':').next().is_some_and(|k| k.trim() == key))
        .and_then(|line| line.split_once(':'))
        .map(|(_, value)| value.trim().to_string())
}

/// `PATH (TYPE, DEVICE)` of the mount that holds `dir` (the longest mount point above it).
fn file_system(dir: &Path) -> String {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let best = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            dir.starts_with(point).then_some((point.len(), device, kind))
        })
        .max_by_key(|(len, _, _)| *len);
    match best {
        Some((_, device, kind)) => format!("{} ({kind}, {device})", dir.display()),
        None => dir.display().to_string(),
    }
}

/// The load average, for the report: the figures are only as good as the machine was quiet.
pub fn load_average() -> String {
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// CPU time (user and system) every thread of this process has used so far.
/// Bytes written so far to the block device that holds `dir` (sectors written, from
/// `/sys/dev/block/MAJOR:MINOR/stat`), after `syncfs` on it so that what the page cache holds
/// is counted. What the device took, whoever wrote it: figures are taken with nothing else
/// running. `None` where the counter cannot be read.
pub fn device_written_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let handle = fs::File::open(dir).ok()?;
    // SAFETY: syncfs takes a descriptor this function owns for the call's duration.
    unsafe { libc::syncfs(handle.as_raw_fd()) };
    let dev = fs::metadata(dir).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let stat = fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

/// Bytes read so far from the block device that holds `dir` (sectors read, from
/// `/sys/dev/block/MAJOR:MINOR/stat`): what the device served, whoever asked. `None` where the
/// counter cannot be read.
pub fn device_read_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata(dir).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let stat = fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(2)?.parse().ok()?;
    Some(sectors * 512)
}

pub fn process_cpu() -> Duration {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed value it is given, nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// A fresh directory for this run in a memory file system (`/dev/shm`, or `PEERS_MEMORY_DIR`),
/// named after `dir`'s last two components; `None` where there is none or it cannot be made.
pub fn memory_dir(dir: &Path) -> Option<PathBuf> {
    let base = std::env::var_os("PEERS_MEMORY_DIR").map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from);
    if !base.is_dir() {
        return None;
    }
    let tail: Vec<_> = dir.components().rev().take(2).collect();
    let name: String = tail
        .iter()
        .rev()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("-");
    let path = base.join(format!("vellum-peers-{}-{name}", std::process::id()));
    fresh_dir(&path).ok().map(|()| path)
}
