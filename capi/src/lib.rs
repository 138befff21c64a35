//! The C ABI of segvol (`include/segvol.h`, generated from this file by
//! cbindgen).
//!
//! Conventions, the same for every function:
//! - Every entry returns a [`SegvolStatus`]; on failure the engine's message
//!   is available from [`segvol_last_error`] on the same thread.
//! - Models and sessions are opaque handles created by `*_open` / `*_new` and
//!   released by `*_free` (which accept NULL). A session keeps its model
//!   alive, so the model handle may be freed first.
//! - Buffers are owned by the caller: the library writes into them after
//!   checking their length, and never keeps a pointer past the call.
//! - No panic crosses the boundary: each entry runs under `catch_unwind`
//!   and a panic becomes `SEGVOL_STATUS_INTERNAL` with its message.
//! - Arrays are in NIfTI file order (i fastest): voxel `(i, j, k)` is at
//!   `i + dims[0] * (j + dims[1] * k)`.
//! - A handle may be used from any thread, but a session from one thread at a
//!   time; a model may be shared by concurrent sessions.

#![warn(missing_docs)]
// These are C entry points: the pointer contracts are the header's (stated per
// function), every pointer is checked for NULL before use, and marking them
// `unsafe` would change nothing for their C callers.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use segvol::api::{Engine, Options, Session};
use segvol::backend::cpu::CpuBackend;
use segvol::io::nifti::{probe_ct, CtVolume};
use segvol::pipeline::prompt_frames::Frame;
use segvol::pipeline::request::Request;
use segvol::Error;

/// Result of every call. Anything but `SEGVOL_STATUS_OK` comes with a message
/// from `segvol_last_error()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegvolStatus {
    /// Success.
    Ok = 0,
    /// A NULL pointer, a string that is not UTF-8, a buffer of the wrong
    /// length, or an inconsistent request.
    InvalidArgument = 1,
    /// A file could not be read or written.
    Io = 2,
    /// The checkpoint is unreadable or not a SegVol checkpoint.
    Weights = 3,
    /// The CT is malformed or unusable (NaN voxels, no foreground, bad affine).
    Image = 4,
    /// A prompt cannot be honoured (outside the volume, bad label, ...).
    Prompt = 5,
    /// The memory needed is not available.
    OutOfMemory = 6,
    /// A bug in the library (a caught panic); the message says where.
    Internal = 7,
}

/// A loaded model (weights, tokenizer, CPU backend). Opaque.
pub struct SegvolModel {
    engine: Arc<Engine<CpuBackend>>,
}

/// An interactive session over one image. Opaque.
pub struct SegvolSession {
    session: Session<CpuBackend>,
}

/// The prompts of a one-call segmentation. Texts and boxes pair up into
/// categories as in the CLI (one text goes with every box); points make a
/// single category.
#[repr(C)]
pub struct SegvolPrompts {
    /// `n_texts` NUL-terminated UTF-8 category names (may be NULL when 0).
    pub texts: *const *const c_char,
    /// Number of texts.
    pub n_texts: usize,
    /// `6 * n_boxes` coordinates: `i0, j0, k0, i1, j1, k1` per box.
    pub boxes: *const f64,
    /// Number of boxes.
    pub n_boxes: usize,
    /// `4 * n_points` values: `i, j, k, label` per point (label 1 positive,
    /// 0 negative).
    pub points: *const f64,
    /// Number of points.
    pub n_points: usize,
    /// 0: voxel indices `(i, j, k)`; 1: world millimetres through the affine.
    pub world_frame: i32,
    /// Seed of the zoom-in point sampling (the CLI's `--seed`, default 0).
    pub seed: u64,
    /// 0 stops after the zoom-out pass (the CLI's `--no-zoom-in`).
    pub zoom_in: i32,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    // An interior NUL cannot be represented; it is replaced, not dropped.
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The message of the last failed call on this thread ("" when none). The
/// pointer stays valid until the next failing call on the same thread; copy
/// the string to keep it.
#[no_mangle]
pub extern "C" fn segvol_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// An error before or instead of the engine's.
struct Fail(SegvolStatus, String);

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Io { .. } => SegvolStatus::Io,
            Error::Checkpoint { .. }
            | Error::NotSegVol(_)
            | Error::Config(_)
            | Error::Tokenizer(_) => SegvolStatus::Weights,
            Error::Nifti { .. } | Error::Dicom { .. } => SegvolStatus::Image,
            Error::Prompt { .. } => SegvolStatus::Prompt,
            Error::Memory(_) => SegvolStatus::OutOfMemory,
            _ => SegvolStatus::InvalidArgument,
        };
        Fail(status, e.to_string())
    }
}

