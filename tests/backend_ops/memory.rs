//! Data movement: uploads and downloads, `download_box`, the batch plumbing
//! ops and checkpoint tensors of every float dtype. All exact: each backend
//! is compared with the values computed here on the host (bf16-rounded for
//! a bf16 backend).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use segvol::backend::Backend;
use segvol::weights::{Blob, Checkpoint, DType, Entry, Format};

use crate::harness::{for_each_backend, OnBackend, Rng};

struct RoundTrip;

impl OnBackend for RoundTrip {
    fn check<B: Backend>(&self, be: &B, label: &str, quantise: &dyn Fn(&[f32]) -> Vec<f32>) {
        let mut rng = Rng::for_test("round_trip");
        for shape in [vec![1usize], vec![3, 5, 7], vec![2, 2048, 768]] {
            let n: usize = shape.iter().product();
            let v = rng.vec(n, 3.0);
            let t = be.upload(&v, &shape).unwrap();
            assert_eq!(be.shape(&t), shape.as_slice());
            assert_eq!(
                be.download(&t).unwrap(),
                quantise(&v),
                "[{label}] {shape:?}"
            );
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

#[test]
fn upload_download_round_trip() {
    for_each_backend("upload_download_round_trip", &RoundTrip);
}

/// Boxes at the corners, in the middle, of one voxel, of the whole volume,
/// over a leading `[1, 1]`; boxes outside the volume and batches of two
/// are refused.
struct DownloadBox;

impl OnBackend for DownloadBox {
    fn check<B: Backend>(&self, be: &B, label: &str, quantise: &dyn Fn(&[f32]) -> Vec<f32>) {
        let mut rng = Rng::for_test("download_box");
        let dims = [7, 33, 40];
        let v = quantise(&rng.vec(dims.iter().product(), 2.0));
        let t = be.upload(&v, &[1, 1, dims[0], dims[1], dims[2]]).unwrap();
        for (start, len) in [
            ([0, 0, 0], [3, 5, 8]),
            ([4, 28, 32], [3, 5, 8]),
            ([2, 7, 9], [4, 20, 17]),
            ([6, 32, 39], [1, 1, 1]),
            ([0, 0, 0], dims),
            ([1, 0, 3], [5, 33, 1]),
        ] {
            let mut want = vec![];
            for d in start[0]..start[0] + len[0] {
                for h in start[1]..start[1] + len[1] {
                    let row = (d * dims[1] + h) * dims[2];
                    want.extend_from_slice(&v[row + start[2]..row + start[2] + len[2]]);
                }
            }
            let got = be.download_box(&t, start, len).unwrap();
            assert_eq!(got, want, "[{label}] box {start:?}+{len:?}");
        }
        assert!(
            be.download_box(&t, [5, 0, 0], [3, 1, 1]).is_err(),
            "[{label}]"
        );
        let two = be.upload(&[0.5; 48], &[2, 2, 3, 4]).unwrap();
        assert!(be.download_box(&two, [0; 3], [1; 3]).is_err(), "[{label}]");
    }
}

#[test]
fn download_box_selects_the_box() {
    for_each_backend("download_box_selects_the_box", &DownloadBox);
}

struct Plumbing;

impl OnBackend for Plumbing {
    fn check<B: Backend>(&self, be: &B, label: &str, quantise: &dyn Fn(&[f32]) -> Vec<f32>) {
        let mut rng = Rng::for_test("plumbing");
        let item = 7 * 5;
        let xv = quantise(&rng.vec(2 * item, 1.0));
        let yv = quantise(&rng.vec(3 * item, 1.0));
        let x = be.upload(&xv, &[2, 7, 5]).unwrap();
        let y = be.upload(&yv, &[3, 7, 5]).unwrap();
        for n in [1, 3, 5] {
            let want: Vec<f32> = xv
                .chunks(item)
                .flat_map(|it| std::iter::repeat_n(it, n).flatten().copied())
                .collect();
            let g = be.repeat_batch(&x, n).unwrap();
            assert_eq!(be.shape(&g), [2 * n, 7, 5]);
            assert_eq!(be.download(&g).unwrap(), want, "[{label}] repeat {n}");
        }
        let g = be.slice_batch(&y, 1, 2).unwrap();
        assert_eq!(
            be.download(&g).unwrap(),
            &yv[item..3 * item],
            "[{label}] slice"
        );
        let g = be.concat_batch(&[&x, &y, &x]).unwrap();
        assert_eq!(be.shape(&g), [7, 7, 5]);
        assert_eq!(
            be.download(&g).unwrap(),
            [&xv[..], &yv, &xv].concat(),
            "[{label}] concat"
        );
        for (start, len) in [(0, 7), (2, 3), (6, 1), (3, 0)] {
            let want: Vec<f32> = yv
                .chunks(item)
                .flat_map(|it| it[start * 5..(start + len) * 5].iter().copied())
                .collect();
            let g = be.narrow_rows(&y, start, len).unwrap();
            assert_eq!(be.shape(&g), [3, len, 5]);
            assert_eq!(
                be.download(&g).unwrap(),
                want,
                "[{label}] narrow {start}+{len}"
            );
        }
        assert!(be.slice_batch(&y, 2, 2).is_err());
        assert!(be.narrow_rows(&y, 5, 3).is_err());
        let z = be.upload(&[0.5; 28], &[1, 7, 4]).unwrap();
        assert!(be.concat_batch(&[&x, &z]).is_err());
    }
}

#[test]
fn batch_plumbing_is_exact() {
    for_each_backend("batch_plumbing_is_exact", &Plumbing);
}

/// A checkpoint with one tensor per source dtype, stored at awkward
/// offsets, one of them larger than a CUDA staging chunk; and each tensor's
/// exact values.
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
        let entry = Entry {
            dtype: dt,
            shape,
            blob: 0,
            offset,
        };
        entries.insert(name.to_string(), entry);
        want.insert(name.to_string(), exact);
        bytes.push(0); // keep the next tensor misaligned too
    }
    let blob: Blob = Arc::new(bytes);
    let ck = Checkpoint::from_parts(PathBuf::from("<test>"), Format::Memory, vec![blob], entries)
        .unwrap();
    (ck, want)
}

struct Weights;

impl OnBackend for Weights {
    fn check<B: Backend>(&self, be: &B, label: &str, quantise: &dyn Fn(&[f32]) -> Vec<f32>) {
        let (ck, want) = mixed_checkpoint(&mut Rng::for_test("weights"));
        for (name, exact) in &want {
            let view = ck.require(name).unwrap();
            let t = be.weight(&view).unwrap();
            assert_eq!(be.shape(&t), view.shape, "[{label}] {name}");
            assert_eq!(
                be.download(&t).unwrap(),
                quantise(exact),
                "[{label}] {name}"
            );
        }
    }
}

#[test]
fn weights_from_every_float_dtype() {
    for_each_backend("weights_from_every_float_dtype", &Weights);
}
