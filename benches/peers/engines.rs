//! The stores measured, each behind [`Engine`]: Vellum and the embedded stores a user would pick
//! instead of it (okaywal, redb, heed/LMDB), every one durable per commit as its defaults say.
//!
//! Records are addressed by `(stream, seq)`: `stream` is the writer (0 for one writer, 1..=4 for
//! the four of w2), `seq` counts from 0 within it. Keyed stores use the address as their key;
//! okaywal, a log, has no keys (its records carry the address in their first 12 bytes).

use std::fmt::Write as _;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Res;
use crate::counting::{CountingStorage, SyncCounts};

/// One store under test.
pub trait Engine: Sized + Send + Sync {
    /// The name on the command line and in the table.
    const NAME: &'static str;
    /// Whether [`Engine::get`] reads a record by its address (point reads run only then).
    const HAS_GET: bool;

    /// The durability settings used, in words (the table's notes).
    fn durability() -> String;

    /// Opens the store in `dir`, creating it if new, recovering whatever is there.
    fn open(dir: &Path) -> Res<Self>;
    /// Opens the store with its log flushes counted, where the adapter can count them.
    fn open_counting(dir: &Path) -> Res<Option<(Self, Arc<SyncCounts>)>> {
        let _ = dir;
        Ok(None)
    }
    /// Opens the store with its commits made durable by nothing (no log flush, no sync), where
    /// the store has such a mode: w2 on it is the engine's own work a commit, without the device.
    fn open_unsynced(dir: &Path) -> Res<Option<Self>> {
        let _ = dir;
        Ok(None)
    }
    /// Commits acknowledged and log fdatasyncs so far, where the store counts them itself.
    fn commit_stats(&self) -> Option<(u64, u64)> {
        None
    }
    /// The bytes of log the last open recovered from (its redo's start to the log's end), where
    /// the store keeps a log it replays at an open after a crash.
    fn recovered_log_bytes(&self) -> Option<u64> {
        None
    }
    /// Commits one record; durable when this returns.
    fn commit_one(&self, stream: u32, seq: u64, record: &[u8]) -> Res<()>;
    /// Commits `records` (seqs `first_seq..`) as one atomic transaction; durable when this returns.
    fn commit_batch(&self, stream: u32, first_seq: u64, records: &[&[u8]]) -> Res<()>;
    /// The number of records the store holds.
    fn count(&self) -> Res<u64>;
    /// Closes the store cleanly.
    fn close(self) -> Res<()>;

    /// Reads record `(stream, seq)` into `out`; `Ok(false)` if absent.
    fn get(&self, stream: u32, seq: u64, out: &mut Vec<u8>) -> Res<bool> {
        let _ = (stream, seq, out);
        Err(format!("{} has no keyed point reads", Self::NAME).into())
    }
    /// Reads many records under one read transaction where the store has them, handing each to
    /// `each`; a missing record is an error.
    fn get_many(&self, stream: u32, seqs: &[u64], each: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()> {
        let mut out = Vec::new();
        for &seq in seqs {
            if !self.get(stream, seq, &mut out)? {
                return Err(format!("{}: record {stream}:{seq} missing", Self::NAME).into());
            }
            each(seq, &out)?;
        }
        Ok(())
    }
}

/// The version of `krate` in the project's Cargo.lock (what the bench was built with).
pub fn locked_version(krate: &str) -> String {
    let lock = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"));
    let mut name = None;
    for line in lock.lines().map(str::trim) {
        if line == "[[package]]" {
            name = None;
        } else if let Some(value) = line.strip_prefix("name = ") {
            name = Some(value.trim_matches('"'));
        } else if let (Some(value), Some(n)) = (line.strip_prefix("version = "), name) {
            if n == krate {
                return value.trim_matches('"').to_string();
            }
            name = None;
        }
    }
    "unknown".into()
}

// ---------------------------------------------------------------------------------------------
// Vellum

/// Vellum with default `Options` (`ARCHIVE`), or with its archive off: a 1 KiB record is a
/// 256-dim float32 vector (the record's bytes, little-endian words, all finite: the generator
/// clears bit 30 of every word) under the id `"stream:seq"`.
pub struct VellumWith<const ARCHIVE: bool, const STORED: bool = false> {
    store: vellum::Store,
}

/// Vellum as it comes: default `Options`.
pub type Vellum = VellumWith<true>;
/// Vellum with `Options::archive` off: no point-in-time restore beyond the live log, as none of
/// the peers has; what the archive costs, and Vellum beside the peers on equal terms.
pub type VellumNoArchive = VellumWith<false>;
/// Vellum with its archive off and `Options::stored_writes` on: a bulk load's vectors reach the
/// disk once, in pages its calls write themselves (what they change, in the same run).
pub type VellumStored = VellumWith<false, true>;

pub const VELLUM_DIMENSION: usize = 256;

fn vellum_id(stream: u32, seq: u64, id: &mut String) {
    id.clear();
    let _ = write!(id, "{stream}:{seq}");
}

fn to_vector(record: &[u8], vector: &mut Vec<f32>) {
    vector.clear();
    vector.extend(
        record
            .chunks_exact(4)
            .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]])),
    );
}

