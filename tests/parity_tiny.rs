//! Parity with the reference on the fixtures' tiny config: every intermediate
//! the fixture stores, for every prompt case (`tests/fixtures/README.md`),
//! on the CPU and, when a device is present, on the GPU in f32.

mod common;

use std::sync::Arc;

use common::fixture;
use common::golden::*;
use safetensors::SafeTensors;
use segvol::backend::cpu::CpuBackend;
use segvol::backend::Backend;
use segvol::model::{GeomPrompt, Prompt, SegVol, TextEmbedding};
use segvol::weights::synth::synth_checkpoint;
use segvol::ModelConfig;

struct Fix {
    inputs: Vec<u8>,
    outputs: Vec<u8>,
}

fn load() -> Option<Fix> {
    let i = fixture("tiny/inputs.safetensors")?;
    let o = fixture("tiny/outputs.safetensors")?;
    Some(Fix {
        inputs: std::fs::read(i).unwrap(),
        outputs: std::fs::read(o).unwrap(),
    })
}

/// `[C, S]` (channels first) → `[S, C]`.
fn channels_last(x: &[f32], c: usize) -> Vec<f32> {
    let s = x.len() / c;
    let mut out = vec![0f32; x.len()];
    for ch in 0..c {
        for p in 0..s {
            out[p * c + ch] = x[ch * s + p];
        }
    }
    out
}

fn model<B: Backend>(be: B) -> SegVol<B> {
    let cfg = ModelConfig::tiny();
    let ckpt = Arc::new(synth_checkpoint(&cfg).unwrap());
    SegVol::load(be, ckpt, cfg).unwrap()
}

fn ids_until_eos(ids: &[i64]) -> Vec<u32> {
    let end = ids.iter().position(|&t| t == 49407).expect("EOS") + 1;
    ids[..end].iter().map(|&t| t as u32).collect()
}

fn cases(inp: &SafeTensors, text: &TextEmbedding) -> Vec<(&'static str, Prompt)> {
    let b = f32s(inp, "box");
    let bbox = Some([b[0], b[1], b[2], b[3], b[4], b[5]]);
    let pc = f32s(inp, "points_coords");
    let pl = f32s(inp, "points_labels");
    let points: Vec<([f32; 3], f32)> = (0..pl.len())
        .map(|i| ([pc[3 * i], pc[3 * i + 1], pc[3 * i + 2]], pl[i]))
        .collect();
    let t = Some(text.clone());
    let g = |bbox: Option<[f32; 6]>, points: &[([f32; 3], f32)]| GeomPrompt {
        bbox,
        points: points.to_vec(),
    };
    vec![
        (
            "box",
            Prompt {
                geom: g(bbox, &[]),
                text: None,
            },
        ),
        (
            "points",
            Prompt {
                geom: g(None, &points),
                text: None,
            },
        ),
        (
            "text",
            Prompt {
                geom: g(None, &[]),
                text: t.clone(),
            },
        ),
        (
            "box_text",
            Prompt {
                geom: g(bbox, &[]),
                text: t.clone(),
            },
        ),
        (
            "points_text",
            Prompt {
                geom: g(None, &points),
                text: t.clone(),
            },
        ),
        (
            "box_points",
            Prompt {
                geom: g(bbox, &points),
                text: None,
            },
        ),
    ]
}

#[test]
fn parity_tiny_all_intermediates() {
    all_intermediates(&model(CpuBackend::new()), "");
}

#[test]
fn parity_tiny_batched_categories_match_single() {
    batched_categories_match_single(&model(CpuBackend::new()), "");
}

/// The same walks on the GPU in f32, within the CPU's bounds.
#[cfg(feature = "cuda")]
#[test]
fn parity_tiny_on_cuda_f32() {
    use segvol::backend::cuda::{cuda_unavailable_reason, CudaBackend, Precision};
    if let Some(why) = cuda_unavailable_reason() {
        eprintln!("SKIP: no CUDA device ({why})");
        return;
    }
    let be = CudaBackend::new(0, Precision::F32).expect("a CUDA device is present");
    let m = model(be);
    all_intermediates(&m, " (cuda f32)");
    batched_categories_match_single(&m, " (cuda f32)");
}

