//! The input of `vellum import`, read in batches on threads of their own while the store commits
//! the batch before.
//!
//! Parsing costs as much as storing: a JSONL file of 256-dimension vectors parses at ~250 MB/s
//! of text on one core (its floats are most of that), about the time the bulk path takes to
//! store the same records. Read on the committing thread, the two add up; here they overlap,
//! and a JSONL file's lines are parsed by [`parse_threads`] threads: a thread reads each
//! batch's lines and splits them into consecutive chunks, one a parser, so that a machine with
//! cores to spare parses a batch as fast as the store takes one, whatever the batch's size.
//! Every batch, the end of the input and the first failure to read or parse it reach the
//! committing thread in input order ([`Batches::next`]). A batch cut short by a failure is not
//! handed over: as when reading and committing took turns, the records read before the failure
//! in that batch are not committed, and of two failures in a batch the one on the earlier line
//! is reported. At most [`AHEAD_BATCHES`] batches wait, read and parsed (or being parsed),
//! beside the one committing and the one being read.
//!
//! The committing side may stop early (a bad record, a failed commit, a signal): it drops its
//! end, and the reader stops at its next hand-over, the parsers when the reader has. They are
//! never joined, so a reader blocked on a read that does not return (a FIFO with no writer)
//! cannot hold the process: it ends with it.

use std::ops::Range;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use super::common::Failure;
use super::input::{InputRecord, LineParser, Source};

/// How many batches may wait, read (and parsed), beside the one committing.
const AHEAD_BATCHES: usize = 1;
/// The fewest lines worth a parser of their own.
const CHUNK_LINES_MIN: usize = 16;
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

/// A read as the reader hands it over: done, or a batch of lines being parsed in chunks.
enum Pending {
    Ready(Read),
    Parsing(Parsing),
}

/// A batch of lines handed to the parsers, chunk by chunk.
struct Parsing {
    /// Each chunk's outcome, in line order.
    chunks: Vec<Receiver<Parsed>>,
    /// The failure that cut the batch short.
    failure: Option<Failure>,
    /// No line came before this batch's.
    first_batch: bool,
    location: String,
    bytes_read: u64,
}

/// A chunk's records, or the failure on its earliest bad line and that line's index in the batch.
type Parsed = Result<Vec<InputRecord>, (usize, Failure)>;

/// The committing thread's end: the reads in input order.
pub struct Batches {
    pending: Receiver<Pending>,
}

impl Batches {
    /// The next batch, or the end of the input, or the failure that came before either.
    pub fn next(&self) -> Read {
        match self.pending.recv() {
            Ok(Pending::Ready(read)) => read,
            Ok(Pending::Parsing(parsing)) => parsing.join(),
            Err(_) => lost(),
        }
    }
}

/// What the committing thread gets when a thread of the reading side died (a panic).
fn lost() -> Read {
    Read::Failed {
        failure: Failure::store("a thread reading the input stopped (a panic)"),
        first: false,
    }
}

