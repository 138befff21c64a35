//! MONAI's perceptron patch embedding plus the position embedding.

use segvol::backend::Backend;

use crate::harness::{input, on_every_backend, Family, Input, Rng};

/// (image shape [B, 1, D, H, W], patch, channels).
type Case = ([usize; 5], [usize; 3], usize);

struct PatchEmbed;

fn tokens(&(img, patch, _): &Case) -> [usize; 3] {
    [img[2] / patch[0], img[3] / patch[1], img[4] / patch[2]]
}

impl Family for PatchEmbed {
    type Case = Case;
    const NAME: &'static str = "patch_embed";
    fn label(c: &Case) -> String {
        format!("{:?}/{:?}->{}", c.0, c.1, c.2)
    }
    fn inputs(c: &Case, rng: &mut Rng) -> Vec<Input> {
        let (img, patch, ch) = *c;
        let n: usize = tokens(c).iter().product();
        let p: usize = patch.iter().product();
        vec![
            input(rng, &img, 1.0),
            input(rng, &[ch, p], 1.0 / (p as f32).sqrt()),
            input(rng, &[ch], 0.5),
            input(rng, &[1, n, ch], 0.5),
        ]
    }
    fn run<B: Backend>(be: &B, c: &Case, x: &[&B::Tensor]) -> segvol::Result<B::Tensor> {
        be.patch_embed(x[0], x[1], x[2], x[3], c.1)
    }
    fn definition<'a>(c: &'a Case, x: &'a [Input]) -> Box<dyn Fn(usize) -> f64 + 'a> {
        let (img, [pd, ph, pw], ch) = *c;
        let g = tokens(c);
        let n: usize = g.iter().product();
        let [d, h, w] = [img[2], img[3], img[4]];
        Box::new(move |i| {
            let (b, t, o) = (i / (n * ch), (i / ch) % n, i % ch);
            let (ga, gb, gc) = (t / (g[1] * g[2]), (t / g[2]) % g[1], t % g[2]);
            let mut v = x[2].data[o] as f64 + x[3].data[t * ch + o] as f64;
            // The block flattened in C order (pd, ph, pw).
            for a in 0..pd {
                for bb in 0..ph {
                    for cc in 0..pw {
                        let src = ((b * d + ga * pd + a) * h + gb * ph + bb) * w + gc * pw + cc;
                        let p = (a * ph + bb) * pw + cc;
                        v += x[0].data[src] as f64 * x[1].data[o * pd * ph * pw + p] as f64;
                    }
                }
            }
            v
        })
    }
}

#[test]
fn patch_embed_on_every_backend() {
    on_every_backend::<PatchEmbed>(&[
        ([1, 1, 32, 256, 256], [4, 16, 16], 768), // SegVol's ViT
        ([2, 1, 8, 12, 20], [2, 3, 4], 5),
    ]);
}
