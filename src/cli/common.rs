//! What the subcommands share: exit codes and failures, opening a store, sync-mode flags,
//! progress bars, times, sizes and the JSON form of a recovery report.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use vellum::inspect::StoreLock;
use vellum::{Error, Options, RecoveryReport, Store, SyncMode};

/// Success.
pub const EXIT_OK: u8 = 0;
/// The id, store or file asked for does not exist; or `verify` found damage.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Bad arguments (clap's own usage errors exit 2 as well).
pub const EXIT_USAGE: u8 = 2;
/// An I/O error, damage on disk, or files of an incompatible format.
pub const EXIT_STORE: u8 = 3;
/// The input file of an import is malformed or holds a record the store refuses.
pub const EXIT_INPUT: u8 = 4;
/// The store is open in another process.
pub const EXIT_BUSY: u8 = 5;
/// The input file of an import does not exist or cannot be opened.
pub const EXIT_NO_INPUT: u8 = 6;
/// An import stopped by SIGINT or SIGTERM exits 128 + the signal's number (130, 143), as a
/// shell reports a process the signal ended.
pub const EXIT_SIGNAL_BASE: u8 = 128;

const _: () = assert!(EXIT_OK == 0);

/// Why a subcommand failed: the exit code and one sentence for stderr.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::new(EXIT_NOT_FOUND, message)
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(EXIT_USAGE, message)
    }

    pub fn store(message: impl Into<String>) -> Failure {
        Failure::new(EXIT_STORE, message)
    }

    pub fn input(message: impl Into<String>) -> Failure {
        Failure::new(EXIT_INPUT, message)
    }

    /// A library error, after `context` ("opening the store at x"), with the exit code its
    /// kind calls for.
    pub fn from_error(context: impl std::fmt::Display, error: Error) -> Failure {
        Failure::new(error_code(&error), format!("{context}: {error}"))
    }

    /// An I/O error while doing `context`.
    pub fn io(context: impl std::fmt::Display, error: std::io::Error) -> Failure {
        let code = if error.kind() == std::io::ErrorKind::NotFound {
            EXIT_NOT_FOUND
        } else {
            EXIT_STORE
        };
        Failure::new(code, format!("{context}: {error}"))
    }
}

/// The exit code for a library error.
pub fn error_code(error: &Error) -> u8 {
    match error {
        Error::NotFound(_) => EXIT_NOT_FOUND,
        Error::InvalidArgument(_) | Error::AlreadyExists => EXIT_USAGE,
        _ => EXIT_STORE,
    }
}

/// Rust ignores SIGPIPE, so `vellum wal-dump DIR | head` would end in a write error; a
/// command-line tool should end quietly like the others in the pipeline.
pub fn restore_default_sigpipe() {
    // SAFETY: setting a signal disposition to its default at start-up, before any thread runs;
    // no handler code is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Under an address space limit (`ulimit -v`), glibc's malloc reserves 64 MiB of address
/// space for the arena of each thread that allocates (the import's and the checkpointer's
/// among them), which the store's mappings then lack: with a 200 MB limit an import of one
/// row failed mapping its first arena file, where 100 MB (too little for a second arena) let
/// it through. With a limit, every thread shares one arena.
pub fn share_one_malloc_arena_under_an_address_space_limit() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if vellum::storage::address_space_limit_bytes().is_some() {
        // SAFETY: mallopt sets a malloc tunable; called at start-up, before any thread runs.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// The `--sync` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncArg {
    /// A commit returns once its log bytes are durable (fdatasync, shared by group commit).
    #[default]
    Always,
    /// A background flush every --sync-interval: a crash loses at most the last interval.
    Interval,
    /// Durable only at checkpoints and at the end of the command.
    Never,
}

/// The flush interval of `--sync interval` when `--sync-interval` is not given.
const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Sync-mode flags of the subcommands that write.
#[derive(clap::Args, Debug, Clone)]
pub struct SyncArgs {
    /// When a commit is durable [default: always, or interval if --sync-interval is given].
    /// Not stored in the store: it applies to this command only.
    #[arg(long, value_enum)]
    pub sync: Option<SyncArg>,
    /// The flush interval of `--sync interval` (e.g. 100ms, 1s) [default: 100ms]; given
    /// alone, it implies `--sync interval`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub sync_interval: Option<Duration>,
}

impl SyncArgs {
    /// The sync mode the flags ask for; an interval with `--sync always` or `never` is a
    /// usage error (it would be silently ignored).
    pub fn mode(&self) -> Result<SyncMode, Failure> {
        match (self.sync, self.sync_interval) {
            (None | Some(SyncArg::Always), None) => Ok(SyncMode::Always),
            (Some(SyncArg::Never), None) => Ok(SyncMode::Never),
            (None | Some(SyncArg::Interval), interval) => {
                Ok(SyncMode::Interval(interval.unwrap_or(DEFAULT_SYNC_INTERVAL)))
            }
            (Some(other), Some(_)) => Err(Failure::usage(format!(
                "--sync-interval sets the interval of --sync interval; it has no meaning with --sync {}",
                if other == SyncArg::Always { "always" } else { "never" }
            ))),
        }
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| format!("{e} (try 100ms or 1s)"))?;
    if duration.is_zero() {
        return Err("the interval must be longer than zero".into());
    }
    Ok(duration)
}

/// Parses a byte count: a plain number, or one with a KiB, MiB or GiB suffix.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count (e.g. 16384 or 16KiB)"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} (use KiB, MiB or GiB)")),
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text} is too large"))
}