fn invalid(msg: impl Into<String>) -> Fail {
    Fail(SegvolStatus::InvalidArgument, msg.into())
}

/// Runs one entry: catches panics, records the error, returns the status.
fn guard(f: impl FnOnce() -> Result<(), Fail>) -> SegvolStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => SegvolStatus::Ok,
        Ok(Err(Fail(status, msg))) => {
            set_error(&msg);
            status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_error(&format!("internal error (please report): {what}"));
            SegvolStatus::Internal
        }
    }
}

fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Fail> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string (the header says so).
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| invalid(format!("{what} is not UTF-8")))
}

fn slice_arg<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T], Fail> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL but its count is {n}")));
    }
    // SAFETY: the caller passes `n` readable elements (the header says so).
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

fn out_slice<'a, T>(p: *mut T, n: usize, what: &str) -> Result<&'a mut [T], Fail> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: the caller passes `n` writable elements (the header says so).
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

fn ref_arg<'a, T>(p: *const T, what: &str) -> Result<&'a T, Fail> {
    // SAFETY: non-NULL handles come from this library (the header says so).
    unsafe { p.as_ref() }.ok_or_else(|| invalid(format!("{what} is NULL")))
}

fn mut_arg<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Fail> {
    // SAFETY: as `ref_arg`; the caller uses a session from one thread at a time.
    unsafe { p.as_mut() }.ok_or_else(|| invalid(format!("{what} is NULL")))
}

fn fixed<const N: usize>(p: *const f64, what: &str) -> Result<[f64; N], Fail> {
    let s = slice_arg(p, N, what)?;
    Ok(std::array::from_fn(|i| s[i]))
}

/// Loads a checkpoint (`.bin`, `.pth`, `.safetensors` or a folder). A NULL
/// `weights_path` loads the official BAAI/SegVol weights from the Hugging
/// Face cache, downloading them once. `threads` = 0 uses every core. On
/// success `*out` holds a model to release with `segvol_model_free`.
#[no_mangle]
pub extern "C" fn segvol_model_open(
    weights_path: *const c_char,
    threads: usize,
    out: *mut *mut SegvolModel,
) -> SegvolStatus {
    guard(|| {
        let out = mut_arg(out, "out")?;
        *out = std::ptr::null_mut();
        let backend = if threads == 0 {
            CpuBackend::new()
        } else {
            CpuBackend::with_threads(threads)?
        };
        let path = if weights_path.is_null() {
            segvol::weights::hub::official_weights(&mut |m| eprintln!("segvol: {m}"))?
        } else {
            PathBuf::from(str_arg(weights_path, "weights_path")?)
        };
        let engine = Engine::load(backend, &path)?;
        *out = Box::into_raw(Box::new(SegvolModel {
            engine: Arc::new(engine),
        }));
        Ok(())
    })
}

/// Releases a model (NULL is accepted). Sessions made from it stay valid.
#[no_mangle]
pub extern "C" fn segvol_model_free(model: *mut SegvolModel) {
    if !model.is_null() {
        // SAFETY: `model` came from `segvol_model_open` and is freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(model) })));
    }
}

/// The voxel counts `(i, j, k)` of a NIfTI CT, read from its header only:
/// the size of the buffers `segvol_segment_file` needs.
#[no_mangle]
pub extern "C" fn segvol_ct_dims(ct_path: *const c_char, dims: *mut usize) -> SegvolStatus {
    guard(|| {
        let path = str_arg(ct_path, "ct_path")?;
        let info = probe_ct(path.as_ref())?;
        out_slice(dims, 3, "dims")?.copy_from_slice(&info.dims);
        Ok(())
    })
}

