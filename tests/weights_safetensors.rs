//! Writing and reading safetensors, checking checkpoints against configs,
//! config detection and the inspect report.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use segvol::weights::check::detect_config;
use segvol::weights::expected::expected_tensors;
use segvol::weights::inspect::InspectReport;
use segvol::weights::synth::{synth_state_dict, synth_tensor};
use segvol::weights::write::{
    save_safetensors, write_synth_safetensors, PendingTensor, TensorBytes,
};
use segvol::weights::{Checkpoint, DType, Format};
use segvol::{Error, ModelConfig};

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("weights-st-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The tiny synth checkpoint, written once for all tests of this file.
fn tiny_file() -> &'static Path {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let p = scratch("tiny").join("tiny.safetensors");
        write_synth_safetensors(&ModelConfig::tiny(), &p).unwrap();
        p
    })
}

#[test]
fn tiny_synth_round_trip_is_bit_exact_and_checks() {
    let ck = Checkpoint::open(tiny_file()).unwrap();
    assert_eq!(ck.format(), Format::Safetensors);
    ck.check(&ModelConfig::tiny()).unwrap();
    // mask_downscaling was written (it is part of the state dict) and
    // dropped on load as never read.
    assert_eq!(ck.load_info().ignored.len(), 10);
    let expected = expected_tensors(&ModelConfig::tiny());
    assert_eq!(ck.len(), expected.len() - 10);
    for e in expected.iter().filter(|e| !e.ignored) {
        let v = ck.get(&e.name).unwrap();
        assert_eq!(v.dtype, DType::F32);
        assert_eq!(v.shape, &e.shape[..]);
        let want = synth_tensor(&e.name, &e.shape);
        assert_eq!(v.bytes(), bytemuck_bytes(&want), "{}", e.name);
        // Aligned in the map, so f32 views borrow.
        assert!(
            matches!(v.to_f32().unwrap(), std::borrow::Cow::Borrowed(_)),
            "{}",
            e.name
        );
    }
}

#[test]
fn tiny_checkpoint_fails_the_default_config_with_counts() {
    let ck = Checkpoint::open(tiny_file()).unwrap();
    let err = ck.check(&ModelConfig::default()).unwrap_err();
    assert!(matches!(err, Error::NotSegVol(_)));
    let msg = err.to_string();
    // 10 ViT blocks x 11 tensors + 10 CLIP layers x 16 tensors are missing.
    assert!(
        msg.starts_with("this is not a SegVol checkpoint: 270 of 464 tensors missing, first: image_encoder.blocks.2."),
        "{msg}"
    );
    assert!(msg.contains("tensors of the wrong shape, first: image_encoder.patch_embedding.position_embeddings is [1, 64, 768], expected [1, 2048, 768]"), "{msg}");
}

#[test]
fn one_wrong_shape_is_named() {
    let mut sd = synth_state_dict(&ModelConfig::tiny());
    let t = sd
        .iter_mut()
        .find(|(n, _, _)| n == "mask_decoder.iou_token.weight")
        .unwrap();
    t.1 = vec![768, 1];
    let ck = Checkpoint::from_f32_tensors(sd).unwrap();
    let msg = ck.check(&ModelConfig::tiny()).unwrap_err().to_string();
    assert_eq!(
        msg,
        "this is not a SegVol checkpoint: 1 tensor of the wrong shape, first: \
         mask_decoder.iou_token.weight is [768, 1], expected [1, 768]"
    );
}

