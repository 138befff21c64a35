//! Data movement on the GPU: host↔device transfers, checkpoint uploads (the
//! dtype casts of `kernels/elementwise.cu`) and the batch plumbing ops (all
//! plain copies on the stream). Shapes are checked by the caller
//! (`backend::shapes`).

use cudarc::driver::result as drv;
use cudarc::driver::sys;
use cudarc::driver::{CudaEvent, PinnedHostSlice};

use super::{launch, numel, CudaBackend, CudaTensor, StorageType};
use crate::error::{Error, Result};
use crate::weights::{DType as CheckpointDType, WeightView};

/// Pinned staging: checkpoint bytes go memory map → pinned buffer (CPU
/// copy) → device (DMA), two buffers alternating so the CPU fills one
/// while the other is in flight.
pub(super) struct Staging {
    /// Owns the memory `ptrs` points into.
    _bufs: [PinnedHostSlice<u8>; 2],
    ptrs: [*mut u8; 2],
    /// Recorded after each buffer's copy to the device was queued.
    done: [CudaEvent; 2],
}

// SAFETY: the raw pointers address the pinned buffers owned alongside them,
// and Staging is only used under the backend's mutex.
unsafe impl Send for Staging {}

const STAGE_BYTES: usize = 8 << 20;

fn drv_err(what: &str) -> impl Fn(drv::DriverError) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

impl CudaBackend {
    pub(super) fn upload_f32(&self, data: &[f32], shape: &[usize]) -> Result<CudaTensor> {
        self.bind()?;
        let t = self.alloc(shape)?;
        if t.ptr == 0 {
            return Ok(t);
        }
        // Pageable copies return once the source is staged by the driver,
        // so the host buffers may be dropped right after.
        match t.dtype {
            StorageType::F32 => unsafe {
                drv::memcpy_htod_async(t.ptr, data, self.stream.cu_stream())
            },
            StorageType::Bf16 => {
                let h = to_bf16_bits(data);
                unsafe { drv::memcpy_htod_async(t.ptr, &h, self.stream.cu_stream()) }
            }
        }
        .map_err(drv_err("upload"))?;
        Ok(t)
    }

    pub(super) fn download_f32(&self, t: &CudaTensor) -> Result<Vec<f32>> {
        self.bind()?;
        let n = t.numel();
        if n == 0 {
            return Ok(Vec::new());
        }
        let out = match t.dtype {
            StorageType::F32 => {
                let mut v = vec![0f32; n];
                unsafe { drv::memcpy_dtoh_async(&mut v, t.ptr, self.stream.cu_stream()) }
                    .map_err(drv_err("download"))?;
                self.sync("download")?;
                v
            }
            StorageType::Bf16 => {
                let mut h = vec![0u16; n];
                unsafe { drv::memcpy_dtoh_async(&mut h, t.ptr, self.stream.cu_stream()) }
                    .map_err(drv_err("download"))?;
                self.sync("download")?;
                from_bf16_bits(&h)
            }
        };
        Ok(out)
    }

    /// The box gathered on the device by one 3-D copy into a contiguous
    /// tensor, then one contiguous download: a 3-D copy straight into
    /// pageable host memory goes row by row, far slower than both.
    pub(super) fn download_box_gather(
        &self,
        t: &CudaTensor,
        dims: [usize; 3],
        start: [usize; 3],
        len: [usize; 3],
    ) -> Result<Vec<f32>> {
        self.bind()?;
        if len.iter().product::<usize>() == 0 {
            return Ok(Vec::new());
        }
        if len == dims {
            return self.download_f32(t);
        }
        let es = t.dtype.size();
        let part = self.alloc_typed(&len, t.dtype)?;
        let copy = sys::CUDA_MEMCPY3D {
            srcXInBytes: start[2] * es,
            srcY: start[1],
            srcZ: start[0],
            srcLOD: 0,
            srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            srcHost: std::ptr::null(),
            srcDevice: t.ptr,
            srcArray: std::ptr::null_mut(),
            reserved0: std::ptr::null_mut(),
            srcPitch: dims[2] * es,
            srcHeight: dims[1],
            dstXInBytes: 0,
            dstY: 0,
            dstZ: 0,
            dstLOD: 0,
            dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            dstHost: std::ptr::null_mut(),
            dstDevice: part.ptr,
            dstArray: std::ptr::null_mut(),
            reserved1: std::ptr::null_mut(),
            dstPitch: len[2] * es,
            dstHeight: len[1],
            WidthInBytes: len[2] * es,
            Height: len[1],
            Depth: len[0],
        };
        unsafe { sys::cuMemcpy3DAsync_v2(&copy, self.stream.cu_stream()) }
            .result()
            .map_err(drv_err("download_box gather"))?;
        self.download_f32(&part)
    }

