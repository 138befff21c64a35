//! DICOM series input: a synthetic series written here with dicom-object
//! (geometry, rescale, and the malformed cases: two series, missing tags,
//! missing slices, gantry tilt, mixed sizes, truncated pixel data), and,
//! when prepared by `scripts/ci-dicom.sh`, real data: TotalSegmentator's
//! 20-slice CT series (JPEG 2000) against its converter's geometry and a
//! pydicom-decoded reference, and pydicom's test files in several transfer
//! syntaxes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use segvol::io::nifti::read_ct;
use segvol::io::{read_input, CtSource};

use common::cli::{bin, tiny_weights, tmp};
use common::dicom_gen::*;

// ---------------------------------------------------------------- synthetic

/// A fresh folder holding the synthetic series, each slice passed through
/// `edit(index, object)` (None drops the slice).
fn series_dir(
    name: &str,
    edit: impl Fn(usize, InMemDicomObject) -> Option<InMemDicomObject>,
) -> PathBuf {
    let dir = tmp().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in series_files(edit) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    // Not DICOM: skipped when the folder is scanned.
    std::fs::write(dir.join("README.txt"), "not a slice").unwrap();
    dir
}

fn open_err(inputs: &[PathBuf], series: Option<&str>) -> String {
    match CtSource::open(inputs, series).and_then(|s| s.read()) {
        Ok(_) => panic!("{inputs:?} was read, but should have been refused"),
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains('\n'), "not one line: {m}");
            m
        }
    }
}

#[test]
fn synthetic_series_geometry_and_rescale() {
    let dir = series_dir("good", |_, o| Some(o));
    let ct = read_input(std::slice::from_ref(&dir), None).unwrap();
    assert_eq!(ct.dims, [COLS, ROWS, ZS.len()]);
    let a = ct.affine();
    // Sorted ascending along +z (the last file first), rows bottom-up
    // (+y column), RAS (x and y negated).
    assert_eq!(a[0], [-0.75, 0.0, 0.0, 20.0]);
    assert_eq!(a[1], [0.0, 0.5, 0.0, 30.0 - (ROWS as f64 - 1.0) * 0.5]);
    assert_eq!(a[2], [0.0, 0.0, 2.0, -108.0]);
    assert_eq!(ct.spacing(), [0.75, 0.5, 2.0]);
    for k in 0..ZS.len() {
        let z = -108.0 + 2.0 * k as f64;
        for j in 0..ROWS {
            for i in 0..COLS {
                let want = f64::from(stored(ROWS - 1 - j, i, z)) * SLOPE + INTER;
                assert_eq!(ct.data[ct.index(i, j, k)], want as f32, "voxel {i},{j},{k}");
            }
        }
    }
    // The world position of a voxel is the DICOM position of its pixel,
    // LPS → RAS: pixel (row 0, column 0) of the slice at z = -100.
    let w = ct.voxel_to_world([0.0, (ROWS - 1) as f64, 4.0]);
    assert_eq!(w, [20.0, 30.0, -100.0]);

    // The files of the series, listed one by one, read the same.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect();
    files.reverse();
    let again = read_input(&files, None).unwrap();
    assert_eq!(again.data, ct.data);
    assert_eq!(again.affine(), ct.affine());
}

#[test]
fn two_series_are_listed_and_one_can_be_chosen() {
    let other = "1.2.826.0.1.3680043.10.9999.4";
    let dir = series_dir("two_series", |i, mut o| {
        if i >= 3 {
            o.put(text(tags::SERIES_INSTANCE_UID, VR::UI, other));
            o.put(text(tags::SERIES_DESCRIPTION, VR::LO, "other recon"));
        }
        Some(o)
    });
    let m = open_err(std::slice::from_ref(&dir), None);
    assert!(m.contains("2 series") && m.contains("--series"), "{m}");
    assert!(m.contains(&format!("{SERIES} (synthetic, 3 files)")), "{m}");
    assert!(
        m.contains(&format!("{other} (other recon, 2 files)")),
        "{m}"
    );
    let ct = read_input(std::slice::from_ref(&dir), Some(other)).unwrap();
    assert_eq!(ct.dims, [COLS, ROWS, 2]);
    let ct = read_input(std::slice::from_ref(&dir), Some(SERIES)).unwrap();
    assert_eq!(ct.dims, [COLS, ROWS, 3]);
    let m = open_err(&[dir], Some("1.2.3"));
    assert!(m.contains("no series 1.2.3"), "{m}");
}

