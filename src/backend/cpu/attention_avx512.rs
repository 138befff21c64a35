//! Non-causal attention with AVX-512 register tiles, streaming keys with
//! the online softmax like [`super::attention`], but without sgemm: the
//! generic path spends a fifth of its time packing Q, K, P and V for every
//! block product (docs/PERF.md). Here only Q is rearranged, once per task.
//!
//! Everything runs transposed, with 32 queries across the lanes of two
//! registers: scores are `Sᵀ[key][query]`, the softmax statistics are vectors
//! over queries (no horizontal reductions), and the output is accumulated as
//! `Oᵀ[dim][query]`. K and V are read in place (one broadcast per element),
//! so the packed qkv tensor needs no copy.
//!
//! Per output element the arithmetic is that of the generic path: scores are
//! dot products over the head dimension in order, scaled after the product
//! (in the exponent's FMA);
//! each key block's `P·V` is summed from zero and then added to the running
//! output, which the online softmax rescales.

// The whole module is compiled only under cfg(segvol_avx512), which build.rs
// sets for compilers from Rust 1.89 on, where these intrinsics are stable.
#![allow(clippy::incompatible_msrv)]

use super::SendPtr;
use std::arch::x86_64::*;

use rayon::prelude::*;

use super::attention::Operand;
use super::simd::lanes::F32x16;
use super::simd::math::exp;
use crate::backend::AttnSpec;

/// Queries per panel: two registers of 16 lanes.
const PANEL: usize = 32;
/// Keys per micro-tile of the score product (16 accumulators).
const JT: usize = 8;
/// Head-dimension columns per micro-tile of the value product.
const CT: usize = 8;

/// Block sizes of the fused kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusedTiling {
    /// Panels (of 32 queries) per task.
    pub panels: usize,
    /// Keys per streamed block.
    pub k_block: usize,
}

impl FusedTiling {
    /// From the sweep in `tools/cpu_attention_tiling.rs` (docs/PERF.md):
    /// a block of 48 keys (12 KB of K, 12 KB of V) stays in L1 while 16
    /// panels (512 queries) use it; the ViT then has 48 tasks.
    pub const DEFAULT: FusedTiling = FusedTiling {
        panels: 16,
        k_block: 48,
    };
}

/// Whether this CPU runs the kernel.
pub fn supported() -> bool {
    super::simd::Isa::Avx512.supported()
}

/// Writes `out [B, q_len, heads·head_dim]` for non-causal attention.
/// Panics if the CPU lacks AVX-512F (check [`supported`]) or `s.causal`.
pub fn attention(
    q: Operand<'_>,
    k: Operand<'_>,
    v: Operand<'_>,
    s: &AttnSpec,
    tiling: FusedTiling,
    out: &mut [f32],
) {
    assert!(supported(), "fused attention needs AVX-512F");
    assert!(!s.causal, "fused attention is non-causal");
    assert!(tiling.panels > 0 && tiling.k_block > 0, "empty tiling");
    let (dh, width) = (s.head_dim, s.heads * s.head_dim);
    assert_eq!(out.len(), s.batch * s.q_len * width);
    if s.q_len == 0 || width == 0 {
        return;
    }
    let span = |o: &Operand<'_>, len: usize| {
        s.batch == 0 || len == 0 || (s.batch * len - 1) * o.ld + o.col + width <= o.data.len()
    };
    assert!(
        span(&q, s.q_len) && span(&k, s.kv_len) && span(&v, s.kv_len),
        "attention operand out of bounds"
    );
    let qrows = tiling.panels * PANEL;
    let q_blocks = s.q_len.div_ceil(qrows);
    let tasks = s.batch * s.heads * q_blocks;
    let out_ptr = SendPtr(out.as_mut_ptr());

    (0..tasks)
        .into_par_iter()
        .for_each_init(Scratch::default, |sc, t| {
            let qb = t % q_blocks;
            let h = (t / q_blocks) % s.heads;
            let b = t / (q_blocks * s.heads);
            let i0 = qb * qrows;
            let rows = qrows.min(s.q_len - i0);
            let task = Task {
                q_base: (b * s.q_len + i0) * q.ld + q.col + h * dh,
                k_base: b * s.kv_len * k.ld + k.col + h * dh,
                v_base: b * s.kv_len * v.ld + v.col + h * dh,
                out_base: (b * s.q_len + i0) * width + h * dh,
                rows,
            };
            // SAFETY: `supported()` was checked; the operand spans were
            // checked above; each task writes only its own rows' head slice.
            unsafe { run_task(q, k, v, s, tiling, &task, sc, out_ptr) };
        });
}

struct Task {
    q_base: usize,
    k_base: usize,
    v_base: usize,
    out_base: usize,
    rows: usize,
}

