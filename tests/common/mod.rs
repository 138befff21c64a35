//! Shared test helpers: where the fixtures are, and tensor comparisons.
#![allow(dead_code)]

pub mod cli;
pub mod dicom_gen;
pub mod gen;
pub mod walks;

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

/// Typed reads of golden tensors (little-endian safetensors).
pub mod golden {
    use safetensors::SafeTensors;

    fn bytes<'a>(st: &'a SafeTensors, name: &str) -> &'a [u8] {
        st.tensor(name)
            .unwrap_or_else(|_| panic!("fixture tensor {name} is missing"))
            .data()
    }
    pub fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
        bytes(st, name)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn f64s(st: &SafeTensors, name: &str) -> Vec<f64> {
        bytes(st, name)
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn i64s(st: &SafeTensors, name: &str) -> Vec<i64> {
        bytes(st, name)
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn u8s(st: &SafeTensors, name: &str) -> Vec<u8> {
        bytes(st, name).to_vec()
    }
}

/// Prints and asserts the fixture bounds: max |a − b| and relative L2.
pub fn check(name: &str, got: &[f32], want: &[f32], max_abs: f64, rel_l2: f64) {
    let (rel, max) = compare(got, want);
    println!("{name:32} rel_l2 {rel:.2e}  max_abs {max:.2e}");
    assert!(
        max <= max_abs && rel <= rel_l2,
        "{name}: rel_l2 {rel:.3e} (bound {rel_l2:.0e}), max_abs {max:.3e} (bound {max_abs:.0e})"
    );
}
