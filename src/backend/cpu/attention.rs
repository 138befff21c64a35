//! Multi-head attention on the CPU, flash style: each task owns a block of
//! queries of one head and streams over blocks of keys with an online
//! softmax, so no q_len × kv_len matrix is ever held (the ViT's would be
//! 16 MB per head). Scores and value products go through sgemm.

use super::SendPtr;
use rayon::prelude::*;

use super::gemm::{sgemm_serial, MatRef};
use super::simd;
use super::simd::exp_scalar;
use super::tensor::scratch;
use super::{CpuBackend, CpuTensor};
use crate::backend::{AttnOperand, AttnSpec};
use crate::error::Result;

/// Query rows per task and keys per streamed block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub q_block: usize,
    pub k_block: usize,
}

impl Tiling {
    /// Swept on the ViT's 12 heads × 64 × 2048 tokens (docs/PERF.md,
    /// `tools/cpu_attention_tiling.rs`): larger blocks amortise sgemm's
    /// operand packing; 256 rows still give 96 tasks to balance over the
    /// pool, and a task's 256×512 scores (512 KB) stay in L2.
    pub const DEFAULT: Tiling = Tiling {
        q_block: 256,
        k_block: 512,
    };
}

/// One operand: `data` is `[B, len, ld]`, the operand's columns start at `col`.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub ld: usize,
    pub col: usize,
}

/// `Backend::attention` on the CPU, given the operands' row strides
/// (`shapes::attention`): the AVX-512 fused kernel where it applies
/// (non-causal, CPU support), else the tiled kernel below.
pub(super) fn attention(
    be: &CpuBackend,
    ld: [usize; 3],
    q: AttnOperand<'_, CpuTensor>,
    k: AttnOperand<'_, CpuTensor>,
    v: AttnOperand<'_, CpuTensor>,
    s: &AttnSpec,
) -> Result<CpuTensor> {
    let width = s.heads * s.head_dim;
    fn op<'t>(o: &AttnOperand<'t, CpuTensor>, ld: usize) -> Operand<'t> {
        Operand {
            data: o.t.data(),
            ld,
            col: o.col,
        }
    }
    let (qo, ko, vo) = (op(&q, ld[0]), op(&k, ld[1]), op(&v, ld[2]));
    let mut out = scratch(s.batch * s.q_len * width);
    be.run(|| {
        #[cfg(segvol_avx512)]
        if !s.causal && super::attention_avx512::supported() {
            return super::attention_avx512::attention(
                qo,
                ko,
                vo,
                s,
                super::attention_avx512::FusedTiling::DEFAULT,
                &mut out,
            );
        }
        attention_tiled(qo, ko, vo, s, Tiling::DEFAULT, &mut out)
    });
    CpuTensor::from_vec(out, &[s.batch, s.q_len, width])
}

/// A task's working memory, reused across the tasks a worker runs.
#[derive(Default)]
struct Scratch {
    acc: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
    scores: Vec<f32>,
}

