//! NIfTI reading and writing: geometry round trips, every voxel type and
//! scaling, the shared CT fixtures, and malformed files. Test inputs are built
//! byte by byte here (independently of the library's header encoder) in a
//! temporary folder.

mod common;

use std::path::{Path, PathBuf};

use common::gen::{f32_bytes, gzip, i16_bytes, Hdr};

use nifti::{NiftiObject, NiftiType};
use segvol::io::write::label_map_bytes;
use segvol::io::{read_ct, write_label_map, write_probabilities, AffineSource, CtVolume};

/// A fresh folder for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("segvol-nifti-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn err_of(path: &Path) -> String {
    match read_ct(path) {
        Ok(v) => panic!("{} read as {:?}, expected an error", path.display(), v.dims),
        Err(e) => e.to_string(),
    }
}

fn assert_err(path: &Path, needle: &str) {
    let msg = err_of(path);
    eprintln!("{msg}");
    assert!(
        msg.contains(needle),
        "error for {} lacks {needle:?}: {msg}",
        path.display()
    );
    assert!(
        msg.contains(&path.file_name().unwrap().to_string_lossy().into_owned()),
        "error does not name the file: {msg}"
    );
}

const DIMS: [i16; 3] = [4, 3, 2];

fn small_int16() -> (Hdr, Vec<i16>) {
    let data: Vec<i16> = (0..24).map(|v| v * 100 - 1000).collect();
    (Hdr::new(&DIMS, 4, 16), data)
}

#[test]
fn reads_every_scalar_type() {
    let t = TempDir::new("types");
    let vals: [f64; 6] = [0.0, 1.0, 7.0, 100.0, 42.0, 3.0];
    let signed: [f64; 6] = [-5.0, 1.0, -7.0, 100.0, 42.0, -3.0];
    type Enc = fn(f64) -> Vec<u8>;
    let cases: Vec<(i16, i16, NiftiType, Enc, bool)> = vec![
        (2, 8, NiftiType::Uint8, |v| vec![v as u8], false),
        (
            256,
            8,
            NiftiType::Int8,
            |v| (v as i8).to_le_bytes().to_vec(),
            true,
        ),
        (
            4,
            16,
            NiftiType::Int16,
            |v| (v as i16).to_le_bytes().to_vec(),
            true,
        ),
        (
            512,
            16,
            NiftiType::Uint16,
            |v| (v as u16).to_le_bytes().to_vec(),
            false,
        ),
        (
            8,
            32,
            NiftiType::Int32,
            |v| (v as i32).to_le_bytes().to_vec(),
            true,
        ),
        (
            768,
            32,
            NiftiType::Uint32,
            |v| (v as u32).to_le_bytes().to_vec(),
            false,
        ),
        (
            16,
            32,
            NiftiType::Float32,
            |v| (v as f32 + 0.25).to_le_bytes().to_vec(),
            true,
        ),
        (
            1024,
            64,
            NiftiType::Int64,
            |v| (v as i64).to_le_bytes().to_vec(),
            true,
        ),
        (
            1280,
            64,
            NiftiType::Uint64,
            |v| (v as u64).to_le_bytes().to_vec(),
            false,
        ),
        (
            64,
            64,
            NiftiType::Float64,
            |v| (v + 0.25).to_le_bytes().to_vec(),
            true,
        ),
    ];
    for (code, bitpix, ty, enc, is_signed) in cases {
        let src = if is_signed { signed } else { vals };
        let bytes: Vec<u8> = src.iter().flat_map(|&v| enc(v)).collect();
        let p = t.write(
            &format!("t{code}.nii"),
            &Hdr::new(&[3, 2, 1], code, bitpix).file(&bytes),
        );
        let v = read_ct(&p).unwrap();
        assert_eq!(v.datatype, ty);
        assert_eq!(v.dims, [3, 2, 1]);
        let offset = if matches!(ty, NiftiType::Float32 | NiftiType::Float64) {
            0.25
        } else {
            0.0
        };
        let want: Vec<f32> = src.iter().map(|&x| (x + offset) as f32).collect();
        assert_eq!(v.data, want, "datatype {code}");
    }
}

