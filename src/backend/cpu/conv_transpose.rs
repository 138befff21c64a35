//! ConvTranspose3d k2 s2 on channels-last data, on the CPU: per block of
//! input rows, one GEMM against the weight reordered to `[Cin, 8, Cout]`,
//! then a scatter to the 2×2×2 output voxels with bias and activation.

use rayon::prelude::*;

use super::gemm::{sgemm_serial, MatRef};
use super::simd;
use super::tensor::{recycle, scratch};
use super::{CpuBackend, CpuTensor, SendPtr};
use crate::backend::Activation;
use crate::error::Result;

/// `Backend::conv_transpose_k2s2`, given `shapes::conv_transpose`'s (batch,
/// voxels, cin, cout).
pub(super) fn conv_transpose_k2s2(
    be: &CpuBackend,
    (batch, voxels, cin, cout): (usize, usize, usize, usize),
    x: &CpuTensor,
    grid: [usize; 3],
    w: &CpuTensor,
    b: &CpuTensor,
    act: Activation,
) -> Result<CpuTensor> {
    let mut out = scratch(batch * 8 * voxels * cout);
    be.run(|| {
        conv_transpose_k2s2_into(
            x.data(),
            batch,
            grid,
            cin,
            w.data(),
            b.data(),
            act,
            &mut out,
        )
    });
    CpuTensor::from_vec(out, &[batch, 8 * voxels, cout])
}

/// Input voxels per conv_transpose task: enough rows for the product to
/// amortise packing the weight (cin × 8·cout), few enough to keep the
/// task's product in L2 and give every thread several tasks.
const CONVT_VOXELS: usize = 256;

/// ConvTranspose3d k2 s2 on channels-last data into `out [B, 8·S, Cout]`.
#[allow(clippy::too_many_arguments)]
fn conv_transpose_k2s2_into(
    x: &[f32],
    batch: usize,
    grid: [usize; 3],
    cin: usize,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    let cout = bias.len();
    let [gd, gh, gw] = grid;
    let s = gd * gh * gw;
    let (oh, ow) = (2 * gh, 2 * gw);
    let n8 = cout * 8;
    // PyTorch's [cin, cout, 2, 2, 2] reordered to [cin, (kd, kh, kw), cout]:
    // each of a voxel's 8 outputs is then a contiguous run of the product.
    // Per output element the product's sum over cin is unchanged.
    let mut wk = scratch(cin * n8);
    wk.par_chunks_mut(n8)
        .zip(w.par_chunks(n8))
        .for_each(|(dst, src)| {
            for co in 0..cout {
                for kk in 0..8 {
                    dst[kk * cout + co] = src[co * 8 + kk];
                }
            }
        });
    // One task per block of whole input rows (fixed b, z, y): its outputs
    // are disjoint from every other task's.
    let rows_per_task = (CONVT_VOXELS / gw.max(1)).max(1);
    let row_blocks = (gd * gh).div_ceil(rows_per_task);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let wkr = &wk[..];
    (0..batch * row_blocks)
        .into_par_iter()
        .for_each_init(Vec::new, |tmp: &mut Vec<f32>, t| {
            let bi = t / row_blocks;
            let r0 = (t % row_blocks) * rows_per_task;
            let rows = rows_per_task.min(gd * gh - r0);
            let vox = rows * gw;
            tmp.resize(vox * n8, 0.0);
            sgemm_serial(
                vox,
                cin,
                n8,
                MatRef::rows(x, (bi * s + r0 * gw) * cin, cin),
                MatRef::rows(wkr, 0, n8),
                0.0,
                tmp,
                n8,
            );
            for (v, t) in tmp.chunks(n8).enumerate() {
                let r = r0 + v / gw;
                let (z, y, xx) = (r / gh, r % gh, v % gw);
                for kk in 0..8 {
                    let (kd, kh, kw) = (kk >> 2, (kk >> 1) & 1, kk & 1);
                    let opos = ((2 * z + kd) * oh + 2 * y + kh) * ow + 2 * xx + kw;
                    let dst = (bi * 8 * s + opos) * cout;
                    // SAFETY: (bi, opos) is written by this task only.
                    let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(dst), cout) };
                    o.copy_from_slice(&t[kk * cout..(kk + 1) * cout]);
                    simd::bias_act_inplace(o, Some(bias), act);
                }
            }
        });
    recycle(wk);
}
