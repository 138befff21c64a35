//! The default weights come from the Hugging Face cache that the
//! environment names, as `huggingface_hub` reads it: with `HF_HOME` set (and
//! offline, with a dead mirror so no download could succeed), `segvol
//! segment` without `--weights` loads the snapshot under `$HF_HOME/hub`.

mod common;

use common::cli::{bin, offline_hub, tiny_weights, tmp};
use common::gen::{gzip, phantom_ct};

#[test]
fn hf_home_locates_the_cached_weights() {
    let home = tmp().join("hf-home");
    let _ = std::fs::remove_dir_all(&home);
    let repo = home.join("hub/models--BAAI--SegVol");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd\n").unwrap();
    // The checkpoint reader goes by content, so the tiny safetensors file
    // stands in under the official file name.
    std::fs::copy(tiny_weights(), snap.join("pytorch_model.bin")).unwrap();

    let ct = tmp().join("hub_ct.nii.gz");
    std::fs::write(&ct, gzip(&phantom_ct([32, 32, 20]))).unwrap();
    let (out, json) = (tmp().join("hub_seg.nii.gz"), tmp().join("hub_seg.json"));
    let o = offline_hub(&mut bin(), &home)
        .arg("segment")
        .arg(&ct)
        .arg("-o")
        .arg(&out)
        .arg("--json")
        .arg(&json)
        .args(["--text", "liver", "--device", "cpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let weights = v["weights"].as_str().unwrap();
    assert!(
        std::path::Path::new(weights).starts_with(&snap),
        "{weights} is not under {}",
        snap.display()
    );
    assert!(out.is_file());
}
