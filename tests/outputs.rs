//! `segment`'s extra outputs through the binary (tiny synthetic weights on
//! the fixtures' small CT): per-category files, label sidecars, statistics,
//! the PNG preview, `--text all` / `--roi-subset`, and the JSON envelope all
//! three commands share. The statistics are also checked against numpy by
//! `scripts/ci-outputs.sh`.

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{bin, tiny_weights, tmp};
use common::fixture;
use segvol::io::nifti::read_ct;
use segvol::report::envelope::{ENVELOPE_KEYS, SCHEMA_VERSION};
use segvol::report::labels::category_color;
use segvol::report::preview::render;
use segvol::report::statistics::voxel_volume_ml;
use segvol::vocabulary::categories;
use serde_json::Value;

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "command failed:\n{se}");
    assert!(!se.contains("panicked"), "{se}");
    se
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn assert_envelope(v: &Value, command: &str) {
    for k in ENVELOPE_KEYS {
        assert!(v.get(k).is_some(), "{command}: no {k:?} in {v}");
    }
    assert_eq!(v["schema_version"], SCHEMA_VERSION);
    assert_eq!(v["command"], command);
    assert_eq!(v["engine"]["name"], "segvol");
    assert_eq!(v["engine"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["device"].as_str().unwrap().starts_with("cpu"), "{v}");
    assert!(v["host"]["os"].is_string() && v["host"]["arch"].is_string());
    if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        assert!(v["host"]["cpu_model"].is_string(), "{}", v["host"]);
    }
}

