//! `segvol eval`: prompts built from a ground-truth label map the way the
//! reference demo builds them, then Dice per category.

use serde_json::json;

use segvol::backend::interp::resize;
use segvol::backend::{Backend, Interp};
use segvol::error::{Error, Result};
use segvol::io::nifti::{probe_ct, read_ct, HeaderInfo};
use segvol::io::write::{check_output_path, write_label_map};
use segvol::pipeline::is_foreground;
use segvol::pipeline::memory::{check, MemoryLimit};
use segvol::pipeline::output::{dice, label_map, Placement};
use segvol::pipeline::preprocess::preprocess_ct;
use segvol::pipeline::sampling::{select_points, Rng};
use segvol::pipeline::windows::{mask_bbox, EMPTY_BOX};
use segvol::pipeline::zoom::{CategoryPrompt, Segmenter};
use segvol::report::envelope::wrap;

use super::common::{
    check_json_path, dispatch, load_model, memory_limit, memory_note, resolve_weights, workload,
    write_json, zoom_options, BackendTask, Progress,
};
use super::{EvalArgs, PromptKind};

pub fn run(args: EvalArgs) -> Result<()> {
    let mut progress = Progress::new();
    let classes = args
        .classes
        .iter()
        .map(|c| {
            let (v, n) = c.split_once('=').ok_or_else(|| {
                Error::Invalid(format!("--class {c:?}: expected VALUE=NAME, e.g. 5=liver"))
            })?;
            let v: f32 = v.trim().parse().map_err(|_| {
                Error::Invalid(format!("--class {c:?}: {v:?} is not a label value"))
            })?;
            Ok((v, n.trim().to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    for (_, name) in &classes {
        if let Some(w) = super::categories::unknown_text_warning(name) {
            tracing::warn!("{w}");
        }
    }
    let limit = memory_limit(&args.engine)?;
    if let Some(out) = &args.output {
        check_output_path(out, &args.ct)?;
    }
    if let Some(j) = &args.json {
        check_json_path(j)?;
    }
    let info = probe_ct(&args.ct)?;
    let gt_info = probe_ct(&args.labels_from)?;
    if gt_info.dims != info.dims {
        return Err(Error::nifti(
            &args.labels_from,
            format!(
                "label map dims {:?} differ from the CT's {:?}",
                gt_info.dims, info.dims
            ),
        ));
    }
    let weights = resolve_weights(args.engine.weights.as_deref(), &progress)?;
    progress.step("loading model");
    let engine = args.engine.clone();
    dispatch(
        &engine,
        Task {
            args,
            classes,
            weights,
            limit,
            info,
            progress: &mut progress,
        },
    )
}

struct Task<'p> {
    args: EvalArgs,
    classes: Vec<(f32, String)>,
    weights: std::path::PathBuf,
    limit: MemoryLimit,
    info: HeaderInfo,
    progress: &'p mut Progress,
}

impl BackendTask for Task<'_> {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task {
            args,
            classes,
            weights,
            limit,
            info,
            progress,
        } = self;
        let device = backend.name();
        progress.note(&format!("device: {device}"));
        let mut loaded = load_model(backend, &weights)?;
        let cfg = loaded.model.config().clone();
        progress.step("reading CT and labels");
        let mut work = workload(&args.engine, info.dims, classes.len());
        work.label_map_input = true;
        let est = check(&cfg, &work, limit)?;
        progress.note(&memory_note(&est, limit));
        let mut ct = read_ct(&args.ct)?;
        let gt = read_ct(&args.labels_from)?;
        if gt.dims != ct.dims {
            return Err(Error::nifti(
                &args.labels_from,
                format!(
                    "label map dims {:?} differ from the CT's {:?}",
                    gt.dims, ct.dims
                ),
            ));
        }
        progress.step("preprocessing");
        let dims = [ct.dims[2], ct.dims[1], ct.dims[0]];
        let pre = preprocess_ct(&ct, cfg.spatial_size)?;
        // Only the CT's header and geometry are needed from here on.
        ct.data = Vec::new();
        work.cropped = Some(pre.cropped_dims());
        check(&cfg, &work, limit)?;
        let cd = pre.cropped_dims();
        let zoom = pre.zoom_out_dims;

        progress.step("building prompts from the labels");
        let use_box = matches!(args.prompt, PromptKind::Box | PromptKind::BoxText);
        let use_point = matches!(args.prompt, PromptKind::Point | PromptKind::PointText);
        let use_text = matches!(
            args.prompt,
            PromptKind::Text | PromptKind::BoxText | PromptKind::PointText
        );
        let mut kept = Vec::new();
        let mut prompts = Vec::new();
        for (ci, (value, name)) in classes.iter().enumerate() {
            // The label cropped like the image, then resized nearest-exact
            // to the zoom-out frame, as the demo does.
            let mut cropped = vec![0f32; cd.iter().product()];
            for d in 0..cd[0] {
                for h in 0..cd[1] {
                    for w in 0..cd[2] {
                        let src = ((pre.crop_start[0] + d) * dims[1] + pre.crop_start[1] + h)
                            * dims[2]
                            + pre.crop_start[2]
                            + w;
                        cropped[(d * cd[1] + h) * cd[2] + w] = f32::from(gt.data[src] == *value);
                    }
                }
            }
            let mut z = vec![0f32; zoom.iter().product()];
            resize(&cropped, 1, cd, zoom, Interp::NearestExact, &mut z);
            let at = |d: usize, h: usize, w: usize| z[(d * zoom[1] + h) * zoom[2] + w];
            let bbox = mask_bbox(|d, h, w| at(d, h, w) > 0.0, zoom);
            if bbox == EMPTY_BOX {
                progress.note(&format!(
                    "class {value} ({name}): not in the zoom-out label, skipped"
                ));
                continue;
            }
            let mut points = Vec::new();
            if use_point {
                let idx = |i: usize| {
                    [
                        i / (zoom[1] * zoom[2]),
                        (i / zoom[2]) % zoom[1],
                        i % zoom[2],
                    ]
                };
                let pos: Vec<[usize; 3]> = (0..z.len()).filter(|&i| z[i] > 0.9).map(idx).collect();
                let neg: Vec<[usize; 3]> = (0..z.len()).filter(|&i| z[i] < 0.1).map(idx).collect();
                let mut rng = Rng::derive(args.engine.seed, &[u64::MAX, ci as u64]);
                points = select_points(&mut rng, &pos, &neg, 3, 3);
            }
            let text = if use_text {
                Some(loaded.texts.embed(&loaded.model, name)?)
            } else {
                None
            };
            prompts.push(CategoryPrompt {
                text,
                bbox: use_box.then_some(bbox),
                points,
            });
            kept.push((*value, name.clone()));
        }
        if kept.is_empty() {
            return Err(Error::Invalid(
                "none of the classes is present in the label map".into(),
            ));
        }

        progress.step("segmenting");
        let mut seg = Segmenter::new(&loaded.model, zoom_options(&args.engine));
        let results = {
            let p = &*progress;
            seg.segment(&pre, &prompts, &mut |m| p.pipeline(m))?
        };
        progress.step("scoring");
        let place = Placement {
            dims,
            crop_start: pre.crop_start,
            crop_end: pre.crop_end,
        };
        let mut rows = Vec::new();
        println!(
            "{:>6}  {:24} {:>10} {:>10} {:>8} {:>10}",
            "value", "name", "gt voxels", "predicted", "Dice", "Dice(+1)"
        );
        for ((value, name), r) in kept.iter().zip(&results) {
            let full = label_map(&place, &[&r.logits])?;
            let (strict, plus1) = dice(
                full.iter().map(|&l| l == 1),
                gt.data.iter().map(|&g| g == *value),
            );
            let n_gt = gt.data.iter().filter(|&&g| g == *value).count();
            let n_pred = r.logits.iter().filter(|&&v| is_foreground(v)).count();
            println!("{value:>6}  {name:24} {n_gt:>10} {n_pred:>10} {strict:>8.4} {plus1:>10.4}");
            rows.push(json!({"value": value, "name": name, "gt_voxels": n_gt, "predicted_voxels": n_pred, "dice": strict, "dice_plus1_demo": plus1, "roi_dhw_inclusive": r.roi}));
        }
        if let Some(out) = &args.output {
            let logits: Vec<&[f32]> = results.iter().map(|r| r.logits.as_slice()).collect();
            let lm: Vec<u8> = label_map(&place, &logits)?
                .iter()
                .map(|&v| v as u8)
                .collect();
            write_label_map(out, &ct, &lm)?;
        }
        progress.finish();
        if let Some(jp) = &args.json {
            write_json(
                jp,
                &wrap(
                    "eval",
                    &device,
                    json!({"ct": args.ct, "labels": args.labels_from, "prompt": format!("{:?}", args.prompt), "classes": rows, "total_s": progress.total()}),
                ),
            )?;
        }
        Ok(())
    }
}
