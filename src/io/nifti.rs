//! Reading a CT from `.nii` / `.nii.gz` into float32 voxels in file order,
//! as MONAI's `LoadImage` (nibabel `get_fdata`) hands it to SegVol (docs/REFERENCE.md §4,
//! step 1): scl_slope/scl_inter applied, no reorientation.
//!
//! The 348-byte header is checked by hand before anything is allocated for
//! the voxels, so a corrupt or hostile file ends in an `Err` naming the
//! problem, never in a panic or a huge allocation. The `nifti` crate parses
//! the header fields once they are known to be sane; the voxel bytes are
//! decoded here, which keeps every datatype and byte order under one check.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use nifti::{Endianness, NiftiHeader, NiftiType};

use super::affine::{self, Affine, AffineSource};
use crate::error::{Error, Result};

pub const HEADER_SIZE: usize = 348;
/// Header plus the 4-byte extension flag: the smallest valid `vox_offset`.
pub const MIN_VOX_OFFSET: u64 = 352;
/// Largest volume accepted (2^31 voxels, 8 GiB as float32). Checked before
/// allocating, so a header claiming 10^12 voxels fails at once; for `.nii`
/// the file size is checked as well.
pub const MAX_VOXELS: u64 = 1 << 31;
/// Decompressed bytes read past the voxels to reach the gzip trailer (whose
/// CRC catches corruption); anything longer is left unread.
const MAX_TRAILING: u64 = 64 << 20;

/// A CT volume as SegVol's preprocessing sees it.
#[derive(Debug, Clone)]
pub struct CtVolume {
    /// The file it came from (for messages).
    pub path: PathBuf,
    /// Voxel counts along the file's (i, j, k) axes.
    pub dims: [usize; 3],
    /// Scaled intensities in file order, i fastest: index `i + dims[0]·(j + dims[1]·k)`.
    pub data: Vec<f32>,
    /// The header as read, kept so outputs reproduce the CT's geometry.
    pub header: NiftiHeader,
    /// The on-disk voxel type before scaling.
    pub datatype: NiftiType,
    /// Voxels that are NaN or ±Inf after scaling (left as they are).
    pub non_finite: usize,
    affine: Affine,
    affine_source: AffineSource,
}

