//! Decoding one slice's pixel data (any transfer syntax the enabled
//! dicom-pixeldata codecs read) into Hounsfield units, rows stored
//! bottom-up as the volume wants them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::open_file;
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};

use super::series::SliceHeader;
use crate::error::{Error, Result};

fn err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Dicom {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// An error and its causes on one line: the codecs' messages are nested.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !msg.contains(&m) {
            msg.push_str(": ");
            msg.push_str(&m);
        }
        src = s.source();
    }
    msg
}

/// Decodes `slice` into `out` (rows × columns, i fastest, DICOM row
/// `rows − 1 − j` in row j), applying its rescale slope and intercept.
pub fn decode_slice(slice: &SliceHeader, out: &mut [f32]) -> Result<()> {
    let path = &slice.path;
    let obj = open_file(path)
        .map_err(|e| err(path, format!("truncated or unreadable file: {}", chain(&e))))?;
    let Some(pixel_data) = obj.element_opt(tags::PIXEL_DATA).ok().flatten() else {
        return Err(err(path, "missing tag PixelData (7FE0,0010): no image"));
    };
    // Native (uncompressed) pixel data is checked against the size the
    // header announces; encapsulated data is checked after decoding.
    if let Some(p) = pixel_data.value().primitive() {
        let bits = obj
            .element_opt(tags::BITS_ALLOCATED)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<usize>().ok())
            .unwrap_or(16);
        let need = (slice.rows * slice.columns * bits).div_ceil(8);
        let have = p.calculate_byte_len();
        if have < need {
            return Err(err(
                path,
                format!(
                    "truncated pixel data: {have} bytes where Rows × Columns × BitsAllocated = {} × {} × {bits} needs {need}",
                    slice.rows, slice.columns
                ),
            ));
        }
    }
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    // A codec that trips over corrupt data must not take the process down.
    let raw: std::result::Result<Vec<f64>, String> = catch_unwind(AssertUnwindSafe(|| {
        let decoded = obj.decode_pixel_data().map_err(|e| chain(&e))?;
        let opts = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
        decoded
            .to_vec_frame_with_options::<f64>(0, &opts)
            .map_err(|e| chain(&e))
    }))
    .unwrap_or_else(|_| Err("the pixel data decoder failed on this data".into()));
    let raw = raw.map_err(|m| {
        err(
            path,
            format!("cannot decode the pixel data (transfer syntax {ts}): {m}"),
        )
    })?;
    let (rows, cols) = (slice.rows, slice.columns);
    if raw.len() != rows * cols {
        return Err(err(
            path,
            format!(
                "truncated pixel data: {} pixels decoded where Rows × Columns = {rows} × {cols} = {}",
                raw.len(),
                rows * cols
            ),
        ));
    }
    let (slope, inter) = (slice.slope, slice.intercept);
    for (j, row) in out.chunks_exact_mut(cols).enumerate() {
        let src = &raw[(rows - 1 - j) * cols..(rows - j) * cols];
        for (o, &v) in row.iter_mut().zip(src) {
            *o = (v * slope + inter) as f32;
        }
    }
    Ok(())
}
