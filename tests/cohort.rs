//! Cohort runs of `segvol segment` (several CTs, a folder, a CSV manifest)
//! and the quiet flag, with the tiny synthetic weights on small generated
//! phantoms, so nothing here needs the fixtures.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::SystemTime;

use common::cli::{bin, tiny_weights, tmp};
use common::gen::{f32_bytes, gzip, phantom_ct, Hdr};
use segvol::io::nifti::read_ct;

/// A fresh folder for one test.
fn fresh(name: &str) -> PathBuf {
    let d = tmp().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn phantom(path: &Path, dims: [i16; 3]) {
    std::fs::write(path, gzip(&phantom_ct(dims))).unwrap();
}

/// The arguments as `OsString`s: paths and strings mixed.
macro_rules! argv {
    ($($x:expr),* $(,)?) => { vec![$(OsString::from($x)),*] };
}

fn segment(args: Vec<OsString>) -> Output {
    bin()
        .arg("segment")
        .args(args)
        .arg("--weights")
        .arg(tiny_weights())
        .args(["--device", "cpu"])
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

/// A folder of four CTs, the second truncated and the third all NaN: the
/// good ones are segmented, the bad ones are named in the summary with the
/// reason, and the exit status says the run had failures. A second run
/// with --skip-existing leaves the finished cases alone (same files, same
/// modification times) and retries the failed ones.
#[test]
fn a_broken_case_is_reported_and_skipped_and_resume_keeps_finished_ones() {
    let d = fresh("broken");
    let (cts, out) = (d.join("cts"), d.join("out"));
    std::fs::create_dir_all(&cts).unwrap();
    phantom(&cts.join("a.nii.gz"), [40, 36, 24]);
    let good = gzip(&phantom_ct([36, 32, 20]));
    std::fs::write(cts.join("b_truncated.nii.gz"), &good[..good.len() / 2]).unwrap();
    let nan = vec![f32::NAN; 30 * 30 * 20];
    std::fs::write(
        cts.join("c_nan.nii"),
        Hdr::new(&[30, 30, 20], 16, 32).file(&f32_bytes(&nan)),
    )
    .unwrap();
    phantom(&cts.join("d.nii.gz"), [36, 40, 20]);
    // Not a CT: ignored by the folder listing.
    std::fs::write(cts.join("notes.txt"), "x").unwrap();

    let run = |extra: &[&str]| {
        let mut a = argv![&cts, "--output-dir", &out, "--text", "liver"];
        a.extend(extra.iter().map(OsString::from));
        segment(a)
    };
    let first = run(&[]);
    let err = text(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("segvol: error: 2 of 4 cases failed (b_truncated, c_nan)"),
        "{err}"
    );
    for name in ["a", "d"] {
        let lm = read_ct(&out.join(format!("{name}.nii.gz"))).unwrap();
        assert!(lm.data.iter().all(|&v| v == 0.0 || v == 1.0));
        assert!(out.join(format!("{name}.json")).is_file());
    }
    assert!(!out.join("b_truncated.nii.gz").exists());
    assert!(!out.join("c_nan.nii.gz").exists());

    let s = summary(&out);
    assert_eq!(
        (s["done"].as_u64(), s["failed"].as_u64()),
        (Some(2), Some(2))
    );
    let cases = s["cases"].as_array().unwrap();
    let names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b_truncated", "c_nan", "d"]);
    let status: Vec<&str> = cases
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["done", "failed", "failed", "done"]);
    let why_b = cases[1]["error"].as_str().unwrap();
    assert!(why_b.contains("b_truncated.nii.gz"), "{why_b}");
    let why_c = cases[2]["error"].as_str().unwrap();
    assert!(why_c.contains("NaN"), "{why_c}");
    assert!(cases[0]["categories"][0]["voxels"].as_u64().unwrap() > 0);
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "name,input,output,status,seconds,error");
    assert!(rows[2].starts_with("b_truncated,") && rows[2].contains(",failed,"));
    assert!(rows[3].starts_with("c_nan,") && rows[3].contains("NaN"));

    // Resume: the finished cases are not recomputed.
    let before = [mtime(&out.join("a.nii.gz")), mtime(&out.join("d.json"))];
    let second = run(&["--skip-existing"]);
    let err = text(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains("2 of 4 cases already done (--skip-existing)"),
        "{err}"
    );
    assert!(!err.contains("1/4 a: reading CT"), "{err}");
    assert!(err.contains("2/4 b_truncated: reading CT"), "{err}");
    assert_eq!(
        before,
        [mtime(&out.join("a.nii.gz")), mtime(&out.join("d.json"))]
    );
    let status: Vec<String> = summary(&out)["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(status, ["skipped", "failed", "failed", "skipped"]);

    // With the bad files gone, the resumed run succeeds and still skips.
    std::fs::remove_file(cts.join("b_truncated.nii.gz")).unwrap();
    std::fs::remove_file(cts.join("c_nan.nii")).unwrap();
    let third = run(&["--skip-existing"]);
    assert!(third.status.success(), "{}", text(&third.stderr));
    assert_eq!(summary(&out)["skipped"].as_u64(), Some(2));
}

/// A manifest gives each case its own prompts: two texts (labels 1 and 2),
/// a box in a quoted cell, nothing (the command line's text), and a bad
/// box, which fails that case only. A relative output goes under
/// --output-dir, into a subfolder made for it.
#[test]
fn a_manifest_gives_per_case_prompts() {
    let d = fresh("manifest");
    for n in ["p", "q", "r", "s"] {
        phantom(&d.join(format!("{n}.nii.gz")), [40, 36, 24]);
    }
    let manifest = d.join("cases.csv");
    std::fs::write(
        &manifest,
        "input,text,box,output,labels\n\
         p.nii.gz,liver;spleen,,,\n\
         q.nii.gz,,\"4,4,2,30,28,18\",boxes/q_box.nii.gz,tumour\n\
         r.nii.gz,,,,\n\
         s.nii.gz,,\"1,2,3\",,\n",
    )
    .unwrap();
    let out = d.join("out");
    let o = segment(argv![
        "--manifest",
        &manifest,
        "--output-dir",
        &out,
        "--text",
        "kidney"
    ]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("1 of 4 cases failed (s)"), "{err}");

    let p = read_ct(&out.join("p.nii.gz")).unwrap();
    assert!(p.data.iter().all(|&v| [0.0, 1.0, 2.0].contains(&v)));
    let names = |json: &Path| -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        v["categories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&out.join("p.json")), ["liver", "spleen"]);
    assert_eq!(names(&out.join("boxes/q_box.json")), ["tumour"]);
    assert!(out.join("boxes/q_box.nii.gz").is_file());
    assert_eq!(names(&out.join("r.json")), ["kidney"]);
    let s = summary(&out);
    let bad = &s["cases"][3];
    assert_eq!(bad["status"], "failed");
    let why = bad["error"].as_str().unwrap();
    assert!(
        why.contains("manifest row 5") && why.contains("--box"),
        "{why}"
    );
}

/// An unknown manifest column, a cohort run without --output-dir, -o with
/// a cohort, and one CT without -o: refused before any work, in one line.
#[test]
fn cohort_misuse_is_refused_up_front() {
    let d = fresh("misuse");
    let (a, b) = (d.join("a.nii.gz"), d.join("b.nii.gz"));
    phantom(&a, [30, 30, 20]);
    phantom(&b, [30, 30, 20]);
    let manifest = d.join("m.csv");
    std::fs::write(&manifest, "input,txt\na.nii.gz,liver\n").unwrap();
    // The same file name in another folder: both would write a.nii.gz.
    std::fs::create_dir_all(d.join("sub")).unwrap();
    let a2 = d.join("sub/a.nii.gz");
    phantom(&a2, [30, 30, 20]);
    let out = d.join("out");
    let cases: [(Vec<OsString>, &str); 5] = [
        (
            argv!["--manifest", &manifest, "--output-dir", &out],
            "unknown column \"txt\"",
        ),
        (argv![&a, &b], "needs --output-dir"),
        (argv![&a, &b, "-o", &out], "-o names one file"),
        (argv![&a], "-o OUTPUT is required"),
        (
            argv![&a, &a2, "--output-dir", &out],
            "two cases would write",
        ),
    ];
    for (mut args, want) in cases {
        args.extend(argv!["--text", "liver"]);
        let o = segment(args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].starts_with("segvol: error: ") && lines[0].contains(want),
            "{err}"
        );
    }
    assert!(!out.exists());
}

/// `-q` prints nothing at all on success, for one CT and for a cohort;
/// `-v` adds the pipeline's own stages.
#[test]
fn quiet_prints_nothing_and_verbose_shows_the_pipeline() {
    let d = fresh("quiet");
    let ct = d.join("ct.nii.gz");
    phantom(&ct, [40, 36, 24]);
    let single = segment(argv![
        "-q",
        &ct,
        "-o",
        d.join("ct_seg.nii.gz"),
        "--text",
        "liver"
    ]);
    assert!(single.status.success());
    assert_eq!(
        (text(&single.stdout), text(&single.stderr)),
        (String::new(), String::new())
    );
    assert!(d.join("ct_seg.nii.gz").is_file());

    let out = d.join("out");
    let cohort = segment(argv![
        &ct,
        "--output-dir",
        &out,
        "--text",
        "liver",
        "--quiet"
    ]);
    assert!(cohort.status.success());
    assert_eq!(
        (text(&cohort.stdout), text(&cohort.stderr)),
        (String::new(), String::new())
    );
    assert_eq!(summary(&out)["done"].as_u64(), Some(1));

    let verbose = segment(argv![
        "-v",
        &ct,
        "-o",
        d.join("ct_seg2.nii.gz"),
        "--text",
        "liver"
    ]);
    let err = text(&verbose.stderr);
    assert!(verbose.status.success(), "{err}");
    assert!(err.contains("debug: zoom-out pass (1 category)"), "{err}");
    assert!(!err.contains("trace:"), "{err}");
}