#[test]
fn unexpected_and_non_float_tensors_are_reported() {
    let cfg = ModelConfig::tiny();
    let dir = scratch("nonfloat");
    let path = dir.join("x.safetensors");
    let mut tensors: Vec<PendingTensor> = expected_tensors(&cfg)
        .into_iter()
        .map(|e| {
            let dtype = if e.name == "image_encoder.norm.bias" {
                DType::I32
            } else {
                DType::F32
            };
            let n: usize = e.shape.iter().product();
            PendingTensor::new(e.name, dtype, e.shape, move || {
                Ok(TensorBytes::Owned(vec![0u8; n * 4]))
            })
        })
        .collect();
    tensors.push(PendingTensor::new(
        "extra.weight",
        DType::F16,
        vec![2],
        || Ok(TensorBytes::Owned(vec![0u8; 4])),
    ));
    save_safetensors(&path, tensors, &Default::default()).unwrap();
    let msg = Checkpoint::open(&path)
        .unwrap()
        .check(&cfg)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("1 unexpected tensor, first: extra.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("1 tensor not floating point, first: image_encoder.norm.bias is i32"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_detection_rules() {
    let ck = Checkpoint::open(tiny_file()).unwrap();
    // No config.json: layer counts from the blocks, input from the grid.
    assert_eq!(detect_config(&ck).unwrap(), ModelConfig::tiny());
    let mem = segvol::weights::synth::synth_checkpoint(&ModelConfig::default()).unwrap();
    assert_eq!(detect_config(&mem).unwrap(), ModelConfig::default());

    // A config.json beside the file states the sizes (HF's wording).
    let dir = scratch("cfgjson");
    let path = dir.join("model.safetensors");
    std::fs::copy(tiny_file(), &path).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures":["SegVolModel"],"model_type":"segvol","patch_size":[4,16,16],
            "spatial_size":[32,256,256],"test_mode":true,"torch_dtype":"float32"}"#,
    )
    .unwrap();
    let ck = Checkpoint::open(&dir).unwrap();
    let cfg = detect_config(&ck).unwrap();
    assert_eq!(cfg.vit_layers, 2);
    assert_eq!(cfg.clip_layers, 2);
    assert_eq!(cfg.spatial_size, [32, 256, 256]);
    // The stated size does not fit these weights: check says so.
    let msg = ck.check(&cfg).unwrap_err().to_string();
    assert!(
        msg.contains("position_embeddings is [1, 64, 768], expected [1, 2048, 768]"),
        "{msg}"
    );
    let report = InspectReport::open(&dir).unwrap().to_string();
    assert!(report.contains("NOT OK for config custom"), "{report}");
    std::fs::remove_dir_all(&dir).unwrap();

    // A gap in the layer numbering is named.
    let sd: Vec<_> = synth_state_dict(&ModelConfig::tiny())
        .into_iter()
        .filter(|(n, _, _)| !n.starts_with("image_encoder.blocks.0."))
        .collect();
    let ck = Checkpoint::from_f32_tensors(sd).unwrap();
    let msg = detect_config(&ck).unwrap_err().to_string();
    assert!(msg.contains("layer 0 is missing"), "{msg}");
}

#[test]
fn inspect_report_of_a_good_file() {
    let r = InspectReport::open(tiny_file()).unwrap();
    println!("{r}");
    assert!(r.is_ok());
    assert_eq!(r.tensors, 194);
    assert_eq!(r.dtypes.get("f32"), Some(&194));
    assert_eq!(r.ignored.len(), 10);
    let total: usize = r.params.values().sum();
    let mask_ds: usize = expected_tensors(&ModelConfig::tiny())
        .iter()
        .filter(|e| e.ignored)
        .map(|e| e.shape.iter().product::<usize>())
        .sum();
    // Every expected value, the Gaussian PE buffer included, less mask_downscaling.
    assert_eq!(total + mask_ds, 70_891_984 + 3 * 384);
    let text = r.to_string();
    assert!(text.contains("format:   safetensors"), "{text}");
    assert!(text.contains("metadata: segvol_synth = v2"), "{text}");
    assert!(
        text.contains("prompt_encoder.mask_downscaling.0.weight"),
        "{text}"
    );
    assert!(
        text.ends_with("OK: SegVol checkpoint, config tiny"),
        "{text}"
    );
}

