//! MONAI's perceptron patch embedding on the CPU: im2col, then one GEMM
//! into an output that starts as bias + position embedding.

use rayon::prelude::*;

use super::gemm::{sgemm, MatRef};
use super::tensor::{recycle, scratch};
use super::{CpuBackend, CpuTensor};
use crate::error::Result;

/// `Backend::patch_embed`, given `shapes::patch_embed`'s (batch, image dims,
/// tokens, channels).
pub(super) fn patch_embed(
    be: &CpuBackend,
    (batch, dims, n, c): (usize, [usize; 3], usize, usize),
    image: &CpuTensor,
    w: &CpuTensor,
    b: &CpuTensor,
    pos: &CpuTensor,
    patch: [usize; 3],
) -> Result<CpuTensor> {
    let mut out = scratch(batch * n * c);
    be.run(|| {
        patch_embed_into(
            image.data(),
            dims,
            batch,
            w.data(),
            b.data(),
            pos.data(),
            patch,
            &mut out,
        )
    });
    CpuTensor::from_vec(out, &[batch, n, c])
}

/// image `[B, 1, D, H, W]` → `out [B, N, C]`.
#[allow(clippy::too_many_arguments)]
fn patch_embed_into(
    image: &[f32],
    dims: [usize; 3],
    batch: usize,
    w: &[f32],
    b: &[f32],
    pos: &[f32],
    patch: [usize; 3],
    out: &mut [f32],
) {
    let [d, h, wd] = dims;
    let [pd, ph, pw] = patch;
    let grid = [d / pd, h / ph, wd / pw];
    let n = grid[0] * grid[1] * grid[2];
    let p = pd * ph * pw;
    let c = b.len();
    // im2col: one row of p voxels per token, C order (pd, ph, pw).
    let mut cols = scratch(batch * n * p);
    cols.par_chunks_mut(p).enumerate().for_each(|(row, dst)| {
        let bi = row / n;
        let t = row % n;
        let (ga, gb, gc) = (
            t / (grid[1] * grid[2]),
            (t / grid[2]) % grid[1],
            t % grid[2],
        );
        let img = &image[bi * d * h * wd..];
        for i in 0..pd {
            for j in 0..ph {
                let src = ((ga * pd + i) * h + gb * ph + j) * wd + gc * pw;
                dst[(i * ph + j) * pw..(i * ph + j + 1) * pw].copy_from_slice(&img[src..src + pw]);
            }
        }
    });
    // out starts as bias + position embedding, then accumulates the product.
    out.par_chunks_mut(c).enumerate().for_each(|(row, o)| {
        let t = row % n;
        for k in 0..c {
            o[k] = b[k] + pos[t * c + k];
        }
    });
    sgemm(
        batch * n,
        p,
        c,
        MatRef::rows(&cols, 0, p),
        MatRef::transposed(w, 0, p),
        1.0,
        out,
        c,
    );
    recycle(cols);
}