#[test]
fn missing_tags_are_named() {
    for (tag, name) in [
        (tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient"),
        (tags::IMAGE_ORIENTATION_PATIENT, "ImageOrientationPatient"),
        (tags::PIXEL_SPACING, "PixelSpacing"),
        (tags::ROWS, "no Rows/Columns"),
        (tags::PIXEL_DATA, "PixelData"),
    ] {
        let dir = series_dir(
            &format!("missing_{name}").replace([' ', '/'], "_"),
            |i, mut o| {
                if i == 2 {
                    o.remove_element(tag);
                }
                Some(o)
            },
        );
        let m = open_err(&[dir], None);
        assert!(m.contains(name), "{name}: {m}");
        assert!(m.contains("IM0002.dcm"), "{name}: {m}");
    }
}

#[test]
fn missing_slice_is_inconsistent_spacing() {
    let dir = series_dir("missing_slice", |i, o| (i != 2).then_some(o));
    let m = open_err(&[dir], None);
    assert!(m.contains("inconsistent slice spacing"), "{m}");
    assert!(m.contains("4.000 mm") && m.contains("2.000 mm"), "{m}");
}

#[test]
fn gantry_tilt_is_refused() {
    let dir = series_dir("tilt", |i, mut o| {
        // A 15° tilt: each slice shifted in y by tan(15°) × its z step.
        let z = ZS[i];
        let y = -30.0 + (z + 100.0) * 15f64.to_radians().tan();
        o.put(text(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            &format!("-20\\{y:.4}\\{z}"),
        ));
        o.put(text(tags::GANTRY_DETECTOR_TILT, VR::DS, "15"));
        Some(o)
    });
    let m = open_err(&[dir], None);
    assert!(m.contains("gantry tilt"), "{m}");
}

#[test]
fn mixed_sizes_are_refused() {
    let dir = series_dir("mixed", |i, o| {
        Some(if i == 3 {
            slice_object(SERIES, 4, ZS[3], ROWS + 2, COLS)
        } else {
            o
        })
    });
    let m = open_err(&[dir], None);
    assert!(m.contains("mixed slice sizes"), "{m}");
    assert!(m.contains(&format!("{}×{COLS}", ROWS + 2)), "{m}");
}

#[test]
fn truncated_pixel_data_is_refused() {
    // The pixel data element shorter than Rows × Columns says.
    let dir = series_dir("short_pixels", |i, mut o| {
        if i == 1 {
            o.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::from(vec![0u8; ROWS * COLS]),
            ));
        }
        Some(o)
    });
    let m = open_err(&[dir], None);
    assert!(m.contains("IM0001.dcm"), "{m}");
    assert!(m.contains("truncated pixel data"), "{m}");

    // The file itself cut short inside the pixel data.
    let dir = series_dir("cut_file", |_, o| Some(o));
    let f = dir.join("IM0003.dcm");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 50]).unwrap();
    let m = open_err(&[dir], None);
    assert!(m.contains("IM0003.dcm") && m.contains("truncated"), "{m}");
}

