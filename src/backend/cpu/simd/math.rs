//! The formulas (exp, erf-GELU, quick_gelu) written once against
//! [`Lanes`], and the slice drivers that apply them to whole slices.

use super::lanes::Lanes;

// ---- the formulas -----------------------------------------------------------

pub(super) const LOG2E: f32 = std::f32::consts::LOG2_E;
pub(super) const LN2_HI: f32 = 0.693_145_75;
pub(super) const LN2_LO: f32 = 1.428_606_8e-6;

/// `e^x` (Cephes' expf reduction and polynomial, ~1 ulp); 0 < result below
/// -87.3 (about 1e-38), +inf above ln(f32::MAX) (and from 88.38 on the
/// scalar and AVX2 paths, see [`Lanes::mul_pow2`]).
#[inline(always)]
pub(in crate::backend::cpu) unsafe fn exp<V: Lanes>(x: V) -> V {
    // The upper bound rounds to just above ln(f32::MAX) = 88.7228391.
    let x = x.min(V::splat(88.722_84)).max(V::splat(-87.3));
    let n = x.mul(V::splat(LOG2E)).round();
    let r = n.mul(V::splat(-LN2_HI)).add(x);
    let r = n.mul(V::splat(-LN2_LO)).add(r);
    let r2 = r.mul(r);
    let p = V::splat(1.987_569_1e-4).mul_add(r, V::splat(1.398_199_9e-3));
    let p = p.mul_add(r, V::splat(8.333_452e-3));
    let p = p.mul_add(r, V::splat(4.166_579_6e-2));
    let p = p.mul_add(r, V::splat(1.666_666_5e-1));
    let p = p.mul_add(r, V::splat(0.5));
    let y = p.mul_add(r2, r).add(V::splat(1.0));
    y.mul_pow2(n)
}

/// `erfc(a)·e^{a²}/t` on `t = 1/(1 + a/2)`, a ≥ 0: a degree-8 polynomial fitted
/// (iteratively reweighted least squares, relative error) over a ∈ [0, 10];
/// relative error 4.4e-8 before f32 rounding.
pub(super) const ERFC_P: [f32; 9] = [
    0.282_086_52,
    0.282_373_16,
    0.243_121_18,
    0.202_610_9,
    -0.026_429_703,
    0.277_759_73,
    -0.486_912_04,
    0.284_427_2,
    -0.059_036_992,
];

/// Exact GELU `0.5·x·(1 + erf(x/√2))`, computed through erfc so that neither
/// side loses precision: `h = 0.5·x·erfc(|x|/√2)`, GELU = `x − h` for x ≥ 0
/// and `h` for x < 0.
#[inline(always)]
pub(super) unsafe fn gelu<V: Lanes>(x: V) -> V {
    let a = x.abs().mul(V::splat(std::f32::consts::FRAC_1_SQRT_2));
    let t = V::splat(1.0).div(a.mul_add(V::splat(0.5), V::splat(1.0)));
    let mut p = V::splat(ERFC_P[8]);
    for &c in ERFC_P[..8].iter().rev() {
        p = p.mul_add(t, V::splat(c));
    }
    let e = exp(V::splat(0.0).sub(a.mul(a)));
    let erfc = e.mul(t).mul(p);
    // Clamped so that ±inf gives ±inf·0 = NaN nowhere; erfc(14) is 0 in f32.
    let xc = x.min(V::splat(20.0)).max(V::splat(-20.0));
    let h = V::splat(0.5).mul(xc).mul(erfc);
    x.select_nonneg(x.sub(h), h)
}

/// CLIP's `x·σ(1.702·x)`, as `x / (1 + e^{-1.702·x})`.
#[inline(always)]
pub(super) unsafe fn quick_gelu<V: Lanes>(x: V) -> V {
    x.div(V::splat(1.0).add(exp(V::splat(-1.702).mul(x))))
}

/// A lane-wise function, as a type so that the slice drivers instantiate it
/// inline (a closure would not inherit the callers' target features).
pub(super) trait Elementwise {
    unsafe fn apply<V: Lanes>(x: V) -> V;
}

pub(super) struct Identity;
pub(super) struct Relu;
pub(super) struct Gelu;
pub(super) struct QuickGelu;
pub(super) struct Exp;

impl Elementwise for Identity {
    #[inline(always)]
    unsafe fn apply<V: Lanes>(x: V) -> V {
        x
    }
}
impl Elementwise for Relu {
    #[inline(always)]
    unsafe fn apply<V: Lanes>(x: V) -> V {
        x.max(V::splat(0.0))
    }
}
impl Elementwise for Gelu {
    #[inline(always)]
    unsafe fn apply<V: Lanes>(x: V) -> V {
        gelu(x)
    }
}
impl Elementwise for QuickGelu {
    #[inline(always)]
    unsafe fn apply<V: Lanes>(x: V) -> V {
        quick_gelu(x)
    }
}
impl Elementwise for Exp {
    #[inline(always)]
    unsafe fn apply<V: Lanes>(x: V) -> V {
        exp(x)
    }
}

// ---- slice drivers ------------------------------------------------------------

