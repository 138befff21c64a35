//! Every kernel on every instruction set this CPU has, against f64 and
//! against each other.

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
