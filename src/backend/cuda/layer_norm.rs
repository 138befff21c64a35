//! LayerNorms on the GPU (`kernels/layer_norm.cu`): over the last axis
//! (`ln_rows_*`), and over a whole batch item (`ln_item_*`, two passes with
//! f64 partial sums, affine and activation fused).

use cudarc::driver::{DevicePtr, LaunchConfig};

use super::kernels::act_code;
use super::{check, launch, CudaBackend, CudaTensor, StorageType};
use crate::backend::Activation;
use crate::error::Result;

/// The warp-per-row kernel holding `npl` values per lane.
fn rows_kernel(dtype: StorageType, npl: usize) -> String {
    format!("ln_rows_{}_{npl}", dtype.suffix())
}

/// `Backend::layer_norm` over rows of `c` values.
pub(super) fn layer_norm(
    be: &CudaBackend,
    c: usize,
    x: &CudaTensor,
    w: &CudaTensor,
    b: &CudaTensor,
    eps: f32,
) -> Result<CudaTensor> {
    be.check_dtype(x, "layer_norm input")?;
    be.check_dtype(w, "layer_norm weight")?;
    be.check_dtype(b, "layer_norm bias")?;
    be.bind()?;
    let out = be.alloc(&x.shape)?;
    if c == 0 || out.numel() == 0 {
        return Ok(out);
    }
    let rows = out.numel() / c;
    let args = (x.ptr, w.ptr, b.ptr, out.ptr);
    // Rows up to 1024 live in one warp's registers; longer ones take a
    // block each.
    let npl = match c {
        0..=128 => Some(4),
        129..=256 => Some(8),
        257..=512 => Some(16),
        513..=1024 => Some(32),
        _ => None,
    };
    match npl {
        Some(npl) => {
            let cfg = LaunchConfig {
                grid_dim: (rows.div_ceil(8) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let name = rows_kernel(be.dtype(), npl);
            launch!(
                be,
                name,
                cfg,
                [args.0, args.1, args.2, args.3, rows as i32, c as i32, eps]
            )?;
        }
        None => {
            let cfg = LaunchConfig {
                grid_dim: (rows as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            launch!(
                be,
                be.kname("ln_rows_block"),
                cfg,
                [args.0, args.1, args.2, args.3, c as i32, eps]
            )?;
        }
    }
    Ok(out)
}

/// `Backend::layer_norm_item` over items of `item` values.
pub(super) fn layer_norm_item(
    be: &CudaBackend,
    item: usize,
    x: &CudaTensor,
    w: &CudaTensor,
    b: &CudaTensor,
    eps: f32,
    act: Activation,
) -> Result<CudaTensor> {
    let s = &x.shape;
    check(s[0] <= 65535, || {
        format!("layer_norm_item over {} items (at most 65535)", s[0])
    })?;
    be.check_dtype(x, "layer_norm_item input")?;
    be.check_dtype(w, "layer_norm_item weight")?;
    be.check_dtype(b, "layer_norm_item bias")?;
    be.bind()?;
    let out = be.alloc(s)?;
    let items = s[0];
    if items == 0 || item == 0 {
        return Ok(out);
    }
    // Enough blocks to fill the device a few times over; each block's
    // partial sum covers item / (G·256) values per thread.
    let g = item.div_ceil(2048).clamp(1, 4 * be.sm_count);
    let part1 = be.alloc_bytes(items * g * 8)?;
    let part2 = be.alloc_bytes(items * g * 8)?;
    let (p1, _u1) = part1.device_ptr(&be.stream);
    let (p2, _u2) = part2.device_ptr(&be.stream);
    let cfg = LaunchConfig {
        grid_dim: (g as u32, items as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let n = item as i64;
    launch!(be, be.kname("ln_item_sum"), cfg, [x.ptr, n, p1])?;
    launch!(be, be.kname("ln_item_sqdev"), cfg, [x.ptr, n, p1, p2])?;
    launch!(
        be,
        be.kname("ln_item_apply"),
        cfg,
        [x.ptr, w.ptr, b.ptr, out.ptr, n, p1, p2, eps, act_code(act)]
    )?;
    Ok(out)
}

/// The kernels this family launches, all from `kernels/layer_norm.cu`.
#[cfg(test)]
pub(super) fn kernel_names() -> (&'static str, Vec<String>) {
    let mut names = vec![];
    for t in super::DTYPES {
        names.extend([4, 8, 16, 32].map(|npl| rows_kernel(t, npl)));
        for base in [
            "ln_rows_block",
            "ln_item_sum",
            "ln_item_sqdev",
            "ln_item_apply",
        ] {
            names.push(super::typed(base, t));
        }
    }
    ("layer_norm", names)
}
