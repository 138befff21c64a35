//! Writing safetensors files tensor by tensor. The header is computed from
//! names, dtypes and shapes alone, then each tensor's bytes are produced and
//! written in turn, so peak memory is one tensor, not the 724 MB model.
//! Output goes to a temporary file in the target folder and is renamed into
//! place only once complete: a failed write leaves nothing behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::tempfiles::TempFile;
use crate::weights::expected::expected_tensors;
use crate::weights::synth::synth_tensor;
use crate::weights::{Checkpoint, DType};

/// One tensor's bytes, produced when it is its turn to be written.
pub enum TensorBytes<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
    /// f32 values, written little-endian without an extra copy.
    F32(Vec<f32>),
}

impl TensorBytes<'_> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            TensorBytes::Borrowed(b) => b,
            TensorBytes::Owned(v) => v,
            TensorBytes::F32(v) => bytemuck::cast_slice(v),
        }
    }
}

type Producer<'a> = Box<dyn FnOnce() -> Result<TensorBytes<'a>> + 'a>;

/// A tensor to write: its header data now, its bytes on demand.
pub struct PendingTensor<'a> {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    produce: Producer<'a>,
}

impl<'a> PendingTensor<'a> {
    pub fn new(
        name: impl Into<String>,
        dtype: DType,
        shape: Vec<usize>,
        produce: impl FnOnce() -> Result<TensorBytes<'a>> + 'a,
    ) -> Self {
        PendingTensor {
            name: name.into(),
            dtype,
            shape,
            produce: Box::new(produce),
        }
    }
    fn nbytes(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(self.dtype.size(), |acc, &d| acc.checked_mul(d))
    }
}

fn st_dtype(d: DType) -> &'static str {
    match d {
        DType::F64 => "F64",
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::I64 => "I64",
        DType::I32 => "I32",
        DType::I16 => "I16",
        DType::I8 => "I8",
        DType::U8 => "U8",
        DType::Bool => "BOOL",
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

/// Writes `tensors` (in the order given, widest dtype first so every tensor
/// stays aligned to its element size) and `metadata` as a safetensors file
/// at `path`, atomically.
pub fn save_safetensors(
    path: &Path,
    mut tensors: Vec<PendingTensor<'_>>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let invalid = |msg: String| Error::Invalid(format!("writing {}: {msg}", path.display()));
    tensors.sort_by_key(|t| std::cmp::Reverse(t.dtype.size()));

    let mut header = String::from("{");
    if !metadata.is_empty() {
        let m: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
            .collect();
        header.push_str(&format!("\"__metadata__\":{{{}}}", m.join(",")));
    }
    let mut seen = BTreeMap::new();
    let mut offset = 0usize;
    for t in &tensors {
        if t.name == "__metadata__" || seen.insert(t.name.as_str(), ()).is_some() {
            return Err(invalid(format!(
                "tensor name {:?} is reserved or repeated",
                t.name
            )));
        }
        let n = t
            .nbytes()
            .ok_or_else(|| invalid(format!("tensor {} size overflows", t.name)))?;
        if header.len() > 1 {
            header.push(',');
        }
        header.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":{:?},\"data_offsets\":[{},{}]}}",
            json_str(&t.name),
            st_dtype(t.dtype),
            t.shape,
            offset,
            offset + n
        ));
        offset += n;
    }
    header.push('}');
    // Pad with spaces to 8 bytes so the data section starts aligned.
    while header.len() % 8 != 0 {
        header.push(' ');
    }

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if path.file_name().is_none() {
        return Err(invalid("path names no file".into()));
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(p, e)
    };
    let (temp, file) = TempFile::create_for(path).map_err(io(path))?;
    let mut w = BufWriter::with_capacity(1 << 22, file);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|_| w.write_all(header.as_bytes()))
        .map_err(io(temp.path()))?;
    for t in tensors {
        let want = t.nbytes().unwrap_or(0);
        let name = t.name;
        let bytes = (t.produce)()?;
        let b = bytes.as_bytes();
        if b.len() != want {
            return Err(invalid(format!(
                "tensor {name} produced {} bytes, its shape needs {want}",
                b.len()
            )));
        }
        w.write_all(b).map_err(io(temp.path()))?;
    }
    let file = w
        .into_inner()
        .map_err(|e| Error::io(temp.path(), e.into_error()))?;
    file.sync_all().map_err(io(temp.path()))?;
    drop(file);
    temp.commit(path).map_err(io(path))?;
    // Make the rename itself durable; not all platforms can open a folder.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes every tensor of `ck` as f32 under its normalised name (the
/// `segvol convert` command).
pub fn convert_to_safetensors(ck: &Checkpoint, path: &Path) -> Result<()> {
    let mut tensors = Vec::with_capacity(ck.len());
    for name in ck.names() {
        let view = ck.require(name)?;
        tensors.push(PendingTensor::new(
            name,
            DType::F32,
            view.shape.to_vec(),
            move || {
                Ok(match view.to_f32()? {
                    std::borrow::Cow::Borrowed(s) => TensorBytes::Borrowed(bytemuck::cast_slice(s)),
                    std::borrow::Cow::Owned(v) => TensorBytes::F32(v),
                })
            },
        ));
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    if let Some(f) = ck.path().file_name() {
        meta.insert(
            "segvol_source".to_string(),
            f.to_string_lossy().into_owned(),
        );
    }
    save_safetensors(path, tensors, &meta)
}

/// Writes the synth-v2 weights of `cfg` (all 474 float tensors for the
/// default config, `mask_downscaling` included), generating one tensor at a
/// time (the `segvol synth-weights` command).
pub fn write_synth_safetensors(cfg: &ModelConfig, path: &Path) -> Result<()> {
    cfg.validate()?;
    let tensors = expected_tensors(cfg)
        .into_iter()
        .map(|e| {
            let (name, shape) = (e.name, e.shape);
            let key = name.clone();
            let s = shape.clone();
            PendingTensor::new(name, DType::F32, shape, move || {
                Ok(TensorBytes::F32(synth_tensor(&key, &s)))
            })
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("segvol_synth".to_string(), "v2".to_string());
    meta.insert(
        "segvol_config".to_string(),
        serde_json::to_string(cfg).map_err(|e| Error::Config(e.to_string()))?,
    );
    save_safetensors(path, tensors, &meta)
}
