//! Volume ops: patch embedding (im2col + GEMM + epilogue), ConvTranspose3d
//! k2 s2 (GEMM + scatter), and resizes (host-computed taps + gather).

use cudarc::driver::{DevicePtr, LaunchConfig};

use super::gemm::Gemm;
use super::kernels::act_code;
use super::{check, launch, numel, CudaBackend, CudaTensor};
use crate::backend::interp::{linear_taps, nearest_index};
use crate::backend::shapes;
use crate::backend::{Activation, Interp};
use crate::error::{Error, Result};

fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::shape(format!("{what} = {v} is too large")))
}

impl CudaBackend {
    pub(super) fn patch_embed_impl(
        &self,
        image: &CudaTensor,
        w: &CudaTensor,
        b: &CudaTensor,
        pos: &CudaTensor,
        patch: [usize; 3],
    ) -> Result<CudaTensor> {
        let (batch, dims, n, c) =
            shapes::patch_embed(&image.shape, &w.shape, b.numel(), pos.numel(), patch)?;
        let p = numel(&patch);
        for (t, what) in [
            (image, "patch_embed image"),
            (w, "patch_embed weight"),
            (b, "patch_embed bias"),
            (pos, "position embedding"),
        ] {
            self.check_dtype(t, what)?;
        }
        self.bind()?;
        let out = self.alloc(&[batch, n, c])?;
        if out.numel() == 0 {
            return Ok(out);
        }
        let cols = self.alloc(&[batch * n, p])?;
        launch!(
            self,
            self.kname("im2col"),
            self.cfg_1d(cols.numel()),
            [
                image.ptr,
                cols.ptr,
                i32_of(batch, "batch")?,
                i32_of(dims[0], "D")?,
                i32_of(dims[1], "H")?,
                i32_of(dims[2], "W")?,
                patch[0] as i32,
                patch[1] as i32,
                patch[2] as i32
            ]
        )?;
        self.blas()?.gemm(
            &Gemm {
                m: batch * n,
                n: c,
                k: p,
                w_nk: true,
                x: cols.ptr,
                w: w.ptr,
                out: out.ptr,
                batch: 1,
                stride_x: 0,
                stride_w: 0,
                stride_out: 0,
            },
            self.dtype(),
        )?;
        // Bias and position embedding (period: one item) in one pass.
        self.epilogue(&out, Some(b), Some(pos), Activation::None)?;
        Ok(out)
    }

    pub(super) fn conv_transpose_impl(
        &self,
        x: &CudaTensor,
        grid: [usize; 3],
        w: &CudaTensor,
        b: &CudaTensor,
        act: Activation,
    ) -> Result<CudaTensor> {
        let (batch, vox, cin, cout) = shapes::conv_transpose(&x.shape, grid, &w.shape, b.numel())?;
        self.check_dtype(x, "conv_transpose input")?;
        self.check_dtype(w, "conv_transpose weight")?;
        self.check_dtype(b, "conv_transpose bias")?;
        // The scatter kernel holds one voxel's 8·Cout values (stride 9 per
        // channel) in shared memory.
        let smem = cout * 9 * 4;
        check(smem <= 48 * 1024, || {
            format!("conv_transpose with {cout} output channels (at most 1365)")
        })?;
        self.bind()?;
        let out = self.alloc(&[batch, 8 * vox, cout])?;
        if out.numel() == 0 {
            return Ok(out);
        }
        let rows = batch * vox;
        check(rows <= i32::MAX as usize, || {
            format!("conv_transpose over {rows} voxels")
        })?;
        let tmp = self.alloc(&[rows, cout * 8])?;
        let g = Gemm {
            m: rows,
            n: cout * 8,
            k: cin,
            // w as [Cin, Cout·8] row-major is PyTorch's (in, out, kd, kh, kw).
            w_nk: false,
            x: x.ptr,
            w: w.ptr,
            out: tmp.ptr,
            batch: 1,
            stride_x: 0,
            stride_w: 0,
            stride_out: 0,
        };
        if cin == 0 {
            unsafe {
                cudarc::driver::result::memset_d8_async(
                    tmp.ptr,
                    0,
                    tmp.nbytes(),
                    self.stream.cu_stream(),
                )
            }
            .map_err(|e| Error::Cuda(format!("zeroing a Cin=0 product: {e}")))?;
        } else {
            self.blas()?.gemm(&g, self.dtype())?;
        }
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        launch!(
            self,
            self.kname("convt_scatter"),
            cfg,
            [
                tmp.ptr,
                b.ptr,
                out.ptr,
                i32_of(grid[0], "grid d")?,
                i32_of(grid[1], "grid h")?,
                i32_of(grid[2], "grid w")?,
                cout as i32,
                act_code(act)
            ]
        )?;
        Ok(out)
    }

    pub(super) fn resize_impl(
        &self,
        x: &CudaTensor,
        out_dims: [usize; 3],
        mode: Interp,
    ) -> Result<CudaTensor> {
        let s = &x.shape;
        let (_, inp) = shapes::resize(s, out_dims)?;
        self.check_dtype(x, "resize input")?;
        self.bind()?;
        let out = self.alloc(&[s[0], s[1], out_dims[0], out_dims[1], out_dims[2]])?;
        if out.numel() == 0 {
            return Ok(out);
        }
        let planes = (s[0] * s[1]) as i64;
        let geo = [
            i32_of(inp[0], "D")?,
            i32_of(inp[1], "H")?,
            i32_of(inp[2], "W")?,
            i32_of(out_dims[0], "out D")?,
            i32_of(out_dims[1], "out H")?,
            i32_of(out_dims[2], "out W")?,
        ];
        let cfg = self.cfg_1d(out.numel());
        let upload_i32 = |v: &[i32]| {
            self.stream
                .clone_htod(v)
                .map_err(|e| Error::Cuda(format!("resize tables: {e}")))
        };
        match mode {
            Interp::Nearest | Interp::NearestExact => {
                let idx: Vec<i32> = (0..3)
                    .flat_map(|a| {
                        (0..out_dims[a])
                            .map(move |i| nearest_index(mode, i, inp[a], out_dims[a]) as i32)
                    })
                    .collect();
                let idx_d = upload_i32(&idx)?;
                let (ip, _u) = idx_d.device_ptr(&self.stream);
                launch!(
                    self,
                    self.kname("resize_nearest"),
                    cfg,
                    [x.ptr, out.ptr, planes, geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], ip]
                )?;
            }
            Interp::Trilinear => {
                let mut idx = Vec::new();
                let mut lam = Vec::new();
                for a in 0..3 {
                    for i in 0..out_dims[a] {
                        let (i0, i1, l0, l1) = linear_taps(i, inp[a], out_dims[a]);
                        idx.extend([i0 as i32, i1 as i32]);
                        lam.extend([l0, l1]);
                    }
                }
                let idx_d = upload_i32(&idx)?;
                let lam_d = self
                    .stream
                    .clone_htod(&lam)
                    .map_err(|e| Error::Cuda(format!("resize tables: {e}")))?;
                let (ip, _u1) = idx_d.device_ptr(&self.stream);
                let (lp, _u2) = lam_d.device_ptr(&self.stream);
                launch!(
                    self,
                    self.kname("resize_trilinear"),
                    cfg,
                    [
                        x.ptr, out.ptr, planes, geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], ip,
                        lp
                    ]
                )?;
            }
        }
        // The tables are freed in stream order, after the kernel has read them.
        Ok(out)
    }
}