impl CtVolume {
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Linear index of voxel (i, j, k) in `data`.
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.dims[0] * (j + self.dims[1] * k)
    }

    /// Voxel → world (mm) transform, rows of a 4×4 matrix.
    pub fn affine(&self) -> Affine {
        self.affine
    }

    /// Which header fields the affine came from.
    pub fn affine_source(&self) -> AffineSource {
        self.affine_source
    }

    /// Voxel sizes in mm along i, j, k (|pixdim|, 0 read as 1).
    pub fn spacing(&self) -> [f64; 3] {
        [1, 2, 3].map(|a| {
            let v = f64::from(self.header.pixdim[a]).abs();
            if v == 0.0 || !v.is_finite() {
                1.0
            } else {
                v
            }
        })
    }

    pub fn voxel_to_world(&self, ijk: [f64; 3]) -> [f64; 3] {
        affine::apply(&self.affine, ijk)
    }

    /// A CT held in memory rather than read from a file, for embedders that
    /// already have the voxels (from numpy, DICOM, another reader).
    ///
    /// `dims` are the voxel counts along (i, j, k); `data` is in file order,
    /// i fastest (index `i + dims[0]·(j + dims[1]·k)`), as a NIfTI reader hands
    /// it over; `affine` maps voxel (i, j, k) to world millimetres (nibabel's
    /// `img.affine`). `name` only labels messages. The header is synthesised
    /// (float32, the affine as an sform), so outputs written "like" this
    /// volume carry its geometry. Errors name what is wrong: mismatched
    /// lengths, empty or oversized axes, a non-finite or singular affine.
    pub fn from_array(
        name: impl Into<PathBuf>,
        dims: [usize; 3],
        data: Vec<f32>,
        affine: Affine,
    ) -> Result<CtVolume> {
        let path = name.into();
        let err = |msg: String| Error::nifti(&path, msg);
        if dims.contains(&0) || dims.iter().any(|&d| d > i16::MAX as usize) {
            return Err(err(format!(
                "dims {dims:?}: every axis needs 1 to {} voxels",
                i16::MAX
            )));
        }
        let n = dims.iter().product::<usize>();
        if n as u64 > MAX_VOXELS {
            return Err(err(format!("{n} voxels exceed the limit of {MAX_VOXELS}")));
        }
        if data.len() != n {
            return Err(err(format!(
                "{} voxels given for dims {dims:?} ({n} voxels)",
                data.len()
            )));
        }
        if affine.iter().flatten().any(|v| !v.is_finite()) {
            return Err(err("the affine has non-finite entries".into()));
        }
        if affine[3] != [0.0, 0.0, 0.0, 1.0] {
            return Err(err(format!(
                "the affine's last row is {:?}, not [0, 0, 0, 1]",
                affine[3]
            )));
        }
        // Checked here so world-frame prompts cannot fail later for it.
        if affine::invert_apply(&affine, [0.0; 3]).is_none() {
            return Err(err("the affine is singular".into()));
        }
        let mut header = NiftiHeader {
            dim: [
                3,
                dims[0] as u16,
                dims[1] as u16,
                dims[2] as u16,
                1,
                1,
                1,
                1,
            ],
            datatype: 16,
            bitpix: 32,
            scl_slope: 1.0,
            scl_inter: 0.0,
            // Scanner-anatomical sform, no qform: the affine is stored as is.
            sform_code: 1,
            qform_code: 0,
            srow_x: affine[0].map(|v| v as f32),
            srow_y: affine[1].map(|v| v as f32),
            srow_z: affine[2].map(|v| v as f32),
            // mm, as CT affines are.
            xyzt_units: 2,
            ..NiftiHeader::default()
        };
        // pixdim holds the voxel sizes: the lengths of the affine's columns.
        for (a, p) in header.pixdim[1..4].iter_mut().enumerate() {
            let len = affine[..3].iter().map(|row| row[a] * row[a]).sum::<f64>();
            *p = len.sqrt() as f32;
        }
        header.pixdim[0] = 1.0;
        let non_finite = data.iter().filter(|v| !v.is_finite()).count();
        Ok(CtVolume {
            path,
            dims,
            data,
            header,
            datatype: NiftiType::Float32,
            non_finite,
            affine,
            affine_source: AffineSource::Sform,
        })
    }

    /// Continuous voxel coordinate (i, j, k) of a world point.
    pub fn world_to_voxel(&self, xyz: [f64; 3]) -> Result<[f64; 3]> {
        if xyz.iter().any(|v| !v.is_finite()) {
            return Err(Error::nifti(
                &self.path,
                format!("world point {xyz:?} is not finite"),
            ));
        }
        affine::invert_apply(&self.affine, xyz).ok_or_else(|| {
            Error::nifti(
                &self.path,
                format!(
                    "the voxel-to-world affine (from the {}) is not invertible, so world coordinates cannot be mapped to voxels",
                    self.affine_source.name()
                ),
            )
        })
    }
}

/// What the validated header says about the voxel block.
#[derive(Debug, Clone, Copy)]
struct Layout {
    dims: [usize; 3],
    scalar: Scalar,
    little_endian: bool,
    vox_offset: u64,
    data_bytes: u64,
    /// (slope, inter) when scaling applies.
    scaling: Option<(f64, f64)>,
}

/// What a CT's header says about its voxels, known before they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Voxel counts along (i, j, k).
    pub dims: [usize; 3],
    pub datatype: NiftiType,
    /// Bytes per stored voxel.
    pub voxel_bytes: usize,
    pub vox_offset: u64,
    /// Bytes of voxel data the header announces.
    pub data_bytes: u64,
}