#[test]
fn directory_lookup() {
    let dir = scratch("dirs");
    let err = Checkpoint::open(&dir).err().unwrap().to_string();
    assert!(err.contains("holds no weight file"), "{err}");
    let tiny = |name: &str| {
        let t = vec![PendingTensor::new("a", DType::F32, vec![1], || {
            Ok(TensorBytes::F32(vec![1.0]))
        })];
        save_safetensors(&dir.join(name), t, &Default::default()).unwrap();
    };
    tiny("one.bin");
    tiny("two.pth");
    let err = Checkpoint::open(&dir).err().unwrap().to_string();
    assert!(
        err.contains("several weight files (one.bin, two.pth)"),
        "{err}"
    );
    tiny("model.safetensors");
    let ck = Checkpoint::open(&dir).unwrap();
    assert_eq!(ck.path(), dir.join("model.safetensors"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_write_leaves_nothing_behind() {
    let dir = scratch("failwrite");
    let path = dir.join("out.safetensors");
    let tensors = vec![
        PendingTensor::new("a", DType::F32, vec![2], || {
            Ok(TensorBytes::F32(vec![1.0, 2.0]))
        }),
        PendingTensor::new("b", DType::F32, vec![2], || {
            Err(Error::Invalid("generator failed".into()))
        }),
    ];
    let err = save_safetensors(&path, tensors, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("generator failed"));
    // A producer that returns the wrong byte count is caught too.
    let tensors = vec![PendingTensor::new("a", DType::F32, vec![3], || {
        Ok(TensorBytes::F32(vec![1.0]))
    })];
    let err = save_safetensors(&path, tensors, &Default::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("produced 4 bytes, its shape needs 12"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

    // An existing file is replaced whole only on success.
    std::fs::write(&path, b"old").unwrap();
    let tensors = vec![PendingTensor::new("a", DType::F32, vec![1], || {
        Err(Error::Invalid("nope".into()))
    })];
    assert!(save_safetensors(&path, tensors, &Default::default()).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_and_empty_files_are_refused() {
    let dir = scratch("unknown");
    let p = dir.join("x.bin");
    std::fs::write(&p, b"").unwrap();
    let err = Checkpoint::open(&p).err().unwrap().to_string();
    assert!(err.contains("file is empty"), "{err}");
    std::fs::write(&p, b"GGUF\x03\0\0\0 something else").unwrap();
    let err = Checkpoint::open(&p).err().unwrap().to_string();
    assert!(err.contains("not a checkpoint"), "{err}");
    let err = Checkpoint::open(dir.join("absent.bin"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("absent.bin"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bytemuck_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn hf_prefixed_safetensors_are_normalised() {
    let dir = scratch("prefixed");
    let path = dir.join("model.safetensors");
    let tensors = vec![
        PendingTensor::new(
            "model.image_encoder.norm.weight",
            DType::F16,
            vec![2],
            || {
                Ok(TensorBytes::Owned(
                    [half::f16::from_f32(1.5), half::f16::from_f32(-2.0)]
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                ))
            },
        ),
        PendingTensor::new(
            "model.text_encoder.clip_text_model.text_model.embeddings.position_ids",
            DType::I64,
            vec![1, 3],
            || {
                Ok(TensorBytes::Owned(
                    (0i64..3).flat_map(|x| x.to_le_bytes()).collect(),
                ))
            },
        ),
    ];
    save_safetensors(&path, tensors, &Default::default()).unwrap();
    let ck = Checkpoint::open(&path).unwrap();
    assert_eq!(
        ck.names().collect::<Vec<_>>(),
        ["image_encoder.norm.weight"]
    );
    let v = ck.get("image_encoder.norm.weight").unwrap();
    assert_eq!(&*v.to_f32().unwrap(), &[1.5, -2.0]);
    let info = ck.load_info();
    assert_eq!(info.stripped_prefixes, ["model."]);
    assert_eq!(
        info.ignored,
        ["text_encoder.clip_text_model.text_model.embeddings.position_ids"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
