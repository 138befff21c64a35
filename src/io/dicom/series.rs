//! Finding the files of one CT series: headers read up to the pixel data,
//! grouped by SeriesInstanceUID, one series chosen, its slices checked and
//! sorted (`geometry.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use super::geometry;
use crate::error::{Error, Result};
use crate::io::affine::Affine;
use crate::io::nifti::MAX_VOXELS;

/// More files than this in one input folder is refused rather than scanned.
const MAX_FILES: usize = 100_000;

/// One slice's header, as far as the volume needs it.
#[derive(Debug, Clone)]
pub struct SliceHeader {
    pub path: PathBuf,
    pub series_uid: String,
    pub series_description: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub instance_number: Option<i64>,
    pub rows: usize,
    pub columns: usize,
    pub pixel_spacing: Option<[f64; 2]>,
    pub orientation: Option<Vec<f64>>,
    pub position: Option<[f64; 3]>,
    pub slice_thickness: Option<f64>,
    pub spacing_between_slices: Option<f64>,
    pub slope: f64,
    pub intercept: f64,
    pub frames: u32,
    pub samples_per_pixel: u16,
}

impl SliceHeader {
    /// "file NAME (instance N)", for messages.
    pub fn label(&self) -> String {
        let file = self
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string());
        match self.instance_number {
            Some(n) => format!("{file} (instance {n})"),
            None => file,
        }
    }
}

/// The chosen series, sorted and checked, with its geometry.
#[derive(Debug, Clone)]
pub struct Series {
    /// What the user named (a folder or the first file), for messages.
    pub source: PathBuf,
    /// Slices in volume order (k ascending).
    pub slices: Vec<SliceHeader>,
    pub rows: usize,
    pub columns: usize,
    pub affine: Affine,
    /// Spacing between rows and between columns, and between slices (mm).
    pub pixel_spacing: [f64; 2],
    pub slice_spacing: f64,
    /// Row and column direction cosines (ImageOrientationPatient, LPS).
    pub orientation: [f64; 6],
}

impl Series {
    /// Voxel counts along (i, j, k) = (columns, rows, slices).
    pub fn dims(&self) -> [usize; 3] {
        [self.columns, self.rows, self.slices.len()]
    }
}

fn err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Dicom {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Whether a file starts like a DICOM Part 10 file ("DICM" after the
/// 128-byte preamble).
pub fn has_dicom_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    match std::fs::File::open(path) {
        Ok(mut f) => f.read_exact(&mut head).is_ok() && &head[128..] == b"DICM",
        Err(_) => false,
    }
}

/// The DICOM files a folder holds (recursively; other files are skipped),
/// sorted by path.
pub fn list_folder(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let p = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            // Subfolders are followed only when they are real folders, so a
            // symbolic link cycle cannot make the scan endless.
            let real_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if real_dir {
                stack.push(p);
            } else if p.is_file() && has_dicom_magic(&p) {
                out.push(p);
                if out.len() > MAX_FILES {
                    return Err(err(
                        dir,
                        format!("more than {MAX_FILES} DICOM files: not one CT series"),
                    ));
                }
            }
        }
    }
    if out.is_empty() {
        return Err(err(
            dir,
            "no DICOM files in this folder (none starts with the DICM marker)",
        ));
    }
    out.sort();
    Ok(out)
}

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok()??;
    let s = e.to_str().ok()?;
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

fn floats(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    let e = obj.element_opt(tag).ok()??;
    e.to_multi_float64().ok().filter(|v| !v.is_empty())
}

fn float(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    floats(obj, tag).and_then(|v| v.first().copied())
}

fn int(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.element_opt(tag).ok()??.to_int::<i64>().ok()
}

/// Reads one file's header (everything before the pixel data).
pub fn read_header(path: &Path) -> Result<SliceHeader> {
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| err(path, format!("not a readable DICOM file: {e}")))?;
    header_of(path, &obj)
}

