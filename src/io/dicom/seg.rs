//! DICOM Segmentation (SEG) output for a segmentation of a DICOM series: a
//! BINARY multi-frame Segmentation instance, one segment per category, one
//! frame per source slice and segment, each frame referencing its source
//! image and carrying its plane position, as highdicom and viewers read it.
//!
//! Patient, study and frame-of-reference attributes are copied from the
//! source series, so the SEG files with it; a series whose UIDs were blanked
//! (anonymised) cannot be referenced and is refused.

use std::hash::{BuildHasher, Hasher};
use std::io::BufWriter;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use dicom_core::smallvec::SmallVec;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};

use super::DicomSeries;
use crate::error::{Error, Result};
use crate::tempfiles::TempFile;

type Obj = InMemDicomObject;

fn err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Dicom {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Checks, before any work, that a SEG can be written to `path` for
/// `series`: a `.dcm` name in an existing folder, and a source series with
/// the UIDs a SEG must reference.
pub fn check_seg_output(path: &Path, series: &DicomSeries) -> Result<()> {
    let ext_ok = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
    if !ext_ok {
        return Err(err(path, "a DICOM-SEG output needs a .dcm name"));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(err(
            path,
            format!("the output folder {} does not exist", dir.display()),
        ));
    }
    if series.series.slices.iter().any(|s| s.path == path) {
        return Err(err(
            path,
            "refusing to overwrite a source slice with the DICOM-SEG",
        ));
    }
    source_references(series).map(|_| ())
}

/// Study, series and frame-of-reference UIDs of the source, all required.
fn source_references(series: &DicomSeries) -> Result<Obj> {
    let s = &series.series;
    let first = &s.slices[0];
    let head = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(&first.path)
        .map_err(|e| err(&first.path, format!("not a readable DICOM file: {e}")))?;
    let mut out = Obj::new_empty();
    let nonempty = |tag: Tag| {
        head.element_opt(tag)
            .ok()
            .flatten()
            .filter(|e| {
                e.to_str()
                    .is_ok_and(|v| !v.trim_end_matches('\0').trim().is_empty())
            })
            .cloned()
    };
    for (tag, name) in [
        (tags::STUDY_INSTANCE_UID, "StudyInstanceUID"),
        (tags::FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID"),
    ] {
        let e = nonempty(tag).ok_or_else(|| {
            err(
                &first.path,
                format!(
                    "cannot write a DICOM-SEG: the source has no {name} to reference (anonymised?)"
                ),
            )
        })?;
        out.put(e);
    }
    if first.series_uid.is_empty() {
        return Err(err(
            &first.path,
            "cannot write a DICOM-SEG: the source has no SeriesInstanceUID to reference (anonymised?)",
        ));
    }
    if let Some(bad) = s
        .slices
        .iter()
        .find(|sl| sl.sop_instance_uid.is_empty() || sl.sop_class_uid.is_empty())
    {
        return Err(err(
            &bad.path,
            "cannot write a DICOM-SEG: this slice has no SOP Class/Instance UID to reference",
        ));
    }
    // Patient and study attributes: copied when present, empty otherwise
    // (type 2: present, possibly empty).
    for (tag, vr) in [
        (tags::SPECIFIC_CHARACTER_SET, None),
        (tags::PATIENT_NAME, Some(VR::PN)),
        (tags::PATIENT_ID, Some(VR::LO)),
        (tags::PATIENT_BIRTH_DATE, Some(VR::DA)),
        (tags::PATIENT_SEX, Some(VR::CS)),
        (tags::STUDY_DATE, Some(VR::DA)),
        (tags::STUDY_TIME, Some(VR::TM)),
        (tags::REFERRING_PHYSICIAN_NAME, Some(VR::PN)),
        (tags::STUDY_ID, Some(VR::SH)),
        (tags::ACCESSION_NUMBER, Some(VR::SH)),
        (tags::STUDY_DESCRIPTION, None),
        (tags::POSITION_REFERENCE_INDICATOR, Some(VR::LO)),
    ] {
        match head.element_opt(tag).ok().flatten() {
            Some(e) => {
                out.put(e.clone());
            }
            None => {
                if let Some(vr) = vr {
                    out.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
                }
            }
        }
    }
    Ok(out)
}

fn put_str(o: &mut Obj, tag: Tag, vr: VR, v: &str) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

fn put_seq(o: &mut Obj, tag: Tag, items: Vec<Obj>) {
    o.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

fn put_u16(o: &mut Obj, tag: Tag, v: u16) {
    o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
}

fn code(value: &str, scheme: &str, meaning: &str) -> Obj {
    let mut c = Obj::new_empty();
    put_str(&mut c, tags::CODE_VALUE, VR::SH, value);
    put_str(&mut c, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    put_str(&mut c, tags::CODE_MEANING, VR::LO, meaning);
    c
}

/// A decimal string of at most 16 characters (the DS limit), as precise as
/// fits.
fn ds(v: f64) -> String {
    for p in (0..=10).rev() {
        let mut s = format!("{v:.p$}");
        if s.contains('.') {
            s = s.trim_end_matches('0').trim_end_matches('.').to_string();
        }
        if s == "-0" {
            s = "0".into();
        }
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.3e}")
}

fn ds_multi(v: &[f64]) -> String {
    v.iter().map(|&x| ds(x)).collect::<Vec<_>>().join("\\")
}

/// A fresh UID under the UUID-derived root 2.25 (ITU-T X.667): 128 random
/// bits from the standard library's randomly keyed hasher.
fn new_uid() -> String {
    let mut bits = 0u128;
    for half in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        h.write_u8(half);
        bits = (bits << 64) | u128::from(h.finish());
    }
    format!("2.25.{bits}")
}

/// Today's date and time (UTC) as DICOM DA and TM strings.
fn now_da_tm() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60),
    )
}