/// Parses an LSN: a decimal number, or hexadecimal with 0x.
pub fn parse_lsn(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not an LSN (a byte address like 4128 or 0x1020)"))
}

/// Parses an RFC 3339 instant: `2026-11-21T15:02:27Z`, fractions of a second and offsets
/// like `+02:00` allowed.
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    let bad = || format!("{text:?} is not an RFC 3339 time like 2026-11-21T15:02:27Z or 2026-11-21T17:02:27+02:00");
    if text.ends_with('Z') || text.ends_with('z') || text.ends_with("+00:00") {
        let normal = text.replace('z', "Z");
        return humantime::parse_rfc3339(&normal).map_err(|_| bad());
    }
    let bytes = text.as_bytes();
    if bytes.len() < 25 || !matches!(bytes[bytes.len() - 6], b'+' | b'-') || bytes[bytes.len() - 3] != b':' {
        return Err(format!("{}: give the time zone (Z or an offset like +02:00)", bad()));
    }
    let (local, offset) = text.split_at(text.len() - 6);
    if local.as_bytes().get(10) != Some(&b'T') {
        return Err(bad());
    }
    let hours: u64 = offset[1..3].parse().map_err(|_| bad())?;
    let minutes: u64 = offset[4..6].parse().map_err(|_| bad())?;
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    let local = humantime::parse_rfc3339_weak(local).map_err(|_| bad())?;
    let utc = if offset.starts_with('+') {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    };
    utc.ok_or_else(bad)
}

