//! `segvol segment`: CT + prompts → label map in the CT's geometry.

use serde_json::json;

use segvol::backend::Backend;
use segvol::error::Result;
use segvol::io::nifti::{probe_ct, read_ct, HeaderInfo};
use segvol::io::write::{check_output_path, write_label_map, write_probabilities};
use segvol::pipeline::memory::{check, MemoryLimit};
use segvol::pipeline::output::{label_counts, label_map, probability_map, Placement};
use segvol::pipeline::preprocess::preprocess_ct;
use segvol::pipeline::request::Request;
use segvol::pipeline::zoom::Segmenter;

use super::common::{
    check_json_path, dispatch, load_model, memory_limit, memory_note, resolve_weights, workload,
    write_json, zoom_options, BackendTask, Progress,
};
use super::SegmentArgs;

pub fn run(args: SegmentArgs) -> Result<()> {
    let mut progress = Progress::new();
    let req = Request {
        texts: args.texts.clone(),
        boxes: args.boxes.clone(),
        points: args.points.clone(),
        frame: Some(args.frame.into()),
        labels: args.labels.clone(),
    };
    // Refuse a bad request or output path before loading anything.
    let n_cats = req.category_count()?;
    for t in &args.texts {
        if let Some(w) = super::categories::unknown_text_warning(t) {
            eprintln!("{w}");
        }
    }
    let limit = memory_limit(&args.engine)?;
    check_output_path(&args.output, &args.ct)?;
    if let Some(p) = &args.probabilities {
        check_output_path(p, &args.ct)?;
    }
    if let Some(j) = &args.json {
        check_json_path(j)?;
    }
    let info = probe_ct(&args.ct)?;
    let weights = resolve_weights(args.engine.weights.as_deref(), &progress)?;
    progress.step("loading model");
    let engine = args.engine.clone();
    dispatch(
        &engine,
        Task {
            args,
            req,
            weights,
            limit,
            n_cats,
            info,
            progress: &mut progress,
        },
    )
}

struct Task<'p> {
    args: SegmentArgs,
    req: Request,
    weights: std::path::PathBuf,
    limit: MemoryLimit,
    n_cats: usize,
    info: HeaderInfo,
    progress: &'p mut Progress,
}

impl BackendTask for Task<'_> {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task {
            args,
            req,
            weights,
            limit,
            n_cats,
            info,
            progress,
        } = self;
        let device = backend.name();
        progress.note(&format!("device: {device}"));
        let mut loaded = load_model(backend, &weights)?;
        let cfg = loaded.model.config().clone();

        progress.step("reading CT");
        let mut work = workload(&args.engine, info.dims, n_cats);
        work.probabilities = args.probabilities.is_some();
        let est = check(&cfg, &work, limit)?;
        progress.note(&memory_note(&est, limit));
        let mut ct = read_ct(&args.ct)?;
        progress.step("preprocessing");
        let dims = [ct.dims[2], ct.dims[1], ct.dims[0]];
        let mut pre = preprocess_ct(&ct, cfg.spatial_size)?;
        // The intensities are not needed past this point; only the header
        // and geometry are, for the outputs.
        ct.data = Vec::new();
        work.cropped = Some(pre.cropped_dims());
        check(&cfg, &work, limit)?;

        progress.step("text and prompts");
        let cats = req.categories(&ct, &pre, &loaded.model, &mut loaded.texts)?;
        let prompts: Vec<_> = cats.iter().map(|c| c.prompt.clone()).collect();

        progress.step("segmenting");
        let mut seg = Segmenter::new(&loaded.model, zoom_options(&args.engine));
        let results = {
            let p = &*progress;
            seg.segment(&pre, &prompts, &mut |m| p.note(m))?
        };

        pre.image = Vec::new();
        progress.step("writing output");
        let place = Placement {
            dims,
            crop_start: pre.crop_start,
            crop_end: pre.crop_end,
        };
        let logits: Vec<&[f32]> = results.iter().map(|r| r.logits.as_slice()).collect();
        let labels = label_map(&place, &logits)?;
        let counts = label_counts(&labels, cats.len());
        if cats.len() <= 255 {
            let l8: Vec<u8> = labels.iter().map(|&v| v as u8).collect();
            drop(labels);
            write_label_map(&args.output, &ct, &l8)?;
        } else {
            write_label_map(&args.output, &ct, &labels)?;
        }
        if let Some(pp) = &args.probabilities {
            let maps = results
                .iter()
                .map(|r| probability_map(&place, &r.logits))
                .collect::<Result<Vec<_>>>()?;
            write_probabilities(pp, &ct, &maps)?;
        }
        progress.finish();

        let voxel_ml = ct.spacing().iter().product::<f64>() / 1000.0;
        for (i, (c, n)) in cats.iter().zip(&counts).enumerate() {
            eprintln!(
                "  {:>3} {:24} {:>10} voxels {:>10.1} ml",
                i + 1,
                c.name,
                n,
                *n as f64 * voxel_ml
            );
        }
        if let Some(jp) = &args.json {
            let t = &seg.timings;
            let categories: Vec<_> = cats
                .iter()
                .zip(&results)
                .zip(&counts)
                .enumerate()
                .map(|(i, ((c, r), n))| {
                    json!({
                        "label": i + 1,
                        "name": c.name,
                        "voxels": n,
                        "volume_ml": *n as f64 * voxel_ml,
                        "zoom_out_box_dhw": c.prompt.bbox,
                        "roi_dhw_inclusive": r.roi,
                        "windows": r.windows.len(),
                    })
                })
                .collect();
            let steps: serde_json::Map<String, serde_json::Value> = progress
                .steps
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            write_json(
                jp,
                &json!({
                    "ct": args.ct,
                    "output": args.output,
                    "weights": loaded.weights,
                    "device": device,
                    "mode": format!("{:?}", args.engine.mode).to_lowercase(),
                    "zoom_in": !args.engine.no_zoom_in,
                    "categories": categories,
                    "timings_s": {
                        "steps": steps,
                        "zoom_out_encode": t.zoom_out_encode.as_secs_f64(),
                        "zoom_out_decode": t.zoom_out_decode.as_secs_f64(),
                        "zoom_in_encode": t.zoom_in_encode.as_secs_f64(),
                        "zoom_in_decode": t.zoom_in_decode.as_secs_f64(),
                        "total": progress.total(),
                    },
                    "windows_encoded": t.windows_encoded,
                    "windows_reused": t.windows_reused,
                    "window_decodes": t.window_decodes,
                }),
            )?;
        }
        Ok(())
    }
}
