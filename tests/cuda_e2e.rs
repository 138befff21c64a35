//! End to end on the GPU: the default network in f32 and in bf16 against the
//! reference fixtures (the CPU's parity walk, `common::walks`), and bf16
//! against f32 on the whole zoom-out-zoom-in pipeline. Skips, saying why,
//! without a CUDA device.
#![cfg(feature = "cuda")]

mod common;

use common::{check, fixture, walks};
use segvol::backend::cuda::{cuda_unavailable_reason, CudaBackend, Precision};
use segvol::io::nifti::read_ct;
use segvol::model::{ClipTokenizer, SegVol};
use segvol::pipeline::is_foreground;
use segvol::pipeline::output::dice;
use segvol::pipeline::preprocess::preprocess_ct;
use segvol::pipeline::zoom::{CategoryPrompt, Segmenter, ZoomOptions};

fn gpu(p: Precision) -> Option<SegVol<CudaBackend>> {
    if let Some(why) = cuda_unavailable_reason() {
        eprintln!("SKIP: no CUDA device ({why})");
        return None;
    }
    let be = CudaBackend::new(0, p).expect("a CUDA device is present, so the backend must start");
    Some(walks::default_model(be))
}

/// The CPU's parity walk (`tests/parity_default.rs`) on the GPU in f32,
/// within the same bounds.
#[test]
fn cuda_f32_default_network_matches_the_reference() {
    let Some(m) = gpu(Precision::F32) else {
        return;
    };
    let Some(walk) = walks::default_realct(&m) else {
        return;
    };
    walks::check_f32(&walk, " (cuda f32)");
}

/// bf16 against the reference at the main stages of the same walk: how far
/// the tensor-core precision drifts from PyTorch's float32. Bounds are
/// bf16's (8-bit mantissa: about 4e-3 per rounding, compounded over 12 ViT
/// blocks and the decoder), not f32's.
#[test]
fn cuda_bf16_default_network_near_the_reference() {
    let Some(m) = gpu(Precision::Bf16) else {
        return;
    };
    let Some(walk) = walks::default_realct(&m) else {
        return;
    };
    for s in &walk.stages {
        let name = s.name.as_str();
        if !matches!(
            name,
            "encoder_tokens" | "text_embedding" | "lowres_box_text" | "logits_box_text_d14_18"
        ) {
            continue;
        }
        if name == "lowres_box_text" {
            let flips = s
                .got
                .iter()
                .zip(&s.want)
                .filter(|(a, b)| is_foreground(**a) != is_foreground(**b))
                .count();
            println!(
                "bf16 lowres mask: {flips} of {} voxels differ from the reference",
                s.want.len()
            );
        }
        let rel = if name.starts_with("encoder") || name.starts_with("text") {
            3e-2
        } else {
            6e-2
        };
        check(&format!("{name} (cuda bf16)"), &s.got, &s.want, 1.0, rel);
    }
}

/// The whole zoom-out-zoom-in pipeline in bf16 against f32 on the GPU.
///
/// The synthetic weights give weak logits (rms about 0.16 on this CT, 2% of
/// the foreground within 1% of that rms of zero), so bf16 rounding flips
/// the voxels nearest the decision boundary and the mask Dice says more
/// about the weights than the arithmetic. The test therefore bounds the
/// logits' relative error, and requires every flipped voxel to lie within
/// a few error-rms of zero (a localised bug would flip confident voxels).
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
    let n = a.len() as f64;
    let rms = (a.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n).sqrt();
    let err = (a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let flipped: Vec<f64> = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| is_foreground(**x) != is_foreground(**y))
        .map(|(x, _)| (*x as f64).abs())
        .collect();
    let worst = flipped.iter().copied().fold(0.0, f64::max);
    let fg = a.iter().filter(|&&v| is_foreground(v)).count();
    println!(
        "bf16 vs f32 on example_ct_sm: final-mask Dice {d:.5}; logits rel L2 {:.3e} \
         (rms {rms:.3e}, error rms {err:.3e}); {} of {fg} foreground voxels flipped, \
         largest |f32 logit| among them {worst:.3e} = {:.2} error rms",
        err / rms,
        flipped.len(),
        worst / err
    );
    assert!(
        err / rms <= 5e-2,
        "bf16 logits rel L2 {:.3e} against f32",
        err / rms
    );
    assert!(
        worst <= 6.0 * err,
        "a voxel with |logit| {worst:.3e} (error rms {err:.3e}) flipped: not rounding noise"
    );
}
