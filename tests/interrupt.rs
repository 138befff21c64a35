//! Interrupted runs leave nothing behind: the temporary-file registry's
//! sweep (the signal path, tested in its own process because it closes the
//! registry for good), and the real binary stopped by SIGINT and SIGTERM in
//! the middle of writing a file, with an existing output left as it was.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use segvol::tempfiles::{live, remove_all_then, TempFile, INTERRUPTED_EXIT};

const BIN: &str = env!("CARGO_BIN_EXE_segvol");

fn fresh_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("interrupt-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn sweep_removes_live_files_and_refuses_new_ones() {
    let dir = fresh_dir("sweep");
    let (a, _fa) = TempFile::create_for(&dir.join("out.nii.gz")).unwrap();
    let (b, _fb) = TempFile::create_for(&dir.join("summary.json")).unwrap();
    let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
    assert!(pa.exists() && pb.exists());
    assert_eq!(live().len(), 2);
    let removed = remove_all_then(|n| n);
    assert_eq!(removed, 2);
    assert!(!pa.exists() && !pb.exists());
    assert!(live().is_empty());
    // After the sweep (the process is about to exit) nothing new may appear.
    let e = TempFile::create_for(&dir.join("late.nii")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Interrupted);
    assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
    // The guards' own cleanup finds nothing left to do.
    drop(a);
    drop(b);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts `segvol synth-weights --config default` (a 724 MB file written
/// tensor by tensor, several seconds), waits until its temporary file holds
/// data, sends `signal`, and checks what is left.
fn interrupt_synth(signal: &str) {
    let dir = fresh_dir(signal);
    let target = dir.join("weights.safetensors");
    std::fs::write(&target, b"previous output").unwrap();
    let mut child = Command::new(BIN)
        .args(["synth-weights", "--config", "default", "-o"])
        .arg(&target)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let tmp = loop {
        let found = entries(&dir)
            .into_iter()
            .find(|n| n.ends_with(".segvol.tmp"))
            .map(|n| dir.join(n));
        if let Some(p) = found.filter(|p| p.metadata().is_ok_and(|m| m.len() > 1 << 20)) {
            break p;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("finished ({st}) before it could be interrupted");
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no temporary file appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let kill = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INTERRUPTED_EXIT), "{stderr}");
    assert!(
        stderr.contains("interrupted; removed 1 temporary file"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!tmp.exists());
    assert_eq!(entries(&dir), vec!["weights.safetensors".to_string()]);
    assert_eq!(std::fs::read(&target).unwrap(), b"previous output");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigint_while_writing_removes_the_temporary_file() {
    interrupt_synth("-INT");
}

#[test]
fn sigterm_while_writing_removes_the_temporary_file() {
    interrupt_synth("-TERM");
}
