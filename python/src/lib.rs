//! `segvol._segvol`: the native half of the Python package. It takes and
//! returns voxels as `bytes` in NIfTI file order (i fastest, the Fortran
//! order of an `(I, J, K)` array); `segvol/__init__.py` does the numpy side
//! (dtype conversion, axis order, shapes). The GIL is released for every
//! computation, and engine errors become `segvol.SegvolError` with the
//! engine's message.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use segvol::api::{Engine, Options, Segmentation, Session as RsSession};
use segvol::backend::cpu::CpuBackend;
use segvol::io::affine::Affine;
use segvol::io::nifti::{read_ct, CtVolume};
use segvol::pipeline::prompt_frames::Frame;
use segvol::pipeline::request::Request;
use segvol::pipeline::zoom::Timings;

create_exception!(
    _segvol,
    SegvolError,
    PyException,
    "An error from the segvol engine (bad input, unreadable file, unusable prompt); the message says what."
);

fn err(e: segvol::Error) -> PyErr {
    SegvolError::new_err(e.to_string())
}

/// Sessions alive now: lets the tests see that dropping one frees it.
static LIVE_SESSIONS: AtomicUsize = AtomicUsize::new(0);

fn affine(values: Vec<f64>) -> PyResult<Affine> {
    if values.len() != 16 {
        return Err(SegvolError::new_err(format!(
            "affine: 16 values (a 4x4 matrix, row-major) expected, got {}",
            values.len()
        )));
    }
    Ok(std::array::from_fn(|r| {
        std::array::from_fn(|c| values[4 * r + c])
    }))
}

/// float32 voxels (native byte order, as numpy's `float32`) from bytes.
fn volume(voxels: &[u8], dims: [usize; 3], aff: Vec<f64>) -> PyResult<CtVolume> {
    if voxels.len() % 4 != 0 {
        return Err(SegvolError::new_err(format!(
            "voxels: {} bytes is not a whole number of float32 values",
            voxels.len()
        )));
    }
    let data: Vec<f32> = voxels
        .chunks_exact(4)
        .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    CtVolume::from_array("array", dims, data, affine(aff)?).map_err(err)
}

/// A segmentation as Python values (see [`result`]).
type SegOut<'py> = (
    Bound<'py, PyBytes>,
    [usize; 3],
    Vec<String>,
    Vec<Bound<'py, PyBytes>>,
    Bound<'py, PyDict>,
);

fn timings_dict<'py>(py: Python<'py>, t: &Timings) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("zoom_out_encode_s", t.zoom_out_encode.as_secs_f64())?;
    d.set_item("zoom_out_decode_s", t.zoom_out_decode.as_secs_f64())?;
    d.set_item("zoom_in_encode_s", t.zoom_in_encode.as_secs_f64())?;
    d.set_item("zoom_in_decode_s", t.zoom_in_decode.as_secs_f64())?;
    d.set_item("windows_encoded", t.windows_encoded)?;
    d.set_item("windows_reused", t.windows_reused)?;
    Ok(d)
}

/// `(labels, dims, names, probabilities, timings)`: labels as uint16
/// bytes, probabilities as one float32 bytes object per category, dims the
/// CT's (I, J, K).
fn result<'py>(py: Python<'py>, seg: &Segmentation) -> PyResult<SegOut<'py>> {
    let labels: Vec<u8> = seg.labels.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let probs = seg
        .probabilities
        .iter()
        .map(|p| {
            let b: Vec<u8> = p.iter().flat_map(|v| v.to_ne_bytes()).collect();
            PyBytes::new(py, &b)
        })
        .collect();
    Ok((
        PyBytes::new(py, &labels),
        seg.dims,
        seg.names.clone(),
        probs,
        timings_dict(py, &seg.timings)?,
    ))
}

/// Where a one-call segmentation's CT comes from.
enum Source {
    File(PathBuf),
    Array(Box<CtVolume>),
}

/// A loaded model (CPU backend). Share one between sessions and threads.
#[pyclass(frozen, module = "segvol._segvol")]
struct Model {
    engine: Arc<Engine<CpuBackend>>,
}

#[pymethods]
impl Model {
    /// Loads `weights` (a checkpoint file or folder), or the official
    /// weights from the Hugging Face cache when None; `threads` = 0 uses
    /// every core.
    #[new]
    #[pyo3(signature = (weights=None, threads=0))]
    fn new(py: Python<'_>, weights: Option<PathBuf>, threads: usize) -> PyResult<Self> {
        let engine = py
            .allow_threads(|| {
                let backend = if threads == 0 {
                    CpuBackend::new()
                } else {
                    CpuBackend::with_threads(threads)?
                };
                let path = match weights {
                    Some(p) => p,
                    None => {
                        segvol::weights::hub::official_weights(&mut |m| eprintln!("segvol: {m}"))?
                    }
                };
                Engine::load(backend, &path)
            })
            .map_err(err)?;
        Ok(Model {
            engine: Arc::new(engine),
        })
    }

