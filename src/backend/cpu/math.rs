//! Elementwise math for the CPU kernels, written as branch-free loops the
//! compiler can vectorise.

use crate::backend::{apply_act, Activation};

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// `e^x` in f32 with about 1 ulp of error (Cephes' expf polynomial), exact
/// 0 below -87.3. Branch-free so that loops over it vectorise.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // Round to nearest with the 1.5·2^23 trick: no rounding mode calls.
    let n = (x * LOG2E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    let bits = ((n as i32 + 127) << 23) as u32;
    y * f32::from_bits(bits)
}

/// In-place `act(x)` over a slice.
pub fn act_inplace(xs: &mut [f32], act: Activation) {
    match act {
        Activation::None => {}
        Activation::Relu => xs.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::QuickGelu => xs.iter_mut().for_each(|x| *x /= 1.0 + exp_f32(-1.702 * *x)),
        Activation::Gelu => xs
            .iter_mut()
            .for_each(|x| *x = apply_act(Activation::Gelu, *x)),
    }
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
