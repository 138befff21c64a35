//! Probes of the CUDA driver and libraries behind `backend::device`: cudarc loads libcuda lazily and
//! panics when it is missing, so everything here checks for the library
//! before the first driver call.

use crate::error::{Error, Result};

pub(crate) fn blas_present() -> Result<()> {
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(Error::Cuda(
            "cuBLAS (libcublas.so) not found; add the CUDA toolkit's lib64 to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Err(Error::Cuda(
            "cuBLASLt (libcublasLt.so) not found; add the CUDA toolkit's lib64 to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    Ok(())
}

/// The number of CUDA devices, or why CUDA cannot be used
/// ("no CUDA driver found (libcuda.so)", a cuInit failure, ...).
pub fn device_count() -> Result<usize> {
    driver_present()?;
    guard("cuInit", || {
        cudarc::driver::result::init().map_err(|e| Error::Cuda(format!("cuInit failed: {e}")))?;
        let n = cudarc::driver::CudaContext::device_count()
            .map_err(|e| Error::Cuda(format!("cuDeviceGetCount failed: {e}")))?;
        Ok(n.max(0) as usize)
    })
}

pub(crate) fn driver_present() -> Result<()> {
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::Cuda("no CUDA driver found (libcuda.so)".into()))
    }
}

/// Runs driver/library code that cudarc may abort with a panic (a symbol
/// missing from an old driver, say) and reports that as an error instead.
pub(crate) fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .map(|s| s.as_str())
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(Error::Cuda(format!("{what}: {msg}")))
        }
    }
}
