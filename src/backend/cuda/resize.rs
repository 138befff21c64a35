//! `F.interpolate` on the GPU: the per-axis source indices and weights come
//! from `backend::interp` (the host code the CPU backend runs), and the
//! `resize_*` kernels of `kernels/resize.cu` only gather.

use cudarc::driver::DevicePtr;

use super::{i32_of, launch, CudaBackend, CudaTensor};
use crate::backend::interp::{linear_taps, nearest_index};
use crate::backend::Interp;
use crate::error::{Error, Result};

/// `Backend::resize` of a volume with input dims `inp` (`shapes::resize`).
pub(super) fn resize(
    be: &CudaBackend,
    inp: [usize; 3],
    x: &CudaTensor,
    out_dims: [usize; 3],
    mode: Interp,
) -> Result<CudaTensor> {
    let s = &x.shape;
    be.check_dtype(x, "resize input")?;
    be.bind()?;
    let out = be.alloc(&[s[0], s[1], out_dims[0], out_dims[1], out_dims[2]])?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let planes = (s[0] * s[1]) as i64;
    let geo = [
        i32_of(inp[0], "D")?,
        i32_of(inp[1], "H")?,
        i32_of(inp[2], "W")?,
        i32_of(out_dims[0], "out D")?,
        i32_of(out_dims[1], "out H")?,
        i32_of(out_dims[2], "out W")?,
    ];
    let cfg = be.cfg_1d(out.numel());
    let upload_i32 = |v: &[i32]| {
        be.stream
            .clone_htod(v)
            .map_err(|e| Error::Cuda(format!("resize tables: {e}")))
    };
    match mode {
        Interp::Nearest | Interp::NearestExact => {
            let idx: Vec<i32> = (0..3)
                .flat_map(|a| {
                    (0..out_dims[a])
                        .map(move |i| nearest_index(mode, i, inp[a], out_dims[a]) as i32)
                })
                .collect();
            let idx_d = upload_i32(&idx)?;
            let (ip, _u) = idx_d.device_ptr(&be.stream);
            launch!(
                be,
                be.kname("resize_nearest"),
                cfg,
                [x.ptr, out.ptr, planes, geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], ip]
            )?;
        }
        Interp::Trilinear => {
            let mut idx = Vec::new();
            let mut lam = Vec::new();
            for a in 0..3 {
                for i in 0..out_dims[a] {
                    let (i0, i1, l0, l1) = linear_taps(i, inp[a], out_dims[a]);
                    idx.extend([i0 as i32, i1 as i32]);
                    lam.extend([l0, l1]);
                }
            }
            let idx_d = upload_i32(&idx)?;
            let lam_d = be
                .stream
                .clone_htod(&lam)
                .map_err(|e| Error::Cuda(format!("resize tables: {e}")))?;
            let (ip, _u1) = idx_d.device_ptr(&be.stream);
            let (lp, _u2) = lam_d.device_ptr(&be.stream);
            launch!(
                be,
                be.kname("resize_trilinear"),
                cfg,
                [x.ptr, out.ptr, planes, geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], ip, lp]
            )?;
        }
    }
    // The tables are freed in stream order, after the kernel has read them.
    Ok(out)
}

/// The kernels this family launches, all from `kernels/resize.cu`.
#[cfg(test)]
pub(super) fn kernel_names() -> (&'static str, Vec<String>) {
    super::typed_names("resize", &["resize_nearest", "resize_trilinear"])
}
