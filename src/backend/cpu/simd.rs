//! Elementwise kernels with runtime instruction-set dispatch: AVX-512 or
//! AVX2+FMA on x86-64 CPUs that have them, a scalar fallback everywhere else.
//! The crate is built for the baseline target (no `-C target-cpu`), so the
//! wide paths live in `#[target_feature]` functions chosen per call from
//! `is_x86_feature_detected!` (a cached flag). The AVX-512 path needs a
//! compiler from Rust 1.89 on; build.rs sets `cfg(segvol_avx512)` then.
//!
//! Every kernel has one formula, written once against the [`lanes::Lanes`]
//! abstraction and instantiated for the scalar and vector paths, so the paths
//! differ only by FMA contraction (a rounding, not a formula).

/// Which code path a kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    /// 8 lanes of f32, fused multiply-add.
    Avx2Fma,
    /// 16 lanes of f32 (AVX-512F), fused multiply-add.
    Avx512,
}

impl Isa {
    /// The best path this CPU (and this build) supports.
    pub fn detect() -> Isa {
        if Isa::Avx512.supported() {
            Isa::Avx512
        } else if Isa::Avx2Fma.supported() {
            Isa::Avx2Fma
        } else {
            Isa::Scalar
        }
    }

    /// Whether this build has the path and this CPU can run it.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(segvol_avx512)]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every path this CPU can run, scalar first (for tests and benches).
    pub fn available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2Fma, Isa::Avx512]
            .into_iter()
            .filter(|i| i.supported())
            .collect()
    }
}

pub(super) mod lanes {
    /// A pack of f32 lanes. Methods are `unsafe` because the vector
    /// implementations need their CPU feature; they are `inline(always)` so
    /// that they compile inside the caller's `#[target_feature]` function.
    pub trait Lanes: Copy {
        const N: usize;
        unsafe fn splat(x: f32) -> Self;
        unsafe fn load(p: *const f32) -> Self;
        unsafe fn store(self, p: *mut f32);
        unsafe fn add(self, o: Self) -> Self;
        unsafe fn sub(self, o: Self) -> Self;
        unsafe fn mul(self, o: Self) -> Self;
        unsafe fn div(self, o: Self) -> Self;
        /// `self·b + c`, fused where the ISA has FMA.
        unsafe fn mul_add(self, b: Self, c: Self) -> Self;
        /// Lane-wise max/min; a NaN in `self` propagates.
        unsafe fn max(self, o: Self) -> Self;
        unsafe fn min(self, o: Self) -> Self;
        unsafe fn abs(self) -> Self;
        /// Round to the nearest integer (ties to even).
        unsafe fn round(self) -> Self;
        /// `self·2^n` for integral `n` in [-126, 128]. With n = 128 the
        /// result is +inf on the scalar and AVX2 paths (`2^n` is built in the
        /// exponent bits) and the correctly rounded product on AVX-512
        /// (`vscalefps`), which overflows only when the product does.
        unsafe fn mul_pow2(self, n: Self) -> Self;
        /// `if self >= 0 { a } else { b }` lane-wise (NaN takes `b`).
        unsafe fn select_nonneg(self, a: Self, b: Self) -> Self;
        unsafe fn hsum(self) -> f32;
        unsafe fn hmax(self) -> f32;
    }

