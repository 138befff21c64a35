//! The CPU backend's tensor: a shape over f32 data that is either owned or
//! borrowed from a checkpoint's memory map (weights are never copied).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::weights::Blob;

#[derive(Clone)]
enum Data {
    Owned(Arc<Vec<f32>>),
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
            data: Data::Owned(Arc::new(data)),
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
            data: Data::Owned(Arc::new(vec![0.0; n])),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Data::Owned(v) => v.len(),
            Data::Mapped { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn data(&self) -> &[f32] {
        match &self.data {
            Data::Owned(v) => v,
            Data::Mapped { blob, offset, len } => {
                let bytes: &[u8] = (**blob).as_ref();
                bytemuck::cast_slice(&bytes[*offset..*offset + len * 4])
            }
        }
    }

    /// Mutable data; copies first if the storage is shared or mapped.
    pub fn data_mut(&mut self) -> &mut [f32] {
        if let Data::Mapped { .. } = self.data {
            self.data = Data::Owned(Arc::new(self.data().to_vec()));
        }
        match &mut self.data {
            Data::Owned(v) => Arc::make_mut(v).as_mut_slice(),
            Data::Mapped { .. } => unreachable!("converted to owned above"),
        }
    }

    pub fn into_vec(self) -> Vec<f32> {
        match self.data {
            Data::Owned(v) => Arc::try_unwrap(v).unwrap_or_else(|v| (*v).clone()),
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
