//! `include/segvol.h` is what the pinned cbindgen makes of `src/lib.rs`
//! today, so the checked-in header cannot fall behind the ABI.
//! `SEGVOL_BLESS=1` rewrites it instead of comparing.

use std::path::Path;

#[test]
fn header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_src(dir.join("src/lib.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen fails on src/lib.rs")
        .write(&mut generated);
    let header = dir.join("../include/segvol.h");
    if std::env::var_os("SEGVOL_BLESS").is_some() {
        std::fs::write(&header, &generated).unwrap();
        return;
    }
    let current = std::fs::read(&header).unwrap_or_default();
    assert!(
        current == generated,
        "include/segvol.h is out of date with capi/src/lib.rs; regenerate it with\n  \
         SEGVOL_BLESS=1 cargo test --release -p segvol-capi --test header\n\
         generated:\n{}",
        String::from_utf8_lossy(&generated)
    );
}