fn request(p: &SegvolPrompts) -> Result<(Request, Options), Fail> {
    let mut req = Request::default();
    for (n, &t) in slice_arg(p.texts, p.n_texts, "texts")?.iter().enumerate() {
        req.texts
            .push(str_arg(t, &format!("texts[{n}]"))?.to_string());
    }
    let boxes = slice_arg(p.boxes, 6 * p.n_boxes, "boxes")?;
    for b in boxes.chunks_exact(6) {
        req = req.with_box([b[0], b[1], b[2], b[3], b[4], b[5]]);
    }
    let points = slice_arg(p.points, 4 * p.n_points, "points")?;
    for q in points.chunks_exact(4) {
        let positive = match q[3] {
            1.0 => true,
            0.0 => false,
            l => {
                return Err(invalid(format!(
                    "point label {l} is not 1 (positive) or 0 (negative)"
                )))
            }
        };
        req = req.with_point([q[0], q[1], q[2]], positive);
    }
    req.frame = Some(match p.world_frame {
        0 => Frame::Voxel,
        1 => Frame::World,
        f => {
            return Err(invalid(format!(
                "world_frame {f} is not 0 (voxel) or 1 (world)"
            )))
        }
    });
    let mut opts = Options::default();
    opts.zoom.seed = p.seed;
    opts.zoom.zoom_in = p.zoom_in != 0;
    Ok((req, opts))
}

/// Segments a NIfTI CT in one call and writes the label map into `labels`
/// (`labels_len` = the CT's voxel count, from `segvol_ct_dims`): 0 is
/// background, `c + 1` where category `c` wins. When `out_path` is not NULL
/// the label map is also written there as NIfTI with the CT's geometry
/// (atomically: a temporary file renamed into place).
#[no_mangle]
pub extern "C" fn segvol_segment_file(
    model: *const SegvolModel,
    ct_path: *const c_char,
    prompts: *const SegvolPrompts,
    labels: *mut u16,
    labels_len: usize,
    out_path: *const c_char,
) -> SegvolStatus {
    guard(|| {
        let model = ref_arg(model, "model")?;
        let path = str_arg(ct_path, "ct_path")?;
        let (req, opts) = request(ref_arg(prompts, "prompts")?)?;
        let out = if out_path.is_null() {
            None
        } else {
            Some(str_arg(out_path, "out_path")?)
        };
        // Checked before the work: a wrong buffer should not cost a segmentation.
        let n: usize = probe_ct(path.as_ref())?.dims.iter().product();
        if labels_len != n {
            return Err(invalid(format!(
                "labels has {labels_len} elements, the CT {path} has {n} voxels"
            )));
        }
        let dst = out_slice(labels, labels_len, "labels")?;
        req.category_count()?;
        if let Some(o) = out {
            segvol::io::write::check_output_path(o.as_ref(), path.as_ref())?;
        }
        let ct = segvol::io::nifti::read_ct(path.as_ref())?;
        let seg = model.engine.segment_volume(&ct, &req, &opts)?;
        if let Some(o) = out {
            seg.write_label_map(o.as_ref(), &ct)?;
        }
        dst.copy_from_slice(&seg.labels);
        Ok(())
    })
}

fn volume(voxels: *const f32, dims: *const usize, affine: *const f64) -> Result<CtVolume, Fail> {
    let d = slice_arg(dims, 3, "dims")?;
    let d = [d[0], d[1], d[2]];
    let n = d
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| invalid(format!("dims {d:?} overflow")))?;
    let data = slice_arg(voxels, n, "voxels")?.to_vec();
    let a = fixed::<16>(affine, "affine")?;
    let aff = std::array::from_fn(|r| std::array::from_fn(|c| a[4 * r + c]));
    Ok(CtVolume::from_array("voxels", d, data, aff)?)
}

/// Segments a CT held in memory: `voxels` has `dims[0] * dims[1] * dims[2]`
/// intensities (Hounsfield units) in file order, `affine` is the 4×4
/// voxel-to-world matrix, row-major (16 doubles). `labels` receives one label
/// per voxel (`labels_len` = the voxel count).
#[no_mangle]
pub extern "C" fn segvol_segment_volume(
    model: *const SegvolModel,
    voxels: *const f32,
    dims: *const usize,
    affine: *const f64,
    prompts: *const SegvolPrompts,
    labels: *mut u16,
    labels_len: usize,
) -> SegvolStatus {
    guard(|| {
        let model = ref_arg(model, "model")?;
        let (req, opts) = request(ref_arg(prompts, "prompts")?)?;
        let ct = volume(voxels, dims, affine)?;
        if labels_len != ct.len() {
            return Err(invalid(format!(
                "labels has {labels_len} elements, the volume has {} voxels",
                ct.len()
            )));
        }
        let dst = out_slice(labels, labels_len, "labels")?;
        let seg = model.engine.segment_volume(&ct, &req, &opts)?;
        dst.copy_from_slice(&seg.labels);
        Ok(())
    })
}

