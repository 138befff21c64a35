//! Runs a family's cases on every backend: the CPU against the op's
//! definition (always), and each CUDA backend (f32, bf16 through cuBLASLt,
//! and for the Linear family bf16 through plain cuBLAS) against the CPU on
//! the same inputs, when a device is present.

use std::sync::OnceLock;

use segvol::backend::cpu::CpuBackend;
use segvol::backend::Backend;

use crate::common;

/// Relative L2 error the CPU may have against the definition (evaluated in
/// f64 on a sample of output elements): f32 rounding only.
const CPU_TOL: f64 = 1e-5;

/// Output elements compared with the definition per case.
const SAMPLES: usize = 997;

pub fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let s = std::env::var("SEGVOL_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("backend_ops seed = {s} (SEGVOL_TEST_SEED={s} repeats this run)");
        s
    })
}

/// splitmix64, seeded per test from the run's seed.
pub struct Rng(u64);

impl Rng {
    pub fn for_test(name: &str) -> Self {
        let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        Rng(seed() ^ h)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-a, a).
    pub fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a)
            .collect()
    }
}

/// One input of a case: host values and shape.
#[derive(Clone)]
pub struct Input {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

/// Uniform values in [-a, a) of the given shape.
pub fn input(rng: &mut Rng, shape: &[usize], a: f32) -> Input {
    Input {
        data: rng.vec(shape.iter().product(), a),
        shape: shape.to_vec(),
    }
}

pub fn cpu() -> &'static CpuBackend {
    static CPU: OnceLock<CpuBackend> = OnceLock::new();
    CPU.get_or_init(CpuBackend::new)
}

/// An op family's cases, written once for every backend.
pub trait Family {
    type Case;
    /// The op, for messages and the seed.
    const NAME: &'static str;
    /// Also run bf16 through plain cuBLAS (the fallback of cuBLASLt).
    const PLAIN_BF16: bool = false;
    /// In f32 the CUDA result equals the CPU's bit for bit (gathers with
    /// separately rounded arithmetic).
    const EXACT_F32: bool = false;
    fn label(c: &Self::Case) -> String;
    /// The case's inputs, in the order `run` takes them.
    fn inputs(c: &Self::Case, rng: &mut Rng) -> Vec<Input>;
    fn run<B: Backend>(be: &B, c: &Self::Case, x: &[&B::Tensor]) -> segvol::Result<B::Tensor>;
    /// The result's element `i` by the op's definition, in f64.
    fn definition<'a>(c: &'a Self::Case, x: &'a [Input]) -> Box<dyn Fn(usize) -> f64 + 'a>;
}

/// Uploads `x` to `be` and runs the case.
pub fn run_on<F: Family, B: Backend>(be: &B, c: &F::Case, x: &[Input]) -> B::Tensor {
    let t: Vec<B::Tensor> = x
        .iter()
        .map(|i| be.upload(&i.data, &i.shape).unwrap())
        .collect();
    let refs: Vec<&B::Tensor> = t.iter().collect();
    F::run(be, c, &refs).unwrap_or_else(|e| panic!("{} {}: {e}", F::NAME, F::label(c)))
}

/// Every case on the CPU against the definition, then on every CUDA backend
/// against the CPU (or a SKIP line saying why there is none).
pub fn on_every_backend<F: Family>(cases: &[F::Case]) {
    let mut rng = Rng::for_test(F::NAME);
    let inputs: Vec<Vec<Input>> = cases.iter().map(|c| F::inputs(c, &mut rng)).collect();
    for (c, x) in cases.iter().zip(&inputs) {
        cpu_against_definition::<F>(c, x);
    }
    #[cfg(feature = "cuda")]
    crate::cuda::against_cpu::<F>(cases, &inputs);
    #[cfg(not(feature = "cuda"))]
    eprintln!("SKIP: {} on CUDA (built without the cuda feature)", F::NAME);
}

fn cpu_against_definition<F: Family>(c: &F::Case, x: &[Input]) {
    let out = run_on::<F, _>(cpu(), c, x);
    let got = out.data();
    let def = F::definition(c, x);
    let n = got.len();
    let step = (n / SAMPLES).max(1);
    // A stride plus the last element: every part of the output, both ends.
    let idx: Vec<usize> = (0..n).step_by(step).chain(n.checked_sub(1)).collect();
    let g: Vec<f32> = idx.iter().map(|&i| got[i]).collect();
    let w: Vec<f32> = idx.iter().map(|&i| def(i) as f32).collect();
    let (rel, max) = common::compare(&g, &w);
    eprintln!(
        "{} {} [cpu vs definition, {} elements]: rel L2 {rel:.3e}, max abs {max:.3e}",
        F::NAME,
        F::label(c),
        idx.len()
    );
    assert!(
        rel < CPU_TOL,
        "{} {} [cpu]: relative L2 error {rel:.3e} against the definition over {CPU_TOL:.0e} (seed {})",
        F::NAME,
        F::label(c),
        seed()
    );
}

/// `act(v)` by the definitions PyTorch uses.
pub fn act(a: segvol::backend::Activation, v: f64) -> f64 {
    use segvol::backend::Activation::*;
    match a {
        None => v,
        Gelu => 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)),
        QuickGelu => v / (1.0 + (-1.702 * v).exp()),
        Relu => v.max(0.0),
    }
}

/// The shape with its last axis replaced.
pub fn with_last(shape: &[usize], n: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    *s.last_mut().unwrap() = n;
    s
}

/// A check written once against `Backend`, for the ops whose results are
/// exact (data movement) or are refusals: run on the CPU and on every CUDA
/// backend. `quantise` gives values as the backend stores them.
pub trait OnBackend {
    fn check<B: Backend>(&self, be: &B, label: &str, quantise: &dyn Fn(&[f32]) -> Vec<f32>);
}

pub fn for_each_backend(test: &str, t: &impl OnBackend) {
    t.check(cpu(), "cpu", &|v| v.to_vec());
    #[cfg(feature = "cuda")]
    if let Some(bes) = crate::cuda::backends(test, false) {
        for (be, label) in bes {
            t.check(be, label, &|v| crate::cuda::quantise(be, v));
        }
    }
    #[cfg(not(feature = "cuda"))]
    eprintln!("SKIP: {test} on CUDA (built without the cuda feature)");
}