#[test]
fn big_endian_file() {
    let t = TempDir::new("bigendian");
    let mut h = Hdr::new_big_endian(&DIMS, 4, 16);
    h.pixdim(1.0, [0.5, 0.75, 2.5]).scale(2.0, -3.0);
    let data: Vec<i16> = (0..24).map(|v| v - 12).collect();
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_be_bytes()).collect();
    let p = t.write("be.nii", &h.file(&bytes));
    let v = read_ct(&p).unwrap();
    assert_eq!(v.dims, [4, 3, 2]);
    assert_eq!(v.spacing(), [0.5, 0.75, 2.5]);
    let want: Vec<f32> = data.iter().map(|&x| f32::from(x) * 2.0 - 3.0).collect();
    assert_eq!(v.data, want);
}

#[test]
fn scaling_follows_nibabel() {
    let t = TempDir::new("scaling");
    let (mut h, data) = small_int16();
    h.scale(0.5, -1024.0);
    let v = read_ct(&t.write("s.nii", &h.file(&i16_bytes(&data)))).unwrap();
    let want: Vec<f32> = data
        .iter()
        .map(|&x| (f64::from(x) * 0.5 - 1024.0) as f32)
        .collect();
    assert_eq!(v.data, want);

    // Slope 0 or NaN: no scaling at all, whatever the intercept.
    for slope in [0.0, f32::NAN] {
        h.scale(slope, 55.0);
        let v = read_ct(&t.write("n.nii", &h.file(&i16_bytes(&data)))).unwrap();
        let raw: Vec<f32> = data.iter().map(|&x| f32::from(x)).collect();
        assert_eq!(v.data, raw, "slope {slope}");
    }
    // A usable slope with a NaN intercept is an error.
    h.scale(2.0, f32::NAN);
    assert_err(&t.write("bad.nii", &h.file(&i16_bytes(&data))), "scl_inter");
}

#[test]
fn non_finite_voxels_are_counted() {
    let t = TempDir::new("nonfinite");
    let mut data: Vec<f32> = (0..24).map(|v| v as f32).collect();
    data[3] = f32::NAN;
    data[7] = f32::INFINITY;
    data[20] = f32::NEG_INFINITY;
    let p = t.write("f.nii", &Hdr::new(&DIMS, 16, 32).file(&f32_bytes(&data)));
    let v = read_ct(&p).unwrap();
    assert_eq!(v.non_finite, 3);
    assert!(v.data[3].is_nan());
    assert_eq!(v.data[7], f32::INFINITY);
}

#[test]
fn singleton_4d_reads_as_3d() {
    let t = TempDir::new("single4d");
    let (_, data) = small_int16();
    let h = Hdr::new(&[4, 3, 2, 1], 4, 16);
    let v = read_ct(&t.write("v.nii", &h.file(&i16_bytes(&data)))).unwrap();
    assert_eq!(v.dims, [4, 3, 2]);
    assert_eq!(v.data.len(), 24);
}

/// An oblique sform (rotation about z and x, anisotropic voxels) and a
/// different oblique qform.
fn oblique(h: &mut Hdr) {
    let (s, c) = (0.3f32.sin(), 0.3f32.cos());
    h.pixdim(-1.0, [0.8, 0.9, 2.5]);
    h.b[123] = 10; // mm + s
    h.sform(
        2,
        [
            [0.8 * c, -0.9 * s, 0.1, -120.5],
            [0.8 * s, 0.9 * c, 0.2, 33.25],
            [0.0, 0.05, 2.5, -77.0],
        ],
    );
    // Unit quaternion for 40° about (1, 2, 2)/3.
    let half = 20f32.to_radians();
    let sh = half.sin();
    h.qform(
        1,
        [sh / 3.0, 2.0 * sh / 3.0, 2.0 * sh / 3.0],
        [10.0, -20.0, 30.5],
    );
}