/// A stored vector as the record's bytes: its float32 words in little-endian order. On a
/// little-endian machine those are the vector's own bytes (borrowed, as heed and redb hand out
/// their values); elsewhere they are converted into `buf`.
fn record_bytes<'v>(vector: &'v [f32], buf: &'v mut Vec<u8>) -> &'v [u8] {
    if cfg!(target_endian = "little") {
        zerocopy::IntoBytes::as_bytes(vector)
    } else {
        buf.clear();
        buf.extend(vector.iter().flat_map(|x| x.to_le_bytes()));
        buf
    }
}

impl<const ARCHIVE: bool, const STORED: bool> VellumWith<ARCHIVE, STORED> {
    fn options() -> vellum::Options {
        vellum::Options {
            archive: ARCHIVE,
            stored_writes: STORED,
            ..vellum::Options::default()
        }
    }

    fn open_with(dir: &Path, options: vellum::Options) -> Res<Self> {
        std::fs::create_dir_all(dir)?;
        let store_dir = dir.join("store");
        let store = if store_dir.exists() {
            vellum::Store::open(&store_dir, options)?
        } else {
            vellum::Store::create(&store_dir, VELLUM_DIMENSION as u32, options)?
        };
        Ok(VellumWith { store })
    }
}

/// The bytes Vellum's log takes for one w2 commit (the insert's update record and its commit
/// record, log page headers included), measured on a store in `dir` that is removed after: the
/// record length of the raw group-commit baseline that logs what Vellum logs.
pub fn vellum_log_bytes_per_commit(dir: &Path) -> Res<usize> {
    const COMMITS: u64 = 400;
    let scratch = dir.join("log-bytes");
    let vellum = Vellum::open(&scratch)?;
    let record = vec![0u8; VELLUM_DIMENSION * 4];
    let before = vellum.store.log_info();
    for seq in 0..COMMITS {
        // w2's ids: four writers, sequence numbers in the thousands.
        vellum.commit_one(1 + (seq % 4) as u32, 1000 + seq, &record)?;
    }
    let after = vellum.store.log_info();
    vellum.close()?;
    std::fs::remove_dir_all(&scratch)?;
    let bytes = after.end_lsn.get() - before.end_lsn.get();
    Ok((bytes / (after.commits - before.commits)) as usize)
}

