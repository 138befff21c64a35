//! The embedding API (`segvol::api`): the one-call helper gives the CLI's
//! label maps, in-memory volumes give the file's, and a session reuses its
//! embeddings and survives bad prompts. Tiny synthetic weights on the
//! fixtures' small CT.

mod common;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use common::cli::{bin, tiny_weights, tmp};
use common::fixture;
use segvol::api::{Engine, Options, Session};
use segvol::io::affine;
use segvol::io::nifti::{read_ct, CtVolume};
use segvol::pipeline::request::Request;

fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| Arc::new(Engine::open(tiny_weights()).unwrap()))
        .clone()
}

/// The CLI's label map for `args`, as u16 labels in file order.
fn cli_labels(ct: &Path, name: &str, args: &[&str]) -> Vec<u16> {
    let out_path = tmp().join(name);
    let out = bin()
        .arg("segment")
        .arg(ct)
        .arg("-o")
        .arg(&out_path)
        .arg("--weights")
        .arg(tiny_weights())
        .args(["--device", "cpu"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_ct(&out_path)
        .unwrap()
        .data
        .iter()
        .map(|&v| v as u16)
        .collect()
}

#[test]
fn helper_equals_the_cli() {
    let Some(ct) = fixture("data/example_ct_sm.nii.gz") else {
        return;
    };
    let e = engine();
    let opts = Options::default();

    let cli = cli_labels(
        &ct,
        "text_box.nii.gz",
        &["--text", "liver", "--box", "41,25,0,105,86,29"],
    );
    let req = Request::text("liver").with_box([41.0, 25.0, 0.0, 105.0, 86.0, 29.0]);
    let lib = e.segment_file(&ct, &req, &opts).unwrap();
    assert_eq!(lib.dims, read_ct(&ct).unwrap().dims);
    assert!(
        lib.labels.contains(&1),
        "the comparison needs a non-empty mask"
    );
    assert_eq!(lib.labels, cli);

    let cli = cli_labels(
        &ct,
        "two.nii.gz",
        &["--text", "liver", "--text", "spleen", "--no-zoom-in"],
    );
    let mut opts2 = Options::default();
    opts2.zoom.zoom_in = false;
    let req = Request::text("liver").with_text("spleen");
    let lib = e.segment_file(&ct, &req, &opts2).unwrap();
    assert_eq!(lib.names, ["liver", "spleen"]);
    assert_eq!(lib.labels, cli);

    let cli = cli_labels(
        &ct,
        "points.nii.gz",
        &["--point", "60,48,15", "--point", "10,10,3,0", "--seed", "7"],
    );
    let mut opts3 = Options::default();
    opts3.zoom.seed = 7;
    let req = Request::default()
        .with_point([60.0, 48.0, 15.0], true)
        .with_point([10.0, 10.0, 3.0], false);
    assert_eq!(e.segment_file(&ct, &req, &opts3).unwrap().labels, cli);
}

#[test]
fn in_memory_volume_equals_the_file() {
    let Some(path) = fixture("data/example_ct_sm.nii.gz") else {
        return;
    };
    let e = engine();
    let file = read_ct(&path).unwrap();
    let mem = CtVolume::from_array("mem", file.dims, file.data.clone(), file.affine()).unwrap();
    let (a, b) = ([41.0, 25.0, 0.0], [105.0, 86.0, 29.0]);
    let (wa, wb) = (file.voxel_to_world(a), file.voxel_to_world(b));
    // A world-frame box goes through the in-memory affine.
    let req = Request::text("liver")
        .with_box([wa[0], wa[1], wa[2], wb[0], wb[1], wb[2]])
        .in_frame(segvol::pipeline::prompt_frames::Frame::World);
    let opts = Options {
        probabilities: true,
        ..Options::default()
    };
    let from_file = e.segment_volume(&file, &req, &opts).unwrap();
    let from_mem = e.segment_volume(&mem, &req, &opts).unwrap();
    assert_eq!(from_file.labels, from_mem.labels);
    assert_eq!(from_file.probabilities, from_mem.probabilities);
    assert_eq!(from_mem.probabilities[0].len(), file.len());

    // Written "like" the in-memory volume, the label map carries its affine.
    let out = tmp().join("mem_labels.nii.gz");
    from_mem.write_label_map(&out, &mem).unwrap();
    let back = read_ct(&out).unwrap();
    assert_eq!(back.dims, file.dims);
    let (fa, ba) = (file.affine(), back.affine());
    for r in 0..4 {
        for c in 0..4 {
            // The sform is stored as float32.
            assert!((fa[r][c] - ba[r][c]).abs() <= 1e-4 * fa[r][c].abs().max(1.0));
        }
    }
    let labels: Vec<u16> = back.data.iter().map(|&v| v as u16).collect();
    assert_eq!(labels, from_mem.labels);
}

#[test]
fn bad_volumes_and_requests_are_errors() {
    let aff = affine::from_spacing([1.0; 3]);
    let msg = |r: segvol::Result<CtVolume>| r.unwrap_err().to_string();
    assert!(msg(CtVolume::from_array("x", [4, 4, 4], vec![0.0; 63], aff)).contains("63 voxels"));
    assert!(msg(CtVolume::from_array("x", [0, 4, 4], vec![], aff)).contains("every axis"));
    let mut sing = aff;
    sing[2][2] = 0.0;
    assert!(msg(CtVolume::from_array("x", [4, 4, 4], vec![0.0; 64], sing)).contains("singular"));
    let mut nan = aff;
    nan[0][3] = f64::NAN;
    assert!(msg(CtVolume::from_array("x", [4, 4, 4], vec![0.0; 64], nan)).contains("non-finite"));

    let e = Arc::new(Engine::synthetic_tiny().unwrap());
    let mut data: Vec<f32> = (0..32 * 32 * 16).map(|n| (n % 101) as f32).collect();
    let ok = CtVolume::from_array("ok", [32, 32, 16], data.clone(), aff).unwrap();
    let none = Request::default();
    assert!(e
        .segment_volume(&ok, &none, &Options::default())
        .unwrap_err()
        .to_string()
        .contains("at least one prompt"));
    data[5] = f32::NAN;
    let bad = CtVolume::from_array("nan", [32, 32, 16], data, aff).unwrap();
    let mut s = Session::new(e);
    assert!(s
        .add_text("liver")
        .unwrap_err()
        .to_string()
        .contains("set_image"));
    assert!(s.set_image(bad).unwrap_err().to_string().contains("NaN"));
    assert!(s.mask().is_none());
}

#[test]
fn session_reuses_embeddings_and_survives_bad_prompts() {
    let Some(path) = fixture("data/example_ct_sm.nii.gz") else {
        return;
    };
    let e = engine();
    let mut s = Session::new(e.clone());
    s.set_image_file(&path).unwrap();

    let first = s.add_text("liver").unwrap().clone();
    assert!(first.timings.zoom_out_encode.as_nanos() > 0);
    assert!(
        first.timings.windows_encoded > 0,
        "the test needs zoom-in windows"
    );

    // A second prompt on the same object: no zoom-out encoder pass, and the
    // windows seen before come from the cache.
    let second = s
        .add_box([41.0, 25.0, 0.0, 105.0, 86.0, 29.0])
        .unwrap()
        .clone();
    assert_eq!(second.timings.zoom_out_encode.as_nanos(), 0);
    assert!(second.timings.windows_reused > 0, "{:?}", second.timings);

    // The session's mask is the one-call helper's for the same prompts.
    let req = Request::text("liver").with_box([41.0, 25.0, 0.0, 105.0, 86.0, 29.0]);
    let once = e.segment_file(&path, &req, &Options::default()).unwrap();
    assert_eq!(second.labels, once.labels);

    // A click outside the volume is refused and leaves the session as it was.
    let err = s.add_point([1e6, 0.0, 0.0], true).unwrap_err().to_string();
    assert!(err.contains("outside the volume"), "{err}");
    assert!(s.add_point([f64::NAN, 0.0, 0.0], true).is_err());
    assert_eq!(s.mask().unwrap().labels, second.labels);
    let third = s.add_point([60.0, 48.0, 15.0], true).unwrap().clone();
    let req = req.with_point([60.0, 48.0, 15.0], true);
    assert_eq!(
        third.labels,
        e.segment_file(&path, &req, &Options::default())
            .unwrap()
            .labels
    );

    // reset forgets the prompts, not the image's embeddings.
    s.reset();
    assert!(s.mask().is_none());
    let again = s.add_text("liver").unwrap();
    assert_eq!(again.timings.zoom_out_encode.as_nanos(), 0);
    assert_eq!(again.labels, first.labels);
}