/// A task's working memory, reused across the tasks a worker runs.
#[derive(Default)]
struct Scratch {
    /// `Qᵀ` per panel: `[panel][dim][32]`.
    qt: Vec<f32>,
    /// `Sᵀ`, then `P`, of one panel and key block: `[key][32]`.
    st: Vec<f32>,
    /// `Oᵀ` per panel: `[panel][dim][32]`.
    ot: Vec<f32>,
    /// Running max and sum per panel: `[panel][32]`.
    m: Vec<f32>,
    l: Vec<f32>,
}

#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_task(
    q: Operand<'_>,
    k: Operand<'_>,
    v: Operand<'_>,
    s: &AttnSpec,
    tiling: FusedTiling,
    task: &Task,
    sc: &mut Scratch,
    out: SendPtr,
) {
    let dh = s.head_dim;
    let width = s.heads * dh;
    let panels = task.rows.div_ceil(PANEL);
    let kb = tiling.k_block;

    // Qᵀ, zero past the last query (those lanes are computed and dropped).
    sc.qt.clear();
    sc.qt.resize(panels * dh * PANEL, 0.0);
    for r in 0..task.rows {
        let (p, lane) = (r / PANEL, r % PANEL);
        let src = &q.data[task.q_base + r * q.ld..][..dh];
        for (d, &x) in src.iter().enumerate() {
            sc.qt[(p * dh + d) * PANEL + lane] = x;
        }
    }
    sc.ot.clear();
    sc.ot.resize(panels * dh * PANEL, 0.0);
    sc.m.clear();
    sc.m.resize(panels * PANEL, f32::NEG_INFINITY);
    sc.l.clear();
    sc.l.resize(panels * PANEL, 0.0);
    if sc.st.len() < kb * PANEL {
        sc.st.resize(kb * PANEL, 0.0);
    }

    let kp = k.data.as_ptr();
    let vp = v.data.as_ptr();
    let scale = _mm512_set1_ps(s.scale);
    let mut j0 = 0;
    while j0 < s.kv_len {
        let keys = kb.min(s.kv_len - j0);
        for p in 0..panels {
            let qt = sc.qt.as_ptr().add(p * dh * PANEL);
            let st = sc.st.as_mut_ptr();
            // Sᵀ = K_blk · Qᵀ_panel, JT keys at a time.
            let mut j = 0;
            while j < keys {
                let n = JT.min(keys - j);
                let krow = kp.add(task.k_base + (j0 + j) * k.ld);
                score_tile(n, qt, krow, k.ld, dh, st.add(j * PANEL));
                j += n;
            }
            online_softmax(
                st,
                keys,
                scale,
                sc.m.as_mut_ptr().add(p * PANEL),
                sc.l.as_mut_ptr().add(p * PANEL),
                sc.ot.as_mut_ptr().add(p * dh * PANEL),
                dh,
            );
            // Oᵀ += V_blkᵀ · P, CT dims at a time.
            let vrow = vp.add(task.v_base + j0 * v.ld);
            let mut c = 0;
            while c < dh {
                let n = CT.min(dh - c);
                value_tile(
                    n,
                    st,
                    keys,
                    vrow.add(c),
                    v.ld,
                    sc.ot.as_mut_ptr().add((p * dh + c) * PANEL),
                );
                c += n;
            }
        }
        j0 += keys;
    }

    // out[i, c] = Oᵀ[c][i] / l[i]
    for p in 0..panels {
        let lanes = PANEL.min(task.rows - p * PANEL);
        let ot = &sc.ot[p * dh * PANEL..(p + 1) * dh * PANEL];
        let l = &sc.l[p * PANEL..(p + 1) * PANEL];
        for lane in 0..lanes {
            let inv = 1.0 / l[lane];
            let r = p * PANEL + lane;
            let o = out.get().add(task.out_base + r * width);
            for c in 0..dh {
                *o.add(c) = ot[c * PANEL + lane] * inv;
            }
        }
    }
}

/// `st[j][0..32] = Σ_d k[j][d] · qt[d][0..32]` for `n ≤ JT` keys.
#[inline(always)]
unsafe fn score_tile(n: usize, qt: *const f32, k: *const f32, ldk: usize, dh: usize, st: *mut f32) {
    match n {
        8 => score_tile_n::<8>(qt, k, ldk, dh, st),
        7 => score_tile_n::<7>(qt, k, ldk, dh, st),
        6 => score_tile_n::<6>(qt, k, ldk, dh, st),
        5 => score_tile_n::<5>(qt, k, ldk, dh, st),
        4 => score_tile_n::<4>(qt, k, ldk, dh, st),
        3 => score_tile_n::<3>(qt, k, ldk, dh, st),
        2 => score_tile_n::<2>(qt, k, ldk, dh, st),
        1 => score_tile_n::<1>(qt, k, ldk, dh, st),
        _ => unreachable!("tile of {n} keys"),
    }
}