fn assert_same_geometry(out: &CtVolume, ct: &CtVolume) {
    assert_eq!(out.dims, ct.dims);
    let (a, b) = (&out.header, &ct.header);
    assert_eq!(a.pixdim[..4], b.pixdim[..4]);
    assert_eq!((a.qform_code, a.sform_code), (b.qform_code, b.sform_code));
    assert_eq!(
        [
            a.quatern_b,
            a.quatern_c,
            a.quatern_d,
            a.quatern_x,
            a.quatern_y,
            a.quatern_z
        ],
        [
            b.quatern_b,
            b.quatern_c,
            b.quatern_d,
            b.quatern_x,
            b.quatern_y,
            b.quatern_z
        ]
    );
    assert_eq!(
        (a.srow_x, a.srow_y, a.srow_z),
        (b.srow_x, b.srow_y, b.srow_z)
    );
    assert_eq!(a.xyzt_units, b.xyzt_units);
    assert_eq!(out.affine(), ct.affine());
    assert_eq!(out.affine_source(), ct.affine_source());
    assert_eq!((a.scl_slope, a.scl_inter), (1.0, 0.0));
    let descrip = String::from_utf8_lossy(&a.descrip);
    assert!(descrip.starts_with("segvol"), "{descrip}");
}

#[test]
fn roundtrip_geometry_int16_and_float32() {
    let t = TempDir::new("roundtrip");
    let (mut h16, d16) = small_int16();
    oblique(&mut h16);
    // The CT's own scaling must not reach the label map.
    h16.scale(2.0, -1024.0);
    let mut h32 = Hdr::new(&DIMS, 16, 32);
    oblique(&mut h32);
    let d32: Vec<f32> = (0..24).map(|v| v as f32 * 0.5).collect();

    let inputs = [
        ("ct16.nii", h16.file(&i16_bytes(&d16))),
        ("ct16.nii.gz", gzip(&h16.file(&i16_bytes(&d16)))),
        ("ct32.nii", h32.file(&f32_bytes(&d32))),
        ("ct32.nii.gz", gzip(&h32.file(&f32_bytes(&d32)))),
    ];
    let labels: Vec<u8> = (0..24).map(|v| (v % 3) as u8).collect();
    for (name, bytes) in inputs {
        let ct = read_ct(&t.write(name, &bytes)).unwrap();
        assert_eq!(ct.affine_source(), AffineSource::Sform);
        for out_name in ["mask.nii", "mask.nii.gz"] {
            let out = t.path(out_name);
            write_label_map(&out, &ct, &labels).unwrap();
            let back = read_ct(&out).unwrap();
            assert_same_geometry(&back, &ct);
            assert_eq!(back.datatype, NiftiType::Uint8);
            assert_eq!(
                back.data,
                labels.iter().map(|&v| f32::from(v)).collect::<Vec<_>>()
            );
            assert_eq!(back.header.cal_max, 2.0);
            // The in-memory encoding (a server's reply) is the file's bytes.
            let gz = out_name.ends_with(".gz");
            let in_memory = label_map_bytes(&out, &ct, &labels, gz).unwrap();
            assert_eq!(
                in_memory,
                std::fs::read(&out).unwrap(),
                "{name} -> {out_name}"
            );

            let wide: Vec<u16> = labels.iter().map(|&v| u16::from(v) * 300).collect();
            write_label_map(&out, &ct, &wide).unwrap();
            let back = read_ct(&out).unwrap();
            assert_same_geometry(&back, &ct);
            assert_eq!(back.datatype, NiftiType::Uint16);
            assert_eq!(back.data[2], 600.0);
        }
    }
    let names = t.entries();
    assert!(
        names.iter().all(|n| !n.contains("segvol.tmp")),
        "temp files left: {names:?}"
    );
}

