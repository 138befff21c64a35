//! Dense math: Linear (GEMM + fused epilogue), batched products, additions
//! and LayerNorms.

use cudarc::driver::{DevicePtr, LaunchConfig};

use super::gemm::{Gemm, LtEpilogue};
use super::kernels::act_code;
use super::{check, launch, CudaBackend, CudaTensor, DType};
use crate::backend::shapes;
use crate::backend::Activation;
use crate::error::Result;

impl CudaBackend {
    pub(super) fn linear_impl(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: Option<&CudaTensor>,
        act: Activation,
        residual: Option<&CudaTensor>,
    ) -> Result<CudaTensor> {
        let (m, k, n, shape) = shapes::linear(
            &x.shape,
            &w.shape,
            b.map(|b| b.shape.as_slice()),
            act,
            residual.map(|r| r.shape.as_slice()),
        )?;
        if let Some(b) = b {
            self.check_dtype(b, "linear bias")?;
        }
        if let Some(r) = residual {
            self.check_dtype(r, "linear residual")?;
        }
        self.check_dtype(x, "linear input")?;
        self.check_dtype(w, "linear weight")?;
        self.bind()?;
        let out = self.alloc(&shape)?;
        if m == 0 || n == 0 {
            return Ok(out);
        }
        let g = Gemm {
            m,
            n,
            k,
            w_nk: true,
            x: x.ptr,
            w: w.ptr,
            out: out.ptr,
            batch: 1,
            stride_x: 0,
            stride_w: 0,
            stride_out: 0,
        };
        if k > 0 && self.dtype() == DType::Bf16 && self.options.cublaslt {
            // Lt finishes bias, ReLU and the residual itself; erf-GELU and
            // quick_gelu (its GELU epilogue is the tanh form) follow in place.
            let ep = LtEpilogue {
                bias: b.map(|b| b.ptr),
                relu: act == Activation::Relu,
                residual: residual.map(|r| r.ptr),
            };
            if self.blas()?.lt_gemm(&g, &ep, &self.stream)? {
                if matches!(act, Activation::Gelu | Activation::QuickGelu) {
                    self.epilogue(&out, None, None, act)?;
                }
                return Ok(out);
            }
        }
        self.product(&g)?;
        if b.is_some() || act != Activation::None || residual.is_some() {
            self.epilogue(&out, b, residual, act)?;
        }
        Ok(out)
    }

    /// Plain product into g.out (zeros when K = 0).
    fn product(&self, g: &Gemm) -> Result<()> {
        if g.k == 0 {
            let bytes = g.m * g.n * g.batch.max(1) * self.dtype().size();
            return unsafe {
                cudarc::driver::result::memset_d8_async(g.out, 0, bytes, self.stream.cu_stream())
            }
            .map_err(|e| crate::error::Error::Cuda(format!("zeroing a K=0 product: {e}")));
        }
        self.blas()?.gemm(g, self.dtype())
    }

    /// In place: `out = act(out + bias[col]) + add[i mod add.numel()]`.
    pub(super) fn epilogue(
        &self,
        out: &CudaTensor,
        bias: Option<&CudaTensor>,
        add: Option<&CudaTensor>,
        act: Activation,
    ) -> Result<()> {
        let n = out.numel();
        let cols = *out.shape.last().unwrap_or(&1);
        let period = add.map_or(1, |a| a.numel()).max(1);
        let aligned = |t: Option<&CudaTensor>| t.is_none_or(|t| t.ptr % 16 == 0);
        if out.dtype == DType::Bf16
            && n % 8 == 0
            && cols % 8 == 0
            && (add.is_none() || period % 8 == 0)
            && n / 8 < i32::MAX as usize
            && aligned(Some(out))
            && aligned(bias)
            && aligned(add)
        {
            // Eight elements per thread and step (16-byte accesses).
            return launch!(
                self,
                "epilogue_bf16_x8",
                self.cfg_1d(n / 8),
                [
                    out.ptr,
                    bias.map_or(0u64, |b| b.ptr),
                    add.map_or(0u64, |a| a.ptr),
                    out.ptr,
                    (n / 8) as i32,
                    (cols / 8) as i32,
                    (period / 8).max(1) as i32,
                    act_code(act)
                ]
            );
        }
        launch!(
            self,
            self.kname("epilogue"),
            self.cfg_1d(n),
            [
                out.ptr,
                bias.map_or(0u64, |b| b.ptr),
                add.map_or(0u64, |a| a.ptr),
                out.ptr,
                n as i64,
                cols.max(1) as i32,
                period as i64,
                act_code(act)
            ]
        )
    }