pub fn header_of(path: &Path, obj: &DefaultDicomObject) -> Result<SliceHeader> {
    let missing = |name: &str| err(path, format!("missing tag {name}"));
    // Anonymisers sometimes blank the UIDs; files without a series UID are
    // taken as one series, and the file meta's SOP UIDs stand in.
    let series_uid = text(obj, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    let meta = obj.meta();
    let meta_uid = |s: &str| s.trim_end_matches('\0').trim().to_string();
    let dim = |tag, name: &str| -> Result<usize> {
        match int(obj, tag) {
            Some(v) if v > 0 && v <= i16::MAX as i64 => Ok(v as usize),
            Some(v) => Err(err(path, format!("{name} is {v}"))),
            None => Err(missing(name)),
        }
    };
    // A header read stops before the pixel data; whether it is there is
    // checked when the slice is decoded. Rows 0 marks a file with no image
    // (a report, a presentation state), refused only if its series is chosen.
    let (rows, columns) = if obj.element_opt(tags::ROWS).ok().flatten().is_some() {
        (
            dim(tags::ROWS, "Rows (0028,0010)")?,
            dim(tags::COLUMNS, "Columns (0028,0011)")?,
        )
    } else {
        (0, 0)
    };
    let vec3 = |v: Vec<f64>| -> Option<[f64; 3]> {
        (v.len() == 3 && v.iter().all(|x| x.is_finite())).then(|| [v[0], v[1], v[2]])
    };
    let pixel_spacing = floats(obj, tags::PIXEL_SPACING)
        .filter(|v| v.len() == 2 && v.iter().all(|x| x.is_finite() && *x > 0.0))
        .map(|v| [v[0], v[1]]);
    Ok(SliceHeader {
        path: path.to_path_buf(),
        series_description: text(obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        sop_instance_uid: text(obj, tags::SOP_INSTANCE_UID)
            .unwrap_or_else(|| meta_uid(&meta.media_storage_sop_instance_uid)),
        sop_class_uid: text(obj, tags::SOP_CLASS_UID)
            .unwrap_or_else(|| meta_uid(&meta.media_storage_sop_class_uid)),
        instance_number: int(obj, tags::INSTANCE_NUMBER),
        rows,
        columns,
        pixel_spacing,
        orientation: floats(obj, tags::IMAGE_ORIENTATION_PATIENT),
        position: floats(obj, tags::IMAGE_POSITION_PATIENT).and_then(vec3),
        slice_thickness: float(obj, tags::SLICE_THICKNESS).filter(|v| *v > 0.0),
        spacing_between_slices: float(obj, tags::SPACING_BETWEEN_SLICES).filter(|v| *v > 0.0),
        slope: float(obj, tags::RESCALE_SLOPE).unwrap_or(1.0),
        intercept: float(obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0),
        frames: int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(0) as u32,
        samples_per_pixel: int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u16,
        series_uid,
    })
}

/// Reads the headers of `inputs` (one folder, or DICOM files), keeps the
/// series `want` (or the only one), and checks and sorts its slices.
pub fn open_series(inputs: &[PathBuf], want: Option<&str>) -> Result<Series> {
    let (source, files) = match inputs {
        [one] if one.is_dir() => (one.clone(), list_folder(one)?),
        [] => return Err(Error::Invalid("no DICOM input given".into())),
        many => {
            if let Some(d) = many.iter().find(|p| p.is_dir()) {
                return Err(err(
                    d,
                    "a DICOM folder must be the only input of a series; give either one folder or its files",
                ));
            }
            (many[0].clone(), many.to_vec())
        }
    };
    let mut by_series: BTreeMap<String, Vec<SliceHeader>> = BTreeMap::new();
    for f in &files {
        let h = read_header(f)?;
        by_series.entry(h.series_uid.clone()).or_default().push(h);
    }
    let slices = match want {
        Some(uid) => by_series.remove(uid).ok_or_else(|| {
            err(
                &source,
                format!(
                    "no series {uid} here; the series are: {}",
                    list_series(&by_series)
                ),
            )
        })?,
        None if by_series.len() == 1 => by_series.into_values().next().expect("one series"),
        None => {
            return Err(err(
                &source,
                format!(
                    "{} series here; choose one with --series UID: {}",
                    by_series.len(),
                    list_series(&by_series)
                ),
            ))
        }
    };
    check_series(source, slices)
}

/// "UID (description, N slices); ..." for the refusal messages.
fn list_series(by_series: &BTreeMap<String, Vec<SliceHeader>>) -> String {
    by_series
        .iter()
        .map(|(uid, s)| {
            let desc = &s[0].series_description;
            let desc = if desc.is_empty() {
                "no description"
            } else {
                desc
            };
            let uid = if uid.is_empty() {
                "(no SeriesInstanceUID)"
            } else {
                uid
            };
            format!("{uid} ({desc}, {} files)", s.len())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn check_series(source: PathBuf, slices: Vec<SliceHeader>) -> Result<Series> {
    let first = &slices[0];
    let at = |s: &SliceHeader, msg: String| err(&s.path, msg);
    for s in &slices {
        if s.rows == 0 {
            return Err(at(
                s,
                "no image in this file (no Rows/Columns): not a CT slice".into(),
            ));
        }
        if s.frames > 1 {
            return Err(at(
                s,
                format!(
                    "a multi-frame image ({} frames); only single-frame CT series are read",
                    s.frames
                ),
            ));
        }
        if s.samples_per_pixel != 1 {
            return Err(at(
                s,
                format!(
                    "{} samples per pixel: not a grayscale CT image",
                    s.samples_per_pixel
                ),
            ));
        }
        if (s.rows, s.columns) != (first.rows, first.columns) {
            return Err(at(
                s,
                format!(
                    "mixed slice sizes in one series: {} is {}×{} but {} is {}×{} (rows×columns)",
                    s.label(),
                    s.rows,
                    s.columns,
                    first.label(),
                    first.rows,
                    first.columns
                ),
            ));
        }
        if s.position.is_none() {
            return Err(at(
                s,
                "missing tag ImagePositionPatient (0020,0032): the slice cannot be placed".into(),
            ));
        }
        if s.orientation.is_none() {
            return Err(at(
                s,
                "missing tag ImageOrientationPatient (0020,0037): the slice cannot be placed"
                    .into(),
            ));
        }
        if s.pixel_spacing.is_none() {
            return Err(at(
                s,
                "missing or invalid tag PixelSpacing (0028,0030): the voxel size is unknown".into(),
            ));
        }
        if !s.slope.is_finite() || !s.intercept.is_finite() {
            return Err(at(
                s,
                format!(
                    "RescaleSlope {} / RescaleIntercept {} are not finite",
                    s.slope, s.intercept
                ),
            ));
        }
    }
    let iop = first.orientation.clone().expect("checked");
    let (x, y) = geometry::orientation(&iop).map_err(|m| at(first, m))?;
    let spacing = first.pixel_spacing.expect("checked");
    for s in &slices[1..] {
        if !geometry::same_orientation(s.orientation.as_deref().expect("checked"), &iop) {
            return Err(at(
                s,
                format!(
                    "ImageOrientationPatient differs between {} and {}: not one stack of parallel slices",
                    s.label(),
                    first.label()
                ),
            ));
        }
        let ps = s.pixel_spacing.expect("checked");
        if (ps[0] - spacing[0]).abs() > 1e-4 || (ps[1] - spacing[1]).abs() > 1e-4 {
            return Err(at(
                s,
                format!(
                    "PixelSpacing differs between {} ({ps:?}) and {} ({spacing:?})",
                    s.label(),
                    first.label()
                ),
            ));
        }
    }
    let nvox = (first.rows * first.columns) as u64 * slices.len() as u64;
    if nvox > MAX_VOXELS {
        return Err(err(
            &source,
            format!("{nvox} voxels exceed the limit of {MAX_VOXELS}"),
        ));
    }
    if slices.len() > i16::MAX as usize {
        return Err(err(
            &source,
            format!("{} slices exceed the limit of {}", slices.len(), i16::MAX),
        ));
    }
    let positions: Vec<[f64; 3]> = slices
        .iter()
        .map(|s| s.position.expect("checked"))
        .collect();
    let (order, step) = geometry::sort_slices(&positions, x, y, &|i| slices[i].label())
        .map_err(|m| err(&source, m))?;
    let n = geometry::cross(x, y);
    let step = step.unwrap_or_else(|| {
        // One slice: its thickness is all there is to go on, as for
        // converters.
        let t = first
            .spacing_between_slices
            .or(first.slice_thickness)
            .unwrap_or(1.0);
        n.map(|v| v * t)
    });
    let slice_spacing = geometry::dot(step, step).sqrt();
    let first_pos = positions[order[0]];
    let affine = geometry::ras_affine(first_pos, x, y, spacing, first.rows, step);
    let (rows, columns) = (first.rows, first.columns);
    let mut slots: Vec<Option<SliceHeader>> = slices.into_iter().map(Some).collect();
    let slices: Vec<SliceHeader> = order
        .iter()
        .map(|&i| slots[i].take().expect("each index once"))
        .collect();
    Ok(Series {
        source,
        slices,
        rows,
        columns,
        affine,
        pixel_spacing: spacing,
        slice_spacing,
        orientation: [iop[0], iop[1], iop[2], iop[3], iop[4], iop[5]],
    })
}
