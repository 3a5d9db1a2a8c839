//! Python bindings of fastmask's native core. Everything here is a thin wrapper: the work
//! happens in the pure-Rust modules, which know nothing of Python.

pub mod augment;
pub mod check;
pub mod color;
pub mod decode;
pub mod error;
pub mod pipeline;
pub mod rng;
pub mod roi;
pub mod sampler;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use numpy::{
    PyArray3, PyArrayMethods, PyReadonlyArray3, PyReadwriteArray1, PyReadwriteArray4, PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::augment::{AugmentConfig, CropBox};
use crate::decode::{DecodeOptions, Image};
use crate::error::Error;
use crate::pipeline::{Pipeline, PipelineConfig, Slot};
use crate::sampler::{Oversample, SamplerConfig};

create_exception!(
    _native,
    DecodeError,
    PyValueError,
    "An image file could not be read or decoded; the message names it."
);

struct PyError(Error);

impl From<Error> for PyError {
    fn from(e: Error) -> Self {
        PyError(e)
    }
}

impl From<PyError> for PyErr {
    fn from(e: PyError) -> PyErr {
        match e.0 {
            err @ (Error::Decode { .. } | Error::Image(_)) => DecodeError::new_err(err.to_string()),
            err @ Error::Invalid(_) => PyValueError::new_err(err.to_string()),
            err @ Error::Closed => PyRuntimeError::new_err(err.to_string()),
        }
    }
}

type PyResult2<T> = Result<T, PyError>;
/// Per-image crop boxes in source pixels, None for the centre crop.
type Boxes = Option<Vec<Option<PyCropBox>>>;

/// A crop box from Python: (x0, y0, x1, y1), or (x0, y0, x1, y1, angle_deg) for the box
/// turned about its centre (`augment::CropBox`).
#[derive(FromPyObject, Clone, Copy)]
enum PyCropBox {
    Turned((f32, f32, f32, f32, f32)),
    Plain((f32, f32, f32, f32)),
}

/// Version and build facts of the native module.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let info = PyDict::new(py);
    info.set_item("version", env!("CARGO_PKG_VERSION"))?;
    info.set_item("decoders", decode::DECODERS.to_vec())?;
    info.set_item(
        "cpu_threads",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    )?;
    info.set_item("debug", cfg!(debug_assertions))?;
    info.set_item("opt_level", env!("FASTMASK_OPT_LEVEL"))?;
    info.set_item("profile", env!("FASTMASK_PROFILE"))?;
    Ok(info)
}

fn image_to_numpy<'py>(py: Python<'py>, img: Image) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let (h, w) = (img.height, img.width);
    numpy::PyArray1::from_vec(py, img.data).reshape([h, w, 3])
}

/// Decode an image file to an RGB uint8 array [H, W, 3]; `min_size` (height, width) lets a
/// JPEG decode at a DCT scale no smaller than it; `roi` (x0, y0, x1, y1) lets it stop after
/// the rows that region needs (pixels outside it are then unspecified).
#[pyfunction]
#[pyo3(signature = (path, apply_exif=true, min_size=None, roi=None))]
fn decode_file<'py>(
    py: Python<'py>,
    path: PathBuf,
    apply_exif: bool,
    min_size: Option<(usize, usize)>,
    roi: Option<(usize, usize, usize, usize)>,
) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let opts = DecodeOptions {
        apply_exif,
        min_size: min_size.map(|(h, w)| (w, h)),
        roi: roi.map(|(x0, y0, x1, y1)| roi::Roi { x0, y0, x1, y1 }),
    };
    let img = py.detach(|| decode::decode_file(&path, &opts)).map_err(PyError)?;
    image_to_numpy(py, img)
}

