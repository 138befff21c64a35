#![cfg(feature = "cuda")]
//! CudaBackend against CpuBackend, op by op, in both precisions, on fresh
//! random inputs (the seed is printed; SEGVOL_TEST_SEED repeats a run).
//! Outputs are poisoned with NaN before every op, so an element an op fails
//! to write fails the comparison. Tolerances (relative L2): f32 1e-5,
//! bf16 1e-2; in bf16 the CPU reference gets the same bf16-rounded inputs.
//!
//! Without a CUDA device every test prints "SKIP: no CUDA device (reason)"
//! and returns. With a device, a backend that fails to start is a failure.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use segvol::backend::cpu::CpuBackend;
use segvol::backend::cuda::{self, CudaBackend, CudaOptions, CudaTensor, Precision};
use segvol::backend::{Activation, AttnOperand, AttnSpec, Backend, Interp};
use segvol::weights::{Blob, Checkpoint, DType, Entry, Format};

// ---- harness ---------------------------------------------------------------

fn seed() -> u64 {
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
        eprintln!("cuda_backend seed = {s} (SEGVOL_TEST_SEED={s} repeats this run)");
        s
    })
}

struct Rng(u64);

impl Rng {
    fn for_test(name: &str) -> Self {
        let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        Rng(seed() ^ h)
    }
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-a, a).
    fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a)
            .collect()
    }
}

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

/// The backends a test runs on: f32, bf16 (cuBLASLt) and, when asked,
/// bf16 through plain cuBLAS. None (after printing SKIP) without a device.
fn backends(
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

fn cpu() -> &'static CpuBackend {
    static CPU: OnceLock<CpuBackend> = OnceLock::new();
    CPU.get_or_init(CpuBackend::new)
}

