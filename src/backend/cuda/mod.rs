//! CUDA backend: hand-written kernels (`kernels/*.cu`, loaded by
//! [`kernels`]), cuBLAS/cuBLASLt for the matrix products ([`gemm`]), all on
//! one stream of one device, driven through cudarc.
//!
//! Two precisions:
//! * [`Precision::F32`] (parity mode): f32 storage and arithmetic everywhere,
//!   cuBLAS default math (no TF32), an f32 attention kernel.
//! * [`Precision::Bf16`]: activations and weights stored as bf16, products
//!   on tensor cores with f32 accumulation, LayerNorm and softmax statistics
//!   in f32 (or f64 for the whole-item LayerNorm).
//!
//! A machine without CUDA is not an error until a backend is asked for:
//! [`CudaBackend::new`] checks for libcuda (cudarc would panic), the device,
//! cuBLAS and, when needed, NVRTC, and reports what is missing.
//!
//! Each op family has one module here and one kernel file, named alike
//! (`linear.rs` ↔ `kernels/linear.cu`, ...; `memory.rs` does data movement
//! with the casts of `kernels/elementwise.cu`). How each [`Backend`] op runs:
//!
//! | op | work |
//! |---|---|
//! | upload / download | one copy (bf16 converted on the host) |
//! | weight | memory map → pinned chunks → device; dtype cast kernel (`elementwise.cu`) when the checkpoint dtype differs |
//! | repeat / slice / concat_batch | device-to-device copies |
//! | narrow_rows | one strided 2-D copy (`cuMemcpy2DAsync`) |
//! | linear, f32 | `cublasSgemm` (default math, no TF32) + `epilogue` kernel (`linear.cu`) (bias, activation, residual) when needed |
//! | linear, bf16 | cuBLASLt with bias/ReLU epilogue and the residual as C: one call; erf-GELU / quick_gelu then `epilogue` in place; plain `cublasGemmEx` + `epilogue` if Lt has no algorithm |
//! | bmm_nt | `cublasSgemmStridedBatched` / `cublasGemmStridedBatchedEx` |
//! | add, add_broadcast | `add`, `add_broadcast` |
//! | layer_norm | `ln_rows_*` (a warp per row, row in registers, C ≤ 1024) or `ln_rows_block_*` |
//! | layer_norm_item | `ln_item_sum` → `ln_item_sqdev` → `ln_item_apply` (two-pass, f64 partials, affine + activation fused) |
//! | attention | `attn_mma_{D}_{warps}` (bf16 tensor cores, flash-style) or `attn_generic_*` (f32 arithmetic; parity mode and odd head dims) |
//! | patch_embed | `im2col` → GEMM → `epilogue` (bias + position embedding) |
//! | conv_transpose_k2s2 | GEMM `[B·S, Cin]·[Cin, Cout·8]` → `convt_scatter` (bias + activation) |
//! | resize | host-computed taps (`backend::interp`, shared with the CPU backend) → `resize_trilinear` / `resize_nearest` |

pub mod driver_probe;
pub mod gemm;
pub mod kernels;
pub mod tensor;

mod attention;
mod conv_transpose;
mod elementwise;
mod layer_norm;
mod linear;
mod memory;
mod patch_embed;
mod resize;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaStream, DevicePtr, LaunchConfig};

pub use crate::backend::device::{
    cuda_available, cuda_device_count, cuda_unavailable_reason, Device,
};
pub use tensor::{CudaTensor, StorageType};

use crate::backend::{Activation, AttnOperand, AttnSpec, Backend, Interp};
use crate::error::{Error, Result};
use crate::weights::WeightView;
use gemm::Blas;
use kernels::Kernels;

/// Launches kernel `$name` with `$cfg` and the listed arguments (each
/// evaluated into a local that outlives the launch).
macro_rules! launch {
    ($be:expr, $name:expr, $cfg:expr, [$($arg:expr),* $(,)?]) => {{
        let name: &str = &$name;
        let f = $be.kernels.get(name)?;
        let mut builder = $be.stream.launch_builder(f);
        $( let a = $arg; cudarc::driver::PushKernelArg::arg(&mut builder, &a); )*
        unsafe { builder.launch($cfg) }
            .map(|_| ())
            .map_err(|e| $crate::error::Error::Cuda(format!("launching {name}: {e}")))
    }};
}
pub(crate) use launch;

