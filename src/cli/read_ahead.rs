//! The input of `vellum import`, read in batches on a thread of its own while the store commits
//! the batch before.
//!
//! Parsing costs as much as storing: a JSONL file of 256-dimension vectors parses at ~250 MB/s
//! of text (its floats are most of that), about the time the bulk path takes to store the same
//! records. Read on the committing thread, the two add up; here they overlap. The reader stays
//! at most [`AHEAD_BATCHES`] batches ahead (their records are held in memory), and sends, in
//! input order, every whole batch, then the end of the input or the first failure to read it.
//! A batch cut short by a failure is not sent: as when reading and committing took turns, the
//! records read before the failure in that batch are not committed.
//!
//! The committing side may stop early (a bad record, a failed commit, a signal): it drops its
//! end of the channel, and the reader stops at its next send. It is never joined, so a reader
//! blocked on a read that does not return (a FIFO with no writer) cannot hold the process: it
//! ends with it.

use std::sync::mpsc::{Receiver, SyncSender};

use super::common::Failure;
use super::input::{InputRecord, Source};

/// How many batches the reader may hold ready beside the one it reads and the one committing.
const AHEAD_BATCHES: usize = 1;

/// Records read, for one transaction.
pub struct Batch {
    pub records: Vec<InputRecord>,
    /// Where its last record came from ("line 7", "row 12").
    pub location: String,
    /// Bytes of the input consumed through its last record.
    pub bytes_read: u64,
}

/// What the reader sends, in input order.
pub enum Read {
    Batch(Batch),
    /// The input ended after the batches sent.
    End,
    /// Reading failed after the batches sent; `first` if it failed on the input's first record.
    Failed {
        failure: Failure,
        first: bool,
    },
}

/// Starts reading `source` in batches of `batch_records`; the batches arrive on the receiver.
pub fn spawn(source: Box<dyn Source>, batch_records: u64) -> Result<Receiver<Read>, Failure> {
    assert!(batch_records > 0, "a batch holds a record");
    let (send, receive) = std::sync::mpsc::sync_channel(AHEAD_BATCHES);
    std::thread::Builder::new()
        .name("vellum-import-reader".into())
        .spawn(move || read_all(source, batch_records, &send))
        .map_err(|e| Failure::io("starting the thread that reads the input", e))?;
    Ok(receive)
}

/// Sends batch after batch until the input ends, reading fails, or no one receives.
fn read_all(mut source: Box<dyn Source>, batch_records: u64, send: &SyncSender<Read>) {
    let mut any_read = false;
    loop {
        let read = read_batch(source.as_mut(), batch_records, &mut any_read);
        let last = !matches!(read, Read::Batch(_));
        if send.send(read).is_err() || last {
            return;
        }
    }
}

/// Reads up to `batch_records` records: a batch, or the end or failure that came first.
fn read_batch(source: &mut dyn Source, batch_records: u64, any_read: &mut bool) -> Read {
    let capacity = usize::try_from(batch_records.min(4096)).expect("a small number");
    let mut records = Vec::with_capacity(capacity);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of `records` records, failing at record `fail_at` (counting from 0) if given.
    struct Counted {
        records: u64,
        fail_at: Option<u64>,
        read: u64,
    }

    impl Source for Counted {
        fn next_record(&mut self) -> Result<Option<InputRecord>, Failure> {
            if self.fail_at == Some(self.read) {
                return Err(Failure::new(4, format!("bad record {}", self.read)));
            }
            if self.read == self.records {
                return Ok(None);
            }
            self.read += 1;
            Ok(Some(InputRecord {
                id: format!("{}", self.read - 1),
                vector: vec![0.0],
                metadata: Vec::new(),
                location: format!("line {}", self.read),
            }))
        }
        fn bytes_read(&self) -> u64 {
            self.read * 10
        }
        fn location(&self) -> String {
            format!("line {}", self.read)
        }
    }

    fn all(records: u64, fail_at: Option<u64>, batch: u64) -> Vec<Read> {
        let receiver = spawn(
            Box::new(Counted {
                records,
                fail_at,
                read: 0,
            }),
            batch,
        )
        .unwrap();
        receiver.iter().collect()
    }

    #[test]
    fn batches_arrive_whole_and_in_order_then_the_end() {
        let reads = all(7, None, 3);
        let sizes: Vec<usize> = reads
            .iter()
            .filter_map(|r| match r {
                Read::Batch(b) => Some(b.records.len()),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, [3, 3, 1], "two whole batches and the rest");
        let Read::Batch(second) = &reads[1] else {
            panic!("a batch")
        };
        assert_eq!(second.records[0].id, "3", "in input order");
        assert_eq!(second.location, "line 6", "where the batch's last record came from");
        assert_eq!(second.bytes_read, 60, "the input consumed through it");
        assert!(matches!(reads.last(), Some(Read::End)), "the end comes last");
        assert_eq!(reads.len(), 4, "nothing after the end");
    }

    #[test]
    fn a_batch_cut_short_by_a_failure_is_not_sent() {
        let reads = all(10, Some(4), 3);
        assert_eq!(reads.len(), 2, "the whole first batch, then the failure");
        assert!(
            matches!(&reads[0], Read::Batch(b) if b.records.len() == 3),
            "the whole first batch"
        );
        assert!(
            matches!(&reads[1], Read::Failed { failure, first: false } if failure.message == "bad record 4"),
            "the failure, not on the first record; records 3 (read) is dropped with its batch"
        );
    }

    #[test]
    fn a_failure_on_the_first_record_says_so() {
        let reads = all(10, Some(0), 3);
        assert!(
            matches!(reads.as_slice(), [Read::Failed { first: true, .. }]),
            "a failure before any record"
        );
        let reads = all(10, Some(3), 3);
        assert!(
            matches!(&reads[1], Read::Failed { first: false, .. }),
            "a failure at a batch's start after other batches is not the first record"
        );
    }

    #[test]
    fn an_empty_input_is_the_end_at_once() {
        assert!(matches!(all(0, None, 5).as_slice(), [Read::End]), "no batch");
    }

    #[test]
    fn a_receiver_that_goes_away_stops_the_reader() {
        let receiver = spawn(
            Box::new(Counted {
                records: u64::MAX,
                fail_at: None,
                read: 0,
            }),
            2,
        )
        .unwrap();
        assert!(matches!(receiver.recv(), Ok(Read::Batch(_))), "a batch");
        drop(receiver);
        // The reader's next send fails and it returns; nothing to wait for here but that this
        // does not hang or panic (the thread is detached).
    }
}
