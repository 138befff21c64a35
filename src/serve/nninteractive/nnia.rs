//! The nnInteractive array container ("NNIA", version 1): a little header
//! (magic, version, codec id, ndim, dtype name, int64 shape) and the array's
//! C-order little-endian bytes as a list of Blosc2 chunks, each prefixed with
//! its uncompressed and compressed lengths (uint64). Both directions: the
//! client uploads images this way and reads prediction diffs back.

pub use super::blosc2::Codec;
use super::blosc2::{self, CodecError};

const MAGIC: &[u8; 4] = b"NNIA";
const VERSION: u8 = 1;
/// The container's codec ids (1 = ZSTD, 2 = LZ4); informative only, each
/// chunk names its own codec.
const CODEC_ZSTD: u8 = 1;
const CODEC_LZ4: u8 = 2;
/// The client chunks at 1 GiB; we write masks far smaller than that.
const CHUNK_BYTES: usize = 1 << 30;
/// More dimensions than any image or mask has.
const MAX_NDIM: usize = 8;

/// Element types the client may send (numpy names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F16,
    F32,
    F64,
}

impl Dtype {
    /// The numpy name (`np.dtype(x).name`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "bool",
            Dtype::U8 => "uint8",
            Dtype::I8 => "int8",
            Dtype::U16 => "uint16",
            Dtype::I16 => "int16",
            Dtype::U32 => "uint32",
            Dtype::I32 => "int32",
            Dtype::U64 => "uint64",
            Dtype::I64 => "int64",
            Dtype::F16 => "float16",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }

    /// Parses a numpy dtype name.
    pub fn parse(name: &str) -> Option<Dtype> {
        const ALL: [Dtype; 12] = [
            Dtype::Bool,
            Dtype::U8,
            Dtype::I8,
            Dtype::U16,
            Dtype::I16,
            Dtype::U32,
            Dtype::I32,
            Dtype::U64,
            Dtype::I64,
            Dtype::F16,
            Dtype::F32,
            Dtype::F64,
        ];
        ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }
}

/// A decoded array: C-order, little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Array {
    /// The elements as `f32` (CT intensities; large integers round).
    pub fn to_f32(&self) -> Vec<f32> {
        let b = &self.data;
        match self.dtype {
            Dtype::Bool | Dtype::U8 => b.iter().map(|&v| v as f32).collect(),
            Dtype::I8 => b.iter().map(|&v| v as i8 as f32).collect(),
            Dtype::U16 => b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            Dtype::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::U32 => b
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Dtype::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::U64 => b
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Dtype::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Dtype::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
        }
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError(msg.into()))
}

/// A bounds-checked reader over the container.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CodecError> {
        match self.buf.get(self.at..self.at.saturating_add(n)) {
            Some(s) => {
                self.at += n;
                Ok(s)
            }
            None => err(format!(
                "NNIA body truncated reading {what} at byte {} of {}",
                self.at,
                self.buf.len()
            )),
        }
    }
    fn u64(&mut self, what: &str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
}

/// Decodes a container, refusing arrays of more than `max_bytes` decoded
/// bytes before anything is allocated for them (a few bytes of header may
/// claim any shape, and Blosc2 stores a run of zeros in 32 bytes).
pub fn unpack(buf: &[u8], max_bytes: usize) -> Result<Array, CodecError> {
    let mut r = Reader { buf, at: 0 };
    let head = r.take(8, "the header")?;
    if &head[..4] != MAGIC {
        return err("not an NNIA array (bad magic)");
    }
    if head[4] != VERSION {
        return err(format!(
            "NNIA version {} is not supported (only 1)",
            head[4]
        ));
    }
    if head[5] != CODEC_ZSTD && head[5] != CODEC_LZ4 {
        return err(format!(
            "NNIA codec id {} is not supported (1 = ZSTD, 2 = LZ4)",
            head[5]
        ));
    }
    let ndim = head[6] as usize;
    if ndim > MAX_NDIM {
        return err(format!("NNIA array with {ndim} dimensions"));
    }
    let name = r.take(head[7] as usize, "the dtype name")?;
    let name = std::str::from_utf8(name).unwrap_or("?");
    let Some(dtype) = Dtype::parse(name) else {
        return err(format!("NNIA dtype {name:?} is not supported"));
    };
    let mut shape = Vec::with_capacity(ndim);
    let mut total = dtype.size();
    for _ in 0..ndim {
        let d = r.u64("the shape")? as i64;
        if d < 0 {
            return err(format!("NNIA shape has a negative dimension {d}"));
        }
        let d = d as usize;
        total = match total.checked_mul(d) {
            Some(t) if t <= max_bytes => t,
            _ => {
                return err(format!(
                    "NNIA array is larger than the limit of {max_bytes} bytes"
                ))
            }
        };
        shape.push(d);
    }
    if total > max_bytes {
        return err(format!(
            "NNIA array is larger than the limit of {max_bytes} bytes"
        ));
    }
    let nchunks = u32::from_le_bytes(r.take(4, "the chunk count")?.try_into().expect("4 bytes"));
    let mut data = vec![0u8; total];
    let mut written = 0usize;
    for c in 0..nchunks {
        let ulen = r.u64("a chunk length")?;
        let clen = r.u64("a chunk length")?;
        let ulen = usize::try_from(ulen).ok().filter(|&u| u <= total - written);
        let Some(ulen) = ulen else {
            return err(format!("NNIA chunk {c} runs past the declared shape"));
        };
        if ulen % dtype.size() != 0 {
            return err(format!(
                "NNIA chunk {c}: {ulen} bytes is not a whole number of {name}"
            ));
        }
        let clen = usize::try_from(clen).unwrap_or(usize::MAX);
        let src = r.take(clen, "a chunk")?;
        let h = blosc2::read_header(src).map_err(|e| CodecError(format!("NNIA chunk {c}: {e}")))?;
        if h.nbytes != ulen {
            return err(format!(
                "NNIA chunk {c}: the container says {ulen} bytes, the chunk {}",
                h.nbytes
            ));
        }
        blosc2::decode_chunk(src, &mut data[written..written + ulen])
            .map_err(|e| CodecError(format!("NNIA chunk {c}: {e}")))?;
        written += ulen;
    }
    if written != total {
        return err(format!(
            "NNIA payload holds {written} bytes, the shape needs {total}"
        ));
    }
    if r.at != buf.len() {
        return err(format!(
            "NNIA body has {} bytes after the last chunk",
            buf.len() - r.at
        ));
    }
    Ok(Array { dtype, shape, data })
}