#[test]
fn other_inputs_are_refused_clearly() {
    let empty = tmp().join("empty_dir");
    std::fs::create_dir_all(&empty).unwrap();
    let m = open_err(&[empty], None);
    assert!(m.contains("no DICOM files"), "{m}");
    let dir = series_dir("nifti_series", |_, o| Some(o));
    let m = open_err(&[dir.join("IM0000.dcm"), dir.join("README.txt")], None);
    assert!(m.contains("several inputs"), "{m}");
}

// ---------------------------------------------------------------- real data

/// `$SEGVOL_DICOM_DATA`, else `target/dicom-data` (filled by
/// `scripts/ci-dicom.sh`); the TotalSegmentator series may also come from
/// the shared fixtures. `None`, loudly, when `rel` is in neither.
fn data(rel: &str) -> Option<PathBuf> {
    let root = std::env::var_os("SEGVOL_DICOM_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dicom-data"));
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/data");
    for base in [root, shared] {
        let p = base.join(rel);
        if p.exists() {
            return Some(p);
        }
    }
    eprintln!(
        "!!! SKIPPED: {rel} is missing: run scripts/ci-dicom.sh (or set SEGVOL_DICOM_DATA) to prepare the DICOM test data"
    );
    None
}

#[test]
fn totalsegmentator_series_matches_the_converter_and_pydicom() {
    let (Some(dir), Some(conv)) = (data("example_ct_dicom"), data("example_seg_dicom.nii.gz"))
    else {
        return;
    };
    let ct = read_input(std::slice::from_ref(&dir), None).unwrap();
    // TotalSegmentator's own output for this series, in the geometry its
    // DICOM-to-NIfTI conversion gave.
    let reference = read_ct(&conv).unwrap();
    assert_eq!(ct.dims, reference.dims);
    let (a, b) = (ct.affine(), reference.affine());
    for r in 0..4 {
        for c in 0..4 {
            assert!((a[r][c] - b[r][c]).abs() < 1e-3, "affine {a:?} vs {b:?}");
        }
    }
    // Voxels against pydicom's decoding (Pillow's OpenJPEG) of the same files.
    let Some(pyref) = data("example_ct_dicom_ref.nii.gz") else {
        return;
    };
    let py = read_ct(&pyref).unwrap();
    assert_eq!(py.dims, ct.dims);
    assert_eq!(py.data, ct.data, "HU differ from pydicom's");
    let (lo, hi) = ct
        .data
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(lo <= -1000.0 && hi > 500.0, "HU range {lo}..{hi}");
}

