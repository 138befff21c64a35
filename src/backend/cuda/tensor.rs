//! The CUDA backend's tensor: a shape over one device allocation, f32 or
//! bf16 (the backend's precision). Clones share the allocation; ops never
//! write into an input, so sharing is safe.

use std::sync::Arc;

use cudarc::driver::CudaSlice;

/// Element type of a device tensor (what it stores and computes in; the
/// checkpoint's own element types are `weights::DType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageType {
    F32,
    Bf16,
}

impl StorageType {
    pub fn size(self) -> usize {
        match self {
            StorageType::F32 => 4,
            StorageType::Bf16 => 2,
        }
    }
    /// Suffix of the kernel entry points for this type (`add_f32`, ...).
    pub fn suffix(self) -> &'static str {
        match self {
            StorageType::F32 => "f32",
            StorageType::Bf16 => "bf16",
        }
    }
}

#[derive(Clone)]
pub struct CudaTensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: StorageType,
    /// Owns the allocation `ptr` points into (None when there are no
    /// elements); freed in stream order when the last clone drops.
    pub(crate) _buf: Option<Arc<CudaSlice<u8>>>,
    /// Device address of the first element (0 when empty).
    pub(crate) ptr: u64,
}

impl std::fmt::Debug for CudaTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaTensor<{}>{:?}", self.dtype.suffix(), self.shape)
    }
}

impl CudaTensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> StorageType {
        self.dtype
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}
