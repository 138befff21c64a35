//! PyTorch's zip checkpoints (`torch.save` since 1.6): `<archive>/data.pkl`
//! describes the object, `<archive>/data/<key>` holds each storage's raw
//! little-endian bytes. Contiguous tensors become entries pointing straight
//! into the memory map; strided views are copied out once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::weights::unpickle::{unpickle, Obj, Pickle, TensorRef, Value};
use crate::weights::zip::{read_entries, ZipEntry};
use crate::weights::{AlignedF32Bytes, Blob, Entry};

/// The parsed file: raw (unnormalised) keys with their entries, extra blobs
/// for materialised views (blob indices start at 1; blob 0 is the file), and
/// where the state dict sat.
pub struct TorchZip {
    pub tensors: Vec<(String, Entry)>,
    pub owned: Vec<Blob>,
    pub container: Option<String>,
}

pub fn read(path: &Path, buf: &[u8]) -> Result<TorchZip> {
    let err = |msg: String| Error::checkpoint(path, msg);
    let entries = read_entries(buf).map_err(&err)?;

    let pkls: Vec<&String> = entries
        .keys()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .collect();
    let prefix = match pkls.as_slice() {
        [one] => one.trim_end_matches("data.pkl").to_string(),
        [] => {
            return Err(err(
                "zip holds no <archive>/data.pkl: not a torch checkpoint".into(),
            ))
        }
        many => {
            return Err(err(format!(
                "zip holds {} data.pkl records ({}); expected one",
                many.len(),
                many.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let bytes = |e: &ZipEntry| &buf[e.data_start..e.data_start + e.len];

    if let Some(bo) = entries.get(&format!("{prefix}byteorder")) {
        let order = String::from_utf8_lossy(bytes(bo));
        if order.trim() != "little" {
            return Err(err(format!(
                "byteorder record says {:?}; only little-endian checkpoints are supported",
                order.trim()
            )));
        }
    }

    let pkl = unpickle(bytes(&entries[&format!("{prefix}data.pkl")]))
        .map_err(|e| err(format!("{prefix}data.pkl: {e}")))?;

    // Every storage must have its record, even those outside the state dict:
    // a missing one means a damaged file.
    let mut records = Vec::with_capacity(pkl.storages.len());
    for s in &pkl.storages {
        let name = format!("{prefix}data/{}", s.key);
        let rec = entries
            .get(&name)
            .ok_or_else(|| err(format!("record {name} is missing from the zip")))?;
        let need = s.numel.checked_mul(s.dtype.size());
        if need.is_none_or(|n| n > rec.len) {
            return Err(err(format!(
                "storage {} claims {} {} elements but record {name} holds {} bytes",
                s.key,
                s.numel,
                s.dtype.name(),
                rec.len
            )));
        }
        records.push(*rec);
    }

    let (dict, container) = find_state_dict(&pkl).map_err(&err)?;
    let mut tensors = Vec::with_capacity(dict.len());
    let mut owned: Vec<Blob> = Vec::new();
    for (key, ti) in dict {
        let t = &pkl.tensors[ti];
        let st = &pkl.storages[t.storage];
        let rec = records[t.storage];
        let size = st.dtype.size();
        let entry = if t.is_contiguous() {
            Entry {
                dtype: st.dtype,
                shape: t.shape.clone(),
                blob: 0,
                offset: rec.data_start + t.offset * size,
            }
        } else {
            let data = gather(&buf[rec.data_start..rec.data_start + rec.len], t, size);
            owned.push(Arc::new(AlignedF32Bytes::new(data)));
            Entry {
                dtype: st.dtype,
                shape: t.shape.clone(),
                blob: owned.len(),
                offset: 0,
            }
        };
        tensors.push((key, entry));
    }
    Ok(TorchZip {
        tensors,
        owned,
        container,
    })
}

/// Copies a strided view into dense C order. The unpickler has checked that
/// every element lies inside the storage.
fn gather(storage: &[u8], t: &TensorRef, size: usize) -> Vec<u8> {
    let n = t.numel();
    let mut out = Vec::with_capacity(n * size);
    if n == 0 {
        return out;
    }
    let mut idx = vec![0usize; t.shape.len()];
    for _ in 0..n {
        let el: usize = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&storage[el * size..(el + 1) * size]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// `(key, tensor index)` pairs and where the dict sat in the file.
type StateDict = (Vec<(String, usize)>, Option<String>);

/// The state dict: the root when it maps names to tensors, else the dict
/// under `'model'` (GitHub `SegVol_v1.pth`) or `'state_dict'` (Lightning).
/// Returns `(key, tensor index)` in file order, later duplicates winning.
fn find_state_dict(p: &Pickle) -> std::result::Result<StateDict, String> {
    let Some(root) = p.dict_items(&p.root) else {
        return Err(format!(
            "data.pkl holds a {}, not a dict of tensors",
            p.root.kind()
        ));
    };
    let has_tensor = root.iter().any(|(_, v)| matches!(v, Value::Tensor(_)));
    let (dict, container) = if has_tensor || root.is_empty() {
        (&p.root, None)
    } else {
        let key = ["model", "state_dict"].into_iter().find(|k| {
            p.dict_get(&p.root, k)
                .is_some_and(|v| p.dict_items(v).is_some())
        });
        let Some(key) = key else {
            let keys: Vec<String> = root
                .iter()
                .map(|(k, _)| {
                    k.as_str()
                        .map_or_else(|| format!("<{}>", k.kind()), |s| format!("{s:?}"))
                })
                .take(10)
                .collect();
            return Err(format!(
                "no state dict found: the top-level dict holds no tensors and no 'model' or \
                 'state_dict' entry (keys: {})",
                keys.join(", ")
            ));
        };
        let others: Vec<&str> = root
            .iter()
            .filter_map(|(k, _)| k.as_str())
            .filter(|k| *k != key)
            .collect();
        let note = if others.is_empty() {
            format!("'{key}' entry")
        } else {
            format!("'{key}' entry; other entries: {}", others.join(", "))
        };
        (p.dict_get(&p.root, key).unwrap(), Some(note))
    };
    let items = p.dict_items(dict).unwrap_or(&[]);
    let mut pos: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out: Vec<(String, usize)> = Vec::with_capacity(items.len());
    for (k, v) in items {
        let Some(name) = k.as_str() else {
            return Err(format!("state dict key is a {}, not a string", k.kind()));
        };
        let ti = match v {
            Value::Tensor(t) => *t,
            other => {
                let what = match p.obj(other) {
                    Some(Obj::Dict { .. }) => "dict",
                    Some(Obj::List(_)) => "list",
                    Some(Obj::Tuple(_)) => "tuple",
                    None => other.kind(),
                };
                return Err(format!("state dict entry {name} is a {what}, not a tensor"));
            }
        };
        match pos.get(name) {
            Some(&i) => out[i].1 = ti,
            None => {
                pos.insert(name, out.len());
                out.push((name.to_string(), ti));
            }
        }
    }
    Ok((out, container))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_transposed() {
        // storage 0..6 as a (2,3) matrix, viewed transposed as (3,2).
        let storage: Vec<u8> = (0u8..8).collect();
        let t = TensorRef {
            storage: 0,
            offset: 0,
            shape: vec![3, 2],
            stride: vec![1, 3],
        };
        assert_eq!(gather(&storage, &t, 1), vec![0, 3, 1, 4, 2, 5]);
        let t = TensorRef {
            storage: 0,
            offset: 1,
            shape: vec![2],
            stride: vec![2],
        };
        assert_eq!(gather(&storage, &t, 2), vec![2, 3, 6, 7]);
    }
}