impl HeaderInfo {
    pub fn voxels(&self) -> u64 {
        self.dims.iter().map(|&d| d as u64).product()
    }
}

impl From<&Layout> for HeaderInfo {
    fn from(l: &Layout) -> Self {
        HeaderInfo {
            dims: l.dims,
            datatype: l.scalar.nifti_type(),
            voxel_bytes: l.scalar.size(),
            vox_offset: l.vox_offset,
            data_bytes: l.data_bytes,
        }
    }
}

/// Validates a raw NIfTI-1 header (the first 348 bytes of a `.nii`,
/// uncompressed) and its affine, as [`read_ct`] does before reading voxels.
/// The fuzzing entry point for the header path.
pub fn parse_header(raw: &[u8]) -> std::result::Result<HeaderInfo, String> {
    let raw: &[u8; HEADER_SIZE] = raw
        .get(..HEADER_SIZE)
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| {
            format!(
                "truncated: {} bytes, inside the {HEADER_SIZE}-byte NIfTI-1 header",
                raw.len()
            )
        })?;
    let (header, layout) = validate_header(raw)?;
    affine::best_affine(&header)?;
    Ok(HeaderInfo::from(&layout))
}

/// Reads and checks only the header of a `.nii` / `.nii.gz` (through the
/// gzip stream when compressed): dims and voxel type before any voxel
/// memory is committed.
pub fn probe_ct(path: &Path) -> Result<HeaderInfo> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut stream = Stream::open(path, BufReader::with_capacity(1 << 16, file))?;
    let (_, layout) = stream.header()?;
    Ok(HeaderInfo::from(&layout))
}

/// A CT file's byte stream, decompressed when it is gzip.
struct Stream<'a, 'p> {
    path: &'p Path,
    src: Box<dyn Read + 'a>,
    gz: bool,
}

impl<'a, 'p> Stream<'a, 'p> {
    fn open(path: &'p Path, mut buffered: impl BufRead + 'a) -> Result<Self> {
        let head = buffered.fill_buf().map_err(|e| Error::io(path, e))?;
        let gz = head.starts_with(&[0x1f, 0x8b]);
        let src: Box<dyn Read + 'a> = if gz {
            Box::new(MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        Ok(Stream { path, src, gz })
    }

    fn err(&self, msg: String) -> Error {
        Error::nifti(self.path, msg)
    }

    fn io_err(&self, e: std::io::Error) -> Error {
        if self.gz {
            self.err(format!("corrupt or truncated gzip stream: {e}"))
        } else {
            Error::io(self.path, e)
        }
    }

    fn what(&self) -> &'static str {
        if self.gz {
            "decompressed stream"
        } else {
            "file"
        }
    }

    /// Reads on to the end of a gzip stream (at most MAX_TRAILING bytes),
    /// which makes the decoder check the CRC.
    fn check_trailer(&mut self) -> Result<()> {
        if self.gz {
            std::io::copy(
                &mut (&mut self.src).take(MAX_TRAILING),
                &mut std::io::sink(),
            )
            .map_err(|e| self.io_err(e))?;
        }
        Ok(())
    }

    /// The 348-byte header, validated.
    fn header(&mut self) -> Result<(NiftiHeader, Layout)> {
        let mut raw = [0u8; HEADER_SIZE];
        let got = read_full(&mut self.src, &mut raw).map_err(|e| self.io_err(e))?;
        if got < HEADER_SIZE {
            return Err(self.err(format!(
                "truncated: the {} ends after {got} bytes, inside the {HEADER_SIZE}-byte NIfTI-1 header",
                self.what()
            )));
        }
        match validate_header(&raw) {
            Ok(v) => Ok(v),
            Err(msg) => {
                // A damaged deflate stream can inflate to a garbage header;
                // the CRC at the end tells which problem it really is.
                self.check_trailer()?;
                Err(self.err(msg))
            }
        }
    }
}

