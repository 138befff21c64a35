//! Just enough of the zip format to read a torch checkpoint in place: the
//! central directory (zip64 included) and the start of each stored entry's
//! data. torch.save writes every entry uncompressed and 64-byte aligned, so
//! tensor bytes can be used straight from the memory map.

use std::collections::BTreeMap;

/// One stored entry: its data lies at `data_start..data_start + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZipEntry {
    pub data_start: usize,
    pub len: usize,
}

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;
/// An entry count far above any checkpoint's (one entry per storage), so a
/// corrupt count cannot make us loop for long.
const MAX_ENTRIES: u64 = 1 << 22;

fn slice<'a>(buf: &'a [u8], at: usize, len: usize, what: &str) -> Result<&'a [u8], String> {
    at.checked_add(len)
        .and_then(|end| buf.get(at..end))
        .ok_or_else(|| format!("zip {what} at byte {at} runs past the end of the file"))
}
fn u16_at(buf: &[u8], at: usize, what: &str) -> Result<u16, String> {
    let b = slice(buf, at, 2, what)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}
fn u32_at(buf: &[u8], at: usize, what: &str) -> Result<u32, String> {
    let b = slice(buf, at, 4, what)?;
    Ok(u32::from_le_bytes(b.try_into().unwrap()))
}
fn u64_at(buf: &[u8], at: usize, what: &str) -> Result<u64, String> {
    let b = slice(buf, at, 8, what)?;
    Ok(u64::from_le_bytes(b.try_into().unwrap()))
}
fn to_usize(v: u64, what: &str) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("zip {what} {v} does not fit in memory"))
}

/// Central directory location: (offset, size, entry count).
fn find_central_directory(buf: &[u8]) -> Result<(usize, usize, u64), String> {
    // The end record is 22 bytes plus a comment of at most 65535 bytes.
    let earliest = buf.len().saturating_sub(22 + 65535);
    let eocd = (earliest..=buf.len().saturating_sub(22))
        .rev()
        .find(|&i| buf[i..i + 4] == EOCD_SIG.to_le_bytes())
        .ok_or("no zip end-of-central-directory record (truncated file?)")?;
    let entries = u16_at(buf, eocd + 10, "end record")? as u64;
    let size = u32_at(buf, eocd + 12, "end record")? as u64;
    let offset = u32_at(buf, eocd + 16, "end record")? as u64;
    let (offset, size, entries) =
        if entries == 0xFFFF || size == 0xFFFF_FFFF || offset == 0xFFFF_FFFF {
            let loc = eocd
                .checked_sub(20)
                .ok_or("zip64 end record expected but missing")?;
            if u32_at(buf, loc, "zip64 locator")? != ZIP64_LOCATOR_SIG {
                return Err("zip64 end-record locator missing".into());
            }
            let rec = to_usize(
                u64_at(buf, loc + 8, "zip64 locator")?,
                "zip64 record offset",
            )?;
            if u32_at(buf, rec, "zip64 end record")? != ZIP64_EOCD_SIG {
                return Err("zip64 end record has a bad signature".into());
            }
            (
                u64_at(buf, rec + 48, "zip64 end record")?,
                u64_at(buf, rec + 40, "zip64 end record")?,
                u64_at(buf, rec + 32, "zip64 end record")?,
            )
        } else {
            (offset, size, entries)
        };
    if entries > MAX_ENTRIES {
        return Err(format!(
            "zip claims {entries} entries, more than any checkpoint holds"
        ));
    }
    let offset = to_usize(offset, "central directory offset")?;
    let size = to_usize(size, "central directory size")?;
    slice(buf, offset, size, "central directory")?;
    Ok((offset, size, entries))
}

/// Reads the zip64 extended-information field for the 32-bit fields that
/// overflowed, in the order the format fixes.
fn zip64_extra(extra: &[u8], need: [bool; 3]) -> Result<[Option<u64>; 3], String> {
    let mut at = 0;
    while at + 4 <= extra.len() {
        let id = u16::from_le_bytes([extra[at], extra[at + 1]]);
        let len = u16::from_le_bytes([extra[at + 2], extra[at + 3]]) as usize;
        let body = slice(extra, at + 4, len, "extra field")?;
        if id == 0x0001 {
            let mut out = [None; 3];
            let mut pos = 0;
            for (k, needed) in need.iter().enumerate() {
                if *needed {
                    out[k] = Some(u64_at(body, pos, "zip64 extra field")?);
                    pos += 8;
                }
            }
            return Ok(out);
        }
        at += 4 + len;
    }
    Err("zip64 sizes announced but the zip64 extra field is missing".into())
}