impl<const ARCHIVE: bool, const STORED: bool> Engine for VellumWith<ARCHIVE, STORED> {
    const NAME: &'static str = match (ARCHIVE, STORED) {
        (true, _) => "vellum",
        (false, false) => "vellum-noarchive",
        (false, true) => "vellum-stored",
    };
    const HAS_GET: bool = true;

    fn durability() -> String {
        if STORED {
            return "as **vellum-noarchive**, with `Options::stored_writes` on: a bulk load (w3) logs the vectors \
                    of the fresh pages it fills as stored writes and writes those pages itself, synced, before \
                    its commit (FORMAT.md 16.5): each byte reaches the disk once, not twice (log, then checkpoint)."
                .into();
        }
        if !ARCHIVE {
            return "as **vellum**, with `Options::archive` off: retired log segments are recycled at once, so \
                    point-in-time restore reaches back only to the live log (none of the peers keeps an archive)."
                .into();
        }
        "default `Options` (`SyncMode::Always`: a commit returns after its log bytes are fdatasynced, and \
         concurrent committers share one fdatasync; 16 KiB pages, 16 MiB segments and arena files, a background checkpoint \
         every 256 MiB of log, archive on). `Store::insert` per record (w1, w2; concurrent inserts are run by one of \
         their threads, each its own transaction, and made durable by one flush: src/store/combine.rs), one `Store::insert_many` of \
         1,000 rows per batch (w3: the bulk path, one durable commit). A record is a 256-dim f32 vector (its 1 KiB as little-endian \
         words) under the id `\"stream:seq\"`, no metadata; every insert also updates the arena, the id index \
         and a catalog page, which a log (okaywal) does not. Vellum has no read transactions (readers see \
         committed data and never wait): the row of one read transaction per 1,000 reads is one `Store::get_many` of 1,000 \
         ids (looked up a window of ids at a time, before their entries are read), the other rows a `Store::get` a read."
            .into()
    }

    fn open(dir: &Path) -> Res<Self> {
        Self::open_with(dir, Self::options())
    }

    fn open_unsynced(dir: &Path) -> Res<Option<Self>> {
        let options = vellum::Options {
            sync: vellum::SyncMode::Never,
            ..Self::options()
        };
        Ok(Some(Self::open_with(dir, options)?))
    }

    fn open_counting(dir: &Path) -> Res<Option<(Self, Arc<SyncCounts>)>> {
        let defaults = Self::options();
        let (storage, counts) = CountingStorage::wrap(defaults.storage.clone());
        let options = vellum::Options {
            storage: Arc::new(storage),
            ..defaults
        };
        Ok(Some((Self::open_with(dir, options)?, counts)))
    }

    fn commit_stats(&self) -> Option<(u64, u64)> {
        let log = self.store.log_info();
        Some((log.commits, log.log_syncs))
    }

    fn commit_one(&self, stream: u32, seq: u64, record: &[u8]) -> Res<()> {
        let (mut id, mut vector) = (String::new(), Vec::with_capacity(VELLUM_DIMENSION));
        vellum_id(stream, seq, &mut id);
        to_vector(record, &mut vector);
        self.store.insert(&id, &vector, &[])?;
        Ok(())
    }

    fn commit_batch(&self, stream: u32, first_seq: u64, records: &[&[u8]]) -> Res<()> {
        // The bulk path (`insert_many`: many rows to a log record), as `vellum import` uses it.
        let mut ids = vec![String::new(); records.len()];
        let mut vectors = Vec::with_capacity(records.len() * VELLUM_DIMENSION);
        let mut vector = Vec::with_capacity(VELLUM_DIMENSION);
        for ((seq, record), id) in (first_seq..).zip(records).zip(&mut ids) {
            vellum_id(stream, seq, id);
            to_vector(record, &mut vector);
            vectors.extend_from_slice(&vector);
        }
        let rows: Vec<vellum::Row<'_>> = ids
            .iter()
            .zip(vectors.chunks_exact(VELLUM_DIMENSION))
            .map(|(id, vector)| (id.as_str(), vector, &[][..]))
            .collect();
        self.store.insert_many(&rows)?;
        Ok(())
    }

    fn count(&self) -> Res<u64> {
        Ok(self.store.len() as u64)
    }

    fn recovered_log_bytes(&self) -> Option<u64> {
        let report = self.store.recovery_report();
        Some(report.end_lsn.get().saturating_sub(report.analysis_start.get()))
    }

    fn close(self) -> Res<()> {
        Ok(self.store.close()?)
    }

    fn get(&self, stream: u32, seq: u64, out: &mut Vec<u8>) -> Res<bool> {
        let mut id = String::new();
        vellum_id(stream, seq, &mut id);
        let Some(vector) = self.store.get(&id)? else {
            return Ok(false);
        };
        let mut buf = Vec::new();
        let bytes = record_bytes(&vector, &mut buf);
        out.clear();
        out.extend_from_slice(bytes);
        Ok(true)
    }

    fn get_many(&self, stream: u32, seqs: &[u64], each: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()> {
        // Vellum has no read transactions: a batch is one `Store::get_many` (its lookups made a
        // window of ids at a time, before their entries are read), each record's bytes
        // borrowed from the store's pages as heed's are from its map.
        let mut ids = vec![String::new(); seqs.len()];
        for (&seq, id) in seqs.iter().zip(&mut ids) {
            vellum_id(stream, seq, id);
        }
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (mut buf, mut outcome) = (Vec::new(), Ok(()));
        self.store.get_many(&refs, |i, vector| {
            if outcome.is_err() {
                return;
            }
            outcome = match vector {
                Some(vector) => each(seqs[i], record_bytes(&vector, &mut buf)),
                None => Err(format!("vellum: {stream}:{} missing", seqs[i]).into()),
            };
        })?;
        outcome
    }
}

