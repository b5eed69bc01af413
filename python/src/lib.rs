//! Python bindings of Vellum: the extension module `vellum._vellum`, re-exported by the Python
//! package `vellum` (`vellum/__init__.py`), which also defines the exception classes.

mod batch;
mod bench;
mod convert;
mod errors;
mod report;
mod shared;
mod store;
mod txn;

use pyo3::prelude::*;

#[pymodule]
fn _vellum(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<store::PyStore>()?;
    module.add_class::<txn::PyTransaction>()?;
    module.add_function(wrap_pyfunction!(report::_restore, module)?)?;
    module.add_function(wrap_pyfunction!(bench::_rust_upsert_batches, module)?)?;
    module.add_function(wrap_pyfunction!(bench::_rust_search_loop, module)?)?;
    Ok(())
}
