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

pub(super) mod lanes;
pub(super) mod math;

use lanes::Lanes;
use math::*;

use crate::backend::Activation;

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
mod tests;