fn decode_png(p: &Path) -> (usize, usize, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

#[test]
fn split_sidecars_statistics_and_preview() {
    let Some(ct_path) = fixture("data/example_ct_sm.nii.gz") else {
        return;
    };
    let d = tmp().join("full");
    std::fs::create_dir_all(&d).unwrap();
    let (lm_path, json, png_path) = (d.join("case1.nii.gz"), d.join("s.json"), d.join("p.png"));
    run_ok(
        bin()
            .arg("segment")
            .arg(&ct_path)
            .arg("-o")
            .arg(&lm_path)
            .arg("--weights")
            .arg(tiny_weights())
            .args(["--device", "cpu", "--text", "liver"])
            .args([
                "--roi-subset",
                "spleen,kidney left",
                "--split",
                "--statistics",
            ])
            .arg("--preview")
            .arg(&png_path)
            .arg("--json")
            .arg(&json),
    );
    let names = ["liver", "spleen", "kidney left"];
    let ct = read_ct(&ct_path).unwrap();
    let lm = read_ct(&lm_path).unwrap();
    let labels: Vec<u16> = lm.data.iter().map(|&v| v as u16).collect();
    let v = read_json(&json);
    assert_envelope(&v, "segment");
    let cats = v["categories"].as_array().unwrap();
    assert_eq!(cats.len(), 3);

    // --split: one 0/1 file per category, in the CT's geometry.
    for (c, name) in names.iter().enumerate() {
        let file = d
            .join("case1")
            .join(format!("{}.nii.gz", name.replace(' ', "_")));
        let m = read_ct(&file).unwrap();
        assert_eq!(m.dims, ct.dims);
        assert_eq!(m.affine(), ct.affine());
        assert_eq!(m.header.sform_code, ct.header.sform_code);
        let want = labels.iter().map(|&l| f32::from(l == c as u16 + 1));
        assert!(m.data.iter().copied().eq(want), "{name}");
        assert_eq!(v["outputs"]["split"][c], file.to_str().unwrap());
    }

    // Sidecars: value → name and colour, in three formats.
    let side = read_json(&d.join("case1.labels.json"));
    let ctbl = std::fs::read_to_string(d.join("case1.ctbl")).unwrap();
    let itk = std::fs::read_to_string(d.join("case1.itksnap.txt")).unwrap();
    let ctbl_rows: Vec<Vec<&str>> = ctbl
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let itk_rows: Vec<&str> = itk.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!((ctbl_rows.len(), itk_rows.len()), (4, 4));
    for (c, name) in names.iter().enumerate() {
        let [r, g, b] = category_color(name);
        let e = &side["labels"][c];
        assert_eq!(
            (e["value"].as_u64(), e["name"].as_str()),
            (Some(c as u64 + 1), Some(*name))
        );
        assert_eq!(e["color"], serde_json::json!([r, g, b]));
        assert_eq!(
            e["file"],
            format!("case1/{}.nii.gz", name.replace(' ', "_"))
        );
        let rgb = [r, g, b].map(|x| x.to_string());
        let value = (c + 1).to_string();
        assert_eq!(
            ctbl_rows[c + 1],
            [
                value.as_str(),
                &name.replace(' ', "_"),
                &rgb[0],
                &rgb[1],
                &rgb[2],
                "255"
            ]
        );
        let f: Vec<&str> = itk_rows[c + 1].split_whitespace().collect();
        assert_eq!(f[..4], [value.as_str(), &rgb[0], &rgb[1], &rgb[2]]);
        assert!(itk_rows[c + 1].ends_with(&format!("\"{name}\"")));
    }

    // Statistics: recomputed here in the plainest way.
    let voxel_ml = voxel_volume_ml(&ct.affine());
    for (c, cat) in cats.iter().enumerate() {
        let hu: Vec<f64> = labels
            .iter()
            .zip(&ct.data)
            .filter(|(&l, _)| l == c as u16 + 1)
            .map(|(_, &x)| f64::from(x))
            .collect();
        let s = &cat["statistics"];
        assert_eq!(s["voxels"].as_u64().unwrap() as usize, hu.len());
        assert_eq!(cat["voxels"], s["voxels"]);
        let vol = s["volume_ml"].as_f64().unwrap();
        assert!((vol - hu.len() as f64 * voxel_ml).abs() < 1e-9 * vol.max(1.0));
        if hu.is_empty() {
            assert!(s["hu"].is_null());
            continue;
        }
        let mean = hu.iter().sum::<f64>() / hu.len() as f64;
        let std = (hu.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / hu.len() as f64).sqrt();
        assert!((s["hu"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9 * mean.abs().max(1.0));
        assert!((s["hu"]["std"].as_f64().unwrap() - std).abs() < 1e-9 * std.max(1.0));
        let mut sorted = hu.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(s["hu"]["min"].as_f64().unwrap(), sorted[0]);
        assert_eq!(s["hu"]["max"].as_f64().unwrap(), *sorted.last().unwrap());
        let median = s["hu"]["p50"].as_f64().unwrap();
        let below = sorted.iter().filter(|&&x| x < median).count();
        let above = sorted.iter().filter(|&&x| x > median).count();
        assert!(below <= hu.len() / 2 && above <= hu.len() / 2);
    }
    assert!(v["statistics_definitions"]["percentiles"]
        .as_str()
        .unwrap()
        .contains("linear"));

    // Preview: 3 panels of 256 px per non-empty category; overlay exactly
    // where the label map has a label.
    let (w, h, px) = decode_png(&png_path);
    let nonempty = cats
        .iter()
        .filter(|c| c["voxels"].as_u64() > Some(0))
        .count();
    assert!(nonempty > 0);
    assert_eq!((w, h), (768, 256 * nonempty));
    assert_eq!(v["outputs"]["preview"]["width"], 768);
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let layout = render(&ct, &labels, &names).unwrap().layout;
    let (mut coloured, mut plain) = (0, 0);
    for y in 0..h {
        for x in 0..w {
            if x % 256 < 12 && y % 256 < 12 {
                continue; // the row's colour swatch
            }
            let p = &px[(y * w + x) * 3..][..3];
            match layout.voxel_at(x, y) {
                None => assert_eq!(p, [0, 0, 0], "padding at ({x}, {y})"),
                Some([i, j, k]) => {
                    let l = labels[ct.index(i, j, k)];
                    let grey = p[0] == p[1] && p[1] == p[2];
                    assert_eq!(grey, l == 0, "pixel ({x}, {y}) over voxel ({i}, {j}, {k})");
                    if l == 0 {
                        plain += 1;
                    } else {
                        coloured += 1;
                        // The blend leans to the category's colour.
                        let col = category_color(&names[l as usize - 1]);
                        let top = (0..3).max_by_key(|&a| col[a]).unwrap();
                        assert!(p.iter().all(|&q| q <= p[top]), "{p:?} vs {col:?}");
                    }
                }
            }
        }
    }
    assert!(coloured > 1000 && plain > 1000, "{coloured} {plain}");
}

#[test]
fn text_all_segments_every_vocabulary_name() {
    let Some(ct) = fixture("data/example_ct_sm.nii.gz") else {
        return;
    };
    let d = tmp();
    let (out, json) = (d.join("all.nii.gz"), d.join("all.json"));
    // Zoom-out only: 222 categories stay quick with the tiny weights.
    run_ok(
        bin()
            .arg("segment")
            .arg(&ct)
            .arg("-o")
            .arg(&out)
            .arg("--weights")
            .arg(tiny_weights())
            .args(["--device", "cpu", "--text", "all", "--no-zoom-in", "--json"])
            .arg(&json),
    );
    let v = read_json(&json);
    let got: Vec<&str> = v["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(got, categories());
    let side = read_json(&d.join("all.labels.json"));
    assert_eq!(side["labels"].as_array().unwrap().len(), 222);
}

#[test]
fn eval_and_bench_carry_the_envelope() {
    let json = tmp().join("bench.json");
    run_ok(
        bin()
            .args(["bench", "--config", "tiny", "--iters", "1", "--warmup", "0"])
            .args(["--phantom", "48,48,12", "--device", "cpu", "--json"])
            .arg(&json),
    );
    let v = read_json(&json);
    assert_envelope(&v, "bench");
    assert!(v["rows"].as_array().unwrap().len() >= 4);

    let (Some(ct), Some(gt)) = (
        fixture("data/example_ct_sm.nii.gz"),
        fixture("data/example_seg.nii.gz"),
    ) else {
        return;
    };
    let json = tmp().join("eval-envelope.json");
    run_ok(
        bin()
            .arg("eval")
            .arg(&ct)
            .arg("--labels-from")
            .arg(&gt)
            .args(["--class", "5=liver", "--prompt", "box", "--no-zoom-in"])
            .args(["--device", "cpu", "--weights"])
            .arg(tiny_weights())
            .arg("--json")
            .arg(&json),
    );
    let v = read_json(&json);
    assert_envelope(&v, "eval");
    assert_eq!(v["classes"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_output_options_fail_before_any_work() {
    let Some(ct) = fixture("data/example_ct_sm.nii.gz") else {
        return;
    };
    let d = tmp().join("bad");
    std::fs::create_dir_all(&d).unwrap();
    let out = d.join("x.nii.gz");
    // A file where the --split folder would go.
    std::fs::write(d.join("y"), b"").unwrap();
    for (extra, want) in [
        (vec!["--preview", "p.jpg"], "must end in .png"),
        (vec!["--preview", "/no/such/dir/p.png"], "does not exist"),
        (vec!["--roi-subset", "liver,,spleen"], "empty name"),
    ] {
        let o = bin()
            .arg("segment")
            .arg(&ct)
            .arg("-o")
            .arg(&out)
            .arg("--weights")
            .arg(tiny_weights())
            .args(["--device", "cpu", "--text", "liver"])
            .args(&extra)
            .output()
            .unwrap();
        let se = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && se.contains(want), "{extra:?}: {se}");
        assert!(!se.contains("panicked") && !out.exists(), "{se}");
    }
    let o = bin()
        .arg("segment")
        .arg(&ct)
        .arg("-o")
        .arg(d.join("y.nii.gz"))
        .arg("--weights")
        .arg(tiny_weights())
        .args(["--device", "cpu", "--text", "liver", "--split"])
        .output()
        .unwrap();
    let se = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && se.contains("not a folder"), "{se}");
    assert!(!d.join("y.nii.gz").exists());
}
