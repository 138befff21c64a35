//! Matrix products through cuBLAS and cuBLASLt.
//!
//! Every product here is row-major `out[M, N] = x[M, K] · op(w)` with w
//! either `[N, K]` (PyTorch's Linear layout, used transposed) or `[K, N]`.
//! cuBLAS is column-major, so it computes `outᵀ = op(w)ᵀ · xᵀ`, which reads
//! the same memory with no copies: A = w, B = x, C = out, m = N, n = M.
//!
//! * f32 (parity mode): `cublasSgemm` / `cublasSgemmStridedBatched` with
//!   CUBLAS_DEFAULT_MATH, which never uses TF32.
//! * bf16: cuBLASLt, bf16 operands, f32 compute and scale, with the bias
//!   (and ReLU) epilogue and the residual as the C operand, so a Linear with
//!   residual is one call; plain `cublasGemmEx` (bf16 in, f32 compute) is the
//!   fallback when Lt finds no algorithm, and for batched products.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::sys as bsys;
use cudarc::cublas::CudaBlas;
use cudarc::cublaslt::result as ltr;
use cudarc::cublaslt::sys as ltsys;
use cudarc::driver::{CudaSlice, CudaStream};

use super::tensor::StorageType;
use crate::error::{Error, Result};

/// One product in the row-major terms above. Pointers are device
/// addresses; `batch > 1` steps each operand by its stride (elements).
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// w is `[N, K]` (true) or `[K, N]` (false).
    pub w_nk: bool,
    pub x: u64,
    pub w: u64,
    pub out: u64,
    pub batch: usize,
    pub stride_x: usize,
    pub stride_w: usize,
    pub stride_out: usize,
}

impl Gemm {
    /// One (unbatched) product `out[m, n] = x[m, k] · op(w)`, w `[N, K]`
    /// when `w_nk`, else `[K, N]`.
    pub fn single(m: usize, n: usize, k: usize, w_nk: bool, x: u64, w: u64, out: u64) -> Self {
        Gemm {
            m,
            n,
            k,
            w_nk,
            x,
            w,
            out,
            batch: 1,
            stride_x: 0,
            stride_w: 0,
            stride_out: 0,
        }
    }
}

/// What cuBLASLt may fuse after the product.
#[derive(Clone, Copy, Debug)]
pub struct LtEpilogue {
    pub bias: Option<u64>,
    pub relu: bool,
    /// Added before the epilogue (beta = 1), same shape as out.
    pub residual: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LtKey {
    m: usize,
    n: usize,
    k: usize,
    w_nk: bool,
    epilogue: u32,
    residual: bool,
}

struct LtHandle(ltsys::cublasLtHandle_t);
// SAFETY: the handle is only used under the `Blas` mutex.
unsafe impl Send for LtHandle {}

impl Drop for LtHandle {
    fn drop(&mut self) {
        // Errors at teardown have nowhere to go.
        let _ = unsafe { ltr::destroy_handle(self.0) };
    }
}

pub struct Blas {
    cublas: CudaBlas,
    lt: LtHandle,
    workspace: CudaSlice<u8>,
    workspace_ptr: u64,
    /// Best algorithm per shape, or None when Lt has none (then cuBLAS).
    algos: HashMap<LtKey, Option<ltsys::cublasLtMatmulAlgo_t>>,
}

fn blas_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Cuda(format!("{what}: {e:?}"))
}

fn int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Cuda(format!("{what} = {v} exceeds cuBLAS's int range")))
}

impl Blas {
    pub fn new(stream: &Arc<CudaStream>, hopper: bool) -> Result<Self> {
        let cublas = CudaBlas::new(stream.clone()).map_err(|e| blas_err("cublasCreate", e))?;
        unsafe {
            bsys::cublasSetMathMode(*cublas.handle(), bsys::cublasMath_t::CUBLAS_DEFAULT_MATH)
                .result()
                .map_err(|e| blas_err("cublasSetMathMode", e))?;
        }
        let lt = LtHandle(ltr::create_handle().map_err(|e| blas_err("cublasLtCreate", e))?);
        // NVIDIA's recommended Lt workspace: 32 MiB on Hopper, 4 MiB before.
        let ws = if hopper { 32 << 20 } else { 4 << 20 };
        let workspace = unsafe { stream.alloc::<u8>(ws) }
            .map_err(|e| Error::Cuda(format!("cuBLASLt workspace: {e}")))?;
        let workspace_ptr = {
            use cudarc::driver::DevicePtr;
            let (p, _no_event_tracking) = workspace.device_ptr(stream);
            p
        };
        Ok(Blas {
            cublas,
            lt,
            workspace,
            workspace_ptr,
            algos: HashMap::new(),
        })
    }

