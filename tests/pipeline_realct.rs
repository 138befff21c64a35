//! The zoom-out-zoom-in pipeline against the reference run on real CTs
//! (fixtures/README.md, "pipeline_realct/"), default config, synth weights.

mod common;

use std::sync::Arc;

use common::golden::*;
use common::{check, compare, fixture};
use safetensors::SafeTensors;
use segvol::backend::cpu::CpuBackend;
use segvol::model::SegVol;
use segvol::pipeline::is_foreground;
use segvol::pipeline::preprocess::{IntensityStats, Preprocessed};
use segvol::pipeline::zoom::{CategoryPrompt, PadMode, Segmenter, ZoomOptions};
use segvol::weights::synth::synth_checkpoint;
use segvol::ModelConfig;

fn arr3(v: &[i64]) -> [usize; 3] {
    [v[0] as usize, v[1] as usize, v[2] as usize]
}

/// Mask mismatches are allowed only where the reference logit is within
/// 1e-4 of the decision boundary.
fn check_mask(name: &str, got_logits: &[f32], want_mask: &[u8], want_logits: Option<&[f32]>) {
    let mut bad = 0;
    let mut near = 0;
    for (i, (&g, &m)) in got_logits.iter().zip(want_mask).enumerate() {
        if is_foreground(g) != (m != 0) {
            match want_logits {
                Some(w) if w[i].abs() < 1e-4 => near += 1,
                _ => bad += 1,
            }
        }
    }
    println!(
        "{name}: {near} near-boundary flips, {bad} other mismatches of {}",
        want_mask.len()
    );
    assert_eq!(
        bad, 0,
        "{name}: {bad} mask voxels differ away from the boundary"
    );
    assert!(near <= 3, "{name}: {near} boundary flips");
}

