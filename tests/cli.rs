//! The `segvol` binary on its success paths, with the tiny synthetic weights
//! (fast) on the fixtures' small CT.

mod common;

use std::process::Command;

use common::cli::{bin, offline_hub, tiny_weights, tmp};
use common::fixture;
use segvol::io::nifti::read_ct;

fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "command failed:\nstdout: {so}\nstderr: {se}"
    );
    assert!(!se.contains("panicked"), "{se}");
    (so, se)
}

#[test]
fn segment_one_and_two_categories_keep_the_geometry() {
    let Some(ct) = fixture("data/example_ct_sm.nii.gz") else {
        return;
    };
    let d = tmp();
    let (one, two, json) = (d.join("one.nii.gz"), d.join("two.nii"), d.join("two.json"));
    run_ok(
        bin()
            .arg("segment")
            .arg(&ct)
            .arg("-o")
            .arg(&one)
            .arg("--weights")
            .arg(tiny_weights())
            .args(["--text", "liver", "--device", "cpu"]),
    );
    run_ok(
        bin()
            .arg("segment")
            .arg(&ct)
            .arg("-o")
            .arg(&two)
            .arg("--weights")
            .arg(tiny_weights())
            .args(["--text", "liver", "--text", "spleen", "--json"])
            .arg(&json),
    );
    let src = read_ct(&ct).unwrap();
    for (p, max_label) in [(&one, 1.0), (&two, 2.0)] {
        let m = read_ct(p).unwrap();
        assert_eq!(m.dims, src.dims);
        assert_eq!(m.affine(), src.affine());
        assert_eq!(m.header.sform_code, src.header.sform_code);
        assert_eq!(m.header.qform_code, src.header.qform_code);
        assert!(m
            .data
            .iter()
            .all(|&v| v == v.round() && (0.0..=max_label).contains(&v)));
        assert!(m.data.contains(&max_label));
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let cats = summary["categories"].as_array().unwrap();
    assert_eq!(cats.len(), 2);
    assert_eq!(cats[1]["name"], "spleen");
    let lm = read_ct(&two).unwrap();
    for (i, c) in cats.iter().enumerate() {
        let n = lm.data.iter().filter(|&&v| v == (i + 1) as f32).count();
        assert_eq!(c["voxels"].as_u64().unwrap() as usize, n);
    }
    assert!(summary["timings_s"]["total"].as_f64().unwrap() > 0.0);
}

#[test]
fn world_frame_box_equals_voxel_frame_box() {
    let Some(ct) = fixture("data/example_ct_sm.nii.gz") else {
        return;
    };
    let src = read_ct(&ct).unwrap();
    let (a, b) = ([41.0, 25.0, 0.0], [105.0, 86.0, 29.0]);
    let (wa, wb) = (src.voxel_to_world(a), src.voxel_to_world(b));
    let d = tmp();
    let (vox, world) = (d.join("vox.nii"), d.join("world.nii"));
    let vbox = format!("{},{},{},{},{},{}", a[0], a[1], a[2], b[0], b[1], b[2]);
    let wbox = format!(
        "{},{},{},{},{},{}",
        wa[0], wa[1], wa[2], wb[0], wb[1], wb[2]
    );
    run_ok(
        bin()
            .arg("segment")
            .arg(&ct)
            .arg("-o")
            .arg(&vox)
            .arg("--weights")
            .arg(tiny_weights())
            .args(["--box", &vbox]),
    );
    run_ok(
        bin()
            .arg("segment")
            .arg(&ct)
            .arg("-o")
            .arg(&world)
            .arg("--weights")
            .arg(tiny_weights())
            .args(["--frame", "world", "--box", &wbox]),
    );
    assert_eq!(read_ct(&vox).unwrap().data, read_ct(&world).unwrap().data);
}

#[test]
fn points_are_deterministic_for_a_seed() {
    let Some(ct) = fixture("data/example_ct_sm.nii.gz") else {
        return;
    };
    let d = tmp();
    let outs: Vec<Vec<f32>> = ["p1.nii", "p2.nii"]
        .iter()
        .map(|n| {
            let o = d.join(n);
            run_ok(
                bin()
                    .arg("segment")
                    .arg(&ct)
                    .arg("-o")
                    .arg(&o)
                    .arg("--weights")
                    .arg(tiny_weights())
                    .args([
                        "--point",
                        "60,48,15",
                        "--point",
                        "70,50,16,1",
                        "--point",
                        "10,10,3,0",
                        "--seed",
                        "7",
                    ]),
            );
            read_ct(&o).unwrap().data
        })
        .collect();
    assert_eq!(outs[0], outs[1]);
}

#[test]
fn eval_reports_dice() {
    let (Some(ct), Some(gt)) = (
        fixture("data/example_ct_sm.nii.gz"),
        fixture("data/example_seg.nii.gz"),
    ) else {
        return;
    };
    let json = tmp().join("eval.json");
    let (stdout, _) = run_ok(
        bin()
            .arg("eval")
            .arg(&ct)
            .arg("--labels-from")
            .arg(&gt)
            .args([
                "--class", "5=liver", "--class", "1=spleen", "--prompt", "box+text",
            ])
            .arg("--weights")
            .arg(tiny_weights())
            .arg("--json")
            .arg(&json),
    );
    assert!(
        stdout.contains("liver") && stdout.contains("Dice(+1)"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = v["classes"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let (d, d1) = (
            r["dice"].as_f64().unwrap(),
            r["dice_plus1_demo"].as_f64().unwrap(),
        );
        assert!((0.0..=1.0).contains(&d) && d1 <= d + 1e-12);
    }
}

#[test]
fn inspect_convert_and_refuse() {
    let d = tmp();
    let (so, _) = run_ok(bin().arg("inspect").arg(tiny_weights()));
    assert!(so.contains("OK: SegVol checkpoint, config tiny"), "{so}");
    let conv = d.join("converted.safetensors");
    run_ok(
        bin()
            .arg("convert")
            .arg(tiny_weights())
            .arg("-o")
            .arg(&conv),
    );
    run_ok(bin().arg("inspect").arg(&conv));
    // A safetensors file that is not SegVol: inspect says what is wrong, exit 1.
    let other = d.join("other.safetensors");
    let data = vec![0u8; 16];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &data).unwrap();
    safetensors::serialize_to_file([("encoder.layer.0.weight", view)], None, &other).unwrap();
    let out = bin().arg("inspect").arg(&other).output().unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("missing"), "{text}");
}

#[test]
fn bench_prints_a_table() {
    let (so, _) = run_ok(bin().args([
        "bench",
        "--config",
        "tiny",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--phantom",
        "64,64,16",
        "--device",
        "cpu",
    ]));
    assert!(
        so.contains("encoder forward") && so.contains("re-prompt"),
        "{so}"
    );
}

/// `segvol categories` lists the 222 training names (and as JSON with their
/// datasets); a text prompt outside them warns with the nearest names and
/// still runs; a known one does not warn.
#[test]
fn categories_and_the_unknown_name_warning() {
    let (out, _) = run_ok(bin().arg("categories"));
    assert!(out.lines().any(|l| l.starts_with("liver ")), "{out}");
    assert!(out.contains("222 names from 25 datasets"), "{out}");
    let json = tmp().join("categories.json");
    run_ok(bin().args(["categories", "--json"]).arg(&json));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["categories"].as_array().unwrap().len(), 222);
    assert_eq!(v["datasets"].as_array().unwrap().len(), 25);

    let Some(ct) = fixture("data/example_ct_sm.nii.gz") else {
        return;
    };
    let out_path = tmp().join("typo.nii.gz");
    let segment = |text: &str| {
        run_ok(
            bin()
                .arg("segment")
                .arg(&ct)
                .arg("-o")
                .arg(&out_path)
                .arg("--weights")
                .arg(tiny_weights())
                .args(["--text", text, "--device", "cpu", "--no-zoom-in"]),
        )
        .1
    };
    let err = segment("liverr");
    assert!(
        err.contains("\"liverr\" is not one of the names") && err.contains("nearest: liver"),
        "{err}"
    );
    assert!(out_path.exists());
    let err = segment("Liver");
    assert!(!err.contains("warning"), "{err}");
}

/// `HF_HUB_OFFLINE` with an empty Hugging Face cache: no download is tried,
/// and the message says why and what to do.
#[test]
fn offline_without_cached_weights_says_so() {
    let Some(ct) = fixture("data/example_ct_sm.nii.gz") else {
        return;
    };
    let home = tmp().join("empty-hf-home");
    std::fs::create_dir_all(&home).unwrap();
    let out = offline_hub(&mut bin(), &home)
        .arg("segment")
        .arg(&ct)
        .arg("-o")
        .arg(tmp().join("never.nii.gz"))
        .args(["--text", "liver", "--device", "cpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("HF_HUB_OFFLINE is set") && err.contains("--weights"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!tmp().join("never.nii.gz").exists());
}
