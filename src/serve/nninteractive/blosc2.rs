//! Blosc2 chunks (the `compress2` / `decompress2` format): a decoder for what
//! the nnInteractive client uploads and an encoder for the masks we send back.
//!
//! Written here over `ruzstd` and `lz4_flex` because there is no pure-Rust
//! Blosc2 crate we would trust with hostile input, and C-Blosc2 needs cmake.
//! The decoder covers every layout a stock Blosc2 writer produces for the
//! client's settings (ZSTD or LZ4; no filter, byte shuffle, or a truncated
//! precision): memcpyed chunks, special-value chunks (zeros, NaN, a repeated
//! value, uninitialised), several blocks with a short last one, split and
//! unsplit streams, zero-run and repeated-byte streams, raw streams.
//! Everything else (bit-shuffle, delta, dictionaries, lazy chunks, other
//! codecs) is refused by name. Every offset and size is checked against the
//! input before it is used and the output is the caller's slice, so a lying
//! header can produce an error but never a panic or an allocation of its
//! choosing.

use std::fmt;

/// Size of the Blosc2 (extended) chunk header.
pub const HEADER_LEN: usize = 32;
/// Blosc2's own upper bound for a block.
const MAX_BLOCKSIZE: usize = 536_866_816;

// Header byte 2 (`flags`).
const FLAG_SHUFFLE: u8 = 0x01;
const FLAG_MEMCPYED: u8 = 0x02;
const FLAG_BITSHUFFLE: u8 = 0x04;
const FLAG_DONT_SPLIT: u8 = 0x10;
// Compressor codes in bits 5..7 of `flags`.
const CODEC_BLOSCLZ: u8 = 0;
const CODEC_LZ4: u8 = 1;
const CODEC_ZLIB: u8 = 3;
const CODEC_ZSTD: u8 = 4;
// Filter codes of the extended header.
const FILTER_NONE: u8 = 0;
const FILTER_SHUFFLE: u8 = 1;
const FILTER_BITSHUFFLE: u8 = 2;
const FILTER_DELTA: u8 = 3;
const FILTER_TRUNC_PREC: u8 = 4;
// Header byte 31 (`blosc2_flags`).
const B2_USE_DICT: u8 = 0x01;
const B2_LAZY: u8 = 0x08;
const SPECIAL_ZERO: u8 = 1;
const SPECIAL_NAN: u8 = 2;
const SPECIAL_VALUE: u8 = 3;
const SPECIAL_UNINIT: u8 = 4;
// The format version we write (Blosc2 "stable").
const VERSION_STABLE: u8 = 5;

/// Why a chunk could not be decoded: one line naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

fn err<T>(msg: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError(msg.into()))
}

fn le32(b: &[u8], at: usize) -> Result<u32, CodecError> {
    match b.get(at..at + 4) {
        Some(s) => Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]])),
        None => err(format!("blosc2 chunk truncated at byte {at}")),
    }
}

/// The fields of a chunk header that decoding needs.
#[derive(Debug, Clone)]
pub struct Header {
    flags: u8,
    typesize: usize,
    /// Uncompressed bytes.
    pub nbytes: usize,
    blocksize: usize,
    /// Compressed bytes, header included.
    pub cbytes: usize,
    filters: [u8; 6],
    filters_meta: [u8; 6],
    blosc2_flags: u8,
}

impl Header {
    fn codec(&self) -> u8 {
        self.flags >> 5
    }
    fn special(&self) -> u8 {
        (self.blosc2_flags >> 4) & 0x07
    }
}

