//! The CUDA side of the harness: the backends under test, inputs quantised
//! to what the device holds, outputs poisoned with NaN before every op (an
//! element an op fails to write fails the comparison), and tolerances
//! (relative L2 against the CPU): f32 1e-5, bf16 1e-2. In bf16 the CPU gets
//! the same bf16-rounded inputs.
//!
//! Without a CUDA device every check prints "SKIP: no CUDA device (reason)"
//! and returns. With a device, a backend that fails to start is a failure.

use std::sync::OnceLock;

use segvol::backend::cuda::{self, CudaBackend, CudaOptions, Precision};
use segvol::backend::Backend;

use crate::common;
use crate::harness::{cpu, run_on, seed, Family, Input};

/// Why CUDA tests cannot run here, or None when a device is present.
fn no_device_reason() -> Option<String> {
    match cuda::cuda_device_count() {
        Ok(0) => Some("the driver reports 0 devices".into()),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

fn backend(p: Precision, lt: bool) -> &'static CudaBackend {
    static CELLS: [OnceLock<CudaBackend>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = match (p, lt) {
        (Precision::F32, _) => 0,
        (Precision::Bf16, true) => 1,
        (Precision::Bf16, false) => 2,
    };
    CELLS[i].get_or_init(|| {
        let be = CudaBackend::with_options(0, p, CudaOptions { cublaslt: lt })
            .unwrap_or_else(|e| panic!("a CUDA device is present but the {p} backend failed: {e}"));
        be.set_poison_outputs(true);
        eprintln!("using {}", be.name());
        be
    })
}

/// The CUDA backends a test runs on: f32, bf16 (cuBLASLt) and, when asked,
/// bf16 through plain cuBLAS. None (after printing SKIP) without a device.
pub fn backends(
    test: &str,
    with_plain_bf16: bool,
) -> Option<Vec<(&'static CudaBackend, &'static str)>> {
    if let Some(why) = no_device_reason() {
        eprintln!("SKIP: no CUDA device ({why}) [{test}]");
        return None;
    }
    let mut v = vec![
        (backend(Precision::F32, true), "f32"),
        (backend(Precision::Bf16, true), "bf16"),
    ];
    if with_plain_bf16 {
        v.push((backend(Precision::Bf16, false), "bf16-cublas"));
    }
    Some(v)
}

/// Values as the device holds them: bf16-rounded in bf16 mode.
pub fn quantise(be: &CudaBackend, v: &[f32]) -> Vec<f32> {
    match be.precision() {
        Precision::F32 => v.to_vec(),
        Precision::Bf16 => v
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect(),
    }
}

fn tol(be: &CudaBackend) -> f64 {
    match be.precision() {
        Precision::F32 => 1e-5,
        Precision::Bf16 => 1e-2,
    }
}

/// Every case on every CUDA backend against the CPU on the same
/// (quantised) inputs: same shape, every element written and finite,
/// relative L2 error under the precision's tolerance.
pub fn against_cpu<F: Family>(cases: &[F::Case], inputs: &[Vec<Input>]) {
    let Some(bes) = backends(F::NAME, F::PLAIN_BF16) else {
        return;
    };
    for (be, label) in bes {
        for (c, x) in cases.iter().zip(inputs) {
            let q: Vec<Input> = x
                .iter()
                .map(|i| Input {
                    data: quantise(be, &i.data),
                    shape: i.shape.clone(),
                })
                .collect();
            let got = run_on::<F, _>(be, c, &q);
            let want = run_on::<F, _>(cpu(), c, &q);
            let what = format!("{} {}", F::NAME, F::label(c));
            assert_eq!(be.shape(&got), want.shape(), "{what} [{label}]: shape");
            let g = be.download(&got).unwrap();
            if let Some(i) = g.iter().position(|v| !v.is_finite()) {
                panic!(
                    "{what} [{label}]: element {i} of {} is {} (unwritten or overflow)",
                    g.len(),
                    g[i]
                );
            }
            if F::EXACT_F32 && be.precision() == Precision::F32 {
                assert_eq!(g, want.data(), "{what} [{label}]: not exact in f32");
            }
            let (rel, max) = common::compare(&g, want.data());
            eprintln!("{what} [{label}]: rel L2 {rel:.3e}, max abs {max:.3e}");
            assert!(
                rel < tol(be),
                "{what} [{label}]: relative L2 error {rel:.3e} over {:.0e} (seed {})",
                tol(be),
                seed()
            );
        }
    }
}
