//! The malformed-input corpus: every case runs the real `segvol` binary on
//! a generated input (damaged NIfTI, hostile checkpoint, bad prompt or
//! option) and must end with a non-zero exit, one `segvol: error:` line
//! naming the problem, no panic, and nothing left in the output folder.
//!
//! Inputs are generated here (tests/common/gen.rs), never checked in. The
//! model is the tiny synthetic config, written once per run with
//! `segvol synth-weights --config tiny`, so cases that get as far as the
//! network still finish in well under a second.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use common::gen::*;

const BIN: &str = env!("CARGO_BIN_EXE_segvol");

/// What a case runs.
enum Run {
    /// `segment CASE_FILE -o OUT --weights TINY` plus these arguments.
    Ct(&'static str, Vec<u8>, Vec<&'static str>),
    /// `segment GOOD_CT -o OUT --weights TINY` plus these arguments.
    Args(Vec<String>),
    /// `segment GOOD_CT -o OUT --weights CASE_FILE --text liver`.
    Weights(&'static str, Vec<u8>),
    /// The whole argument list; `{ct}`, `{w}`, `{out}`, `{dir}` replaced.
    Raw(Vec<&'static str>),
    /// `segment SERIES_FOLDER -o OUT --weights TINY --text liver` plus these
    /// arguments, the folder holding these files.
    Dicom(Vec<(String, Vec<u8>)>, Vec<&'static str>),
}

struct Case {
    name: &'static str,
    run: Run,
    /// A word or phrase the error line must contain.
    keyword: &'static str,
}

fn case(name: &'static str, run: Run, keyword: &'static str) -> Case {
    Case { name, run, keyword }
}

/// A CT file segmented with `--text liver`.
fn ct(name: &'static str, bytes: Vec<u8>) -> Run {
    Run::Ct(name, bytes, vec!["--text", "liver"])
}

fn args(a: &[&str]) -> Run {
    Run::Args(a.iter().map(|s| s.to_string()).collect())
}

/// Everything the cases share: the folder, the tiny weights, a good CT.
struct Setup {
    root: PathBuf,
    weights: PathBuf,
    ct: PathBuf,
}

/// Made once per test run and shared by the tests of this file (the
/// weights stay in the target folder, replaced on the next run).
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(make_setup)
}

fn make_setup() -> Setup {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("corpus");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let weights = root.join("tiny.safetensors");
    let out = Command::new(BIN)
        .args(["synth-weights", "--config", "tiny", "-o"])
        .arg(&weights)
        .output()
        .unwrap();
    assert!(out.status.success(), "synth-weights: {out:?}");
    let ct = root.join("good.nii");
    std::fs::write(&ct, phantom_ct([24, 20, 12])).unwrap();
    Setup { root, weights, ct }
}

const DIMS: [i16; 3] = [24, 20, 12];
const NVOX: usize = 24 * 20 * 12;

fn good_bytes() -> Vec<u8> {
    phantom_ct(DIMS)
}

/// A header for the good CT's dims, to be edited.
fn hdr() -> Hdr {
    Hdr::new(&DIMS, 4, 16)
}

fn ramp_i16() -> Vec<u8> {
    i16_bytes(
        &(0..NVOX)
            .map(|i| (i % 2000) as i16 - 1000)
            .collect::<Vec<_>>(),
    )
}

fn float_ct(edit: impl Fn(&mut Vec<f32>)) -> Vec<u8> {
    let mut v: Vec<f32> = (0..NVOX).map(|i| (i % 1500) as f32 - 1000.0).collect();
    edit(&mut v);
    Hdr::new(&DIMS, 16, 32).file(&f32_bytes(&v))
}

fn with_header(edit: impl Fn(&mut Hdr)) -> Vec<u8> {
    let mut h = hdr();
    edit(&mut h);
    h.file(&ramp_i16())
}

fn nifti_cases() -> Vec<Case> {
    let good = good_bytes();
    let gz = gzip(&good);
    let mut corrupt_gz = gz.clone();
    let mid = corrupt_gz.len() / 2;
    for b in &mut corrupt_gz[mid..mid + 8] {
        *b ^= 0x5a;
    }
    let mut bad_crc = gz.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0xff;
    let random: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();

    vec![
        case("empty .nii", ct("empty.nii", vec![]), "truncated"),
        case(
            "truncated .nii inside the header",
            ct("t100.nii", good[..100].to_vec()),
            "truncated",
        ),
        case(
            "truncated .nii after the header",
            ct("t348.nii", good[..348].to_vec()),
            "truncated",
        ),
        case(
            "truncated .nii halfway through the voxels",
            ct("thalf.nii", good[..352 + NVOX].to_vec()),
            "truncated",
        ),
        case(
            "truncated .nii one byte short",
            ct("tm1.nii", good[..good.len() - 1].to_vec()),
            "truncated",
        ),
        case(
            "truncated .nii.gz inside the gzip header",
            ct("t10.nii.gz", gz[..10].to_vec()),
            "gzip",
        ),
        case(
            "truncated .nii.gz halfway",
            ct("thalf.nii.gz", gz[..gz.len() / 2].to_vec()),
            "truncated",
        ),
        case(
            "truncated .nii.gz without its trailer",
            ct("ttrail.nii.gz", gz[..gz.len() - 6].to_vec()),
            "gzip",
        ),
        case(
            "corrupt deflate data",
            ct("corrupt.nii.gz", corrupt_gz),
            "gzip",
        ),
        case("corrupt gzip CRC", ct("crc.nii.gz", bad_crc), "gzip"),
        case(
            "gzip of random bytes",
            ct("random.nii.gz", gzip(&random)),
            "sizeof_hdr",
        ),
        case(
            "not a NIfTI (text)",
            ct("text.nii", b"hello, this is not an image\n".repeat(20)),
            "sizeof_hdr",
        ),
        case(
            "wrong sizeof_hdr",
            ct(
                "sizeof.nii",
                with_header(|h| {
                    h.i32(0, 100);
                }),
            ),
            "sizeof_hdr",
        ),
        case(
            "NIfTI-2 sizeof_hdr",
            ct(
                "nifti2.nii",
                with_header(|h| {
                    h.i32(0, 540);
                }),
            ),
            "NIfTI-2",
        ),
        case(
            "bad magic",
            ct(
                "magic.nii",
                with_header(|h| h.b[344..348].copy_from_slice(b"xyz\0")),
            ),
            "magic",
        ),
        case(
            "two-file magic ni1",
            ct(
                "ni1.nii",
                with_header(|h| h.b[344..348].copy_from_slice(b"ni1\0")),
            ),
            "two-file",
        ),
        case(
            "dim[0] = 0",
            ct(
                "dim0.nii",
                with_header(|h| {
                    h.i16(40, 0);
                }),
            ),
            "dim[0]",
        ),
        case(
            "dim[0] = 9",
            ct(
                "dim9.nii",
                with_header(|h| {
                    h.i16(40, 9);
                }),
            ),
            "dim[0]",
        ),
        case(
            "a zero dim",
            ct(
                "zero.nii",
                with_header(|h| {
                    h.i16(42, 0);
                }),
            ),
            "dim[1] = 0",
        ),
        case(
            "a negative dim",
            ct(
                "neg.nii",
                with_header(|h| {
                    h.i16(44, -5);
                }),
            ),
            "dim[2] = -5",
        ),
        case(
            "absurd dims (32767^3)",
            ct("absurd.nii", Hdr::new(&[32767; 3], 4, 16).file(&[0; 64])),
            "more than the limit",
        ),
        case(
            "10^12 voxels claimed",
            ct(
                "tera.nii.gz",
                gzip(&Hdr::new(&[10000, 10000, 10000], 4, 16).file(&[0; 64])),
            ),
            "1000000000000 voxels",
        ),
        case(
            "2D image",
            ct("2d.nii", Hdr::new(&[24, 20], 4, 16).file(&[0; 960])),
            "must be 3D",
        ),
        case(
            "4D with three volumes",
            ct(
                "4d.nii",
                Hdr::new(&[24, 20, 12, 3], 4, 16).file(&ramp_i16().repeat(3)),
            ),
            "4D image",
        ),
        case(
            "5D image",
            ct(
                "5d.nii",
                Hdr::new(&[24, 20, 12, 1, 2], 4, 16).file(&ramp_i16().repeat(2)),
            ),
            "5-dimensional",
        ),
        case(
            "complex datatype",
            ct(
                "complex.nii",
                Hdr::new(&DIMS, 32, 64).file(&vec![0; NVOX * 8]),
            ),
            "complex",
        ),
        case(
            "RGB datatype",
            ct("rgb.nii", Hdr::new(&DIMS, 128, 24).file(&vec![0; NVOX * 3])),
            "RGB",
        ),
        case(
            "unknown datatype",
            ct("dt999.nii", Hdr::new(&DIMS, 999, 16).file(&ramp_i16())),
            "unknown datatype code 999",
        ),
        case(
            "binary datatype",
            ct("bin.nii", Hdr::new(&DIMS, 1, 1).file(&vec![0; NVOX / 8])),
            "binary",
        ),
        case(
            "float128 datatype",
            ct(
                "f128.nii",
                Hdr::new(&DIMS, 1536, 128).file(&vec![0; NVOX * 16]),
            ),
            "float128",
        ),
        case(
            "vox_offset inside the header",
            ct(
                "voxoff.nii",
                with_header(|h| {
                    h.f32(108, 100.0);
                }),
            ),
            "vox_offset",
        ),
        case(
            "vox_offset NaN",
            ct(
                "voxnan.nii",
                with_header(|h| {
                    h.f32(108, f32::NAN);
                }),
            ),
            "vox_offset",
        ),
        case(
            "vox_offset past the end",
            ct(
                "voxfar.nii",
                with_header(|h| {
                    h.f32(108, 1e6);
                }),
            ),
            "truncated",
        ),
        case(
            "scl_slope with a NaN scl_inter",
            ct(
                "sclnan.nii",
                with_header(|h| {
                    h.scale(2.0, f32::NAN);
                }),
            ),
            "scl_inter",
        ),
        case(
            "non-finite sform",
            ct(
                "sforminf.nii",
                with_header(|h| {
                    h.sform(
                        1,
                        [
                            [1.0, 0.0, 0.0, f32::INFINITY],
                            [0.0, 1.0, 0.0, 0.0],
                            [0.0, 0.0, 1.0, 0.0],
                        ],
                    );
                }),
            ),
            "non-finite",
        ),
        case(
            "NaN pixdim without sform or qform",
            ct(
                "pixnan.nii",
                with_header(|h| {
                    h.pixdim(1.0, [f32::NAN, 1.0, 1.0]);
                }),
            ),
            "pixdim",
        ),
        case(
            "NaN voxels",
            ct("nan.nii", float_ct(|v| v[100] = f32::NAN)),
            "NaN or infinite",
        ),
        case(
            "infinite voxels",
            ct(
                "inf.nii",
                float_ct(|v| {
                    v[5] = f32::INFINITY;
                    v[6] = f32::NEG_INFINITY;
                }),
            ),
            "2 voxels are NaN or infinite",
        ),
        case(
            "constant volume",
            ct("const.nii", Hdr::new(&DIMS, 4, 16).file(&vec![7; NVOX * 2])),
            "no foreground",
        ),
        case(
            "single voxel",
            ct("one.nii", Hdr::new(&[1, 1, 1], 4, 16).file(&[1, 2])),
            "no foreground",
        ),
        case(
            "non-invertible affine with a world prompt",
            Run::Ct(
                "singular.nii",
                {
                    let mut h = hdr();
                    h.sform(1, [[0.0; 4]; 3]);
                    h.file(&phantom_i16())
                },
                vec!["--point", "1,1,1", "--frame", "world"],
            ),
            "not invertible",
        ),
        case(
            "missing CT file",
            Run::Raw(vec![
                "segment",
                "{dir}/nope.nii",
                "-o",
                "{out}",
                "--weights",
                "{w}",
                "--text",
                "liver",
            ]),
            "No such file",
        ),
        case(
            // A folder is read as a DICOM series; this one holds none.
            "CT path is a folder without DICOM files",
            Run::Raw(vec![
                "segment",
                "{dir}",
                "-o",
                "{out}",
                "--weights",
                "{w}",
                "--text",
                "liver",
            ]),
            "no DICOM files",
        ),
    ]
}

fn prompt_cases() -> Vec<Case> {
    vec![
        case("no prompt at all", args(&[]), "at least one prompt"),
        case(
            "box outside the volume",
            args(&["--box", "100,100,100,200,200,200"]),
            "outside the volume",
        ),
        case(
            "box in the air around the body",
            args(&["--box", "0,0,0,1,1,1"]),
            "does not overlap the foreground",
        ),
        case(
            "empty zoom-frame box (min > max)",
            args(&["--box", "5,5,5,2,2,2", "--frame", "zoom"]),
            "min <= max",
        ),
        case(
            "box with five numbers",
            args(&["--box", "1,2,3,4,5"]),
            "needs 6 numbers",
        ),
        case(
            "box with a non-number",
            args(&["--box", "1,2,3,4,5,x"]),
            "is not a number",
        ),
        case(
            "point outside the volume",
            args(&["--point", "500,5,5"]),
            "outside the volume",
        ),
        case(
            "negative point",
            args(&["--point", "-3,5,5"]),
            "outside the volume",
        ),
        case(
            "point with label 2",
            args(&["--point", "10,10,6,2"]),
            "label 2 is not 1",
        ),
        case(
            "point with label -1",
            args(&["--point", "10,10,6,-1"]),
            "label -1 is not 1",
        ),
        case(
            "point with label 0.5",
            args(&["--point", "10,10,6,0.5"]),
            "label 0.5 is not 1",
        ),
        case(
            "NaN coordinate",
            args(&["--point", "nan,5,5"]),
            "must be finite",
        ),
        case(
            "points with several categories",
            args(&["--text", "liver", "--text", "spleen", "--point", "10,10,6"]),
            "single category",
        ),
        case(
            "unknown --frame",
            args(&["--text", "liver", "--frame", "pixels"]),
            "--frame",
        ),
        case(
            "--labels count mismatch",
            args(&["--text", "liver", "--labels", "a,b"]),
            "--labels names 2",
        ),
        case(
            "bad --max-memory",
            args(&["--text", "liver", "--max-memory", "lots"]),
            "--max-memory",
        ),
        case(
            "--max-memory too small",
            args(&["--text", "liver", "--max-memory", "64M"]),
            "needs ~",
        ),
        case(
            "output name without .nii",
            Run::Raw(vec![
                "segment",
                "{ct}",
                "-o",
                "{dir}/out/out.txt",
                "--weights",
                "{w}",
                "--text",
                "liver",
            ]),
            "must end in .nii",
        ),
        case(
            "output folder missing",
            Run::Raw(vec![
                "segment",
                "{ct}",
                "-o",
                "{dir}/out/missing/out.nii",
                "--weights",
                "{w}",
                "--text",
                "liver",
            ]),
            "does not exist",
        ),
        case(
            "--json in a missing folder",
            args(&["--text", "liver", "--json", "{dir}/out/no/summary.json"]),
            "does not exist",
        ),
        case(
            "probabilities name without .nii",
            args(&["--text", "liver", "--probabilities", "{dir}/out/p.npy"]),
            "must end in .nii",
        ),
        case(
            "unknown --device",
            Run::Raw(vec![
                "segment",
                "{ct}",
                "-o",
                "{out}",
                "--weights",
                "{w}",
                "--text",
                "liver",
                "--device",
                "tpu",
            ]),
            "tpu",
        ),
        case(
            "bf16 on the CPU",
            args(&["--text", "liver", "--precision", "bf16"]),
            "precision bf16",
        ),
    ]
}

fn weights_cases() -> Vec<Case> {
    let data6 = f32_bytes(&[1., 2., 3., 4., 5., 6.]);
    let pkl = torch_pickle(&[GOOD]);
    let mut reduce_odict = vec![0x80, 2];
    reduce_odict.extend(global("collections", "OrderedDict"));
    reduce_odict.extend(tuple(&[s("x")]));
    reduce_odict.extend([b'R', b'.']);
    let mut getattr = vec![0x80, 2];
    getattr.extend(global("__builtin__", "getattr"));
    getattr.push(b'.');
    let zip = torch_zip(&pkl, &[("0", &data6)]);
    let mut huge_header = u64::MAX.to_le_bytes().to_vec();
    huge_header.extend(b"{}");
    let mut header_past_end = 1_000_000u64.to_le_bytes().to_vec();
    header_past_end.extend(br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#);
    vec![
        case(
            "missing weights file",
            Run::Raw(vec![
                "segment",
                "{ct}",
                "-o",
                "{out}",
                "--weights",
                "{dir}/none.safetensors",
                "--text",
                "liver",
            ]),
            "none.safetensors",
        ),
        case(
            "empty weights file",
            Run::Weights("empty.bin", vec![]),
            "empty.bin",
        ),
        case(
            "weights of random bytes",
            Run::Weights("random.pth", b"\x13\x37garbage".repeat(100)),
            "random.pth",
        ),
        case(
            "safetensors offsets past the end",
            Run::Weights(
                "past.safetensors",
                safetensors(
                    r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                    &[0; 8],
                ),
            ),
            "bad safetensors header",
        ),
        case(
            "safetensors overlapping ranges",
            Run::Weights(
                "overlap.safetensors",
                safetensors(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    &[0; 12],
                ),
            ),
            "bad safetensors header",
        ),
        case(
            "safetensors shape disagrees with its range",
            Run::Weights(
                "shape.safetensors",
                safetensors(
                    r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                    &[0; 8],
                ),
            ),
            "bad safetensors header",
        ),
        case(
            "safetensors unsupported dtype",
            Run::Weights(
                "f8.safetensors",
                safetensors(
                    r#"{"q":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#,
                    &[0, 0],
                ),
            ),
            "F8_E4M3",
        ),
        case(
            "safetensors unknown dtype name",
            Run::Weights(
                "dtype.safetensors",
                safetensors(
                    r#"{"q":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}}"#,
                    &[0, 0],
                ),
            ),
            "bad safetensors header",
        ),
        case(
            "safetensors header larger than the file",
            Run::Weights("hdrpast.safetensors", header_past_end),
            "header",
        ),
        case(
            "safetensors header length 2^64-1",
            Run::Weights("huge.safetensors", huge_header),
            "huge.safetensors",
        ),
        case(
            "safetensors header not JSON",
            Run::Weights("json.safetensors", safetensors("{not json", &[])),
            "bad safetensors header",
        ),
        case(
            "valid safetensors that is not SegVol",
            Run::Weights(
                "other.safetensors",
                safetensors(
                    r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                    &[0; 8],
                ),
            ),
            "not a SegVol checkpoint",
        ),
        case(
            "torch zip missing a storage record",
            Run::Weights("missing.bin", torch_zip(&pkl, &[])),
            "record a/data/0 is missing",
        ),
        case(
            "torch zip without data.pkl",
            Run::Weights("nopkl.bin", build_zip(&[("a/data/0", &data6)], 0)),
            "data.pkl",
        ),
        case(
            "torch zip truncated",
            Run::Weights("cut.bin", zip[..zip.len() / 2].to_vec()),
            "zip",
        ),
        case(
            "torch zip with a deflated record",
            Run::Weights(
                "deflated.bin",
                build_zip(&[("a/data.pkl", &pkl), ("a/data/0", &data6)], 8),
            ),
            "compressed (method 8)",
        ),
        case(
            "pickle calling os.system",
            Run::Weights("os.bin", torch_zip(&pickle_os_system(), &[])),
            "forbidden global os.system",
        ),
        case(
            "pickle calling builtins.eval",
            Run::Weights("eval.bin", torch_zip(&pickle_builtins_eval(), &[])),
            "forbidden global builtins.eval",
        ),
        case(
            "legacy bare pickle calling os.system",
            Run::Weights("legacy.pth", pickle_os_system()),
            "legacy (pre-1.6) torch pickle",
        ),
        case(
            "pickle naming __builtin__.getattr",
            Run::Weights("getattr.bin", torch_zip(&getattr, &[])),
            "forbidden global __builtin__.getattr",
        ),
        case(
            "REDUCE on OrderedDict with arguments",
            Run::Weights("reduce.bin", torch_zip(&reduce_odict, &[])),
            "OrderedDict called with 1 arguments",
        ),
        case(
            "pickle INST opcode",
            Run::Weights("inst.bin", torch_zip(b"\x80\x02(ios\nsystem\n.", &[])),
            "refused opcode INST",
        ),
        case(
            "pickle NEWOBJ opcode",
            Run::Weights("newobj.bin", torch_zip(b"\x80\x02N)\x81.", &[])),
            "refused opcode NEWOBJ",
        ),
        case(
            "tensor shape larger than its storage",
            Run::Weights(
                "bigshape.bin",
                torch_zip(
                    &torch_pickle(&[T {
                        shape: &[3, 3],
                        ..GOOD
                    }]),
                    &[("0", &data6)],
                ),
            ),
            "needs 9 elements but storage 0 holds 6",
        ),
        case(
            "storage claims more than its record",
            Run::Weights(
                "short.bin",
                torch_zip(
                    &torch_pickle(&[T {
                        storage_numel: 100,
                        ..GOOD
                    }]),
                    &[("0", &data6)],
                ),
            ),
            "claims 100 f32 elements",
        ),
        case(
            "negative storage offset",
            Run::Weights(
                "negoff.bin",
                torch_zip(&torch_pickle(&[T { offset: -1, ..GOOD }]), &[("0", &data6)]),
            ),
            "negative",
        ),
    ]
}

/// DICOM series (tests/common/dicom_gen.rs: a 5-slice series), each
/// broken one way.
fn dicom_cases() -> Vec<Case> {
    use common::dicom_gen::*;
    use dicom_dictionary_std::tags;
    let drop_tag = |tag| {
        series_files(move |i, mut o| {
            if i == 2 {
                o.remove_element(tag);
            }
            Some(o)
        })
    };
    let good = series_files(|_, o| Some(o));
    let mut cut = good.clone();
    let n = cut[3].1.len();
    cut[3].1.truncate(n - 50);
    let dicom = |files, extra: &[&'static str]| Run::Dicom(files, extra.to_vec());
    vec![
        case(
            "DICOM: two series in one folder",
            dicom(
                series_files(|i, mut o| {
                    if i >= 3 {
                        o.put(text(
                            tags::SERIES_INSTANCE_UID,
                            dicom_core::VR::UI,
                            "1.2.3.4",
                        ));
                    }
                    Some(o)
                }),
                &[],
            ),
            "--series UID",
        ),
        case(
            "DICOM: --series not in the folder",
            dicom(good.clone(), &["--series", "1.2.3.4"]),
            "no series 1.2.3.4",
        ),
        case(
            "DICOM: missing ImagePositionPatient",
            dicom(drop_tag(tags::IMAGE_POSITION_PATIENT), &[]),
            "missing tag ImagePositionPatient",
        ),
        case(
            "DICOM: missing ImageOrientationPatient",
            dicom(drop_tag(tags::IMAGE_ORIENTATION_PATIENT), &[]),
            "missing tag ImageOrientationPatient",
        ),
        case(
            "DICOM: missing PixelSpacing",
            dicom(drop_tag(tags::PIXEL_SPACING), &[]),
            "PixelSpacing",
        ),
        case(
            "DICOM: missing PixelData",
            dicom(drop_tag(tags::PIXEL_DATA), &[]),
            "missing tag PixelData",
        ),
        case(
            "DICOM: missing slice (inconsistent spacing)",
            dicom(series_files(|i, o| (i != 2).then_some(o)), &[]),
            "inconsistent slice spacing",
        ),
        case(
            "DICOM: two slices at one position",
            dicom(
                series_files(|i, mut o| {
                    if i == 1 {
                        o.put(text(
                            tags::IMAGE_POSITION_PATIENT,
                            dicom_core::VR::DS,
                            &format!("-20\\-30\\{}", ZS[0]),
                        ));
                    }
                    Some(o)
                }),
                &[],
            ),
            "same position",
        ),
        case(
            "DICOM: gantry tilt",
            dicom(
                series_files(|i, mut o| {
                    let y = -30.0 + (ZS[i] + 100.0) * 0.27;
                    o.put(text(
                        tags::IMAGE_POSITION_PATIENT,
                        dicom_core::VR::DS,
                        &format!("-20\\{y:.4}\\{}", ZS[i]),
                    ));
                    Some(o)
                }),
                &[],
            ),
            "gantry tilt",
        ),
        case(
            "DICOM: mixed slice sizes",
            dicom(
                series_files(|i, o| {
                    Some(if i == 3 {
                        slice_object(SERIES, 4, ZS[3], ROWS + 2, COLS)
                    } else {
                        o
                    })
                }),
                &[],
            ),
            "mixed slice sizes",
        ),
        case(
            "DICOM: three samples per pixel",
            dicom(
                series_files(|_, mut o| {
                    o.put(us(tags::SAMPLES_PER_PIXEL, 3));
                    Some(o)
                }),
                &[],
            ),
            "samples per pixel",
        ),
        case(
            "DICOM: pixel data shorter than Rows x Columns",
            dicom(
                series_files(|i, mut o| {
                    if i == 1 {
                        o.put(dicom_core::DataElement::new(
                            tags::PIXEL_DATA,
                            dicom_core::VR::OW,
                            dicom_core::PrimitiveValue::from(vec![0u8; ROWS * COLS]),
                        ));
                    }
                    Some(o)
                }),
                &[],
            ),
            "truncated pixel data",
        ),
        case(
            "DICOM: file cut inside the pixel data",
            dicom(cut, &[]),
            "truncated",
        ),
        case(
            "DICOM: folder without DICOM files",
            dicom(vec![("notes.txt".into(), b"not DICOM".to_vec())], &[]),
            "no DICOM files",
        ),
        case(
            "DICOM: --dicom-seg for a series without StudyInstanceUID",
            dicom(
                series_files(|_, mut o| {
                    o.remove_element(tags::STUDY_INSTANCE_UID);
                    Some(o)
                }),
                &["--dicom-seg", "{dir}/out/seg.dcm"],
            ),
            "no StudyInstanceUID",
        ),
        case(
            "DICOM: --dicom-seg for NIfTI input",
            args(&["--text", "liver", "--dicom-seg", "{dir}/out/seg.dcm"]),
            "--dicom-seg needs a DICOM series",
        ),
    ]
}

/// Runs one case; `Err` says how it failed the contract.
fn run_case(s: &Setup, index: usize, c: &Case) -> Result<(), String> {
    let dir = s.root.join("cases").join(format!("case{index:03}"));
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let out_path = dir.join("out").join("out.nii.gz");
    let sub = |a: &str| -> String {
        a.replace("{ct}", &s.ct.to_string_lossy())
            .replace("{w}", &s.weights.to_string_lossy())
            .replace("{out}", &out_path.to_string_lossy())
            .replace("{dir}", &dir.to_string_lossy())
    };
    let base = |ct: &Path, w: &Path| -> Vec<String> {
        vec![
            "segment".into(),
            ct.to_string_lossy().into_owned(),
            "-o".into(),
            out_path.to_string_lossy().into_owned(),
            "--weights".into(),
            w.to_string_lossy().into_owned(),
            "--device".into(),
            "cpu".into(),
        ]
    };
    let argv: Vec<String> = match &c.run {
        Run::Ct(name, bytes, extra) => {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            let mut a = base(&p, &s.weights);
            a.extend(extra.iter().map(|x| x.to_string()));
            a
        }
        Run::Args(extra) => {
            let mut a = base(&s.ct, &s.weights);
            a.extend(extra.iter().map(|x| sub(x)));
            a
        }
        Run::Weights(name, bytes) => {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            let mut a = base(&s.ct, &p);
            a.extend(["--text".into(), "liver".into()]);
            a
        }
        Run::Dicom(files, extra) => {
            let series = dir.join("series");
            std::fs::create_dir_all(&series).unwrap();
            for (name, bytes) in files {
                std::fs::write(series.join(name), bytes).unwrap();
            }
            let mut a = base(&series, &s.weights);
            a.extend(["--text".into(), "liver".into()]);
            a.extend(extra.iter().map(|x| sub(x)));
            a
        }
        Run::Raw(a) => {
            let mut v: Vec<String> = a.iter().map(|x| sub(x)).collect();
            if !v.iter().any(|x| x == "--device") {
                v.extend(["--device".into(), "cpu".into()]);
            }
            v
        }
    };
    let t = Instant::now();
    let out: Output = Command::new(BIN).args(&argv).output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fail = |why: String| Err(format!("{why}\n    argv: {argv:?}\n    stderr: {stderr}"));

    match out.status.code() {
        None => return fail("killed by a signal".into()),
        Some(0) => return fail("exit status 0".into()),
        Some(_) => {}
    }
    if stderr.contains("panicked") || stdout.contains("panicked") {
        return fail("panicked".into());
    }
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !is_progress(l) && !l.trim().is_empty())
        .collect();
    if lines.len() != 1 || !lines[0].starts_with("segvol: error: ") {
        return fail(format!(
            "expected exactly one `segvol: error:` line, got {lines:?}"
        ));
    }
    if !lines[0].contains(c.keyword) {
        return fail(format!("error line lacks {:?}", c.keyword));
    }
    let left: Vec<_> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    if !left.is_empty() {
        return fail(format!("left in the output folder: {left:?}"));
    }
    eprintln!("ok  {:5.2}s  {:45} {}", secs, c.name, lines[0]);
    Ok(())
}

/// `[   0.3s] step` lines and the indented notes under them.
fn is_progress(l: &str) -> bool {
    l.starts_with('[') && l.find("s]").is_some_and(|i| i <= 12)
}

#[test]
fn malformed_inputs_fail_cleanly() {
    let t = Instant::now();
    let s = setup();
    let mut cases = nifti_cases();
    cases.extend(prompt_cases());
    cases.extend(weights_cases());
    cases.extend(dicom_cases());
    assert!(cases.len() >= 50, "only {} cases", cases.len());

    // Two workers: the cases are independent processes.
    let failures = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(c) = cases.get(i) else { break };
                if let Err(e) = run_case(s, i, c) {
                    failures.lock().unwrap().push(format!("{}: {e}", c.name));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "{} cases, {} failed, {:.1} s",
        cases.len(),
        failures.len(),
        t.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(s.root.join("cases"));
}

/// The phantom's voxel bytes (for headers edited away from the good one).
fn phantom_i16() -> Vec<u8> {
    good_bytes()[352..].to_vec()
}

fn segment(s: &Setup, ct: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("segment")
        .arg(ct)
        .arg("-o")
        .arg(out)
        .arg("--weights")
        .arg(&s.weights)
        .args(["--device", "cpu"])
        .args(extra)
        .output()
        .unwrap()
}

/// Odd but valid inputs segment: a 1-voxel-thick volume along either end
/// axis (the pipeline resizes any shape), a 4D file holding one volume, a
/// singular affine with voxel prompts, a big-endian float file. And a
/// failed run leaves an existing output exactly as it was.
#[test]
fn odd_but_valid_volumes_segment_and_failures_keep_old_outputs() {
    let s = setup();
    let dir = s.root.join("valid");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let big_endian = {
        let v: Vec<f32> = phantom_i16()
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
            .collect();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
        Hdr::new_big_endian(&DIMS, 16, 32).file(&bytes)
    };
    let singular = {
        let mut h = hdr();
        h.sform(1, [[0.0; 4]; 3]);
        h.file(&phantom_i16())
    };
    let thin_k = phantom_ct([40, 36, 1]);
    let thin_i = phantom_ct([1, 36, 40]);
    let one_4d = Hdr::new(&[24, 20, 12, 1], 4, 16).file(&phantom_i16());
    let cases: [(&str, &[u8], &[&str]); 5] = [
        ("thin_k.nii", &thin_k, &["--text", "liver"]),
        ("thin_i.nii.gz", &gzip(&thin_i), &["--text", "liver"]),
        ("one_4d.nii", &one_4d, &["--text", "liver"]),
        ("singular.nii", &singular, &["--point", "12,10,6"]),
        ("big_endian.nii", &big_endian, &["--box", "6,5,3,18,15,9"]),
    ];
    for (name, bytes, extra) in cases {
        let ct = dir.join(name);
        std::fs::write(&ct, bytes).unwrap();
        let out = dir.join(format!("seg-{name}"));
        let out = out.with_extension(if name.ends_with(".gz") { "gz" } else { "nii" });
        let r = segment(s, &ct, &out, extra);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success(), "{name}: {stderr}");
        let seg = segvol::io::read_ct(&out).unwrap();
        let want = segvol::io::read_ct(&ct).unwrap();
        assert_eq!(seg.dims, want.dims, "{name}");
        assert!(seg.data.iter().all(|&v| v == 0.0 || v == 1.0), "{name}");
    }

    // A failed run (truncated CT) next to an existing output: untouched,
    // and no temporary file left beside it.
    let out = dir.join("keep.nii.gz");
    std::fs::write(&out, b"an earlier result").unwrap();
    let bad = dir.join("bad.nii");
    std::fs::write(&bad, &good_bytes()[..2000]).unwrap();
    let r = segment(s, &bad, &out, &["--text", "liver"]);
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(std::fs::read(&out).unwrap(), b"an earlier result");
    let temps: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