    fn sync(&self, what: &str) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| Error::Cuda(format!("{what}: {e}")))
    }

    /// A checkpoint tensor on the device in the backend's dtype. Bytes are
    /// copied as stored (through pinned memory) and converted on the device.
    pub(super) fn upload_weight(&self, w: &WeightView<'_>) -> Result<CudaTensor> {
        self.bind()?;
        let target = self.dtype();
        let t = self.alloc(w.shape)?;
        if t.ptr == 0 {
            return Ok(t);
        }
        let n = t.numel();
        let converted;
        let (src_bytes, src_dtype): (&[u8], CheckpointDType) = match w.dtype {
            CheckpointDType::F32 | CheckpointDType::F16 | CheckpointDType::BF16 => {
                (w.bytes(), w.dtype)
            }
            CheckpointDType::F64 => {
                converted = w.to_f32()?;
                (bytemuck::cast_slice(&converted), CheckpointDType::F32)
            }
            other => {
                return Err(Error::NotSegVol(format!(
                    "tensor {} has dtype {}, expected a float type",
                    w.name,
                    other.name()
                )))
            }
        };
        match cast_kernel(src_dtype, target) {
            None => self.stage_to_device(t.ptr, src_bytes)?,
            Some(kernel) => {
                let tmp = self.alloc_bytes(src_bytes.len())?;
                let (tmp_ptr, _untracked) =
                    cudarc::driver::DevicePtr::device_ptr(&tmp, &self.stream);
                self.stage_to_device(tmp_ptr, src_bytes)?;
                launch!(self, kernel, self.cfg_1d(n), [tmp_ptr, t.ptr, n as i64])?;
                // tmp is freed in stream order, after the cast.
            }
        }
        Ok(t)
    }

    fn stage_to_device(&self, dst: u64, src: &[u8]) -> Result<()> {
        let mut guard = self
            .staging
            .lock()
            .map_err(|_| Error::Cuda("staging buffers poisoned by an earlier panic".into()))?;
        if guard.is_none() {
            *guard = Some(self.new_staging()?);
        }
        let st = guard.as_mut().expect("created above");
        for (i, chunk) in src.chunks(STAGE_BYTES).enumerate() {
            let s = i % 2;
            st.done[s]
                .synchronize()
                .map_err(|e| Error::Cuda(format!("staging wait: {e}")))?;
            // SAFETY: ptrs[s] addresses STAGE_BYTES of pinned memory that no
            // queued copy reads any more (the event above has completed).
            let pinned = unsafe {
                std::ptr::copy_nonoverlapping(chunk.as_ptr(), st.ptrs[s], chunk.len());
                std::slice::from_raw_parts(st.ptrs[s] as *const u8, chunk.len())
            };
            let off = (i * STAGE_BYTES) as u64;
            unsafe { drv::memcpy_htod_async(dst + off, pinned, self.stream.cu_stream()) }
                .map_err(drv_err("weight upload"))?;
            st.done[s]
                .record(&self.stream)
                .map_err(|e| Error::Cuda(format!("staging event: {e}")))?;
        }
        Ok(())
    }

    fn new_staging(&self) -> Result<Staging> {
        let mk = || -> Result<(PinnedHostSlice<u8>, *mut u8, CudaEvent)> {
            // Plain pinned memory: write-combined memory is slow for the CPU
            // to fill from a memory map with unaligned chunks.
            let mut buf = unsafe { self.ctx.alloc_pinned_with_flags::<u8>(STAGE_BYTES, 0) }
                .map_err(drv_err("pinned host buffer"))?;
            let ptr = buf.as_mut_ptr().map_err(drv_err("pinned host buffer"))?;
            let ev = self.ctx.new_event(None).map_err(drv_err("event"))?;
            Ok((buf, ptr, ev))
        };
        let (b0, p0, e0) = mk()?;
        let (b1, p1, e1) = mk()?;
        Ok(Staging {
            _bufs: [b0, b1],
            ptrs: [p0, p1],
            done: [e0, e1],
        })
    }

    fn copy_d2d(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        unsafe { drv::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(drv_err("device copy"))
    }

    /// `s` is the result's shape (`shapes::repeat_batch`).
    pub(super) fn repeat_items(&self, s: &[usize], x: &CudaTensor, n: usize) -> Result<CudaTensor> {
        self.check_dtype(x, "repeat_batch input")?;
        self.bind()?;
        let out = self.alloc(s)?;
        let item = numel(&x.shape[1..]) * x.dtype.size();
        for i in 0..x.shape[0] {
            // Copy the item once, then double the filled run: log2(n) copies.
            let base = out.ptr + (i * n * item) as u64;
            if n == 0 {
                break;
            }
            self.copy_d2d(base, x.ptr + (i * item) as u64, item)?;
            let mut filled = 1;
            while filled < n {
                let c = filled.min(n - filled);
                self.copy_d2d(base + (filled * item) as u64, base, c * item)?;
                filled += c;
            }
        }
        Ok(out)
    }

    /// `s` is the result's shape (`shapes::slice_batch`).
    pub(super) fn slice_items(
        &self,
        s: &[usize],
        x: &CudaTensor,
        start: usize,
        len: usize,
    ) -> Result<CudaTensor> {
        self.check_dtype(x, "slice_batch input")?;
        self.bind()?;
        let out = self.alloc(s)?;
        let item = numel(&x.shape[1..]) * x.dtype.size();
        self.copy_d2d(out.ptr, x.ptr + (start * item) as u64, len * item)?;
        Ok(out)
    }

    /// `s` is the result's shape (`shapes::concat_batch`).
    pub(super) fn concat_items(&self, s: &[usize], xs: &[&CudaTensor]) -> Result<CudaTensor> {
        for x in xs {
            self.check_dtype(x, "concat_batch input")?;
        }
        self.bind()?;
        let out = self.alloc(s)?;
        let mut off = 0u64;
        for x in xs {
            self.copy_d2d(out.ptr + off, x.ptr, x.nbytes())?;
            off += x.nbytes() as u64;
        }
        Ok(out)
    }

    /// One strided 2-D copy: B rows of `len·C` elements at pitch `N·C`.
    pub(super) fn narrow_rows_copy(
        &self,
        (b, n, c): (usize, usize, usize),
        x: &CudaTensor,
        start: usize,
        len: usize,
    ) -> Result<CudaTensor> {
        self.check_dtype(x, "narrow_rows input")?;
        self.bind()?;
        let out = self.alloc(&[b, len, c])?;
        let es = x.dtype.size();
        let width = len * c * es;
        if width == 0 || b == 0 {
            return Ok(out);
        }
        let copy = sys::CUDA_MEMCPY2D {
            srcXInBytes: 0,
            srcY: 0,
            srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            srcHost: std::ptr::null(),
            srcDevice: x.ptr + (start * c * es) as u64,
            srcArray: std::ptr::null_mut(),
            srcPitch: n * c * es,
            dstXInBytes: 0,
            dstY: 0,
            dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            dstHost: std::ptr::null_mut(),
            dstDevice: out.ptr,
            dstArray: std::ptr::null_mut(),
            dstPitch: width,
            WidthInBytes: width,
            Height: b,
        };
        unsafe { sys::cuMemcpy2DAsync_v2(&copy, self.stream.cu_stream()) }
            .result()
            .map_err(drv_err("narrow_rows copy"))?;
        Ok(out)
    }
}