/// Reads and checks a chunk header (what `blosc2.get_cbuffer_sizes` reads,
/// plus the filter pipeline), refusing what this decoder does not implement.
pub fn read_header(src: &[u8]) -> Result<Header, CodecError> {
    if src.len() < HEADER_LEN {
        return err(format!(
            "blosc2 chunk of {} bytes is shorter than its {HEADER_LEN}-byte header",
            src.len()
        ));
    }
    let version = src[0];
    let flags = src[2];
    if flags & (FLAG_SHUFFLE | FLAG_BITSHUFFLE) != (FLAG_SHUFFLE | FLAG_BITSHUFFLE) {
        return err("blosc1 chunk (no extended header): only Blosc2 chunks are supported");
    }
    if !(3..=6).contains(&version) {
        return err(format!(
            "blosc2 chunk format version {version} is not supported"
        ));
    }
    let h = Header {
        flags,
        typesize: src[3] as usize,
        nbytes: le32(src, 4)? as usize,
        blocksize: le32(src, 8)? as usize,
        cbytes: le32(src, 12)? as usize,
        filters: src[16..22].try_into().expect("6 bytes"),
        filters_meta: src[24..30].try_into().expect("6 bytes"),
        blosc2_flags: src[31],
    };
    let mut h = h;
    // Format 3 (the alpha series) left the last filter slot uninitialised.
    if version == 3 {
        h.filters[5] = 0;
    }
    if h.nbytes > i32::MAX as usize || h.cbytes > i32::MAX as usize {
        return err("blosc2 header sizes exceed 2 GiB");
    }
    if h.cbytes < HEADER_LEN {
        return err(format!(
            "blosc2 header claims {} compressed bytes",
            h.cbytes
        ));
    }
    if h.cbytes > src.len() {
        return err(format!(
            "blosc2 chunk truncated: header claims {} bytes, {} present",
            h.cbytes,
            src.len()
        ));
    }
    if h.typesize == 0 {
        return err("blosc2 header has typesize 0");
    }
    if h.blocksize == 0 || h.blocksize > MAX_BLOCKSIZE {
        return err(format!("blosc2 header has blocksize {}", h.blocksize));
    }
    if src[30] != 0 {
        return err("blosc2 variable-length-block chunks are not supported");
    }
    if h.blosc2_flags & B2_USE_DICT != 0 {
        return err("blosc2 chunks compressed with a dictionary are not supported");
    }
    if h.blosc2_flags & B2_LAZY != 0 && h.special() == 0 {
        return err("lazy blosc2 chunks (data left on disk) are not supported");
    }
    if h.special() > SPECIAL_UNINIT {
        return err(format!(
            "blosc2 special value kind {} is unknown",
            h.special()
        ));
    }
    if h.special() == 0 && h.flags & FLAG_MEMCPYED == 0 {
        match h.codec() {
            CODEC_ZSTD | CODEC_LZ4 => {}
            CODEC_BLOSCLZ => return err("blosc2 codec BLOSCLZ is not supported (use ZSTD or LZ4)"),
            CODEC_ZLIB => return err("blosc2 codec ZLIB is not supported (use ZSTD or LZ4)"),
            c => {
                return err(format!(
                    "blosc2 codec {c} is not supported (use ZSTD or LZ4)"
                ))
            }
        }
        for &f in &h.filters {
            match f {
                FILTER_NONE | FILTER_SHUFFLE | FILTER_TRUNC_PREC => {}
                FILTER_BITSHUFFLE => {
                    return err(
                        "blosc2 filter BITSHUFFLE is not supported (use NOFILTER or SHUFFLE)",
                    )
                }
                FILTER_DELTA => {
                    return err("blosc2 filter DELTA is not supported (use NOFILTER or SHUFFLE)")
                }
                f => return err(format!("blosc2 filter {f} is not supported")),
            }
        }
    }
    Ok(h)
}