/// A knob's value as Python sees it: a float, or a pair of floats.
trait KnobValue: Sized {
    type Py;
    fn to_py(&self) -> Self::Py;
    fn from_py(value: &Bound<'_, PyAny>) -> Option<Self>;
    const EXPECTED: &'static str;
}

/// An f32 as the Python float with the same shortest decimal form (0.1, not 0.100000001).
fn py_float(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

impl KnobValue for f32 {
    type Py = f64;
    fn to_py(&self) -> f64 {
        py_float(*self)
    }
    fn from_py(value: &Bound<'_, PyAny>) -> Option<Self> {
        value.extract().ok()
    }
    const EXPECTED: &'static str = "a number";
}

impl KnobValue for (f32, f32) {
    type Py = (f64, f64);
    fn to_py(&self) -> (f64, f64) {
        (py_float(self.0), py_float(self.1))
    }
    fn from_py(value: &Bound<'_, PyAny>) -> Option<Self> {
        value.extract().ok()
    }
    const EXPECTED: &'static str = "a pair of numbers";
}

/// `fastmask.loader.AugmentConfig`: a preset plus the knobs set explicitly, immutable. Its
/// constructor, getters and `knobs()` are made from the one knob list (`augment_knobs!`).
#[pyclass(name = "AugmentConfig", module = "fastmask._native", frozen, eq)]
#[derive(Clone, PartialEq)]
struct PyAugmentConfig {
    preset: String,
    /// Names of the knobs given explicitly, in the order of the list.
    explicit: Vec<&'static str>,
    cfg: AugmentConfig,
}

impl PyAugmentConfig {
    /// The preset, then every knob of `knobs` that is not None; checked.
    fn build(preset: &str, knobs: Option<&Bound<'_, PyDict>>) -> PyResult2<Self> {
        let mut cfg = AugmentConfig::preset(preset)?;
        let mut explicit = Vec::new();
        for (key, value) in knobs.into_iter().flat_map(|k| k.iter()) {
            let key: String = key
                .extract()
                .map_err(|_| Error::Invalid("augment keys must be strings".into()))?;
            if !value.is_none() {
                explicit.push(set_knob(&mut cfg, &key, &value)?);
            }
        }
        cfg.validate()?;
        explicit.sort_by_key(|k| AugmentConfig::KNOBS.iter().position(|n| n == k));
        explicit.dedup();
        Ok(PyAugmentConfig {
            preset: preset.to_string(),
            explicit,
            cfg,
        })
    }
}

macro_rules! py_augment_config {
    ($($(#[doc = $doc:literal])* $name:ident: $ty:ty,)*) => {
        /// Set the knob `key` of `cfg` from a Python value; returns the knob's name.
        fn set_knob(cfg: &mut AugmentConfig, key: &str, value: &Bound<'_, PyAny>) -> PyResult2<&'static str> {
            match key {
                $(stringify!($name) => {
                    cfg.$name = <$ty as KnobValue>::from_py(value).ok_or_else(|| {
                        let want = <$ty as KnobValue>::EXPECTED;
                        Error::Invalid(format!("augment {key}: expected {want}, got {value}"))
                    })?;
                    Ok(stringify!($name))
                })*
                other => Err(Error::Invalid(format!("unknown augment knob {other:?}")).into()),
            }
        }

        /// The knob `key` of `cfg` as a Python value.
        fn get_knob<'py>(py: Python<'py>, cfg: &AugmentConfig, key: &str) -> PyResult<Bound<'py, PyAny>> {
            match key {
                $(stringify!($name) => Ok(cfg.$name.to_py().into_pyobject(py)?.into_any()),)*
                other => Err(PyValueError::new_err(format!("unknown augment knob {other:?}"))),
            }
        }

        #[pymethods]
        impl PyAugmentConfig {
            /// A preset ("none", "light", "mask", "gender" or "age") and knobs overriding it; a
            /// knob left out or None keeps the preset's value.
            #[new]
            #[pyo3(signature = (preset="none", **knobs))]
            fn new(preset: &str, knobs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
                Ok(PyAugmentConfig::build(preset, knobs)?)
            }

            #[getter]
            fn preset(&self) -> &str {
                &self.preset
            }

            /// The knobs given explicitly, by name.
            fn knobs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
                let out = PyDict::new(py);
                for &name in &self.explicit {
                    out.set_item(name, get_knob(py, &self.cfg, name)?)?;
                }
                Ok(out)
            }

            fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
                let mut parts = vec![self.preset.as_str().into_pyobject(py)?.repr()?.to_string()];
                for &name in &self.explicit {
                    parts.push(format!("{name}={}", get_knob(py, &self.cfg, name)?.repr()?));
                }
                Ok(format!("AugmentConfig({})", parts.join(", ")))
            }

            fn __hash__(&self) -> u64 {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (&self.preset, &self.explicit, format!("{:?}", self.cfg)).hash(&mut h);
                h.finish()
            }

            $(
                $(#[doc = $doc])*
                #[getter]
                fn $name(&self) -> <$ty as KnobValue>::Py {
                    self.cfg.$name.to_py()
                }
            )*
        }
    };
}

augment_knobs!(py_augment_config);

fn crop_box(b: Option<PyCropBox>) -> Option<CropBox> {
    b.map(|b| match b {
        PyCropBox::Plain((x0, y0, x1, y1)) => CropBox::plain(x0, y0, x1, y1),
        PyCropBox::Turned((x0, y0, x1, y1, angle)) => CropBox::turned(x0, y0, x1, y1, angle),
    })
}

/// Crop, resize and (with train=True) augment one RGB uint8 image [H, W, 3].
#[pyfunction]
#[pyo3(signature = (image, image_size, *, train=false, seed=0, preset="none", knobs=None, crop=None))]
#[allow(clippy::too_many_arguments)]
fn augment_image<'py>(
    py: Python<'py>,
    image: PyReadonlyArray3<'py, u8>,
    image_size: (usize, usize),
    train: bool,
    seed: u64,
    preset: &str,
    knobs: Option<&Bound<'py, PyDict>>,
    crop: Option<PyCropBox>,
) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let cfg = PyAugmentConfig::build(preset, knobs)?.cfg;
    let crop = crop_box(crop);
    if let Some(Err(e)) = crop.map(|c| c.check()) {
        return Err(PyValueError::new_err(format!("crop: {e}")));
    }
    let shape = image.shape();
    if shape[2] != 3 {
        return Err(PyValueError::new_err(format!(
            "image must be [H, W, 3] RGB, got shape {shape:?}"
        )));
    }
    let (h, w) = (shape[0], shape[1]);
    let data = image
        .as_slice()
        .map_err(|_| PyValueError::new_err("image must be C-contiguous"))?
        .to_vec();
    let img = Image {
        width: w,
        height: h,
        data,
        source_width: w,
        source_height: h,
    };
    let (out_h, out_w) = image_size;
    let mut out = vec![0u8; out_w * out_h * 3];
    py.detach(|| {
        let mut rng = rng::Rng::derive(&[seed]);
        let region = augment::crop_region(&img, crop, &cfg);
        let target = augment::Target::u8(&mut out, out_w, out_h)?;
        augment::process(&img, region, &cfg, train, &mut rng, target)
    })
    .map_err(PyError)?;
    image_to_numpy(
        py,
        Image {
            width: out_w,
            height: out_h,
            data: out,
            source_width: out_w,
            source_height: out_h,
        },
    )
}

