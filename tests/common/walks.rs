//! Parity walks written once against `Backend`: the default network on the
//! reference's real-CT case, stage by stage. `tests/parity_default.rs` runs
//! it on the CPU, `tests/cuda_e2e.rs` on the GPU (f32 with the same bounds,
//! bf16 with its own).

use std::sync::Arc;

use safetensors::SafeTensors;
use segvol::backend::{Backend, Interp};
use segvol::model::{GeomPrompt, Prompt, SegVol};
use segvol::weights::synth::synth_checkpoint;
use segvol::ModelConfig;

use super::golden::*;
use super::{check, fixture};

/// One stage: our values, the reference's, and the float32 bounds
/// (max abs, relative L2) the CPU meets.
pub struct Stage {
    pub name: String,
    pub got: Vec<f32>,
    pub want: Vec<f32>,
    pub max_abs: f64,
    pub rel_l2: f64,
}

/// The final logits of one prompt (the whole 32×256×256 volume) with the
/// reference's sum and count of positive logits.
pub struct Logits {
    pub name: &'static str,
    pub logits: Vec<f32>,
    pub want_sum: f64,
    pub want_npos: i64,
}

pub struct Walk {
    pub stages: Vec<Stage>,
    pub logits: Vec<Logits>,
}

/// The default config with the fixtures' synthetic weights on `be`.
pub fn default_model<B: Backend>(be: B) -> SegVol<B> {
    let cfg = ModelConfig::default();
    SegVol::load(be, Arc::new(synth_checkpoint(&cfg).unwrap()), cfg).unwrap()
}

