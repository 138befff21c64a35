//! Synthetic DICOM CT slices written with dicom-object, for the DICOM
//! reader's tests and the malformed-input corpus: a small signed 16-bit
//! series with a rescale, whose every tag a test can edit or drop.

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

pub const ROWS: usize = 12;
pub const COLS: usize = 10;
pub const SLOPE: f64 = 2.0;
pub const INTER: f64 = -1000.0;

/// The stored value of pixel (row, col) on the slice at z.
pub fn stored(row: usize, col: usize, z: f64) -> i16 {
    (row as i16) * 37 + (col as i16) * 5 + (z as i16) * 3 - 200
}

pub fn text(tag: dicom_core::Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

pub fn us(tag: dicom_core::Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

/// One CT slice of a synthetic series: rows × cols, explicit VR little
/// endian, at z along an axial normal. `edit` changes it before writing.
pub fn slice_object(
    series: &str,
    instance: i32,
    z: f64,
    rows: usize,
    cols: usize,
) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    let sop = format!("1.2.826.0.1.3680043.10.9999.{instance}.{}", z.abs() as i64);
    o.put(text(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE));
    o.put(text(tags::SOP_INSTANCE_UID, VR::UI, &sop));
    o.put(text(tags::MODALITY, VR::CS, "CT"));
    o.put(text(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        "1.2.826.0.1.3680043.10.9999.1",
    ));
    o.put(text(tags::SERIES_INSTANCE_UID, VR::UI, series));
    o.put(text(tags::SERIES_DESCRIPTION, VR::LO, "synthetic"));
    o.put(text(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        "1.2.826.0.1.3680043.10.9999.2",
    ));
    o.put(text(tags::INSTANCE_NUMBER, VR::IS, &instance.to_string()));
    o.put(text(
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        &format!("-20\\-30\\{z}"),
    ));
    o.put(text(
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        "1\\0\\0\\0\\1\\0",
    ));
    o.put(text(tags::PIXEL_SPACING, VR::DS, "0.5\\0.75"));
    o.put(text(tags::SLICE_THICKNESS, VR::DS, "2"));
    o.put(text(tags::RESCALE_SLOPE, VR::DS, &SLOPE.to_string()));
    o.put(text(tags::RESCALE_INTERCEPT, VR::DS, &INTER.to_string()));
    o.put(text(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    ));
    o.put(us(tags::SAMPLES_PER_PIXEL, 1));
    o.put(us(tags::ROWS, rows as u16));
    o.put(us(tags::COLUMNS, cols as u16));
    o.put(us(tags::BITS_ALLOCATED, 16));
    o.put(us(tags::BITS_STORED, 16));
    o.put(us(tags::HIGH_BIT, 15));
    o.put(us(tags::PIXEL_REPRESENTATION, 1));
    let mut bytes = Vec::with_capacity(rows * cols * 2);
    for r in 0..rows {
        for c in 0..cols {
            bytes.extend_from_slice(&stored(r, c, z).to_le_bytes());
        }
    }
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(bytes),
    ));
    o
}

/// The object as a DICOM Part 10 file (explicit VR little endian).
pub fn dicom_bytes(o: InMemDicomObject) -> Vec<u8> {
    let sop = o
        .element(tags::SOP_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let file = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
                .media_storage_sop_instance_uid(sop),
        )
        .unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

pub fn write_object(path: &Path, o: InMemDicomObject) {
    std::fs::write(path, dicom_bytes(o)).unwrap();
}

pub const SERIES: &str = "1.2.826.0.1.3680043.10.9999.3";
/// Slice positions, written in this (unsorted, descending) file order.
pub const ZS: [f64; 5] = [-100.0, -102.0, -104.0, -106.0, -108.0];

/// The series' files (name, bytes), each slice passed through
/// `edit(index, object)` (None drops it).
pub fn series_files(
    edit: impl Fn(usize, InMemDicomObject) -> Option<InMemDicomObject>,
) -> Vec<(String, Vec<u8>)> {
    ZS.iter()
        .enumerate()
        .filter_map(|(i, &z)| {
            edit(i, slice_object(SERIES, i as i32 + 1, z, ROWS, COLS))
                .map(|o| (format!("IM{i:04}.dcm"), dicom_bytes(o)))
        })
        .collect()
}
