//! Multi-head attention: picks the tensor-core kernel (bf16, head dims
//! 32/48/64/96/128, 16-byte aligned operands) or the generic f32-arithmetic
//! kernel (parity mode, and anything the tensor-core one does not take).

use cudarc::driver::LaunchConfig;

use super::{check, launch, CudaBackend, CudaTensor, StorageType};
use crate::backend::{AttnOperand, AttnSpec};
use crate::error::{Error, Result};

/// Head dims with a tensor-core instantiation in kernels/attention.cu.
const MMA_HEAD_DIMS: [usize; 5] = [32, 48, 64, 96, 128];
/// Keys per tile of the tensor-core kernel (MMA_BK).
const MMA_BK: usize = 64;
/// Generic kernel geometry (GEN_BQ, GEN_BK, warps × rows).
const GEN_BQ: usize = 32;
const GEN_BK: usize = 32;
/// Largest head dim the generic kernel holds in registers (4 per lane).
const GEN_MAX_DH: usize = 128;

/// The tensor-core kernel for head dim `d` with `nw` warps per block.
fn mma_kernel(d: usize, nw: usize) -> String {
    format!("attn_mma_{d}_{nw}")
}

/// The generic kernel holding `dpl` head-dim values per lane.
fn generic_kernel(dtype: StorageType, dpl: usize) -> String {
    format!("attn_generic_{}_{dpl}", dtype.suffix())
}

struct Op {
    ptr: u64,
    ld: usize,
    col: usize,
}

/// `Backend::attention`, given the operands' row strides (`shapes::attention`).
pub(super) fn attention(
    be: &CudaBackend,
    ld: [usize; 3],
    q: AttnOperand<'_, CudaTensor>,
    k: AttnOperand<'_, CudaTensor>,
    v: AttnOperand<'_, CudaTensor>,
    s: &AttnSpec,
) -> Result<CudaTensor> {
    let width = s.heads * s.head_dim;
    let op = |o: &AttnOperand<'_, CudaTensor>, ld: usize, what: &str| -> Result<Op> {
        be.check_dtype(o.t, &format!("attention {what}"))?;
        Ok(Op {
            ptr: o.t.ptr,
            ld,
            col: o.col,
        })
    };
    let (qo, ko, vo) = (
        op(&q, ld[0], "q")?,
        op(&k, ld[1], "k")?,
        op(&v, ld[2], "v")?,
    );
    check(s.heads <= 65535 && s.batch <= 65535, || {
        format!("attention grid too large: {s:?}")
    })?;
    be.bind()?;
    let out = be.alloc(&[s.batch, s.q_len, width])?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let aligned = [&qo, &ko, &vo]
        .iter()
        .all(|o| o.ld % 8 == 0 && o.col % 8 == 0);
    let dims = [s.q_len, s.kv_len, s.heads, s.head_dim];
    let int = |v: usize| {
        i32::try_from(v).map_err(|_| Error::shape(format!("attention size {v} too large")))
    };
    let (ql, kl, h) = (int(dims[0])?, int(dims[1])?, int(dims[2])?);
    let (ldq, ldk, ldv) = (int(qo.ld)?, int(ko.ld)?, int(vo.ld)?);
    let (cq, ck, cv) = (int(qo.col)?, int(ko.col)?, int(vo.col)?);
    let causal = s.causal as i32;

    // (The tensor-core kernel takes the row max before scaling, so it
    // needs a positive scale; SegVol's is 1/√head_dim.)
    if be.dtype() == StorageType::Bf16
        && be.cc.0 >= 8
        && aligned
        && MMA_HEAD_DIMS.contains(&s.head_dim)
        && s.scale > 0.0
    {
        // One warp per 16 queries; a single warp when there are few
        // queries (the decoder's token→image attention has ~8).
        let nw = if s.q_len <= 16 { 1 } else { 4 };
        let bq = 16 * nw;
        let lds = s.head_dim + 8;
        let cfg = LaunchConfig {
            grid_dim: (s.q_len.div_ceil(bq) as u32, s.heads as u32, s.batch as u32),
            block_dim: (32 * nw as u32, 1, 1),
            shared_mem_bytes: ((bq + 4 * MMA_BK) * lds * 2) as u32,
        };
        let name = mma_kernel(s.head_dim, nw);
        let scale_log2 = s.scale * std::f32::consts::LOG2_E;
        launch!(
            be,
            name,
            cfg,
            [
                qo.ptr, ko.ptr, vo.ptr, out.ptr, ql, kl, h, ldq, ldk, ldv, cq, ck, cv, scale_log2,
                causal
            ]
        )?;
        return Ok(out);
    }

    check(s.head_dim <= GEN_MAX_DH, || {
        format!(
            "attention head dim {} is not supported (at most {GEN_MAX_DH})",
            s.head_dim
        )
    })?;
    let dpl = s.head_dim.div_ceil(32).max(1);
    let dp = s.head_dim.div_ceil(4) * 4;
    let smem = (GEN_BQ * dp + GEN_BK * (dp + 4) + GEN_BK * dp + GEN_BQ * GEN_BK) * 4;
    let cfg = LaunchConfig {
        grid_dim: (
            s.q_len.div_ceil(GEN_BQ) as u32,
            s.heads as u32,
            s.batch as u32,
        ),
        block_dim: (128, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let name = generic_kernel(be.dtype(), dpl);
    launch!(
        be,
        name,
        cfg,
        [
            qo.ptr,
            ko.ptr,
            vo.ptr,
            out.ptr,
            ql,
            kl,
            h,
            int(s.head_dim)?,
            ldq,
            ldk,
            ldv,
            cq,
            ck,
            cv,
            s.scale,
            causal
        ]
    )?;
    Ok(out)
}

/// The kernels this family launches, all from `kernels/attention.cu`.
#[cfg(test)]
pub(super) fn kernel_names() -> (&'static str, Vec<String>) {
    let mut names: Vec<String> = MMA_HEAD_DIMS
        .iter()
        .flat_map(|&d| [1, 4].map(|nw| mma_kernel(d, nw)))
        .collect();
    for t in super::DTYPES {
        names.extend((1..=GEN_MAX_DH / 32).map(|dpl| generic_kernel(t, dpl)));
    }
    ("attention", names)
}
