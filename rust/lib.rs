//! Python bindings of fastmask's native core. Everything here is a thin wrapper: the work
//! happens in the pure-Rust modules, which know nothing of Python.

pub mod error;
pub mod rng;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Version and build facts of the native module.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let info = PyDict::new(py);
    info.set_item("version", env!("CARGO_PKG_VERSION"))?;
    info.set_item("decoders", vec!["jpeg:zune-jpeg", "png:zune-png"])?;
    info.set_item("threads_default", rayon::current_num_threads())?;
    info.set_item("debug", cfg!(debug_assertions))?;
    Ok(info)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
