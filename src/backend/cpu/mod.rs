//! The CPU backend: float32, the reference every other backend is tested
//! against. Matrix products use `matrixmultiply`; parallelism is one rayon
//! pool (the global one, or the backend's own when built with a thread count).

pub mod attention;
#[cfg(segvol_avx512)]
pub mod attention_avx512;
mod conv_transpose;
mod elementwise;
pub mod gemm;
mod layer_norm;
mod linear;
mod memory;
mod patch_embed;
mod resize;
pub mod simd;
pub mod tensor;

use std::sync::Arc;

pub use tensor::CpuTensor;

use crate::backend::shapes;
use crate::backend::{Activation, AttnOperand, AttnSpec, Backend, Interp};
use crate::error::{Error, Result};
use crate::weights::WeightView;

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

/// Every op checks its shapes (`backend::shapes`, shared with the CUDA
/// backend, so both give the same error text) and calls its family's module.
impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> String {
        format!("cpu ({} threads, f32)", self.threads())
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<CpuTensor> {
        shapes::upload(data.len(), shape)?;
        memory::upload(data, shape)
    }

    fn download(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.data().to_vec())
    }

    fn download_box(&self, t: &CpuTensor, start: [usize; 3], len: [usize; 3]) -> Result<Vec<f32>> {
        let dims = shapes::download_box(t.shape(), start, len)?;
        Ok(memory::download_box(t, dims, start, len))
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
        memory::repeat_batch(&s, x, n)
    }

    fn slice_batch(&self, x: &CpuTensor, start: usize, len: usize) -> Result<CpuTensor> {
        let s = shapes::slice_batch(x.shape(), start, len)?;
        memory::slice_batch(&s, x, start, len)
    }

    fn concat_batch(&self, xs: &[&CpuTensor]) -> Result<CpuTensor> {
        let s = shapes::concat_batch(&xs.iter().map(|x| x.shape()).collect::<Vec<_>>())?;
        memory::concat_batch(&s, xs)
    }

    fn narrow_rows(&self, x: &CpuTensor, start: usize, len: usize) -> Result<CpuTensor> {
        let bnc = shapes::narrow_rows(x.shape(), start, len)?;
        memory::narrow_rows(bnc, x, start, len)
    }

    fn linear(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        b: Option<&CpuTensor>,
        act: Activation,
        residual: Option<&CpuTensor>,
    ) -> Result<CpuTensor> {
        let dims = shapes::linear(
            x.shape(),
            w.shape(),
            b.map(|b| b.shape()),
            act,
            residual.map(|r| r.shape()),
        )?;
        linear::linear(self, dims, x, w, b, act, residual)
    }

    fn bmm_nt(&self, x: &CpuTensor, w: &CpuTensor) -> Result<CpuTensor> {
        let dims = shapes::bmm_nt(x.shape(), w.shape())?;
        linear::bmm_nt(self, dims, x, w)
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        shapes::add(a.shape(), b.shape())?;
        elementwise::add(self, a, b)
    }

    fn add_broadcast(&self, x: &CpuTensor, v: &CpuTensor) -> Result<CpuTensor> {
        shapes::add_broadcast(x.shape(), v.shape())?;
        elementwise::add_broadcast(self, x, v)
    }

    fn layer_norm(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        b: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        shapes::layer_norm(x.shape(), w.shape(), b.shape())?;
        layer_norm::layer_norm(self, x, w, b, eps)
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
        layer_norm::layer_norm_item(self, item, x, w, b, eps, act)
    }

    fn attention(
        &self,
        q: AttnOperand<'_, CpuTensor>,
        k: AttnOperand<'_, CpuTensor>,
        v: AttnOperand<'_, CpuTensor>,
        spec: &AttnSpec,
    ) -> Result<CpuTensor> {
        let ld = shapes::attention(
            (q.t.shape(), q.col),
            (k.t.shape(), k.col),
            (v.t.shape(), v.col),
            spec,
        )?;
        attention::attention(self, ld, q, k, v, spec)
    }

    fn patch_embed(
        &self,
        image: &CpuTensor,
        w: &CpuTensor,
        b: &CpuTensor,
        pos: &CpuTensor,
        patch: [usize; 3],
    ) -> Result<CpuTensor> {
        let dims = shapes::patch_embed(image.shape(), w.shape(), b.len(), pos.len(), patch)?;
        patch_embed::patch_embed(self, dims, image, w, b, pos, patch)
    }

    fn conv_transpose_k2s2(
        &self,
        x: &CpuTensor,
        grid: [usize; 3],
        w: &CpuTensor,
        b: &CpuTensor,
        act: Activation,
    ) -> Result<CpuTensor> {
        let dims = shapes::conv_transpose(x.shape(), grid, w.shape(), b.len())?;
        conv_transpose::conv_transpose_k2s2(self, dims, x, grid, w, b, act)
    }

    fn resize(&self, x: &CpuTensor, out: [usize; 3], mode: Interp) -> Result<CpuTensor> {
        let dims = shapes::resize(x.shape(), out)?;
        resize::resize(self, dims, x, out, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(cpu: &CpuBackend, shape: &[usize], seed: u64) -> CpuTensor {
        let v = crate::test_data::uniform(shapes::numel(shape), seed, -0.5, 0.5);
        cpu.upload(&v, shape).unwrap()
    }

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

    /// Output buffers come from the recycling pool with arbitrary contents:
    /// every op must overwrite all of its output. Runs each op, fills the pool
    /// with NaN buffers of the output's size, runs it again and wants the
    /// same bits.
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