/// Storage and arithmetic precision of a [`CudaBackend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    Bf16,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(Error::Invalid(format!(
                "precision {s:?}: expected f32 or bf16"
            ))),
        }
    }
    pub fn dtype(self) -> StorageType {
        match self {
            Precision::F32 => StorageType::F32,
            Precision::Bf16 => StorageType::Bf16,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Precision::parse(s)
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dtype().suffix())
    }
}

/// Construction options beyond device and precision.
#[derive(Clone, Copy, Debug)]
pub struct CudaOptions {
    /// bf16 Linear layers through cuBLASLt with fused epilogues (default);
    /// false forces plain cuBLAS plus the epilogue kernel (for testing that
    /// path, which is also the fallback when Lt has no algorithm).
    pub cublaslt: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions { cublaslt: true }
    }
}

pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    precision: Precision,
    kernels: Kernels,
    blas: Mutex<Blas>,
    staging: Mutex<Option<memory::Staging>>,
    poison: AtomicBool,
    options: CudaOptions,
    sm_count: usize,
    cc: (i32, i32),
    device_name: String,
    ordinal: usize,
}

impl CudaBackend {
    /// A backend on CUDA device `ordinal`. Errors (never panics) when there
    /// is no driver, no such device, no cuBLAS, or the kernels cannot be
    /// loaded or compiled (the NVRTC log is in the message).
    pub fn new(ordinal: usize, precision: Precision) -> Result<Self> {
        Self::with_options(ordinal, precision, CudaOptions::default())
    }

    pub fn with_options(
        ordinal: usize,
        precision: Precision,
        options: CudaOptions,
    ) -> Result<Self> {
        let count = cuda_device_count()?;
        if ordinal >= count {
            return Err(crate::backend::device::no_such_device(ordinal, count));
        }
        driver_probe::blas_present()?;
        driver_probe::guard("CUDA setup", || Self::init(ordinal, precision, options))
    }

    fn init(ordinal: usize, precision: Precision, options: CudaOptions) -> Result<Self> {
        let drv = |what: &str| {
            let what = what.to_string();
            move |e: cudarc::driver::DriverError| Error::Cuda(format!("{what}: {e}"))
        };
        let ctx = CudaContext::new(ordinal).map_err(drv("creating the CUDA context"))?;
        // One stream per backend and every tensor used on it: cudarc's
        // per-allocation event tracking would only add two events and
        // their waits to every launch.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv("creating a stream"))?;
        let cc = ctx
            .compute_capability()
            .map_err(drv("compute capability"))?;
        if precision == Precision::Bf16 && cc.0 < 8 {
            return Err(Error::Cuda(format!(
                "bf16 needs compute capability 8.0 or newer; device {ordinal} is {}.{} (use f32)",
                cc.0, cc.1
            )));
        }
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(drv("multiprocessor count"))?
            .max(1) as usize;
        let device_name = ctx.name().map_err(drv("device name"))?;
        if ctx.has_async_alloc() {
            keep_pool_memory(&ctx)?;
        }
        let kernels = Kernels::load(&ctx, cc)?;
        let blas = Blas::new(&stream, cc.0 >= 9)?;
        Ok(CudaBackend {
            ctx,
            stream,
            precision,
            kernels,
            blas: Mutex::new(blas),
            staging: Mutex::new(None),
            poison: AtomicBool::new(false),
            options,
            sm_count,
            cc,
            device_name,
            ordinal,
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// Fill every new output allocation with NaN bytes (0xFF) first, so a
    /// test can see any element an op failed to write.
    pub fn set_poison_outputs(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    fn dtype(&self) -> StorageType {
        self.precision.dtype()
    }

    fn blas(&self) -> Result<MutexGuard<'_, Blas>> {
        self.blas
            .lock()
            .map_err(|_| Error::Cuda("cuBLAS state poisoned by an earlier panic".into()))
    }

    fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| Error::Cuda(format!("binding the CUDA context: {e}")))
    }

    /// An uninitialised (or poisoned) tensor of the backend's dtype.
    fn alloc(&self, shape: &[usize]) -> Result<CudaTensor> {
        self.alloc_typed(shape, self.dtype())
    }

    fn alloc_typed(&self, shape: &[usize], dtype: StorageType) -> Result<CudaTensor> {
        let bytes = shape
            .iter()
            .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::shape(format!("tensor {shape:?} is too large")))?;
        if bytes == 0 {
            return Ok(CudaTensor {
                shape: shape.to_vec(),
                dtype,
                _buf: None,
                ptr: 0,
            });
        }
        let slice = self.alloc_bytes(bytes)?;
        let ptr = {
            let (p, _untracked) = slice.device_ptr(&self.stream);
            p
        };
        if self.poison.load(Ordering::Relaxed) {
            unsafe {
                cudarc::driver::result::memset_d8_async(ptr, 0xFF, bytes, self.stream.cu_stream())
            }
            .map_err(|e| Error::Cuda(format!("poisoning an output: {e}")))?;
        }
        Ok(CudaTensor {
            shape: shape.to_vec(),
            dtype,
            _buf: Some(Arc::new(slice)),
            ptr,
        })
    }