#[test]
fn qform_only_affine_and_world_to_voxel() {
    let t = TempDir::new("qform");
    let (mut h, data) = small_int16();
    oblique(&mut h);
    h.i16(254, 0); // drop the sform
    let ct = read_ct(&t.write("q.nii.gz", &gzip(&h.file(&i16_bytes(&data))))).unwrap();
    assert_eq!(ct.affine_source(), AffineSource::Qform);
    let a = ct.affine();
    // Columns are rotated voxel axes: lengths are the voxel sizes.
    for (j, want) in [0.8, 0.9, 2.5].iter().enumerate() {
        let len = (0..3).map(|i| a[i][j] * a[i][j]).sum::<f64>().sqrt();
        assert!((len - want).abs() < 1e-5, "column {j}: {len}");
    }
    assert_eq!([a[0][3], a[1][3], a[2][3]], [10.0, -20.0, 30.5]);
    // qfac −1 makes the frame left-handed.
    let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
        - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
    assert!(det < 0.0, "det {det}");

    for ijk in [[0.0, 0.0, 0.0], [3.0, 2.0, 1.0], [1.5, -4.0, 7.25]] {
        let back = ct.world_to_voxel(ct.voxel_to_world(ijk)).unwrap();
        for k in 0..3 {
            assert!((back[k] - ijk[k]).abs() < 1e-9, "{ijk:?} -> {back:?}");
        }
    }

    let out = t.path("labels.nii.gz");
    write_label_map(&out, &ct, &[1u8; 24]).unwrap();
    assert_same_geometry(&read_ct(&out).unwrap(), &ct);
}

#[test]
fn pixdim_only_affine_and_singular_sform() {
    let t = TempDir::new("pixdim");
    let (mut h, data) = small_int16();
    h.pixdim(1.0, [0.7, 0.7, 3.0]);
    let ct = read_ct(&t.write("p.nii", &h.file(&i16_bytes(&data)))).unwrap();
    assert_eq!(ct.affine_source(), AffineSource::Pixdim);
    assert_eq!(
        ct.voxel_to_world([1.0, 2.0, 3.0]),
        [0.7f32 as f64, 2.0 * 0.7f32 as f64, 9.0]
    );

    h.sform(1, [[0.0; 4]; 3]);
    let ct = read_ct(&t.write("z.nii", &h.file(&i16_bytes(&data)))).unwrap();
    let msg = ct.world_to_voxel([1.0, 2.0, 3.0]).unwrap_err().to_string();
    assert!(msg.contains("not invertible"), "{msg}");
}

#[test]
fn probabilities_are_4d_float32() {
    let t = TempDir::new("probs");
    let (mut h, data) = small_int16();
    oblique(&mut h);
    let ct = read_ct(&t.write("ct.nii", &h.file(&i16_bytes(&data)))).unwrap();
    let ch: Vec<Vec<f32>> = (0..3)
        .map(|c| (0..24).map(|v| (v + c) as f32 / 30.0).collect())
        .collect();
    for name in ["p.nii", "p.nii.gz"] {
        let out = t.path(name);
        write_probabilities(&out, &ct, &ch).unwrap();
        // The nifti crate's reader is an independent check of the layout.
        let obj = nifti::ReaderOptions::new().read_file(&out).unwrap();
        let hd = obj.header();
        assert_eq!(hd.dim[..5], [4, 4, 3, 2, 3]);
        assert_eq!(hd.datatype, 16);
        assert_eq!((hd.scl_slope, hd.scl_inter), (1.0, 0.0));
        assert_eq!(hd.pixdim[..4], ct.header.pixdim[..4]);
        assert_eq!(
            (hd.srow_x, hd.sform_code, hd.qform_code),
            (ct.header.srow_x, 2, 1)
        );
        let want: Vec<u8> = ch.iter().flat_map(|c| f32_bytes(c)).collect();
        assert_eq!(obj.volume().raw_data(), &want[..]);
    }
    // One channel is a singleton 4D, which read_ct accepts.
    let out = t.path("one.nii.gz");
    write_probabilities(&out, &ct, &ch[..1]).unwrap();
    let back = read_ct(&out).unwrap();
    assert_same_geometry(&back, &ct);
    assert_eq!(back.data, ch[0]);
}