/// Microseconds since the Unix epoch as RFC 3339 UTC with microseconds.
pub fn rfc3339_us(us: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

/// True when progress bars may be drawn: stdout and stderr are terminals.
pub fn interactive() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// A progress bar on stderr over `total` units (bytes if `bytes`), hidden unless interactive.
pub fn progress_bar(total: u64, message: &str, bytes: bool) -> ProgressBar {
    let template = if bytes {
        "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})"
    } else {
        "{msg} [{bar:40}] {pos}/{len} (eta {eta})"
    };
    bar_of(total, message, template)
}

/// A bar of bytes for work that reports its progress a tenth of a second apart (a restore's
/// phases): no rate, which steps that far apart make meaningless, but the time so far.
pub fn coarse_bytes_bar(total: u64, message: &str) -> ProgressBar {
    bar_of(total, message, "{msg} [{bar:40}] {bytes}/{total_bytes} ({elapsed})")
}

fn bar_of(total: u64, message: &str, template: &str) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

/// A bar per phase of a long call (on stderr, hidden unless interactive): a new bar each time
/// the phase changes, made by the caller's `make` (a bar, or a spinner for a phase of unknown
/// length).
pub struct PhaseBar<P> {
    shown: Option<(P, ProgressBar)>,
}

impl<P: PartialEq + Copy> PhaseBar<P> {
    pub fn new() -> PhaseBar<P> {
        PhaseBar { shown: None }
    }

    /// Shows `done` units of `phase`, whose bar `make` makes if it is a new phase.
    pub fn show(&mut self, phase: P, done: u64, make: impl FnOnce() -> ProgressBar) {
        if self.shown.as_ref().is_none_or(|(shown, _)| *shown != phase) {
            self.finish();
            let bar = make();
            // The units done before the bar was made are no part of its rate (a phase first
            // seen part way measured 99 GiB/s).
            bar.set_position(done);
            bar.reset_eta();
            self.shown = Some((phase, bar));
        }
        if let Some((_, bar)) = &self.shown {
            bar.set_position(done);
        }
    }

    pub fn finish(&mut self) {
        if let Some((_, bar)) = self.shown.take() {
            bar.finish_and_clear();
        }
    }
}

/// A spinner on stderr for work of unknown length, hidden unless interactive.
pub fn spinner(message: &str) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"));
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Fails with exit code 5 if another process has the store open (holds its locks).
pub fn check_not_busy(dir: &Path) -> Result<(), Failure> {
    match lock(dir) {
        StoreLock::Busy => Err(Failure::new(
            EXIT_BUSY,
            format!(
                "{} is open in another process; try again when it has closed it",
                dir.display()
            ),
        )),
        StoreLock::Held(_) | StoreLock::Unavailable => Ok(()),
    }
}

/// The store's locks as a writer takes them, taken without creating anything.
pub fn lock(dir: &Path) -> StoreLock {
    vellum::inspect::try_lock_store(dir, true)
}

/// The options every command starts from: the library's defaults, with direct I/O off when
/// `VELLUM_DIRECT_IO=0` is set (`Options::direct_io`: every write through the page cache).
pub fn base_options() -> Options {
    Options {
        direct_io: std::env::var("VELLUM_DIRECT_IO").map_or(true, |value| value.trim() != "0"),
        ..Options::default()
    }
}

/// Opens the store in `dir` (running recovery, as every open does) with `sync`.
pub fn open_store(dir: &Path, sync: SyncMode) -> Result<Store, Failure> {
    open_store_with(dir, sync, base_options())
}

/// [`open_store`] with `options` (their sync mode replaced by `sync`).
pub fn open_store_with(dir: &Path, sync: SyncMode, options: Options) -> Result<Store, Failure> {
    check_not_busy(dir)?;
    let options = Options { sync, ..options };
    let open = |store: vellum::Result<Store>| {
        store.map_err(|e| {
            let read_only = may_not_write(&e);
            let mut failure = Failure::from_error(format!("cannot open the store at {}", dir.display()), e);
            if read_only {
                failure.message.push_str(
                    " (a command that only reads, such as get, search, list, export, stats or verify, \
                     opens the store without writing)",
                );
            }
            failure
        })
    };
    match Store::open(dir, options) {
        // A replica (`vellum replica`) opens read-only.
        Err(vellum::Error::ReadOnly(why)) if why.contains("is a replica of") => {
            open(Store::open_read_only(dir, Options::default()))
        }
        other => open(other),
    }
}

/// Whether `error` says that this process may not write the store's files: read-only media,
/// or a user without write permission.
fn may_not_write(error: &Error) -> bool {
    matches!(
        error,
        Error::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied)
    )
}

/// Opens the store in `dir` read-only (`Store::open_read_only`): nothing is written, a crash is
/// replayed in memory, and it works on read-only media; exit 5 if a writer has the store.
pub fn open_store_read_only(dir: &Path) -> Result<Store, Failure> {
    Store::open_read_only(dir, Options::default()).map_err(|e| match e {
        Error::Locked(_) => Failure::new(
            EXIT_BUSY,
            format!(
                "{} is open in another process (a writer); try again when it has closed it",
                dir.display()
            ),
        ),
        e => Failure::from_error(format!("cannot open the store at {}", dir.display()), e),
    })
}

pub use vellum::inspect::dir_usage;

/// A duration in milliseconds with three decimals, for people.
pub fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1e3)
}

/// A duration for people, in the unit that reads best: 850.000 ms, 12.4 s, 4 min 2 s,
/// 1 h 3 min.
pub fn duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    let whole = duration.as_secs();
    match whole {
        0 => ms(duration),
        1..60 => format!("{seconds:.1} s"),
        60..3600 => format!("{} min {} s", whole / 60, whole % 60),
        _ => format!("{} h {} min", whole / 3600, whole % 3600 / 60),
    }
}

/// A byte count for people: 1.5 MiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The JSON form of a recovery report (README, "stats --json").
pub fn recovery_json(report: &RecoveryReport) -> Value {
    let scan = &report.scan;
    json!({
        "scan": {
            "start_lsn": scan.start_lsn.get(),
            "end_lsn": scan.end_lsn.get(),
            "last_record_lsn": scan.last_record_lsn.map(|l| l.get()),
            "records": scan.records,
            "torn_tail": scan.torn_tail.as_ref().map(|t| json!({
                "lsn": t.lsn.get(),
                "garbage_bytes": t.garbage_bytes,
                "reason": t.reason,
            })),
            "skipped": scan.skipped.iter().map(|s| json!({
                "from": s.from.get(),
                "to": s.to.get(),
                "reason": s.reason,
            })).collect::<Vec<_>>(),
        },
        "analysis_start": report.analysis_start.get(),
        "redo_start": report.redo_start.get(),
        "end_lsn": report.end_lsn.get(),
        "records_redone": report.records_redone,
        "records_skipped": report.records_skipped,
        "losers": report.losers,
        "clrs_written": report.clrs_written,
        "pages_repaired": report.pages_repaired,
        "damage_skipped": report.damage_skipped,
        "analysis_time_us": report.analysis_time.as_micros() as u64,
        "redo_time_us": report.redo_time.as_micros() as u64,
        "undo_time_us": report.undo_time.as_micros() as u64,
        "checkpoint_time_us": report.checkpoint_time.as_micros() as u64,
    })
}

