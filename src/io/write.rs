//! Writing masks and probabilities in the exact geometry of the input CT.
//!
//! The header is the CT's with only what must differ changed: datatype,
//! number of axes, scaling (reset to identity: the CT's slope would turn
//! label 1 into e.g. −1023), intensity window and description. Files are
//! written to a temporary name in the target folder and renamed on success,
//! so an interrupted or failed write never leaves a partial file or clobbers
//! an existing one.

use std::io::{BufWriter, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use nifti::{Endianness, NiftiHeader};

use super::nifti::{CtVolume, HEADER_SIZE, MIN_VOX_OFFSET};
use crate::error::{Error, Result};
use crate::tempfiles::TempFile;

/// A voxel type a label map can be written in.
pub trait LabelVoxel: Copy {
    /// NIfTI datatype code.
    const DATATYPE: i16;
    const BYTES: usize;
    fn put_le(self, out: &mut Vec<u8>);
    fn as_f32(self) -> f32;
}

impl LabelVoxel for u8 {
    const DATATYPE: i16 = 2;
    const BYTES: usize = 1;
    fn put_le(self, out: &mut Vec<u8>) {
        out.push(self);
    }
    fn as_f32(self) -> f32 {
        f32::from(self)
    }
}

impl LabelVoxel for u16 {
    const DATATYPE: i16 = 512;
    const BYTES: usize = 2;
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn as_f32(self) -> f32 {
        f32::from(self)
    }
}

const FLOAT32: i16 = 16;
const CHUNK: usize = 1 << 16;

/// Writes a label map (uint8 or uint16) shaped and placed like `like`.
/// `labels` is in file order (i fastest), one value per CT voxel.
pub fn write_label_map<T: LabelVoxel>(path: &Path, like: &CtVolume, labels: &[T]) -> Result<()> {
    let h = label_map_header(path, like, labels)?;
    write_atomic(path, like, Compression::default(), |w| {
        put_label_map(w, &h, labels)
    })
}

/// The bytes [`write_label_map`] would write (`.nii.gz` when `gzip`, else
/// `.nii`), in memory, for a server's reply; `name` only labels errors.
pub fn label_map_bytes<T: LabelVoxel>(
    name: &Path,
    like: &CtVolume,
    labels: &[T],
    gzip: bool,
) -> Result<Vec<u8>> {
    let h = label_map_header(name, like, labels)?;
    let io_err = |e| Error::io(name, e);
    if gzip {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        put_label_map(&mut enc, &h, labels).map_err(io_err)?;
        enc.finish().map_err(io_err)
    } else {
        let mut out = Vec::new();
        put_label_map(&mut out, &h, labels).map_err(io_err)?;
        Ok(out)
    }
}

fn label_map_header<T: LabelVoxel>(
    path: &Path,
    like: &CtVolume,
    labels: &[T],
) -> Result<NiftiHeader> {
    check_len(path, like, labels.len(), "label map")?;
    let max = labels.iter().map(|v| v.as_f32()).fold(0.0f32, f32::max);
    let mut h = output_header(
        like,
        None,
        T::DATATYPE,
        (T::BYTES * 8) as i16,
        "segvol label map",
    )?;
    h.cal_min = 0.0;
    h.cal_max = max;
    Ok(h)
}

/// Header, extension flag and voxels, in file order.
fn put_label_map<T: LabelVoxel>(
    w: &mut dyn Write,
    h: &NiftiHeader,
    labels: &[T],
) -> std::io::Result<()> {
    w.write_all(&encode_header(h))?;
    w.write_all(&[0u8; 4])?;
    let mut buf = Vec::with_capacity(CHUNK * T::BYTES);
    for chunk in labels.chunks(CHUNK) {
        buf.clear();
        for &v in chunk {
            v.put_le(&mut buf);
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

/// Writes K float32 volumes as one 4D image (i, j, k, K) placed like `like`.
pub fn write_probabilities<C: AsRef<[f32]>>(
    path: &Path,
    like: &CtVolume,
    channels: &[C],
) -> Result<()> {
    if channels.is_empty() {
        return Err(Error::nifti(path, "no probability channels to write"));
    }
    if channels.len() > i16::MAX as usize {
        return Err(Error::nifti(
            path,
            format!(
                "{} channels do not fit a NIfTI-1 axis (at most {})",
                channels.len(),
                i16::MAX
            ),
        ));
    }
    for (c, ch) in channels.iter().enumerate() {
        check_len(
            path,
            like,
            ch.as_ref().len(),
            &format!("probability channel {c}"),
        )?;
    }
    let mut h = output_header(
        like,
        Some(channels.len()),
        FLOAT32,
        32,
        "segvol probabilities",
    )?;
    h.cal_min = 0.0;
    h.cal_max = 1.0;
    // Float noise compresses poorly; the fast level costs little in size.
    write_atomic(path, like, Compression::fast(), |w| {
        w.write_all(&encode_header(&h))?;
        w.write_all(&[0u8; 4])?;
        let mut buf = Vec::with_capacity(CHUNK * 4);
        for ch in channels {
            for chunk in ch.as_ref().chunks(CHUNK) {
                buf.clear();
                for v in chunk {
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                w.write_all(&buf)?;
            }
        }
        Ok(())
    })
}

fn check_len(path: &Path, like: &CtVolume, len: usize, what: &str) -> Result<()> {
    let want = like.dims.iter().product::<usize>();
    if len != want {
        return Err(Error::nifti(
            path,
            format!(
                "{what} has {len} voxels but the CT {} is {}×{}×{} = {want}",
                like.path.display(),
                like.dims[0],
                like.dims[1],
                like.dims[2]
            ),
        ));
    }
    Ok(())
}

/// The CT's header with the fields of a derived image.
fn output_header(
    like: &CtVolume,
    channels: Option<usize>,
    datatype: i16,
    bitpix: i16,
    descrip: &str,
) -> Result<NiftiHeader> {
    let src = &like.header;
    let [di, dj, dk] = like.dims.map(|d| d as u16);
    let dim = match channels {
        None => [3, di, dj, dk, 1, 1, 1, 1],
        Some(c) => [4, di, dj, dk, c as u16, 1, 1, 1],
    };
    let mut pixdim = src.pixdim;
    if channels.is_some() && !(pixdim[4].is_finite() && pixdim[4] > 0.0) {
        pixdim[4] = 1.0;
    }
    let mut descrip_bytes = descrip.as_bytes().to_vec();
    descrip_bytes.resize(80, 0);
    Ok(NiftiHeader {
        sizeof_hdr: HEADER_SIZE as i32,
        data_type: [0; 10],
        db_name: [0; 18],
        extents: 0,
        session_error: 0,
        regular: b'r',
        dim_info: src.dim_info,
        dim,
        intent_p1: 0.0,
        intent_p2: 0.0,
        intent_p3: 0.0,
        intent_code: 0,
        datatype,
        bitpix,
        slice_start: src.slice_start,
        pixdim,
        vox_offset: MIN_VOX_OFFSET as f32,
        scl_slope: 1.0,
        scl_inter: 0.0,
        slice_end: src.slice_end,
        slice_code: src.slice_code,
        xyzt_units: src.xyzt_units,
        cal_max: 0.0,
        cal_min: 0.0,
        slice_duration: src.slice_duration,
        toffset: src.toffset,
        glmax: 0,
        glmin: 0,
        descrip: descrip_bytes,
        aux_file: [0; 24],
        qform_code: src.qform_code,
        sform_code: src.sform_code,
        quatern_b: src.quatern_b,
        quatern_c: src.quatern_c,
        quatern_d: src.quatern_d,
        quatern_x: src.quatern_x,
        quatern_y: src.quatern_y,
        quatern_z: src.quatern_z,
        srow_x: src.srow_x,
        srow_y: src.srow_y,
        srow_z: src.srow_z,
        intent_name: [0; 16],
        magic: *b"n+1\0",
        endianness: Endianness::Little,
    })
}

/// The 348-byte little-endian NIfTI-1 header.
pub fn encode_header(h: &NiftiHeader) -> [u8; HEADER_SIZE] {
    let mut b = [0u8; HEADER_SIZE];
    let mut put = |off: usize, bytes: &[u8]| b[off..off + bytes.len()].copy_from_slice(bytes);
    put(0, &h.sizeof_hdr.to_le_bytes());
    put(4, &h.data_type);
    put(14, &h.db_name);
    put(32, &h.extents.to_le_bytes());
    put(36, &h.session_error.to_le_bytes());
    put(38, &[h.regular, h.dim_info]);
    for (a, d) in h.dim.iter().enumerate() {
        put(40 + 2 * a, &d.to_le_bytes());
    }
    put(56, &h.intent_p1.to_le_bytes());
    put(60, &h.intent_p2.to_le_bytes());
    put(64, &h.intent_p3.to_le_bytes());
    put(68, &h.intent_code.to_le_bytes());
    put(70, &h.datatype.to_le_bytes());
    put(72, &h.bitpix.to_le_bytes());
    put(74, &h.slice_start.to_le_bytes());
    for (a, p) in h.pixdim.iter().enumerate() {
        put(76 + 4 * a, &p.to_le_bytes());
    }
    put(108, &h.vox_offset.to_le_bytes());
    put(112, &h.scl_slope.to_le_bytes());
    put(116, &h.scl_inter.to_le_bytes());
    put(120, &h.slice_end.to_le_bytes());
    put(122, &[h.slice_code, h.xyzt_units]);
    put(124, &h.cal_max.to_le_bytes());
    put(128, &h.cal_min.to_le_bytes());
    put(132, &h.slice_duration.to_le_bytes());
    put(136, &h.toffset.to_le_bytes());
    put(140, &h.glmax.to_le_bytes());
    put(144, &h.glmin.to_le_bytes());
    let n = h.descrip.len().min(80);
    put(148, &h.descrip[..n]);
    put(228, &h.aux_file);
    put(252, &h.qform_code.to_le_bytes());
    put(254, &h.sform_code.to_le_bytes());
    let quat = [
        h.quatern_b,
        h.quatern_c,
        h.quatern_d,
        h.quatern_x,
        h.quatern_y,
        h.quatern_z,
    ];
    for (a, q) in quat.iter().enumerate() {
        put(256 + 4 * a, &q.to_le_bytes());
    }
    for (r, row) in [h.srow_x, h.srow_y, h.srow_z].iter().enumerate() {
        for (a, v) in row.iter().enumerate() {
            put(280 + 16 * r + 4 * a, &v.to_le_bytes());
        }
    }
    put(328, &h.intent_name);
    put(344, &h.magic);
    b
}

/// `.nii.gz` → gzip, `.nii` → plain; anything else is refused so the
/// format is never guessed wrong.
fn wants_gzip(path: &Path) -> Result<bool> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.ends_with(".nii.gz") {
        Ok(true)
    } else if name.ends_with(".nii") {
        Ok(false)
    } else {
        Err(Error::nifti(
            path,
            "output file name must end in .nii or .nii.gz",
        ))
    }
}

/// Checks an output path before any work is done: a `.nii` / `.nii.gz`
/// name, in an existing folder, that is not the input CT. Returns whether
/// the output is gzipped.
pub fn check_output_path(path: &Path, input: &Path) -> Result<bool> {
    let gz = wants_gzip(path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::nifti(
            path,
            format!("the output folder {} does not exist", dir.display()),
        ));
    }
    if path.is_dir() {
        return Err(Error::nifti(path, "the output path is a folder"));
    }
    if let (Ok(a), Ok(b)) = (path.canonicalize(), input.canonicalize()) {
        if a == b {
            return Err(Error::nifti(
                path,
                "refusing to overwrite the input CT with an output",
            ));
        }
    }
    Ok(gz)
}

/// Writes `bytes` to `path` through a registered temporary file renamed
/// into place, so a failed or interrupted run never leaves half a file
/// (sidecars, PNGs, JSON summaries).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let (tmp, mut file) = TempFile::create_for(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::io(tmp.path(), e))?;
    drop(file);
    tmp.commit(path).map_err(|e| Error::io(path, e))
}

fn write_atomic(
    path: &Path,
    like: &CtVolume,
    level: Compression,
    body: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let gz = check_output_path(path, &like.path)?;
    let (tmp, file) = TempFile::create_for(path).map_err(|e| Error::io(path, e))?;
    let io_err = |e: std::io::Error| Error::io(path, e);
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let file = if gz {
        let mut enc = GzEncoder::new(out, level);
        body(&mut enc).map_err(io_err)?;
        out = enc.finish().map_err(io_err)?;
        out.into_inner().map_err(|e| io_err(e.into_error()))?
    } else {
        body(&mut out).map_err(io_err)?;
        out.into_inner().map_err(|e| io_err(e.into_error()))?
    };
    file.sync_all().map_err(io_err)?;
    drop(file);
    tmp.commit(path).map_err(io_err)
}
