//! `examples/c/segment.c` compiled with `cc` against `include/segvol.h` and
//! the cdylib, run on the fixtures' small CT with tiny synthetic weights; its
//! label map must equal `segvol segment`'s for the same prompts. Also the
//! ABI's refusals: NULL handles, wrong buffer lengths, bad strings.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use segvol_c::*;

/// target/release/deps: where the test runs from and cargo leaves the cdylib.
fn deps_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shared_ct() -> Option<PathBuf> {
    let dir = match std::env::var_os("SEGVOL_SHARED") {
        Some(d) => PathBuf::from(d),
        None => repo().join("../shared"),
    };
    let ct = dir.join("fixtures/data/example_ct_sm.nii.gz");
    if ct.exists() {
        Some(ct)
    } else {
        eprintln!("SKIP: {} not found (set SEGVOL_SHARED)", ct.display());
        None
    }
}

/// The `segvol` CLI of the same build (the root package's binary).
fn cli() -> PathBuf {
    let bin = deps_dir().join("../segvol");
    assert!(
        bin.exists(),
        "{} is missing: build the CLI first (cargo build --release), the test compares against it",
        bin.display()
    );
    bin
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed\nstdout: {so}\nstderr: {se}"
    );
    so.into_owned()
}

#[test]
fn c_example_equals_the_cli() {
    let Some(ct) = shared_ct() else {
        return;
    };
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi");
    std::fs::create_dir_all(&tmp).unwrap();
    let weights = tmp.join("tiny.safetensors");
    run(Command::new(cli())
        .args(["synth-weights", "--config", "tiny", "-o"])
        .arg(&weights));

    // Linked both ways: against the cdylib, and against the staticlib with
    // the system libraries Rust's std needs on Linux.
    let lib = deps_dir();
    let mut builds = vec![(
        "segment_c",
        vec![
            format!("-L{}", lib.display()),
            "-lsegvol_c".to_string(),
            format!("-Wl,-rpath,{}", lib.display()),
        ],
    )];
    if cfg!(target_os = "linux") {
        let mut args = vec![lib.join("libsegvol_c.a").display().to_string()];
        args.extend(
            [
                "-lgcc_s",
                "-lutil",
                "-lrt",
                "-lpthread",
                "-lm",
                "-ldl",
                "-lc",
            ]
            .map(String::from),
        );
        builds.push(("segment_c_static", args));
    }
    let box_ = ["41", "25", "0", "105", "86", "29"];
    let mut outputs = Vec::new();
    for (name, link) in builds {
        let exe = tmp.join(name);
        run(
            Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
                .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
                .arg(repo().join("examples/c/segment.c"))
                .arg("-I")
                .arg(repo().join("include"))
                .args(&link)
                .arg("-o")
                .arg(&exe),
        );
        let raw = tmp.join(format!("{name}.u16"));
        let stdout = run(Command::new(&exe)
            .arg(&weights)
            .arg(&ct)
            .arg(&raw)
            .arg("liver")
            .args(box_));
        assert!(stdout.contains("refused as expected: prompt"), "{stdout}");
        assert!(stdout.contains("differs in 0 voxels"), "{stdout}");
        outputs.push(raw);
    }

    let nii = tmp.join("cli.nii.gz");
    run(Command::new(cli())
        .arg("segment")
        .arg(&ct)
        .arg("-o")
        .arg(&nii)
        .arg("--weights")
        .arg(&weights)
        .args([
            "--device",
            "cpu",
            "--text",
            "liver",
            "--box",
            &box_.join(","),
        ]));
    let cli_labels: Vec<u16> = segvol::io::nifti::read_ct(&nii)
        .unwrap()
        .data
        .iter()
        .map(|&v| v as u16)
        .collect();
    assert!(
        cli_labels.contains(&1),
        "the comparison needs a non-empty mask"
    );
    for raw in outputs {
        let c_labels: Vec<u16> = std::fs::read(&raw)
            .unwrap()
            .chunks_exact(2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(c_labels, cli_labels, "{}", raw.display());
    }
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(segvol_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn refusals_are_status_codes_with_messages() {
    let mut model: *mut SegvolModel = std::ptr::null_mut();
    let missing = c"/nonexistent/weights.safetensors";
    assert_eq!(
        segvol_model_open(missing.as_ptr(), 0, &mut model),
        SegvolStatus::Io
    );
    assert!(model.is_null());
    assert!(
        last_error().contains("/nonexistent/weights.safetensors"),
        "{}",
        last_error()
    );
    assert_eq!(
        segvol_model_open(missing.as_ptr(), 0, std::ptr::null_mut()),
        SegvolStatus::InvalidArgument
    );
    assert!(last_error().contains("out is NULL"));

    let mut session: *mut SegvolSession = std::ptr::null_mut();
    assert_eq!(
        segvol_session_new(std::ptr::null(), &mut session),
        SegvolStatus::InvalidArgument
    );
    assert_eq!(
        segvol_session_add_text(std::ptr::null_mut(), c"liver".as_ptr()),
        SegvolStatus::InvalidArgument
    );
    let bad_utf8 = [0xffu8, 0];
    assert_eq!(
        segvol_ct_dims(bad_utf8.as_ptr().cast(), [0usize; 3].as_mut_ptr()),
        SegvolStatus::InvalidArgument
    );
    assert!(last_error().contains("not UTF-8"));
    segvol_model_free(std::ptr::null_mut());
    segvol_session_free(std::ptr::null_mut());

    // A real (tiny) model: in-memory volumes, wrong lengths, sessions.
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi");
    std::fs::create_dir_all(&tmp).unwrap();
    let w = tmp.join("tiny_lib.safetensors");
    segvol::weights::write::write_synth_safetensors(&segvol::ModelConfig::tiny(), &w).unwrap();
    let wc = std::ffi::CString::new(w.to_str().unwrap()).unwrap();
    assert_eq!(
        segvol_model_open(wc.as_ptr(), 1, &mut model),
        SegvolStatus::Ok
    );

    let dims = [32usize, 32, 16];
    let n = dims.iter().product::<usize>();
    let voxels: Vec<f32> = (0..n).map(|v| (v % 101) as f32).collect();
    let mut affine = [0f64; 16];
    for d in 0..4 {
        affine[5 * d] = 1.0;
    }
    let text = c"liver";
    let texts = [text.as_ptr()];
    let prompts = SegvolPrompts {
        texts: texts.as_ptr(),
        n_texts: 1,
        boxes: std::ptr::null(),
        n_boxes: 0,
        points: std::ptr::null(),
        n_points: 0,
        world_frame: 0,
        seed: 0,
        zoom_in: 1,
    };
    let mut labels = vec![0u16; n];
    let seg = |labels: &mut [u16], len: usize, prompts: &SegvolPrompts| {
        segvol_segment_volume(
            model,
            voxels.as_ptr(),
            dims.as_ptr(),
            affine.as_ptr(),
            prompts,
            labels.as_mut_ptr(),
            len,
        )
    };
    assert_eq!(
        seg(&mut labels, n - 1, &prompts),
        SegvolStatus::InvalidArgument
    );
    assert!(last_error().contains("elements"), "{}", last_error());
    assert_eq!(seg(&mut labels, n, &prompts), SegvolStatus::Ok);
    let no_prompt = SegvolPrompts {
        n_texts: 0,
        ..prompts
    };
    assert_eq!(seg(&mut labels, n, &no_prompt), SegvolStatus::Prompt);
    let bad_frame = SegvolPrompts {
        world_frame: 7,
        ..prompts
    };
    assert_eq!(
        seg(&mut labels, n, &bad_frame),
        SegvolStatus::InvalidArgument
    );

    assert_eq!(segvol_session_new(model, &mut session), SegvolStatus::Ok);
    let mut mask = vec![0u8; n];
    assert_eq!(
        segvol_session_add_text(session, text.as_ptr()),
        SegvolStatus::InvalidArgument
    );
    assert!(last_error().contains("set_image"));
    assert_eq!(
        segvol_session_set_image(session, voxels.as_ptr(), dims.as_ptr(), affine.as_ptr()),
        SegvolStatus::Ok
    );
    assert_eq!(
        segvol_session_mask(session, mask.as_mut_ptr(), n),
        SegvolStatus::InvalidArgument
    );
    assert_eq!(
        segvol_session_add_text(session, text.as_ptr()),
        SegvolStatus::Ok
    );
    assert_eq!(
        segvol_session_mask(session, mask.as_mut_ptr(), n),
        SegvolStatus::Ok
    );
    // The session's mask is the one-call label map for the same prompt.
    assert!(mask
        .iter()
        .zip(&labels)
        .all(|(&m, &l)| (m == 1) == (l == 1)));
    assert_eq!(segvol_session_reset(session), SegvolStatus::Ok);
    segvol_session_free(session);
    segvol_model_free(model);
}

#[test]
fn segment_file_fills_the_buffer_and_writes_the_nifti() {
    let Some(ct) = shared_ct() else {
        return;
    };
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi");
    std::fs::create_dir_all(&tmp).unwrap();
    let w = tmp.join("tiny_file.safetensors");
    segvol::weights::write::write_synth_safetensors(&segvol::ModelConfig::tiny(), &w).unwrap();
    let cstr = |p: &Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let mut model: *mut SegvolModel = std::ptr::null_mut();
    assert_eq!(
        segvol_model_open(cstr(&w).as_ptr(), 0, &mut model),
        SegvolStatus::Ok
    );

    let mut dims = [0usize; 3];
    assert_eq!(
        segvol_ct_dims(cstr(&ct).as_ptr(), dims.as_mut_ptr()),
        SegvolStatus::Ok
    );
    let n = dims.iter().product::<usize>();
    let texts = [c"liver".as_ptr()];
    let prompts = SegvolPrompts {
        texts: texts.as_ptr(),
        n_texts: 1,
        boxes: std::ptr::null(),
        n_boxes: 0,
        points: std::ptr::null(),
        n_points: 0,
        world_frame: 0,
        seed: 0,
        zoom_in: 1,
    };
    let mut labels = vec![0u16; n];
    // An output in a missing folder is refused before any work.
    let bad = tmp.join("no/such/dir/out.nii.gz");
    let st = segvol_segment_file(
        model,
        cstr(&ct).as_ptr(),
        &prompts,
        labels.as_mut_ptr(),
        n,
        cstr(&bad).as_ptr(),
    );
    assert_ne!(st, SegvolStatus::Ok);
    assert!(last_error().contains("no/such/dir"), "{}", last_error());

    let out = tmp.join("c_labels.nii.gz");
    let st = segvol_segment_file(
        model,
        cstr(&ct).as_ptr(),
        &prompts,
        labels.as_mut_ptr(),
        n,
        cstr(&out).as_ptr(),
    );
    assert_eq!(st, SegvolStatus::Ok, "{}", last_error());
    let written: Vec<u16> = segvol::io::nifti::read_ct(&out)
        .unwrap()
        .data
        .iter()
        .map(|&v| v as u16)
        .collect();
    assert_eq!(written, labels);
    assert!(labels.contains(&1));
    segvol_model_free(model);
}