/// Reads a `.nii` or `.nii.gz` CT (gzip is recognised by its magic bytes).
pub fn read_ct(path: &Path) -> Result<CtVolume> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    read_ct_from(path, BufReader::with_capacity(1 << 20, file), file_len)
}

/// Reads a CT held in memory (`.nii` or `.nii.gz` bytes); `name` only
/// labels messages. The fuzzing entry point for the whole read path.
pub fn read_ct_bytes(name: &Path, bytes: &[u8]) -> Result<CtVolume> {
    read_ct_from(name, bytes, bytes.len() as u64)
}

/// Stored bytes decoded per step: the raw voxels never exist whole next to
/// their float32 copy.
const DECODE_CHUNK: usize = 1 << 20;
/// Deflate expands at most ~1032:1; a gzip file's claim is capped by that
/// before anything is reserved for it.
const MAX_DEFLATE_RATIO: u64 = 1032;

fn read_ct_from<'a>(path: &Path, buffered: impl BufRead + 'a, file_len: u64) -> Result<CtVolume> {
    let err = |msg: String| Error::nifti(path, msg);
    let mut stream = Stream::open(path, buffered)?;
    let (header, layout) = stream.header()?;
    let what = stream.what();
    let gz = stream.gz;
    let (affine, affine_source) = affine::best_affine(&header).map_err(err)?;

    let needed = layout.vox_offset + layout.data_bytes;
    if !gz && file_len < needed {
        return Err(err(format!(
            "truncated: the header needs {needed} bytes (voxels from offset {} plus {} × {} bytes) but the file has {file_len}",
            layout.vox_offset,
            layout.dims.iter().product::<usize>(),
            layout.scalar.size()
        )));
    }

    let skip = layout.vox_offset - HEADER_SIZE as u64;
    let skipped = std::io::copy(&mut (&mut stream.src).take(skip), &mut std::io::sink())
        .map_err(|e| stream.io_err(e))?;
    if skipped < skip {
        return Err(err(format!(
            "truncated: the {what} ends at byte {}, before the voxel data at offset {}",
            HEADER_SIZE as u64 + skipped,
            layout.vox_offset
        )));
    }

    // A .nii's claim was checked against its size above; a .nii.gz's is
    // capped by what its compressed size can expand to, and grows as bytes
    // arrive beyond that, so a truncated file costs only what it holds.
    let size = layout.scalar.size();
    let nvox = layout.data_bytes / size as u64;
    let reserve = if gz {
        nvox.min(file_len.saturating_mul(MAX_DEFLATE_RATIO) / size as u64)
    } else {
        nvox
    };
    let mut data: Vec<f32> = Vec::new();
    data.try_reserve_exact(reserve as usize).map_err(|_| {
        Error::Memory(format!(
            "{}: cannot allocate {:.2} GiB for {nvox} voxels as float32",
            path.display(),
            (reserve * 4) as f64 / GIB
        ))
    })?;
    let mut chunk = vec![0u8; DECODE_CHUNK / size * size];
    let mut remaining = layout.data_bytes;
    while remaining > 0 {
        let want = remaining.min(chunk.len() as u64) as usize;
        let got = read_full(&mut stream.src, &mut chunk[..want]).map_err(|e| stream.io_err(e))?;
        remaining -= got as u64;
        if got < want {
            return Err(err(format!(
                "truncated: the voxel data ends after {} of {} bytes",
                layout.data_bytes - remaining,
                layout.data_bytes
            )));
        }
        decode_into(&chunk[..got], &layout, &mut data);
    }
    drop(chunk);
    stream.check_trailer()?;

    let non_finite = data.iter().filter(|v| !v.is_finite()).count();
    Ok(CtVolume {
        path: path.to_path_buf(),
        dims: layout.dims,
        data,
        header,
        datatype: layout.scalar.nifti_type(),
        non_finite,
        affine,
        affine_source,
    })
}

