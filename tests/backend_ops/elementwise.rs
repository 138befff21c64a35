//! Additions: `add` and `add_broadcast`.

use segvol::backend::Backend;

use crate::harness::{for_each_backend, input, on_every_backend, Family, Input, OnBackend, Rng};

/// (x shape, the other operand's shape): the same shape for `add`, a
/// suffix for `add_broadcast`.
type AddCase = (Vec<usize>, Vec<usize>);

struct Add;

impl Family for Add {
    type Case = AddCase;
    const NAME: &'static str = "add";
    fn label((a, b): &AddCase) -> String {
        format!("{a:?} + {b:?}")
    }
    fn inputs((a, b): &AddCase, rng: &mut Rng) -> Vec<Input> {
        vec![input(rng, a, 2.0), input(rng, b, 2.0)]
    }
    fn run<B: Backend>(be: &B, (a, b): &AddCase, x: &[&B::Tensor]) -> segvol::Result<B::Tensor> {
        if a == b {
            be.add(x[0], x[1])
        } else {
            be.add_broadcast(x[0], x[1])
        }
    }
    fn definition<'a>(_: &'a AddCase, x: &'a [Input]) -> Box<dyn Fn(usize) -> f64 + 'a> {
        let period = x[1].data.len();
        Box::new(move |i| x[0].data[i] as f64 + x[1].data[i % period] as f64)
    }
}

#[test]
fn additions_on_every_backend() {
    on_every_backend::<Add>(&[
        (vec![2, 2048, 768], vec![2, 2048, 768]),
        (vec![2, 2048, 768], vec![1, 2048, 768]),
        (vec![2, 2048, 768], vec![768]),
        (vec![2, 2048, 768], vec![2048, 768]),
        (vec![3, 5, 7], vec![7]),
    ]);
}

struct Refusals;

impl OnBackend for Refusals {
    fn check<B: Backend>(&self, be: &B, label: &str, _: &dyn Fn(&[f32]) -> Vec<f32>) {
        let a = be.upload(&[1.0; 6], &[2, 3]).unwrap();
        let b = be.upload(&[1.0; 6], &[3, 2]).unwrap();
        let v = be.upload(&[1.0; 2], &[2]).unwrap();
        assert!(be.add(&a, &b).is_err(), "[{label}] add");
        assert!(be.add_broadcast(&a, &v).is_err(), "[{label}] add_broadcast");
        assert!(be.add_broadcast(&v, &a).is_err(), "[{label}] add_broadcast");
    }
}

#[test]
fn additions_refuse_mismatched_shapes() {
    for_each_backend("add refusals", &Refusals);
}
