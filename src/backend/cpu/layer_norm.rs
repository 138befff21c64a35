//! LayerNorms on the CPU, over the last axis and over a whole batch item.
//! Statistics are accumulated in f64: as exact as PyTorch's f32 cascade or
//! better, and cheap next to the matrix products.

use rayon::prelude::*;

use super::simd;
use super::tensor::scratch;
use super::{CpuBackend, CpuTensor};
use crate::backend::Activation;
use crate::error::Result;

/// `Backend::layer_norm` (the shapes checked by `shapes::layer_norm`).
pub(super) fn layer_norm(
    be: &CpuBackend,
    x: &CpuTensor,
    w: &CpuTensor,
    b: &CpuTensor,
    eps: f32,
) -> Result<CpuTensor> {
    let mut out = scratch(x.len());
    be.run(|| layer_norm_rows(x.data(), w.data(), b.data(), eps, &mut out));
    CpuTensor::from_vec(out, x.shape())
}

/// `Backend::layer_norm_item`, given `shapes::layer_norm_item`'s item size.
pub(super) fn layer_norm_item(
    be: &CpuBackend,
    item: usize,
    x: &CpuTensor,
    w: &CpuTensor,
    b: &CpuTensor,
    eps: f32,
    act: Activation,
) -> Result<CpuTensor> {
    let mut out = scratch(x.len());
    be.run(|| {
        for (o, xi) in out.chunks_mut(item).zip(x.data().chunks(item)) {
            layer_norm_item_into(xi, w.data(), b.data(), eps, act, o);
        }
    });
    CpuTensor::from_vec(out, x.shape())
}

/// Row-wise LayerNorm: `x` is `[rows, c]`.
fn layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let c = w.len();
    out.par_chunks_mut(c * 16)
        .zip(x.par_chunks(c * 16))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_mut(c).zip(x.chunks(c)) {
                simd::layer_norm_row(x, w, b, eps, o);
            }
        });
}

/// LayerNorm of a whole item (one mean and variance over all of `x`), then
/// the per-element affine and `act`.
fn layer_norm_item_into(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    eps: f32,
    act: Activation,
    out: &mut [f32],
) {
    const CHUNK: usize = 1 << 14;
    let n = x.len() as f64;
    // Partial sums collected in chunk order and added sequentially, so the
    // result does not depend on how rayon split the work.
    let ordered_sum = |f: &(dyn Fn(&[f32]) -> f64 + Sync)| -> f64 {
        let parts: Vec<f64> = x.par_chunks(CHUNK).map(f).collect();
        parts.iter().sum()
    };
    let mean = ordered_sum(&simd::sum) / n;
    let var = ordered_sum(&|c| simd::sq_dev_sum(c, mean)) / n;
    let rstd = (1.0 / (var + eps as f64).sqrt()) as f32;
    let mean = mean as f32;
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, o)| {
        let r = ci * CHUNK..ci * CHUNK + o.len();
        simd::normalize(&x[r.clone()], mean, rstd, &w[r.clone()], &b[r], o);
        simd::bias_act_inplace(o, None, act);
    });
}
