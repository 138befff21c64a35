//! Real torch.save files (tests/fixtures/torch, made by make.py there) read
//! without Python, compared value by value with what torch.load returned.

use std::path::PathBuf;

use segvol::weights::keys::strip_prefixes;
use segvol::weights::{Checkpoint, DType, Format};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch")
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn dtype_of(name: &str) -> DType {
    match name {
        "float32" => DType::F32,
        "float16" => DType::F16,
        "bfloat16" => DType::BF16,
        "int64" => DType::I64,
        other => panic!("fixture dtype {other}"),
    }
}

/// Every tensor torch.load saw (less ignored keys) is in the checkpoint with
/// the same dtype, shape and values; returns how many were compared.
fn compare_with_torch(file: &str) -> usize {
    let ck = Checkpoint::open(dir().join(file)).unwrap();
    assert_eq!(ck.format(), Format::TorchZip);
    let exp = expected();
    let tensors = exp["files"][file].as_object().unwrap();
    let mut compared = 0;
    for (key, t) in tensors {
        let (name, _) = strip_prefixes(key);
        if segvol::weights::expected::is_ignored_key(name) {
            assert!(ck.get(name).is_none(), "{name} should be dropped");
            assert!(ck.load_info().ignored.iter().any(|k| k == name));
            continue;
        }
        let view = ck
            .get(name)
            .unwrap_or_else(|| panic!("{file}: {name} missing"));
        assert_eq!(view.dtype, dtype_of(t["dtype"].as_str().unwrap()), "{name}");
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(view.shape, &shape[..], "{name}");
        let want: Vec<f32> = t["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        if view.dtype.is_float() {
            assert_eq!(&*view.to_f32().unwrap(), &want[..], "{file}: {name}");
        } else {
            let got: Vec<i64> = view
                .bytes()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let want: Vec<i64> = want.iter().map(|&x| x as i64).collect();
            assert_eq!(got, want, "{name}");
        }
        compared += 1;
    }
    compared
}

#[test]
fn hf_style_flat_state_dict() {
    assert_eq!(compare_with_torch("flat_hf.bin"), 4);
    let ck = Checkpoint::open(dir().join("flat_hf.bin")).unwrap();
    assert_eq!(ck.load_info().stripped_prefixes, vec!["model.".to_string()]);
    assert_eq!(ck.load_info().container, None);
    let names: Vec<&str> = ck.names().collect();
    assert_eq!(names, ["bf_w", "half_w", "lin.bias", "lin.weight"]);
    // f32 tensors are used in place: the bytes live in the file's map.
    let w = ck.get("lin.weight").unwrap();
    assert!(matches!(w.to_f32().unwrap(), std::borrow::Cow::Borrowed(_)));
}

#[test]
fn protocol_4_pickle() {
    assert_eq!(compare_with_torch("flat_proto4.bin"), 4);
}

#[test]
fn github_style_nested_with_optimizer() {
    assert_eq!(compare_with_torch("nested_github.pth"), 4);
    let ck = Checkpoint::open(dir().join("nested_github.pth")).unwrap();
    let info = ck.load_info();
    assert_eq!(info.stripped_prefixes, vec!["module.".to_string()]);
    let container = info.container.as_deref().unwrap();
    assert!(container.starts_with("'model' entry"), "{container}");
    assert!(
        container.contains("epoch") && container.contains("optimizer"),
        "{container}"
    );
    // The optimizer's tensors are not part of the checkpoint.
    assert_eq!(ck.len(), 4);
}

#[test]
fn views_offsets_and_shared_storages() {
    assert_eq!(compare_with_torch("views.bin"), 7);
    let ck = Checkpoint::open(dir().join("views.bin")).unwrap();
    // Contiguous views of one storage share the file's bytes.
    let base = ck.get("base").unwrap();
    let row1 = ck.get("row1").unwrap();
    let tail = ck.get("tail").unwrap();
    assert!(std::ptr::eq(base.blob, row1.blob));
    assert_eq!(row1.offset, base.offset + 4 * 4);
    assert_eq!(tail.offset, base.offset + 5 * 4);
    // The transpose was copied out into its own buffer.
    let t = ck.get("transposed").unwrap();
    assert!(!std::ptr::eq(base.blob, t.blob));
    assert_eq!(ck.get("scalar").unwrap().shape, &[] as &[usize]);
}

#[test]
fn a_forbidden_global_outside_the_weights_refuses_the_file() {
    let err = Checkpoint::open(dir().join("with_namespace.pth"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("forbidden global argparse.Namespace"), "{err}");
    assert!(err.contains("outside the model weights"), "{err}");
}

#[test]
fn legacy_pickle_gets_advice() {
    let err = Checkpoint::open(dir().join("legacy.pt"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("legacy (pre-1.6) torch pickle"), "{err}");
    assert!(
        err.contains("torch>=1.6") && err.contains("safetensors"),
        "{err}"
    );
}

#[test]
fn torch_file_converts_to_safetensors_as_f32() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weights-torch-convert");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let ck = Checkpoint::open(dir().join("flat_hf.bin")).unwrap();
    let path = out.join("model.safetensors");
    segvol::weights::write::convert_to_safetensors(&ck, &path).unwrap();
    let back = Checkpoint::open(&out).unwrap();
    assert_eq!(back.format(), Format::Safetensors);
    assert_eq!(
        back.names().collect::<Vec<_>>(),
        ck.names().collect::<Vec<_>>()
    );
    for name in ck.names() {
        let b = back.get(name).unwrap();
        assert_eq!(b.dtype, DType::F32);
        assert_eq!(
            b.to_f32().unwrap(),
            ck.get(name).unwrap().to_f32().unwrap(),
            "{name}"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}
