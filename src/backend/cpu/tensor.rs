//! The CPU backend's tensor: a shape over f32 data that is either owned or
//! borrowed from a checkpoint's memory map (weights are never copied).
//!
//! Large owned buffers are recycled through a small process-wide pool
//! instead of being freed: the allocator returns big blocks to the kernel,
//! and faulting their pages back in (zeroed) cost about 5% of an encoder
//! forward (docs/PERF.md). Ops take their output buffers from [`scratch`].

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::weights::Blob;

/// Buffers below this many values go back to the allocator, which serves
/// them from its heap without page faults.
const POOL_MIN_LEN: usize = 1 << 18;
/// Upper bound on the bytes the pool holds; the oldest buffers go first.
const POOL_MAX_BYTES: usize = 256 << 20;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

fn pooled_bytes(pool: &[Vec<f32>]) -> usize {
    pool.iter().map(|v| v.capacity() * 4).sum()
}

/// Keeps `v`'s allocation for a later [`scratch`] if it is large.
pub fn recycle(v: Vec<f32>) {
    if v.capacity() < POOL_MIN_LEN || v.capacity() * 4 > POOL_MAX_BYTES {
        return;
    }
    let Ok(mut pool) = POOL.lock() else {
        return;
    };
    while !pool.is_empty() && pooled_bytes(&pool) + v.capacity() * 4 > POOL_MAX_BYTES {
        pool.remove(0);
    }
    pool.push(v);
}

/// A buffer of `n` values whose contents are unspecified (finite or not):
/// for outputs that the caller overwrites completely. Reuses a recycled
/// allocation of between `n` and `2n` values when there is one.
pub fn scratch(n: usize) -> Vec<f32> {
    if n >= POOL_MIN_LEN {
        if let Ok(mut pool) = POOL.lock() {
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= n && v.capacity() <= 2 * n)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let mut v = pool.swap_remove(i);
                drop(pool);
                // Grows within the capacity (writing only the new tail) or
                // truncates.
                v.resize(n, 0.0);
                return v;
            }
        }
    }
    vec![0.0; n]
}

/// Owned values that return to the pool when the last tensor using them
/// goes away.
struct Recycled(Vec<f32>);

impl Drop for Recycled {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.0));
    }
}

impl Clone for Recycled {
    fn clone(&self) -> Self {
        let mut v = scratch(self.0.len());
        v.copy_from_slice(&self.0);
        Recycled(v)
    }
}

#[derive(Clone)]
enum Data {
    Owned(Arc<Recycled>),
    /// `len` f32 values at byte `offset` of a 4-byte aligned blob.
    Mapped {
        blob: Blob,
        offset: usize,
        len: usize,
    },
}

#[derive(Clone)]
pub struct CpuTensor {
    shape: Vec<usize>,
    data: Data,
}

impl std::fmt::Debug for CpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuTensor{:?}", self.shape)
    }
}

impl CpuTensor {
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape(format!(
                "shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(CpuTensor {
            shape: shape.to_vec(),
            data: Data::Owned(Arc::new(Recycled(data))),
        })
    }

    /// Borrows `len` f32 values at byte `offset` of `blob` when the address
    /// is 4-byte aligned; `None` otherwise.
    pub fn mapped(blob: &Blob, offset: usize, shape: &[usize]) -> Option<Self> {
        let len: usize = shape.iter().product();
        let bytes: &[u8] = (**blob).as_ref();
        let end = offset.checked_add(len.checked_mul(4)?)?;
        if end > bytes.len() || (bytes.as_ptr() as usize + offset) % 4 != 0 {
            return None;
        }
        Some(CpuTensor {
            shape: shape.to_vec(),
            data: Data::Mapped {
                blob: blob.clone(),
                offset,
                len,
            },
        })
    }

    pub fn zeros(shape: &[usize]) -> Self {
        let n = shape.iter().product();
        CpuTensor {
            shape: shape.to_vec(),
            data: Data::Owned(Arc::new(Recycled(vec![0.0; n]))),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Data::Owned(v) => v.0.len(),
            Data::Mapped { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn data(&self) -> &[f32] {
        match &self.data {
            Data::Owned(v) => &v.0,
            Data::Mapped { blob, offset, len } => {
                let bytes: &[u8] = (**blob).as_ref();
                bytemuck::cast_slice(&bytes[*offset..*offset + len * 4])
            }
        }
    }

    /// Mutable data; copies first if the storage is shared or mapped.
    pub fn data_mut(&mut self) -> &mut [f32] {
        if let Data::Mapped { .. } = self.data {
            let mut v = scratch(self.len());
            v.copy_from_slice(self.data());
            self.data = Data::Owned(Arc::new(Recycled(v)));
        }
        match &mut self.data {
            Data::Owned(v) => Arc::make_mut(v).0.as_mut_slice(),
            Data::Mapped { .. } => unreachable!("converted to owned above"),
        }
    }

    pub fn into_vec(self) -> Vec<f32> {
        match self.data {
            Data::Owned(v) => match Arc::try_unwrap(v) {
                Ok(mut r) => std::mem::take(&mut r.0),
                Err(v) => v.0.clone(),
            },
            Data::Mapped { .. } => self.data().to_vec(),
        }
    }

    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != self.len() {
            return Err(Error::shape(format!(
                "cannot reshape {:?} to {shape:?}",
                self.shape
            )));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_come_back_from_the_pool() {
        // Other tests share the pool: look for this buffer among a few takes.
        let n = POOL_MIN_LEN + 12_345;
        let t = CpuTensor::from_vec(vec![7.0; n], &[n]).unwrap();
        let ptr = t.data().as_ptr();
        drop(t);
        let takes: Vec<Vec<f32>> = (0..8).map(|_| scratch(n)).collect();
        assert!(takes.iter().all(|v| v.len() == n));
        assert!(
            takes.iter().any(|v| v.as_ptr() == ptr),
            "dropped buffer was not reused"
        );
    }

    #[test]
    fn small_buffers_are_not_pooled_and_scratch_has_the_length() {
        assert_eq!(scratch(10).len(), 10);
        assert_eq!(scratch(POOL_MIN_LEN * 3).len(), POOL_MIN_LEN * 3);
        recycle(vec![1.0; 16]);
        let pool = POOL.lock().unwrap();
        assert!(pool.iter().all(|v| v.capacity() >= POOL_MIN_LEN));
        assert!(pooled_bytes(&pool) <= POOL_MAX_BYTES);
    }

    #[test]
    fn owned_data_survives_clone_mutation_and_into_vec() {
        let n = POOL_MIN_LEN;
        let a = CpuTensor::from_vec((0..n).map(|i| i as f32).collect(), &[n]).unwrap();
        let mut b = a.clone();
        b.data_mut()[0] = -1.0;
        assert_eq!(a.data()[0], 0.0);
        assert_eq!(b.data()[0], -1.0);
        assert_eq!(a.data()[n - 1], (n - 1) as f32);
        let v = b.clone().into_vec();
        assert_eq!(v[0], -1.0);
        assert_eq!(b.into_vec()[1], 1.0);
    }
}