/// Encodes a C-order array as a container (LZ4, no filter), readable by
/// the client's `unpack_array`.
pub fn pack(dtype: Dtype, shape: &[usize], data: &[u8]) -> Vec<u8> {
    pack_with(Codec::Lz4, dtype, shape, data)
}

/// [`pack`] with a chosen codec. Replies use LZ4: its encoder runs at
/// GB/s where ruzstd's fastest level manages some 50 MB/s, which would put
/// 6-10 ms on a click for the mask of a small CT (ZSTD's better ratio buys
/// little on a mask diff sent over a local link or a tunnel).
pub fn pack_with(codec: Codec, dtype: Dtype, shape: &[usize], data: &[u8]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>() * dtype.size(),
        data.len(),
        "data matches shape"
    );
    let name = dtype.name().as_bytes();
    let mut out = Vec::with_capacity(64 + data.len() / 4);
    out.extend_from_slice(MAGIC);
    let id = match codec {
        Codec::Zstd => CODEC_ZSTD,
        Codec::Lz4 => CODEC_LZ4,
    };
    out.extend_from_slice(&[VERSION, id, shape.len() as u8, name.len() as u8]);
    out.extend_from_slice(name);
    for &d in shape {
        out.extend_from_slice(&(d as i64).to_le_bytes());
    }
    let chunks: Vec<&[u8]> = data.chunks(CHUNK_BYTES).collect();
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for c in chunks {
        let z = blosc2::encode_chunk(c, dtype.size() as u8, codec);
        out.extend_from_slice(&(c.len() as u64).to_le_bytes());
        out.extend_from_slice(&(z.len() as u64).to_le_bytes());
        out.extend_from_slice(&z);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_round_trips() {
        for shape in [
            vec![0usize],
            vec![3, 0, 5],
            vec![1, 7, 9, 11],
            vec![300, 301, 3],
        ] {
            let n: usize = shape.iter().product();
            let data: Vec<u8> = (0..n).map(|i| (i % 3 == 0) as u8).collect();
            let p = pack(Dtype::U8, &shape, &data);
            let a = unpack(&p, 1 << 30).unwrap();
            assert_eq!((a.dtype, &a.shape, &a.data), (Dtype::U8, &shape, &data));
        }
    }

    #[test]
    fn refuses_huge_and_lying_shapes_before_allocating() {
        // 2^62 elements declared in a 40-byte body.
        let mut p = pack(Dtype::U8, &[1], &[1]);
        p[13..21].copy_from_slice(&(1i64 << 62).to_le_bytes());
        let e = unpack(&p, 1 << 30).unwrap_err();
        assert!(e.0.contains("limit"), "{e}");
        // Product overflow across dimensions.
        let mut p = pack(Dtype::F64, &[1, 1], &[0; 8]);
        let off = 8 + "float64".len();
        p[off..off + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
        p[off + 8..off + 16].copy_from_slice(&(1i64 << 40).to_le_bytes());
        assert!(unpack(&p, usize::MAX).is_err());
        // Negative dimension.
        let mut p = pack(Dtype::U8, &[1], &[1]);
        p[13..21].copy_from_slice(&(-1i64).to_le_bytes());
        assert!(unpack(&p, 1 << 30).unwrap_err().0.contains("negative"));
    }

    /// Truncations and random corruptions of valid bodies: errors, no panic.
    #[test]
    fn fuzz_style_corruptions_never_panic() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 7) as u8).collect();
        let seed = pack(Dtype::U8, &[10, 20, 25], &data);
        for cut in 0..seed.len() {
            assert!(unpack(&seed[..cut], 1 << 24).is_err(), "cut {cut}");
        }
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut m = seed.clone();
            for k in 0..1 + (rng % 3) as usize {
                let at = ((rng >> (8 * k)) as usize) % m.len();
                m[at] ^= 1 << ((rng >> 40) % 8);
            }
            let _ = unpack(&m, 1 << 24);
        }
    }
}
