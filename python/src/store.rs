//! `vellum.Store`.

use std::path::PathBuf;
use std::sync::Arc;

use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyType};
use vellum::{IndexBuildPhase, IndexBuildProgress, IndexOptions, ListOptions, Options, SearchOptions, Store};

use crate::batch::{self, Batch};
use crate::convert;
use crate::errors::{Failure, IntoPy, InvalidArgumentError};
use crate::report;
use crate::shared::Shared;
use crate::txn::PyTransaction;

/// What `search_many` returns: ids (an object array of `str`) and scores, both `(m, k)`.
type SearchArrays<'py> = (Bound<'py, PyArray2<Py<PyAny>>>, Bound<'py, PyArray2<f32>>);

/// What `get` returns: a copy of the vector and its metadata.
type Found<'py> = (Bound<'py, PyArray1<f32>>, Bound<'py, PyDict>);

/// What `get_many` returns: the vectors, a row an id, and which ids were found.
type FoundMany<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray1<bool>>);

/// How many ids `get_many` reads between two checks for a signal (Ctrl-C): a few
/// milliseconds of reads.
const GET_MANY_CHUNK: usize = 4096;

/// An embedded, crash-safe vector store: float32 vectors of one dimension, each under a string
/// id with ``str``-to-``str`` metadata, in a directory of its own.
///
/// Open one with :meth:`Store.create` or :meth:`Store.open`; close it with :meth:`close` or a
/// ``with`` block. A store is safe to share between threads: searches run side by side, writes
/// take turns (one writer at a time), and the GIL is released while the store works. One
/// process (one ``Store`` object) opens a store at a time.
#[pyclass(frozen, name = "Store", module = "vellum")]
pub struct PyStore {
    pub(crate) shared: Arc<Shared>,
    dim: usize,
    path: PathBuf,
}

impl PyStore {
    fn new(store: Store) -> PyStore {
        PyStore {
            dim: store.dimension(),
            path: store.path().to_path_buf(),
            shared: Arc::new(Shared::new(store)),
        }
    }

    pub(crate) fn dim_value(&self) -> usize {
        self.dim
    }

    /// `k` as the library takes it: at least 1, at most the number of vectors (a search never
    /// returns more), so a huge `k` costs nothing.
    fn effective_k(store: &Store, k: i64) -> PyResult<usize> {
        if k < 1 {
            return Err(InvalidArgumentError::new_err(format!("k must be at least 1, not {k}")));
        }
        Ok(usize::try_from(k).unwrap_or(usize::MAX).min(store.len()).max(1))
    }
}

/// `value` as the library's integer type; a negative or oversized one is an
/// `InvalidArgumentError` (the library checks the rest: a dimension of 0, a page size that is
/// not a power of two, ...).
fn in_range<T: TryFrom<i64>>(value: i64, name: &str) -> PyResult<T> {
    T::try_from(value).map_err(|_| InvalidArgumentError::new_err(format!("{name} out of range: {value}")))
}

fn options(sync: &str, sync_interval: f64, archive: bool, stored_writes: bool) -> PyResult<Options> {
    Ok(Options {
        sync: convert::sync_mode(sync, sync_interval)?,
        archive,
        stored_writes,
        ..Options::default()
    })
}

