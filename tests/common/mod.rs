//! Shared test helpers: where the fixtures are, and tensor comparisons.
#![allow(dead_code)]

pub mod gen;

use std::path::PathBuf;

/// The shared fixture folder: `$SEGVOL_SHARED`, else `../shared` next to the
/// crate. `None` (and a message) when absent, so tests can skip.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("SEGVOL_SHARED") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    if dir.join("fixtures").is_dir() {
        Some(dir)
    } else {
        None
    }
}

/// A fixture path under `shared/fixtures/`, or `None` after printing why the
/// calling test skips.
pub fn fixture(rel: &str) -> Option<PathBuf> {
    // fixtures/tiny is also kept in the crate so the core parity test runs
    // for anyone who clones it.
    if let Some(rest) = rel.strip_prefix("tiny/") {
        let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny")
            .join(rest);
        if local.exists() {
            return Some(local);
        }
    }
    match shared_dir() {
        Some(d) if d.join("fixtures").join(rel).exists() => Some(d.join("fixtures").join(rel)),
        _ => {
            eprintln!("SKIP: fixture {rel} not found (set SEGVOL_SHARED or place shared/ next to the crate)");
            None
        }
    }
}

/// Relative L2 error ‖a − b‖ / ‖b‖ and max |a − b|.
pub fn compare(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut num = 0f64;
    let mut den = 0f64;
    let mut max = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (*x as f64 - *y as f64).abs();
        assert!(x.is_finite(), "non-finite value {x}");
        num += d * d;
        den += (*y as f64) * (*y as f64);
        max = max.max(d);
    }
    ((num / den.max(1e-300)).sqrt(), max)
}