/// Decodes one chunk into `out`, whose length must be the chunk's `nbytes`.
pub fn decode_chunk(src: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let h = read_header(src)?;
    if out.len() != h.nbytes {
        return err(format!(
            "blosc2 chunk holds {} bytes, {} expected",
            h.nbytes,
            out.len()
        ));
    }
    let src = &src[..h.cbytes];
    match h.special() {
        0 => {}
        SPECIAL_ZERO => {
            out.fill(0);
            return Ok(());
        }
        // Nothing was stored; zeros rather than whatever memory held.
        SPECIAL_UNINIT => {
            out.fill(0);
            return Ok(());
        }
        SPECIAL_NAN => {
            let nan: &[u8] = match h.typesize {
                4 => &f32::NAN.to_le_bytes(),
                8 => &f64::NAN.to_le_bytes(),
                t => return err(format!("blosc2 NaN chunk with typesize {t}")),
            };
            return fill_repeated(out, nan);
        }
        SPECIAL_VALUE => {
            // The value follows the header; its width is what is left.
            let value = &src[HEADER_LEN..];
            if value.is_empty() {
                return err("blosc2 repeated-value chunk holds no value");
            }
            return fill_repeated(out, value);
        }
        _ => unreachable!("checked by read_header"),
    }
    if h.nbytes == 0 {
        return Ok(());
    }
    let nblocks = h.nbytes.div_ceil(h.blocksize);
    if h.flags & FLAG_MEMCPYED != 0 {
        if h.cbytes != HEADER_LEN + h.nbytes {
            return err(format!(
                "memcpyed blosc2 chunk of {} bytes for {} data bytes",
                h.cbytes, h.nbytes
            ));
        }
        out.copy_from_slice(&src[HEADER_LEN..]);
        return Ok(());
    }
    let bstarts_end = nblocks
        .checked_mul(4)
        .and_then(|n| n.checked_add(HEADER_LEN))
        .filter(|&e| e <= src.len());
    let Some(bstarts_end) = bstarts_end else {
        return err(format!(
            "blosc2 chunk too short for the offsets of its {nblocks} blocks"
        ));
    };
    let mut scratch = Vec::new();
    let mut zstd = ruzstd::decoding::FrameDecoder::new();
    for (b, dest) in out.chunks_mut(h.blocksize).enumerate() {
        let start = le32(src, HEADER_LEN + 4 * b)? as usize;
        if start < bstarts_end || start >= src.len() {
            return err(format!("blosc2 block {b} starts at invalid offset {start}"));
        }
        let leftover = dest.len() < h.blocksize;
        decode_block(&h, &src[start..], dest, leftover, &mut scratch, &mut zstd)
            .map_err(|e| CodecError(format!("blosc2 block {b}: {e}")))?;
    }
    Ok(())
}

fn fill_repeated(out: &mut [u8], value: &[u8]) -> Result<(), CodecError> {
    if out.len() % value.len() != 0 {
        return err(format!(
            "blosc2 chunk of {} bytes is not a whole number of {}-byte values",
            out.len(),
            value.len()
        ));
    }
    for c in out.chunks_exact_mut(value.len()) {
        c.copy_from_slice(value);
    }
    Ok(())
}

/// One block: its streams decompressed, then the filters undone in reverse.
fn decode_block(
    h: &Header,
    mut src: &[u8],
    dest: &mut [u8],
    leftover: bool,
    scratch: &mut Vec<u8>,
    zstd: &mut ruzstd::decoding::FrameDecoder,
) -> Result<(), CodecError> {
    let bsize = dest.len();
    // A block is split into one stream per byte of the type unless the
    // header says otherwise; the short last block never is.
    let nstreams = if h.flags & FLAG_DONT_SPLIT == 0 && !leftover {
        h.typesize
    } else {
        1
    };
    if bsize % nstreams != 0 {
        return err(format!(
            "{bsize} bytes do not split into {nstreams} streams"
        ));
    }
    let neblock = bsize / nstreams;
    let shuffles: Vec<usize> = (0..6)
        .rev()
        .filter(|&i| h.filters[i] == FILTER_SHUFFLE)
        .map(|i| match h.filters_meta[i] {
            0 => h.typesize,
            m => m as usize,
        })
        .filter(|&t| t > 1)
        .collect();
    // Streams decode into `dest` directly when no filter needs undoing.
    scratch.clear();
    scratch.resize(if shuffles.is_empty() { 0 } else { bsize }, 0);
    let target: &mut [u8] = if shuffles.is_empty() {
        &mut *dest
    } else {
        &mut scratch[..]
    };
    for s in 0..nstreams {
        let out = &mut target[s * neblock..(s + 1) * neblock];
        let csize = le32(src, 0)? as i32;
        src = &src[4..];
        if csize == 0 {
            out.fill(0);
        } else if csize < 0 {
            let Some((&token, rest)) = src.split_first() else {
                return err("stream token missing");
            };
            src = rest;
            if token & 1 == 0 || csize < -255 {
                return err(format!("unsupported stream token {token} (csize {csize})"));
            }
            out.fill((-csize) as u8);
        } else {
            let csize = csize as usize;
            let Some(data) = src.get(..csize) else {
                return err(format!(
                    "stream of {csize} bytes runs past the chunk ({} left)",
                    src.len()
                ));
            };
            src = &src[csize..];
            if csize == neblock {
                out.copy_from_slice(data);
            } else {
                decompress(h.codec(), data, out, zstd)?;
            }
        }
    }
    if !shuffles.is_empty() {
        // Undo the filters last to first; a trunc-prec needs no undoing.
        let mut buf = std::mem::take(scratch);
        let mut tmp = vec![0u8; bsize];
        for t in shuffles {
            unshuffle(t, &buf, &mut tmp);
            std::mem::swap(&mut buf, &mut tmp);
        }
        dest.copy_from_slice(&buf);
        *scratch = buf;
    }
    Ok(())
}

