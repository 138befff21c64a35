//! End to end on the GPU: the default network in f32 against the reference
//! fixtures, and bf16 against f32 on the whole zoom-out-zoom-in pipeline
//! (final-mask Dice ≥ 0.995). Skips, saying why, without a CUDA device.
#![cfg(feature = "cuda")]

mod common;

use std::sync::Arc;

use common::golden::*;
use common::{check, fixture};
use safetensors::SafeTensors;
use segvol::backend::cuda::{cuda_unavailable_reason, CudaBackend, Precision};
use segvol::backend::{Backend, Interp};
use segvol::io::nifti::read_ct;
use segvol::model::{ClipTokenizer, GeomPrompt, Prompt, SegVol};
use segvol::pipeline::is_foreground;
use segvol::pipeline::output::dice;
use segvol::pipeline::preprocess::preprocess_ct;
use segvol::pipeline::zoom::{CategoryPrompt, Segmenter, ZoomOptions};
use segvol::weights::synth::synth_checkpoint;
use segvol::ModelConfig;

fn gpu(p: Precision) -> Option<SegVol<CudaBackend>> {
    if let Some(why) = cuda_unavailable_reason() {
        eprintln!("SKIP: no CUDA device ({why})");
        return None;
    }
    let be = CudaBackend::new(0, p).expect("a CUDA device is present, so the backend must start");
    let cfg = ModelConfig::default();
    Some(SegVol::load(be, Arc::new(synth_checkpoint(&cfg).unwrap()), cfg).unwrap())
}

#[test]
fn cuda_f32_default_network_matches_the_reference() {
    let (Some(outp), Some(inp)) = (
        fixture("default_realct/outputs.safetensors"),
        fixture("preprocess/example_ct_sm.safetensors"),
    ) else {
        return;
    };
    let Some(m) = gpu(Precision::F32) else { return };
    let (ob, ib) = (std::fs::read(outp).unwrap(), std::fs::read(inp).unwrap());
    let (out, inp) = (
        SafeTensors::deserialize(&ob).unwrap(),
        SafeTensors::deserialize(&ib).unwrap(),
    );
    let be = m.backend();
    let emb = m
        .embed_image_host(&f32s(&inp, "zoom_out_image"), 1)
        .unwrap();
    check(
        "encoder_tokens (cuda f32)",
        &be.download(&emb.tokens).unwrap(),
        &f32s(&out, "encoder_tokens"),
        1e-4,
        1e-5,
    );
    let ids: Vec<u32> = i64s(&out, "text_input_ids")
        .iter()
        .map(|&t| t as u32)
        .collect();
    let text = m.embed_text_ids(&ids).unwrap();
    check(
        "text_embedding (cuda f32)",
        &text.0,
        &f32s(&out, "text_embedding"),
        1e-5,
        1e-5,
    );
    let b = f32s(&out, "box");
    let p = Prompt {
        geom: GeomPrompt {
            bbox: Some([b[0], b[1], b[2], b[3], b[4], b[5]]),
            points: vec![],
        },
        text: Some(text),
    };
    let lowres = m.decode_lowres(&emb, 0, std::slice::from_ref(&p)).unwrap();
    check(
        "lowres_box_text (cuda f32)",
        &be.download(&lowres).unwrap(),
        &f32s(&out, "lowres_box_text"),
        2e-5,
        2e-5,
    );
    let logits = be
        .download(
            &be.resize(&lowres, [32, 256, 256], Interp::Trilinear)
                .unwrap(),
        )
        .unwrap();
    check(
        "logits_box_text_d14_18 (cuda f32)",
        &logits[14 * 65536..18 * 65536],
        &f32s(&out, "logits_box_text_d14_18"),
        2e-5,
        2e-5,
    );
}

#[test]
fn cuda_bf16_pipeline_mask_dice_against_f32() {
    let Some(ct_path) = fixture("data/example_ct_sm.nii.gz") else {
        return;
    };
    let (Some(f32m), Some(bf16m)) = (gpu(Precision::F32), gpu(Precision::Bf16)) else {
        return;
    };
    let ct = read_ct(&ct_path).unwrap();
    let pre = preprocess_ct(&ct, [32, 256, 256]).unwrap();
    let tok = ClipTokenizer::builtin().unwrap();
    let ids = tok.encode_prompt("liver").unwrap();
    let run = |m: &SegVol<CudaBackend>| {
        let cat = CategoryPrompt {
            text: Some(m.embed_text_ids(&ids).unwrap()),
            bbox: Some([0.0, 67.0, 87.0, 31.0, 231.0, 223.0]),
            points: vec![],
        };
        let mut seg = Segmenter::new(m, ZoomOptions::default());
        seg.segment(&pre, &[cat], &mut |_| {})
            .unwrap()
            .remove(0)
            .logits
    };
    let (a, b) = (run(&f32m), run(&bf16m));
    let (d, _) = dice(
        b.iter().map(|&v| is_foreground(v)),
        a.iter().map(|&v| is_foreground(v)),
    );
    println!("bf16 vs f32 final-mask Dice on example_ct_sm: {d:.5}");
    assert!(d >= 0.995, "bf16 mask Dice {d} against f32");
}