#[test]
fn failed_writes_leave_existing_files_alone() {
    let t = TempDir::new("atomic");
    let (h, data) = small_int16();
    let ct = read_ct(&t.write("ct.nii", &h.file(&i16_bytes(&data)))).unwrap();
    let out = t.path("mask.nii.gz");
    write_label_map(&out, &ct, &[1u8; 24]).unwrap();
    let before = std::fs::read(&out).unwrap();

    let msg = write_label_map(&out, &ct, &[1u8; 23])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("23"), "{msg}");
    assert!(write_probabilities(&out, &ct, &[vec![0.5f32; 24], vec![0.5f32; 5]]).is_err());
    assert!(write_probabilities::<Vec<f32>>(&out, &ct, &[]).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), before);

    assert!(write_label_map(&t.path("mask.txt"), &ct, &[1u8; 24]).is_err());
    assert!(write_label_map(&t.path("no/such/dir/m.nii"), &ct, &[1u8; 24]).is_err());
    let msg = write_label_map(&ct.path.clone(), &ct, &[1u8; 24])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("overwrite"), "{msg}");
    assert_eq!(
        t.entries(),
        vec!["ct.nii".to_string(), "mask.nii.gz".to_string()]
    );

    // Replacing an existing output works and leaves no temporary file.
    write_label_map(&out, &ct, &[0u8; 24]).unwrap();
    assert_eq!(read_ct(&out).unwrap().data, vec![0.0; 24]);
    assert_eq!(t.entries().len(), 2);
}

#[test]
fn example_ct_sm_fixture() {
    let Some(p) = common::fixture("data/example_ct_sm.nii.gz") else {
        return;
    };
    let ct = read_ct(&p).unwrap();
    assert_eq!(ct.dims, [122, 101, 30]);
    assert_eq!(ct.datatype, NiftiType::Int16);
    assert_eq!(ct.non_finite, 0);
    assert_eq!(ct.spacing(), [3.0, 3.0, 3.0]);
    // fixtures/README: mean over all voxels (the ForegroundNorm threshold).
    let mean = ct.data.iter().map(|&v| f64::from(v)).sum::<f64>() / ct.len() as f64;
    assert!((mean - -354.09537).abs() < 1e-3, "mean {mean}");
    assert!(ct.data.iter().all(|v| v.fract() == 0.0));

    let t = TempDir::new("fixture");
    let out = t.path("mask.nii.gz");
    let labels: Vec<u8> = ct.data.iter().map(|&v| u8::from(v > 0.0)).collect();
    write_label_map(&out, &ct, &labels).unwrap();
    let back = read_ct(&out).unwrap();
    assert_same_geometry(&back, &ct);
    assert_eq!(
        back.data.iter().filter(|&&v| v == 1.0).count(),
        labels.iter().filter(|&&v| v == 1).count()
    );
}

#[test]
fn lung1_fixture() {
    let Some(p) = common::fixture("data/lung1_image.nii.gz") else {
        return;
    };
    let ct = read_ct(&p).unwrap();
    assert_eq!(ct.dims, [512, 512, 48]);
    assert_eq!(ct.datatype, NiftiType::Int16);
    let mean = ct.data.iter().map(|&v| f64::from(v)).sum::<f64>() / ct.len() as f64;
    assert!((mean - -577.91522).abs() < 1e-3, "mean {mean}");
}

#[test]
fn reference_mask_fixture_matches_ct_geometry() {
    let (Some(ct), Some(mask)) = (
        common::fixture("data/example_ct_sm.nii.gz"),
        common::fixture("pipeline_realct/ct_sm_box_text/final_mask.nii.gz"),
    ) else {
        return;
    };
    let ct = read_ct(&ct).unwrap();
    let mask = read_ct(&mask).unwrap();
    assert_eq!(mask.dims, ct.dims);
    assert_eq!(mask.datatype, NiftiType::Uint8);
    assert_eq!(mask.affine(), ct.affine());
}