/// Every entry of the archive by name. Compressed or encrypted entries are
/// refused: their bytes cannot be used in place.
pub fn read_entries(buf: &[u8]) -> Result<BTreeMap<String, ZipEntry>, String> {
    let (cd_offset, cd_size, count) = find_central_directory(buf)?;
    let cd_end = cd_offset + cd_size;
    let mut out = BTreeMap::new();
    let mut at = cd_offset;
    for _ in 0..count {
        if at + 46 > cd_end {
            return Err("zip central directory is shorter than its entry count".into());
        }
        if u32_at(buf, at, "central entry")? != CENTRAL_SIG {
            return Err(format!(
                "zip central entry at byte {at} has a bad signature"
            ));
        }
        let flags = u16_at(buf, at + 8, "central entry")?;
        let method = u16_at(buf, at + 10, "central entry")?;
        let comp32 = u32_at(buf, at + 20, "central entry")?;
        let size32 = u32_at(buf, at + 24, "central entry")?;
        let name_len = u16_at(buf, at + 28, "central entry")? as usize;
        let extra_len = u16_at(buf, at + 30, "central entry")? as usize;
        let comment_len = u16_at(buf, at + 32, "central entry")? as usize;
        let local32 = u32_at(buf, at + 42, "central entry")?;
        let name_bytes = slice(buf, at + 46, name_len, "entry name")?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        let extra = slice(buf, at + 46 + name_len, extra_len, "extra field")?;

        let need = [
            size32 == 0xFFFF_FFFF,
            comp32 == 0xFFFF_FFFF,
            local32 == 0xFFFF_FFFF,
        ];
        let [size64, comp64, local64] = if need.iter().any(|&n| n) {
            zip64_extra(extra, need)?
        } else {
            [None; 3]
        };
        let size = size64.unwrap_or(size32 as u64);
        let comp = comp64.unwrap_or(comp32 as u64);
        let local = to_usize(local64.unwrap_or(local32 as u64), "local header offset")?;

        if flags & 1 != 0 {
            return Err(format!("zip entry {name} is encrypted"));
        }
        if method != 0 {
            return Err(format!(
                "zip entry {name} is compressed (method {method}); torch.save stores entries \
                 uncompressed, so this archive was re-packed: re-save it with torch.save or \
                 convert it to safetensors"
            ));
        }
        if comp != size {
            return Err(format!(
                "zip entry {name} is stored but its sizes differ ({comp} vs {size})"
            ));
        }
        if u32_at(buf, local, "local header")? != LOCAL_SIG {
            return Err(format!(
                "zip entry {name}: local header has a bad signature"
            ));
        }
        let local_name = u16_at(buf, local + 26, "local header")? as usize;
        let local_extra = u16_at(buf, local + 28, "local header")? as usize;
        let data_start = local + 30 + local_name + local_extra;
        let len = to_usize(size, "entry size")?;
        slice(buf, data_start, len, &format!("entry {name} data"))?;
        if out
            .insert(name.clone(), ZipEntry { data_start, len })
            .is_some()
        {
            return Err(format!("zip entry {name} appears twice"));
        }
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored (method 0) archive, written the plain 32-bit way.
    fn build_zip(files: &[(&str, &[u8])], method: u16) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let off = out.len() as u32;
            out.extend(LOCAL_SIG.to_le_bytes());
            out.extend([20, 0, 0, 0]);
            out.extend(method.to_le_bytes());
            out.extend([0; 8]); // time, date, crc (unchecked)
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes());
            out.extend(name.as_bytes());
            out.extend(*data);
            central.extend(CENTRAL_SIG.to_le_bytes());
            central.extend([20, 0, 20, 0, 0, 0]);
            central.extend(method.to_le_bytes());
            central.extend([0; 8]);
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((name.len() as u16).to_le_bytes());
            central.extend([0; 12]);
            central.extend(off.to_le_bytes());
            central.extend(name.as_bytes());
        }
        let cd_off = out.len() as u32;
        out.extend(&central);
        out.extend(EOCD_SIG.to_le_bytes());
        out.extend([0; 4]);
        out.extend((files.len() as u16).to_le_bytes());
        out.extend((files.len() as u16).to_le_bytes());
        out.extend((central.len() as u32).to_le_bytes());
        out.extend(cd_off.to_le_bytes());
        out.extend([0; 2]);
        out
    }

    #[test]
    fn reads_stored_entries() {
        let z = build_zip(&[("a/data.pkl", b"xyz"), ("a/data/0", b"0123")], 0);
        let e = read_entries(&z).unwrap();
        let d = e["a/data/0"];
        assert_eq!(&z[d.data_start..d.data_start + d.len], b"0123");
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn refuses_compressed_and_truncated() {
        let z = build_zip(&[("a/data.pkl", b"xyz")], 8);
        let err = read_entries(&z).unwrap_err();
        assert!(err.contains("compressed"), "{err}");
        let z = build_zip(&[("a/data.pkl", b"xyz")], 0);
        let err = read_entries(&z[..z.len() - 5]).unwrap_err();
        assert!(err.contains("end-of-central-directory"), "{err}");
        // Central directory pointing past the end.
        let mut z = build_zip(&[("a/data.pkl", b"xyz")], 0);
        let n = z.len();
        z[n - 6..n - 2].copy_from_slice(&9999u32.to_le_bytes());
        assert!(read_entries(&z).is_err());
    }
}
