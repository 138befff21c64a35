//! Additions on the GPU (`add`, `add_broadcast` of `kernels/elementwise.cu`).

use super::{launch, CudaBackend, CudaTensor};
use crate::error::Result;

/// `Backend::add` (same shapes, `shapes::add`).
pub(super) fn add(be: &CudaBackend, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
    be.check_dtype(a, "add operand")?;
    be.check_dtype(b, "add operand")?;
    be.bind()?;
    let out = be.alloc(&a.shape)?;
    let n = out.numel();
    if n > 0 {
        launch!(
            be,
            be.kname("add"),
            be.cfg_1d(n),
            [a.ptr, b.ptr, out.ptr, n as i64]
        )?;
    }
    Ok(out)
}

/// `Backend::add_broadcast` (`shapes::add_broadcast`).
pub(super) fn add_broadcast(
    be: &CudaBackend,
    x: &CudaTensor,
    v: &CudaTensor,
) -> Result<CudaTensor> {
    let xs = &x.shape;
    be.check_dtype(x, "add_broadcast input")?;
    be.check_dtype(v, "add_broadcast vector")?;
    be.bind()?;
    let out = be.alloc(xs)?;
    let n = out.numel();
    if n > 0 {
        launch!(
            be,
            be.kname("add_broadcast"),
            be.cfg_1d(n),
            [x.ptr, v.ptr, out.ptr, n as i64, v.numel() as i64]
        )?;
    }
    Ok(out)
}

/// The kernels this family launches, all from `kernels/elementwise.cu`.
#[cfg(test)]
pub(super) fn kernel_names() -> (&'static str, Vec<String>) {
    super::typed_names("elementwise", &["add", "add_broadcast"])
}
