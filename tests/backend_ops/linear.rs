//! The Linear family: `linear` (bias, activation and residual fused) and
//! `bmm_nt`.

use segvol::backend::{Activation, Backend};

use crate::harness::{act, input, on_every_backend, with_last, Family, Input, OnBackend, Rng};

/// (x shape, N, bias, activation, residual).
type LinearCase = (Vec<usize>, usize, bool, Activation, bool);

struct Linear;

impl Family for Linear {
    type Case = LinearCase;
    const NAME: &'static str = "linear";
    const PLAIN_BF16: bool = true;
    fn label((xs, n, _, a, res): &LinearCase) -> String {
        format!("{xs:?}x{n} {a:?} res={res}")
    }
    fn inputs((xs, n, bias, _, res): &LinearCase, rng: &mut Rng) -> Vec<Input> {
        let k = *xs.last().unwrap();
        let mut v = vec![
            input(rng, xs, 1.0),
            input(rng, &[*n, k], 1.0 / (k as f32).sqrt()),
        ];
        if *bias {
            v.push(input(rng, &[*n], 0.5));
        }
        if *res {
            v.push(input(rng, &with_last(xs, *n), 1.0));
        }
        v
    }
    fn run<B: Backend>(
        be: &B,
        (_, _, bias, a, res): &LinearCase,
        x: &[&B::Tensor],
    ) -> segvol::Result<B::Tensor> {
        let b = bias.then(|| x[2]);
        let r = res.then(|| x[x.len() - 1]);
        be.linear(x[0], x[1], b, *a, r)
    }
    fn definition<'a>(
        (xs, n, bias, a, res): &'a LinearCase,
        x: &'a [Input],
    ) -> Box<dyn Fn(usize) -> f64 + 'a> {
        let k = *xs.last().unwrap();
        Box::new(move |i| {
            let (row, col) = (i / n, i % n);
            let mut v: f64 = (0..k)
                .map(|j| x[0].data[row * k + j] as f64 * x[1].data[col * k + j] as f64)
                .sum();
            if *bias {
                v += x[2].data[col] as f64;
            }
            let mut v = act(*a, v);
            if *res {
                v += x[x.len() - 1].data[i] as f64;
            }
            v
        })
    }
}

#[test]
fn linear_on_every_backend() {
    on_every_backend::<Linear>(&[
        (vec![1, 2048, 768], 2304, false, Activation::None, false), // ViT qkv
        (vec![1, 2048, 768], 3072, true, Activation::Gelu, false),  // ViT MLP 1
        (vec![1, 2048, 3072], 768, true, Activation::None, true),   // ViT MLP 2 + residual
        (vec![3, 77, 512], 2048, true, Activation::QuickGelu, false), // CLIP MLP
        (vec![2, 8, 768], 2048, true, Activation::Relu, false),     // decoder MLP
        (vec![7, 37], 19, true, Activation::Gelu, false),           // awkward sizes
        (vec![5, 3, 13], 9, true, Activation::None, true),
        (vec![1, 768], 96, false, Activation::Relu, false),
    ]);
}

/// (batch, M, K, N).
struct BmmNt;

impl Family for BmmNt {
    type Case = (usize, usize, usize, usize);
    const NAME: &'static str = "bmm_nt";
    fn label(c: &Self::Case) -> String {
        format!("{c:?}")
    }
    fn inputs(&(b, m, k, n): &Self::Case, rng: &mut Rng) -> Vec<Input> {
        vec![input(rng, &[b, m, k], 1.0), input(rng, &[b, n, k], 1.0)]
    }
    fn run<B: Backend>(be: &B, _: &Self::Case, x: &[&B::Tensor]) -> segvol::Result<B::Tensor> {
        be.bmm_nt(x[0], x[1])
    }
    fn definition<'a>(
        &(_, m, k, n): &'a Self::Case,
        x: &'a [Input],
    ) -> Box<dyn Fn(usize) -> f64 + 'a> {
        Box::new(move |i| {
            let (bi, r, c) = (i / (m * n), (i / n) % m, i % n);
            (0..k)
                .map(|j| {
                    x[0].data[(bi * m + r) * k + j] as f64 * x[1].data[(bi * n + c) * k + j] as f64
                })
                .sum()
        })
    }
}

#[test]
fn bmm_nt_on_every_backend() {
    on_every_backend::<BmmNt>(&[(2, 4, 96, 32 * 64 * 64), (3, 7, 13, 11), (1, 1, 768, 5)]);
}

struct Refusals;

impl OnBackend for Refusals {
    fn check<B: Backend>(&self, be: &B, label: &str, _: &dyn Fn(&[f32]) -> Vec<f32>) {
        let x = be.upload(&[0.5; 24], &[4, 6]).unwrap();
        let w = be.upload(&[0.5; 15], &[3, 5]).unwrap();
        assert!(
            be.linear(&x, &w, None, Activation::None, None).is_err(),
            "[{label}]"
        );
        assert!(be.bmm_nt(&x, &w).is_err(), "[{label}]");
    }
}

#[test]
fn linear_refuses_mismatched_shapes() {
    crate::harness::for_each_backend("linear refusals", &Refusals);
}
