//! One case of `segvol segment`: read → segment → write outputs. A single
//! run calls [`run`]; a cohort run calls [`read`] one case ahead on a
//! second thread and [`segment_and_write`] on the main one, so both paths
//! share every step.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use segvol::api::{Engine, Options, Segmentation};
use segvol::backend::Backend;
use segvol::config::ModelConfig;
use segvol::error::{Error, Result};
use segvol::io::dicom::{check_seg_output, write_dicom_seg};
use segvol::io::nifti::CtVolume;
use segvol::io::write::check_output_path;
use segvol::io::CtSource;
use segvol::pipeline::memory::{check, MemoryLimit};
use segvol::pipeline::preprocess::{preprocess_ct, Preprocessed};
use segvol::pipeline::request::Request;
use segvol::report::envelope::wrap;
use segvol::report::preview::check_preview_path;
use segvol::report::statistics::voxel_volume_ml;

use super::bars::Bars;
use super::common::{check_json_path, memory_note, workload, write_json, zoom_options, Progress};
use super::outputs::{write_case, OutputArgs};
use super::EngineArgs;

/// One CT and what to make of it.
pub struct Case {
    /// Shown before the case's progress lines in a cohort ("3/10 name: ").
    pub label: String,
    /// The CT as named (a NIfTI file, a DICOM folder, or the first of a
    /// series' files): the case's name and messages come from it.
    pub input: PathBuf,
    /// Everything that makes up the CT: `[input]`, or a series' files.
    pub sources: Vec<PathBuf>,
    /// `--series`: the DICOM series to read where a folder holds several.
    pub series: Option<String>,
    /// `--dicom-seg`: a DICOM Segmentation beside the label map (DICOM input).
    pub dicom_seg: Option<PathBuf>,
    /// The input already opened (headers read) by an up-front check.
    pub opened: Option<CtSource>,
    pub output: PathBuf,
    pub probabilities: Option<PathBuf>,
    pub json: Option<PathBuf>,
    /// The `--preview` PNG of this case.
    pub preview: Option<PathBuf>,
    pub request: Request,
    /// Why the case cannot run, found before its CT is read (a manifest
    /// row's bad prompt): it fails with this message.
    pub problem: Option<String>,
}

/// What every case of a run shares.
pub struct Settings {
    pub engine: EngineArgs,
    /// `--split`, `--statistics`, `--preview`: the outputs beyond the label map.
    pub outputs: OutputArgs,
    pub limit: MemoryLimit,
    /// The run's start, for the progress lines' clock.
    pub start: Instant,
}

/// A case read and preprocessed, ready for the network.
pub struct Loaded {
    /// The CT's header and geometry (its voxels are freed after preprocessing).
    ct: CtVolume,
    /// Where it came from (a DICOM series' headers, for DICOM outputs).
    source: CtSource,
    pre: Preprocessed,
    progress: Progress,
}

/// What a finished case reports to a cohort's summary.
pub struct Done {
    /// Per category: name, voxels, millilitres.
    pub categories: Vec<(String, usize, f64)>,
}

impl Case {
    /// Opens the input (headers only) and checks the DICOM-SEG output
    /// against it.
    pub fn open(&self) -> Result<CtSource> {
        let source = match &self.opened {
            Some(s) => s.clone(),
            None => CtSource::open(&self.sources, self.series.as_deref())?,
        };
        if let Some(p) = &self.dicom_seg {
            let series = source.dicom().ok_or_else(|| {
                Error::Invalid("--dicom-seg needs a DICOM series as input".into())
            })?;
            check_seg_output(p, series)?;
        }
        Ok(source)
    }

    /// Checks the prompts and the output paths, before anything is read.
    pub fn check(&self) -> Result<usize> {
        if let Some(p) = &self.problem {
            return Err(Error::Invalid(p.clone()));
        }
        let n = self.request.category_count()?;
        check_output_path(&self.output, &self.input)?;
        if let Some(p) = &self.probabilities {
            check_output_path(p, &self.input)?;
        }
        if let Some(j) = &self.json {
            check_json_path(j)?;
        }
        Ok(n)
    }
}

