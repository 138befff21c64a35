//! Parity with the reference on the default config and a real CT
//! (fixtures/README.md, "default_realct/"): encoder tokens, text embedding,
//! dense PE samples, sparse tokens, decoder queries and logits for the box,
//! text and box+text prompts.

mod common;

use std::sync::Arc;

use common::golden::*;
use common::{check, fixture};
use safetensors::SafeTensors;
use segvol::backend::cpu::CpuBackend;
use segvol::backend::Backend;
use segvol::model::{GeomPrompt, Prompt, SegVol};
use segvol::weights::synth::synth_checkpoint;
use segvol::ModelConfig;

#[test]
fn parity_default_realct() {
    let (Some(outp), Some(inp)) = (
        fixture("default_realct/outputs.safetensors"),
        fixture("preprocess/example_ct_sm.safetensors"),
    ) else {
        return;
    };
    let out_bytes = std::fs::read(outp).unwrap();
    let in_bytes = std::fs::read(inp).unwrap();
    let out = SafeTensors::deserialize(&out_bytes).unwrap();
    let inp = SafeTensors::deserialize(&in_bytes).unwrap();

    let cfg = ModelConfig::default();
    let m = SegVol::load(
        CpuBackend::new(),
        Arc::new(synth_checkpoint(&cfg).unwrap()),
        cfg,
    )
    .unwrap();
    let be = m.backend();
    let c = 768;

    let t0 = std::time::Instant::now();
    let emb = m
        .embed_image_host(&f32s(&inp, "zoom_out_image"), 1)
        .unwrap();
    println!("encoder forward: {:.2} s", t0.elapsed().as_secs_f64());
    check(
        "encoder_tokens",
        &be.download(&emb.tokens).unwrap(),
        &f32s(&out, "encoder_tokens"),
        1e-4,
        1e-5,
    );

    let ids: Vec<u32> = i64s(&out, "text_input_ids")
        .iter()
        .map(|&t| t as u32)
        .collect();
    let clip = m.clip(&ids).unwrap();
    check(
        "clip_pooled",
        &be.download(&clip.pooled).unwrap(),
        &f32s(&out, "clip_pooled"),
        1e-5,
        1e-5,
    );
    let text = m.embed_text_ids(&ids).unwrap();
    check(
        "text_embedding",
        &text.0,
        &f32s(&out, "text_embedding"),
        1e-5,
        1e-5,
    );

    let pe = m.prompt_encoder.dense_pe();
    let idx = i64s(&out, "dense_pe_sample_idx");
    let samples: Vec<f32> = idx
        .chunks(3)
        .flat_map(|abc| {
            let t = ((abc[0] * 16 + abc[1]) * 16 + abc[2]) as usize;
            pe[t * c..(t + 1) * c].to_vec()
        })
        .collect();
    check(
        "dense_pe_samples",
        &samples,
        &f32s(&out, "dense_pe_samples"),
        1e-5,
        1e-5,
    );

    let b = f32s(&out, "box");
    let bbox = Some([b[0], b[1], b[2], b[3], b[4], b[5]]);
    let cases = [
        (
            "box",
            Prompt {
                geom: GeomPrompt {
                    bbox,
                    points: vec![],
                },
                text: None,
            },
        ),
        (
            "text",
            Prompt {
                geom: GeomPrompt::default(),
                text: Some(text.clone()),
            },
        ),
        (
            "box_text",
            Prompt {
                geom: GeomPrompt {
                    bbox,
                    points: vec![],
                },
                text: Some(text.clone()),
            },
        ),
    ];
    for (name, p) in &cases {
        let sparse = m
            .prompt_encoder
            .sparse(&p.geom, p.text.as_ref().map(|t| t.0.as_slice()))
            .unwrap();
        check(
            &format!("sparse_{name}"),
            &sparse,
            &f32s(&out, &format!("sparse_{name}")),
            1e-4,
            1e-4,
        );
        let t1 = std::time::Instant::now();
        let d = m.decode_group(&emb, 0, &[p]).unwrap();
        println!("decoder ({name}): {:.3} s", t1.elapsed().as_secs_f64());
        if *name == "box_text" {
            check(
                "decoder_queries_box_text",
                &be.download(&d.queries).unwrap(),
                &f32s(&out, "decoder_queries_box_text"),
                1.0,
                2e-5,
            );
        }
        check(
            &format!("lowres_{name}"),
            &be.download(&d.lowres).unwrap(),
            &f32s(&out, &format!("lowres_{name}")),
            2e-5,
            2e-5,
        );
        let logits = be
            .download(
                &be.resize(
                    &d.lowres,
                    [32, 256, 256],
                    segvol::backend::Interp::Trilinear,
                )
                .unwrap(),
            )
            .unwrap();
        let slab = &logits[14 * 256 * 256..18 * 256 * 256];
        check(
            &format!("logits_{name}_d14_18"),
            slab,
            &f32s(&out, &format!("logits_{name}_d14_18")),
            2e-5,
            2e-5,
        );
        let sum: f64 = logits.iter().map(|&v| v as f64).sum();
        let want_sum = f64s(&out, &format!("logits_{name}_sum_f64"))[0];
        let npos = logits.iter().filter(|&&v| v > 0.0).count() as i64;
        let want_npos = i64s(&out, &format!("logits_{name}_npos"))[0];
        println!(
            "logits_{name}: sum {sum:.4} (ref {want_sum:.4}), positives {npos} (ref {want_npos})"
        );
        let rms =
            (logits.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / logits.len() as f64).sqrt();
        assert!(
            (sum - want_sum).abs() <= 2e-5 * rms * logits.len() as f64,
            "logit sum {sum} vs {want_sum}"
        );
        // A sign flip needs a logit within 1e-4 of zero: the count may move
        // by at most the number of such voxels (a handful of 2 M).
        let near = logits.iter().filter(|v| v.abs() < 1e-4).count() as i64;
        assert!(
            (npos - want_npos).abs() <= near.min(10),
            "positive voxels {npos} vs {want_npos} with {near} logits near zero"
        );
    }
}
