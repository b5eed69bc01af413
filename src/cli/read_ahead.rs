//! The input of `vellum import`, read in batches on threads of their own while the store commits
//! the batch before.
//!
//! Parsing costs as much as storing: a JSONL file of 256-dimension vectors parses at ~250 MB/s
//! of text on one core (its floats are most of that), about the time the bulk path takes to
//! store the same records. Read on the committing thread, the two add up; here they overlap,
//! and a JSONL file's lines are parsed by [`parse_threads`] threads (a thread reads the lines of
//! each batch, a parser turns them into records), so a machine with cores to spare parses as
//! fast as the store takes the records. Every batch, the end of the input and the first failure
//! to read or parse it reach the committing thread in input order ([`Batches::next`]). A batch
//! cut short by a failure is not handed over: as when reading and committing took turns, the
//! records read before the failure in that batch are not committed, and of two failures in a
//! batch the one on the earlier line is reported. At most [`AHEAD_BATCHES`] batches (and one a
//! parser) wait beside the one committing.
//!
//! The committing side may stop early (a bad record, a failed commit, a signal): it drops its
//! end, and the reader stops at its next hand-over, the parsers when the reader has. They are
//! never joined, so a reader blocked on a read that does not return (a FIFO with no writer)
//! cannot hold the process: it ends with it.

use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use super::common::Failure;
use super::input::{InputRecord, LineParser, Source};

/// How many batches may wait, read (and parsed), beside the one committing.
const AHEAD_BATCHES: usize = 1;
/// The most threads that parse lines.
const PARSE_THREADS_MAX: usize = 8;

/// Records read, for one transaction.
pub struct Batch {
    pub records: Vec<InputRecord>,
    /// Where its last record came from ("line 7", "row 12").
    pub location: String,
    /// Bytes of the input consumed through its last record.
    pub bytes_read: u64,
}

/// What the committing thread gets, in input order.
pub enum Read {
    Batch(Batch),
    /// The input ended after the batches handed over.
    End,
    /// Reading failed after the batches handed over; `first` if it failed on the input's first
    /// record.
    Failed {
        failure: Failure,
        first: bool,
    },
}

/// A read as the reader hands it over: done, or being parsed.
enum Pending {
    Ready(Read),
    Parsing(Receiver<Read>),
}

/// The committing thread's end: the reads in input order.
pub struct Batches {
    pending: Receiver<Pending>,
}

impl Batches {
    /// The next batch, or the end of the input, or the failure that came before either.
    pub fn next(&self) -> Read {
        let lost = || Read::Failed {
            failure: Failure::store("a thread reading the input stopped (a panic)"),
            first: false,
        };
        match self.pending.recv() {
            Ok(Pending::Ready(read)) => read,
            Ok(Pending::Parsing(parsed)) => parsed.recv().unwrap_or_else(|_| lost()),
            Err(_) => lost(),
        }
    }
}

/// How many threads parse a JSONL file's lines: the cores, at most [`PARSE_THREADS_MAX`].
pub fn parse_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, PARSE_THREADS_MAX)
}

/// Starts reading `source` in batches of `batch_records`, with `parsers` threads parsing its
/// lines if it is read as lines (at least one then).
pub fn spawn(source: Box<dyn Source>, batch_records: u64, parsers: usize) -> Result<Batches, Failure> {
    assert!(batch_records > 0, "a batch holds a record");
    let (send, pending) = std::sync::mpsc::sync_channel(AHEAD_BATCHES);
    let started = |e| Failure::io("starting a thread that reads the input", e);
    let reader = std::thread::Builder::new().name("vellum-import-reader".into());
    match source.line_parser() {
        None => reader.spawn(move || read_records(source, batch_records, &send)),
        Some(parser) => {
            let (work_send, work) = std::sync::mpsc::channel();
            let work = Arc::new(Mutex::new(work));
            for _ in 0..parsers.max(1) {
                let (parser, work) = (parser.clone(), work.clone());
                std::thread::Builder::new()
                    .name("vellum-import-parser".into())
                    .spawn(move || parse_lines(&parser, &work))
                    .map_err(started)?;
            }
            reader.spawn(move || read_lines(source, batch_records, &send, &work_send))
        }
    }
    .map_err(started)?;
    Ok(Batches { pending })
}

