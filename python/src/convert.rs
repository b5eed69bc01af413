//! Python values in, Rust values out: vectors, matrices, ids, metadata, option strings.
//!
//! Vectors are float32 in the store. Any real input is converted as NumPy's `astype(float32)`
//! does (round to nearest); bool, complex, string and object arrays are refused (`TypeError`).
//! A float32 matrix that is C-contiguous and aligned is read in place (zero-copy); any other
//! matrix is converted or copied once by `numpy.require`.

use std::time::Duration;

use numpy::{
    PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray2, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use vellum::{Metric, SyncMode};

use crate::errors::InvalidArgumentError;

/// The `numpy` module, imported once.
fn numpy_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static NUMPY: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    NUMPY
        .get_or_try_init(py, || py.import("numpy").map(Bound::unbind))
        .map(|module| module.bind(py))
}

/// One vector as an owned `Vec<f32>`: a 1-D array of a real dtype, or any sequence of numbers.
/// It is copied (one vector is small), so no other thread can change it while the GIL is
/// released.
pub fn vector(obj: &Bound<'_, PyAny>) -> PyResult<Vec<f32>> {
    if let Ok(array) = obj.cast::<PyArray1<f32>>() {
        let array = array.try_readonly()?;
        return Ok(match array.as_slice() {
            Ok(slice) => slice.to_vec(),
            Err(_) => array.as_array().iter().copied().collect(),
        });
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return list.iter().map(|item| component(&item)).collect();
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return tuple.iter().map(|item| component(&item)).collect();
    }
    let array = float32_array(obj, 1)?.cast_into::<PyArray1<f32>>()?;
    let array = array.try_readonly()?;
    Ok(array.as_array().iter().copied().collect())
}

fn component(item: &Bound<'_, PyAny>) -> PyResult<f32> {
    if item.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err("vector components must be real numbers, not str"));
    }
    item.extract::<f32>()
}

/// A matrix of `dim` columns, read as one C-contiguous, aligned float32 slice: the caller's
/// array itself when it is one already (zero-copy), otherwise one converted copy.
pub struct Matrix<'py> {
    array: PyReadonlyArray2<'py, f32>,
}

impl Matrix<'_> {
    pub fn rows(&self) -> usize {
        self.array.as_array().nrows()
    }

    /// Every component, row after row.
    pub fn as_slice(&self) -> &[f32] {
        self.array
            .as_slice()
            .expect("a Matrix is C-contiguous and aligned (checked when made)")
    }
}

pub fn matrix<'py>(obj: &Bound<'py, PyAny>, dim: usize, what: &str) -> PyResult<Matrix<'py>> {
    let in_place = obj
        .cast::<PyArray2<f32>>()
        .ok()
        .and_then(|array| array.try_readonly().ok())
        // `as_slice` also takes a Fortran-ordered array, whose slice is column after column.
        .filter(|array| array.is_c_contiguous() && array.as_slice().is_ok());
    let array = match in_place {
        Some(array) => array,
        None => {
            let array = float32_array(obj, 2)?.cast_into::<PyArray2<f32>>()?.try_readonly()?;
            if !array.is_c_contiguous() || array.as_slice().is_err() {
                return Err(PyTypeError::new_err(format!(
                    "{what}: numpy.require gave no C-contiguous array"
                )));
            }
            array
        }
    };
    let shape = array.as_array().dim();
    if shape.1 != dim {
        return Err(InvalidArgumentError::new_err(format!(
            "{what} must have {dim} columns (the store's dimension), not shape {shape:?}"
        )));
    }
    Ok(Matrix { array })
}