    /// Plain product through cuBLAS, no epilogue.
    pub fn gemm(&mut self, g: &Gemm, dtype: StorageType) -> Result<()> {
        let h = *self.cublas.handle();
        let (m, n, k) = (int(g.n, "N")?, int(g.m, "M")?, int(g.k, "K")?);
        let (transa, lda) = if g.w_nk {
            (bsys::cublasOperation_t::CUBLAS_OP_T, int(g.k, "K")?)
        } else {
            (bsys::cublasOperation_t::CUBLAS_OP_N, int(g.n, "N")?)
        };
        let transb = bsys::cublasOperation_t::CUBLAS_OP_N;
        let (ldb, ldc) = (int(g.k, "K")?, int(g.n, "N")?);
        let (alpha, beta) = (1f32, 0f32);
        let r = unsafe {
            match (dtype, g.batch > 1) {
                (StorageType::F32, false) => cudarc::cublas::result::sgemm(
                    h,
                    transa,
                    transb,
                    m,
                    n,
                    k,
                    &alpha,
                    g.w as *const f32,
                    lda,
                    g.x as *const f32,
                    ldb,
                    &beta,
                    g.out as *mut f32,
                    ldc,
                ),
                (StorageType::F32, true) => cudarc::cublas::result::sgemm_strided_batched(
                    h,
                    transa,
                    transb,
                    m,
                    n,
                    k,
                    &alpha,
                    g.w as *const f32,
                    lda,
                    g.stride_w as i64,
                    g.x as *const f32,
                    ldb,
                    g.stride_x as i64,
                    &beta,
                    g.out as *mut f32,
                    ldc,
                    g.stride_out as i64,
                    int(g.batch, "batch")?,
                ),
                (StorageType::Bf16, false) => cudarc::cublas::result::gemm_ex(
                    h,
                    transa,
                    transb,
                    m,
                    n,
                    k,
                    &alpha as *const f32 as *const c_void,
                    g.w as *const c_void,
                    bsys::cudaDataType::CUDA_R_16BF,
                    lda,
                    g.x as *const c_void,
                    bsys::cudaDataType::CUDA_R_16BF,
                    ldb,
                    &beta as *const f32 as *const c_void,
                    g.out as *mut c_void,
                    bsys::cudaDataType::CUDA_R_16BF,
                    ldc,
                    bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                ),
                (StorageType::Bf16, true) => cudarc::cublas::result::gemm_strided_batched_ex(
                    h,
                    transa,
                    transb,
                    m,
                    n,
                    k,
                    &alpha as *const f32 as *const c_void,
                    g.w as *const c_void,
                    bsys::cudaDataType::CUDA_R_16BF,
                    lda,
                    g.stride_w as i64,
                    g.x as *const c_void,
                    bsys::cudaDataType::CUDA_R_16BF,
                    ldb,
                    g.stride_x as i64,
                    &beta as *const f32 as *const c_void,
                    g.out as *mut c_void,
                    bsys::cudaDataType::CUDA_R_16BF,
                    ldc,
                    g.stride_out as i64,
                    int(g.batch, "batch")?,
                    bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                ),
            }
        };
        r.map_err(|e| {
            blas_err(
                &format!(
                    "cuBLAS {} GEMM M={} N={} K={} batch={}",
                    dtype.suffix(),
                    g.m,
                    g.n,
                    g.k,
                    g.batch
                ),
                e,
            )
        })
    }