#[test]
fn truncated_files() {
    let t = TempDir::new("truncated");
    let (h, data) = small_int16();
    let full = h.file(&i16_bytes(&data));
    for cut in [0, 10, 200, 347, 348, 351, 352, 360, full.len() - 1] {
        assert_err(
            &t.write(&format!("cut{cut}.nii"), &full[..cut]),
            "truncated",
        );
    }
    let gz = gzip(&full);
    for cut in [
        0,
        1,
        5,
        10,
        20,
        gz.len() / 2,
        gz.len() - 8,
        gz.len() - 4,
        gz.len() - 1,
    ] {
        let p = t.write(&format!("cut{cut}.nii.gz"), &gz[..cut]);
        let msg = err_of(&p);
        eprintln!("{msg}");
        assert!(
            msg.contains("truncated") || msg.contains("gzip"),
            "cut {cut}: {msg}"
        );
    }
}

#[test]
fn corrupt_gzip() {
    let t = TempDir::new("corruptgz");
    let (h, data) = small_int16();
    let gz = gzip(&h.file(&i16_bytes(&data)));
    // Compression method byte (must be 8 = deflate).
    let mut bad = gz.clone();
    bad[2] = 7;
    assert_err(&t.write("method.nii.gz", &bad), "gzip");
    // Damage inside the deflate stream and in the CRC trailer.
    for pos in [12, gz.len() / 2, gz.len() - 6] {
        let mut bad = gz.clone();
        bad[pos] ^= 0x55;
        let p = t.write(&format!("flip{pos}.nii.gz"), &bad);
        let msg = err_of(&p);
        eprintln!("{msg}");
        assert!(msg.contains("gzip"), "{pos}: {msg}");
    }
}

#[test]
fn malformed_headers() {
    let t = TempDir::new("malformed");
    let (good, data) = small_int16();
    let bytes = i16_bytes(&data);
    let check = |name: &str, h: &Hdr, needle: &str| {
        assert_err(&t.write(&format!("{name}.nii"), &h.file(&bytes)), needle);
        assert_err(
            &t.write(&format!("{name}.nii.gz"), &gzip(&h.file(&bytes))),
            needle,
        );
    };

    let mut h = good.clone();
    h.b[344..348].copy_from_slice(b"abc\0");
    check("magic", &h, "magic");
    let mut h = good.clone();
    h.b[344..348].copy_from_slice(b"ni1\0");
    check("pair", &h, "two-file");
    check("sizeof", good.clone().i32(0, 349), "sizeof_hdr");
    check("nifti2", good.clone().i32(0, 540), "NIfTI-2");
    check("dim0zero", good.clone().i16(40, 0), "dim[0]");
    check("dim0big", good.clone().i16(40, 9), "dim[0]");
    check("zero", good.clone().i16(44, 0), "dim[2] = 0");
    check("negative", good.clone().i16(46, -5), "dim[3] = -5");
    check("2d", good.clone().i16(40, 2), "2-dimensional");
    check("complex", good.clone().i16(70, 32).i16(72, 64), "complex");
    check("complex128", good.clone().i16(70, 1792), "complex");
    check("rgb", good.clone().i16(70, 128).i16(72, 24), "RGB");
    check("unknown", good.clone().i16(70, 999), "unknown datatype");
    check("four", good.clone().i16(40, 4).i16(48, 3), "4D");
    check("five", good.clone().i16(40, 5), "5-dimensional");
    check("voxoffset", good.clone().f32(108, 0.0), "vox_offset");
    check(
        "voxoffsetnan",
        good.clone().f32(108, f32::NAN),
        "vox_offset",
    );
    check(
        "quaternion",
        good.clone().qform(1, [1.0, 1.0, 0.0], [0.0; 3]),
        "quaternion",
    );
    check(
        "sformnan",
        good.clone().sform(1, [[f32::NAN; 4]; 3]),
        "non-finite",
    );

    // 10^12 voxels: rejected from the header alone.
    let huge = Hdr::new(&[10000, 10000, 10000], 4, 16);
    check("absurd", &huge, "voxels");
    // Under the voxel limit but far more than the file holds.
    let big = Hdr::new(&[1000, 1000, 100], 4, 16);
    check("big", &big, "truncated");

    let missing = t.path("missing.nii.gz");
    assert!(read_ct(&missing)
        .unwrap_err()
        .to_string()
        .contains("missing.nii.gz"));
}