#[inline(always)]
unsafe fn score_tile_n<const N: usize>(
    qt: *const f32,
    k: *const f32,
    ldk: usize,
    dh: usize,
    st: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; N];
    for d in 0..dh {
        let q0 = _mm512_loadu_ps(qt.add(d * PANEL));
        let q1 = _mm512_loadu_ps(qt.add(d * PANEL + 16));
        for (j, a) in acc.iter_mut().enumerate() {
            let kv = _mm512_set1_ps(*k.add(j * ldk + d));
            a[0] = _mm512_fmadd_ps(kv, q0, a[0]);
            a[1] = _mm512_fmadd_ps(kv, q1, a[1]);
        }
    }
    for (j, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(st.add(j * PANEL), a[0]);
        _mm512_storeu_ps(st.add(j * PANEL + 16), a[1]);
    }
}

/// One key block of the online softmax for a panel: turns `st` (raw scores)
/// into `P = exp(scale·S − m_new)`, updates the running max `m` and sum `l`,
/// and rescales the panel's `Oᵀ` when the max moved.
#[inline(always)]
unsafe fn online_softmax(
    st: *mut f32,
    keys: usize,
    scale: __m512,
    m: *mut f32,
    l: *mut f32,
    ot: *mut f32,
    dh: usize,
) {
    let mut mx = [_mm512_set1_ps(f32::NEG_INFINITY); 2];
    for j in 0..keys {
        for (h, mh) in mx.iter_mut().enumerate() {
            let x = _mm512_mul_ps(_mm512_loadu_ps(st.add(j * PANEL + 16 * h)), scale);
            *mh = _mm512_max_ps(*mh, x);
        }
    }
    for (h, &mx) in mx.iter().enumerate() {
        let m_old = _mm512_loadu_ps(m.add(16 * h));
        let m_new = _mm512_max_ps(m_old, mx);
        // First block: m_old = -inf gives exp(-inf) = 0 (clamped to ~1e-38,
        // which multiplies zeros).
        let corr = exp(F32x16(_mm512_sub_ps(m_old, m_new))).0;
        let neg_m = _mm512_sub_ps(_mm512_setzero_ps(), m_new);
        let mut sum = _mm512_setzero_ps();
        for j in 0..keys {
            let ptr = st.add(j * PANEL + 16 * h);
            let x = _mm512_fmadd_ps(_mm512_loadu_ps(ptr), scale, neg_m);
            let e = exp(F32x16(x)).0;
            _mm512_storeu_ps(ptr, e);
            sum = _mm512_add_ps(sum, e);
        }
        let l_old = _mm512_loadu_ps(l.add(16 * h));
        // l·corr + sum, unfused as in the generic path.
        _mm512_storeu_ps(
            l.add(16 * h),
            _mm512_add_ps(_mm512_mul_ps(l_old, corr), sum),
        );
        _mm512_storeu_ps(m.add(16 * h), m_new);
        let moved = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(corr, _mm512_set1_ps(1.0));
        if moved != 0 {
            for c in 0..dh {
                let ptr = ot.add(c * PANEL + 16 * h);
                _mm512_storeu_ps(ptr, _mm512_mul_ps(_mm512_loadu_ps(ptr), corr));
            }
        }
    }
}

/// `ot[c][0..32] += Σ_j v[j][c] · p[j][0..32]` for `n ≤ CT` columns, the
/// block's sum formed from zero first.
#[inline(always)]
unsafe fn value_tile(
    n: usize,
    p: *const f32,
    keys: usize,
    v: *const f32,
    ldv: usize,
    ot: *mut f32,
) {
    match n {
        8 => value_tile_n::<8>(p, keys, v, ldv, ot),
        7 => value_tile_n::<7>(p, keys, v, ldv, ot),
        6 => value_tile_n::<6>(p, keys, v, ldv, ot),
        5 => value_tile_n::<5>(p, keys, v, ldv, ot),
        4 => value_tile_n::<4>(p, keys, v, ldv, ot),
        3 => value_tile_n::<3>(p, keys, v, ldv, ot),
        2 => value_tile_n::<2>(p, keys, v, ldv, ot),
        1 => value_tile_n::<1>(p, keys, v, ldv, ot),
        _ => unreachable!("tile of {n} columns"),
    }
}

#[inline(always)]
unsafe fn value_tile_n<const N: usize>(
    p: *const f32,
    keys: usize,
    v: *const f32,
    ldv: usize,
    ot: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; N];
    for j in 0..keys {
        let p0 = _mm512_loadu_ps(p.add(j * PANEL));
        let p1 = _mm512_loadu_ps(p.add(j * PANEL + 16));
        for (c, a) in acc.iter_mut().enumerate() {
            let vv = _mm512_set1_ps(*v.add(j * ldv + c));
            a[0] = _mm512_fmadd_ps(p0, vv, a[0]);
            a[1] = _mm512_fmadd_ps(p1, vv, a[1]);
        }
    }
    for (c, a) in acc.iter().enumerate() {
        for (h, ah) in a.iter().enumerate() {
            let ptr = ot.add(c * PANEL + 16 * h);
            _mm512_storeu_ps(ptr, _mm512_add_ps(_mm512_loadu_ps(ptr), *ah));
        }
    }
}