/// The epoch plan (sample indices) the loader would use, for inspection and tests.
#[pyfunction]
#[pyo3(signature = (labels, *, epoch=0, seed=0, shuffle=true, oversample=None, rank=0, world_size=1, drop_last=false, batch_size=1))]
#[allow(clippy::too_many_arguments)]
fn epoch_plan(
    labels: Vec<i64>,
    epoch: u64,
    seed: u64,
    shuffle: bool,
    oversample: Option<&Bound<'_, PyAny>>,
    rank: usize,
    world_size: usize,
    drop_last: bool,
    batch_size: usize,
) -> PyResult<Vec<usize>> {
    let cfg = sampler_config(
        oversample,
        shuffle,
        seed,
        (rank, world_size),
        drop_last,
        batch_size,
    )?;
    Ok(sampler::epoch_plan(Some(&labels), labels.len(), &cfg, epoch).map_err(PyError)?)
}

/// The sampler of `epoch_plan` and `Pipeline`, from their keyword arguments.
fn sampler_config(
    oversample: Option<&Bound<'_, PyAny>>,
    shuffle: bool,
    seed: u64,
    (rank, world_size): (usize, usize),
    drop_last: bool,
    batch_size: usize,
) -> PyResult2<SamplerConfig> {
    Ok(SamplerConfig {
        shuffle,
        oversample: parse_oversample(oversample)?,
        seed,
        rank,
        world_size,
        drop_last,
        batch_size,
    })
}

fn parse_oversample(value: Option<&Bound<'_, PyAny>>) -> PyResult2<Oversample> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(Oversample::None);
    };
    if let Ok(s) = value.extract::<String>() {
        return match s.as_str() {
            "balanced" => Ok(Oversample::Balanced),
            other => Err(Error::Invalid(format!(
                "oversample {other:?}: expected None, \"balanced\" or {{class: weight}}"
            ))
            .into()),
        };
    }
    let weights: HashMap<i64, f64> = value.extract().map_err(|_| {
        Error::Invalid(format!(
            "oversample {value}: expected None, \"balanced\" or {{class: weight}}"
        ))
    })?;
    let top = weights.keys().copied().max().unwrap_or(-1);
    if let Some(bad) = weights.keys().find(|&&k| k < 0) {
        return Err(Error::Invalid(format!("oversample class {bad} must be >= 0")).into());
    }
    let mut w = vec![1.0; usize::try_from(top + 1).unwrap_or(0)];
    for (k, v) in weights {
        w[k as usize] = v;
    }
    Ok(Oversample::Weights(w))
}

