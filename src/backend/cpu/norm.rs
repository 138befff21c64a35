//! LayerNorms. Statistics are accumulated in f64: as exact as PyTorch's f32
//! cascade or better, and cheap next to the matrix products.

use rayon::prelude::*;

use super::simd;
use crate::backend::Activation;

/// Row-wise LayerNorm: `x` is `[rows, c]`.
pub fn layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
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
pub fn layer_norm_item(
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
