//! Multi-head attention, on separate operands and on column blocks of one
//! packed tensor (the ViT's qkv), causal or not.

use segvol::backend::{AttnOperand, AttnSpec, Backend};

use crate::harness::{for_each_backend, input, on_every_backend, Family, Input, OnBackend, Rng};

struct Case {
    name: &'static str,
    batch: usize,
    heads: usize,
    dh: usize,
    q_len: usize,
    kv_len: usize,
    causal: bool,
    /// q, k, v as column blocks of one [B, len, 3·width (+pad)] tensor.
    packed: bool,
    /// Extra columns per row (makes the row stride not a multiple of 8).
    pad: usize,
}

impl Case {
    fn width(&self) -> usize {
        self.heads * self.dh
    }
    fn spec(&self) -> AttnSpec {
        AttnSpec {
            batch: self.batch,
            heads: self.heads,
            head_dim: self.dh,
            q_len: self.q_len,
            kv_len: self.kv_len,
            scale: 1.0 / (self.dh as f32).sqrt(),
            causal: self.causal,
        }
    }
    /// (input index, row stride, column offset) of q, k and v.
    fn operands(&self) -> [(usize, usize, usize); 3] {
        let w = self.width();
        if self.packed {
            let ld = 3 * w + self.pad;
            [(0, ld, 0), (0, ld, w), (0, ld, 2 * w)]
        } else {
            let ld = w + self.pad;
            [(0, ld, 0), (1, ld, 0), (2, ld, 0)]
        }
    }
}

struct Attention;

impl Family for Attention {
    type Case = Case;
    const NAME: &'static str = "attention";
    fn label(c: &Case) -> String {
        c.name.to_string()
    }
    fn inputs(c: &Case, rng: &mut Rng) -> Vec<Input> {
        let w = c.width();
        if c.packed {
            assert_eq!(c.q_len, c.kv_len);
            vec![input(rng, &[c.batch, c.q_len, 3 * w + c.pad], 2.0)]
        } else {
            vec![
                input(rng, &[c.batch, c.q_len, w + c.pad], 2.0),
                input(rng, &[c.batch, c.kv_len, w + c.pad], 2.0),
                input(rng, &[c.batch, c.kv_len, w + c.pad], 2.0),
            ]
        }
    }
    fn run<B: Backend>(be: &B, c: &Case, x: &[&B::Tensor]) -> segvol::Result<B::Tensor> {
        let [q, k, v] = c.operands().map(|(t, _, col)| AttnOperand::at(x[t], col));
        be.attention(q, k, v, &c.spec())
    }
    fn definition<'a>(c: &'a Case, x: &'a [Input]) -> Box<dyn Fn(usize) -> f64 + 'a> {
        let [q, k, v] = c.operands();
        let at =
            move |(t, ld, col): (usize, usize, usize),
                  b: usize,
                  row: usize,
                  len: usize,
                  j: usize| { x[t].data[(b * len + row) * ld + col + j] as f64 };
        let scale = 1.0 / (c.dh as f64).sqrt();
        Box::new(move |i| {
            let w = c.width();
            let (b, qi, col) = (i / (c.q_len * w), (i / w) % c.q_len, i % w);
            let (h, d) = (col / c.dh, col % c.dh);
            let keys = if c.causal { qi + 1 } else { c.kv_len };
            let s: Vec<f64> = (0..keys)
                .map(|kj| {
                    (0..c.dh)
                        .map(|e| {
                            at(q, b, qi, c.q_len, h * c.dh + e)
                                * at(k, b, kj, c.kv_len, h * c.dh + e)
                        })
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
            s.iter()
                .enumerate()
                .map(|(kj, sv)| (sv - m).exp() / z * at(v, b, kj, c.kv_len, h * c.dh + d))
                .sum()
        })
    }
}

#[test]
fn attention_on_every_backend() {
    #[allow(clippy::too_many_arguments)]
    let case = |name, batch, heads, dh, q_len, kv_len, causal, packed, pad| Case {
        name,
        batch,
        heads,
        dh,
        q_len,
        kv_len,
        causal,
        packed,
        pad,
    };
    on_every_backend::<Attention>(&[
        case("vit", 1, 12, 64, 2048, 2048, false, true, 0),
        case("clip causal", 3, 8, 64, 77, 77, true, true, 0),
        case("decoder self", 2, 8, 96, 7, 7, false, false, 0),
        case("token->image", 2, 8, 48, 8, 2048, false, false, 0),
        case("image->token", 2, 8, 48, 2048, 8, false, false, 0),
        case("ragged tiles", 2, 3, 64, 100, 130, false, false, 0),
        case("causal ragged", 1, 2, 32, 150, 150, true, true, 0),
        case("dh128", 1, 2, 128, 70, 65, false, false, 0),
        case("dh40 generic", 2, 3, 40, 33, 47, false, false, 0),
        case("unaligned ld", 1, 4, 64, 50, 50, false, true, 3),
        case("single", 1, 1, 16, 1, 1, false, false, 0),
    ]);
}

struct Refusals;

impl OnBackend for Refusals {
    fn check<B: Backend>(&self, be: &B, label: &str, _: &dyn Fn(&[f32]) -> Vec<f32>) {
        // Two heads of 8 need 16 columns; the tensor has 8.
        let t = be.upload(&[0.5; 40], &[1, 5, 8]).unwrap();
        let bad = AttnSpec {
            batch: 1,
            heads: 2,
            head_dim: 8,
            q_len: 5,
            kv_len: 5,
            scale: 1.0,
            causal: false,
        };
        let op = || AttnOperand::new(&t);
        assert!(be.attention(op(), op(), op(), &bad).is_err(), "[{label}]");
    }
}

#[test]
fn attention_refuses_operands_too_narrow() {
    for_each_backend("attention refusals", &Refusals);
}
