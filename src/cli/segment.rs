//! `segvol segment`: CT + prompts → label map in the CT's geometry; or a
//! cohort of CTs with the model loaded once (`cohort.rs`). Either way each
//! case goes through `case.rs`.

use std::time::Instant;

use segvol::api::Engine;
use segvol::backend::Backend;
use segvol::error::{Error, Result};
use segvol::pipeline::request::Request;

use super::bars::Bars;
use super::case::{self, Case, Settings};
use super::cohort::{self, Plan};
use super::common::{dispatch, memory_limit, resolve_weights, BackendTask, Progress};
use super::SegmentArgs;

pub fn run(mut args: SegmentArgs) -> Result<()> {
    let start = Instant::now();
    let mut progress = Progress::since(start, String::new());
    args.texts = super::outputs::expand_texts(&args.texts, &args.outputs.roi_subset)?;
    let req = Request {
        texts: args.texts.clone(),
        boxes: args.boxes.clone(),
        points: args.points.clone(),
        frame: Some(args.frame.into()),
        labels: args.labels.clone(),
    };
    let limit = memory_limit(&args.engine)?;
    // Refuse a bad request, output path or CT header before loading anything.
    let work = if cohort::wanted(&args) {
        Work::Cohort(cohort::plan(&args, &req)?)
    } else {
        let case = single_case(&args, req)?;
        case.check()?;
        args.outputs.check(&case.output)?;
        let mut case = case;
        case.opened = Some(case.open()?);
        Work::Single(Box::new(case))
    };
    let texts: Vec<&str> = match &work {
        Work::Single(c) => c.request.texts.iter().map(String::as_str).collect(),
        Work::Cohort(p) => p.texts(),
    };
    for t in texts {
        if let Some(w) = super::categories::unknown_text_warning(t) {
            tracing::warn!("{w}");
        }
    }
    let weights = resolve_weights(args.engine.weights.as_deref(), &progress)?;
    progress.step("loading model");
    let settings = Settings {
        engine: args.engine,
        outputs: args.outputs,
        limit,
        start,
    };
    dispatch(
        &settings.engine,
        Task {
            work,
            weights,
            settings: &settings,
            progress,
        },
    )
}

/// The one case of a single-CT run.
fn single_case(args: &SegmentArgs, request: Request) -> Result<Case> {
    let input = args
        .inputs
        .first()
        .cloned()
        .ok_or_else(|| Error::Invalid("no CT given".into()))?;
    let output = args.output.clone().ok_or_else(|| {
        Error::Invalid(
            "-o OUTPUT is required for one CT (or --output-dir DIR for a cohort run)".into(),
        )
    })?;
    Ok(Case {
        label: String::new(),
        input,
        sources: args.inputs.clone(),
        series: args.series.clone(),
        dicom_seg: args.dicom_seg.clone(),
        opened: None,
        output,
        probabilities: args.probabilities.clone(),
        json: args.json.clone(),
        preview: args.outputs.preview.clone(),
        request,
        problem: None,
    })
}

enum Work {
    Single(Box<Case>),
    Cohort(Plan),
}

struct Task<'s> {
    work: Work,
    weights: std::path::PathBuf,
    settings: &'s Settings,
    progress: Progress,
}

impl BackendTask for Task<'_> {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let Task {
            work,
            weights,
            settings,
            mut progress,
        } = self;
        progress.note(&format!("device: {}", backend.name()));
        let engine = Engine::load(backend, &weights)?;
        match work {
            Work::Single(case) => {
                let bars = Bars::new(1);
                case::run(&engine, &case, settings, progress, &bars)?;
                Ok(())
            }
            Work::Cohort(plan) => {
                progress.finish();
                cohort::run(&engine, &plan, settings)
            }
        }
    }
}