/// Inputs as the device will hold them: bf16-rounded in bf16 mode.
fn quantise(be: &CudaBackend, v: &[f32]) -> Vec<f32> {
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

/// One input on both backends (the same, quantised values).
struct Pair {
    c: segvol::backend::cpu::CpuTensor,
    g: CudaTensor,
}

fn pair(be: &CudaBackend, data: &[f32], shape: &[usize]) -> Pair {
    let q = quantise(be, data);
    Pair {
        c: cpu().upload(&q, shape).unwrap(),
        g: be.upload(&q, shape).unwrap(),
    }
}

fn rand_pair(be: &CudaBackend, rng: &mut Rng, shape: &[usize], a: f32) -> Pair {
    let n = shape.iter().product();
    pair(be, &rng.vec(n, a), shape)
}

/// Compares a device result with the CPU one: same shape, every element
/// finite, relative L2 error under the precision's tolerance.
fn expect_close(
    what: &str,
    label: &str,
    be: &CudaBackend,
    got: &CudaTensor,
    want: &segvol::backend::cpu::CpuTensor,
) {
    assert_eq!(be.shape(got), want.shape(), "{what} [{label}]: shape");
    let g = be.download(got).unwrap();
    if let Some(i) = g.iter().position(|v| !v.is_finite()) {
        panic!(
            "{what} [{label}]: element {i} of {} is {} (unwritten or overflow)",
            g.len(),
            g[i]
        );
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

// ---- data movement ---------------------------------------------------------

#[test]
fn upload_download_round_trip() {
    let Some(bes) = backends("upload_download_round_trip", false) else {
        return;
    };
    let mut rng = Rng::for_test("round_trip");
    for (be, label) in bes {
        for shape in [vec![1usize], vec![3, 5, 7], vec![2, 2048, 768]] {
            let n: usize = shape.iter().product();
            let v = rng.vec(n, 3.0);
            let t = be.upload(&v, &shape).unwrap();
            assert_eq!(be.shape(&t), shape.as_slice());
            let back = be.download(&t).unwrap();
            assert_eq!(back, quantise(be, &v), "[{label}] {shape:?}");
        }
        let empty = be.upload(&[], &[0, 4]).unwrap();
        assert!(be.download(&empty).unwrap().is_empty());
        assert!(
            be.upload(&[1.0, 2.0], &[3]).is_err(),
            "[{label}] length check"
        );
        let t = be.upload(&[1.0; 6], &[2, 3]).unwrap();
        let t = be.reshape(t, &[3, 2]).unwrap();
        assert_eq!(be.shape(&t), [3, 2]);
        assert!(be.reshape(t, &[4]).is_err());
        be.synchronize().unwrap();
    }
}

/// `download_box` equals the CPU's (exact: index selection only) for boxes
/// at the corners, in the middle, of one voxel, of the whole volume, and
/// over a leading `[1, 1]`; boxes outside the volume and batches of two are
/// refused with the shared message.
#[test]
fn download_box_matches_cpu() {
    let Some(bes) = backends("download_box_matches_cpu", false) else {
        return;
    };
    let mut rng = Rng::for_test("download_box");
    let dims = [7, 33, 40];
    for (be, label) in bes {
        let p = rand_pair(be, &mut rng, &[1, 1, dims[0], dims[1], dims[2]], 2.0);
        for (start, len) in [
            ([0, 0, 0], [3, 5, 8]),
            ([4, 28, 32], [3, 5, 8]),
            ([2, 7, 9], [4, 20, 17]),
            ([6, 32, 39], [1, 1, 1]),
            ([0, 0, 0], dims),
            ([1, 0, 3], [5, 33, 1]),
        ] {
            let got = be.download_box(&p.g, start, len).unwrap();
            let want = cpu().download_box(&p.c, start, len).unwrap();
            assert_eq!(got, want, "[{label}] box {start:?}+{len:?}");
            assert_eq!(got.len(), len.iter().product::<usize>());
        }
        let e_gpu = be.download_box(&p.g, [5, 0, 0], [3, 1, 1]).unwrap_err();
        let e_cpu = cpu().download_box(&p.c, [5, 0, 0], [3, 1, 1]).unwrap_err();
        assert_eq!(e_gpu.to_string(), e_cpu.to_string(), "[{label}]");
        let two = rand_pair(be, &mut rng, &[2, 2, 3, 4], 1.0);
        assert!(
            be.download_box(&two.g, [0; 3], [1; 3]).is_err(),
            "[{label}]"
        );
    }
}

/// Bad shapes get the same error text from both backends (one set of
/// checks, `backend::shapes`).
#[test]
fn shape_errors_match_cpu() {
    let Some(bes) = backends("shape_errors_match_cpu", false) else {
        return;
    };
    let c = cpu();
    for (be, label) in bes {
        let g = |s: &[usize]| be.upload(&vec![0.5; s.iter().product()], s).unwrap();
        let h = |s: &[usize]| c.upload(&vec![0.5; s.iter().product()], s).unwrap();
        let same = |what: &str, ge: segvol::Error, ce: segvol::Error| {
            assert_eq!(ge.to_string(), ce.to_string(), "[{label}] {what}");
        };
        same(
            "upload",
            be.upload(&[1.0; 5], &[2, 3]).unwrap_err(),
            c.upload(&[1.0; 5], &[2, 3]).unwrap_err(),
        );
        same(
            "reshape",
            be.reshape(g(&[2, 3]), &[5]).unwrap_err(),
            c.reshape(h(&[2, 3]), &[5]).unwrap_err(),
        );
        same(
            "slice_batch",
            be.slice_batch(&g(&[4, 2]), 3, 2).unwrap_err(),
            c.slice_batch(&h(&[4, 2]), 3, 2).unwrap_err(),
        );
        same(
            "concat_batch",
            be.concat_batch(&[&g(&[1, 2]), &g(&[1, 3])]).unwrap_err(),
            c.concat_batch(&[&h(&[1, 2]), &h(&[1, 3])]).unwrap_err(),
        );
        same(
            "narrow_rows",
            be.narrow_rows(&g(&[1, 4, 2]), 3, 2).unwrap_err(),
            c.narrow_rows(&h(&[1, 4, 2]), 3, 2).unwrap_err(),
        );
        same(
            "add",
            be.add(&g(&[2, 3]), &g(&[3, 2])).unwrap_err(),
            c.add(&h(&[2, 3]), &h(&[3, 2])).unwrap_err(),
        );
        same(
            "add_broadcast",
            be.add_broadcast(&g(&[2, 5, 3]), &g(&[5])).unwrap_err(),
            c.add_broadcast(&h(&[2, 5, 3]), &h(&[5])).unwrap_err(),
        );
        same(
            "layer_norm",
            be.layer_norm(&g(&[4, 7]), &g(&[6]), &g(&[7]), 1e-5)
                .unwrap_err(),
            c.layer_norm(&h(&[4, 7]), &h(&[6]), &h(&[7]), 1e-5)
                .unwrap_err(),
        );
        same(
            "layer_norm_item",
            be.layer_norm_item(&g(&[2, 3, 4]), &g(&[11]), &g(&[12]), 1e-5, Activation::None)
                .unwrap_err(),
            c.layer_norm_item(&h(&[2, 3, 4]), &h(&[11]), &h(&[12]), 1e-5, Activation::None)
                .unwrap_err(),
        );
    }
}

/// A checkpoint with one tensor per source dtype, stored at awkward
/// offsets, one of them larger than a staging chunk.
fn mixed_checkpoint(rng: &mut Rng) -> (Checkpoint, BTreeMap<String, Vec<f32>>) {
    let mut bytes = vec![0u8; 3]; // misalign everything that follows
    let mut entries = BTreeMap::new();
    let mut want = BTreeMap::new();
    let specs: [(&str, DType, Vec<usize>); 4] = [
        ("big_f32", DType::F32, vec![3, 1024, 1024]),
        ("w_bf16", DType::BF16, vec![768, 1024]),
        ("w_f16", DType::F16, vec![37, 11]),
        ("w_f64", DType::F64, vec![5, 3]),
    ];
    for (name, dt, shape) in specs {
        let n: usize = shape.iter().product();
        let v = rng.vec(n, 2.0);
        let offset = bytes.len();
        let exact: Vec<f32> = match dt {
            DType::F32 => {
                v.iter().for_each(|x| bytes.extend(x.to_le_bytes()));
                v
            }
            DType::BF16 => v
                .iter()
                .map(|&x| {
                    let h = half::bf16::from_f32(x);
                    bytes.extend(h.to_le_bytes());
                    h.to_f32()
                })
                .collect(),
            DType::F16 => v
                .iter()
                .map(|&x| {
                    let h = half::f16::from_f32(x);
                    bytes.extend(h.to_le_bytes());
                    h.to_f32()
                })
                .collect(),
            DType::F64 => {
                v.iter()
                    .for_each(|&x| bytes.extend((x as f64).to_le_bytes()));
                v
            }
            _ => unreachable!(),
        };
        entries.insert(
            name.to_string(),
            Entry {
                dtype: dt,
                shape,
                blob: 0,
                offset,
            },
        );
        want.insert(name.to_string(), exact);
        bytes.push(0); // keep the next tensor misaligned too
    }
    let blob: Blob = Arc::new(bytes);
    let ck = Checkpoint::from_parts(PathBuf::from("<test>"), Format::Memory, vec![blob], entries)
        .unwrap();
    (ck, want)
}

#[test]
fn weights_upload_from_every_float_dtype() {
    let Some(bes) = backends("weights_upload_from_every_float_dtype", false) else {
        return;
    };
    let mut rng = Rng::for_test("weights");
    let (ck, want) = mixed_checkpoint(&mut rng);
    for (be, label) in bes {
        for (name, exact) in &want {
            let view = ck.require(name).unwrap();
            let t = be.weight(&view).unwrap();
            assert_eq!(be.shape(&t), view.shape, "[{label}] {name}");
            let got = be.download(&t).unwrap();
            assert_eq!(got, quantise(be, exact), "[{label}] {name}");
        }
    }
}

#[test]
fn batch_plumbing_is_exact() {
    let Some(bes) = backends("batch_plumbing_is_exact", false) else {
        return;
    };
    let mut rng = Rng::for_test("plumbing");
    for (be, label) in bes {
        let c = cpu();
        let x = rand_pair(be, &mut rng, &[2, 7, 5], 1.0);
        let y = rand_pair(be, &mut rng, &[3, 7, 5], 1.0);
        for n in [1, 3, 5] {
            let g = be.repeat_batch(&x.g, n).unwrap();
            let w = c.repeat_batch(&x.c, n).unwrap();
            assert_eq!(be.download(&g).unwrap(), w.data(), "[{label}] repeat {n}");
        }
        let g = be.slice_batch(&y.g, 1, 2).unwrap();
        assert_eq!(
            be.download(&g).unwrap(),
            c.slice_batch(&y.c, 1, 2).unwrap().data()
        );
        let g = be.concat_batch(&[&x.g, &y.g, &x.g]).unwrap();
        let w = c.concat_batch(&[&x.c, &y.c, &x.c]).unwrap();
        assert_eq!(be.shape(&g), w.shape());
        assert_eq!(be.download(&g).unwrap(), w.data(), "[{label}] concat");
        for (start, len) in [(0, 7), (2, 3), (6, 1), (3, 0)] {
            let g = be.narrow_rows(&y.g, start, len).unwrap();
            let w = c.narrow_rows(&y.c, start, len).unwrap();
            assert_eq!(be.shape(&g), w.shape());
            assert_eq!(
                be.download(&g).unwrap(),
                w.data(),
                "[{label}] narrow {start}+{len}"
            );
        }
        assert!(be.slice_batch(&y.g, 2, 2).is_err());
        assert!(be.narrow_rows(&y.g, 5, 3).is_err());
        let z = rand_pair(be, &mut rng, &[1, 7, 4], 1.0);
        assert!(be.concat_batch(&[&x.g, &z.g]).is_err());
    }
}

// ---- dense math ------------------------------------------------------------

#[test]
fn linear_matches_cpu() {
    let Some(bes) = backends("linear_matches_cpu", true) else {
        return;
    };
    let mut rng = Rng::for_test("linear");
    // (x shape, N, bias, act, residual)
    let cases: Vec<(Vec<usize>, usize, bool, Activation, bool)> = vec![
        (vec![1, 2048, 768], 2304, false, Activation::None, false), // ViT qkv
        (vec![1, 2048, 768], 3072, true, Activation::Gelu, false),  // ViT MLP 1
        (vec![1, 2048, 3072], 768, true, Activation::None, true),   // ViT MLP 2 + residual
        (vec![3, 77, 512], 2048, true, Activation::QuickGelu, false), // CLIP MLP
        (vec![2, 8, 768], 2048, true, Activation::Relu, false),     // decoder MLP
        (vec![7, 37], 19, true, Activation::Gelu, false),           // awkward sizes
        (vec![5, 3, 13], 9, true, Activation::None, true),
        (vec![1, 768], 96, false, Activation::Relu, false),
    ];
    for (be, label) in bes {
        let c = cpu();
        for (xs, n, bias, act, res) in &cases {
            let k = *xs.last().unwrap();
            let x = rand_pair(be, &mut rng, xs, 1.0);
            let w = rand_pair(be, &mut rng, &[*n, k], 1.0 / (k as f32).sqrt());
            let b = bias.then(|| rand_pair(be, &mut rng, &[*n], 0.5));
            let mut os = xs.clone();
            *os.last_mut().unwrap() = *n;
            let r = res.then(|| rand_pair(be, &mut rng, &os, 1.0));
            let got = be
                .linear(
                    &x.g,
                    &w.g,
                    b.as_ref().map(|b| &b.g),
                    *act,
                    r.as_ref().map(|r| &r.g),
                )
                .unwrap();
            let want = c
                .linear(
                    &x.c,
                    &w.c,
                    b.as_ref().map(|b| &b.c),
                    *act,
                    r.as_ref().map(|r| &r.c),
                )
                .unwrap();
            expect_close(
                &format!("linear {xs:?}x{n} {act:?} res={res}"),
                label,
                be,
                &got,
                &want,
            );
        }
        let x = rand_pair(be, &mut rng, &[4, 6], 1.0);
        let w = rand_pair(be, &mut rng, &[3, 5], 1.0);
        assert!(be.linear(&x.g, &w.g, None, Activation::None, None).is_err());
    }
}

#[test]
fn bmm_nt_matches_cpu() {
    let Some(bes) = backends("bmm_nt_matches_cpu", false) else {
        return;
    };
    let mut rng = Rng::for_test("bmm");
    for (be, label) in bes {
        for (b, m, k, n) in [(2, 4, 96, 32 * 64 * 64), (3, 7, 13, 11), (1, 1, 768, 5)] {
            let x = rand_pair(be, &mut rng, &[b, m, k], 1.0);
            let w = rand_pair(be, &mut rng, &[b, n, k], 1.0);
            let got = be.bmm_nt(&x.g, &w.g).unwrap();
            let want = cpu().bmm_nt(&x.c, &w.c).unwrap();
            expect_close(&format!("bmm_nt {b}x{m}x{k}·{n}"), label, be, &got, &want);
        }
    }
}

#[test]
fn additions_match_cpu() {
    let Some(bes) = backends("additions_match_cpu", false) else {
        return;
    };
    let mut rng = Rng::for_test("add");
    for (be, label) in bes {
        let c = cpu();
        let a = rand_pair(be, &mut rng, &[2, 2048, 768], 2.0);
        let b = rand_pair(be, &mut rng, &[2, 2048, 768], 2.0);
        expect_close(
            "add",
            label,
            be,
            &be.add(&a.g, &b.g).unwrap(),
            &c.add(&a.c, &b.c).unwrap(),
        );
        for vs in [vec![1, 2048, 768], vec![768], vec![2048, 768]] {
            let v = rand_pair(be, &mut rng, &vs, 2.0);
            let got = be.add_broadcast(&a.g, &v.g).unwrap();
            let want = c.add_broadcast(&a.c, &v.c).unwrap();
            expect_close(&format!("add_broadcast {vs:?}"), label, be, &got, &want);
        }
        let x = rand_pair(be, &mut rng, &[3, 5, 7], 2.0);
        let v = rand_pair(be, &mut rng, &[7], 2.0);
        let got = be.add_broadcast(&x.g, &v.g).unwrap();
        expect_close(
            "add_broadcast [7]",
            label,
            be,
            &got,
            &c.add_broadcast(&x.c, &v.c).unwrap(),
        );
        assert!(be.add(&a.g, &x.g).is_err());
        assert!(be.add_broadcast(&x.g, &a.g).is_err());
    }
}

#[test]
fn layer_norm_matches_cpu() {
    let Some(bes) = backends("layer_norm_matches_cpu", false) else {
        return;
    };
    let mut rng = Rng::for_test("layer_norm");
    for (be, label) in bes {
        // Widths covering every kernel variant (4/8/16/32 per lane, block).
        for (rows, c) in [
            (2048, 768),
            (77, 512),
            (8, 96),
            (5, 37),
            (3, 200),
            (9, 1500),
            (1, 1024),
        ] {
            let mut x = rng.vec(rows * c, 2.0);
            // An offset mean makes the variance pass matter.
            x.iter_mut().for_each(|v| *v += 3.0);
            let x = pair(be, &x, &[1, rows, c]);
            let w = rand_pair(be, &mut rng, &[c], 1.0);
            let b = rand_pair(be, &mut rng, &[c], 1.0);
            let got = be.layer_norm(&x.g, &w.g, &b.g, 1e-5).unwrap();
            let want = cpu().layer_norm(&x.c, &w.c, &b.c, 1e-5).unwrap();
            expect_close(&format!("layer_norm {rows}x{c}"), label, be, &got, &want);
        }
    }
}

#[test]
fn layer_norm_item_matches_cpu() {
    let Some(bes) = backends("layer_norm_item_matches_cpu", false) else {
        return;
    };
    let mut rng = Rng::for_test("layer_norm_item");
    for (be, label) in bes {
        for (shape, act) in [
            (vec![1, 192, 16, 32, 32], Activation::Gelu), // SegVol's decoder
            (vec![2, 3, 5, 7], Activation::None),
            (vec![3, 1000], Activation::Relu),
        ] {
            let item: usize = shape[1..].iter().product();
            let mut x = rng.vec(shape.iter().product(), 2.0);
            x.iter_mut().for_each(|v| *v = *v * 0.7 - 1.5);
            let x = pair(be, &x, &shape);
            let w = rand_pair(be, &mut rng, &shape[1..], 1.0);
            let b = rand_pair(be, &mut rng, &[item], 1.0);
            let got = be.layer_norm_item(&x.g, &w.g, &b.g, 1e-5, act).unwrap();
            let want = cpu().layer_norm_item(&x.c, &w.c, &b.c, 1e-5, act).unwrap();
            expect_close(
                &format!("layer_norm_item {shape:?} {act:?}"),
                label,
                be,
                &got,
                &want,
            );
        }
    }
}

// ---- attention -------------------------------------------------------------

struct AttnCase {
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

#[test]
fn attention_matches_cpu() {
    let Some(bes) = backends("attention_matches_cpu", false) else {
        return;
    };
    let mut rng = Rng::for_test("attention");
    let case = |name, batch, heads, dh, q_len, kv_len, causal, packed, pad| AttnCase {
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
    let cases = [
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
    ];
    for (be, label) in bes {
        for c in &cases {
            let w = c.heads * c.dh;
            let spec = AttnSpec {
                batch: c.batch,
                heads: c.heads,
                head_dim: c.dh,
                q_len: c.q_len,
                kv_len: c.kv_len,
                scale: 1.0 / (c.dh as f32).sqrt(),
                causal: c.causal,
            };
            let (got, want) = if c.packed {
                assert_eq!(c.q_len, c.kv_len);
                let ld = 3 * w + c.pad;
                let t = rand_pair(be, &mut rng, &[c.batch, c.q_len, ld], 2.0);
                let g = be
                    .attention(
                        AttnOperand::at(&t.g, 0),
                        AttnOperand::at(&t.g, w),
                        AttnOperand::at(&t.g, 2 * w),
                        &spec,
                    )
                    .unwrap();
                let want = cpu()
                    .attention(
                        AttnOperand::at(&t.c, 0),
                        AttnOperand::at(&t.c, w),
                        AttnOperand::at(&t.c, 2 * w),
                        &spec,
                    )
                    .unwrap();
                (g, want)
            } else {
                let q = rand_pair(be, &mut rng, &[c.batch, c.q_len, w + c.pad], 2.0);
                let k = rand_pair(be, &mut rng, &[c.batch, c.kv_len, w + c.pad], 2.0);
                let v = rand_pair(be, &mut rng, &[c.batch, c.kv_len, w + c.pad], 2.0);
                let g = be
                    .attention(
                        AttnOperand::new(&q.g),
                        AttnOperand::new(&k.g),
                        AttnOperand::new(&v.g),
                        &spec,
                    )
                    .unwrap();
                let want = cpu()
                    .attention(
                        AttnOperand::new(&q.c),
                        AttnOperand::new(&k.c),
                        AttnOperand::new(&v.c),
                        &spec,
                    )
                    .unwrap();
                (g, want)
            };
            expect_close(&format!("attention {}", c.name), label, be, &got, &want);
        }
        // Operand checks.
        let t = rand_pair(be, &mut rng, &[1, 5, 8], 1.0);
        let bad = AttnSpec {
            batch: 1,
            heads: 2,
            head_dim: 8,
            q_len: 5,
            kv_len: 5,
            scale: 1.0,
            causal: false,
        };
        assert!(be
            .attention(
                AttnOperand::new(&t.g),
                AttnOperand::new(&t.g),
                AttnOperand::new(&t.g),
                &bad
            )
            .is_err());
    }
}

// ---- volume ops ------------------------------------------------------------

#[test]
fn patch_embed_matches_cpu() {
    let Some(bes) = backends("patch_embed_matches_cpu", false) else {
        return;
    };
    let mut rng = Rng::for_test("patch_embed");
    for (be, label) in bes {
        for (img, patch, c) in [
            ([1usize, 1, 32, 256, 256], [4usize, 16, 16], 768usize), // SegVol's ViT
            ([2, 1, 8, 12, 20], [2, 3, 4], 5),
        ] {
            let n: usize = (0..3).map(|a| img[a + 2] / patch[a]).product();
            let p: usize = patch.iter().product();
            let x = rand_pair(be, &mut rng, &img, 1.0);
            let w = rand_pair(be, &mut rng, &[c, p], 1.0 / (p as f32).sqrt());
            let b = rand_pair(be, &mut rng, &[c], 0.5);
            let pos = rand_pair(be, &mut rng, &[1, n, c], 0.5);
            let got = be.patch_embed(&x.g, &w.g, &b.g, &pos.g, patch).unwrap();
            let want = cpu().patch_embed(&x.c, &w.c, &b.c, &pos.c, patch).unwrap();
            expect_close(
                &format!("patch_embed {img:?}/{patch:?}"),
                label,
                be,
                &got,
                &want,
            );
        }
    }
}

#[test]
fn conv_transpose_matches_cpu() {
    let Some(bes) = backends("conv_transpose_matches_cpu", false) else {
        return;
    };
    let mut rng = Rng::for_test("conv_transpose");
    for (be, label) in bes {
        for (b, grid, cin, cout, act) in [
            (
                1usize,
                [8usize, 16, 16],
                768usize,
                192usize,
                Activation::None,
            ), // decoder #1
            (1, [16, 32, 32], 192, 96, Activation::Gelu), // decoder #2
            (2, [2, 3, 2], 12, 5, Activation::Relu),
        ] {
            let s: usize = grid.iter().product();
            let x = rand_pair(be, &mut rng, &[b, s, cin], 1.0);
            let w = rand_pair(
                be,
                &mut rng,
                &[cin, cout, 2, 2, 2],
                1.0 / (cin as f32).sqrt(),
            );
            let bias = rand_pair(be, &mut rng, &[cout], 0.5);
            let got = be
                .conv_transpose_k2s2(&x.g, grid, &w.g, &bias.g, act)
                .unwrap();
            let want = cpu()
                .conv_transpose_k2s2(&x.c, grid, &w.c, &bias.c, act)
                .unwrap();
            expect_close(
                &format!("conv_transpose {grid:?} {cin}->{cout}"),
                label,
                be,
                &got,
                &want,
            );
        }
    }
}

#[test]
fn resize_matches_cpu() {
    let Some(bes) = backends("resize_matches_cpu", false) else {
        return;
    };
    let mut rng = Rng::for_test("resize");
    for (be, label) in bes {
        for (shape, out) in [
            ([1usize, 2, 5, 7, 9], [8usize, 11, 4]),
            ([2, 1, 4, 6, 6], [4, 6, 6]),
            ([1, 1, 32, 64, 64], [64, 128, 128]),
            ([1, 3, 20, 30, 40], [7, 9, 13]),
        ] {
            let x = rand_pair(be, &mut rng, &shape, 2.0);
            for mode in [Interp::Trilinear, Interp::Nearest, Interp::NearestExact] {
                let got = be.resize(&x.g, out, mode).unwrap();
                let want = cpu().resize(&x.c, out, mode).unwrap();
                expect_close(
                    &format!("resize {shape:?}->{out:?} {mode:?}"),
                    label,
                    be,
                    &got,
                    &want,
                );
                if be.precision() == Precision::F32 {
                    // Pure gathers with separately rounded arithmetic: exact.
                    assert_eq!(
                        be.download(&got).unwrap(),
                        want.data(),
                        "[{label}] {mode:?} exact"
                    );
                }
            }
        }
    }
}

// ---- kernels without a device ------------------------------------------------

/// NVRTC needs no GPU: when libnvrtc is loadable, every embedded kernel
/// source must compile for sm_80 and sm_90 with no include path, and expose
/// the same entry points as the others.
#[test]
fn nvrtc_compiles_every_kernel() {
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("SKIP: no NVRTC (libnvrtc.so not on the library path)");
        return;
    }
    use segvol::backend::cuda::kernels;
    let mut all = Vec::new();
    for arch in ["compute_80", "compute_90"] {
        let mut entries = Vec::new();
        for (name, src, _, _) in kernels::modules() {
            let ptx = kernels::nvrtc_compile(name, src, arch).unwrap_or_else(|e| panic!("{e}"));
            let found = kernels::ptx_entries(&ptx.to_src());
            assert!(!found.is_empty(), "{name}.cu has no entry points");
            entries.extend(found);
        }
        entries.sort();
        eprintln!("NVRTC {arch}: {} kernels", entries.len());
        all.push(entries);
    }
    assert_eq!(all[0], all[1]);
    for must in [
        "attn_mma_64_4",
        "attn_mma_96_1",
        "attn_generic_f32_2",
        "ln_item_apply_bf16",
        "epilogue_f32",
        "convt_scatter_bf16",
        "resize_trilinear_f32",
        "im2col_bf16",
        "cast_f16_bf16",
    ] {
        assert!(all[0].iter().any(|e| e == must), "{must} missing");
    }
}