fn decompress(
    codec: u8,
    data: &[u8],
    out: &mut [u8],
    zstd: &mut ruzstd::decoding::FrameDecoder,
) -> Result<(), CodecError> {
    let n = match codec {
        CODEC_LZ4 => lz4_flex::block::decompress_into(data, out)
            .map_err(|e| CodecError(format!("lz4 stream: {e}")))?,
        CODEC_ZSTD => {
            // A hostile frame could declare a window far larger than its
            // output and make the decoder reserve it; real ones never do.
            let window = zstd_window(data)?;
            if window > 4 * out.len() as u64 + (1 << 20) {
                return err(format!(
                    "zstd stream declares a {window}-byte window for {} bytes",
                    out.len()
                ));
            }
            zstd.decode_all(data, out)
                .map_err(|e| CodecError(format!("zstd stream: {e}")))?
        }
        c => return err(format!("codec {c} is not supported")),
    };
    if n != out.len() {
        return err(format!("stream gave {n} bytes, {} expected", out.len()));
    }
    Ok(())
}

/// The window a zstd frame declares (RFC 8878, 3.1.1.1): the decoder
/// reserves that much before producing a byte.
fn zstd_window(data: &[u8]) -> Result<u64, CodecError> {
    if data.len() < 6 || data[..4] != [0x28, 0xb5, 0x2f, 0xfd] {
        return err("zstd stream: not a zstd frame");
    }
    let fhd = data[4];
    if fhd & 0x20 == 0 {
        // A window descriptor follows.
        let wd = data[5];
        let base = 1u64 << (10 + (wd >> 3));
        return Ok(base + base / 8 * (wd & 7) as u64);
    }
    // Single segment: the window is the content size that follows the
    // (optional) dictionary id.
    let dict_len = [0usize, 1, 2, 4][(fhd & 3) as usize];
    let fcs_len = [1usize, 2, 4, 8][(fhd >> 6) as usize];
    let at = 5 + dict_len;
    let Some(f) = data.get(at..at + fcs_len) else {
        return err("zstd stream: frame header truncated");
    };
    let mut b = [0u8; 8];
    b[..fcs_len].copy_from_slice(f);
    let v = u64::from_le_bytes(b);
    Ok(if fcs_len == 2 { v + 256 } else { v })
}

/// Blosc's byte unshuffle: byte `j` of element `i` was stored at
/// `j * n + i`; trailing bytes that do not fill an element stay in place.
fn unshuffle(typesize: usize, src: &[u8], dest: &mut [u8]) {
    let n = src.len() / typesize;
    for (i, el) in dest[..n * typesize].chunks_exact_mut(typesize).enumerate() {
        for (j, d) in el.iter_mut().enumerate() {
            *d = src[j * n + i];
        }
    }
    let tail = n * typesize;
    dest[tail..].copy_from_slice(&src[tail..]);
}

/// The block size we write: Blosc2's own choice for ZSTD at low levels is
/// in this range, and several blocks keep a reply's chunk readable by any
/// Blosc2 build without a huge temporary.
const ENCODE_BLOCK: usize = 256 * 1024;

/// The codecs the encoder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Not used for replies (see `nnia::pack`), kept and cross-checked
    /// against the client so a reply codec is one line to change.
    #[cfg_attr(not(test), allow(dead_code))]
    Zstd,
    Lz4,
}