    /// Raw device bytes (scratch buffers).
    fn alloc_bytes(&self, bytes: usize) -> Result<cudarc::driver::CudaSlice<u8>> {
        unsafe { self.stream.alloc::<u8>(bytes) }.map_err(|e| {
            if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                Error::Memory(format!(
                    "CUDA device {} is out of memory allocating {bytes} bytes",
                    self.ordinal
                ))
            } else {
                Error::Cuda(format!("allocating {bytes} bytes: {e}"))
            }
        })
    }

    /// One thread per element with a grid-stride loop: enough blocks to fill
    /// the device, no more.
    fn cfg_1d(&self, n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(256).clamp(1, self.sm_count * 32);
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn kname(&self, base: &str) -> String {
        typed(base, self.dtype())
    }

    /// Every tensor an op receives must come from a backend of this precision.
    fn check_dtype(&self, t: &CudaTensor, what: &str) -> Result<()> {
        if t.dtype == self.dtype() {
            Ok(())
        } else {
            Err(Error::Cuda(format!(
                "{what} is a {} tensor but this backend runs in {}",
                t.dtype.suffix(),
                self.precision
            )))
        }
    }
}

/// Freed memory stays in the stream-ordered pool instead of going back to
/// the driver at every synchronisation: allocation is then nearly free.
fn keep_pool_memory(ctx: &Arc<CudaContext>) -> Result<()> {
    use cudarc::driver::sys;
    unsafe {
        let mut pool = std::mem::MaybeUninit::uninit();
        sys::cuDeviceGetDefaultMemPool(pool.as_mut_ptr(), ctx.cu_device())
            .result()
            .map_err(|e| Error::Cuda(format!("cuDeviceGetDefaultMemPool: {e}")))?;
        let threshold: u64 = u64::MAX;
        sys::cuMemPoolSetAttribute(
            pool.assume_init(),
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &threshold as *const u64 as *mut std::ffi::c_void,
        )
        .result()
        .map_err(|e| Error::Cuda(format!("cuMemPoolSetAttribute: {e}")))
    }
}

/// The default pool's high watermark of memory in use (every tensor is
/// allocated from it, stream-ordered), or resets it to the current use.
/// `None` when the device has no memory pools.
fn pool_used_high(ctx: &Arc<CudaContext>, reset: bool) -> Option<usize> {
    use cudarc::driver::sys;
    if !ctx.has_async_alloc() || ctx.bind_to_thread().is_err() {
        return None;
    }
    let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
    unsafe {
        let mut pool = std::mem::MaybeUninit::uninit();
        sys::cuDeviceGetDefaultMemPool(pool.as_mut_ptr(), ctx.cu_device())
            .result()
            .ok()?;
        let mut v: u64 = 0;
        let p = &mut v as *mut u64 as *mut std::ffi::c_void;
        // Setting USED_MEM_HIGH (to zero, the only value allowed) resets it.
        let r = if reset {
            sys::cuMemPoolSetAttribute(pool.assume_init(), attr, p)
        } else {
            sys::cuMemPoolGetAttribute(pool.assume_init(), attr, p)
        };
        r.result().ok()?;
        Some(v as usize)
    }
}

use crate::backend::shapes::{self, check, numel};

/// A kernel instantiated per storage type: `base_f32` or `base_bf16`.
fn typed(base: &str, dtype: StorageType) -> String {
    format!("{base}_{}", dtype.suffix())
}

/// Both storage types, for the kernel-name lists of the families.
#[cfg(test)]
const DTYPES: [StorageType; 2] = [StorageType::F32, StorageType::Bf16];

