//! Temporary output files, registered while they exist so that an
//! interrupted run (SIGINT, SIGTERM) can remove them before it exits.
//!
//! Every output is written to a hidden temporary name beside its target and
//! renamed over it on success ([`TempFile::commit`]): a failed or interrupted
//! run never truncates an existing output and never leaves a partial one.
//! Creation and removal-on-signal take the same lock, and the signal path
//! exits while holding it, so a file cannot be created after the handler
//! has swept the registry.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Exit status of a run ended by SIGINT or SIGTERM (128 + SIGINT, as shells
/// report an interrupted command).
pub const INTERRUPTED_EXIT: i32 = 130;

struct Registry {
    live: Vec<PathBuf>,
    /// Set by the signal path: no new temporary file may appear after it.
    closing: bool,
}

fn registry() -> MutexGuard<'static, Registry> {
    static REG: Mutex<Registry> = Mutex::new(Registry {
        live: Vec::new(),
        closing: false,
    });
    // A panic while holding the lock cannot leave the list inconsistent
    // (every update is a single push or retain), so poisoning is ignored.
    REG.lock().unwrap_or_else(|p| p.into_inner())
}

/// A temporary file being written; removed on drop unless committed.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    done: bool,
}

/// The hidden temporary name for `target`: same folder (so the final rename
/// stays on one filesystem), dot-prefixed, with the process id and a counter.
pub fn temp_path_for(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    dir.join(format!(
        ".{name}.{}-{}.segvol.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

impl TempFile {
    /// Creates (exclusively) the temporary file for `target` and registers it.
    pub fn create_for(target: &Path) -> io::Result<(TempFile, File)> {
        Self::create_at(temp_path_for(target))
    }

    /// Creates (exclusively) `path` and registers it.
    pub fn create_at(path: PathBuf) -> io::Result<(TempFile, File)> {
        let mut reg = registry();
        if reg.closing {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the run is being interrupted",
            ));
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        reg.live.push(path.clone());
        Ok((TempFile { path, done: false }, file))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the finished file over `target` and forgets it.
    pub fn commit(mut self, target: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, target)?;
        self.done = true;
        unregister(&self.path);
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
            unregister(&self.path);
        }
    }
}

fn unregister(path: &Path) {
    registry().live.retain(|p| p != path);
}

/// Temporary files currently registered.
pub fn live() -> Vec<PathBuf> {
    registry().live.clone()
}

/// Removes every registered temporary file and refuses new ones; returns
/// how many files were removed. Leaves the lock held until `then` returns,
/// so the signal path can exit without a writer slipping a file in between.
pub fn remove_all_then<R>(then: impl FnOnce(usize) -> R) -> R {
    let mut reg = registry();
    reg.closing = true;
    let mut removed = 0;
    for p in reg.live.drain(..) {
        if std::fs::remove_file(&p).is_ok() {
            removed += 1;
        }
    }
    then(removed)
}

/// Installs the SIGINT/SIGTERM handler (the `ctrlc` crate, "termination"
/// feature): remove the temporary files, say so (an error-level `tracing`
/// event), exit 130. Safe to call more than once; later calls do nothing.
pub fn install_interrupt_handler() -> crate::Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            ctrlc::set_handler(|| {
                remove_all_then(|n| {
                    // A `tracing` event like every library message: the
                    // CLI's subscriber prints it as `segvol: error: ...` and
                    // ignores write errors (never eprintln!, which panics on a
                    // closed stderr and would leave this thread dead and the
                    // process deaf to SIGTERM). The exit follows regardless.
                    tracing::error!(
                        "interrupted; removed {n} temporary file{}",
                        if n == 1 { "" } else { "s" }
                    );
                    std::process::exit(INTERRUPTED_EXIT)
                })
            })
            .map_err(|e| format!("cannot install the interrupt handler: {e}"))
        })
        .clone()
        .map_err(crate::Error::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The sweep (`remove_all_then`) closes the process-wide registry for
    // good, so it is tested in its own process: tests/interrupt.rs.
    #[test]
    fn commit_renames_and_drop_removes() {
        let dir = std::env::temp_dir().join(format!("segvol-tempfiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("out.nii");

        std::fs::write(&target, b"old").unwrap();
        let (t, mut f) = TempFile::create_for(&target).unwrap();
        let tmp = t.path().to_path_buf();
        assert!(live().contains(&tmp));
        assert!(tmp
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".out.nii."));
        std::io::Write::write_all(&mut f, b"new").unwrap();
        drop(f);
        t.commit(&target).unwrap();
        assert!(!tmp.exists() && !live().contains(&tmp));
        assert_eq!(std::fs::read(&target).unwrap(), b"new");

        // A failed write: the temporary file goes, the target stays as it was.
        let (t, _f) = TempFile::create_for(&target).unwrap();
        let tmp = t.path().to_path_buf();
        assert!(tmp.exists());
        drop(t);
        assert!(!tmp.exists() && !live().contains(&tmp));
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
