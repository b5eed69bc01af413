//! `vellum.restore` and the report it (and `Store.backup`) returns.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use pyo3::prelude::*;
use pyo3::types::PyDict;
use vellum::{Lsn, RestorePhase, RestoreProgress, RestoreReport, RestoreTarget};

use crate::errors::{Failure, IntoPy, InvalidArgumentError};

/// A restore's report as a `dict`: the keys `vellum restore --json` prints, with `duration` in
/// seconds.
pub fn to_dict<'py>(py: Python<'py>, report: &RestoreReport) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("base_image_lsn", report.base_image_lsn.get())?;
    dict.set_item("target_lsn", report.target_lsn.get())?;
    dict.set_item("wal_bytes", report.wal_bytes)?;
    dict.set_item("records_redone", report.records_redone)?;
    dict.set_item("rolled_back", report.rolled_back.clone())?;
    dict.set_item("segments_from_archive", report.segments_from_archive)?;
    dict.set_item("segments_live", report.segments_live)?;
    dict.set_item("timeline", report.timeline)?;
    dict.set_item("duration", report.duration.as_secs_f64())?;
    Ok(dict)
}

/// The body of `vellum.restore` (`vellum/__init__.py` turns a `datetime` into microseconds
/// since the Unix epoch, exactly).
#[pyfunction]
#[pyo3(signature = (src, dest, lsn=None, time_us=None, progress=None))]
pub fn _restore<'py>(
    py: Python<'py>,
    src: PathBuf,
    dest: PathBuf,
    lsn: Option<u64>,
    time_us: Option<i64>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let target = match (lsn, time_us) {
        (Some(_), Some(_)) => {
            return Err(InvalidArgumentError::new_err("give lsn or time, not both"));
        }
        (Some(lsn), None) => RestoreTarget::Lsn(Lsn(lsn)),
        (None, Some(us)) => {
            let offset = Duration::from_micros(us.unsigned_abs());
            let instant = if us >= 0 {
                UNIX_EPOCH.checked_add(offset)
            } else {
                UNIX_EPOCH.checked_sub(offset)
            };
            RestoreTarget::Time(instant.ok_or_else(|| InvalidArgumentError::new_err("time is out of range"))?)
        }
        (None, None) => RestoreTarget::Latest,
    };
    let done = py
        .detach(|| {
            watched(progress.as_ref(), |watcher| {
                vellum::restore_watched(&src, &dest, target, watcher)
            })
        })
        .py_err()?;
    to_dict(py, &done)
}

/// Runs `restore` (a restore or a backup) with a watcher that runs Python's signal handlers and
/// calls `progress(phase, done, total)`, on this thread, about every tenth of a second: Ctrl-C
/// (or any handler or `progress` that raises) stops it with that exception, nothing kept.
pub fn watched(
    progress: Option<&Py<PyAny>>,
    restore: impl FnOnce(&mut dyn FnMut(RestoreProgress) -> ControlFlow<()>) -> vellum::Result<RestoreReport>,
) -> Result<RestoreReport, Failure> {
    crate::batch::watched(|step| tell(progress, step), restore)
}

/// Runs the signal handlers, then tells `progress` of `step` (as `(phase, done, total)`).
fn tell(progress: Option<&Py<PyAny>>, step: RestoreProgress) -> Result<(), Failure> {
    crate::batch::run_signal_handlers()?;
    let Some(progress) = progress else { return Ok(()) };
    let phase = match step.phase {
        RestorePhase::Planning => "planning",
        RestorePhase::StageArena => "stage arena",
        RestorePhase::StageLog => "stage log",
        RestorePhase::FindCut => "find cut",
        RestorePhase::Replay => "replay",
        _ => "new timeline",
    };
    Python::attach(|py| progress.call1(py, (phase, step.done, step.total)).map(drop)).map_err(Failure::Interrupted)
}