    /// bf16 product with a fused epilogue through cuBLASLt (single batch).
    /// Ok(false) when Lt has no algorithm for it: the caller then uses
    /// [`Blas::gemm`] and its own epilogue kernel.
    pub fn lt_gemm(&mut self, g: &Gemm, ep: &LtEpilogue, stream: &CudaStream) -> Result<bool> {
        debug_assert_eq!(g.batch, 1);
        let epilogue = match (ep.bias.is_some(), ep.relu) {
            (false, false) => ltsys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT,
            (false, true) => ltsys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_RELU,
            (true, false) => ltsys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
            (true, true) => ltsys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_RELU_BIAS,
        };
        let key = LtKey {
            m: g.m,
            n: g.n,
            k: g.k,
            w_nk: g.w_nk,
            epilogue: epilogue as u32,
            residual: ep.residual.is_some(),
        };
        let ty = ltsys::cudaDataType_t::CUDA_R_16BF;
        let (m, n, k) = (g.n as u64, g.m as u64, g.k as u64);
        let desc = LtDesc::new()?;
        let trans_a: i32 = if g.w_nk {
            cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T as i32
        } else {
            cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N as i32
        };
        desc.set(
            ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
            &trans_a,
        )?;
        desc.set(
            ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
            &epilogue,
        )?;
        if let Some(bias) = ep.bias {
            desc.set(
                ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                &bias,
            )?;
            // The bias is bf16 like D; say so rather than rely on the default.
            let bias_type = ty as i32;
            desc.set(
                ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                &bias_type,
            )?;
        }
        let a = if g.w_nk {
            LtLayout::new(ty, k, m, k as i64)?
        } else {
            LtLayout::new(ty, m, k, m as i64)?
        };
        let b = LtLayout::new(ty, k, n, k as i64)?;
        let c = LtLayout::new(ty, m, n, m as i64)?;

        let algo = match self.algos.get(&key) {
            Some(a) => *a,
            None => {
                let pref = LtPref::new(self.workspace.len())?;
                let found = unsafe {
                    ltr::get_matmul_algo_heuristic(self.lt.0, desc.0, a.0, b.0, c.0, c.0, pref.0)
                };
                let algo = found.ok().map(|h| h.algo);
                self.algos.insert(key, algo);
                algo
            }
        };
        let Some(algo) = algo else {
            return Ok(false);
        };
        let (alpha, beta) = (1f32, if ep.residual.is_some() { 1f32 } else { 0f32 });
        let c_ptr = ep.residual.unwrap_or(g.out);
        let ws = self.workspace_ptr;
        unsafe {
            ltr::matmul(
                self.lt.0,
                desc.0,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                g.w as *const c_void,
                a.0,
                g.x as *const c_void,
                b.0,
                c_ptr as *const c_void,
                c.0,
                g.out as *mut c_void,
                c.0,
                &algo,
                ws as *mut c_void,
                self.workspace.len(),
                stream.cu_stream() as _,
            )
        }
        .map_err(|e| {
            blas_err(
                &format!("cuBLASLt bf16 GEMM M={} N={} K={}", g.m, g.n, g.k),
                e,
            )
        })?;
        Ok(true)
    }
}

struct LtDesc(ltsys::cublasLtMatmulDesc_t);
impl LtDesc {
    fn new() -> Result<Self> {
        ltr::create_matmul_desc(
            ltsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ltsys::cudaDataType_t::CUDA_R_32F,
        )
        .map(LtDesc)
        .map_err(|e| blas_err("cublasLtMatmulDescCreate", e))
    }
    fn set<T>(&self, attr: ltsys::cublasLtMatmulDescAttributes_t, v: &T) -> Result<()> {
        unsafe {
            ltr::set_matmul_desc_attribute(
                self.0,
                attr,
                v as *const T as *const c_void,
                std::mem::size_of::<T>(),
            )
        }
        .map_err(|e| blas_err(&format!("cublasLtMatmulDescSetAttribute {attr:?}"), e))
    }
}
impl Drop for LtDesc {
    fn drop(&mut self) {
        let _ = unsafe { ltr::destroy_matmul_desc(self.0) };
    }
}

struct LtLayout(ltsys::cublasLtMatrixLayout_t);
impl LtLayout {
    fn new(ty: ltsys::cudaDataType_t, rows: u64, cols: u64, ld: i64) -> Result<Self> {
        ltr::create_matrix_layout(ty, rows, cols, ld)
            .map(LtLayout)
            .map_err(|e| blas_err("cublasLtMatrixLayoutCreate", e))
    }
}
impl Drop for LtLayout {
    fn drop(&mut self) {
        let _ = unsafe { ltr::destroy_matrix_layout(self.0) };
    }
}

struct LtPref(ltsys::cublasLtMatmulPreference_t);
impl LtPref {
    fn new(workspace: usize) -> Result<Self> {
        let p = LtPref(
            ltr::create_matmul_pref().map_err(|e| blas_err("cublasLtMatmulPreferenceCreate", e))?,
        );
        unsafe {
            ltr::set_matmul_pref_attribute(
                p.0,
                ltsys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &workspace as *const usize as *const c_void,
                std::mem::size_of::<usize>(),
            )
        }
        .map_err(|e| blas_err("cublasLtMatmulPreferenceSetAttribute", e))?;
        Ok(p)
    }
}
impl Drop for LtPref {
    fn drop(&mut self) {
        let _ = unsafe { ltr::destroy_matmul_pref(self.0) };
    }
}
