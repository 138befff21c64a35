//! The Linear family on the GPU: `linear` (a cuBLAS / cuBLASLt product,
//! `gemm.rs`, with bias, activation and residual fused or finished by the
//! `epilogue` kernels of `kernels/linear.cu`) and `bmm_nt` (a strided
//! batched product).

use super::gemm::{Gemm, LtEpilogue};
use super::kernels::act_code;
use super::{launch, CudaBackend, CudaTensor, StorageType};
use crate::backend::Activation;
use crate::error::Result;

/// `Backend::linear`, given `shapes::linear`'s (M, K, N, result shape).
pub(super) fn linear(
    be: &CudaBackend,
    (m, k, n, shape): (usize, usize, usize, Vec<usize>),
    x: &CudaTensor,
    w: &CudaTensor,
    b: Option<&CudaTensor>,
    act: Activation,
    residual: Option<&CudaTensor>,
) -> Result<CudaTensor> {
    if let Some(b) = b {
        be.check_dtype(b, "linear bias")?;
    }
    if let Some(r) = residual {
        be.check_dtype(r, "linear residual")?;
    }
    be.check_dtype(x, "linear input")?;
    be.check_dtype(w, "linear weight")?;
    be.bind()?;
    let out = be.alloc(&shape)?;
    if m == 0 || n == 0 {
        return Ok(out);
    }
    let g = Gemm::single(m, n, k, true, x.ptr, w.ptr, out.ptr);
    if k > 0 && be.dtype() == StorageType::Bf16 && be.options.cublaslt {
        // Lt finishes bias, ReLU and the residual itself; erf-GELU and
        // quick_gelu (its GELU epilogue is the tanh form) follow in place.
        let ep = LtEpilogue {
            bias: b.map(|b| b.ptr),
            relu: act == Activation::Relu,
            residual: residual.map(|r| r.ptr),
        };
        if be.blas()?.lt_gemm(&g, &ep, &be.stream)? {
            if matches!(act, Activation::Gelu | Activation::QuickGelu) {
                epilogue(be, &out, None, None, act)?;
            }
            return Ok(out);
        }
    }
    product(be, &g)?;
    if b.is_some() || act != Activation::None || residual.is_some() {
        epilogue(be, &out, b, residual, act)?;
    }
    Ok(out)
}

/// The bf16 epilogue eight elements at a time.
const EPILOGUE_X8: &str = "epilogue_bf16_x8";

/// Plain product into g.out (zeros when K = 0).
fn product(be: &CudaBackend, g: &Gemm) -> Result<()> {
    if g.k == 0 {
        let bytes = g.m * g.n * g.batch.max(1) * be.dtype().size();
        return unsafe {
            cudarc::driver::result::memset_d8_async(g.out, 0, bytes, be.stream.cu_stream())
        }
        .map_err(|e| crate::error::Error::Cuda(format!("zeroing a K=0 product: {e}")));
    }
    be.blas()?.gemm(g, be.dtype())
}

/// In place: `out = act(out + bias[col]) + add[i mod add.numel()]`.
pub(super) fn epilogue(
    be: &CudaBackend,
    out: &CudaTensor,
    bias: Option<&CudaTensor>,
    add: Option<&CudaTensor>,
    act: Activation,
) -> Result<()> {
    let n = out.numel();
    let cols = *out.shape.last().unwrap_or(&1);
    let period = add.map_or(1, |a| a.numel()).max(1);
    let aligned = |t: Option<&CudaTensor>| t.is_none_or(|t| t.ptr % 16 == 0);
    if out.dtype == StorageType::Bf16
        && n % 8 == 0
        && cols % 8 == 0
        && (add.is_none() || period % 8 == 0)
        && n / 8 < i32::MAX as usize
        && aligned(Some(out))
        && aligned(bias)
        && aligned(add)
    {
        // Eight elements per thread and step (16-byte accesses).
        return launch!(
            be,
            EPILOGUE_X8,
            be.cfg_1d(n / 8),
            [
                out.ptr,
                bias.map_or(0u64, |b| b.ptr),
                add.map_or(0u64, |a| a.ptr),
                out.ptr,
                (n / 8) as i32,
                (cols / 8) as i32,
                (period / 8).max(1) as i32,
                act_code(act)
            ]
        );
    }
    launch!(
        be,
        be.kname("epilogue"),
        be.cfg_1d(n),
        [
            out.ptr,
            bias.map_or(0u64, |b| b.ptr),
            add.map_or(0u64, |a| a.ptr),
            out.ptr,
            n as i64,
            cols.max(1) as i32,
            period as i64,
            act_code(act)
        ]
    )
}

/// `Backend::bmm_nt`, given `shapes::bmm_nt`'s (B, M, K, N).
pub(super) fn bmm_nt(
    be: &CudaBackend,
    (bn, m, k, n): (usize, usize, usize, usize),
    x: &CudaTensor,
    w: &CudaTensor,
) -> Result<CudaTensor> {
    be.check_dtype(x, "bmm_nt input")?;
    be.check_dtype(w, "bmm_nt weight")?;
    be.bind()?;
    let out = be.alloc(&[bn, m, n])?;
    if bn == 0 || m == 0 || n == 0 {
        return Ok(out);
    }
    product(
        be,
        &Gemm {
            m,
            n,
            k,
            w_nk: true,
            x: x.ptr,
            w: w.ptr,
            out: out.ptr,
            batch: bn,
            stride_x: m * k,
            stride_w: n * k,
            stride_out: m * n,
        },
    )?;
    Ok(out)
}

/// The kernels this family launches, all from `kernels/linear.cu`.
#[cfg(test)]
pub(super) fn kernel_names() -> (&'static str, Vec<String>) {
    let mut names: Vec<String> = super::DTYPES
        .iter()
        .map(|&t| super::typed("epilogue", t))
        .collect();
    names.push(EPILOGUE_X8.to_string());
    ("linear", names)
}