/// A family's kernels instantiated per storage type: `module`, and every
/// base name with each type's suffix.
#[cfg(test)]
fn typed_names(module: &'static str, bases: &[&str]) -> (&'static str, Vec<String>) {
    let names = DTYPES
        .iter()
        .flat_map(|&t| bases.iter().map(move |b| typed(b, t)))
        .collect();
    (module, names)
}

/// `v` as a kernel's `int` argument, or a clear error naming it.
fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::shape(format!("{what} = {v} is too large")))
}

/// Every op checks its shapes (`backend::shapes`, shared with the CPU
/// backend, so both give the same error text) and calls its family's module.
impl Backend for CudaBackend {
    type Tensor = CudaTensor;

    fn name(&self) -> String {
        format!(
            "cuda:{} ({}, sm_{}{}, {}, kernels: {})",
            self.ordinal,
            self.device_name,
            self.cc.0,
            self.cc.1,
            self.precision,
            self.kernels.origin
        )
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<CudaTensor> {
        shapes::upload(data.len(), shape)?;
        self.upload_f32(data, shape)
    }

    fn download(&self, t: &CudaTensor) -> Result<Vec<f32>> {
        self.download_f32(t)
    }

    fn download_box(&self, t: &CudaTensor, start: [usize; 3], len: [usize; 3]) -> Result<Vec<f32>> {
        let dims = shapes::download_box(&t.shape, start, len)?;
        self.download_box_gather(t, dims, start, len)
    }

    fn shape<'a>(&self, t: &'a CudaTensor) -> &'a [usize] {
        &t.shape
    }

    fn weight(&self, w: &WeightView<'_>) -> Result<CudaTensor> {
        self.upload_weight(w)
    }

    fn reshape(&self, mut t: CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        shapes::reshape(&t.shape, shape)?;
        t.shape = shape.to_vec();
        Ok(t)
    }

    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| Error::Cuda(format!("synchronize: {e}")))
    }

    fn memory_peak(&self) -> Option<usize> {
        pool_used_high(&self.ctx, false)
    }

    fn reset_memory_peak(&self) {
        pool_used_high(&self.ctx, true);
    }

    fn repeat_batch(&self, x: &CudaTensor, n: usize) -> Result<CudaTensor> {
        let s = shapes::repeat_batch(&x.shape, n)?;
        self.repeat_items(&s, x, n)
    }

    fn slice_batch(&self, x: &CudaTensor, start: usize, len: usize) -> Result<CudaTensor> {
        let s = shapes::slice_batch(&x.shape, start, len)?;
        self.slice_items(&s, x, start, len)
    }

    fn concat_batch(&self, xs: &[&CudaTensor]) -> Result<CudaTensor> {
        let s = shapes::concat_batch(&xs.iter().map(|x| x.shape.as_slice()).collect::<Vec<_>>())?;
        self.concat_items(&s, xs)
    }

    fn narrow_rows(&self, x: &CudaTensor, start: usize, len: usize) -> Result<CudaTensor> {
        let bnc = shapes::narrow_rows(&x.shape, start, len)?;
        self.narrow_rows_copy(bnc, x, start, len)
    }

    fn linear(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: Option<&CudaTensor>,
        act: Activation,
        residual: Option<&CudaTensor>,
    ) -> Result<CudaTensor> {
        let dims = shapes::linear(
            &x.shape,
            &w.shape,
            b.map(|b| b.shape.as_slice()),
            act,
            residual.map(|r| r.shape.as_slice()),
        )?;
        linear::linear(self, dims, x, w, b, act, residual)
    }

    fn bmm_nt(&self, x: &CudaTensor, w: &CudaTensor) -> Result<CudaTensor> {
        let dims = shapes::bmm_nt(&x.shape, &w.shape)?;
        linear::bmm_nt(self, dims, x, w)
    }

    fn add(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        shapes::add(&a.shape, &b.shape)?;
        elementwise::add(self, a, b)
    }

    fn add_broadcast(&self, x: &CudaTensor, v: &CudaTensor) -> Result<CudaTensor> {
        shapes::add_broadcast(&x.shape, &v.shape)?;
        elementwise::add_broadcast(self, x, v)
    }

    fn layer_norm(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: &CudaTensor,
        eps: f32,
    ) -> Result<CudaTensor> {
        let c = shapes::layer_norm(&x.shape, &w.shape, &b.shape)?;
        layer_norm::layer_norm(self, c, x, w, b, eps)
    }

    fn layer_norm_item(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: &CudaTensor,
        eps: f32,
        act: Activation,
    ) -> Result<CudaTensor> {
        let item = shapes::layer_norm_item(&x.shape, &w.shape, &b.shape)?;
        layer_norm::layer_norm_item(self, item, x, w, b, eps, act)
    }

    fn attention(
        &self,
        q: AttnOperand<'_, CudaTensor>,
        k: AttnOperand<'_, CudaTensor>,
        v: AttnOperand<'_, CudaTensor>,
        spec: &AttnSpec,
    ) -> Result<CudaTensor> {
        let ld = shapes::attention(
            (&q.t.shape, q.col),
            (&k.t.shape, k.col),
            (&v.t.shape, v.col),
            spec,
        )?;
        attention::attention(self, ld, q, k, v, spec)
    }

    fn patch_embed(
        &self,
        image: &CudaTensor,
        w: &CudaTensor,
        b: &CudaTensor,
        pos: &CudaTensor,
        patch: [usize; 3],
    ) -> Result<CudaTensor> {
        let dims = shapes::patch_embed(&image.shape, &w.shape, b.numel(), pos.numel(), patch)?;
        patch_embed::patch_embed(self, dims, image, w, b, pos, patch)
    }

    fn conv_transpose_k2s2(
        &self,
        x: &CudaTensor,
        grid: [usize; 3],
        w: &CudaTensor,
        b: &CudaTensor,
        act: Activation,
    ) -> Result<CudaTensor> {
        let dims = shapes::conv_transpose(&x.shape, grid, &w.shape, b.numel())?;
        conv_transpose::conv_transpose_k2s2(self, dims, x, grid, w, b, act)
    }

    fn resize(&self, x: &CudaTensor, out: [usize; 3], mode: Interp) -> Result<CudaTensor> {
        let (_, inp) = shapes::resize(&x.shape, out)?;
        resize::resize(self, inp, x, out, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel a family launches is defined in the `.cu` module the
    /// family names, and every kernel the modules define is launched by
    /// some family: a renamed or moved kernel fails here, without a GPU,
    /// instead of at its first launch.
    #[test]
    fn launched_kernels_are_defined_in_their_modules() {
        let families = [
            attention::kernel_names(),
            conv_transpose::kernel_names(),
            elementwise::kernel_names(),
            layer_norm::kernel_names(),
            linear::kernel_names(),
            memory::kernel_names(),
            patch_embed::kernel_names(),
            resize::kernel_names(),
        ];
        let mut launched = std::collections::BTreeSet::new();
        for (module, names) in families {
            let src = kernels::modules()
                .iter()
                .find(|m| m.0 == module)
                .unwrap_or_else(|| panic!("no kernels/{module}.cu embedded"))
                .1;
            let defined = kernels::cu_entries(src);
            for name in names {
                assert!(
                    defined.contains(&name),
                    "{name} is launched but kernels/{module}.cu defines only {defined:?}"
                );
                launched.insert(name);
            }
        }
        for (module, src, _, _) in kernels::modules() {
            for name in kernels::cu_entries(src) {
                assert!(
                    launched.contains(&name),
                    "kernels/{module}.cu defines {name}, which no family launches"
                );
            }
        }
    }

    #[test]
    fn precision_parses() {
        assert_eq!(Precision::parse("bf16").unwrap(), Precision::Bf16);
        assert_eq!("F32".parse::<Precision>().unwrap(), Precision::F32);
        assert!(Precision::parse("fp8").is_err());
        assert_eq!(Precision::Bf16.to_string(), "bf16");
    }

    #[test]
    fn new_reports_missing_cuda_instead_of_panicking() {
        match CudaBackend::new(0, Precision::F32) {
            Ok(be) => assert!(be.name().starts_with("cuda:0")),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("CUDA: "), "{msg}");
                eprintln!("no CUDA here, as reported: {msg}");
            }
        }
        let far = CudaBackend::new(1 << 20, Precision::Bf16)
            .err()
            .map(|e| e.to_string());
        let far = far.expect("device 1048576 cannot exist");
        assert!(far.starts_with("CUDA: "), "{far}");
    }
}