/// `text` as the body of a JSON string (what JSON prints between the quotes), with every
/// control character escaped, not only those JSON requires: `"` and `\` as `\"` and `\\`;
/// tab, newline, carriage return, backspace and form feed as `\t`, `\n`, `\r`, `\b`, `\f`;
/// every other control character (U+0000 to U+001F, U+007F to U+009F) as `\u00XX`. Nothing
/// else changes, so the result is one line without tabs, and wrapping it in quotes and
/// parsing it as JSON gives `text` back.
pub fn escape_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => {
                write!(out, "\\u{:04x}", c as u32).expect("writing to a String");
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Prints one JSON value on one line.
pub fn print_json(value: &Value) {
    println!("{value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_unit_that_suits_them() {
        let cases = [
            (Duration::from_micros(850_250), "850.250 ms"),
            (Duration::from_millis(12_440), "12.4 s"),
            (Duration::from_secs(242), "4 min 2 s"),
            (Duration::from_secs(3 * 3600 + 7 * 60 + 5), "3 h 7 min"),
        ];
        for (took, text) in cases {
            assert_eq!(duration(took), text);
        }
    }

    #[test]
    fn byte_counts_take_binary_suffixes() {
        assert_eq!(parse_bytes("16384"), Ok(16384));
        assert_eq!(parse_bytes("16KiB"), Ok(16384));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert!(parse_bytes("12XB").is_err(), "unknown units are refused");
    }

    #[test]
    fn escaped_text_is_one_line_without_tabs_and_parses_back_as_a_json_string() {
        let mut texts: Vec<String> = (0u32..0x100)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        texts.extend([
            "plain".into(),
            String::new(),
            "tab\tnew\nline\r\\ \"q\" é ✓ \u{2028}".into(),
        ]);
        for text in &texts {
            let escaped = escape_text(text);
            assert!(
                !escaped.chars().any(char::is_control),
                "no control character survives: {escaped:?}"
            );
            let back: String = serde_json::from_str(&format!("\"{escaped}\"")).expect("a JSON string body");
            assert_eq!(&back, text, "reversible");
        }
        assert!(
            matches!(escape_text("plain-id_1.ü"), Cow::Borrowed("plain-id_1.ü")),
            "an id without quotes, backslashes or control characters prints as it is"
        );
    }

    #[test]
    fn sync_interval_alone_implies_interval_and_conflicts_with_other_modes() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            sync: SyncArgs,
        }
        let mode = |args: &[&str]| {
            let flags = <Flags as clap::Parser>::try_parse_from(std::iter::once("vellum").chain(args.iter().copied()))
                .expect("valid flags");
            flags.sync.mode().map_err(|f| (f.code, f.message))
        };
        assert_eq!(mode(&[]), Ok(SyncMode::Always));
        assert_eq!(
            mode(&["--sync-interval", "50ms"]),
            Ok(SyncMode::Interval(Duration::from_millis(50))),
            "an interval alone means --sync interval"
        );
        assert_eq!(
            mode(&["--sync", "interval"]),
            Ok(SyncMode::Interval(DEFAULT_SYNC_INTERVAL))
        );
        assert_eq!(mode(&["--sync", "never"]), Ok(SyncMode::Never));
        for other in ["always", "never"] {
            let error = mode(&["--sync", other, "--sync-interval", "1s"]);
            assert!(
                matches!(&error, Err((EXIT_USAGE, message)) if message.contains(other)),
                "an interval with --sync {other} is a usage error: {error:?}"
            );
        }
    }

    #[test]
    fn times_with_offsets_are_converted_to_utc() {
        let z = parse_time("2026-11-21T15:02:27Z").unwrap();
        assert_eq!(parse_time("2026-11-21T17:02:27+02:00").unwrap(), z);
        assert_eq!(parse_time("2026-11-21T14:02:27-01:00").unwrap(), z);
        assert!(
            parse_time("2026-11-21T15:02:27").is_err(),
            "a time without a zone is ambiguous"
        );
        assert_eq!(rfc3339_us(1_500_000), "1970-01-01T00:00:01.500000Z");
    }
}