#[test]
fn transfer_syntaxes_decode_alike() {
    let Some(dir) = data("pydicom") else {
        return;
    };
    let plain = read_input(&[dir.join("MR_small.dcm")], None).unwrap();
    for name in [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
    ] {
        let ct = read_input(&[dir.join(name)], None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ct.dims, plain.dims, "{name}");
        assert_eq!(ct.affine(), plain.affine(), "{name}");
        assert_eq!(ct.data, plain.data, "{name}");
    }
    // JPEG-LS has no pure-Rust decoder here: a clear refusal naming it.
    let m = open_err(&[dir.join("MR_small_jpeg_ls_lossless.dcm")], None);
    assert!(m.contains("1.2.840.10008.1.2.4.80"), "{m}");

    // CT_small against pydicom's reading of it.
    let (Some(ct_small), Some(pyref)) = (data("pydicom/CT_small.dcm"), data("CT_small_ref.nii.gz"))
    else {
        return;
    };
    let ct = read_input(&[ct_small], None).unwrap();
    let py = read_ct(&pyref).unwrap();
    assert_eq!(ct.dims, py.dims);
    assert_eq!(ct.data, py.data);
    let (a, b) = (ct.affine(), py.affine());
    for r in 0..4 {
        for c in 0..4 {
            assert!((a[r][c] - b[r][c]).abs() < 1e-3, "affine {a:?} vs {b:?}");
        }
    }
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn segmenting_the_dicom_and_its_nifti_gives_the_same_mask() {
    let (Some(dir), Some(nifti)) = (
        data("example_ct_dicom"),
        data("example_ct_dicom_ref.nii.gz"),
    ) else {
        return;
    };
    let out = tmp().join("same_mask");
    std::fs::create_dir_all(&out).unwrap();
    let masks: Vec<PathBuf> = [dir, nifti]
        .iter()
        .enumerate()
        .map(|(n, input)| {
            let o = out.join(format!("mask{n}.nii.gz"));
            run(bin()
                .arg("segment")
                .arg(input)
                .arg("-o")
                .arg(&o)
                .arg("--weights")
                .arg(tiny_weights())
                .args(["--device", "cpu", "--no-zoom-in", "--text", "liver"])
                .args(["--box", "100,100,2,400,380,17"]));
            o
        })
        .collect();
    let a = read_ct(&masks[0]).unwrap();
    let b = read_ct(&masks[1]).unwrap();
    assert_eq!(a.dims, b.dims);
    assert_eq!(a.data, b.data, "the masks differ");
    assert!(
        a.data.iter().any(|&v| v > 0.0),
        "empty mask: nothing compared"
    );
    let (a, b) = (a.affine(), b.affine());
    for r in 0..4 {
        for c in 0..4 {
            assert!((a[r][c] - b[r][c]).abs() < 1e-3, "affine {a:?} vs {b:?}");
        }
    }
}

#[test]
fn cli_refuses_two_series_with_the_list() {
    let dir = series_dir("cli_two", |i, mut o| {
        if i == 0 {
            o.put(text(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                "1.2.826.0.1.3680043.10.9999.5",
            ));
        }
        Some(o)
    });
    let out = bin()
        .arg("segment")
        .arg(&dir)
        .arg("-o")
        .arg(tmp().join("never.nii.gz"))
        .args(["--weights", "/nonexistent", "--text", "liver"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("2 series") && e.contains("1.2.826.0.1.3680043.10.9999.5"),
        "{e}"
    );
    assert!(!tmp().join("never.nii.gz").exists());
}

// ---------------------------------------------------------------- DICOM-SEG

/// A larger synthetic series (a bright block in air) for segmenting.
fn phantom_series(name: &str, study_uid: Option<&str>) -> PathBuf {
    let dir = tmp().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (rows, cols, n) = (40usize, 48usize, 10usize);
    for k in 0..n {
        let z = -50.0 + 2.5 * k as f64;
        let mut o = slice_object(SERIES, k as i32 + 1, z, rows, cols);
        let mut bytes = Vec::with_capacity(rows * cols * 2);
        for r in 0..rows {
            for c in 0..cols {
                let inside = (8..30).contains(&r) && (10..40).contains(&c) && (2..8).contains(&k);
                let v: i16 = if inside {
                    560 + (r as i16 + c as i16) % 7
                } else {
                    12
                };
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(bytes),
        ));
        match study_uid {
            Some(u) => o.put(text(tags::STUDY_INSTANCE_UID, VR::UI, u)),
            None => o.put(text(tags::STUDY_INSTANCE_UID, VR::UI, "")),
        };
        o.put(text(tags::PATIENT_NAME, VR::PN, "Phantom^Test"));
        write_object(&dir.join(format!("S{k:03}.dcm")), o);
    }
    dir
}

fn segment_with_seg(dir: &Path, out: &Path, names: &[&str]) -> std::process::Output {
    let mut cmd = bin();
    cmd.arg("segment")
        .arg(dir)
        .arg("-o")
        .arg(out.join("labels.nii.gz"))
        .arg("--dicom-seg")
        .arg(out.join("seg.dcm"))
        .arg("--weights")
        .arg(tiny_weights())
        .args(["--device", "cpu"]);
    for n in names {
        cmd.args(["--text", n]);
    }
    cmd.output().unwrap()
}

#[test]
fn dicom_seg_references_the_series_and_matches_the_label_map() {
    let dir = phantom_series("seg_phantom", Some("1.2.826.0.1.3680043.10.9999.1"));
    let out = tmp().join("seg_out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let names = ["liver", "spleen"];
    let o = segment_with_seg(&dir, &out, &names);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let labels = read_ct(&out.join("labels.nii.gz")).unwrap();
    assert!(
        labels.data.iter().any(|&v| v > 0.0),
        "empty label map: nothing compared"
    );

    // Read back with dicom-object: the frames unpacked equal the label map.
    let seg = dicom_object::open_file(out.join("seg.dcm")).unwrap();
    let get = |t| seg.element(t).unwrap().to_str().unwrap().to_string();
    assert_eq!(get(tags::SOP_CLASS_UID), uids::SEGMENTATION_STORAGE);
    assert_eq!(get(tags::SEGMENTATION_TYPE), "BINARY");
    assert_eq!(
        get(tags::STUDY_INSTANCE_UID),
        "1.2.826.0.1.3680043.10.9999.1"
    );
    assert_eq!(get(tags::PATIENT_NAME), "Phantom^Test");
    let segments = seg
        .element(tags::SEGMENT_SEQUENCE)
        .unwrap()
        .items()
        .unwrap();
    let labels_in_seg: Vec<String> = segments
        .iter()
        .map(|s| {
            s.element(tags::SEGMENT_LABEL)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(labels_in_seg, names);
    let [cols, rows, n] = labels.dims;
    let frames: usize = get(tags::NUMBER_OF_FRAMES).parse().unwrap();
    assert_eq!(frames, names.len() * n);
    let bits = seg.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    let plane = rows * cols;
    for s in 0..names.len() {
        for k in 0..n {
            for r in 0..rows {
                for c in 0..cols {
                    let bit = (s * n + k) * plane + r * cols + c;
                    let set = bits[bit / 8] >> (bit % 8) & 1 == 1;
                    let want = labels.data[labels.index(c, rows - 1 - r, k)] == (s + 1) as f32;
                    assert_eq!(set, want, "segment {s} slice {k} pixel {r},{c}");
                }
            }
        }
    }

    // And with highdicom, when the CI script provides it.
    let py = std::env::var("SEGVOL_DICOM_PYTHON").unwrap_or_default();
    if py.is_empty() {
        eprintln!(
            "!!! SKIPPED: the highdicom check of the DICOM-SEG: SEGVOL_DICOM_PYTHON is not set (scripts/ci-dicom.sh sets it)"
        );
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/check-dicom-seg.py");
    let o = Command::new(&py)
        .arg(script)
        .arg(out.join("seg.dcm"))
        .arg(out.join("labels.nii.gz"))
        .arg(&dir)
        .args(names)
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{so}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("highdicom: {so}");
}

#[test]
fn dicom_seg_is_refused_before_any_work_when_it_cannot_be_written() {
    // A series whose StudyInstanceUID was blanked cannot be referenced.
    let dir = phantom_series("seg_anonymised", None);
    let out = tmp().join("seg_refused");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let o = segment_with_seg(&dir, &out, &["liver"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("StudyInstanceUID"), "{e}");
    assert!(!out.join("labels.nii.gz").exists() && !out.join("seg.dcm").exists());

    // NIfTI input has no series to reference.
    let good = series_dir("seg_nifti_input", |_, o| Some(o));
    let nii = out.join("ct.nii.gz");
    let ct = read_input(&[good], None).unwrap();
    segvol::io::write::write_label_map(&nii, &ct, &vec![1u8; ct.len()]).unwrap();
    let o = bin()
        .arg("segment")
        .arg(&nii)
        .arg("-o")
        .arg(out.join("l.nii.gz"))
        .arg("--dicom-seg")
        .arg(out.join("s.dcm"))
        .args(["--weights", "/nonexistent", "--text", "liver"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--dicom-seg needs a DICOM series"), "{e}");
}
