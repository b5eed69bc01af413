//! Raw baseline for w2: four writers that each commit one record at a time and wait for it to
//! be durable, sharing durable writes as group commit does, with no engine around them. What
//! any store of that shape could reach on this machine: the device, the cores and the wake-ups,
//! and nothing else. A record is the 1 KiB the workload commits or, for the last baseline, as
//! many bytes as Vellum's log takes for one such commit (its records' headers, the id, the
//! catalog and index edits, the commit record): the ceiling of a store that logs what Vellum
//! logs.
//!
//! A writer appends its record under a lock (a count of bytes: the bytes themselves do not
//! matter to the disk) and then either leads a flush, if its record is not yet in one and
//! fewer than `in_flight_max` flushes run, or waits for the flush that holds it (yielding for
//! up to 100 µs, then asleep, as Vellum's followers do). A leader takes every record appended so
//! far and writes them as whole 4 KiB blocks with one `O_DIRECT | O_DSYNC` `pwrite`:
//!
//! - one flush in flight: the log's blocks in order, the last partial block written again by the
//!   next flush (what a log does);
//! - one flush in flight, gathered: as the first, the leader first yielding until all four
//!   records are appended (for 60 µs at most), as Vellum's leader does;
//! - two flushes in flight: each flush on fresh blocks of its own (a log would need a padding
//!   record for that), and a writer's commit durable when its own flush returns, whatever the
//!   other does: more generous than any log, whose durable point is a prefix;
//! - two flushes in flight, gathered: as the third, each leader first yielding until two records
//!   are appended (for 60 µs at most);
//! - gathered, at Vellum's log bytes: as the second, each record as long as Vellum's log
//!   takes for one w2 commit (measured before the run, [`crate::engines::vellum_log_bytes_per_commit`]).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::Res;

const BLOCK: usize = 4096;
/// The workload's record.
pub const RECORD_BYTES: usize = 1024;
const WRITERS: usize = 4;
const SPIN: Duration = Duration::from_micros(100);
const GATHER_MAX: Duration = Duration::from_micros(60);

/// How the raw writers share their durable writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// One flush at a time, of whatever is appended when it starts.
    OneInFlight,
    /// One flush at a time, its leader waiting for all four records first.
    Gathered,
    /// Up to two flushes at a time, each on fresh blocks.
    TwoInFlight,
    /// Up to two flushes at a time, each leader waiting for two records first.
    TwoGathered,
    /// As `Gathered`, each record as long as Vellum's log bytes for one commit.
    GatheredLogBytes,
}

impl Sharing {
    pub const ALL: [Sharing; 5] = [
        Sharing::OneInFlight,
        Sharing::Gathered,
        Sharing::TwoInFlight,
        Sharing::TwoGathered,
        Sharing::GatheredLogBytes,
    ];

    /// The report's keys for its commits per second and its commits per durable write.
    pub fn keys(self) -> (&'static str, &'static str) {
        match self {
            Sharing::OneInFlight => ("raw_group_per_s", "raw_group_per_flush"),
            Sharing::Gathered => ("raw_group_gathered_per_s", "raw_group_gathered_per_flush"),
            Sharing::TwoInFlight => ("raw_group2_per_s", "raw_group2_per_flush"),
            Sharing::TwoGathered => ("raw_group2g_per_s", "raw_group2g_per_flush"),
            Sharing::GatheredLogBytes => ("raw_group_log_per_s", "raw_group_log_per_flush"),
        }
    }
}

/// Commits per second and commits per durable write.
pub struct GroupFigures {
    pub commits_per_s: f64,
    pub commits_per_flush: f64,
}

#[derive(Default)]
struct State {
    /// Writers whose record is appended and in no flush yet.
    waiting: Vec<usize>,
    /// Whether each writer's last record is durable.
    durable: [bool; WRITERS],
    in_flight: usize,
    /// One flush in flight: the log's length in bytes. Two: the next fresh block.
    end_bytes: u64,
    flushes: u64,
}

struct Group {
    state: Mutex<State>,
    done: Condvar,
    file: fs::File,
    sharing: Sharing,
    record_bytes: usize,
}