/// Hands over batch after batch of records until the input ends, reading fails, or no one
/// receives.
fn read_records(mut source: Box<dyn Source>, batch_records: u64, send: &SyncSender<Pending>) {
    let mut any_read = false;
    loop {
        let read = read_batch(source.as_mut(), batch_records, &mut any_read);
        let last = !matches!(read, Read::Batch(_));
        if send.send(Pending::Ready(read)).is_err() || last {
            return;
        }
    }
}

/// Reads up to `batch_records` records: a batch, or the end or failure that came first.
fn read_batch(source: &mut dyn Source, batch_records: u64, any_read: &mut bool) -> Read {
    let mut records = Vec::with_capacity(capacity(batch_records));
    while (records.len() as u64) < batch_records {
        match source.next_record() {
            Ok(Some(record)) => records.push(record),
            Ok(None) => break,
            Err(failure) => {
                return Read::Failed {
                    failure,
                    first: !*any_read && records.is_empty(),
                };
            }
        }
    }
    *any_read |= !records.is_empty();
    if records.is_empty() {
        return Read::End;
    }
    Read::Batch(Batch {
        records,
        location: source.location(),
        bytes_read: source.bytes_read(),
    })
}

fn capacity(batch_records: u64) -> usize {
    usize::try_from(batch_records.min(4096)).expect("a small number")
}

/// One batch's lines, read and not yet parsed.
struct Lines {
    /// The lines, back to back.
    bytes: Vec<u8>,
    /// Each line's number and where it ends in `bytes`.
    ends: Vec<(u64, usize)>,
    /// The failure that cut the batch short.
    failure: Option<Failure>,
    /// No line came before this batch's.
    first_batch: bool,
    location: String,
    bytes_read: u64,
}

/// Reads batch after batch of lines, hands each to a parser and its outcome, in order, to the
/// committing thread; until the input ends, reading fails, or no one receives.
fn read_lines(
    mut source: Box<dyn Source>,
    batch_records: u64,
    send: &SyncSender<Pending>,
    work: &Sender<(Lines, SyncSender<Read>)>,
) {
    let mut first_batch = true;
    loop {
        let lines = read_lines_batch(source.as_mut(), batch_records, first_batch);
        first_batch &= lines.ends.is_empty();
        let ended = lines.failure.is_none() && (lines.ends.len() as u64) < batch_records;
        if lines.ends.is_empty() && lines.failure.is_none() {
            let _ = send.send(Pending::Ready(Read::End));
            return;
        }
        let failed = lines.failure.is_some();
        let (done, parsed) = std::sync::mpsc::sync_channel(1);
        if send.send(Pending::Parsing(parsed)).is_err() || work.send((lines, done)).is_err() || failed {
            return;
        }
        if ended {
            let _ = send.send(Pending::Ready(Read::End));
            return;
        }
    }
}

/// Reads up to `batch_records` lines, or fewer up to the end of the input or a failure.
fn read_lines_batch(source: &mut dyn Source, batch_records: u64, first_batch: bool) -> Lines {
    let mut lines = Lines {
        bytes: Vec::new(),
        ends: Vec::with_capacity(capacity(batch_records)),
        failure: None,
        first_batch,
        location: String::new(),
        bytes_read: 0,
    };
    while (lines.ends.len() as u64) < batch_records {
        let start = lines.bytes.len();
        match source.next_line(&mut lines.bytes) {
            Ok(Some(line_no)) => lines.ends.push((line_no, lines.bytes.len())),
            outcome => {
                lines.bytes.truncate(start);
                lines.failure = outcome.err();
                break;
            }
        }
    }
    lines.location = source.location();
    lines.bytes_read = source.bytes_read();
    lines
}