/// The default network on `example_ct_sm`'s zoom-out image ("default_realct"
/// fixture): encoder tokens, CLIP and text embedding, dense PE samples, and
/// for the box, text and box+text prompts the sparse tokens, the low-res
/// logits and the final logits (decoder queries for box+text). `None`, after
/// saying why, without the fixtures.
pub fn default_realct<B: Backend>(m: &SegVol<B>) -> Option<Walk> {
    let (Some(outp), Some(inp)) = (
        fixture("default_realct/outputs.safetensors"),
        fixture("preprocess/example_ct_sm.safetensors"),
    ) else {
        return None;
    };
    let out_bytes = std::fs::read(outp).unwrap();
    let in_bytes = std::fs::read(inp).unwrap();
    let out = SafeTensors::deserialize(&out_bytes).unwrap();
    let inp = SafeTensors::deserialize(&in_bytes).unwrap();
    let be = m.backend();
    let c = 768;
    let mut stages = vec![];
    let mut stage = |name: &str, got: Vec<f32>, want: Vec<f32>, max_abs, rel_l2| {
        stages.push(Stage {
            name: name.to_string(),
            got,
            want,
            max_abs,
            rel_l2,
        })
    };

    let t0 = std::time::Instant::now();
    let emb = m
        .embed_image_host(&f32s(&inp, "zoom_out_image"), 1)
        .unwrap();
    println!("encoder forward: {:.2} s", t0.elapsed().as_secs_f64());
    let tokens = be.download(&emb.tokens).unwrap();
    stage(
        "encoder_tokens",
        tokens,
        f32s(&out, "encoder_tokens"),
        1e-4,
        1e-5,
    );

    let ids: Vec<u32> = i64s(&out, "text_input_ids")
        .iter()
        .map(|&t| t as u32)
        .collect();
    let clip = m.clip(&ids).unwrap();
    let pooled = be.download(&clip.pooled).unwrap();
    stage("clip_pooled", pooled, f32s(&out, "clip_pooled"), 1e-5, 1e-5);
    let text = m.embed_text_ids(&ids).unwrap();
    stage(
        "text_embedding",
        text.0.clone(),
        f32s(&out, "text_embedding"),
        1e-5,
        1e-5,
    );

    let pe = m.prompt_encoder.dense_pe();
    let samples: Vec<f32> = i64s(&out, "dense_pe_sample_idx")
        .chunks(3)
        .flat_map(|abc| {
            let t = ((abc[0] * 16 + abc[1]) * 16 + abc[2]) as usize;
            pe[t * c..(t + 1) * c].to_vec()
        })
        .collect();
    stage(
        "dense_pe_samples",
        samples,
        f32s(&out, "dense_pe_samples"),
        1e-5,
        1e-5,
    );

    let b = f32s(&out, "box");
    let bbox = Some([b[0], b[1], b[2], b[3], b[4], b[5]]);
    let boxed = || GeomPrompt {
        bbox,
        points: vec![],
    };
    let cases = [
        (
            "box",
            Prompt {
                geom: boxed(),
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
                geom: boxed(),
                text: Some(text.clone()),
            },
        ),
    ];
    let mut logits = vec![];
    for (name, p) in &cases {
        let sparse = m
            .prompt_encoder
            .sparse(&p.geom, p.text.as_ref().map(|t| t.0.as_slice()))
            .unwrap();
        stage(
            &format!("sparse_{name}"),
            sparse,
            f32s(&out, &format!("sparse_{name}")),
            1e-4,
            1e-4,
        );
        let t1 = std::time::Instant::now();
        let d = m.decode_group(&emb, 0, &[p]).unwrap();
        println!("decoder ({name}): {:.3} s", t1.elapsed().as_secs_f64());
        if *name == "box_text" {
            stage(
                "decoder_queries_box_text",
                be.download(&d.queries).unwrap(),
                f32s(&out, "decoder_queries_box_text"),
                1.0,
                2e-5,
            );
        }
        stage(
            &format!("lowres_{name}"),
            be.download(&d.lowres).unwrap(),
            f32s(&out, &format!("lowres_{name}")),
            2e-5,
            2e-5,
        );
        let full = be
            .download(
                &be.resize(&d.lowres, [32, 256, 256], Interp::Trilinear)
                    .unwrap(),
            )
            .unwrap();
        stage(
            &format!("logits_{name}_d14_18"),
            full[14 * 256 * 256..18 * 256 * 256].to_vec(),
            f32s(&out, &format!("logits_{name}_d14_18")),
            2e-5,
            2e-5,
        );
        logits.push(Logits {
            name,
            logits: full,
            want_sum: f64s(&out, &format!("logits_{name}_sum_f64"))[0],
            want_npos: i64s(&out, &format!("logits_{name}_npos"))[0],
        });
    }
    Some(Walk { stages, logits })
}

/// Every stage within its float32 bounds, and each prompt's final logits
/// with the reference's sum and (up to logits within 1e-4 of zero) count
/// of positives. `label` tells backends apart in the output ("" for the
/// CPU).
pub fn check_f32(walk: &Walk, label: &str) {
    for s in &walk.stages {
        check(
            &format!("{}{label}", s.name),
            &s.got,
            &s.want,
            s.max_abs,
            s.rel_l2,
        );
    }
    for l in &walk.logits {
        let (name, logits) = (l.name, &l.logits);
        let sum: f64 = logits.iter().map(|&v| v as f64).sum();
        let npos = logits.iter().filter(|&&v| v > 0.0).count() as i64;
        println!(
            "logits_{name}{label}: sum {sum:.4} (ref {:.4}), positives {npos} (ref {})",
            l.want_sum, l.want_npos
        );
        let rms =
            (logits.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / logits.len() as f64).sqrt();
        assert!(
            (sum - l.want_sum).abs() <= 2e-5 * rms * logits.len() as f64,
            "logit sum {sum} vs {}{label}",
            l.want_sum
        );
        // A sign flip needs a logit within 1e-4 of zero: the count may move
        // by at most the number of such voxels (a handful of 2 M).
        let near = logits.iter().filter(|v| v.abs() < 1e-4).count() as i64;
        assert!(
            (npos - l.want_npos).abs() <= near.min(10),
            "positive voxels {npos} vs {} with {near} logits near zero{label}",
            l.want_npos
        );
    }
}
