//! Additions on the CPU: `add` and `add_broadcast`, in parallel chunks.

use rayon::prelude::*;

use super::tensor::scratch;
use super::{CpuBackend, CpuTensor};
use crate::error::Result;

/// `Backend::add` (same shapes, `shapes::add`).
pub(super) fn add(be: &CpuBackend, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
    let out = be.run(|| {
        let mut out = scratch(a.len());
        out.par_chunks_mut(1 << 14)
            .zip(a.data().par_chunks(1 << 14))
            .zip(b.data().par_chunks(1 << 14))
            .for_each(|((o, a), b)| {
                for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                    *o = a + b;
                }
            });
        out
    });
    CpuTensor::from_vec(out, a.shape())
}

/// `Backend::add_broadcast` (v's shape a suffix of x's, `shapes::add_broadcast`).
pub(super) fn add_broadcast(be: &CpuBackend, x: &CpuTensor, v: &CpuTensor) -> Result<CpuTensor> {
    let xs = x.shape();
    let n = v.len();
    let out = be.run(|| {
        let mut out = scratch(x.len());
        out.par_chunks_mut(n)
            .zip(x.data().par_chunks(n))
            .for_each(|(o, x)| {
                for ((o, x), v) in o.iter_mut().zip(x).zip(v.data()) {
                    *o = x + v;
                }
            });
        out
    });
    CpuTensor::from_vec(out, xs)
}