/// Applies `f` to every element of `xs`: full packs, then the tail padded
/// through a stack buffer so that every element sees the same formula.
#[inline(always)]
pub(super) unsafe fn map_inplace<V: Lanes, F: Elementwise>(xs: &mut [f32]) {
    let n = xs.len();
    let p = xs.as_mut_ptr();
    let mut i = 0;
    while i + V::N <= n {
        F::apply(V::load(p.add(i))).store(p.add(i));
        i += V::N;
    }
    if i < n {
        let mut buf = [0f32; 16];
        buf[..n - i].copy_from_slice(&xs[i..]);
        F::apply(V::load(buf.as_ptr())).store(buf.as_mut_ptr());
        xs[i..].copy_from_slice(&buf[..n - i]);
    }
}

/// `xs[i] = f(xs[i] + bias[i])` (bias as long as xs).
#[inline(always)]
pub(super) unsafe fn bias_map_inplace<V: Lanes, F: Elementwise>(xs: &mut [f32], bias: &[f32]) {
    let n = xs.len();
    assert_eq!(bias.len(), n);
    let (p, b) = (xs.as_mut_ptr(), bias.as_ptr());
    let mut i = 0;
    while i + V::N <= n {
        F::apply(V::load(p.add(i)).add(V::load(b.add(i)))).store(p.add(i));
        i += V::N;
    }
    if i < n {
        let mut buf = [0f32; 16];
        for (j, o) in buf[..n - i].iter_mut().enumerate() {
            *o = xs[i + j] + bias[i + j];
        }
        F::apply(V::load(buf.as_ptr())).store(buf.as_mut_ptr());
        xs[i..].copy_from_slice(&buf[..n - i]);
    }
}

/// `max_i(xs[i]·scale)`; -inf for an empty slice.
#[inline(always)]
pub(super) unsafe fn max_scaled_k<V: Lanes>(xs: &[f32], scale: f32) -> f32 {
    let (n, p) = (xs.len(), xs.as_ptr());
    let s = V::splat(scale);
    let mut acc = [V::splat(f32::NEG_INFINITY); 2];
    let mut i = 0;
    while i + 2 * V::N <= n {
        acc[0] = V::load(p.add(i)).mul(s).max(acc[0]);
        acc[1] = V::load(p.add(i + V::N)).mul(s).max(acc[1]);
        i += 2 * V::N;
    }
    let mut m = acc[0].max(acc[1]).hmax();
    for &x in &xs[i..] {
        m = (x * scale).max(m);
    }
    m
}

/// `xs[i] = e^{xs[i]·scale − m}` (one FMA where the ISA has it); returns the
/// sum of the new values.
#[inline(always)]
pub(super) unsafe fn exp_scaled_sum_k<V: Lanes>(xs: &mut [f32], scale: f32, m: f32) -> f32 {
    let (n, p) = (xs.len(), xs.as_mut_ptr());
    let (s, mv) = (V::splat(scale), V::splat(-m));
    let mut acc = [V::splat(0.0); 2];
    let mut i = 0;
    while i + 2 * V::N <= n {
        let y0 = exp(V::load(p.add(i)).mul_add(s, mv));
        let y1 = exp(V::load(p.add(i + V::N)).mul_add(s, mv));
        y0.store(p.add(i));
        y1.store(p.add(i + V::N));
        acc[0] = acc[0].add(y0);
        acc[1] = acc[1].add(y1);
        i += 2 * V::N;
    }
    let mut sum = acc[0].add(acc[1]).hsum();
    // The tail one lane at a time, with the same formula.
    for x in &mut xs[i..] {
        let y = exp::<f32>(x.mul_add(scale, -m));
        *x = y;
        sum += y;
    }
    sum
}

/// `Σ x` in f64. Four accumulators keep the adds independent; the compiler
/// widens this loop inside the callers' `#[target_feature]` functions.
#[inline(always)]
pub(super) unsafe fn sum_f64(x: &[f32]) -> f64 {
    let mut s = [0f64; 4];
    let chunks = x.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..4 {
            s[k] += c[k] as f64;
        }
    }
    let mut sum = (s[0] + s[1]) + (s[2] + s[3]);
    for &v in rest {
        sum += v as f64;
    }
    sum
}

/// `Σ (x − mean)²` in f64.
#[inline(always)]
pub(super) unsafe fn sq_dev_sum_f64(x: &[f32], mean: f64) -> f64 {
    let mut q = [0f64; 4];
    let chunks = x.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..4 {
            let d = c[k] as f64 - mean;
            q[k] += d * d;
        }
    }
    let mut sq = (q[0] + q[1]) + (q[2] + q[3]);
    for &v in rest {
        let d = v as f64 - mean;
        sq += d * d;
    }
    sq
}

/// `out[i] = (x[i] − mean)·rstd·w[i] + b[i]`, unfused (same rounding on
/// every path).
#[inline(always)]
pub(super) unsafe fn normalize_k<V: Lanes>(
    x: &[f32],
    mean: f32,
    rstd: f32,
    w: &[f32],
    b: &[f32],
    out: &mut [f32],
) {
    let n = x.len();
    assert!(w.len() == n && b.len() == n && out.len() == n);
    let (m, r) = (V::splat(mean), V::splat(rstd));
    let (px, pw, pb, po) = (x.as_ptr(), w.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + V::N <= n {
        let y = V::load(px.add(i))
            .sub(m)
            .mul(r)
            .mul(V::load(pw.add(i)))
            .add(V::load(pb.add(i)));
        y.store(po.add(i));
        i += V::N;
    }
    for j in i..n {
        out[j] = (x[j] - mean) * rstd * w[j] + b[j];
    }
}