/// Every intermediate the fixture stores, for every prompt case; `label`
/// tells backends apart in the output.
fn all_intermediates<B: Backend>(m: &SegVol<B>, label: &str) {
    let check = |name: &str, got: &[f32], want: &[f32], max_abs: f64, rel_l2: f64| {
        common::check(&format!("{name}{label}"), got, want, max_abs, rel_l2)
    };
    let Some(fx) = load() else { return };
    let inp = SafeTensors::deserialize(&fx.inputs).unwrap();
    let out = SafeTensors::deserialize(&fx.outputs).unwrap();
    let be = m.backend();
    let c = 768;

    // Image encoder.
    let image = be
        .upload(&f32s(&inp, "image"), &[1, 1, 16, 64, 64])
        .unwrap();
    let patches = m.image_encoder.embed_patches(be, &image).unwrap();
    check(
        "patch_tokens",
        &be.download(&patches).unwrap(),
        &f32s(&out, "patch_tokens"),
        1e-5,
        1e-5,
    );
    let emb = m.embed_image(&image).unwrap();
    check(
        "encoder_tokens",
        &be.download(&emb.tokens).unwrap(),
        &f32s(&out, "encoder_tokens"),
        1e-4,
        1e-5,
    );

    // Text encoder.
    let ids = ids_until_eos(&i64s(&inp, "text_input_ids"));
    let clip = m.clip(&ids).unwrap();
    check(
        "clip_last_hidden_state",
        &be.download(&clip.last_hidden).unwrap(),
        &f32s(&out, "clip_last_hidden_state"),
        1e-5,
        1e-5,
    );
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
    let batch_ids = i64s(&inp, "text_batch3_input_ids");
    let want3 = f32s(&out, "text_embedding_batch3");
    for r in 0..3 {
        let e = m
            .embed_text_ids(&ids_until_eos(&batch_ids[r * 24..(r + 1) * 24]))
            .unwrap();
        check(
            &format!("text_embedding_batch3[{r}]"),
            &e.0,
            &want3[r * c..(r + 1) * c],
            1e-5,
            1e-5,
        );
    }

    // Prompt encoder.
    let dense_pe = channels_last(&f32s(&out, "dense_pe"), c);
    check(
        "dense_pe",
        &m.prompt_encoder.dense_pe(),
        &dense_pe,
        1e-5,
        1e-5,
    );
    let dense = channels_last(&f32s(&out, "dense"), c);
    for row in dense.chunks(c) {
        assert_eq!(
            row,
            m.prompt_encoder.no_mask_embed(),
            "dense embedding is no_mask_embed everywhere{label}"
        );
    }

    for (name, p) in cases(&inp, &text) {
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
        let lowres = m.decode_lowres(&emb, 0, std::slice::from_ref(&p)).unwrap();
        check(
            &format!("lowres_{name}"),
            &be.download(&lowres).unwrap(),
            &f32s(&out, &format!("lowres_{name}")),
            2e-5,
            2e-5,
        );
        let logits = m.decode(&emb, 0, std::slice::from_ref(&p)).unwrap();
        check(
            &format!("logits_{name}"),
            &be.download(&logits).unwrap(),
            &f32s(&out, &format!("logits_{name}")),
            2e-5,
            2e-5,
        );
        if name == "box_text" {
            let d = m.decode_group(&emb, 0, &[&p]).unwrap();
            check(
                "decoder_queries_box_text",
                &be.download(&d.queries).unwrap(),
                &f32s(&out, "decoder_queries_box_text"),
                1.0,
                2e-5,
            );
            check(
                "decoder_keys_box_text",
                &be.download(&d.keys).unwrap(),
                &f32s(&out, "decoder_keys_box_text"),
                1.0,
                2e-5,
            );
            let up = channels_last(&f32s(&out, "upscaled_box_text"), 96);
            check(
                "upscaled_box_text",
                &be.download(&d.upscaled).unwrap(),
                &up,
                1.0,
                2e-5,
            );
        }
    }
}

/// All six prompt cases in one call equal the fixture's single-prompt
/// results, and two identical prompts in one batch give identical logits.
fn batched_categories_match_single<B: Backend>(m: &SegVol<B>, label: &str) {
    let check = |name: &str, got: &[f32], want: &[f32], max_abs: f64, rel_l2: f64| {
        common::check(&format!("{name}{label}"), got, want, max_abs, rel_l2)
    };
    let Some(fx) = load() else { return };
    let inp = SafeTensors::deserialize(&fx.inputs).unwrap();
    let out = SafeTensors::deserialize(&fx.outputs).unwrap();
    let be = m.backend();
    let image = be
        .upload(&f32s(&inp, "image"), &[1, 1, 16, 64, 64])
        .unwrap();
    let emb = m.embed_image(&image).unwrap();
    let text = m
        .embed_text_ids(&ids_until_eos(&i64s(&inp, "text_input_ids")))
        .unwrap();
    // All six cases in one call: grouped into batches by token structure,
    // returned in order.
    let cs = cases(&inp, &text);
    let prompts: Vec<Prompt> = cs.iter().map(|(_, p)| p.clone()).collect();
    let all = be
        .download(&m.decode_lowres(&emb, 0, &prompts).unwrap())
        .unwrap();
    let n = 16 * 16 * 16;
    for (i, (name, _)) in cs.iter().enumerate() {
        check(
            &format!("batched lowres_{name}"),
            &all[i * n..(i + 1) * n],
            &f32s(&out, &format!("lowres_{name}")),
            2e-5,
            2e-5,
        );
    }
    // Two identical-structure prompts share one batch.
    let two = vec![cs[3].1.clone(), cs[3].1.clone()];
    let both = be
        .download(&m.decode_lowres(&emb, 0, &two).unwrap())
        .unwrap();
    assert_eq!(both[..n], both[n..], "two identical prompts{label}");
}