impl Parsing {
    /// The batch, or its earliest failure: a bad line, else the failure that cut it short.
    fn join(self) -> Read {
        let mut records = Vec::new();
        for chunk in self.chunks {
            match chunk.recv() {
                Ok(Ok(parsed)) => records.extend(parsed),
                Ok(Err((index, failure))) => {
                    return Read::Failed {
                        failure,
                        first: self.first_batch && index == 0,
                    };
                }
                Err(_) => return lost(),
            }
        }
        if let Some(failure) = self.failure {
            return Read::Failed {
                failure,
                first: self.first_batch && records.is_empty(),
            };
        }
        Read::Batch(Batch {
            records,
            location: self.location,
            bytes_read: self.bytes_read,
        })
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
    let started = |e| {
        let e = vellum::storage::with_address_space_limit(e, "each thread takes room for its stack");
        Failure::io("starting a thread that reads the input", e)
    };
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
            let parsers = parsers.max(1);
            reader.spawn(move || read_lines(source, batch_records, parsers, &send, &work_send))
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
}

/// A parser's share of a batch: lines `range` of `lines`.
struct Chunk {
    lines: Arc<Lines>,
    range: Range<usize>,
    done: SyncSender<Parsed>,
}

/// Reads batch after batch of lines, hands each batch's chunks to the parsers and the batch, in
/// order, to the committing thread; until the input ends, reading fails, or no one receives.
fn read_lines(
    mut source: Box<dyn Source>,
    batch_records: u64,
    parsers: usize,
    send: &SyncSender<Pending>,
    work: &Sender<Chunk>,
) {
    let mut first_batch = true;
    loop {
        let (lines, failure) = read_lines_batch(source.as_mut(), batch_records);
        let count = lines.ends.len();
        if count == 0 && failure.is_none() {
            let _ = send.send(Pending::Ready(Read::End));
            return;
        }
        let (ended, failed) = (failure.is_none() && (count as u64) < batch_records, failure.is_some());
        let lines = Arc::new(lines);
        let mut parsing = Parsing {
            chunks: Vec::new(),
            failure,
            first_batch,
            location: source.location(),
            bytes_read: source.bytes_read(),
        };
        first_batch &= count == 0;
        let mut chunks = Vec::new();
        for range in chunk_ranges(count, parsers) {
            let (done, parsed) = std::sync::mpsc::sync_channel(1);
            parsing.chunks.push(parsed);
            chunks.push(Chunk {
                lines: lines.clone(),
                range,
                done,
            });
        }
        if send.send(Pending::Parsing(parsing)).is_err()
            || chunks.into_iter().any(|chunk| work.send(chunk).is_err())
            || failed
        {
            return;
        }
        if ended {
            let _ = send.send(Pending::Ready(Read::End));
            return;
        }
    }
}

/// `count` lines cut into at most `parsers` consecutive ranges of nearly equal length, none
/// shorter than [`CHUNK_LINES_MIN`] unless it is the only one.
fn chunk_ranges(count: usize, parsers: usize) -> impl Iterator<Item = Range<usize>> {
    let chunks = parsers.min(count / CHUNK_LINES_MIN).max(1);
    let (size, longer) = (count / chunks, count % chunks);
    (0..chunks).map(move |k| {
        let start = k * size + k.min(longer);
        start..start + size + usize::from(k < longer)
    })
}

/// Reads up to `batch_records` lines, or fewer up to the end of the input or a failure (which
/// it returns beside them).
fn read_lines_batch(source: &mut dyn Source, batch_records: u64) -> (Lines, Option<Failure>) {
    let mut lines = Lines {
        bytes: Vec::new(),
        ends: Vec::with_capacity(capacity(batch_records)),
    };
    while (lines.ends.len() as u64) < batch_records {
        let start = lines.bytes.len();
        match source.next_line(&mut lines.bytes) {
            Ok(Some(line_no)) => lines.ends.push((line_no, lines.bytes.len())),
            outcome => {
                lines.bytes.truncate(start);
                return (lines, outcome.err());
            }
        }
    }
    (lines, None)
}

/// A parser thread: parses the chunks it takes until the reader hangs up.
fn parse_lines(parser: &LineParser, work: &Mutex<Receiver<Chunk>>) {
    loop {
        let taken = work.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
        let Ok(chunk) = taken else { return };
        let _ = chunk.done.send(parse_chunk(parser, &chunk.lines, chunk.range));
    }
}

/// Lines `range` of a batch as records, or the failure on the earliest bad one.
fn parse_chunk(parser: &LineParser, lines: &Lines, range: Range<usize>) -> Parsed {
    let mut records = Vec::with_capacity(range.len());
    let mut start = match range.start {
        0 => 0,
        first => lines.ends[first - 1].1,
    };
    for index in range {
        let (line_no, end) = lines.ends[index];
        let record = parser
            .parse(line_no, &lines.bytes[start..end])
            .map_err(|failure| (index, failure))?;
        records.push(record);
        start = end;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of `records` records, failing at record `fail_at` (counting from 0) if given,
    /// panicking at `panic_at`; with `lines`, read as JSONL lines (record `i` is
    /// `{"id": "i", "vector": [i]}`, and the records `bad_lines` are not JSON).
    struct Counted {
        records: u64,
        fail_at: Option<u64>,
        panic_at: Option<u64>,
        read: u64,
        lines: bool,
        bad_lines: &'static [u64],
    }

    fn counted(records: u64, fail_at: Option<u64>) -> Counted {
        Counted {
            records,
            fail_at,
            panic_at: None,
            read: 0,
            lines: false,
            bad_lines: &[],
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
            assert!(self.panic_at != Some(self.read), "a reader's bug, as a test wants it");
            if self.fail_at == Some(self.read) {
                return Err(Failure::new(4, format!("bad record {}", self.read)));
            }
            if self.read == self.records {
                return Ok(None);
            }
            let i = self.read;
            self.read += 1;
            if self.bad_lines.contains(&i) {
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
        // Batches of 7 lines are one chunk each; of 100, four chunks of 25 (four parsers).
        for batch in [7, 100, 1000] {
            let reads = all(
                Counted {
                    lines: true,
                    ..counted(10_000, None)
                },
                batch,
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
            assert!(
                ids == expected,
                "every record once, in input order (batches of {batch})"
            );
            assert!(matches!(reads.last(), Some(Read::End)), "then the end");
        }
    }

    #[test]
    fn a_batch_split_among_parsers_reports_its_earliest_bad_line() {
        // Batch 2 holds lines 101..=200, four chunks of 25 lines: bad lines in its third chunk
        // (line 160) and its second (line 140), and a read failure after line 190.
        let make = || Counted {
            bad_lines: &[159, 139],
            ..counted(1000, Some(190))
        };
        for reads in both_ways(make, 100) {
            assert!(
                matches!(&reads[0], Read::Batch(b) if b.records.len() == 100),
                "the first batch whole"
            );
            assert!(
                matches!(&reads[1], Read::Failed { failure, first: false } if failure.message.contains("line 140")),
                "the earliest bad line, in the second chunk, before the third's and the read failure: {}",
                match &reads[1] {
                    Read::Failed { failure, .. } => failure.message.clone(),
                    _ => "a batch".into(),
                }
            );
            assert_eq!(reads.len(), 2, "nothing after the failure");
        }
    }

    #[test]
    fn chunks_cover_a_batch_in_order_and_are_never_too_short() {
        for count in [0, 1, 15, 16, 31, 32, 33, 100, 1000, 1001] {
            for parsers in [1, 2, 3, 4, 8] {
                let ranges: Vec<Range<usize>> = chunk_ranges(count, parsers).collect();
                assert_eq!(ranges.first().map(|r| r.start), Some(0), "from the first line");
                assert!(ranges.windows(2).all(|w| w[0].end == w[1].start), "consecutive");
                assert_eq!(ranges.last().map(|r| r.end), Some(count), "to the last");
                assert!(ranges.len() <= parsers, "one chunk a parser at most");
                assert!(
                    ranges.len() == 1 || ranges.iter().all(|r| r.len() >= CHUNK_LINES_MIN),
                    "{count} lines, {parsers} parsers: {ranges:?}"
                );
            }
        }
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
            bad_lines: &[4],
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
                bad_lines: &[0],
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
    fn a_reader_that_panics_is_a_failure_after_the_batches_it_handed_over() {
        for reads in both_ways(
            || Counted {
                panic_at: Some(7),
                ..counted(10, None)
            },
            3,
        ) {
            assert_eq!(sizes(&reads), [3, 3], "the whole batches read before the panic");
            assert!(
                matches!(reads.last(), Some(Read::Failed { failure, first: false })
                    if failure.message.contains("stopped (a panic)")),
                "then a failure the import reports, never a hang"
            );
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