/// The native batch pipeline behind `fastmask.loader.Loader` (see pipeline.rs).
#[pyclass(name = "Pipeline", module = "fastmask._native")]
struct PyPipeline {
    inner: Option<Pipeline>,
    // Keeps every slot's arrays alive while the pipeline may write into them.
    buffers: Vec<Option<(Py<PyAny>, Py<PyAny>)>>,
    pid: u32,
}

impl PyPipeline {
    fn get(&self) -> PyResult<&Pipeline> {
        self.check_process()?;
        self.inner
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("loader is closed"))
    }

    fn get_mut(&mut self) -> PyResult<&mut Pipeline> {
        self.check_process()?;
        self.inner
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("loader is closed"))
    }

    fn check_process(&self) -> PyResult<()> {
        if std::process::id() != self.pid {
            return Err(PyRuntimeError::new_err(format!(
                "this loader was created in process {} and its threads do not exist in this forked process; create a new Loader here",
                self.pid
            )));
        }
        Ok(())
    }
}

#[pymethods]
impl PyPipeline {
    #[new]
    #[pyo3(signature = (paths, labels, boxes, *, batch_size, image_size, threads, train, augment, shuffle, oversample, seed, rank, world_size, drop_last, ring, cache, cache_bytes, apply_exif, skip_errors, normalize=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        paths: Vec<PathBuf>,
        labels: Option<Vec<i64>>,
        boxes: Boxes,
        batch_size: usize,
        image_size: (usize, usize),
        threads: usize,
        train: bool,
        augment: PyRef<'_, PyAugmentConfig>,
        shuffle: bool,
        oversample: Option<&Bound<'_, PyAny>>,
        seed: u64,
        rank: usize,
        world_size: usize,
        drop_last: bool,
        ring: usize,
        cache: bool,
        cache_bytes: Option<usize>,
        apply_exif: bool,
        skip_errors: bool,
        normalize: Option<([f32; 3], [f32; 3])>,
    ) -> PyResult<Self> {
        if let Some((_, std)) = normalize {
            if std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
                return Err(PyValueError::new_err(format!(
                    "normalize std {std:?} must be positive"
                )));
            }
        }
        let cfg = PipelineConfig {
            out_w: image_size.1,
            out_h: image_size.0,
            threads,
            train,
            augment: augment.cfg.clone(),
            sampler: sampler_config(
                oversample,
                shuffle,
                seed,
                (rank, world_size),
                drop_last,
                batch_size,
            )?,
            decode: DecodeOptions {
                apply_exif,
                min_size: None,
                roi: None,
            },
            cache,
            cache_bytes,
            skip_errors,
            normalize,
        };
        let boxes = boxes.map(|b| b.into_iter().map(crop_box).collect());
        let inner = py
            .detach(|| Pipeline::new(paths, labels, boxes, ring, cfg))
            .map_err(PyError)?;
        Ok(PyPipeline {
            inner: Some(inner),
            buffers: (0..ring).map(|_| None).collect(),
            pid: std::process::id(),
        })
    }

    /// Give slot `index` its buffers, C-contiguous: images as bytes [B, H, W, 3] (uint8 output)
    /// or [B, H, W, 12] (a uint8 view of float32 output with normalize), labels int64 [B].
    fn set_slot(
        &mut self,
        index: usize,
        mut images: PyReadwriteArray4<'_, u8>,
        mut labels: PyReadwriteArray1<'_, i64>,
    ) -> PyResult<()> {
        let pipe = self.get()?;
        let b = pipe.batch_size();
        let per = pipe.sample_bytes();
        let shape = images.shape().to_vec();
        if shape.len() != 4 || shape[0] != b || shape[1] * shape[2] * shape[3] != per {
            return Err(PyValueError::new_err(format!("slot images must be {per} bytes per sample in [{b}, H, W, C] matching the loader's image size and dtype, got {shape:?}")));
        }
        if labels.len() != b {
            return Err(PyValueError::new_err(format!(
                "slot labels must have {b} entries, got {}",
                labels.len()
            )));
        }
        let images_ptr = images
            .as_slice_mut()
            .map_err(|_| PyValueError::new_err("slot images must be C-contiguous and writeable"))?
            .as_mut_ptr();
        let labels_ptr = labels
            .as_slice_mut()
            .map_err(|_| PyValueError::new_err("slot labels must be C-contiguous and writeable"))?
            .as_mut_ptr();
        let keep = (images.as_any().clone().unbind(), labels.as_any().clone().unbind());
        let pipe = self.get_mut()?;
        // SAFETY: both arrays are kept alive in self.buffers until replaced or the pipeline is
        // cancelled (close/drop cancel before releasing them); sizes were checked above.
        unsafe {
            pipe.set_slot(
                index,
                Slot {
                    images: images_ptr,
                    labels: labels_ptr,
                },
            )
        }
        .map_err(PyError)?;
        self.buffers[index] = Some(keep);
        Ok(())
    }

    /// Cancel what is in flight and plan `epoch`; returns the number of batches.
    fn start_epoch(&mut self, py: Python<'_>, epoch: u64) -> PyResult<usize> {
        let pipe = self.get_mut()?;
        Ok(py.detach(|| pipe.start_epoch(epoch)).map_err(PyError)?)
    }

    /// Start filling `batch` into slot `slot`.
    fn schedule(&self, batch: usize, slot: usize) -> PyResult<()> {
        Ok(self.get()?.schedule(batch, slot).map_err(PyError)?)
    }

    /// Block (without the GIL, waking for Ctrl-C) until `batch` is ready; returns its size.
    fn wait(&self, py: Python<'_>, batch: usize) -> PyResult<usize> {
        let pipe = self.get()?;
        loop {
            match py.detach(|| pipe.wait(batch, Duration::from_millis(50))) {
                Some(result) => return Ok(result.map_err(PyError)?),
                None => py.check_signals()?,
            }
        }
    }

    /// Stop in-flight work; the slots can then be reused or freed.
    fn cancel(&mut self, py: Python<'_>) -> PyResult<()> {
        let pipe = self.get_mut()?;
        py.detach(|| pipe.cancel());
        Ok(())
    }

    /// Stop the workers and release the buffers. Safe to call twice.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.check_process()?;
        if let Some(pipe) = self.inner.take() {
            py.detach(move || drop(pipe));
        }
        self.buffers.iter_mut().for_each(|b| *b = None);
        Ok(())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_none()
    }

    #[getter]
    fn num_batches(&self) -> PyResult<usize> {
        Ok(self.get()?.num_batches())
    }

    #[getter]
    fn plan_len(&self) -> PyResult<usize> {
        Ok(self.get()?.plan_len())
    }

    #[getter]
    fn cache_bytes_used(&self) -> PyResult<usize> {
        Ok(self.get()?.cache_bytes_used())
    }

    /// Error messages of samples replaced since the last call (on_error="skip").
    fn take_skipped(&self) -> PyResult<Vec<String>> {
        Ok(self.get()?.take_skipped())
    }
}