    /// The checkpoint path.
    #[getter]
    fn weights(&self) -> PathBuf {
        self.engine.weights().to_path_buf()
    }

    /// One call: the CT (a NIfTI path, or float32 voxel bytes with dims and
    /// a row-major affine) and prompts in; labels in the CT's grid out.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (path, voxels, dims, affine, texts, boxes, points, world, seed, zoom_in, probabilities))]
    fn segment<'py>(
        &self,
        py: Python<'py>,
        path: Option<PathBuf>,
        voxels: Option<&[u8]>,
        dims: [usize; 3],
        affine: Vec<f64>,
        texts: Vec<String>,
        boxes: Vec<[f64; 6]>,
        points: Vec<([f64; 3], bool)>,
        world: bool,
        seed: u64,
        zoom_in: bool,
        probabilities: bool,
    ) -> PyResult<SegOut<'py>> {
        let mut req = Request {
            texts,
            frame: Some(if world { Frame::World } else { Frame::Voxel }),
            ..Request::default()
        };
        for b in boxes {
            req = req.with_box(b);
        }
        for (at, positive) in points {
            req = req.with_point(at, positive);
        }
        let mut opts = Options {
            probabilities,
            ..Options::default()
        };
        opts.zoom.seed = seed;
        opts.zoom.zoom_in = zoom_in;
        // The voxels are copied out of the bytes object while the GIL is
        // held; the network runs without it.
        let source = match (path, voxels) {
            (Some(p), None) => Source::File(p),
            (None, Some(v)) => Source::Array(Box::new(volume(v, dims, affine)?)),
            _ => {
                return Err(SegvolError::new_err(
                    "give either a path or voxels, not both",
                ))
            }
        };
        let engine = self.engine.clone();
        let seg = py
            .allow_threads(move || {
                req.category_count()?;
                let ct = match source {
                    Source::Array(ct) => *ct,
                    Source::File(path) => read_ct(&path)?,
                };
                engine.segment_volume(&ct, &req, &opts)
            })
            .map_err(err)?;
        result(py, &seg)
    }
}

/// An interactive session on one image (see `segvol.Session`).
#[pyclass(module = "segvol._segvol")]
struct Session {
    inner: RsSession<CpuBackend>,
}

impl Drop for Session {
    fn drop(&mut self) {
        LIVE_SESSIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (model, probabilities=false, zoom_in=true))]
    fn new(model: &Model, probabilities: bool, zoom_in: bool) -> Self {
        LIVE_SESSIONS.fetch_add(1, Ordering::Relaxed);
        let mut opts = Options {
            probabilities,
            ..Options::default()
        };
        opts.zoom.zoom_in = zoom_in;
        Session {
            inner: RsSession::with_options(model.engine.clone(), opts),
        }
    }

    fn set_image(
        &mut self,
        py: Python<'_>,
        voxels: &[u8],
        dims: [usize; 3],
        affine: Vec<f64>,
    ) -> PyResult<()> {
        let ct = volume(voxels, dims, affine)?;
        let inner = &mut self.inner;
        py.allow_threads(|| inner.set_image(ct)).map_err(err)
    }

    fn set_image_file(&mut self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let inner = &mut self.inner;
        py.allow_threads(|| inner.set_image_file(&path))
            .map_err(err)
    }

    fn set_world_frame(&mut self, world: bool) {
        self.inner.frame = if world { Frame::World } else { Frame::Voxel };
    }

    fn add_point<'py>(
        &mut self,
        py: Python<'py>,
        at: [f64; 3],
        positive: bool,
    ) -> PyResult<SegOut<'py>> {
        let inner = &mut self.inner;
        let seg = py
            .allow_threads(|| inner.add_point(at, positive).cloned())
            .map_err(err)?;
        result(py, &seg)
    }

    fn add_box<'py>(&mut self, py: Python<'py>, corners: [f64; 6]) -> PyResult<SegOut<'py>> {
        let inner = &mut self.inner;
        let seg = py
            .allow_threads(|| inner.add_box(corners).cloned())
            .map_err(err)?;
        result(py, &seg)
    }

    fn add_text<'py>(&mut self, py: Python<'py>, name: String) -> PyResult<SegOut<'py>> {
        let inner = &mut self.inner;
        let seg = py
            .allow_threads(|| inner.add_text(&name).cloned())
            .map_err(err)?;
        result(py, &seg)
    }

    fn reset(&mut self) {
        self.inner.reset();
    }

    fn mask<'py>(&self, py: Python<'py>) -> PyResult<Option<SegOut<'py>>> {
        self.inner.mask().map(|s| result(py, s)).transpose()
    }
}

/// Sessions alive in this process (for leak tests).
#[pyfunction]
fn live_sessions() -> usize {
    LIVE_SESSIONS.load(Ordering::Relaxed)
}

#[pymodule]
fn _segvol(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("SegvolError", m.py().get_type::<SegvolError>())?;
    m.add_class::<Model>()?;
    m.add_class::<Session>()?;
    m.add_function(wrap_pyfunction!(live_sessions, m)?)?;
    Ok(())
}
