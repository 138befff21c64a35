//! Elementwise math for the CPU kernels (scalar entry points over the
//! vectorised kernels of [`super::simd`]).

use crate::backend::Activation;

use super::simd;

/// `e^x` in f32 with about 1 ulp of error (Cephes' expf polynomial); about
/// 1e-38 below -87.3. The slice kernels in [`simd`] use the same formula.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    simd::exp_scalar(x)
}

/// In-place `act(x)` over a slice (vectorised where the CPU allows).
pub fn act_inplace(xs: &mut [f32], act: Activation) {
    simd::bias_act_inplace(xs, None, act)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_f32(-1000.0), exp_f32(-87.3));
        assert!(exp_f32(-100.0) < 1e-37);
        assert_eq!(exp_f32(0.0), 1.0);
    }
}