/// A parser thread: parses the batches of lines it takes until the reader hangs up.
fn parse_lines(parser: &LineParser, work: &Mutex<Receiver<(Lines, SyncSender<Read>)>>) {
    loop {
        let taken = work.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
        let Ok((lines, done)) = taken else { return };
        let _ = done.send(parse_batch(parser, lines));
    }
}

/// A batch's lines as records, or the failure on the earliest line, or the failure that cut
/// the batch short.
fn parse_batch(parser: &LineParser, lines: Lines) -> Read {
    let mut records = Vec::with_capacity(lines.ends.len());
    let mut start = 0;
    for (i, &(line_no, end)) in lines.ends.iter().enumerate() {
        match parser.parse(line_no, &lines.bytes[start..end]) {
            Ok(record) => records.push(record),
            Err(failure) => {
                return Read::Failed {
                    failure,
                    first: lines.first_batch && i == 0,
                };
            }
        }
        start = end;
    }
    if let Some(failure) = lines.failure {
        return Read::Failed {
            failure,
            first: lines.first_batch && lines.ends.is_empty(),
        };
    }
    Read::Batch(Batch {
        records,
        location: lines.location,
        bytes_read: lines.bytes_read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of `records` records, failing at record `fail_at` (counting from 0) if given;
    /// with `lines`, read as JSONL lines (record `i` is `{"id": "i", "vector": [i]}`, and
    /// `bad_line` is not JSON).
    struct Counted {
        records: u64,
        fail_at: Option<u64>,
        read: u64,
        lines: bool,
        bad_line: Option<u64>,
    }

    fn counted(records: u64, fail_at: Option<u64>) -> Counted {
        Counted {
            records,
            fail_at,
            read: 0,
            lines: false,
            bad_line: None,
        }
    }

    impl Source for Counted {
        fn next_record(&mut self) -> Result<Option<InputRecord>, Failure> {
            let mut line = Vec::new();
            let Some(line_no) = self.next_line(&mut line)? else {
                return Ok(None);
            };
            LineParser::for_file("t.jsonl".into()).parse(line_no, &line).map(Some)
        }
        fn bytes_read(&self) -> u64 {
            self.read * 10
        }
        fn location(&self) -> String {
            format!("line {}", self.read)
        }
        fn line_parser(&self) -> Option<LineParser> {
            self.lines.then(|| LineParser::for_file("t.jsonl".into()))
        }
        fn next_line(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, Failure> {
            if self.fail_at == Some(self.read) {
                return Err(Failure::new(4, format!("bad record {}", self.read)));
            }
            if self.read == self.records {
                return Ok(None);
            }
            let i = self.read;
            self.read += 1;
            if self.bad_line == Some(i) {
                buf.extend_from_slice(b"{not json");
            } else {
                buf.extend_from_slice(format!(r#"{{"id": "{i}", "vector": [{i}]}}"#).as_bytes());
            }
            Ok(Some(self.read))
        }
    }

    /// Every read up to the end or a failure, with `parsers` parser threads for lines.
    fn all(source: Counted, batch: u64, parsers: usize) -> Vec<Read> {
        let batches = spawn(Box::new(source), batch, parsers).unwrap();
        let mut reads = Vec::new();
        loop {
            let read = batches.next();
            let last = !matches!(read, Read::Batch(_));
            reads.push(read);
            if last {
                return reads;
            }
        }
    }

    fn sizes(reads: &[Read]) -> Vec<usize> {
        reads
            .iter()
            .filter_map(|r| match r {
                Read::Batch(b) => Some(b.records.len()),
                _ => None,
            })
            .collect()
    }

    /// The same source read as records and as lines by one, two and four parsers.
    fn both_ways(make: impl Fn() -> Counted, batch: u64) -> Vec<Vec<Read>> {
        let mut ways = vec![all(make(), batch, 0)];
        for parsers in [1, 2, 4] {
            ways.push(all(Counted { lines: true, ..make() }, batch, parsers));
        }
        ways
    }

    #[test]
    fn batches_arrive_whole_and_in_order_then_the_end() {
        for reads in both_ways(|| counted(7, None), 3) {
            assert_eq!(sizes(&reads), [3, 3, 1], "two whole batches and the rest");
            let Read::Batch(second) = &reads[1] else {
                panic!("a batch")
            };
            assert_eq!(second.records[0].id, "3", "in input order");
            assert_eq!(second.location, "line 6", "where the batch's last record came from");
            assert_eq!(second.bytes_read, 60, "the input consumed through it");
            assert!(matches!(reads.last(), Some(Read::End)), "the end comes last");
            assert_eq!(reads.len(), 4, "nothing after the end");
        }
    }

    #[test]
    fn many_batches_parsed_by_many_threads_arrive_in_input_order() {
        let reads = all(
            Counted {
                lines: true,
                ..counted(10_000, None)
            },
            7,
            4,
        );
        let ids: Vec<String> = reads
            .iter()
            .filter_map(|r| match r {
                Read::Batch(b) => Some(b.records.iter().map(|r| r.id.clone())),
                _ => None,
            })
            .flatten()
            .collect();
        let expected: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
        assert!(ids == expected, "every record once, in input order");
    }

    #[test]
    fn a_batch_cut_short_by_a_failure_is_not_handed_over() {
        for reads in both_ways(|| counted(10, Some(4)), 3) {
            assert_eq!(reads.len(), 2, "the whole first batch, then the failure");
            assert!(
                matches!(&reads[0], Read::Batch(b) if b.records.len() == 3),
                "the whole first batch"
            );
            assert!(
                matches!(&reads[1], Read::Failed { failure, first: false } if failure.message == "bad record 4"),
                "the failure, not on the first record; record 3 (read) is dropped with its batch"
            );
        }
    }

    #[test]
    fn of_two_failures_in_a_batch_the_earlier_line_is_reported() {
        let make = || Counted {
            bad_line: Some(4),
            ..counted(10, Some(5))
        };
        for reads in both_ways(make, 3) {
            assert!(
                matches!(&reads[1], Read::Failed { failure, first: false } if failure.message.contains("line 5")),
                "the bad line (the fifth) before the read failure after it"
            );
        }
    }

    #[test]
    fn a_failure_on_the_first_record_says_so() {
        for reads in both_ways(|| counted(10, Some(0)), 3) {
            assert!(
                matches!(reads.as_slice(), [Read::Failed { first: true, .. }]),
                "a failure before any record"
            );
        }
        for reads in both_ways(
            || Counted {
                bad_line: Some(0),
                ..counted(10, None)
            },
            3,
        ) {
            assert!(
                matches!(reads.as_slice(), [Read::Failed { first: true, .. }]),
                "a bad first line"
            );
        }
        for reads in both_ways(|| counted(10, Some(3)), 3) {
            assert!(
                matches!(&reads[1], Read::Failed { first: false, .. }),
                "a failure at a batch's start after other batches is not the first record"
            );
        }
    }

    #[test]
    fn an_empty_input_is_the_end_at_once() {
        for reads in both_ways(|| counted(0, None), 5) {
            assert!(matches!(reads.as_slice(), [Read::End]), "no batch");
        }
    }

    #[test]
    fn a_committer_that_goes_away_stops_the_reader() {
        for lines in [false, true] {
            let source = Counted {
                lines,
                ..counted(u64::MAX, None)
            };
            let batches = spawn(Box::new(source), 2, 2).unwrap();
            assert!(matches!(batches.next(), Read::Batch(_)), "a batch");
            drop(batches);
            // The reader's next hand-over fails and it returns, and the parsers after it;
            // nothing to wait for here but that this does not hang or panic (they are detached).
        }
    }
}
