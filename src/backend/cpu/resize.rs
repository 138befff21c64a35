//! `F.interpolate` on the CPU: the host resize of `backend::interp` (shared
//! with the pipeline, and the source of the CUDA kernels' index tables) run
//! on the backend's pool.

use super::tensor::scratch;
use super::{CpuBackend, CpuTensor};
use crate::backend::interp;
use crate::backend::shapes::numel;
use crate::backend::Interp;
use crate::error::Result;

/// `Backend::resize`, given `shapes::resize`'s (planes, input dims).
pub(super) fn resize(
    be: &CpuBackend,
    (planes, inp): (usize, [usize; 3]),
    x: &CpuTensor,
    out: [usize; 3],
    mode: Interp,
) -> Result<CpuTensor> {
    let s = x.shape();
    let mut o = scratch(planes * numel(&out));
    be.run(|| interp::resize(x.data(), planes, inp, out, mode, &mut o));
    CpuTensor::from_vec(o, &[s[0], s[1], out[0], out[1], out[2]])
}
