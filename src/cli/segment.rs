//! `segvol segment`: CT + prompts → label map in the CT's geometry.

use serde_json::json;

use segvol::api::{Engine, Options};
use segvol::backend::Backend;
use segvol::error::{Error, Result};
use segvol::io::dicom::{check_seg_output, write_dicom_seg};
use segvol::io::write::check_output_path;
use segvol::io::CtSource;
use segvol::pipeline::memory::{check, MemoryLimit};
use segvol::pipeline::preprocess::preprocess_ct;
use segvol::pipeline::request::Request;

use super::common::{
    check_json_path, dispatch, memory_limit, memory_note, resolve_weights, workload, write_json,
    zoom_options, BackendTask, Progress,
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
    let source = CtSource::open(&args.ct, args.series.as_deref())?;
    check_output_path(&args.output, source.path())?;
    if let Some(p) = &args.probabilities {
        check_output_path(p, source.path())?;
    }
    if let Some(j) = &args.json {
        check_json_path(j)?;
    }
    if let Some(p) = &args.dicom_seg {
        check_seg_output(
            p,
            source.dicom().ok_or_else(|| {
                Error::Invalid("--dicom-seg needs a DICOM series as input".into())
            })?,
        )?;
    }
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
            source,
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
    source: CtSource,
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
            source,
            progress,
        } = self;
        let device = backend.name();
        progress.note(&format!("device: {device}"));
        let engine = Engine::load(backend, &weights)?;
        let cfg = engine.model().config().clone();

        progress.step("reading CT");
        let mut work = workload(&args.engine, source.dims()?, n_cats);
        work.probabilities = args.probabilities.is_some();
        let est = check(&cfg, &work, limit)?;
        progress.note(&memory_note(&est, limit));
        let mut ct = source.read()?;
        progress.step("preprocessing");
        let pre = preprocess_ct(&ct, cfg.spatial_size)?;
        // The intensities are not needed past this point; only the header
        // and geometry are, for the outputs.
        ct.data = Vec::new();
        work.cropped = Some(pre.cropped_dims());
        check(&cfg, &work, limit)?;

        progress.step("segmenting");
        let opts = Options {
            zoom: zoom_options(&args.engine),
            probabilities: args.probabilities.is_some(),
        };
        let result = {
            let p = &*progress;
            engine.segment_preprocessed(&ct, pre, &req, &opts, &mut |m| p.note(m))?
        };

        progress.step("writing output");
        result.write_label_map(&args.output, &ct)?;
        if let Some(pp) = &args.probabilities {
            result.write_probabilities(pp, &ct)?;
        }
        if let (Some(p), Some(d)) = (&args.dicom_seg, source.dicom()) {
            write_dicom_seg(p, d, &result.labels, &result.names)?;
        }
        progress.finish();

        let voxel_ml = ct.spacing().iter().product::<f64>() / 1000.0;
        for (i, c) in result.categories.iter().enumerate() {
            eprintln!(
                "  {:>3} {:24} {:>10} voxels {:>10.1} ml",
                i + 1,
                c.name,
                c.voxels,
                c.voxels as f64 * voxel_ml
            );
        }
        if let Some(jp) = &args.json {
            let t = &result.timings;
            let categories: Vec<_> = result
                .categories
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    json!({
                        "label": i + 1,
                        "name": c.name,
                        "voxels": c.voxels,
                        "volume_ml": c.voxels as f64 * voxel_ml,
                        "zoom_out_box_dhw": c.zoom_out_box,
                        "roi_dhw_inclusive": c.roi,
                        "windows": c.windows,
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
                    "ct": source.path(),
                    "output": args.output,
                    "weights": engine.weights(),
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