    pub(super) fn bmm_nt_impl(&self, x: &CudaTensor, w: &CudaTensor) -> Result<CudaTensor> {
        let (bn, m, k, n) = shapes::bmm_nt(&x.shape, &w.shape)?;
        self.check_dtype(x, "bmm_nt input")?;
        self.check_dtype(w, "bmm_nt weight")?;
        self.bind()?;
        let out = self.alloc(&[bn, m, n])?;
        if bn == 0 || m == 0 || n == 0 {
            return Ok(out);
        }
        self.product(&Gemm {
            m,
            n,
            k,
            w_nk: true,
            x: x.ptr,
            w: w.ptr,
            out: out.ptr,
            batch: bn,
            stride_x: m * k,
            stride_w: n * k,
            stride_out: m * n,
        })?;
        Ok(out)
    }

    pub(super) fn add_impl(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        shapes::add(&a.shape, &b.shape)?;
        self.check_dtype(a, "add operand")?;
        self.check_dtype(b, "add operand")?;
        self.bind()?;
        let out = self.alloc(&a.shape)?;
        let n = out.numel();
        if n > 0 {
            launch!(
                self,
                self.kname("add"),
                self.cfg_1d(n),
                [a.ptr, b.ptr, out.ptr, n as i64]
            )?;
        }
        Ok(out)
    }

    pub(super) fn add_broadcast_impl(&self, x: &CudaTensor, v: &CudaTensor) -> Result<CudaTensor> {
        let xs = &x.shape;
        shapes::add_broadcast(xs, &v.shape)?;
        self.check_dtype(x, "add_broadcast input")?;
        self.check_dtype(v, "add_broadcast vector")?;
        self.bind()?;
        let out = self.alloc(xs)?;
        let n = out.numel();
        if n > 0 {
            launch!(
                self,
                self.kname("add_broadcast"),
                self.cfg_1d(n),
                [x.ptr, v.ptr, out.ptr, n as i64, v.numel() as i64]
            )?;
        }
        Ok(out)
    }

    pub(super) fn layer_norm_impl(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: &CudaTensor,
        eps: f32,
    ) -> Result<CudaTensor> {
        let c = shapes::layer_norm(&x.shape, &w.shape, &b.shape)?;
        self.check_dtype(x, "layer_norm input")?;
        self.check_dtype(w, "layer_norm weight")?;
        self.check_dtype(b, "layer_norm bias")?;
        self.bind()?;
        let out = self.alloc(&x.shape)?;
        if c == 0 || out.numel() == 0 {
            return Ok(out);
        }
        let rows = out.numel() / c;
        let args = (x.ptr, w.ptr, b.ptr, out.ptr);
        // Rows up to 1024 live in one warp's registers; longer ones take a
        // block each.
        let npl = match c {
            0..=128 => Some(4),
            129..=256 => Some(8),
            257..=512 => Some(16),
            513..=1024 => Some(32),
            _ => None,
        };
        match npl {
            Some(npl) => {
                let cfg = LaunchConfig {
                    grid_dim: (rows.div_ceil(8) as u32, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                let name = format!("ln_rows_{}_{npl}", self.dtype().suffix());
                launch!(
                    self,
                    name,
                    cfg,
                    [args.0, args.1, args.2, args.3, rows as i32, c as i32, eps]
                )?;
            }
            None => {
                let cfg = LaunchConfig {
                    grid_dim: (rows as u32, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                launch!(
                    self,
                    self.kname("ln_rows_block"),
                    cfg,
                    [args.0, args.1, args.2, args.3, c as i32, eps]
                )?;
            }
        }
        Ok(out)
    }

    pub(super) fn layer_norm_item_impl(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: &CudaTensor,
        eps: f32,
        act: Activation,
    ) -> Result<CudaTensor> {
        let s = &x.shape;
        let item = shapes::layer_norm_item(s, &w.shape, &b.shape)?;
        check(s[0] <= 65535, || {
            format!("layer_norm_item over {} items (at most 65535)", s[0])
        })?;
        self.check_dtype(x, "layer_norm_item input")?;
        self.check_dtype(w, "layer_norm_item weight")?;
        self.check_dtype(b, "layer_norm_item bias")?;
        self.bind()?;
        let out = self.alloc(s)?;
        let items = s[0];
        if items == 0 || item == 0 {
            return Ok(out);
        }
        // Enough blocks to fill the device a few times over; each block's
        // partial sum covers item / (G·256) values per thread.
        let g = item.div_ceil(2048).clamp(1, 4 * self.sm_count);
        let part1 = self.alloc_bytes(items * g * 8)?;
        let part2 = self.alloc_bytes(items * g * 8)?;
        let (p1, _u1) = part1.device_ptr(&self.stream);
        let (p2, _u2) = part2.device_ptr(&self.stream);
        let cfg = LaunchConfig {
            grid_dim: (g as u32, items as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let n = item as i64;
        launch!(self, self.kname("ln_item_sum"), cfg, [x.ptr, n, p1])?;
        launch!(self, self.kname("ln_item_sqdev"), cfg, [x.ptr, n, p1, p2])?;
        launch!(
            self,
            self.kname("ln_item_apply"),
            cfg,
            [x.ptr, w.ptr, b.ptr, out.ptr, n, p1, p2, eps, act_code(act)]
        )?;
        Ok(out)
    }
}