#[test]
fn pipeline_ct_sm_box_text_faithful_and_fixed() {
    let (Some(pp), Some(pre_p), Some(outp)) = (
        fixture("pipeline_realct/ct_sm_box_text/pipeline.safetensors"),
        fixture("preprocess/example_ct_sm.safetensors"),
        fixture("default_realct/outputs.safetensors"),
    ) else {
        return;
    };
    let (pb, preb, outb) = (
        std::fs::read(pp).unwrap(),
        std::fs::read(pre_p).unwrap(),
        std::fs::read(outp).unwrap(),
    );
    let (pl, prep, out) = (
        SafeTensors::deserialize(&pb).unwrap(),
        SafeTensors::deserialize(&preb).unwrap(),
        SafeTensors::deserialize(&outb).unwrap(),
    );

    // The fixture's own preprocessing output, so this test covers the zoom
    // stages alone (tests/preprocess.rs covers the preprocessing).
    let pre = Preprocessed {
        dims: [30, 101, 122],
        stats: IntensityStats {
            threshold: 0.0,
            n_foreground: 0,
            lo: 0.0,
            hi: 1.0,
        },
        crop_start: arr3(&i64s(&pl, "crop_start_dhw")),
        crop_end: arr3(&i64s(&pl, "crop_end_dhw")),
        image: f32s(&prep, "image"),
        zoom_out: f32s(&prep, "zoom_out_image"),
        zoom_out_dims: [32, 256, 256],
    };
    assert_eq!(pre.cropped_dims(), [30, 96, 121]);

    let cfg = ModelConfig::default();
    let m = SegVol::load(
        CpuBackend::new(),
        Arc::new(synth_checkpoint(&cfg).unwrap()),
        cfg,
    )
    .unwrap();
    let ids: Vec<u32> = i64s(&out, "text_input_ids")
        .iter()
        .map(|&t| t as u32)
        .collect();
    let text = m.embed_text_ids(&ids).unwrap();
    let b = f32s(&pl, "zoom_out_box");
    let cat = CategoryPrompt {
        text: Some(text),
        bbox: Some([b[0], b[1], b[2], b[3], b[4], b[5]]),
        points: vec![],
    };

    let mut seg = Segmenter::new(
        &m,
        ZoomOptions {
            pad_mode: PadMode::Faithful,
            ..Default::default()
        },
    );
    let global = seg
        .zoom_out_logits(&pre, std::slice::from_ref(&cat))
        .unwrap()
        .remove(0);
    check(
        "zoomout_logits_cropped_frame",
        &global,
        &f32s(&pl, "zoomout_logits_cropped_frame"),
        2e-5,
        2e-5,
    );

    let r = seg.zoom_in(&pre, &cat, 0, global.clone()).unwrap();
    let roi: Vec<i64> = r.roi.unwrap().iter().map(|&v| v as i64).collect();
    assert_eq!(roi, i64s(&pl, "roi_min_max_inclusive"));
    let starts: Vec<i64> = r
        .windows
        .iter()
        .flat_map(|w| w.start.map(|v| v as i64))
        .collect();
    assert_eq!(starts, i64s(&pl, "window_starts"));
    let boxes: Vec<f32> = r.windows.iter().flat_map(|w| w.bbox.unwrap()).collect();
    assert_eq!(boxes, f32s(&pl, "window_boxes"));
    check(
        "final_logits (faithful)",
        &r.logits,
        &f32s(&pl, "final_logits"),
        2e-5,
        2e-5,
    );
    check_mask(
        "final_mask (faithful)",
        &r.logits,
        &u8s(&pl, "final_mask_u8"),
        Some(&f32s(&pl, "final_logits")),
    );

    // Fixed mode: the one window's box moves by the padding (1, 80, 67);
    // everything before the zoom-in decode is identical.
    let mut fixed = Segmenter::new(
        &m,
        ZoomOptions {
            pad_mode: PadMode::Fixed,
            ..Default::default()
        },
    );
    let rf = fixed.zoom_in(&pre, &cat, 0, global).unwrap();
    assert_eq!(rf.roi, r.roi);
    assert_eq!(rf.windows[0].start, r.windows[0].start);
    assert_eq!(
        rf.windows[0].bbox,
        Some([1.0, 106.0, 109.0, 30.0, 166.0, 172.0])
    );
    let (rel, _) = compare(&rf.logits, &r.logits);
    println!("fixed vs faithful final logits: rel_l2 {rel:.3e}");
    assert!(rel > 1e-3, "fixed mode should change the zoom-in logits");
}