/// Writes the label map `labels` (the series' volume order: i fastest, one
/// value per voxel, 0 background, `c + 1` for category `c`) as a BINARY
/// DICOM-SEG with one segment per name, atomically.
pub fn write_dicom_seg(
    path: &Path,
    series: &DicomSeries,
    labels: &[u16],
    names: &[String],
) -> Result<()> {
    check_seg_output(path, series)?;
    let s = &series.series;
    let [cols, rows, nslices] = s.dims();
    if labels.len() != cols * rows * nslices {
        return Err(err(
            path,
            format!(
                "{} labels for a {cols}×{rows}×{nslices} series",
                labels.len()
            ),
        ));
    }
    if names.is_empty() || names.len() > u16::MAX as usize {
        return Err(err(path, format!("{} segments", names.len())));
    }
    let mut o = source_references(series)?;
    let sop_uid = new_uid();
    let (date, time) = now_da_tm();

    put_str(
        &mut o,
        tags::SOP_CLASS_UID,
        VR::UI,
        uids::SEGMENTATION_STORAGE,
    );
    put_str(&mut o, tags::SOP_INSTANCE_UID, VR::UI, &sop_uid);
    put_str(&mut o, tags::MODALITY, VR::CS, "SEG");
    put_str(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &new_uid());
    put_str(&mut o, tags::SERIES_NUMBER, VR::IS, "300");
    put_str(
        &mut o,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        "SegVol segmentation",
    );
    put_str(&mut o, tags::INSTANCE_NUMBER, VR::IS, "1");
    put_str(&mut o, tags::CONTENT_DATE, VR::DA, &date);
    put_str(&mut o, tags::CONTENT_TIME, VR::TM, &time);
    put_str(&mut o, tags::SERIES_DATE, VR::DA, &date);
    put_str(&mut o, tags::SERIES_TIME, VR::TM, &time);
    let version = env!("CARGO_PKG_VERSION");
    put_str(&mut o, tags::MANUFACTURER, VR::LO, "segvol");
    put_str(&mut o, tags::MANUFACTURER_MODEL_NAME, VR::LO, "segvol");
    put_str(&mut o, tags::DEVICE_SERIAL_NUMBER, VR::LO, "0");
    put_str(&mut o, tags::SOFTWARE_VERSIONS, VR::LO, version);
    put_str(&mut o, tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY");
    put_str(&mut o, tags::CONTENT_LABEL, VR::CS, "SEGVOL");
    put_str(
        &mut o,
        tags::CONTENT_DESCRIPTION,
        VR::LO,
        "SegVol segmentation",
    );
    o.put(DataElement::new(
        tags::CONTENT_CREATOR_NAME,
        VR::PN,
        PrimitiveValue::Empty,
    ));
    put_str(&mut o, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    put_str(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put_str(&mut o, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");

    // Image pixel module: 1 bit per pixel.
    put_u16(&mut o, tags::ROWS, rows as u16);
    put_u16(&mut o, tags::COLUMNS, cols as u16);
    put_u16(&mut o, tags::SAMPLES_PER_PIXEL, 1);
    put_str(
        &mut o,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    put_u16(&mut o, tags::BITS_ALLOCATED, 1);
    put_u16(&mut o, tags::BITS_STORED, 1);
    put_u16(&mut o, tags::HIGH_BIT, 0);
    put_u16(&mut o, tags::PIXEL_REPRESENTATION, 0);

    // Segments: the categories, with the algorithm that made them. The
    // property type is coded in a private scheme: the names are free text.
    let algorithm = {
        let mut a = Obj::new_empty();
        // CID 7162 (algorithm families): Artificial Intelligence.
        put_seq(
            &mut a,
            tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
            vec![code("123110", "DCM", "Artificial Intelligence")],
        );
        put_str(&mut a, tags::ALGORITHM_NAME, VR::LO, "SegVol");
        put_str(&mut a, tags::ALGORITHM_VERSION, VR::LO, version);
        a
    };
    let segments: Vec<Obj> = names
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let mut seg = Obj::new_empty();
            put_u16(&mut seg, tags::SEGMENT_NUMBER, c as u16 + 1);
            let label: String = name.chars().take(64).collect();
            put_str(&mut seg, tags::SEGMENT_LABEL, VR::LO, &label);
            put_str(&mut seg, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
            put_str(&mut seg, tags::SEGMENT_ALGORITHM_NAME, VR::LO, "SegVol");
            put_seq(
                &mut seg,
                tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
                vec![algorithm.clone()],
            );
            put_seq(
                &mut seg,
                tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                vec![code("91723000", "SCT", "Anatomical Structure")],
            );
            put_seq(
                &mut seg,
                tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
                vec![code(&format!("SV{:05}", c + 1), "99SEGVOL", &label)],
            );
            seg
        })
        .collect();
    put_seq(&mut o, tags::SEGMENT_SEQUENCE, segments);

    // Dimensions: segment, then plane position.
    let dim_uid = new_uid();
    let mut org = Obj::new_empty();
    put_str(&mut org, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid);
    put_seq(&mut o, tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![org]);
    let dim = |pointer: Tag, group: Tag, label: &str| {
        let mut d = Obj::new_empty();
        put_str(&mut d, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid);
        d.put(DataElement::new(
            tags::DIMENSION_INDEX_POINTER,
            VR::AT,
            PrimitiveValue::from(pointer),
        ));
        d.put(DataElement::new(
            tags::FUNCTIONAL_GROUP_POINTER,
            VR::AT,
            PrimitiveValue::from(group),
        ));
        put_str(&mut d, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        d
    };
    put_seq(
        &mut o,
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dim(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "ReferencedSegmentNumber",
            ),
            dim(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "ImagePositionPatient",
            ),
        ],
    );

    // Shared functional groups: spacing and orientation.
    let mut shared = Obj::new_empty();
    let mut measures = Obj::new_empty();
    put_str(
        &mut measures,
        tags::PIXEL_SPACING,
        VR::DS,
        &ds_multi(&s.pixel_spacing),
    );
    put_str(
        &mut measures,
        tags::SLICE_THICKNESS,
        VR::DS,
        &ds(s.slice_spacing),
    );
    put_str(
        &mut measures,
        tags::SPACING_BETWEEN_SLICES,
        VR::DS,
        &ds(s.slice_spacing),
    );
    put_seq(&mut shared, tags::PIXEL_MEASURES_SEQUENCE, vec![measures]);
    let mut orient = Obj::new_empty();
    put_str(
        &mut orient,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        &ds_multi(&s.orientation),
    );
    put_seq(&mut shared, tags::PLANE_ORIENTATION_SEQUENCE, vec![orient]);
    put_seq(
        &mut o,
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared],
    );

    // One frame per (segment, slice): the slice's pixels, rows top-down as
    // DICOM stores them (volume row j is DICOM row rows − 1 − j).
    let plane = rows * cols;
    let nframes = names.len() * nslices;
    let mut bits = vec![0u8; (nframes * plane).div_ceil(8).next_multiple_of(2)];
    let mut frames = Vec::with_capacity(nframes);
    for c in 0..names.len() {
        let want = c as u16 + 1;
        for (k, slice) in s.slices.iter().enumerate() {
            let base = frames.len() * plane;
            for r in 0..rows {
                let j = rows - 1 - r;
                let src = &labels[(k * rows + j) * cols..(k * rows + j + 1) * cols];
                for (col, &v) in src.iter().enumerate() {
                    if v == want {
                        let bit = base + r * cols + col;
                        bits[bit / 8] |= 1 << (bit % 8);
                    }
                }
            }
            let mut f = Obj::new_empty();
            let mut source = Obj::new_empty();
            put_str(
                &mut source,
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                &slice.sop_class_uid,
            );
            put_str(
                &mut source,
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &slice.sop_instance_uid,
            );
            put_seq(
                &mut source,
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code(
                    "121322",
                    "DCM",
                    "Source image for image processing operation",
                )],
            );
            // Same grid as the source: a frame pixel is the source pixel.
            put_str(
                &mut source,
                tags::SPATIAL_LOCATIONS_PRESERVED,
                VR::CS,
                "YES",
            );
            let mut derivation = Obj::new_empty();
            put_seq(&mut derivation, tags::SOURCE_IMAGE_SEQUENCE, vec![source]);
            put_seq(
                &mut derivation,
                tags::DERIVATION_CODE_SEQUENCE,
                vec![code("113076", "DCM", "Segmentation")],
            );
            put_seq(&mut f, tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]);
            let mut content = Obj::new_empty();
            content.put(DataElement::new(
                tags::DIMENSION_INDEX_VALUES,
                VR::UL,
                PrimitiveValue::U32(SmallVec::from_vec(vec![want as u32, k as u32 + 1])),
            ));
            put_seq(&mut f, tags::FRAME_CONTENT_SEQUENCE, vec![content]);
            let mut pos = Obj::new_empty();
            let ipp = slice.position.expect("checked when the series was opened");
            put_str(
                &mut pos,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &ds_multi(&ipp),
            );
            put_seq(&mut f, tags::PLANE_POSITION_SEQUENCE, vec![pos]);
            let mut ident = Obj::new_empty();
            put_u16(&mut ident, tags::REFERENCED_SEGMENT_NUMBER, want);
            put_seq(&mut f, tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![ident]);
            frames.push(f);
        }
    }
    put_str(&mut o, tags::NUMBER_OF_FRAMES, VR::IS, &nframes.to_string());
    put_seq(&mut o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames);

    // The source series, every instance.
    let mut refs = Obj::new_empty();
    put_str(
        &mut refs,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &s.slices[0].series_uid,
    );
    let instances: Vec<Obj> = s
        .slices
        .iter()
        .map(|sl| {
            let mut r = Obj::new_empty();
            put_str(
                &mut r,
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                &sl.sop_class_uid,
            );
            put_str(
                &mut r,
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &sl.sop_instance_uid,
            );
            r
        })
        .collect();
    put_seq(&mut refs, tags::REFERENCED_INSTANCE_SEQUENCE, instances);
    put_seq(&mut o, tags::REFERENCED_SERIES_SEQUENCE, vec![refs]);

    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(bits),
    ));

    let file = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(uids::SEGMENTATION_STORAGE)
                .media_storage_sop_instance_uid(&sop_uid),
        )
        .map_err(|e| err(path, format!("cannot build the file meta group: {e}")))?;
    let (tmp, handle) = TempFile::create_for(path).map_err(|e| Error::io(path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, handle);
    file.write_all(&mut w)
        .map_err(|e| err(path, format!("cannot write the DICOM-SEG: {e}")))?;
    let handle = w
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    handle.sync_all().map_err(|e| Error::io(path, e))?;
    drop(handle);
    tmp.commit(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        assert_eq!(ds(-249.51171875), "-249.51171875");
        assert_eq!(ds(0.1 + 0.2), "0.3");
        assert_eq!(ds(-0.0), "0");
        assert!(ds(123_456_789.123_456_79).len() <= 16);
        assert_eq!(ds_multi(&[1.0, 0.0, -0.5]), "1\\0\\-0.5");
    }

    #[test]
    fn uids_are_fresh_and_valid() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        assert!(a.len() <= 64 && a.starts_with("2.25."));
        assert!(a[5..].bytes().all(|c| c.is_ascii_digit()));
        let (d, t) = now_da_tm();
        assert_eq!((d.len(), t.len()), (8, 6));
    }
}