/// A new session on `model` (which it keeps alive). Release it with
/// `segvol_session_free`.
#[no_mangle]
pub extern "C" fn segvol_session_new(
    model: *const SegvolModel,
    out: *mut *mut SegvolSession,
) -> SegvolStatus {
    guard(|| {
        let out = mut_arg(out, "out")?;
        *out = std::ptr::null_mut();
        let model = ref_arg(model, "model")?;
        *out = Box::into_raw(Box::new(SegvolSession {
            session: Session::new(model.engine.clone()),
        }));
        Ok(())
    })
}

/// Releases a session and its embeddings (NULL is accepted).
#[no_mangle]
pub extern "C" fn segvol_session_free(session: *mut SegvolSession) {
    if !session.is_null() {
        // SAFETY: `session` came from `segvol_session_new` and is freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(session) })));
    }
}

/// Sets the session's image from a NIfTI file; clears prompts and mask.
#[no_mangle]
pub extern "C" fn segvol_session_set_image_file(
    session: *mut SegvolSession,
    ct_path: *const c_char,
) -> SegvolStatus {
    guard(|| {
        let s = mut_arg(session, "session")?;
        let path = str_arg(ct_path, "ct_path")?;
        Ok(s.session.set_image_file(path)?)
    })
}

/// Sets the session's image from memory (as `segvol_segment_volume`; the
/// voxels are copied); clears prompts and mask.
#[no_mangle]
pub extern "C" fn segvol_session_set_image(
    session: *mut SegvolSession,
    voxels: *const f32,
    dims: *const usize,
    affine: *const f64,
) -> SegvolStatus {
    guard(|| {
        let s = mut_arg(session, "session")?;
        let ct = volume(voxels, dims, affine)?;
        Ok(s.session.set_image(ct)?)
    })
}

/// Adds a click at voxel `(i, j, k)` (`at`: 3 doubles), positive when
/// `positive` is non-zero, and re-segments.
#[no_mangle]
pub extern "C" fn segvol_session_add_point(
    session: *mut SegvolSession,
    at: *const f64,
    positive: i32,
) -> SegvolStatus {
    guard(|| {
        let s = mut_arg(session, "session")?;
        let at = fixed::<3>(at, "at")?;
        s.session.add_point(at, positive != 0)?;
        Ok(())
    })
}

/// Sets the object's box (`corners`: `i0, j0, k0, i1, j1, k1`), replacing an
/// earlier one, and re-segments.
#[no_mangle]
pub extern "C" fn segvol_session_add_box(
    session: *mut SegvolSession,
    corners: *const f64,
) -> SegvolStatus {
    guard(|| {
        let s = mut_arg(session, "session")?;
        let c = fixed::<6>(corners, "corners")?;
        s.session.add_box(c)?;
        Ok(())
    })
}

/// Sets the object's name (`"liver"`), replacing an earlier one, and
/// re-segments.
#[no_mangle]
pub extern "C" fn segvol_session_add_text(
    session: *mut SegvolSession,
    name: *const c_char,
) -> SegvolStatus {
    guard(|| {
        let s = mut_arg(session, "session")?;
        let name = str_arg(name, "name")?;
        s.session.add_text(name)?;
        Ok(())
    })
}

/// Forgets the prompts and the mask; keeps the image and its embeddings.
#[no_mangle]
pub extern "C" fn segvol_session_reset(session: *mut SegvolSession) -> SegvolStatus {
    guard(|| {
        mut_arg(session, "session")?.session.reset();
        Ok(())
    })
}

/// Copies the current mask (1 = object, 0 = background, one byte per voxel
/// in file order) into `mask` (`mask_len` = the image's voxel count). An
/// error before the first prompt.
#[no_mangle]
pub extern "C" fn segvol_session_mask(
    session: *const SegvolSession,
    mask: *mut u8,
    mask_len: usize,
) -> SegvolStatus {
    guard(|| {
        let s = ref_arg(session, "session")?;
        let seg = s
            .session
            .mask()
            .ok_or_else(|| invalid("the session has no mask yet: add a prompt first"))?;
        if mask_len != seg.labels.len() {
            return Err(invalid(format!(
                "mask has {mask_len} elements, the image has {} voxels",
                seg.labels.len()
            )));
        }
        let dst = out_slice(mask, mask_len, "mask")?;
        for (d, &l) in dst.iter_mut().zip(&seg.labels) {
            *d = u8::from(l == 1);
        }
        Ok(())
    })
}
