//! `F.interpolate`: trilinear (align_corners=False), legacy nearest and
//! nearest-exact, with ATen's index rules written out here as the
//! definition (float32 scale and source index, as ATen computes them).

use segvol::backend::{Backend, Interp};

use crate::harness::{input, on_every_backend, Family, Input, Rng};

/// (input shape [B, C, D, H, W], output dims, mode).
type Case = ([usize; 5], [usize; 3], Interp);

/// Source taps `(i0, i1, λ0, λ1)` of output index `dst` along one axis.
fn taps(mode: Interp, dst: usize, inp: usize, out: usize) -> (usize, usize, f32, f32) {
    let s = inp as f32 / out as f32;
    match mode {
        Interp::Nearest => {
            let i = if out == inp {
                dst
            } else if out == 2 * inp {
                dst >> 1
            } else {
                ((dst as f32 * s).floor() as usize).min(inp - 1)
            };
            (i, i, 1.0, 0.0)
        }
        Interp::NearestExact => {
            let i = (((dst as f32 + 0.5) * s).floor() as usize).min(inp - 1);
            (i, i, 1.0, 0.0)
        }
        Interp::Trilinear => {
            let src = (s * (dst as f32 + 0.5) - 0.5).max(0.0);
            let i0 = src as usize;
            let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
            let l1 = src - i0 as f32;
            (i0, i1, 1.0 - l1, l1)
        }
    }
}

struct Resize;

impl Family for Resize {
    type Case = Case;
    const NAME: &'static str = "resize";
    const EXACT_F32: bool = true;
    fn label(c: &Case) -> String {
        format!("{:?}->{:?} {:?}", c.0, c.1, c.2)
    }
    fn inputs(c: &Case, rng: &mut Rng) -> Vec<Input> {
        vec![input(rng, &c.0, 2.0)]
    }
    fn run<B: Backend>(be: &B, c: &Case, x: &[&B::Tensor]) -> segvol::Result<B::Tensor> {
        be.resize(x[0], c.1, c.2)
    }
    fn definition<'a>(&(s, out, mode): &'a Case, x: &'a [Input]) -> Box<dyn Fn(usize) -> f64 + 'a> {
        let inp = [s[2], s[3], s[4]];
        let n_out: usize = out.iter().product();
        Box::new(move |i| {
            let plane = i / n_out;
            let (od, oh, ow) = (
                i / (out[1] * out[2]) % out[0],
                i / out[2] % out[1],
                i % out[2],
            );
            let (d0, d1, a0, a1) = taps(mode, od, inp[0], out[0]);
            let (h0, h1, b0, b1) = taps(mode, oh, inp[1], out[1]);
            let (w0, w1, c0, c1) = taps(mode, ow, inp[2], out[2]);
            let at = |d: usize, h: usize, w: usize| {
                x[0].data[((plane * inp[0] + d) * inp[1] + h) * inp[2] + w] as f64
            };
            let mut v = 0.0;
            for (d, ld) in [(d0, a0), (d1, a1)] {
                for (h, lh) in [(h0, b0), (h1, b1)] {
                    for (w, lw) in [(w0, c0), (w1, c1)] {
                        v += ld as f64 * lh as f64 * lw as f64 * at(d, h, w);
                    }
                }
            }
            v
        })
    }
}

#[test]
fn resize_on_every_backend() {
    let mut cases = vec![];
    for (shape, out) in [
        ([1, 2, 5, 7, 9], [8, 11, 4]),
        ([2, 1, 4, 6, 6], [4, 6, 6]),
        ([1, 1, 32, 64, 64], [64, 128, 128]),
        ([1, 3, 20, 30, 40], [7, 9, 13]),
        ([1, 1, 32, 64, 64], [32, 256, 256]), // the decoder's output upsampling
    ] {
        for mode in [Interp::Trilinear, Interp::Nearest, Interp::NearestExact] {
            cases.push((shape, out, mode));
        }
    }
    on_every_backend::<Resize>(&cases);
}
