//! LayerNorms: over the last axis (`layer_norm`) and over whole batch items
//! (`layer_norm_item`, SegVol's decoder norm).

use segvol::backend::{Activation, Backend};

use crate::harness::{act, input, on_every_backend, Family, Input, Rng};

const EPS: f32 = 1e-5;

/// Mean and population variance, in f64.
fn stats(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// (rows, width).
struct Rows;

impl Family for Rows {
    type Case = (usize, usize);
    const NAME: &'static str = "layer_norm";
    fn label(c: &Self::Case) -> String {
        format!("{}x{}", c.0, c.1)
    }
    fn inputs(&(rows, c): &Self::Case, rng: &mut Rng) -> Vec<Input> {
        let mut x = input(rng, &[1, rows, c], 2.0);
        // An offset mean makes the variance pass matter.
        x.data.iter_mut().for_each(|v| *v += 3.0);
        vec![x, input(rng, &[c], 1.0), input(rng, &[c], 1.0)]
    }
    fn run<B: Backend>(be: &B, _: &Self::Case, x: &[&B::Tensor]) -> segvol::Result<B::Tensor> {
        be.layer_norm(x[0], x[1], x[2], EPS)
    }
    fn definition<'a>(&(_, c): &'a Self::Case, x: &'a [Input]) -> Box<dyn Fn(usize) -> f64 + 'a> {
        Box::new(move |i| {
            let (r, j) = (i / c, i % c);
            let (mean, var) = stats(&x[0].data[r * c..(r + 1) * c]);
            (x[0].data[i] as f64 - mean) / (var + EPS as f64).sqrt() * x[1].data[j] as f64
                + x[2].data[j] as f64
        })
    }
}

#[test]
fn layer_norm_on_every_backend() {
    // Widths covering every CUDA kernel variant (4/8/16/32 per lane, block).
    on_every_backend::<Rows>(&[
        (2048, 768),
        (77, 512),
        (8, 96),
        (5, 37),
        (3, 200),
        (9, 1500),
        (1, 1024),
    ]);
}

/// (shape, activation).
struct Item;

impl Family for Item {
    type Case = (Vec<usize>, Activation);
    const NAME: &'static str = "layer_norm_item";
    fn label(c: &Self::Case) -> String {
        format!("{:?} {:?}", c.0, c.1)
    }
    fn inputs((shape, _): &Self::Case, rng: &mut Rng) -> Vec<Input> {
        let mut x = input(rng, shape, 2.0);
        x.data.iter_mut().for_each(|v| *v = *v * 0.7 - 1.5);
        vec![
            x,
            input(rng, &shape[1..], 1.0),
            input(rng, &shape[1..], 1.0),
        ]
    }
    fn run<B: Backend>(be: &B, (_, a): &Self::Case, x: &[&B::Tensor]) -> segvol::Result<B::Tensor> {
        be.layer_norm_item(x[0], x[1], x[2], EPS, *a)
    }
    fn definition<'a>(
        (shape, a): &'a Self::Case,
        x: &'a [Input],
    ) -> Box<dyn Fn(usize) -> f64 + 'a> {
        let item: usize = shape[1..].iter().product();
        let st: Vec<(f64, f64)> = x[0].data.chunks(item).map(stats).collect();
        Box::new(move |i| {
            let (mean, var) = st[i / item];
            let j = i % item;
            let v = (x[0].data[i] as f64 - mean) / (var + EPS as f64).sqrt() * x[1].data[j] as f64
                + x[2].data[j] as f64;
            act(*a, v)
        })
    }
}

#[test]
fn layer_norm_item_on_every_backend() {
    on_every_backend::<Item>(&[
        (vec![1, 192, 16, 32, 32], Activation::Gelu), // SegVol's decoder
        (vec![2, 3, 5, 7], Activation::None),
        (vec![3, 1000], Activation::Relu),
    ]);
}