/// Runs `per_writer` commits of `record_bytes` each from each of four writers into a new
/// zero-filled file in `dir`.
pub fn raw_group_commit(dir: &Path, per_writer: usize, sharing: Sharing, record_bytes: usize) -> Res<GroupFigures> {
    assert!(
        record_bytes > 0 && WRITERS * record_bytes <= 12 * BLOCK,
        "a flush of every writer's record fits the buffer"
    );
    let path = dir.join("raw-group");
    let bytes = (WRITERS * per_writer * (record_bytes + BLOCK) + 2 * BLOCK).next_multiple_of(1 << 20);
    let zeros = vec![0u8; 1 << 20];
    {
        let file = OpenOptions::new().write(true).create_new(true).open(&path)?;
        for offset in (0..bytes).step_by(1 << 20) {
            file.write_all_at(&zeros, offset as u64)?;
        }
        file.sync_all()?;
    }
    let opened = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(&path);
    let file = opened.map_err(|e| format!("opening {} O_DIRECT: {e}", path.display()))?;
    let group = Group {
        state: Mutex::new(State::default()),
        done: Condvar::new(),
        file,
        sharing,
        record_bytes,
    };
    let start = Instant::now();
    let results: Vec<Res<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let group = &group;
                scope.spawn(move || -> Res<()> {
                    let mut blocks = Blocks::new(16 * BLOCK);
                    for _ in 0..per_writer {
                        group.commit(writer, &mut blocks)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a raw writer panicked".into())))
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    results.into_iter().collect::<Res<Vec<()>>>()?;
    let flushes = group.state.lock().map_err(|_| "poisoned")?.flushes;
    drop(group);
    fs::remove_file(&path)?;
    let commits = (WRITERS * per_writer) as f64;
    Ok(GroupFigures {
        commits_per_s: commits / seconds,
        commits_per_flush: commits / flushes.max(1) as f64,
    })
}

impl Group {
    fn in_flight_max(&self) -> usize {
        if matches!(self.sharing, Sharing::TwoInFlight | Sharing::TwoGathered) {
            2
        } else {
            1
        }
    }

    /// Appends `writer`'s record and returns once a flush made it durable.
    fn commit(&self, writer: usize, blocks: &mut Blocks) -> Res<()> {
        let mut state = self.state.lock().map_err(|_| "poisoned")?;
        state.durable[writer] = false;
        state.waiting.push(writer);
        let mut since = Instant::now();
        while !state.durable[writer] {
            if state.in_flight < self.in_flight_max() && state.waiting.contains(&writer) {
                state = self.lead(state, blocks)?;
                since = Instant::now();
            } else if since.elapsed() < SPIN {
                drop(state);
                std::thread::yield_now();
                state = self.state.lock().map_err(|_| "poisoned")?;
            } else {
                state = self.done.wait(state).map_err(|_| "poisoned")?;
            }
        }
        Ok(())
    }

    /// Takes every waiting record, writes them durably (the lock given back meanwhile) and
    /// marks them durable.
    fn lead<'a>(
        &'a self,
        mut state: std::sync::MutexGuard<'a, State>,
        blocks: &mut Blocks,
    ) -> Res<std::sync::MutexGuard<'a, State>> {
        state.in_flight += 1;
        let gather_to = match self.sharing {
            Sharing::Gathered | Sharing::GatheredLogBytes => WRITERS,
            Sharing::TwoGathered => 2,
            _ => 0,
        };
        if gather_to > 0 {
            let started = Instant::now();
            while state.waiting.len() < gather_to && started.elapsed() < GATHER_MAX {
                drop(state);
                std::thread::yield_now();
                state = self.state.lock().map_err(|_| "poisoned")?;
            }
        }
        let taken = std::mem::take(&mut state.waiting);
        let record_bytes = (taken.len() * self.record_bytes) as u64;
        let (offset, len) = if self.in_flight_max() == 1 {
            let first_block = state.end_bytes - state.end_bytes % BLOCK as u64;
            state.end_bytes += record_bytes;
            (
                first_block,
                (state.end_bytes - first_block).next_multiple_of(BLOCK as u64),
            )
        } else {
            let at = state.end_bytes;
            state.end_bytes += record_bytes.next_multiple_of(BLOCK as u64);
            (at, record_bytes.next_multiple_of(BLOCK as u64))
        };
        drop(state);
        let written = self.file.write_all_at(blocks.window(len as usize), offset);
        let mut state = self.state.lock().map_err(|_| "poisoned")?;
        state.in_flight -= 1;
        state.flushes += 1;
        // Released even if the write failed (no writer waits for ever): the leader's error
        // fails the whole baseline, so no figure comes from it.
        for writer in taken {
            state.durable[writer] = true;
        }
        self.done.notify_all();
        written?;
        Ok(state)
    }
}

/// Memory aligned for direct writes.
struct Blocks {
    memory: Vec<u8>,
    at: usize,
}

impl Blocks {
    fn new(len: usize) -> Blocks {
        let memory: Vec<u8> = (0..len + BLOCK).map(|i| (i * 31 + 7) as u8).collect();
        let at = memory.as_ptr().align_offset(BLOCK);
        Blocks { memory, at }
    }

    fn window(&mut self, len: usize) -> &[u8] {
        assert!(
            len <= self.memory.len() - self.at,
            "a flush of {len} bytes fits the buffer"
        );
        &self.memory[self.at..self.at + len]
    }
}
