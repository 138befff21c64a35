//! safetensors files: the `safetensors` crate parses and validates the header
//! (offsets in bounds, non-overlapping, covering the data exactly); entries
//! then point into the memory map.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::weights::{DType, Entry};

fn dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I16 => DType::I16,
        Dtype::I8 => DType::I8,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::Bool,
        _ => return None,
    })
}

/// Raw keys with entries into `buf` (blob 0), in data order, plus the
/// header's `__metadata__`.
pub struct SafetensorsFile {
    pub tensors: Vec<(String, Entry)>,
    pub metadata: Vec<(String, String)>,
}

pub fn read(path: &Path, buf: &[u8]) -> Result<SafetensorsFile> {
    let (header_len, meta) = SafeTensors::read_metadata(buf)
        .map_err(|e| Error::checkpoint(path, format!("bad safetensors header: {e}")))?;
    let data_start = 8 + header_len;
    let mut infos: Vec<_> = meta.tensors().into_iter().collect();
    infos.sort_by_key(|(_, i)| i.data_offsets);
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, info) in infos {
        let dt = dtype(info.dtype).ok_or_else(|| {
            Error::checkpoint(
                path,
                format!(
                    "tensor {name} has dtype {:?}, which segvol does not read",
                    info.dtype
                ),
            )
        })?;
        tensors.push((
            name,
            Entry {
                dtype: dt,
                shape: info.shape.clone(),
                blob: 0,
                offset: data_start + info.data_offsets.0,
            },
        ));
    }
    let mut metadata: Vec<(String, String)> = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    metadata.sort();
    Ok(SafetensorsFile { tensors, metadata })
}

/// Validates a safetensors file's header against its bytes and returns the
/// tensors it lists (name, dtype, shape), in data order. The fuzzing entry
/// point for the safetensors header path.
pub fn parse_header(buf: &[u8]) -> Result<Vec<(String, DType, Vec<usize>)>> {
    let f = read(Path::new("<bytes>"), buf)?;
    Ok(f.tensors
        .into_iter()
        .map(|(n, e)| (n, e.dtype, e.shape))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn entries_point_into_the_buffer() {
        let b = file(
            r#"{"b":{"dtype":"F16","shape":[1],"data_offsets":[4,6]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            &[0, 0, 128, 63, 0, 60],
        );
        let f = read(Path::new("x"), &b).unwrap();
        assert_eq!(f.tensors[0].0, "a");
        assert_eq!(f.tensors[1].1.dtype, DType::F16);
        let off = f.tensors[0].1.offset;
        assert_eq!(&b[off..off + 4], &1f32.to_le_bytes());
    }

    #[test]
    fn unsupported_dtype_names_tensor_and_dtype() {
        let b = file(
            r#"{"q":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#,
            &[0, 0],
        );
        let err = read(Path::new("x"), &b).err().unwrap().to_string();
        assert!(err.contains("tensor q") && err.contains("F8_E4M3"), "{err}");
    }

    #[test]
    fn offsets_past_the_end_are_refused() {
        let b = file(
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            &[0; 8],
        );
        let err = read(Path::new("x"), &b).err().unwrap().to_string();
        assert!(err.contains("bad safetensors header"), "{err}");
    }
}
