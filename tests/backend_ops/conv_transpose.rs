//! ConvTranspose3d with kernel 2 and stride 2 on channels-last data.

use segvol::backend::{Activation, Backend};

use crate::harness::{act, input, on_every_backend, Family, Input, Rng};

/// (batch, input grid, Cin, Cout, activation).
type Case = (usize, [usize; 3], usize, usize, Activation);

struct ConvTranspose;

impl Family for ConvTranspose {
    type Case = Case;
    const NAME: &'static str = "conv_transpose_k2s2";
    fn label(c: &Case) -> String {
        format!("{}x{:?} {}->{} {:?}", c.0, c.1, c.2, c.3, c.4)
    }
    fn inputs(&(b, grid, cin, cout, _): &Case, rng: &mut Rng) -> Vec<Input> {
        let s: usize = grid.iter().product();
        vec![
            input(rng, &[b, s, cin], 1.0),
            input(rng, &[cin, cout, 2, 2, 2], 1.0 / (cin as f32).sqrt()),
            input(rng, &[cout], 0.5),
        ]
    }
    fn run<B: Backend>(be: &B, c: &Case, x: &[&B::Tensor]) -> segvol::Result<B::Tensor> {
        be.conv_transpose_k2s2(x[0], c.1, x[1], x[2], c.4)
    }
    fn definition<'a>(
        &(_, g, cin, cout, a): &'a Case,
        x: &'a [Input],
    ) -> Box<dyn Fn(usize) -> f64 + 'a> {
        let s: usize = g.iter().product();
        let o = [2 * g[0], 2 * g[1], 2 * g[2]];
        Box::new(move |i| {
            let co = i % cout;
            let vox = (i / cout) % (8 * s);
            let b = i / (cout * 8 * s);
            let (z, y, xx) = (vox / (o[1] * o[2]), (vox / o[2]) % o[1], vox % o[2]);
            let src = (z / 2 * g[1] + y / 2) * g[2] + xx / 2;
            let kk = (z % 2) * 4 + (y % 2) * 2 + xx % 2;
            let mut v = x[2].data[co] as f64;
            for ci in 0..cin {
                v += x[0].data[(b * s + src) * cin + ci] as f64
                    * x[1].data[(ci * cout + co) * 8 + kk] as f64;
            }
            act(a, v)
        })
    }
}

#[test]
fn conv_transpose_on_every_backend() {
    on_every_backend::<ConvTranspose>(&[
        (1, [8, 16, 16], 768, 192, Activation::None), // decoder #1
        (1, [16, 32, 32], 192, 96, Activation::Gelu), // decoder #2
        (2, [2, 3, 2], 12, 5, Activation::Relu),
        (2, [3, 5, 40], 7, 4, Activation::Gelu), // several CPU tasks per item
    ]);
}
