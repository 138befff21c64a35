//! `Checkpoint::open`: find the weight file, memory-map it, recognise its
//! format from its first bytes (never from its extension: HF's `.bin` and
//! GitHub's `.pth` are both torch zips), parse it and normalise its keys.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::weights::{keys, safetensors_file, torch_zip, Blob, Checkpoint, Format};

/// File names tried in a directory, best first.
const PREFERRED: [&str; 3] = ["model.safetensors", "pytorch_model.bin", "SegVol_v1.pth"];
const EXTENSIONS: [&str; 3] = ["safetensors", "bin", "pth"];

/// What the first bytes say the file is.
#[derive(Debug, PartialEq, Eq)]
enum Sniffed {
    TorchZip,
    Safetensors,
    LegacyPickle,
    Unknown,
}

fn sniff(head: &[u8]) -> Sniffed {
    if head.starts_with(b"PK\x03\x04") {
        return Sniffed::TorchZip;
    }
    if head.len() >= 9 && head[8] == b'{' {
        return Sniffed::Safetensors;
    }
    // Pre-1.6 torch.save wrote bare pickles (PROTO opcode, protocol 2..5).
    if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return Sniffed::LegacyPickle;
    }
    Sniffed::Unknown
}

/// The weight file inside `dir`: a preferred name, else the only file with a
/// weight extension.
fn find_in_dir(dir: &Path) -> Result<PathBuf> {
    for name in PREFERRED {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    let read = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut found = Vec::new();
    for ent in read {
        let p = ent.map_err(|e| Error::io(dir, e))?.path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if p.is_file() && EXTENSIONS.contains(&ext) {
            found.push(p);
        }
    }
    found.sort();
    match found.len() {
        1 => Ok(found.pop().unwrap()),
        0 => Err(Error::checkpoint(
            dir,
            "directory holds no weight file (looked for model.safetensors, pytorch_model.bin, \
             SegVol_v1.pth, then any *.safetensors, *.bin or *.pth)",
        )),
        _ => Err(Error::checkpoint(
            dir,
            format!(
                "directory holds several weight files ({}); name one",
                found
                    .iter()
                    .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

impl Checkpoint {
    /// Opens a SegVol checkpoint: a safetensors file, a torch zip (`.bin`,
    /// `.pth`, plain state dict or `{'model': state_dict, ...}`), or a
    /// directory holding one. Tensor data stays in the memory map. The
    /// result is not yet checked against a config: call [`Checkpoint::check`].
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let file_path = if meta.is_dir() {
            find_in_dir(path)?
        } else {
            path.to_path_buf()
        };
        let file = File::open(&file_path).map_err(|e| Error::io(&file_path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&file_path, e))?.len();
        if len == 0 {
            return Err(Error::checkpoint(&file_path, "file is empty"));
        }
        // SAFETY: the map is read-only. As with every mmap-based loader, a
        // file truncated by another process while mapped would fault; we
        // accept that for zero-copy loading of 700 MB checkpoints.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&file_path, e))?;
        Self::parse(file_path, Arc::new(map))
    }

    /// Parses a checkpoint held in memory; `name` only labels messages.
    /// The fuzzing entry point for the zip, pickle and safetensors readers.
    pub fn from_bytes(name: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Checkpoint> {
        if bytes.is_empty() {
            return Err(Error::checkpoint(name.as_ref(), "file is empty"));
        }
        Self::parse(name.as_ref().to_path_buf(), Arc::new(bytes))
    }

    fn parse(file_path: PathBuf, blob: Blob) -> Result<Checkpoint> {
        let buf: &[u8] = (*blob).as_ref();
        let head = &buf[..buf.len().min(16)];

        let (format, raw, owned, container, metadata) = match sniff(head) {
            Sniffed::TorchZip => {
                let z = torch_zip::read(&file_path, buf)?;
                (
                    Format::TorchZip,
                    z.tensors,
                    z.owned,
                    z.container,
                    Vec::new(),
                )
            }
            Sniffed::Safetensors => {
                let s = safetensors_file::read(&file_path, buf)?;
                (Format::Safetensors, s.tensors, Vec::new(), None, s.metadata)
            }
            Sniffed::LegacyPickle => {
                return Err(Error::checkpoint(
                    &file_path,
                    "this is a legacy (pre-1.6) torch pickle, which cannot be read without \
                     executing Python; re-save it with torch>=1.6 (torch.save(torch.load(f), g)) \
                     or convert it to safetensors",
                ))
            }
            Sniffed::Unknown => {
                return Err(Error::checkpoint(
                    &file_path,
                    format!(
                        "not a checkpoint: neither a torch zip (starts with PK\\x03\\x04) nor \
                         safetensors (8-byte header length, then '{{'); first bytes {head:02x?}"
                    ),
                ))
            }
        };
        let (entries, mut info) = keys::normalise(&file_path, raw)?;
        info.container = container;
        info.metadata = metadata;
        let mut blobs: Vec<Blob> = vec![blob.clone()];
        blobs.extend(owned);
        Ok(Checkpoint::from_parts(file_path, format, blobs, entries)?.with_load_info(info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"PK\x03\x04rest"), Sniffed::TorchZip);
        assert_eq!(sniff(b"\x10\0\0\0\0\0\0\0{\"a\""), Sniffed::Safetensors);
        assert_eq!(sniff(b"\x80\x02\x8a\x0al\xfc\x9cF"), Sniffed::LegacyPickle);
        assert_eq!(sniff(b"hello world"), Sniffed::Unknown);
        assert_eq!(sniff(b""), Sniffed::Unknown);
    }
}