#[pymethods]
impl PyStore {
    /// Creates a store of ``dim``-component vectors in the directory ``path`` (made if missing)
    /// and opens it. Raises :class:`AlreadyExistsError` if a store is there.
    ///
    /// ``sync`` says when a commit is durable: ``"always"`` (when it returns; the default),
    /// ``"interval"`` (a background flush every ``sync_interval`` seconds) or ``"never"`` (at
    /// checkpoints, :meth:`sync` and :meth:`close`). ``page_size`` (a power of two from 4096 to
    /// 1 MiB) and ``segment_size`` (bytes of each log segment and arena file; 16 MiB, the
    /// library's default: a store of one row takes 50 MB on disk, a log segment and the first
    /// file of each of the two arena spaces; 64 MiB loads a large batch some 5-8% faster, at
    /// four times that) are fixed at creation. ``archive`` keeps retired log segments for point-in-time restore (the
    /// default); off, a bulk load (:meth:`upsert_many`) with ``stored_writes`` writes each
    /// vector once, in pages it writes itself before its commit, instead of in the log and
    /// again in its page (fewer bytes on the disk, slower on the reference machine: see the
    /// README). Both apply to this open only.
    #[staticmethod]
    #[pyo3(signature = (path, dim, *, sync="always", sync_interval=0.1, page_size=16384, segment_size=16777216, archive=true, stored_writes=false))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn create(
        py: Python<'_>,
        path: PathBuf,
        dim: i64,
        sync: &str,
        sync_interval: f64,
        page_size: i64,
        segment_size: i64,
        archive: bool,
        stored_writes: bool,
    ) -> PyResult<PyStore> {
        let dim = in_range(dim, "dim")?;
        let options = Options {
            page_size_bytes: in_range(page_size, "page_size")?,
            segment_size_bytes: in_range(segment_size, "segment_size")?,
            ..options(sync, sync_interval, archive, stored_writes)?
        };
        let store = py
            .detach(|| Store::create(&path, dim, options))
            .py_err_existing(|| format!("a store at {}", path.display()))?;
        Ok(PyStore::new(store))
    }

    /// Opens the store in ``path``, recovering it to its last committed state if the process
    /// that had it open crashed. Raises :class:`NotFoundError` if there is none, and
    /// :class:`StoreLockedError` if it is open elsewhere. ``sync``, ``archive`` and
    /// ``stored_writes`` as for :meth:`create`.
    ///
    /// With ``read_only=True`` the store is opened for reading only: any number of processes
    /// may (while none has it open for writing), each write raises :class:`ReadOnlyError`, and
    /// nothing is written to its files (a crash's recovery is done in memory). This is how
    /// worker processes share a store: one opened for writing is not carried across
    /// ``fork()``, where every call raises :class:`ClosedError`.
    #[staticmethod]
    #[pyo3(signature = (path, *, read_only=false, sync="always", sync_interval=0.1, archive=true, stored_writes=false))]
    fn open(
        py: Python<'_>,
        path: PathBuf,
        read_only: bool,
        sync: &str,
        sync_interval: f64,
        archive: bool,
        stored_writes: bool,
    ) -> PyResult<PyStore> {
        let options = options(sync, sync_interval, archive, stored_writes)?;
        let opened = if read_only {
            py.detach(|| Store::open_read_only(&path, options))
        } else {
            py.detach(|| Store::open(&path, options))
        };
        Ok(PyStore::new(opened.py_err()?))
    }

    /// Inserts a vector under ``id`` with optional ``dict[str, str]`` metadata, in a transaction
    /// of its own. Raises :class:`AlreadyExistsError` if ``id`` is present. Returns the commit
    /// LSN.
    #[pyo3(signature = (id, vector, metadata=None))]
    fn insert(
        &self,
        py: Python<'_>,
        id: &str,
        vector: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let vector = convert::vector(vector)?;
        let metadata = convert::metadata(metadata)?;
        py.detach(|| {
            let store = self.shared.write_lease()?;
            Ok::<_, Failure>(store.insert(id, &vector, &convert::pairs(&metadata))?.get())
        })
        .py_err_existing(|| format!("id {id:?}"))
    }

    /// Inserts or replaces the vector under ``id`` (and its metadata), in a transaction of its
    /// own. Returns the commit LSN.
    #[pyo3(signature = (id, vector, metadata=None))]
    fn upsert(
        &self,
        py: Python<'_>,
        id: &str,
        vector: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let vector = convert::vector(vector)?;
        let metadata = convert::metadata(metadata)?;
        py.detach(|| {
            let store = self.shared.write_lease()?;
            Ok::<_, Failure>(store.upsert(id, &vector, &convert::pairs(&metadata))?.get())
        })
        .py_err()
    }

    /// Upserts the rows of ``vectors``, an ``(n, dim)`` array, under ``ids`` (``n`` strings), in
    /// one transaction: all rows or, if one is refused, none. ``metadata`` is ``None`` or ``n``
    /// entries, each a ``dict[str, str]`` or ``None``. A C-contiguous float32 array is read in
    /// place; anything else is converted to one first. Returns the commit LSN. Python's signal
    /// handlers run every 16 MiB of vectors: Ctrl-C stops a long call with
    /// ``KeyboardInterrupt``, and none of its rows is written.
    #[pyo3(signature = (ids, vectors, metadata=None))]
    fn upsert_many(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        vectors: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let matrix = convert::matrix(vectors, self.dim, "vectors")?;
        let ids = convert::ids(ids, matrix.rows())?;
        let metadata = convert::metadata_rows(metadata, matrix.rows())?;
        let batch = Batch {
            ids: &ids,
            vectors: matrix.as_slice(),
            dim: self.dim,
            metadata: &metadata,
        };
        py.detach(|| {
            let store = self.shared.write_lease()?;
            batch::upsert_many(&store, &batch).map(|lsn| lsn.get())
        })
        .py_err()
    }

    /// The vector under ``id`` as a new float32 array of shape ``(dim,)`` and its metadata, or
    /// ``None`` if ``id`` is absent.
    #[allow(clippy::type_complexity)]
    fn get<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Option<Found<'py>>> {
        let store = self.shared.lease().py_err()?;
        let Some(found) = store.get(id).py_err()? else {
            return Ok(None);
        };
        let vector = PyArray1::from_slice(py, &found);
        let metadata = PyDict::new(py);
        for (key, value) in found.metadata() {
            metadata.set_item(key, value)?;
        }
        Ok(Some((vector, metadata)))
    }

    /// The vectors of ``ids`` (a list, tuple or other iterable of ``str``) in one call: a new
    /// float32 array of shape ``(len(ids), dim)`` whose row ``i`` is the vector of ``ids[i]``
    /// (zeros where it is absent), and a bool array of shape ``(len(ids),)`` saying which were
    /// found. No metadata (:meth:`get` has it). Reads as :meth:`get` does, without the GIL,
    /// the lookups of a few ids made before their vectors are read, so their waits for memory
    /// (or for the disk, from a cold cache) overlap: faster than a :meth:`get` per id, and one
    /// array instead of one per id. Ctrl-C stops a long call with ``KeyboardInterrupt``.
    fn get_many<'py>(&self, py: Python<'py>, ids: &Bound<'py, PyAny>) -> PyResult<FoundMany<'py>> {
        let ids = convert::id_list(ids, ids.len().unwrap_or(0))?;
        let store = self.shared.lease().py_err()?;
        let (count, dim) = (ids.len(), self.dim);
        let (vectors, found) = py
            .detach(|| {
                let refs: Vec<&str> = (0..count).map(|i| ids.get(i)).collect();
                let (mut vectors, mut found) = (vec![0f32; count * dim], vec![false; count]);
                let mut checks = batch::SignalChecks::new();
                for (chunk, first) in refs.chunks(GET_MANY_CHUNK).zip((0..).step_by(GET_MANY_CHUNK)) {
                    checks.maybe()?;
                    store.get_many(chunk, |i, vector| {
                        if let Some(vector) = vector {
                            let row = first + i;
                            vectors[row * dim..(row + 1) * dim].copy_from_slice(&vector);
                            found[row] = true;
                        }
                    })?;
                }
                Ok::<_, Failure>((vectors, found))
            })
            .py_err()?;
        let vectors = PyArray1::from_vec(py, vectors).reshape([count, dim])?;
        Ok((vectors, PyArray1::from_vec(py, found)))
    }

    /// The ids in byte order of their UTF-8 (which is code point order), as a list: those that
    /// start with ``prefix``, that sort after ``after`` (exclusive), at most ``limit`` of them.
    /// Committed ids only, as :meth:`get` sees them. To go through a large store in pages, pass
    /// a ``limit`` and, as ``after``, the last id of the page before.
    #[pyo3(signature = (prefix=None, after=None, limit=None))]
    fn ids(
        &self,
        py: Python<'_>,
        prefix: Option<String>,
        after: Option<String>,
        limit: Option<i64>,
    ) -> PyResult<Vec<String>> {
        let options = ListOptions {
            prefix: prefix.unwrap_or_default(),
            after,
            limit: limit.map(|limit| in_range(limit, "limit")).transpose()?,
        };
        let store = self.shared.lease().py_err()?;
        py.detach(|| store.ids(options).collect::<vellum::Result<Vec<_>>>())
            .py_err()
    }

    /// Deletes the vector under ``id`` in a transaction of its own; returns whether it existed.
    fn delete(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        py.detach(|| {
            let store = self.shared.write_lease()?;
            Ok::<_, Failure>(store.delete(id)?)
        })
        .py_err()
    }

    /// Begins a write transaction (waiting, without the GIL, while another one runs). Use it in
    /// a ``with`` block: it commits at the end, or aborts if an exception leaves the block.
    fn transaction(&self, py: Python<'_>) -> PyResult<PyTransaction> {
        PyTransaction::begin(py, &self.shared, self.dim)
    }

    /// The ``k`` vectors nearest ``query``, best first, as ``(id, score)`` pairs: fewer if the
    /// store (or the filter) has fewer. ``metric`` is ``"cosine"`` or ``"dot"`` (similarities,
    /// higher is closer) or ``"l2"`` (Euclidean distance, lower is closer). ``filter`` keeps the
    /// vectors whose metadata holds one pair: ``{"lang": "en"}`` or ``("lang", "en")``. Through
    /// the approximate index when the store has one for ``metric`` (see :meth:`create_index`;
    /// ``ef`` sizes its candidate list, default the index's), unless ``exact`` is true: then, or
    /// without an index, by an exact scan.
    #[pyo3(signature = (query, k=10, metric="cosine", filter=None, *, ef=None, exact=false))]
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        k: i64,
        metric: &str,
        filter: Option<&Bound<'_, PyAny>>,
        ef: Option<i64>,
        exact: bool,
    ) -> PyResult<Vec<(String, f32)>> {
        let query = convert::vector(query)?;
        let metric = convert::metric(metric)?;
        let filter = convert::filter(filter)?;
        let ef = ef.map(|ef| in_range(ef, "ef")).transpose()?;
        let store = self.shared.lease().py_err()?;
        let k = PyStore::effective_k(&store, k)?;
        let options = SearchOptions {
            metric,
            filter: filter.as_ref().map(|(key, value)| (key.as_str(), value.as_str())),
            ef,
            exact,
        };
        py.detach(|| store.search_with(&query, k, &options)).py_err()
    }

    /// Builds the approximate-search (HNSW) index over every vector (on every core, in one
    /// transaction: a crash during it leaves no index); every later write keeps it current, and
    /// :meth:`search` uses it for its ``metric``. ``m``: neighbours per node (more: more space
    /// and recall); ``ef_construction``: the candidate list of each insert. ``progress``, if
    /// given, is called about every tenth of a second, on this thread, as
    /// ``progress(phase, done, total)`` (``phase``: ``"linking"``, ``"calibrating"``,
    /// ``"writing"``; for a progress bar; it may read the store, and a write, a transaction or
    /// a close there raises :class:`InvalidArgumentError`). Raises :class:`AlreadyExistsError`
    /// if the store has one. Ctrl-C (``KeyboardInterrupt``), any signal handler that raises,
    /// or a ``progress`` that raises stops the build within about a tenth of a second with
    /// that exception: nothing of it is kept, and the store stays without an index.
    #[pyo3(signature = (metric="cosine", m=16, ef_construction=128, *, progress=None))]
    fn create_index(
        &self,
        py: Python<'_>,
        metric: &str,
        m: i64,
        ef_construction: i64,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let options = IndexOptions {
            metric: convert::metric(metric)?,
            m: in_range(m, "m")?,
            ef_construction: in_range(ef_construction, "ef_construction")?,
        };
        py.detach(|| {
            let store = self.shared.write_lease()?;
            // The watcher runs on this thread, so Python runs its signal handlers here.
            batch::watched(
                |step| tell(progress.as_ref(), step),
                |watcher| store.create_index_watched(options, watcher),
            )
        })
        .py_err()
    }

    /// Drops the approximate index, giving its pages back. Raises :class:`NotFoundError` if
    /// the store has none.
    fn drop_index(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            let store = self.shared.write_lease()?;
            Ok::<_, Failure>(store.drop_index()?)
        })
        .py_err()
    }

    /// The approximate index's parameters and size as a ``dict`` (``metric``, ``m``,
    /// ``ef_construction``, ``ef_search``, ``live``, ``tombstones``, ``node_pages``,
    /// ``upper_pages``, ``size_bytes``), or ``None`` if the store has none. ``ef_search`` is
    /// 4294967295 where the build found no list reaching recall 0.96: searches that name no
    /// ``ef`` then scan.
    fn index_info<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let info = py
            .detach(|| {
                let store = self.shared.lease()?;
                Ok::<_, Failure>(store.index_info()?)
            })
            .py_err()?;
        let Some(info) = info else { return Ok(None) };
        let dict = PyDict::new(py);
        let metric = match info.metric {
            vellum::Metric::Cosine => "cosine",
            vellum::Metric::L2 => "l2",
            vellum::Metric::Dot => "dot",
        };
        dict.set_item("metric", metric)?;
        dict.set_item("m", info.m)?;
        dict.set_item("ef_construction", info.ef_construction)?;
        dict.set_item("ef_search", info.ef_search)?;
        dict.set_item("live", info.live)?;
        dict.set_item("tombstones", info.deleted)?;
        dict.set_item("node_pages", info.node_pages)?;
        dict.set_item("upper_pages", info.upper_pages)?;
        dict.set_item("size_bytes", info.size_bytes)?;
        Ok(Some(dict))
    }

    /// :meth:`search` for each row of ``queries``, an ``(m, dim)`` array, with the GIL released
    /// once for all. Returns ``(ids, scores)``, two ``(m, k)`` arrays: ``ids`` of ``str``
    /// (dtype ``object``), ``scores`` float32; row ``i`` holds the hits of query ``i``, best
    /// first. A row with fewer than ``k`` hits (a store or filter with fewer vectors) is padded
    /// with ``""`` ids (never a stored id) and NaN scores. Python's signal handlers run every
    /// tenth of a second: Ctrl-C stops a long call with ``KeyboardInterrupt``.
    #[pyo3(signature = (queries, k=10, metric="cosine", filter=None, *, ef=None, exact=false))]
    #[allow(clippy::too_many_arguments)]
    fn search_many<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        k: i64,
        metric: &str,
        filter: Option<&Bound<'_, PyAny>>,
        ef: Option<i64>,
        exact: bool,
    ) -> PyResult<SearchArrays<'py>> {
        let queries = convert::matrix(queries, self.dim, "queries")?;
        let metric = convert::metric(metric)?;
        let filter = convert::filter(filter)?;
        let ef = ef.map(|ef| in_range(ef, "ef")).transpose()?;
        let store = self.shared.lease().py_err()?;
        let k_searched = PyStore::effective_k(&store, k)?;
        let options = SearchOptions {
            metric,
            filter: filter.as_ref().map(|(key, value)| (key.as_str(), value.as_str())),
            ef,
            exact,
        };
        let rows = queries.as_slice();
        let hits = py
            .detach(|| {
                let mut checks = batch::SignalChecks::new();
                rows.chunks_exact(self.dim)
                    .map(|query| {
                        checks.maybe()?;
                        Ok(store.search_with(query, k_searched, &options)?)
                    })
                    .collect::<Result<Vec<_>, Failure>>()
            })
            .py_err()?;
        let width = usize::try_from(k).unwrap_or(usize::MAX);
        padded_results(py, &hits, width)
    }

    /// Runs a checkpoint now (writes every changed page; the log before it can be released).
    /// Returns its LSN.
    fn checkpoint(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| {
            let store = self.shared.checkpoint_lease()?;
            Ok::<_, Failure>(store.checkpoint()?.get())
        })
        .py_err()
    }

    /// Archives every log segment the checkpoints released that the archiver has not copied
    /// yet (a session that ended without a close leaves them to the next), and returns once the
    /// archive holds them.
    fn archive_now(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            let store = self.shared.lease()?;
            Ok::<_, Failure>(store.archive_now()?)
        })
        .py_err()
    }

    /// Makes every commit so far durable, whatever the sync mode.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            let store = self.shared.lease()?;
            Ok::<_, Failure>(store.sync()?)
        })
        .py_err()
    }

    /// Copies the store, consistent as of now, into a new store at ``dest`` (which must not
    /// exist) while writers go on. Returns what the copy did, as :func:`restore` does.
    /// ``progress`` and Ctrl-C as for :func:`restore`: a stopped backup leaves no ``dest``, and
    /// the store as it was.
    #[pyo3(signature = (dest, *, progress=None))]
    fn backup<'py>(&self, py: Python<'py>, dest: PathBuf, progress: Option<Py<PyAny>>) -> PyResult<Bound<'py, PyDict>> {
        let done = py
            .detach(|| {
                let store = self.shared.copy_lease()?;
                report::watched(progress.as_ref(), |watcher| store.backup_watched(&dest, watcher))
            })
            .py_err()?;
        report::to_dict(py, &done)
    }

    /// Closes the store: checkpoints it and makes the log durable. Calls running in other
    /// threads finish first; later calls raise :class:`ClosedError`. Closing a closed store does
    /// nothing. Raises :class:`InvalidArgumentError` while a transaction is open.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.shared.close()).py_err()
    }

    /// True once :meth:`close` has been called.
    #[getter]
    fn closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// The number of components of every vector.
    #[getter]
    fn dim(&self) -> usize {
        self.dim
    }

    /// The store's directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.shared.lease().py_err()?.len())
    }

    fn __contains__(&self, id: &str) -> PyResult<bool> {
        let store = self.shared.lease().py_err()?;
        Ok(store.get(id).py_err()?.is_some())
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Closes the store.
    #[pyo3(signature = (_exc_type, _exc_value, _traceback))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyType>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { " (closed)" } else { "" };
        format!("<vellum.Store {:?} dim={}{state}>", self.path, self.dim)
    }
}

