//! The CPU backend: float32, the reference every other backend is tested
//! against. Matrix products use `matrixmultiply`; parallelism is one rayon
//! pool (the global one, or the backend's own when built with a thread count).

pub mod attention;
#[cfg(segvol_avx512)]
pub mod attention_avx512;
pub mod gemm;
pub mod norm;
pub mod simd;
pub mod tensor;
pub mod volume;

use std::sync::Arc;

use rayon::prelude::*;

pub use tensor::CpuTensor;

use crate::backend::interp;
use crate::backend::shapes::{self, numel};
use crate::backend::{Activation, AttnOperand, AttnSpec, Backend, Interp};
use crate::error::{Error, Result};
use crate::weights::WeightView;
use gemm::MatRef;

/// A raw output pointer shared by parallel tasks that each write a disjoint
/// part of the buffer (the callers' SAFETY comments say which part).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: only used for disjoint writes coordinated by the caller.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

#[derive(Clone, Default)]
pub struct CpuBackend {
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl CpuBackend {
    /// Uses rayon's global pool (`RAYON_NUM_THREADS` or all cores).
    pub fn new() -> Self {
        CpuBackend { pool: None }
    }

    /// A backend with its own pool of `threads` workers.
    pub fn with_threads(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("segvol-cpu-{i}"))
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start {threads} CPU threads: {e}")))?;
        Ok(CpuBackend {
            pool: Some(Arc::new(pool)),
        })
    }