/// Attention into `out [B, q_len, heads·head_dim]` with explicit block sizes.
pub fn attention_tiled(
    q: Operand<'_>,
    k: Operand<'_>,
    v: Operand<'_>,
    s: &AttnSpec,
    tiling: Tiling,
    out: &mut [f32],
) {
    let (dh, width) = (s.head_dim, s.heads * s.head_dim);
    assert_eq!(out.len(), s.batch * s.q_len * width);
    assert!(tiling.q_block > 0 && tiling.k_block > 0, "empty tiling");
    let (qbs, kbs) = (tiling.q_block, tiling.k_block);
    let q_blocks = s.q_len.div_ceil(qbs);
    let tasks = s.batch * s.heads * q_blocks;
    let out_ptr = SendPtr(out.as_mut_ptr());

    (0..tasks)
        .into_par_iter()
        .for_each_init(Scratch::default, |sc, t| {
            let qb = t % q_blocks;
            let h = (t / q_blocks) % s.heads;
            let b = t / (q_blocks * s.heads);
            let i0 = qb * qbs;
            let rows = qbs.min(s.q_len - i0);

            let q_off = (b * s.q_len + i0) * q.ld + q.col + h * dh;
            let k_base = b * s.kv_len * k.ld + k.col + h * dh;
            let v_base = b * s.kv_len * v.ld + v.col + h * dh;

            let reset = |buf: &mut Vec<f32>, n: usize, x: f32| {
                buf.clear();
                buf.resize(n, x);
            };
            reset(&mut sc.acc, rows * dh, 0.0);
            reset(&mut sc.m, rows, f32::NEG_INFINITY);
            reset(&mut sc.l, rows, 0.0);
            if sc.scores.len() < rows * kbs {
                sc.scores.resize(rows * kbs, 0.0);
            }
            let Scratch { acc, m, l, scores } = sc;

            let kv_end = if s.causal {
                (i0 + rows).min(s.kv_len)
            } else {
                s.kv_len
            };
            let mut j0 = 0;
            while j0 < kv_end {
                let cols = kbs.min(kv_end - j0);
                // scores = q_blk · k_blkᵀ
                sgemm_serial(
                    rows,
                    dh,
                    cols,
                    MatRef::rows(q.data, q_off, q.ld),
                    MatRef::transposed(k.data, k_base + j0 * k.ld, k.ld),
                    0.0,
                    scores,
                    cols,
                );
                for r in 0..rows {
                    let row = &mut scores[r * cols..(r + 1) * cols];
                    // Keys a causal query may not see: j > i.
                    let visible = if s.causal {
                        (i0 + r + 1).saturating_sub(j0).min(cols)
                    } else {
                        cols
                    };
                    let m_new = m[r].max(simd::max_scaled(&row[..visible], s.scale));
                    let sum = simd::exp_scaled_sum(&mut row[..visible], s.scale, m_new);
                    row[visible..].fill(0.0);
                    let corr = if m[r] == f32::NEG_INFINITY {
                        0.0
                    } else {
                        exp_scalar(m[r] - m_new)
                    };
                    l[r] = l[r] * corr + sum;
                    m[r] = m_new;
                    if corr != 1.0 {
                        for a in &mut acc[r * dh..(r + 1) * dh] {
                            *a *= corr;
                        }
                    }
                }
                // acc += p · v_blk
                sgemm_serial(
                    rows,
                    cols,
                    dh,
                    MatRef::rows(scores, 0, cols),
                    MatRef::rows(v.data, v_base + j0 * v.ld, v.ld),
                    1.0,
                    acc,
                    dh,
                );
                j0 += cols;
            }

            for r in 0..rows {
                let inv = 1.0 / l[r];
                let dst = (b * s.q_len + i0 + r) * width + h * dh;
                // SAFETY: each (b, i, h) slice of `out` belongs to exactly one task.
                let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(dst), dh) };
                for (o, a) in o.iter_mut().zip(&acc[r * dh..(r + 1) * dh]) {
                    *o = a * inv;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(n: usize, seed: u64) -> Vec<f32> {
        crate::test_data::uniform(n, seed, -2.0, 2.0)
    }

    /// Plain softmax(q·kᵀ·scale)·v in f64.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: &AttnSpec,
        ldq: usize,
        ldk: usize,
        ldv: usize,
        cq: usize,
        ck: usize,
        cv: usize,
    ) -> Vec<f64> {
        let dh = s.head_dim;
        let w = s.heads * dh;
        let mut out = vec![0f64; s.batch * s.q_len * w];
        for b in 0..s.batch {
            for h in 0..s.heads {
                for i in 0..s.q_len {
                    let n = if s.causal { i + 1 } else { s.kv_len };
                    let mut sc: Vec<f64> = (0..n)
                        .map(|j| {
                            (0..dh)
                                .map(|c| {
                                    q[(b * s.q_len + i) * ldq + cq + h * dh + c] as f64
                                        * k[(b * s.kv_len + j) * ldk + ck + h * dh + c] as f64
                                })
                                .sum::<f64>()
                                * s.scale as f64
                        })
                        .collect();
                    let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let mut tot = 0.0;
                    for x in sc.iter_mut() {
                        *x = (*x - mx).exp();
                        tot += *x;
                    }
                    for c in 0..dh {
                        let mut acc = 0.0;
                        for (j, p) in sc.iter().enumerate() {
                            acc += p * v[(b * s.kv_len + j) * ldv + cv + h * dh + c] as f64;
                        }
                        out[(b * s.q_len + i) * w + h * dh + c] = acc / tot;
                    }
                }
            }
        }
        out
    }

    fn check(out: &[f32], want: &[f64], what: &str) {
        let mut err = 0f64;
        let mut norm = 0f64;
        for (o, w) in out.iter().zip(want) {
            assert!(o.is_finite(), "{what}");
            err += (*o as f64 - w).powi(2);
            norm += w * w;
        }
        assert!(
            (err / norm).sqrt() < 1e-5,
            "{what}: rel err {}",
            (err / norm).sqrt()
        );
    }

    #[test]
    fn matches_naive_packed_and_causal() {
        for &(batch, heads, dh, q_len, kv_len, causal) in &[
            (1, 3, 16, 300, 300, false),
            (2, 2, 8, 5, 700, false),
            (1, 2, 12, 333, 333, true),
            (2, 1, 4, 1, 1, false),
            (1, 8, 48, 600, 9, false),
            (1, 2, 64, 77, 130, false),
            (2, 1, 13, 40, 33, false),
        ] {
            let w = heads * dh;
            // q, k, v packed in one [B, N, 3w] tensor when the lengths agree.
            let packed = q_len == kv_len;
            let s = AttnSpec {
                batch,
                heads,
                head_dim: dh,
                q_len,
                kv_len,
                scale: 1.0 / (dh as f32).sqrt(),
                causal,
            };
            let (q, k, v, ld, cols) = if packed {
                let t = rnd(batch * q_len * 3 * w, 7);
                (t.clone(), t.clone(), t, 3 * w, [0, w, 2 * w])
            } else {
                (
                    rnd(batch * q_len * w, 1),
                    rnd(batch * kv_len * w, 2),
                    rnd(batch * kv_len * w, 3),
                    w,
                    [0, 0, 0],
                )
            };
            let want = naive(&q, &k, &v, &s, ld, ld, ld, cols[0], cols[1], cols[2]);
            let operands = || {
                [0, 1, 2].map(|i| Operand {
                    data: [&q, &k, &v][i],
                    ld,
                    col: cols[i],
                })
            };
            // The default blocks, blocks that do not divide the lengths, and
            // blocks larger than them.
            for tiling in [
                Tiling::DEFAULT,
                Tiling {
                    q_block: 7,
                    k_block: 50,
                },
                Tiling {
                    q_block: 64,
                    k_block: 512,
                },
                Tiling {
                    q_block: 1000,
                    k_block: 1,
                },
            ] {
                let mut out = vec![f32::NAN; batch * q_len * w];
                let [qo, ko, vo] = operands();
                attention_tiled(qo, ko, vo, &s, tiling, &mut out);
                check(&out, &want, &format!("{tiling:?}"));
            }
            #[cfg(segvol_avx512)]
            if !causal && crate::backend::cpu::attention_avx512::supported() {
                use crate::backend::cpu::attention_avx512 as fused;
                for tiling in [
                    fused::FusedTiling::DEFAULT,
                    fused::FusedTiling {
                        panels: 1,
                        k_block: 5,
                    },
                    fused::FusedTiling {
                        panels: 3,
                        k_block: 1000,
                    },
                ] {
                    let mut out = vec![f32::NAN; batch * q_len * w];
                    fused::attention(
                        Operand {
                            data: &q,
                            ld,
                            col: cols[0],
                        },
                        Operand {
                            data: &k,
                            ld,
                            col: cols[1],
                        },
                        Operand {
                            data: &v,
                            ld,
                            col: cols[2],
                        },
                        &s,
                        tiling,
                        &mut out,
                    );
                    check(&out, &want, &format!("fused {tiling:?}"));
                }
            }
        }
    }
}