// ---------------------------------------------------------------------------------------------
// okaywal

/// okaywal, a write-ahead log with group commit. Its recovery hands every entry to a
/// `LogManager`; this one reads and checks every chunk, as an application replaying it would.
pub struct OkayWal {
    wal: okaywal::WriteAheadLog,
    recovered: Arc<AtomicU64>,
    appended: AtomicU64,
}

/// okaywal preallocates each segment by writing zeroes.
const OKAYWAL_PREALLOCATE_BYTES: u32 = 64 << 20;
/// More than a run writes: no segment is checkpointed (handed back and recycled) during a run,
/// so recovery replays all of the log.
const OKAYWAL_CHECKPOINT_AFTER_BYTES: u64 = 4 << 30;

#[derive(Debug)]
struct Replay {
    records: Arc<AtomicU64>,
    buf: Vec<u8>,
}

impl okaywal::LogManager for Replay {
    fn recover(&mut self, entry: &mut okaywal::Entry<'_>) -> io::Result<()> {
        let mut chunks = 0u64;
        loop {
            match entry.read_chunk()? {
                okaywal::ReadChunkResult::Chunk(mut chunk) => {
                    self.buf.clear();
                    chunk.read_to_end(&mut self.buf)?;
                    if !chunk.check_crc()? {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "okaywal chunk crc mismatch"));
                    }
                    chunks += 1;
                }
                okaywal::ReadChunkResult::EndOfEntry => break,
                // A torn entry at the tail was never committed: not counted.
                okaywal::ReadChunkResult::AbortedEntry => return Ok(()),
            }
        }
        self.records.fetch_add(chunks, Ordering::Relaxed);
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: okaywal::EntryId,
        _checkpointed_entries: &mut okaywal::SegmentReader,
        _wal: &okaywal::WriteAheadLog,
    ) -> io::Result<()> {
        // Never called: the checkpoint threshold is above what a run writes (and the bench has no
        // store behind the log to checkpoint into).
        Ok(())
    }
}

impl Engine for OkayWal {
    const NAME: &'static str = "okaywal";
    const HAS_GET: bool = false;

    fn durability() -> String {
        "`EntryWriter::commit` per record (w1, w2) or per batch (a batch is one entry of 1,000 chunks, w3): \
         okaywal writes its buffer and fdatasyncs the segment before commit returns (new segments also sync \
         the directory); concurrent committers share a sync (group commit). preallocate_bytes 64 MiB \
         (segments filled with zeros), checkpoint_after_bytes 4 GiB (no checkpoint during a run: the numbers \
         are the log alone, with no store behind it), buffer 16 KiB (default). Recovery reads every chunk \
         and checks its CRC. No keyed reads (it reads by log position, which the application keeps): no \
         point reads. Its size on disk includes the zero-filled preallocation of the active segment, and its \
         first commit after open flushes those zeros."
            .into()
    }