/// `hits` as two `(m, width)` arrays, padded with `""` ids and NaN scores. The arrays are made by
/// NumPy, so an impossible size raises `MemoryError` or `ValueError` instead of aborting.
fn padded_results<'py>(py: Python<'py>, hits: &[Vec<(String, f32)>], width: usize) -> PyResult<SearchArrays<'py>> {
    let numpy = py.import("numpy")?;
    let shape = (hits.len(), width);
    let ids = numpy
        .call_method1("full", (shape, PyString::new(py, ""), "object"))?
        .cast_into::<PyArray2<Py<PyAny>>>()?;
    let scores = numpy
        .call_method1("full", (shape, f32::NAN, numpy.getattr("float32")?))?
        .cast_into::<PyArray2<f32>>()?;
    {
        let mut ids_view = ids.try_readwrite()?;
        let mut scores_view = scores.try_readwrite()?;
        let ids_out = ids_view.as_slice_mut().expect("numpy.full makes C-contiguous arrays");
        let scores_out = scores_view
            .as_slice_mut()
            .expect("numpy.full makes C-contiguous arrays");
        for (row, row_hits) in hits.iter().enumerate() {
            for (column, (id, score)) in row_hits.iter().take(width).enumerate() {
                ids_out[row * width + column] = PyString::new(py, id).into_any().unbind();
                scores_out[row * width + column] = *score;
            }
        }
    }
    Ok((ids, scores))
}

/// Runs Python's signal handlers, then `progress` (if any) with `step` as
/// `(phase, done, total)`, taking the GIL; `Err` with what either raised.
fn tell(progress: Option<&Py<PyAny>>, step: IndexBuildProgress) -> Result<(), Failure> {
    batch::run_signal_handlers()?;
    let Some(progress) = progress else { return Ok(()) };
    let phase = match step.phase {
        IndexBuildPhase::Linking => "linking",
        IndexBuildPhase::Calibrating => "calibrating",
        _ => "writing",
    };
    Python::attach(|py| progress.call1(py, (phase, step.done, step.total)).map(drop)).map_err(Failure::Interrupted)
}