/// Encodes `data` as one chunk: no filter, unsplit blocks; all-zero blocks
/// as zero-run streams and incompressible ones stored raw, as Blosc2 itself
/// writes them. `data` must be under 2 GiB (one chunk).
pub fn encode_chunk(data: &[u8], typesize: u8, codec: Codec) -> Vec<u8> {
    assert!(
        data.len() <= i32::MAX as usize - 64,
        "one chunk holds under 2 GiB"
    );
    assert!(typesize > 0, "typesize");
    let blocksize = if data.is_empty() {
        // Blosc2 rejects a zero blocksize even for an empty chunk.
        typesize as usize
    } else {
        data.len().min(ENCODE_BLOCK)
    };
    let nblocks = data.len().div_ceil(blocksize);
    let mut out = vec![0u8; HEADER_LEN + 4 * nblocks];
    for (b, block) in data.chunks(blocksize).enumerate() {
        let start = out.len() as u32;
        out[HEADER_LEN + 4 * b..HEADER_LEN + 4 * b + 4].copy_from_slice(&start.to_le_bytes());
        if block.iter().all(|&v| v == 0) {
            out.extend_from_slice(&0i32.to_le_bytes());
            continue;
        }
        let z = match codec {
            Codec::Zstd => ruzstd::encoding::compress_to_vec(
                block,
                ruzstd::encoding::CompressionLevel::Fastest,
            ),
            Codec::Lz4 => lz4_flex::compress(block),
        };
        let stored: &[u8] = if z.len() < block.len() { &z } else { block };
        out.extend_from_slice(&(stored.len() as i32).to_le_bytes());
        out.extend_from_slice(stored);
    }
    let cbytes = out.len() as u32;
    out[0] = VERSION_STABLE;
    let code = match codec {
        Codec::Zstd => CODEC_ZSTD,
        Codec::Lz4 => CODEC_LZ4,
    };
    out[1] = 1; // the stream format version (1 for both codecs)
    out[2] = FLAG_SHUFFLE | FLAG_BITSHUFFLE | FLAG_DONT_SPLIT | (code << 5);
    out[3] = typesize;
    out[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
    out[8..12].copy_from_slice(&(blocksize as u32).to_le_bytes());
    out[12..16].copy_from_slice(&cbytes.to_le_bytes());
    // Bytes 16..32: no filters, no metadata, no special value.
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(src: &[u8]) -> Result<Vec<u8>, CodecError> {
        let h = read_header(src)?;
        let mut out = vec![0u8; h.nbytes];
        decode_chunk(src, &mut out)?;
        Ok(out)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 7) % 13 + i / 977) as u8).collect()
    }

    #[test]
    fn encode_then_decode_round_trips() {
        for n in [
            0,
            1,
            5,
            1000,
            ENCODE_BLOCK,
            ENCODE_BLOCK + 17,
            3 * ENCODE_BLOCK + 1,
        ] {
            for codec in [Codec::Zstd, Codec::Lz4] {
                let data = pattern(n);
                let c = encode_chunk(&data, 1, codec);
                assert_eq!(decode(&c).unwrap(), data, "n = {n}");
                let zeros = vec![0u8; n];
                let z = encode_chunk(&zeros, 1, codec);
                assert_eq!(decode(&z).unwrap(), zeros, "zeros {n}");
            }
        }
    }

    #[test]
    fn unshuffle_inverts_blosc_shuffle() {
        let (t, n) = (4, 11);
        let orig: Vec<u8> = (0..(t * n + 3) as u8).collect();
        let mut shuffled = orig.clone();
        for i in 0..n {
            for j in 0..t {
                shuffled[j * n + i] = orig[i * t + j];
            }
        }
        let mut back = vec![0; orig.len()];
        unshuffle(t, &shuffled, &mut back);
        assert_eq!(back, orig);
    }

    /// A hand-built chunk: two split blocks (typesize 2, shuffled) whose
    /// streams are a zero run, a repeated byte, a raw copy and an LZ4 block.
    #[test]
    fn decodes_split_streams_runs_and_shuffle() {
        let block = 8; // 4 elements of 2 bytes
        let elems: [u16; 8] = [
            0x0500, 0x0500, 0x0500, 0x0500, 0x0201, 0x0403, 0x0605, 0x0807,
        ];
        let mut c = vec![0u8; HEADER_LEN + 8];
        let b0 = c.len();
        c.extend_from_slice(&0i32.to_le_bytes()); // low bytes: zero run
        c.extend_from_slice(&(-5i32).to_le_bytes()); // high bytes: run of 5
        c.push(1);
        let b1 = c.len();
        c.extend_from_slice(&4i32.to_le_bytes()); // low bytes raw
        c.extend_from_slice(&[1, 3, 5, 7]);
        let high = lz4_flex::compress(&[2, 4, 6, 8]);
        c.extend_from_slice(&(high.len() as i32).to_le_bytes());
        c.extend_from_slice(&high);
        let cbytes = c.len() as u32;
        c[0] = 5;
        c[1] = 1;
        c[2] = FLAG_SHUFFLE | FLAG_BITSHUFFLE | (CODEC_LZ4 << 5);
        c[3] = 2;
        c[4..8].copy_from_slice(&16u32.to_le_bytes());
        c[8..12].copy_from_slice(&(block as u32).to_le_bytes());
        c[12..16].copy_from_slice(&cbytes.to_le_bytes());
        c[21] = FILTER_SHUFFLE;
        c[32..36].copy_from_slice(&(b0 as u32).to_le_bytes());
        c[36..40].copy_from_slice(&(b1 as u32).to_le_bytes());
        let want: Vec<u8> = elems.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode(&c).unwrap(), want);
    }

    #[test]
    fn refuses_by_name() {
        let mut c = encode_chunk(&pattern(100), 1, Codec::Zstd);
        c[16] = FILTER_BITSHUFFLE;
        assert!(decode(&c).unwrap_err().0.contains("BITSHUFFLE"));
        let mut c = encode_chunk(&pattern(100), 1, Codec::Zstd);
        c[2] = (c[2] & 0x1f) | (CODEC_BLOSCLZ << 5);
        assert!(decode(&c).unwrap_err().0.contains("BLOSCLZ"));
        let mut c = encode_chunk(&pattern(100), 1, Codec::Zstd);
        c[2] &= !FLAG_BITSHUFFLE;
        assert!(decode(&c).unwrap_err().0.contains("blosc1"));
    }

    /// Every truncation and many single-byte corruptions of valid chunks give
    /// an error or some output of the declared size, never a panic.
    #[test]
    fn hostile_chunks_never_panic() {
        let mut seeds = vec![
            encode_chunk(&pattern(3 * ENCODE_BLOCK / 2), 1, Codec::Zstd),
            encode_chunk(&vec![0u8; 999], 1, Codec::Lz4),
            encode_chunk(&pattern(37), 4, Codec::Lz4),
        ];
        let lz = lz4_flex::compress(&pattern(64));
        let mut c = vec![0u8; HEADER_LEN + 4];
        c.extend_from_slice(&(lz.len() as i32).to_le_bytes());
        c.extend_from_slice(&lz);
        let n = c.len() as u32;
        c[..4].copy_from_slice(&[
            5,
            1,
            FLAG_SHUFFLE | FLAG_BITSHUFFLE | FLAG_DONT_SPLIT | (CODEC_LZ4 << 5),
            1,
        ]);
        c[4..8].copy_from_slice(&64u32.to_le_bytes());
        c[8..12].copy_from_slice(&64u32.to_le_bytes());
        c[12..16].copy_from_slice(&n.to_le_bytes());
        c[32..36].copy_from_slice(&(HEADER_LEN as u32 + 4).to_le_bytes());
        seeds.push(c);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for seed in &seeds {
            for cut in 0..seed.len().min(300) {
                let _ = decode(&seed[..cut]);
            }
            for _ in 0..3000 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let mut m = seed.clone();
                let at = (rng as usize) % m.len().min(200);
                m[at] = (rng >> 32) as u8;
                if let Ok(h) = read_header(&m) {
                    // Bound what a mutated header may ask for.
                    if h.nbytes <= 1 << 24 {
                        let _ = decode(&m);
                    }
                }
            }
        }
    }
}
