//! Scalar reference activations for the tests: exact GELU through an f64
//! erf (W. J. Cody's rational approximations), CLIP's quick_gelu, ReLU. The
//! backends have their own vectorised versions; these are what they are
//! checked against.

use super::Activation;

/// Exact GELU in f32 as PyTorch computes it.
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + libm_erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// CLIP's quick_gelu.
#[inline]
pub fn quick_gelu(x: f32) -> f32 {
    x / (1.0 + (-1.702 * x).exp())
}

#[inline]
pub fn apply_act(act: Activation, x: f32) -> f32 {
    match act {
        Activation::None => x,
        Activation::Gelu => gelu_erf(x),
        Activation::QuickGelu => quick_gelu(x),
        Activation::Relu => x.max(0.0),
    }
}

/// erf in f32, computed in f64 for a correctly rounded-enough result: the
/// fixtures' tolerance is far above the difference.
#[inline]
fn libm_erf(x: f32) -> f32 {
    erf_f64(x as f64) as f32
}

/// W. J. Cody's rational approximations (as in most libms), |error| < 1e-15.
/// The coefficients are Cody's, digit for digit.
#[allow(clippy::excessive_precision)]
pub fn erf_f64(x: f64) -> f64 {
    let ax = x.abs();
    if ax < 0.5 {
        const P: [f64; 5] = [
            3.209377589138469472562e03,
            3.774852376853020208137e02,
            1.138641541510501556495e02,
            3.161123743870565596947e00,
            1.857777061846031526730e-1,
        ];
        const Q: [f64; 4] = [
            2.844236833439170622273e03,
            1.282616526077372275645e03,
            2.440246379344441733056e02,
            2.360129095234412093499e01,
        ];
        let z = x * x;
        let num = (((P[4] * z + P[3]) * z + P[2]) * z + P[1]) * z + P[0];
        let den = (((z + Q[3]) * z + Q[2]) * z + Q[1]) * z + Q[0];
        x * num / den
    } else {
        let r = erfc_pos(ax);
        if x > 0.0 {
            1.0 - r
        } else {
            r - 1.0
        }
    }
}

#[allow(clippy::excessive_precision)]
fn erfc_pos(x: f64) -> f64 {
    if x > 27.0 {
        return 0.0;
    }
    let (num, den) = if x < 4.0 {
        const P: [f64; 9] = [
            1.23033935479799725272e03,
            2.05107837782607146532e03,
            1.71204761263407058314e03,
            8.81952221241769090411e02,
            2.98635138197400131132e02,
            6.61191906371416294775e01,
            8.88314979438837594118e00,
            5.64188496988670089180e-1,
            2.15311535474403846343e-8,
        ];
        const Q: [f64; 8] = [
            1.23033935480374942043e03,
            3.43936767414372163696e03,
            4.36261909014324715820e03,
            3.29079923573345962678e03,
            1.62138957456669018874e03,
            5.37181101862009857509e02,
            1.17693950891312499305e02,
            1.57449261107098347253e01,
        ];
        let mut n = P[8];
        for i in (0..8).rev() {
            n = n * x + P[i];
        }
        let mut d = 1.0;
        for i in (0..8).rev() {
            d = d * x + Q[i];
        }
        (n, d)
    } else {
        const P: [f64; 6] = [
            -6.58749161529837803157e-04,
            -1.60837851487422766278e-02,
            -1.25781726111229246204e-01,
            -3.60344899949804439429e-01,
            -3.05326634961232344035e-01,
            -1.63153871373020978498e-02,
        ];
        const Q: [f64; 5] = [
            2.33520497626869185443e-03,
            6.05183413124413191178e-02,
            5.27905102951428412248e-01,
            1.87295284992346725209e00,
            2.56852019228982242072e00,
        ];
        let z = 1.0 / (x * x);
        let mut n = P[5];
        for i in (0..5).rev() {
            n = n * z + P[i];
        }
        let mut d = 1.0;
        for i in (0..5).rev() {
            d = d * z + Q[i];
        }
        let r = z * n / d;
        ((std::f64::consts::FRAC_2_SQRT_PI / 2.0 + r) / x, 1.0)
    };
    (-x * x).exp() * num / den
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        let cases = [
            (0.0, 0.0),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (-1.5, -0.9661051464753108),
            (3.5, 0.9999992569016276),
            (5.0, 0.9999999999984626),
        ];
        for (x, want) in cases {
            let got = erf_f64(x);
            assert!((got - want).abs() < 1e-13, "erf({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn activations() {
        assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu_erf(-2.0) - (-0.045_500_26)).abs() < 1e-6);
        assert!((quick_gelu(1.0) - 0.845_795_4).abs() < 1e-6);
        assert_eq!(apply_act(Activation::Relu, -3.0), 0.0);
    }
}
