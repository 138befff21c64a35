//! The synth-v2 generator against the fixture's per-tensor digest: shape,
//! class, first values, last value, sum and sha256 of every one of the 474
//! default tensors. Matching every sha256 proves the generator bit-exact.

mod common;

use sha2::{Digest, Sha256};

use segvol::weights::expected::expected_tensors;
use segvol::weights::synth::{classify, synth_tensor};
use segvol::ModelConfig;

#[test]
fn synth_v2_matches_fixture_digest_for_all_474_tensors() {
    let Some(path) = common::fixture("synth_v2_check.json") else {
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tensors = json["tensors"].as_object().expect("tensors object");
    let expected = expected_tensors(&ModelConfig::default());
    assert_eq!(tensors.len(), 474);
    assert_eq!(expected.len(), 474);

    for e in &expected {
        let t = tensors
            .get(&e.name)
            .unwrap_or_else(|| panic!("{} missing from the fixture", e.name));
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, e.shape, "{} shape", e.name);
        assert_eq!(
            classify(&e.name).name(),
            t["cls"].as_str().unwrap(),
            "{} class",
            e.name
        );

        let v = synth_tensor(&e.name, &e.shape);
        let first4: Vec<f32> = t["first4"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let n = first4.len().min(v.len());
        assert_eq!(&v[..n], &first4[..n], "{} first values", e.name);
        assert_eq!(
            *v.last().unwrap(),
            t["last"].as_f64().unwrap() as f32,
            "{} last value",
            e.name
        );
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let want = t["sum_f64"].as_f64().unwrap();
        // The fixture's sum may use a different summation order; a wrong
        // value would be off by far more than rounding.
        assert!(
            (sum - want).abs() <= 1e-9 * (1.0 + want.abs()) + 1e-9 * v.len() as f64,
            "{} sum {sum} vs {want}",
            e.name
        );
        let digest = Sha256::digest(bytemuck_bytes(&v));
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            t["sha256_f32le"].as_str().unwrap(),
            "{} sha256",
            e.name
        );
    }
}

fn bytemuck_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
