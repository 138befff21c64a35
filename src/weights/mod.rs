//! Checkpoint access. A [`Checkpoint`] is a name → tensor index over one or
//! more byte blobs (memory maps of the checkpoint file, or owned buffers for
//! tensors that had to be materialised). Tensor data is never copied unless a
//! consumer asks for a dtype conversion or the file layout forces it.
//!
//! Names are normalised state-dict keys: the HF `model.` and GitHub
//! `module.` prefixes are stripped (see `keys`).

pub mod check;
pub mod expected;
pub mod hub;
pub mod inspect;
pub mod keys;
mod open;
mod safetensors_file;
pub mod synth;
mod torch_zip;
pub mod unpickle;
pub mod write;
mod zip;

pub use safetensors_file::parse_header as parse_safetensors_header;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Shared, immutable bytes: a memory map or an owned buffer.
pub type Blob = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Element type of a checkpoint tensor as stored in the file (what the CUDA
/// backend computes in is `backend::cuda::StorageType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }
}

/// Where a checkpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    /// PyTorch's zip format (`pytorch_model.bin`, `.pth`).
    TorchZip,
    /// Built in memory (tests, synthetic weights).
    Memory,
}

/// One tensor: dense, C order, little-endian, at `offset` in its blob.
#[derive(Clone, Debug)]
pub struct Entry {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub blob: usize,
    pub offset: usize,
}

impl Entry {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

/// A borrowed view of one checkpoint tensor.
#[derive(Clone, Copy)]
pub struct WeightView<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: &'a [usize],
    pub blob: &'a Blob,
    /// Byte offset of the first element in `blob`.
    pub offset: usize,
}

impl<'a> WeightView<'a> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> &'a [u8] {
        let all: &'a [u8] = (**self.blob).as_ref();
        &all[self.offset..self.offset + self.numel() * self.dtype.size()]
    }
    /// The elements as f32: borrowed when the tensor is f32 and 4-byte
    /// aligned in memory, converted otherwise (f64/f16/bf16).
    pub fn to_f32(&self) -> Result<Cow<'a, [f32]>> {
        let bytes = self.bytes();
        match self.dtype {
            DType::F32 => match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                Ok(s) => Ok(Cow::Borrowed(s)),
                Err(_) => Ok(Cow::Owned(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                )),
            },
            DType::F64 => Ok(Cow::Owned(
                bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
            )),
            DType::F16 => Ok(Cow::Owned(
                bytes
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            )),
            DType::BF16 => Ok(Cow::Owned(
                bytes
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            )),
            other => Err(Error::NotSegVol(format!(
                "tensor {} has dtype {}, expected a float type",
                self.name,
                other.name()
            ))),
        }
    }
}

/// A loaded checkpoint: normalised names → tensors over shared blobs.
pub struct Checkpoint {
    path: PathBuf,
    format: Format,
    blobs: Vec<Blob>,
    entries: BTreeMap<String, Entry>,
    /// How the file's keys were mapped to `entries` (empty when built in memory).
    load: keys::LoadInfo,
}

impl Checkpoint {
    /// Assembles a checkpoint from parts; readers call this after parsing.
    pub fn from_parts(
        path: PathBuf,
        format: Format,
        blobs: Vec<Blob>,
        entries: BTreeMap<String, Entry>,
    ) -> Result<Self> {
        for (name, e) in &entries {
            let blob = blobs.get(e.blob).ok_or_else(|| {
                Error::checkpoint(&path, format!("tensor {name}: blob index out of range"))
            })?;
            let len = (**blob).as_ref().len();
            let end = e
                .numel()
                .checked_mul(e.dtype.size())
                .and_then(|n| n.checked_add(e.offset))
                .ok_or_else(|| {
                    Error::checkpoint(&path, format!("tensor {name}: size overflows"))
                })?;
            if end > len {
                return Err(Error::checkpoint(
                    &path,
                    format!(
                        "tensor {name}: data {}..{end} lies outside its {len}-byte record",
                        e.offset
                    ),
                ));
            }
        }
        Ok(Checkpoint {
            path,
            format,
            blobs,
            entries,
            load: keys::LoadInfo::default(),
        })
    }

    /// An in-memory checkpoint of f32 tensors (tests, synthetic weights).
    pub fn from_f32_tensors(tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<Self> {
        let mut blobs: Vec<Blob> = Vec::with_capacity(tensors.len());
        let mut entries = BTreeMap::new();
        for (name, shape, data) in tensors {
            if shape.iter().product::<usize>() != data.len() {
                return Err(Error::shape(format!(
                    "tensor {name}: shape {shape:?} does not hold {} values",
                    data.len()
                )));
            }
            entries.insert(
                name,
                Entry {
                    dtype: DType::F32,
                    shape,
                    blob: blobs.len(),
                    offset: 0,
                },
            );
            blobs.push(Arc::new(F32Blob(data)));
        }
        Checkpoint::from_parts(PathBuf::from("<memory>"), Format::Memory, blobs, entries)
    }

    /// Records how the file's keys were normalised (readers call this).
    pub fn with_load_info(mut self, load: keys::LoadInfo) -> Self {
        self.load = load;
        self
    }
    /// What normalisation did to the file's keys: prefix stripped, keys dropped.
    pub fn load_info(&self) -> &keys::LoadInfo {
        &self.load
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn format(&self) -> Format {
        self.format
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Normalised names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|s| s.as_str())
    }
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }
    pub fn get(&self, name: &str) -> Option<WeightView<'_>> {
        let (name, e) = self.entries.get_key_value(name)?;
        Some(WeightView {
            name,
            dtype: e.dtype,
            shape: &e.shape,
            blob: &self.blobs[e.blob],
            offset: e.offset,
        })
    }
    /// The tensor, or an error naming it.
    pub fn require(&self, name: &str) -> Result<WeightView<'_>> {
        self.get(name)
            .ok_or_else(|| Error::NotSegVol(format!("tensor {name} is missing")))
    }
}

/// Owned f32 values viewed as bytes (no copy, naturally aligned).
struct F32Blob(Vec<f32>);

impl AsRef<[u8]> for F32Blob {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// A byte buffer whose start is 4-byte aligned, so f32 views borrow it.
pub struct AlignedF32Bytes {
    words: Vec<u32>,
    len: usize,
}

impl AlignedF32Bytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        let mut words = vec![0u32; len.div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..len].copy_from_slice(&bytes);
        AlignedF32Bytes { words, len }
    }
}

impl AsRef<[u8]> for AlignedF32Bytes {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len]
    }
}