/// `obj` as a C-contiguous, aligned float32 array of `ndim` dimensions, through NumPy (which
/// copies only what needs converting). Refuses non-real dtypes and other shapes.
fn float32_array<'py>(obj: &Bound<'py, PyAny>, ndim: usize) -> PyResult<Bound<'py, PyUntypedArray>> {
    let py = obj.py();
    let numpy = numpy_module(py)?;
    let array = match obj.cast::<PyUntypedArray>() {
        Ok(array) => array.clone(),
        Err(_) => numpy.call_method1("asarray", (obj,))?.cast_into::<PyUntypedArray>()?,
    };
    let dtype = array.dtype();
    if !matches!(dtype.kind(), b'f' | b'i' | b'u') {
        return Err(PyTypeError::new_err(format!(
            "vectors must be real numbers (a float or integer dtype), not dtype {}",
            dtype.str()?
        )));
    }
    if array.ndim() != ndim {
        return Err(InvalidArgumentError::new_err(format!(
            "expected a {ndim}-D array, not one of shape {:?}",
            array.shape()
        )));
    }
    let float32 = numpy.getattr("float32")?;
    let requirements = ("C", "A");
    let converted = numpy.call_method1("require", (array, float32, requirements))?;
    Ok(converted.cast_into::<PyUntypedArray>()?)
}

/// Strings kept end to end in one buffer: ids or metadata keys and values copied out of Python
/// objects, so the GIL can be released while they are used (another thread may change the list
/// they came from), at the cost of one copy of their bytes and no allocation per string.
#[derive(Default)]
pub struct Strings {
    text: String,
    ends: Vec<usize>,
}

impl Strings {
    pub fn with_capacity(count: usize) -> Strings {
        Strings {
            text: String::with_capacity(count * 16),
            ends: Vec::with_capacity(count),
        }
    }

    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn get(&self, index: usize) -> &str {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.text[start..self.ends[index]]
    }
}

/// A `str`, or a `TypeError` naming `what`.
pub fn string<'a>(obj: &'a Bound<'_, PyAny>, what: &dyn Fn() -> String) -> PyResult<&'a str> {
    match obj.cast::<PyString>() {
        Ok(s) => s.to_str(),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{} must be str, not {}",
            what(),
            obj.get_type().name()?
        ))),
    }
}

/// `count` ids from a list, tuple or other iterable of `str`.
pub fn ids(obj: &Bound<'_, PyAny>, count: usize) -> PyResult<Strings> {
    let ids = id_list(obj, count)?;
    if ids.len() != count {
        return Err(InvalidArgumentError::new_err(format!(
            "{} ids for {count} vectors",
            ids.len()
        )));
    }
    Ok(ids)
}

/// The ids of a list, tuple or other iterable of `str`, however many (`capacity`: how many to
/// expect).
pub fn id_list(obj: &Bound<'_, PyAny>, capacity: usize) -> PyResult<Strings> {
    let mut ids = Strings::with_capacity(capacity);
    let mut push = |index: usize, item: &Bound<'_, PyAny>| -> PyResult<()> {
        ids.push(string(item, &|| format!("ids[{index}]"))?);
        Ok(())
    };
    if let Ok(list) = obj.cast::<PyList>() {
        for (index, item) in list.iter().enumerate() {
            push(index, &item)?;
        }
    } else if let Ok(tuple) = obj.cast::<PyTuple>() {
        for (index, item) in tuple.iter().enumerate() {
            push(index, &item)?;
        }
    } else if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err("ids must be a sequence of str, not one str"));
    } else {
        for (index, item) in obj.try_iter()?.enumerate() {
            push(index, &item?)?;
        }
    }
    Ok(ids)
}

/// Metadata of many rows: each row's pairs are `pairs[row_ends[row - 1]..row_ends[row]]`, and
/// pair `p` is `strings[2p]`, `strings[2p + 1]`.
#[derive(Default)]
pub struct MetadataRows {
    strings: Strings,
    row_ends: Vec<usize>,
}

impl MetadataRows {
    /// The pairs of `row` into `out` (cleared first): borrowed, so no allocation per row.
    pub fn row_into<'a>(&'a self, row: usize, out: &mut Vec<(&'a str, &'a str)>) {
        out.clear();
        let start = if row == 0 { 0 } else { self.row_ends[row - 1] };
        for pair in start..self.row_ends[row] {
            out.push((self.strings.get(2 * pair), self.strings.get(2 * pair + 1)));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.row_ends.is_empty()
    }
}