/// Reading and preprocessing, with the memory check before the voxels are
/// read and again once the foreground crop is known. `admit` gets the
/// estimated peak before the voxels are read, and may wait until it fits
/// beside the case being computed (a cohort's read-ahead). `bars` is the
/// main thread's (a case read ahead does not move them).
pub fn read(
    case: &Case,
    cfg: &ModelConfig,
    settings: &Settings,
    mut progress: Progress,
    bars: Option<&Bars>,
    admit: &mut dyn FnMut(u64),
) -> Result<Loaded> {
    let n_cats = case.check()?;
    settings.outputs.check(&case.output)?;
    if let Some(p) = &case.preview {
        check_preview_path(p)?;
    }
    progress.step("reading CT");
    if let Some(b) = bars {
        b.stage("reading CT");
    }
    let source = case.open()?;
    let mut work = workload(&settings.engine, source.dims()?, n_cats);
    work.probabilities = case.probabilities.is_some();
    work.intensities_kept = settings.outputs.needs_intensities();
    let est = check(cfg, &work, settings.limit)?;
    progress.note(&memory_note(&est, settings.limit));
    admit(est.peak);
    let mut ct = source.read()?;
    progress.step("preprocessing");
    if let Some(b) = bars {
        b.stage("preprocessing");
    }
    let pre = preprocess_ct(&ct, cfg.spatial_size)?;
    // Past this point only the header and geometry are needed for the
    // outputs, unless statistics or a preview read the intensities.
    if !work.intensities_kept {
        ct.data = Vec::new();
    }
    work.cropped = Some(pre.cropped_dims());
    check(cfg, &work, settings.limit)?;
    progress.finish();
    Ok(Loaded {
        ct,
        source,
        pre,
        progress,
    })
}

/// The network, then the outputs: the label map (and probabilities, JSON)
/// written atomically.
pub fn segment_and_write<B: Backend>(
    engine: &Engine<B>,
    case: &Case,
    loaded: Loaded,
    settings: &Settings,
    bars: &Bars,
) -> Result<Done> {
    let Loaded {
        ct,
        source,
        pre,
        mut progress,
    } = loaded;
    progress.step("segmenting");
    bars.stage("segmenting");
    let opts = Options {
        zoom: zoom_options(&settings.engine),
        probabilities: case.probabilities.is_some(),
    };
    let result = {
        let p = &progress;
        engine.segment_preprocessed(&ct, pre, &case.request, &opts, &mut |s| {
            p.pipeline(s);
            bars.pipeline(s);
        })?
    };

    progress.step("writing output");
    bars.stage("writing output");
    result.write_label_map(&case.output, &ct)?;
    if let Some(pp) = &case.probabilities {
        result.write_probabilities(pp, &ct)?;
    }
    if let (Some(p), Some(series)) = (&case.dicom_seg, source.dicom()) {
        write_dicom_seg(p, series, &result.labels, &result.names)?;
    }
    let extra = write_case(
        &settings.outputs,
        &result,
        &ct,
        &case.output,
        case.preview.as_deref(),
    )?;
    progress.finish();

    let voxel_ml = voxel_volume_ml(&ct.affine());
    let categories: Vec<(String, usize, f64)> = result
        .categories
        .iter()
        .map(|c| (c.name.clone(), c.voxels, c.voxels as f64 * voxel_ml))
        .collect();
    for (i, (name, voxels, ml)) in categories.iter().enumerate() {
        tracing::info!(
            "  {}{:>3} {name:24} {voxels:>10} voxels {ml:>10.1} ml",
            case.label,
            i + 1
        );
    }
    if let Some(jp) = &case.json {
        let mut summary = case_json(engine, case, settings, &result, voxel_ml, &progress);
        extra.merge_into(&mut summary);
        let device = engine.model().backend().name();
        write_json(jp, &wrap("segment", &device, summary))?;
    }
    Ok(Done { categories })
}

/// A whole case on this thread: what a single-CT run does.
pub fn run<B: Backend>(
    engine: &Engine<B>,
    case: &Case,
    settings: &Settings,
    progress: Progress,
    bars: &Bars,
) -> Result<Done> {
    let cfg = engine.model().config().clone();
    let loaded = read(case, &cfg, settings, progress, Some(bars), &mut |_| {})?;
    segment_and_write(engine, case, loaded, settings, bars)
}

/// The case's JSON summary: voxel counts, volumes, ROIs, timings.
fn case_json<B: Backend>(
    engine: &Engine<B>,
    case: &Case,
    settings: &Settings,
    result: &Segmentation,
    voxel_ml: f64,
    progress: &Progress,
) -> serde_json::Value {
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
    let engine_args = &settings.engine;
    json!({
        "ct": case.input,
        "output": case.output,
        "weights": engine.weights(),
        "mode": format!("{:?}", engine_args.mode).to_lowercase(),
        "zoom_in": !engine_args.no_zoom_in,
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
    })
}