/// The kernel converting a checkpoint dtype (f32, f16 or bf16) to the
/// backend's, or None when the bytes are already right.
fn cast_kernel(from: CheckpointDType, to: StorageType) -> Option<&'static str> {
    match (from, to) {
        (CheckpointDType::F32, StorageType::F32) | (CheckpointDType::BF16, StorageType::Bf16) => {
            None
        }
        (CheckpointDType::F32, StorageType::Bf16) => Some("cast_f32_bf16"),
        (CheckpointDType::BF16, StorageType::F32) => Some("cast_bf16_f32"),
        (CheckpointDType::F16, StorageType::F32) => Some("cast_f16_f32"),
        (CheckpointDType::F16, StorageType::Bf16) => Some("cast_f16_bf16"),
        _ => unreachable!("source dtype normalised by the caller"),
    }
}

/// Elements per rayon task in the host-side bf16 conversions (large
/// transfers only: a volume-sized conversion on one core costs more than
/// its copy).
const CONVERT_CHUNK: usize = 1 << 16;

/// f32 → bf16 bits, round to nearest even (as PyTorch), in parallel.
fn to_bf16_bits(data: &[f32]) -> Vec<u16> {
    use rayon::prelude::*;
    let mut h = vec![0u16; data.len()];
    h.par_chunks_mut(CONVERT_CHUNK)
        .zip(data.par_chunks(CONVERT_CHUNK))
        .for_each(|(o, i)| {
            for (o, &v) in o.iter_mut().zip(i) {
                *o = half::bf16::from_f32(v).to_bits();
            }
        });
    h
}

/// bf16 bits → f32 (exact), in parallel.
fn from_bf16_bits(h: &[u16]) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = vec![0f32; h.len()];
    out.par_chunks_mut(CONVERT_CHUNK)
        .zip(h.par_chunks(CONVERT_CHUNK))
        .for_each(|(o, i)| {
            for (o, &b) in o.iter_mut().zip(i) {
                *o = half::bf16::from_bits(b).to_f32();
            }
        });
    out
}

/// The kernels this family launches, all from `kernels/elementwise.cu`.
#[cfg(test)]
pub(super) fn kernel_names() -> (&'static str, Vec<String>) {
    let names = [
        CheckpointDType::F32,
        CheckpointDType::F16,
        CheckpointDType::BF16,
    ]
    .into_iter()
    .flat_map(|from| super::DTYPES.map(|to| cast_kernel(from, to)))
    .flatten()
    .map(str::to_string)
    .collect();
    ("elementwise", names)
}