/// `None` (no metadata at all) or a sequence of `count` entries, each a `dict[str, str]` or
/// `None` (no metadata for that row).
pub fn metadata_rows(obj: Option<&Bound<'_, PyAny>>, count: usize) -> PyResult<MetadataRows> {
    let mut rows = MetadataRows::default();
    let Some(obj) = obj.filter(|obj| !obj.is_none()) else {
        return Ok(rows);
    };
    rows.row_ends.reserve(count);
    for (row, item) in obj.try_iter()?.enumerate() {
        let item = item?;
        push_metadata(&mut rows.strings, &item, &|| format!("metadata[{row}]"))?;
        rows.row_ends.push(rows.strings.len() / 2);
    }
    if rows.row_ends.len() != count {
        return Err(InvalidArgumentError::new_err(format!(
            "{} metadata entries for {count} vectors",
            rows.row_ends.len()
        )));
    }
    Ok(rows)
}

/// The metadata of one vector: `None` or a `dict[str, str]`.
pub fn metadata(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Strings> {
    let mut strings = Strings::default();
    if let Some(obj) = obj {
        push_metadata(&mut strings, obj, &|| "metadata".to_string())?;
    }
    Ok(strings)
}

/// The pairs of `strings` (from [`metadata`]) as the library takes them.
pub fn pairs(strings: &Strings) -> Vec<(&str, &str)> {
    (0..strings.len() / 2)
        .map(|pair| (strings.get(2 * pair), strings.get(2 * pair + 1)))
        .collect()
}

fn push_metadata(strings: &mut Strings, obj: &Bound<'_, PyAny>, what: &dyn Fn() -> String) -> PyResult<()> {
    if obj.is_none() {
        return Ok(());
    }
    let Ok(dict) = obj.cast::<PyDict>() else {
        return Err(PyTypeError::new_err(format!(
            "{} must be a dict of str to str or None, not {}",
            what(),
            obj.get_type().name()?
        )));
    };
    for (key, value) in dict.iter() {
        let key_text = string(&key, &|| format!("{} keys", what()))?;
        let value_text = string(&value, &|| format!("{}[{key_text:?}]", what()))?;
        strings.push(key_text);
        strings.push(value_text);
    }
    Ok(())
}

/// `"cosine"`, `"l2"` or `"dot"`.
pub fn metric(name: &str) -> PyResult<Metric> {
    match name {
        "cosine" => Ok(Metric::Cosine),
        "l2" => Ok(Metric::L2),
        "dot" => Ok(Metric::Dot),
        _ => Err(InvalidArgumentError::new_err(format!(
            "metric must be \"cosine\", \"l2\" or \"dot\", not {name:?}"
        ))),
    }
}

/// `"always"`, `"interval"` (every `interval_seconds`) or `"never"`.
pub fn sync_mode(name: &str, interval_seconds: f64) -> PyResult<SyncMode> {
    match name {
        "always" => Ok(SyncMode::Always),
        "never" => Ok(SyncMode::Never),
        "interval" => match Duration::try_from_secs_f64(interval_seconds) {
            Ok(interval) if !interval.is_zero() => Ok(SyncMode::Interval(interval)),
            _ => Err(InvalidArgumentError::new_err(format!(
                "sync_interval must be a positive number of seconds, not {interval_seconds}"
            ))),
        },
        _ => Err(InvalidArgumentError::new_err(format!(
            "sync must be \"always\", \"interval\" or \"never\", not {name:?}"
        ))),
    }
}

/// A search filter: `None`, a one-pair `dict`, or a `(key, value)` tuple.
pub fn filter(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<(String, String)>> {
    let Some(obj) = obj.filter(|obj| !obj.is_none()) else {
        return Ok(None);
    };
    let (key, value) = if let Ok(dict) = obj.cast::<PyDict>() {
        if dict.len() != 1 {
            return Err(InvalidArgumentError::new_err(format!(
                "filter must hold exactly one key/value pair, not {}",
                dict.len()
            )));
        }
        let (key, value) = dict.iter().next().expect("a dict of length 1 has an item");
        (key, value)
    } else if let Ok(tuple) = obj.cast::<PyTuple>()
        && tuple.len() == 2
    {
        (tuple.get_item(0)?, tuple.get_item(1)?)
    } else {
        return Err(PyTypeError::new_err(
            "filter must be None, a one-pair dict {key: value} or a (key, value) tuple",
        ));
    };
    let key = string(&key, &|| "the filter's key".to_string())?.to_owned();
    let value = string(&value, &|| "the filter's value".to_string())?.to_owned();
    Ok(Some((key, value)))
}