/// lung1: 12 windows. "box + text" and "text only" in one segmenter, so the
/// second category reuses the first one's window embeddings (same ROI).
#[test]
fn pipeline_lung1_multi_window_box_text_and_text() {
    let (Some(bt), Some(tx), Some(ct_path), Some(mask_bt), Some(mask_tx)) = (
        fixture("pipeline_realct/lung1_box_text/pipeline.safetensors"),
        fixture("pipeline_realct/lung1_text/pipeline.safetensors"),
        fixture("data/lung1_image.nii.gz"),
        fixture("pipeline_realct/lung1_box_text/final_mask.nii.gz"),
        fixture("pipeline_realct/lung1_text/final_mask.nii.gz"),
    ) else {
        return;
    };
    let (btb, txb) = (std::fs::read(bt).unwrap(), std::fs::read(tx).unwrap());
    let (bts, txs) = (
        SafeTensors::deserialize(&btb).unwrap(),
        SafeTensors::deserialize(&txb).unwrap(),
    );
    let ct = segvol::io::nifti::read_ct(&ct_path).unwrap();
    let dims = [ct.dims[2], ct.dims[1], ct.dims[0]];
    let pre = segvol::pipeline::preprocess::preprocess(&ct.data, dims, [32, 256, 256]).unwrap();
    assert_eq!(
        pre.crop_start.map(|v| v as i64).to_vec(),
        i64s(&bts, "crop_start_dhw")
    );

    let cfg = ModelConfig::default();
    let m = SegVol::load(
        CpuBackend::new(),
        Arc::new(synth_checkpoint(&cfg).unwrap()),
        cfg,
    )
    .unwrap();
    let tok = segvol::model::ClipTokenizer::builtin().unwrap();
    let text = m
        .embed_text_ids(&tok.encode_prompt("lung tumor").unwrap())
        .unwrap();
    let b = f32s(&bts, "zoom_out_box");
    let cats = [
        CategoryPrompt {
            text: Some(text.clone()),
            bbox: Some([b[0], b[1], b[2], b[3], b[4], b[5]]),
            points: vec![],
        },
        CategoryPrompt {
            text: Some(text),
            bbox: None,
            points: vec![],
        },
    ];
    let mut seg = Segmenter::new(
        &m,
        ZoomOptions {
            pad_mode: PadMode::Faithful,
            ..Default::default()
        },
    );
    let results = seg.segment(&pre, &cats, &mut |_| {}).unwrap();
    println!(
        "windows encoded {}, reused {}",
        seg.timings.windows_encoded, seg.timings.windows_reused
    );
    assert_eq!(seg.timings.windows_encoded, 12);
    assert_eq!(seg.timings.windows_reused, 12);

    let cd = pre.cropped_dims();
    for ((name, st, mask_path), r) in [
        ("lung1_box_text", &bts, &mask_bt),
        ("lung1_text", &txs, &mask_tx),
    ]
    .into_iter()
    .zip(&results)
    {
        let roi: Vec<i64> = r.roi.unwrap().iter().map(|&v| v as i64).collect();
        assert_eq!(roi, i64s(st, "roi_min_max_inclusive"), "{name} ROI");
        let starts: Vec<i64> = r
            .windows
            .iter()
            .flat_map(|w| w.start.map(|v| v as i64))
            .collect();
        assert_eq!(starts, i64s(st, "window_starts"), "{name} window starts");
        let boxes = f32s(st, "window_boxes");
        for (i, w) in r.windows.iter().enumerate() {
            match w.bbox {
                Some(bx) => assert_eq!(
                    bx.to_vec(),
                    boxes[i * 6..i * 6 + 6].to_vec(),
                    "{name} window {i} box"
                ),
                None => assert_eq!(name, "lung1_text", "only the text case has no window boxes"),
            }
        }
        let idx = i64s(st, "final_logits_sample_idx");
        let at = |k: usize| {
            ((idx[3 * k] as usize * cd[1]) + idx[3 * k + 1] as usize) * cd[2]
                + idx[3 * k + 2] as usize
        };
        let samples: Vec<f32> = (0..idx.len() / 3).map(|k| r.logits[at(k)]).collect();
        check(
            &format!("{name} final_logits_samples"),
            &samples,
            &f32s(st, "final_logits_samples"),
            2e-5,
            2e-5,
        );

        // The final mask in the NIfTI frame; a mismatch must sit where our
        // own logit is within 1e-4 of the boundary.
        let want = segvol::io::nifti::read_ct(mask_path).unwrap();
        let place = segvol::pipeline::output::Placement {
            dims,
            crop_start: pre.crop_start,
            crop_end: pre.crop_end,
        };
        let lm = segvol::pipeline::output::label_map(&place, &[&r.logits]).unwrap();
        let mut flips = 0;
        for (i, (&g, &w)) in lm.iter().zip(&want.data).enumerate() {
            if (g != 0) != (w != 0.0) {
                let (z, rest) = (i / (dims[1] * dims[2]), i % (dims[1] * dims[2]));
                let (y, x) = (rest / dims[2], rest % dims[2]);
                let c = ((z - pre.crop_start[0]) * cd[1] + (y - pre.crop_start[1])) * cd[2]
                    + (x - pre.crop_start[2]);
                assert!(
                    r.logits[c].abs() < 1e-4,
                    "{name}: mask differs at voxel {i} with logit {}",
                    r.logits[c]
                );
                flips += 1;
            }
        }
        println!("{name}: {flips} boundary flips of {}", lm.len());
        // Every flip is near the boundary (checked above); a handful in 12.6 M voxels.
        assert!(flips <= 20);
    }
}