const GIB: f64 = (1u64 << 30) as f64;

/// Reads until `buf` is full or the stream ends; returns the count.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn field_i16(raw: &[u8; HEADER_SIZE], off: usize, little: bool) -> i16 {
    let b = [raw[off], raw[off + 1]];
    if little {
        i16::from_le_bytes(b)
    } else {
        i16::from_be_bytes(b)
    }
}

/// The voxel types a CT may be stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    F32,
    I64,
    U64,
    F64,
}

impl Scalar {
    /// The type of datatype `code`; `Err` names an unsupported one.
    fn from_code(code: i16) -> Result<Scalar, String> {
        use Scalar::*;
        Ok(match code {
            2 => U8,
            256 => I8,
            4 => I16,
            512 => U16,
            8 => I32,
            768 => U32,
            16 => F32,
            1024 => I64,
            1280 => U64,
            64 => F64,
            32 | 1792 | 2048 => {
                return Err(format!(
                    "complex datatype (code {code}) is not supported for a CT"
                ))
            }
            128 | 2304 => {
                return Err(format!(
                    "RGB datatype (code {code}) is not supported for a CT"
                ))
            }
            1536 => return Err("float128 datatype (code 1536) is not supported".into()),
            1 => return Err("binary (1-bit) datatype (code 1) is not supported".into()),
            _ => return Err(format!("unknown datatype code {code}")),
        })
    }

    fn size(self) -> usize {
        use Scalar::*;
        match self {
            U8 | I8 => 1,
            I16 | U16 => 2,
            I32 | U32 | F32 => 4,
            I64 | U64 | F64 => 8,
        }
    }

    fn nifti_type(self) -> NiftiType {
        use Scalar::*;
        match self {
            U8 => NiftiType::Uint8,
            I8 => NiftiType::Int8,
            I16 => NiftiType::Int16,
            U16 => NiftiType::Uint16,
            I32 => NiftiType::Int32,
            U32 => NiftiType::Uint32,
            F32 => NiftiType::Float32,
            I64 => NiftiType::Int64,
            U64 => NiftiType::Uint64,
            F64 => NiftiType::Float64,
        }
    }
}

