//! ConvTranspose3d k2 s2 on channels-last data, on the GPU: one GEMM
//! `[B·S, Cin]·[Cin, Cout·8]` then `convt_scatter` of
//! `kernels/conv_transpose.cu` (bias and activation fused).

use cudarc::driver::LaunchConfig;

use super::gemm::Gemm;
use super::kernels::act_code;
use super::{check, i32_of, launch, CudaBackend, CudaTensor};
use crate::backend::Activation;
use crate::error::{Error, Result};

/// `Backend::conv_transpose_k2s2`, given `shapes::conv_transpose`'s (batch,
/// voxels, cin, cout).
pub(super) fn conv_transpose_k2s2(
    be: &CudaBackend,
    (batch, vox, cin, cout): (usize, usize, usize, usize),
    x: &CudaTensor,
    grid: [usize; 3],
    w: &CudaTensor,
    b: &CudaTensor,
    act: Activation,
) -> Result<CudaTensor> {
    be.check_dtype(x, "conv_transpose input")?;
    be.check_dtype(w, "conv_transpose weight")?;
    be.check_dtype(b, "conv_transpose bias")?;
    // The scatter kernel holds one voxel's 8·Cout values (stride 9 per
    // channel) in shared memory.
    let smem = cout * 9 * 4;
    check(smem <= 48 * 1024, || {
        format!("conv_transpose with {cout} output channels (at most 1365)")
    })?;
    be.bind()?;
    let out = be.alloc(&[batch, 8 * vox, cout])?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let rows = batch * vox;
    check(rows <= i32::MAX as usize, || {
        format!("conv_transpose over {rows} voxels")
    })?;
    let tmp = be.alloc(&[rows, cout * 8])?;
    // w as [Cin, Cout·8] row-major is PyTorch's (in, out, kd, kh, kw).
    let g = Gemm::single(rows, cout * 8, cin, false, x.ptr, w.ptr, tmp.ptr);
    if cin == 0 {
        unsafe {
            cudarc::driver::result::memset_d8_async(tmp.ptr, 0, tmp.nbytes(), be.stream.cu_stream())
        }
        .map_err(|e| Error::Cuda(format!("zeroing a Cin=0 product: {e}")))?;
    } else {
        be.blas()?.gemm(&g, be.dtype())?;
    }
    let cfg = LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    launch!(
        be,
        be.kname("convt_scatter"),
        cfg,
        [
            tmp.ptr,
            b.ptr,
            out.ptr,
            i32_of(grid[0], "grid d")?,
            i32_of(grid[1], "grid h")?,
            i32_of(grid[2], "grid w")?,
            cout as i32,
            act_code(act)
        ]
    )?;
    Ok(out)
}

/// The kernels this family launches, all from `kernels/conv_transpose.cu`.
#[cfg(test)]
pub(super) fn kernel_names() -> (&'static str, Vec<String>) {
    super::typed_names("conv_transpose", &["convt_scatter"])
}
