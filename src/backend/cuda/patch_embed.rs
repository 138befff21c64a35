//! MONAI's perceptron patch embedding on the GPU: `im2col` of
//! `kernels/patch_embed.cu`, one GEMM, then the Linear family's epilogue
//! adding the bias and the position embedding.

use super::gemm::Gemm;
use super::linear::epilogue;
use super::{i32_of, launch, numel, CudaBackend, CudaTensor};
use crate::backend::Activation;
use crate::error::Result;

/// `Backend::patch_embed`, given `shapes::patch_embed`'s (batch, image dims,
/// tokens, channels).
pub(super) fn patch_embed(
    be: &CudaBackend,
    (batch, dims, n, c): (usize, [usize; 3], usize, usize),
    image: &CudaTensor,
    w: &CudaTensor,
    b: &CudaTensor,
    pos: &CudaTensor,
    patch: [usize; 3],
) -> Result<CudaTensor> {
    let p = numel(&patch);
    for (t, what) in [
        (image, "patch_embed image"),
        (w, "patch_embed weight"),
        (b, "patch_embed bias"),
        (pos, "position embedding"),
    ] {
        be.check_dtype(t, what)?;
    }
    be.bind()?;
    let out = be.alloc(&[batch, n, c])?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let cols = be.alloc(&[batch * n, p])?;
    launch!(
        be,
        be.kname("im2col"),
        be.cfg_1d(cols.numel()),
        [
            image.ptr,
            cols.ptr,
            i32_of(batch, "batch")?,
            i32_of(dims[0], "D")?,
            i32_of(dims[1], "H")?,
            i32_of(dims[2], "W")?,
            patch[0] as i32,
            patch[1] as i32,
            patch[2] as i32
        ]
    )?;
    be.blas()?.gemm(
        &Gemm::single(batch * n, c, p, true, cols.ptr, w.ptr, out.ptr),
        be.dtype(),
    )?;
    // Bias and position embedding (period: one item) in one pass.
    epilogue(be, &out, Some(b), Some(pos), Activation::None)?;
    Ok(out)
}

/// The kernels this family launches, all from `kernels/patch_embed.cu`.
#[cfg(test)]
pub(super) fn kernel_names() -> (&'static str, Vec<String>) {
    super::typed_names("patch_embed", &["im2col"])
}