impl Drop for PyPipeline {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // A forked child has none of the pool's threads: waiting on them would hang.
            std::mem::forget(self.inner.take());
        }
    }
}

/// (bytes, width, height, orientation, hash, error) of one checked file.
type FileCheckTuple = (u64, usize, usize, u8, u64, Option<String>);

/// Check image files in parallel without the GIL: headers and end marker, and with `full`
/// a complete decode and a content hash. One (bytes, width, height, orientation, hash, error)
/// per path, in order; error is None for a usable file.
#[pyfunction]
#[pyo3(signature = (paths, *, full = false, apply_exif = true, threads = 0))]
fn check_images(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    full: bool,
    apply_exif: bool,
    threads: usize,
) -> PyResult<Vec<FileCheckTuple>> {
    let opts = DecodeOptions {
        apply_exif,
        ..Default::default()
    };
    let checks = py
        .detach(|| check::check_files(&paths, full, &opts, threads))
        .map_err(PyError)?;
    Ok(checks
        .into_iter()
        .map(|c| (c.bytes, c.width, c.height, c.orientation, c.hash, c.error))
        .collect())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add_function(wrap_pyfunction!(decode_file, m)?)?;
    m.add_function(wrap_pyfunction!(augment_image, m)?)?;
    m.add_function(wrap_pyfunction!(epoch_plan, m)?)?;
    m.add_function(wrap_pyfunction!(check_images, m)?)?;
    m.add_class::<PyPipeline>()?;
    m.add_class::<PyAugmentConfig>()?;
    m.add(
        "PRESETS",
        PyTuple::new(m.py(), augment::PRESETS.map(|(name, _)| name))?,
    )?;
    m.add("AUGMENT_KNOBS", PyTuple::new(m.py(), AugmentConfig::KNOBS)?)?;
    let eval = AugmentConfig::eval();
    let eval_crop = PyDict::new(m.py());
    eval_crop.set_item("center_crop", <[f64; 2]>::from(eval.center_crop.to_py()).to_vec())?;
    eval_crop.set_item("center_offset_y", eval.center_offset_y.to_py())?;
    m.add("EVAL_CROP", eval_crop)?;
    m.add("DecodeError", m.py().get_type::<DecodeError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
