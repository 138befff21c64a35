//! The Linear family on the CPU: `linear` (one parallel GEMM with bias,
//! activation and residual fused per block of rows, `gemm.rs`) and `bmm_nt`.

use super::gemm::{self, MatRef};
use super::simd;
use super::tensor::scratch;
use super::{CpuBackend, CpuTensor};
use crate::backend::Activation;
use crate::error::Result;

/// `Backend::linear`, given `shapes::linear`'s (M, K, N, result shape).
pub(super) fn linear(
    be: &CpuBackend,
    (m, k, n, shape): (usize, usize, usize, Vec<usize>),
    x: &CpuTensor,
    w: &CpuTensor,
    b: Option<&CpuTensor>,
    act: Activation,
    residual: Option<&CpuTensor>,
) -> Result<CpuTensor> {
    let bias = b.map(|b| b.data());
    let out = be.run(|| {
        // Fully written: by the product (beta = 0) or by `init`.
        let mut out = scratch(m * n);
        // Both hooks run per block of rows, next to that block's product,
        // so C is touched while it is in cache: with a residual, C starts
        // as residual + bias and the product accumulates into it;
        // otherwise bias and activation follow the product.
        let init = |r0: usize, c: &mut [f32]| {
            let r = &residual.expect("init only with a residual").data()[r0 * n..];
            for (o, r) in c.chunks_mut(n).zip(r.chunks(n)) {
                o.copy_from_slice(r);
                if let Some(b) = bias {
                    simd::bias_act_inplace(o, Some(b), Activation::None);
                }
            }
        };
        let epilogue = |_r0: usize, c: &mut [f32]| {
            for row in c.chunks_mut(n) {
                simd::bias_act_inplace(row, bias, act);
            }
        };
        let (beta, pre, post): (f32, Option<gemm::RowsFn<'_>>, Option<gemm::RowsFn<'_>>) =
            match residual {
                Some(_) => (1.0, Some(&init), None),
                None if bias.is_some() || act != Activation::None => (0.0, None, Some(&epilogue)),
                None => (0.0, None, None),
            };
        gemm::sgemm_fused(
            m,
            k,
            n,
            MatRef::rows(x.data(), 0, k),
            MatRef::transposed(w.data(), 0, k),
            beta,
            &mut out,
            n,
            pre,
            post,
        );
        out
    });
    CpuTensor::from_vec(out, &shape)
}

/// `Backend::bmm_nt`, given `shapes::bmm_nt`'s (B, M, K, N).
pub(super) fn bmm_nt(
    be: &CpuBackend,
    (bn, m, k, n): (usize, usize, usize, usize),
    x: &CpuTensor,
    w: &CpuTensor,
) -> Result<CpuTensor> {
    let out = be.run(|| {
        let mut out = scratch(bn * m * n);
        for (bi, o) in out.chunks_mut(m * n).enumerate() {
            gemm::sgemm(
                m,
                k,
                n,
                MatRef::rows(x.data(), bi * m * k, k),
                MatRef::transposed(w.data(), bi * n * k, k),
                0.0,
                o,
                n,
            );
        }
        out
    });
    CpuTensor::from_vec(out, &[bn, m, n])
}