    impl Lanes for f32 {
        const N: usize = 1;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            x
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            *p
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            *p = self
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            self + o
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            self - o
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            self * o
        }
        #[inline(always)]
        unsafe fn div(self, o: Self) -> Self {
            self / o
        }
        // No FMA on the baseline target: `f32::mul_add` would call libm.
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            self * b + c
        }
        #[inline(always)]
        unsafe fn max(self, o: Self) -> Self {
            if self.is_nan() || self > o {
                self
            } else {
                o
            }
        }
        #[inline(always)]
        unsafe fn min(self, o: Self) -> Self {
            if self.is_nan() || self < o {
                self
            } else {
                o
            }
        }
        #[inline(always)]
        unsafe fn abs(self) -> Self {
            self.abs()
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            // The 1.5·2^23 trick rounds to nearest-even for |x| < 2^22.
            (self + 12_582_912.0) - 12_582_912.0
        }
        #[inline(always)]
        unsafe fn mul_pow2(self, n: Self) -> Self {
            self * f32::from_bits(((n as i32 + 127) << 23) as u32)
        }
        #[inline(always)]
        unsafe fn select_nonneg(self, a: Self, b: Self) -> Self {
            if self >= 0.0 {
                a
            } else {
                b
            }
        }
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            self
        }
        #[inline(always)]
        unsafe fn hmax(self) -> f32 {
            self
        }
    }

    #[cfg(target_arch = "x86_64")]
    pub use avx2::F32x8;
    #[cfg(segvol_avx512)]
    pub use avx512::F32x16;

    // Compiled only where build.rs found Rust 1.89+ (stable AVX-512).
    #[cfg(segvol_avx512)]
    #[allow(clippy::incompatible_msrv)]
    mod avx512 {
        use super::Lanes;
        use std::arch::x86_64::*;

        #[derive(Clone, Copy)]
        pub struct F32x16(pub __m512);

        impl Lanes for F32x16 {
            const N: usize = 16;
            #[inline(always)]
            unsafe fn splat(x: f32) -> Self {
                F32x16(_mm512_set1_ps(x))
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self {
                F32x16(_mm512_loadu_ps(p))
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut f32) {
                _mm512_storeu_ps(p, self.0)
            }
            #[inline(always)]
            unsafe fn add(self, o: Self) -> Self {
                F32x16(_mm512_add_ps(self.0, o.0))
            }
            #[inline(always)]
            unsafe fn sub(self, o: Self) -> Self {
                F32x16(_mm512_sub_ps(self.0, o.0))
            }
            #[inline(always)]
            unsafe fn mul(self, o: Self) -> Self {
                F32x16(_mm512_mul_ps(self.0, o.0))
            }
            #[inline(always)]
            unsafe fn div(self, o: Self) -> Self {
                F32x16(_mm512_div_ps(self.0, o.0))
            }
            #[inline(always)]
            unsafe fn mul_add(self, b: Self, c: Self) -> Self {
                F32x16(_mm512_fmadd_ps(self.0, b.0, c.0))
            }
            // vmaxps/vminps return the second operand when either is NaN.
            #[inline(always)]
            unsafe fn max(self, o: Self) -> Self {
                F32x16(_mm512_max_ps(o.0, self.0))
            }
            #[inline(always)]
            unsafe fn min(self, o: Self) -> Self {
                F32x16(_mm512_min_ps(o.0, self.0))
            }
            #[inline(always)]
            unsafe fn abs(self) -> Self {
                F32x16(_mm512_abs_ps(self.0))
            }
            #[inline(always)]
            unsafe fn round(self) -> Self {
                F32x16(_mm512_roundscale_ps::<
                    { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                >(self.0))
            }
            #[inline(always)]
            unsafe fn mul_pow2(self, n: Self) -> Self {
                F32x16(_mm512_scalef_ps(self.0, n.0))
            }
            #[inline(always)]
            unsafe fn select_nonneg(self, a: Self, b: Self) -> Self {
                let m = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(self.0, _mm512_setzero_ps());
                F32x16(_mm512_mask_blend_ps(m, b.0, a.0))
            }
            #[inline(always)]
            unsafe fn hsum(self) -> f32 {
                _mm512_reduce_add_ps(self.0)
            }
            #[inline(always)]
            unsafe fn hmax(self) -> f32 {
                _mm512_reduce_max_ps(self.0)
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use super::Lanes;
        use std::arch::x86_64::*;

        #[derive(Clone, Copy)]
        pub struct F32x8(__m256);

        impl Lanes for F32x8 {
            const N: usize = 8;
            #[inline(always)]
            unsafe fn splat(x: f32) -> Self {
                F32x8(_mm256_set1_ps(x))
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self {
                F32x8(_mm256_loadu_ps(p))
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut f32) {
                _mm256_storeu_ps(p, self.0)
            }
            #[inline(always)]
            unsafe fn add(self, o: Self) -> Self {
                F32x8(_mm256_add_ps(self.0, o.0))
            }
            #[inline(always)]
            unsafe fn sub(self, o: Self) -> Self {
                F32x8(_mm256_sub_ps(self.0, o.0))
            }
            #[inline(always)]
            unsafe fn mul(self, o: Self) -> Self {
                F32x8(_mm256_mul_ps(self.0, o.0))
            }
            #[inline(always)]
            unsafe fn div(self, o: Self) -> Self {
                F32x8(_mm256_div_ps(self.0, o.0))
            }
            #[inline(always)]
            unsafe fn mul_add(self, b: Self, c: Self) -> Self {
                F32x8(_mm256_fmadd_ps(self.0, b.0, c.0))
            }
            // maxps/minps return the second operand when either is NaN.
            #[inline(always)]
            unsafe fn max(self, o: Self) -> Self {
                F32x8(_mm256_max_ps(o.0, self.0))
            }
            #[inline(always)]
            unsafe fn min(self, o: Self) -> Self {
                F32x8(_mm256_min_ps(o.0, self.0))
            }
            #[inline(always)]
            unsafe fn abs(self) -> Self {
                F32x8(_mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0))
            }
            #[inline(always)]
            unsafe fn round(self) -> Self {
                F32x8(_mm256_round_ps::<
                    { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                >(self.0))
            }
            #[inline(always)]
            unsafe fn mul_pow2(self, n: Self) -> Self {
                let i = _mm256_add_epi32(_mm256_cvtps_epi32(n.0), _mm256_set1_epi32(127));
                let p = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(i));
                F32x8(_mm256_mul_ps(self.0, p))
            }
            #[inline(always)]
            unsafe fn select_nonneg(self, a: Self, b: Self) -> Self {
                let m = _mm256_cmp_ps::<_CMP_GE_OQ>(self.0, _mm256_setzero_ps());
                F32x8(_mm256_blendv_ps(b.0, a.0, m))
            }
            #[inline(always)]
            unsafe fn hsum(self) -> f32 {
                let s = _mm_add_ps(
                    _mm256_castps256_ps128(self.0),
                    _mm256_extractf128_ps::<1>(self.0),
                );
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }
            #[inline(always)]
            unsafe fn hmax(self) -> f32 {
                let s = _mm_max_ps(
                    _mm256_castps256_ps128(self.0),
                    _mm256_extractf128_ps::<1>(self.0),
                );
                let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_max_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }
        }
    }
}

use lanes::Lanes;

use crate::backend::Activation;

// ---- the formulas -----------------------------------------------------------

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// `e^x` (Cephes' expf reduction and polynomial, ~1 ulp); 0 < result below
/// -87.3 (about 1e-38), +inf above ln(f32::MAX) (and from 88.38 on the
/// scalar and AVX2 paths, see [`Lanes::mul_pow2`]).
#[inline(always)]
pub(super) unsafe fn exp<V: Lanes>(x: V) -> V {
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
const ERFC_P: [f32; 9] = [
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
unsafe fn gelu<V: Lanes>(x: V) -> V {
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
unsafe fn quick_gelu<V: Lanes>(x: V) -> V {
    x.div(V::splat(1.0).add(exp(V::splat(-1.702).mul(x))))
}

/// A lane-wise function, as a type so that the slice drivers instantiate it
/// inline (a closure would not inherit the callers' target features).
trait Elementwise {
    unsafe fn apply<V: Lanes>(x: V) -> V;
}

struct Identity;
struct Relu;
struct Gelu;
struct QuickGelu;
struct Exp;

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
unsafe fn map_inplace<V: Lanes, F: Elementwise>(xs: &mut [f32]) {
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
unsafe fn bias_map_inplace<V: Lanes, F: Elementwise>(xs: &mut [f32], bias: &[f32]) {
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
unsafe fn max_scaled_k<V: Lanes>(xs: &[f32], scale: f32) -> f32 {
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
unsafe fn exp_scaled_sum_k<V: Lanes>(xs: &mut [f32], scale: f32, m: f32) -> f32 {
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
unsafe fn sum_f64(x: &[f32]) -> f64 {
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
unsafe fn sq_dev_sum_f64(x: &[f32], mean: f64) -> f64 {
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
unsafe fn normalize_k<V: Lanes>(
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

// ---- dispatch -------------------------------------------------------------------

/// The vector instances of every kernel for one lane type, each a
/// `#[target_feature]` function.
macro_rules! instances {
    ($module:ident, $lanes:ident, $features:literal) => {
        // The AVX-512 instance exists only with Rust 1.89+ (build.rs).
        #[allow(clippy::incompatible_msrv)]
        mod $module {
            use super::lanes::$lanes;
            use super::*;

            #[target_feature(enable = $features)]
            pub unsafe fn gelu_inplace(xs: &mut [f32]) {
                map_inplace::<$lanes, Gelu>(xs)
            }
            #[target_feature(enable = $features)]
            pub unsafe fn quick_gelu_inplace(xs: &mut [f32]) {
                map_inplace::<$lanes, QuickGelu>(xs)
            }
            #[target_feature(enable = $features)]
            pub unsafe fn exp_inplace(xs: &mut [f32]) {
                map_inplace::<$lanes, Exp>(xs)
            }
            #[target_feature(enable = $features)]
            pub unsafe fn bias_act_inplace(xs: &mut [f32], bias: Option<&[f32]>, act: Activation) {
                super::bias_act::<$lanes>(xs, bias, act)
            }
            #[target_feature(enable = $features)]
            pub unsafe fn max_scaled(xs: &[f32], scale: f32) -> f32 {
                super::max_scaled_k::<$lanes>(xs, scale)
            }
            #[target_feature(enable = $features)]
            pub unsafe fn exp_scaled_sum(xs: &mut [f32], scale: f32, m: f32) -> f32 {
                super::exp_scaled_sum_k::<$lanes>(xs, scale, m)
            }
            #[target_feature(enable = $features)]
            pub unsafe fn sum_f64(x: &[f32]) -> f64 {
                super::sum_f64(x)
            }
            #[target_feature(enable = $features)]
            pub unsafe fn sq_dev_sum_f64(x: &[f32], mean: f64) -> f64 {
                super::sq_dev_sum_f64(x, mean)
            }
            #[target_feature(enable = $features)]
            pub unsafe fn normalize(
                x: &[f32],
                mean: f32,
                rstd: f32,
                w: &[f32],
                b: &[f32],
                out: &mut [f32],
            ) {
                super::normalize_k::<$lanes>(x, mean, rstd, w, b, out)
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
instances!(x86, F32x8, "avx2,fma");
// Compiled only where build.rs found Rust 1.89+ (stable AVX-512).
#[cfg(segvol_avx512)]
instances!(x86_512, F32x16, "avx512f,avx2,fma");

/// `xs = act(xs + bias)`.
#[inline(always)]
unsafe fn bias_act<V: Lanes>(xs: &mut [f32], bias: Option<&[f32]>, act: Activation) {
    match (bias, act) {
        (None, Activation::None) => {}
        (None, Activation::Relu) => map_inplace::<V, Relu>(xs),
        (None, Activation::Gelu) => map_inplace::<V, Gelu>(xs),
        (None, Activation::QuickGelu) => map_inplace::<V, QuickGelu>(xs),
        (Some(b), Activation::None) => bias_map_inplace::<V, Identity>(xs, b),
        (Some(b), Activation::Relu) => bias_map_inplace::<V, Relu>(xs, b),
        (Some(b), Activation::Gelu) => bias_map_inplace::<V, Gelu>(xs, b),
        (Some(b), Activation::QuickGelu) => bias_map_inplace::<V, QuickGelu>(xs, b),
    }
}

/// `isa` if this CPU runs it, else the scalar path: a caller cannot force a
/// vector path the hardware lacks.
#[inline]
fn usable(isa: Isa) -> Isa {
    if isa.supported() {
        isa
    } else {
        Isa::Scalar
    }
}

/// Runs the vector instance `x86::$f` / `x86_512::$f` where `isa` allows,
/// else `$scalar`.
macro_rules! on {
    ($isa:expr, $f:ident($($arg:expr),*), $scalar:expr) => {
        match usable($isa) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `usable` returns Avx2Fma only on a CPU with AVX2 and FMA.
            Isa::Avx2Fma => unsafe { x86::$f($($arg),*) },
            #[cfg(segvol_avx512)]
            // SAFETY: `usable` returns Avx512 only on a CPU with AVX-512F,
            // AVX2 and FMA.
            Isa::Avx512 => unsafe { x86_512::$f($($arg),*) },
            // SAFETY: the scalar instances use no CPU features.
            _ => unsafe { $scalar },
        }
    };
}

/// Exact (erf) GELU over a slice, in place.
pub fn gelu_inplace(xs: &mut [f32]) {
    gelu_inplace_on(Isa::detect(), xs)
}
pub fn gelu_inplace_on(isa: Isa, xs: &mut [f32]) {
    on!(isa, gelu_inplace(xs), map_inplace::<f32, Gelu>(xs))
}

/// quick_gelu over a slice, in place.
pub fn quick_gelu_inplace(xs: &mut [f32]) {
    quick_gelu_inplace_on(Isa::detect(), xs)
}
pub fn quick_gelu_inplace_on(isa: Isa, xs: &mut [f32]) {
    on!(
        isa,
        quick_gelu_inplace(xs),
        map_inplace::<f32, QuickGelu>(xs)
    )
}

/// `e^x` over a slice, in place.
pub fn exp_inplace(xs: &mut [f32]) {
    exp_inplace_on(Isa::detect(), xs)
}
pub fn exp_inplace_on(isa: Isa, xs: &mut [f32]) {
    on!(isa, exp_inplace(xs), map_inplace::<f32, Exp>(xs))
}

/// Scalar `e^x`, the same formula as the slice kernels.
#[inline]
pub fn exp_scalar(x: f32) -> f32 {
    // SAFETY: the scalar instance uses no CPU features.
    unsafe { exp::<f32>(x) }
}

/// `xs = act(xs + bias)` (bias, when given, as long as xs).
pub fn bias_act_inplace(xs: &mut [f32], bias: Option<&[f32]>, act: Activation) {
    bias_act_inplace_on(Isa::detect(), xs, bias, act)
}
pub fn bias_act_inplace_on(isa: Isa, xs: &mut [f32], bias: Option<&[f32]>, act: Activation) {
    if let Some(b) = bias {
        assert_eq!(b.len(), xs.len(), "bias length");
    }
    on!(
        isa,
        bias_act_inplace(xs, bias, act),
        bias_act::<f32>(xs, bias, act)
    )
}

/// `max_i(xs[i]·scale)`, -inf for an empty slice.
pub fn max_scaled(xs: &[f32], scale: f32) -> f32 {
    max_scaled_on(Isa::detect(), xs, scale)
}
pub fn max_scaled_on(isa: Isa, xs: &[f32], scale: f32) -> f32 {
    on!(isa, max_scaled(xs, scale), max_scaled_k::<f32>(xs, scale))
}

/// `xs[i] = e^{xs[i]·scale − m}` (fused where the ISA has FMA); returns the
/// sum of the results.
pub fn exp_scaled_sum(xs: &mut [f32], scale: f32, m: f32) -> f32 {
    exp_scaled_sum_on(Isa::detect(), xs, scale, m)
}
pub fn exp_scaled_sum_on(isa: Isa, xs: &mut [f32], scale: f32, m: f32) -> f32 {
    on!(
        isa,
        exp_scaled_sum(xs, scale, m),
        exp_scaled_sum_k::<f32>(xs, scale, m)
    )
}

/// `Σ x`, accumulated in f64.
pub fn sum(x: &[f32]) -> f64 {
    sum_on(Isa::detect(), x)
}
pub fn sum_on(isa: Isa, x: &[f32]) -> f64 {
    on!(isa, sum_f64(x), sum_f64(x))
}

/// `Σ (x − mean)²`, accumulated in f64.
pub fn sq_dev_sum(x: &[f32], mean: f64) -> f64 {
    sq_dev_sum_on(Isa::detect(), x, mean)
}
pub fn sq_dev_sum_on(isa: Isa, x: &[f32], mean: f64) -> f64 {
    on!(isa, sq_dev_sum_f64(x, mean), sq_dev_sum_f64(x, mean))
}

/// `out[i] = (x[i] − mean)·rstd·w[i] + b[i]`.
pub fn normalize(x: &[f32], mean: f32, rstd: f32, w: &[f32], b: &[f32], out: &mut [f32]) {
    normalize_on(Isa::detect(), x, mean, rstd, w, b, out)
}
pub fn normalize_on(
    isa: Isa,
    x: &[f32],
    mean: f32,
    rstd: f32,
    w: &[f32],
    b: &[f32],
    out: &mut [f32],
) {
    assert!(w.len() == x.len() && b.len() == x.len() && out.len() == x.len());
    on!(
        isa,
        normalize(x, mean, rstd, w, b, out),
        normalize_k::<f32>(x, mean, rstd, w, b, out)
    )
}

/// LayerNorm of one row: f64 statistics, f32 affine.
pub fn layer_norm_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    layer_norm_row_on(Isa::detect(), x, w, b, eps, out)
}
pub fn layer_norm_row_on(isa: Isa, x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f64;
    let mean = sum_on(isa, x) / n;
    let var = sq_dev_sum_on(isa, x, mean) / n;
    let rstd = 1.0 / (var + eps as f64).sqrt();
    normalize_on(isa, x, mean as f32, rstd as f32, w, b, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::oracle::erf_f64;

    fn ulp(x: f32) -> f64 {
        let a = x.abs();
        (f32::from_bits(a.to_bits() + 1) - a) as f64
    }

    /// GELU of an f32 input, evaluated in f64.
    fn gelu_ref(x: f32) -> f64 {
        let x = x as f64;
        0.5 * x * (1.0 + erf_f64(x * std::f64::consts::FRAC_1_SQRT_2))
    }

    /// Evenly spaced points, an odd count so that slices end in a partial pack.
    fn sweep(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
            .collect()
    }

    #[test]
    fn gelu_within_2e7_or_2ulp_of_f64_over_pm10() {
        let xs = sweep(-10.0, 10.0, 400_001);
        for isa in Isa::available() {
            let mut ys = xs.clone();
            gelu_inplace_on(isa, &mut ys);
            let mut worst = (0f64, 0f32);
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = gelu_ref(x);
                let err = (y as f64 - want).abs();
                let bar = 2e-7f64.max(2.0 * ulp(want as f32));
                assert!(
                    err <= bar,
                    "{isa:?}: gelu({x}) = {y}, want {want} (err {err:e})"
                );
                if err > worst.0 {
                    worst = (err, x);
                }
            }
            eprintln!("{isa:?}: worst gelu error {:e} at {}", worst.0, worst.1);
        }
    }

    #[test]
    fn gelu_edge_values() {
        for isa in Isa::available() {
            let mut v = vec![
                0.0,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                1e-30,
                -1e-30,
                30.0,
                -30.0,
                f32::NAN,
            ];
            gelu_inplace_on(isa, &mut v);
            assert_eq!(v[0], 0.0);
            assert_eq!(v[1], 0.0);
            assert_eq!(v[2], f32::INFINITY);
            assert!(v[3] <= 0.0 && v[3] > -1e-30, "{isa:?}: {}", v[3]);
            assert!((v[4] - 5e-31).abs() < 1e-36);
            assert!((v[5] + 5e-31).abs() < 1e-36);
            assert_eq!(v[6], 30.0);
            assert!(v[7] <= 0.0 && v[7] > -1e-30, "{isa:?}: {}", v[7]);
            assert!(v[8].is_nan(), "{isa:?}");
        }
    }

    #[test]
    fn exp_within_3e7_relative() {
        let xs = sweep(-87.0, 88.0, 300_001);
        for isa in Isa::available() {
            let mut ys = xs.clone();
            exp_inplace_on(isa, &mut ys);
            let mut worst = 0f64;
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = (x as f64).exp();
                worst = worst.max(((y as f64 - want) / want).abs());
            }
            assert!(worst < 3e-7, "{isa:?}: relative error {worst:e}");
            let mut v = vec![0.0, -1000.0, 1000.0, f32::NAN];
            exp_inplace_on(isa, &mut v);
            assert_eq!(v[0], 1.0);
            assert!(v[1] < 1e-37 && v[1] >= 0.0);
            assert_eq!(v[2], f32::INFINITY);
            assert!(v[3].is_nan());
        }
    }

    #[test]
    fn scalar_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp_scalar(x) as f64 - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(exp_scalar(-100.0) < 1e-37);
        assert_eq!(exp_scalar(0.0), 1.0);
    }

    #[test]
    fn quick_gelu_matches_f64() {
        let xs = sweep(-60.0, 60.0, 100_001);
        for isa in Isa::available() {
            let mut ys = xs.clone();
            quick_gelu_inplace_on(isa, &mut ys);
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = x as f64 / (1.0 + (-1.702 * x as f64).exp());
                let err = (y as f64 - want).abs();
                assert!(
                    err <= 2e-7f64.max(3.0 * ulp(want as f32)),
                    "{isa:?}: quick_gelu({x}) = {y}, want {want}"
                );
            }
        }
    }

    fn rnd(n: usize, seed: u64) -> Vec<f32> {
        crate::test_data::uniform(n, seed, -1.0, 1.0)
    }

    #[test]
    fn layer_norm_row_within_1e6_of_f64_statistics() {
        for &(c, offset, spread) in &[
            (768usize, 0.0f32, 3.0f32),
            (77, 100.0, 0.01),
            (5, -2.0, 50.0),
            (1000, 1e3, 1.0),
        ] {
            let x: Vec<f32> = rnd(c, c as u64)
                .iter()
                .map(|v| offset + spread * v)
                .collect();
            let w: Vec<f32> = rnd(c, 9).iter().map(|v| 1.0 + 0.5 * v).collect();
            let b = rnd(c, 10);
            // The plain version: sequential f64 statistics, f32 affine.
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
            let rstd = (1.0 / (var + 1e-5).sqrt()) as f32;
            let mean = mean as f32;
            for isa in Isa::available() {
                let mut out = vec![f32::NAN; c];
                layer_norm_row_on(isa, &x, &w, &b, 1e-5, &mut out);
                for i in 0..c {
                    let want = (x[i] - mean) * rstd * w[i] + b[i];
                    assert!(
                        (out[i] - want).abs() < 1e-6,
                        "{isa:?} c={c}: {} vs {want}",
                        out[i]
                    );
                }
            }
        }
    }

    #[test]
    fn softmax_pieces_match_plain_loops() {
        for n in [1usize, 7, 16, 255, 256, 2048] {
            let x: Vec<f32> = rnd(n, n as u64).iter().map(|v| 20.0 * v).collect();
            let scale = 0.144_337_57;
            let want_max = x
                .iter()
                .map(|v| v * scale)
                .fold(f32::NEG_INFINITY, f32::max);
            for isa in Isa::available() {
                assert_eq!(max_scaled_on(isa, &x, scale), want_max, "{isa:?} n={n}");
                let mut y = x.clone();
                let sum = exp_scaled_sum_on(isa, &mut y, scale, want_max);
                let mut want_sum = 0f64;
                for (&xi, &yi) in x.iter().zip(&y) {
                    // Exact argument; the kernels round it once (FMA) or
                    // twice (scalar), up to 1.2e-7 each for |arg| < 2.9,
                    // on top of exp's own 3e-7.
                    let want = (xi as f64 * scale as f64 - want_max as f64).exp();
                    want_sum += want;
                    let err = ((yi as f64 - want) / want).abs();
                    assert!(err < 5.5e-7, "{isa:?}: {err:e}");
                }
                assert!(((sum as f64 - want_sum) / want_sum).abs() < 1e-6, "{isa:?}");
            }
        }
        assert_eq!(max_scaled(&[], 1.0), f32::NEG_INFINITY);
    }

    #[test]
    fn bias_act_matches_scalar_composition() {
        for n in [1usize, 9, 64, 3072] {
            let x: Vec<f32> = rnd(n, 3).iter().map(|v| 4.0 * v).collect();
            let b = rnd(n, 4);
            for act in [
                Activation::None,
                Activation::Relu,
                Activation::Gelu,
                Activation::QuickGelu,
            ] {
                for isa in Isa::available() {
                    let mut got = x.clone();
                    bias_act_inplace_on(isa, &mut got, Some(&b), act);
                    let mut want: Vec<f32> = x.iter().zip(&b).map(|(x, b)| x + b).collect();
                    bias_act_inplace_on(isa, &mut want, None, act);
                    assert_eq!(got, want, "{isa:?} {act:?}");
                    for (g, (x, b)) in got.iter().zip(x.iter().zip(&b)) {
                        let r = crate::backend::oracle::apply_act(act, x + b);
                        assert!(
                            (g - r).abs() <= 1e-6 * r.abs().max(1.0),
                            "{act:?}: {g} vs {r}"
                        );
                    }
                }
            }
        }
    }
}