    fn open(dir: &Path) -> Res<Self> {
        let recovered = Arc::new(AtomicU64::new(0));
        let replay = Replay {
            records: recovered.clone(),
            buf: Vec::with_capacity(4096),
        };
        let wal = okaywal::Configuration::default_for(dir)
            .preallocate_bytes(OKAYWAL_PREALLOCATE_BYTES)
            .checkpoint_after_bytes(OKAYWAL_CHECKPOINT_AFTER_BYTES)
            .open(replay)?;
        Ok(OkayWal {
            wal,
            recovered,
            appended: AtomicU64::new(0),
        })
    }

    fn commit_one(&self, _stream: u32, _seq: u64, record: &[u8]) -> Res<()> {
        let mut entry = self.wal.begin_entry()?;
        entry.write_chunk(record)?;
        entry.commit()?;
        self.appended.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn commit_batch(&self, _stream: u32, _first_seq: u64, records: &[&[u8]]) -> Res<()> {
        let mut entry = self.wal.begin_entry()?;
        for record in records {
            entry.write_chunk(record)?;
        }
        entry.commit()?;
        self.appended.fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn count(&self) -> Res<u64> {
        Ok(self.recovered.load(Ordering::Relaxed) + self.appended.load(Ordering::Relaxed))
    }

    fn close(self) -> Res<()> {
        Ok(self.wal.shutdown()?)
    }
}

// ---------------------------------------------------------------------------------------------
// redb

/// redb: a copy-on-write B-tree in one file. Table `u64 -> &[u8]`, key `stream << 40 | seq`.
pub struct Redb {
    db: redb::Database,
}

const REDB_TABLE: redb::TableDefinition<'static, u64, &'static [u8]> = redb::TableDefinition::new("records");

fn redb_key(stream: u32, seq: u64) -> u64 {
    (u64::from(stream) << 40) | seq
}

impl Engine for Redb {
    const NAME: &'static str = "redb";
    const HAS_GET: bool = true;

    fn durability() -> String {
        "one `WriteTransaction` per record (w1, w2) or per batch (w3), `Durability::Immediate` (the default, \
         set explicitly): commit writes the new pages and the commit slot and fsyncs before it returns. \
         Defaults otherwise: 1-phase commit with checksums, quick_repair off (so the open after a crash walks \
         the whole file to rebuild its allocator state), 1 GiB cache. One writer at a time: concurrent \
         commits are serialised, each with its own sync."
            .into()
    }

    fn open(dir: &Path) -> Res<Self> {
        std::fs::create_dir_all(dir)?;
        let db = redb::Database::builder().create(dir.join("data.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(REDB_TABLE)?;
        tx.commit()?;
        Ok(Redb { db })
    }

    fn commit_one(&self, stream: u32, seq: u64, record: &[u8]) -> Res<()> {
        self.commit_batch(stream, seq, &[record])
    }

    fn commit_batch(&self, stream: u32, first_seq: u64, records: &[&[u8]]) -> Res<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(redb::Durability::Immediate)?;
        {
            let mut table = tx.open_table(REDB_TABLE)?;
            for (seq, record) in (first_seq..).zip(records) {
                table.insert(redb_key(stream, seq), *record)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn count(&self) -> Res<u64> {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        Ok(self.db.begin_read()?.open_table(REDB_TABLE)?.len()?)
    }

    fn close(self) -> Res<()> {
        drop(self.db);
        Ok(())
    }

    fn get(&self, stream: u32, seq: u64, out: &mut Vec<u8>) -> Res<bool> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let table = tx.open_table(REDB_TABLE)?;
        let Some(value) = table.get(redb_key(stream, seq))? else {
            return Ok(false);
        };
        out.clear();
        out.extend_from_slice(value.value());
        Ok(true)
    }

    fn get_many(&self, stream: u32, seqs: &[u64], each: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let table = tx.open_table(REDB_TABLE)?;
        for &seq in seqs {
            let value = table
                .get(redb_key(stream, seq))?
                .ok_or_else(|| format!("redb: {stream}:{seq} missing"))?;
            each(seq, value.value())?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// heed (LMDB)

/// heed, Rust bindings to LMDB: a copy-on-write B+tree on a shared mapping. Keys are 8 bytes
/// big-endian (`stream << 40 | seq`), so key order is insertion order.
pub struct Heed {
    env: heed::Env,
    db: heed::Database<'static, heed::types::Bytes, heed::types::Bytes>,
}

const HEED_MAP_SIZE_BYTES: usize = 8 << 30;

fn heed_key(stream: u32, seq: u64) -> [u8; 8] {
    ((u64::from(stream) << 40) | seq).to_be_bytes()
}

impl Engine for Heed {
    const NAME: &'static str = "heed";
    const HAS_GET: bool = true;

    fn durability() -> String {
        let v = heed::lmdb_version();
        format!(
            "LMDB {}.{}.{} (lmdb-master-sys {}). One write transaction per record (w1, w2) or per batch (w3), \
             `RwTxn::commit` with LMDB's default environment flags (none of MDB_NOSYNC, MDB_NOMETASYNC, \
             MDB_MAPASYNC, MDB_WRITEMAP): commit writes the dirty pages, fdatasyncs the data file, then writes \
             the meta page through an O_DSYNC descriptor. map_size 8 GiB, one named database, plain `put`. One \
             writer at a time (LMDB's writer mutex): concurrent commits are serialised, each with its own syncs. \
             No log to replay: the open after a crash is an ordinary open.",
            v.major,
            v.minor,
            v.patch,
            locked_version("lmdb-master-sys")
        )
    }

    fn open(dir: &Path) -> Res<Self> {
        std::fs::create_dir_all(dir)?;
        // SAFETY: heed's contract for `open`: the environment's files are not modified by anyone
        // but LMDB while it is open. The bench opens each directory once at a time, and the crash
        // child that opens it too runs only while the parent has it closed.
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .map_size(HEED_MAP_SIZE_BYTES)
                .max_dbs(1)
                .open(dir)?
        };
        let tx = env.write_txn()?;
        let db = env
            .create_databases_and_commit(tx, |opener, tx| {
                let db = opener.create_database::<heed::types::Bytes, heed::types::Bytes>(tx, Some("records"))?;
                Ok::<_, heed::Error>(heed::CommitOrAbort::<_, ()>::Commit(db))
            })?
            .unwrap_commit();
        Ok(Heed { env, db })
    }

    fn commit_one(&self, stream: u32, seq: u64, record: &[u8]) -> Res<()> {
        self.commit_batch(stream, seq, &[record])
    }

    fn commit_batch(&self, stream: u32, first_seq: u64, records: &[&[u8]]) -> Res<()> {
        let mut tx = self.env.write_txn()?;
        for (seq, record) in (first_seq..).zip(records) {
            self.db.put(&mut tx, &heed_key(stream, seq), record)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn count(&self) -> Res<u64> {
        let tx = self.env.read_txn()?;
        Ok(self.db.len(&tx)?)
    }

    fn close(self) -> Res<()> {
        let Heed { env, .. } = self;
        env.prepare_for_closing().wait();
        Ok(())
    }

    fn get(&self, stream: u32, seq: u64, out: &mut Vec<u8>) -> Res<bool> {
        let tx = self.env.read_txn()?;
        let Some(value) = self.db.get(&tx, &heed_key(stream, seq))? else {
            return Ok(false);
        };
        out.clear();
        out.extend_from_slice(value);
        Ok(true)
    }

    fn get_many(&self, stream: u32, seqs: &[u64], each: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()> {
        let tx = self.env.read_txn()?;
        for &seq in seqs {
            let value = self
                .db
                .get(&tx, &heed_key(stream, seq))?
                .ok_or_else(|| format!("heed: {stream}:{seq} missing"))?;
            each(seq, value)?;
        }
        Ok(())
    }
}