    pub fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }

    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> String {
        format!("cpu ({} threads, f32)", self.threads())
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<CpuTensor> {
        shapes::upload(data.len(), shape)?;
        let mut v = tensor::scratch(data.len());
        v.copy_from_slice(data);
        CpuTensor::from_vec(v, shape)
    }

    fn download(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.data().to_vec())
    }

    fn download_box(&self, t: &CpuTensor, start: [usize; 3], len: [usize; 3]) -> Result<Vec<f32>> {
        let [_, h, w] = shapes::download_box(t.shape(), start, len)?;
        let mut out = Vec::with_capacity(len.iter().product());
        for d in start[0]..start[0] + len[0] {
            for y in start[1]..start[1] + len[1] {
                let row = (d * h + y) * w + start[2];
                out.extend_from_slice(&t.data()[row..row + len[2]]);
            }
        }
        Ok(out)
    }

    fn shape<'a>(&self, t: &'a CpuTensor) -> &'a [usize] {
        t.shape()
    }

    fn weight(&self, w: &WeightView<'_>) -> Result<CpuTensor> {
        if w.dtype == crate::weights::DType::F32 {
            if let Some(t) = CpuTensor::mapped(w.blob, w.offset, w.shape) {
                return Ok(t);
            }
        }
        CpuTensor::from_vec(w.to_f32()?.into_owned(), w.shape)
    }

    fn reshape(&self, t: CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        shapes::reshape(t.shape(), shape)?;
        t.reshape(shape)
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn repeat_batch(&self, x: &CpuTensor, n: usize) -> Result<CpuTensor> {
        let s = shapes::repeat_batch(x.shape(), n)?;
        let item = numel(&x.shape()[1..]);
        let mut out = Vec::with_capacity(x.len() * n);
        for it in x.data().chunks(item.max(1)) {
            for _ in 0..n {
                out.extend_from_slice(it);
            }
        }
        CpuTensor::from_vec(out, &s)
    }

    fn slice_batch(&self, x: &CpuTensor, start: usize, len: usize) -> Result<CpuTensor> {
        let s = shapes::slice_batch(x.shape(), start, len)?;
        let item = numel(&s[1..]);
        let mut v = tensor::scratch(len * item);
        v.copy_from_slice(&x.data()[start * item..(start + len) * item]);
        CpuTensor::from_vec(v, &s)
    }

    fn concat_batch(&self, xs: &[&CpuTensor]) -> Result<CpuTensor> {
        let s = shapes::concat_batch(&xs.iter().map(|x| x.shape()).collect::<Vec<_>>())?;
        let mut out = Vec::with_capacity(numel(&s));
        for x in xs {
            out.extend_from_slice(x.data());
        }
        CpuTensor::from_vec(out, &s)
    }

    fn narrow_rows(&self, x: &CpuTensor, start: usize, len: usize) -> Result<CpuTensor> {
        let (b, n, c) = shapes::narrow_rows(x.shape(), start, len)?;
        let mut out = Vec::with_capacity(b * len * c);
        for bi in 0..b {
            out.extend_from_slice(&x.data()[(bi * n + start) * c..(bi * n + start + len) * c]);
        }
        CpuTensor::from_vec(out, &[b, len, c])
    }

    fn linear(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        b: Option<&CpuTensor>,
        act: Activation,
        residual: Option<&CpuTensor>,
    ) -> Result<CpuTensor> {
        let (m, k, n, shape) = shapes::linear(
            x.shape(),
            w.shape(),
            b.map(|b| b.shape()),
            act,
            residual.map(|r| r.shape()),
        )?;
        let bias = b.map(|b| b.data());
        let out = self.run(|| {
            // Fully written: by the product (beta = 0) or by `init`.
            let mut out = tensor::scratch(m * n);
            // Both hooks run per block of rows, next to that block's product,
            // so C is touched while it is in cache: with a residual, C starts
            // as residual + bias and the product accumulates into it;
            // otherwise bias and activation follow the product.
            let init = |r0: usize, c: &mut [f32]| {
                let r = &residual.expect("init only with a residual").data()[r0 * n..];
                for (o, r) in c.chunks_mut(n).zip(r.chunks(n)) {
                    o.copy_from_slice(r);
                    if let Some(b) = bias {
                        simd::bias_act_inplace(o, Some(b), Activation::None);
                    }
                }
            };
            let epilogue = |_r0: usize, c: &mut [f32]| {
                for row in c.chunks_mut(n) {
                    simd::bias_act_inplace(row, bias, act);
                }
            };
            let (beta, pre, post): (f32, Option<gemm::RowsFn<'_>>, Option<gemm::RowsFn<'_>>) =
                match residual {
                    Some(_) => (1.0, Some(&init), None),
                    None if bias.is_some() || act != Activation::None => {
                        (0.0, None, Some(&epilogue))
                    }
                    None => (0.0, None, None),
                };
            gemm::sgemm_fused(
                m,
                k,
                n,
                MatRef::rows(x.data(), 0, k),
                MatRef::transposed(w.data(), 0, k),
                beta,
                &mut out,
                n,
                pre,
                post,
            );
            out
        });
        CpuTensor::from_vec(out, &shape)
    }

    fn bmm_nt(&self, x: &CpuTensor, w: &CpuTensor) -> Result<CpuTensor> {
        let (bn, m, k, n) = shapes::bmm_nt(x.shape(), w.shape())?;
        let out = self.run(|| {
            let mut out = tensor::scratch(bn * m * n);
            for (bi, o) in out.chunks_mut(m * n).enumerate() {
                gemm::sgemm(
                    m,
                    k,
                    n,
                    MatRef::rows(x.data(), bi * m * k, k),
                    MatRef::transposed(w.data(), bi * n * k, k),
                    0.0,
                    o,
                    n,
                );
            }
            out
        });
        CpuTensor::from_vec(out, &[bn, m, n])
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        shapes::add(a.shape(), b.shape())?;
        let out = self.run(|| {
            let mut out = tensor::scratch(a.len());
            out.par_chunks_mut(1 << 14)
                .zip(a.data().par_chunks(1 << 14))
                .zip(b.data().par_chunks(1 << 14))
                .for_each(|((o, a), b)| {
                    for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                        *o = a + b;
                    }
                });
            out
        });
        CpuTensor::from_vec(out, a.shape())
    }

    fn add_broadcast(&self, x: &CpuTensor, v: &CpuTensor) -> Result<CpuTensor> {
        let xs = x.shape();
        shapes::add_broadcast(xs, v.shape())?;
        let n = v.len();
        let out = self.run(|| {
            let mut out = tensor::scratch(x.len());
            out.par_chunks_mut(n)
                .zip(x.data().par_chunks(n))
                .for_each(|(o, x)| {
                    for ((o, x), v) in o.iter_mut().zip(x).zip(v.data()) {
                        *o = x + v;
                    }
                });
            out
        });
        CpuTensor::from_vec(out, xs)
    }

    fn layer_norm(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        b: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        shapes::layer_norm(x.shape(), w.shape(), b.shape())?;
        let mut out = tensor::scratch(x.len());
        self.run(|| norm::layer_norm_rows(x.data(), w.data(), b.data(), eps, &mut out));
        CpuTensor::from_vec(out, x.shape())
    }

    fn layer_norm_item(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        b: &CpuTensor,
        eps: f32,
        act: Activation,
    ) -> Result<CpuTensor> {
        let item = shapes::layer_norm_item(x.shape(), w.shape(), b.shape())?;
        let mut out = tensor::scratch(x.len());
        self.run(|| {
            for (o, xi) in out.chunks_mut(item).zip(x.data().chunks(item)) {
                norm::layer_norm_item(xi, w.data(), b.data(), eps, act, o);
            }
        });
        CpuTensor::from_vec(out, x.shape())
    }

    fn attention(
        &self,
        q: AttnOperand<'_, CpuTensor>,
        k: AttnOperand<'_, CpuTensor>,
        v: AttnOperand<'_, CpuTensor>,
        s: &AttnSpec,
    ) -> Result<CpuTensor> {
        let width = s.heads * s.head_dim;
        fn op<'t>(
            o: &AttnOperand<'t, CpuTensor>,
            len: usize,
            s: &AttnSpec,
            what: &str,
        ) -> Result<attention::Operand<'t>> {
            let ld = shapes::attention_operand(o.t.shape(), o.col, len, s, what)?;
            Ok(attention::Operand {
                data: o.t.data(),
                ld,
                col: o.col,
            })
        }
        let (qo, ko, vo) = (
            op(&q, s.q_len, s, "q")?,
            op(&k, s.kv_len, s, "k")?,
            op(&v, s.kv_len, s, "v")?,
        );
        shapes::attention_spec(s)?;
        let mut out = tensor::scratch(s.batch * s.q_len * width);
        self.run(|| {
            #[cfg(segvol_avx512)]
            if !s.causal && attention_avx512::supported() {
                return attention_avx512::attention(
                    qo,
                    ko,
                    vo,
                    s,
                    attention_avx512::FusedTiling::DEFAULT,
                    &mut out,
                );
            }
            attention::attention(qo, ko, vo, s, &mut out)
        });
        CpuTensor::from_vec(out, &[s.batch, s.q_len, width])
    }

    fn patch_embed(
        &self,
        image: &CpuTensor,
        w: &CpuTensor,
        b: &CpuTensor,
        pos: &CpuTensor,
        patch: [usize; 3],
    ) -> Result<CpuTensor> {
        let (batch, dims, n, c) =
            shapes::patch_embed(image.shape(), w.shape(), b.len(), pos.len(), patch)?;
        let mut out = tensor::scratch(batch * n * c);
        self.run(|| {
            volume::patch_embed(
                image.data(),
                dims,
                batch,
                w.data(),
                b.data(),
                pos.data(),
                patch,
                &mut out,
            )
        });
        CpuTensor::from_vec(out, &[batch, n, c])
    }

    fn conv_transpose_k2s2(
        &self,
        x: &CpuTensor,
        grid: [usize; 3],
        w: &CpuTensor,
        b: &CpuTensor,
        act: Activation,
    ) -> Result<CpuTensor> {
        let (batch, voxels, cin, cout) =
            shapes::conv_transpose(x.shape(), grid, w.shape(), b.len())?;
        let mut out = tensor::scratch(batch * 8 * voxels * cout);
        self.run(|| {
            volume::conv_transpose_k2s2(
                x.data(),
                batch,
                grid,
                cin,
                w.data(),
                b.data(),
                act,
                &mut out,
            )
        });
        CpuTensor::from_vec(out, &[batch, 8 * voxels, cout])
    }

    fn resize(&self, x: &CpuTensor, out: [usize; 3], mode: Interp) -> Result<CpuTensor> {
        let s = x.shape();
        let (planes, inp) = shapes::resize(s, out)?;
        let mut o = tensor::scratch(planes * numel(&out));
        self.run(|| interp::resize(x.data(), planes, inp, out, mode, &mut o));
        CpuTensor::from_vec(o, &[s[0], s[1], out[0], out[1], out[2]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(cpu: &CpuBackend, shape: &[usize], seed: u64) -> CpuTensor {
        let v = crate::test_data::uniform(numel(shape), seed, -0.5, 0.5);
        cpu.upload(&v, shape).unwrap()
    }

    /// Output buffers come from the recycling pool with arbitrary contents:
    /// every op must overwrite all of its output. Runs each op, fills the pool
    /// with NaN buffers of the output's size, runs it again and wants the
    /// same bits.
    /// The box of a [1, D, H, W] volume, element by element, and the
    /// refusals (outside the volume, a batch of two).
    #[test]
    fn download_box_selects_the_box() {
        let cpu = CpuBackend::new();
        let dims = [3, 4, 5];
        let v: Vec<f32> = (0..60).map(|i| i as f32).collect();
        let t = cpu.upload(&v, &[1, 3, 4, 5]).unwrap();
        let got = cpu.download_box(&t, [1, 2, 3], [2, 2, 2]).unwrap();
        let mut want = vec![];
        for d in 1..3 {
            for h in 2..4 {
                for w in 3..5 {
                    want.push(((d * dims[1] + h) * dims[2] + w) as f32);
                }
            }
        }
        assert_eq!(got, want);
        assert_eq!(cpu.download_box(&t, [0; 3], dims).unwrap(), v);
        assert!(cpu.download_box(&t, [2, 0, 0], [2, 1, 1]).is_err());
        let two = cpu.upload(&v, &[2, 3, 2, 5]).unwrap();
        assert!(cpu.download_box(&two, [0; 3], [1; 3]).is_err());
    }

    #[test]
    fn ops_overwrite_recycled_buffers() {
        let cpu = CpuBackend::with_threads(2).unwrap();
        let x = rnd(&cpu, &[1, 512, 64], 1);
        let w = rnd(&cpu, &[600, 64], 2);
        let b = rnd(&cpu, &[600], 3);
        let r = rnd(&cpu, &[1, 512, 600], 4);
        let w1 = rnd(&cpu, &[64], 5);
        let big = rnd(&cpu, &[1, 4096, 96], 6);
        let vol = rnd(&cpu, &[1, 2, 16, 32, 32], 7);
        let img = rnd(&cpu, &[1, 1, 16, 64, 64], 8);
        let pw = rnd(&cpu, &[96, 4 * 16 * 16], 9);
        let pb = rnd(&cpu, &[96], 10);
        let pos = rnd(&cpu, &[64, 96], 11);
        let ctx = rnd(&cpu, &[1, 4096, 8], 12);
        let ctw = rnd(&cpu, &[8, 8, 2, 2, 2], 13);
        let ctb = rnd(&cpu, &[8], 14);
        let item_w = rnd(&cpu, &[2, 16, 32, 32], 15);
        let spec = AttnSpec {
            batch: 1,
            heads: 4,
            head_dim: 24,
            q_len: 4096,
            kv_len: 4096,
            scale: 0.2,
            causal: false,
        };
        type Op<'a> = (&'a str, Box<dyn Fn() -> CpuTensor + 'a>);
        let ops: Vec<Op<'_>> = vec![
            (
                "linear",
                Box::new(|| cpu.linear(&x, &w, None, Activation::None, None).unwrap()),
            ),
            (
                "linear+bias+gelu",
                Box::new(|| {
                    cpu.linear(&x, &w, Some(&b), Activation::Gelu, None)
                        .unwrap()
                }),
            ),
            (
                "linear+residual",
                Box::new(|| {
                    cpu.linear(&x, &w, Some(&b), Activation::None, Some(&r))
                        .unwrap()
                }),
            ),
            ("bmm_nt", Box::new(|| cpu.bmm_nt(&r, &r).unwrap())),
            ("add", Box::new(|| cpu.add(&r, &r).unwrap())),
            (
                "add_broadcast",
                Box::new(|| cpu.add_broadcast(&r, &b).unwrap()),
            ),
            (
                "layer_norm",
                Box::new(|| cpu.layer_norm(&big, &pb, &pb, 1e-5).unwrap()),
            ),
            (
                "layer_norm_item",
                Box::new(|| {
                    cpu.layer_norm_item(&vol, &item_w, &item_w, 1e-5, Activation::Gelu)
                        .unwrap()
                }),
            ),
            (
                "attention",
                Box::new(|| {
                    cpu.attention(
                        AttnOperand::at(&big, 0),
                        AttnOperand::at(&big, 0),
                        AttnOperand::at(&big, 0),
                        &spec,
                    )
                    .unwrap()
                }),
            ),
            (
                "patch_embed",
                Box::new(|| cpu.patch_embed(&img, &pw, &pb, &pos, [4, 16, 16]).unwrap()),
            ),
            (
                "conv_transpose",
                Box::new(|| {
                    cpu.conv_transpose_k2s2(&ctx, [16, 16, 16], &ctw, &ctb, Activation::Gelu)
                        .unwrap()
                }),
            ),
            (
                "resize",
                Box::new(|| cpu.resize(&vol, [16, 64, 64], Interp::Trilinear).unwrap()),
            ),
            (
                "resize nearest",
                Box::new(|| cpu.resize(&vol, [32, 48, 64], Interp::Nearest).unwrap()),
            ),
            (
                "slice_batch",
                Box::new(|| cpu.slice_batch(&r, 0, 1).unwrap()),
            ),
            (
                "layer_norm rows (w)",
                Box::new(|| cpu.layer_norm(&x, &w1, &w1, 1e-5).unwrap()),
            ),
        ];
        for (name, op) in &ops {
            let want = op().into_vec();
            for _ in 0..4 {
                tensor::recycle(vec![f32::NAN; want.len()]);
            }
            let got = op().into_vec();
            assert!(
                got.iter().all(|v| v.is_finite()),
                "{name}: non-finite output"
            );
            assert!(
                want.iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: result changed with recycled buffers"
            );
        }
    }
}