/// Checks every header field the voxel read depends on.
fn validate_header(raw: &[u8; HEADER_SIZE]) -> Result<(NiftiHeader, Layout), String> {
    let size_le = i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let size_be = i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let little = match (size_le, size_be) {
        (348, _) => true,
        (_, 348) => false,
        (540, _) | (_, 540) => {
            return Err("NIfTI-2 files (sizeof_hdr 540) are not supported; save as NIfTI-1".into())
        }
        _ => {
            return Err(format!(
                "sizeof_hdr is {size_le} (byte-swapped {size_be}), expected 348: not a NIfTI-1 file"
            ))
        }
    };
    let magic = &raw[344..348];
    if magic == b"ni1\0" {
        return Err("a two-file NIfTI (.hdr/.img, magic \"ni1\") is not supported; convert it to .nii or .nii.gz".into());
    }
    if magic != b"n+1\0" {
        return Err(format!(
            "bad magic {magic:?}, expected \"n+1\\0\": not a single-file NIfTI-1"
        ));
    }

    // dim[0] must be known sane before the crate parses: it also picks the
    // byte order from it.
    let ndim = field_i16(raw, 40, little);
    if !(1..=7).contains(&ndim) {
        return Err(format!(
            "dim[0] = {ndim} is not a valid number of dimensions (1 to 7)"
        ));
    }
    let ndim = ndim as usize;
    let dim: Vec<i16> = (0..=ndim)
        .map(|a| field_i16(raw, 40 + 2 * a, little))
        .collect();
    for (a, &d) in dim.iter().enumerate().skip(1) {
        if d <= 0 {
            return Err(format!(
                "dim[{a}] = {d}: every axis needs at least one voxel"
            ));
        }
    }
    let shape: Vec<i16> = dim[1..].to_vec();
    match ndim {
        1 | 2 => {
            return Err(format!(
                "the image is {ndim}-dimensional {shape:?}; a CT must be 3D"
            ))
        }
        3 => {}
        4 if dim[4] == 1 => {}
        4 => {
            return Err(format!(
                "4D image {shape:?} with {} volumes; only 3D (or 4D with one volume) is supported",
                dim[4]
            ))
        }
        n => {
            return Err(format!(
                "{n}-dimensional image {shape:?}; only 3D is supported"
            ))
        }
    }

    let header = NiftiHeader::from_reader(&raw[..]).map_err(|e| format!("header: {e}"))?;
    let expect = if little {
        Endianness::Little
    } else {
        Endianness::Big
    };
    if header.endianness != expect {
        return Err(format!(
            "inconsistent byte order: sizeof_hdr says {expect:?}, dim[0] says otherwise"
        ));
    }

    let dims = [dim[1] as usize, dim[2] as usize, dim[3] as usize];
    let nvox = dims.iter().map(|&d| d as u64).product::<u64>();
    if nvox > MAX_VOXELS {
        return Err(format!(
            "header claims {}×{}×{} = {nvox} voxels, more than the limit of {MAX_VOXELS}",
            dims[0], dims[1], dims[2]
        ));
    }

    let scalar = Scalar::from_code(header.datatype)?;

    let off = header.vox_offset;
    if !off.is_finite() || off.fract() != 0.0 || (off as f64) < MIN_VOX_OFFSET as f64 || off > 1e9 {
        return Err(format!(
            "vox_offset {off} is invalid: a single-file NIfTI-1 stores voxels at a whole byte offset of at least {MIN_VOX_OFFSET}"
        ));
    }

    // nibabel: a zero or non-finite slope means "no scaling"; a usable slope
    // with a non-finite intercept is an error.
    let slope = f64::from(header.scl_slope);
    let inter = f64::from(header.scl_inter);
    let scaling = if slope == 0.0 || !slope.is_finite() {
        None
    } else if !inter.is_finite() {
        return Err(format!("scl_slope is {slope} but scl_inter is {inter}"));
    } else if slope == 1.0 && inter == 0.0 {
        None
    } else {
        Some((slope, inter))
    };

    Ok((
        header,
        Layout {
            dims,
            scalar,
            little_endian: little,
            vox_offset: off as u64,
            data_bytes: nvox * scalar.size() as u64,
            scaling,
        },
    ))
}

/// Raw voxels → float32. Scaling is done in float64 and then rounded, as
/// nibabel's `get_fdata()` followed by a cast to float32.
fn decode_into(bytes: &[u8], l: &Layout, out: &mut Vec<f32>) {
    macro_rules! decode {
        ($t:ty, $n:expr) => {{
            let conv = |c: &[u8]| -> f64 {
                let mut b = [0u8; $n];
                b.copy_from_slice(c);
                (if l.little_endian {
                    <$t>::from_le_bytes(b)
                } else {
                    <$t>::from_be_bytes(b)
                }) as f64
            };
            match l.scaling {
                Some((s, i)) => {
                    out.extend(bytes.chunks_exact($n).map(|c| (conv(c) * s + i) as f32))
                }
                None => out.extend(bytes.chunks_exact($n).map(|c| conv(c) as f32)),
            }
        }};
    }
    match l.scalar {
        Scalar::U8 => decode!(u8, 1),
        Scalar::I8 => decode!(i8, 1),
        Scalar::I16 => decode!(i16, 2),
        Scalar::U16 => decode!(u16, 2),
        Scalar::I32 => decode!(i32, 4),
        Scalar::U32 => decode!(u32, 4),
        Scalar::F32 => decode!(f32, 4),
        Scalar::I64 => decode!(i64, 8),
        Scalar::U64 => decode!(u64, 8),
        Scalar::F64 => decode!(f64, 8),
    }
}
