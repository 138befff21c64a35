//! The `segvol` binary for integration tests: the command, a scratch folder
//! per test binary, and tiny synthetic weights written once as a file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_segvol"))
}

/// `target/tmp/<test binary>`, created on first use.
pub fn tmp() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(env!("CARGO_CRATE_NAME"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Tiny synthetic weights as a file (so the CLI and the library load the
/// same bytes), written once per test binary.
pub fn tiny_weights() -> &'static Path {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| {
        let p = tmp().join("tiny.safetensors");
        let out = bin()
            .args(["synth-weights", "--config", "tiny", "-o"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        p
    })
}

/// `cmd` with the Hugging Face cache at `home` and no way to the network:
/// offline mode, and an endpoint nothing listens on should it be tried.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn offline_hub<'c>(cmd: &'c mut Command, home: &Path) -> &'c mut Command {
    cmd.env("HF_HOME", home)
        .env_remove("HF_HUB_CACHE")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
}
