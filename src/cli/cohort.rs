//! Cohort runs of `segvol segment`: many CTs (several paths, a folder of
//! NIfTI files, or a CSV manifest) with the model loaded once. The next case
//! is read and preprocessed on a second thread while the current one is on
//! the network; the hand-over is a rendezvous channel, so at most one case
//! waits ready (memory stays that of two cases, not of the cohort). A case
//! that fails is reported and the run goes on; `summary.json` and
//! `summary.csv` in the output folder say what happened to each case, and
//! are rewritten after every case so an interrupted run leaves them current.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use serde_json::json;

use segvol::api::Engine;
use segvol::backend::Backend;
use segvol::error::{Error, Result};
use segvol::pipeline::request::Request;

use super::bars::Bars;
use super::case::{self, Case, Done, Settings};
use super::common::{write_file, write_json, Progress};
use super::manifest;
use super::SegmentArgs;

/// Whether the arguments ask for a cohort run rather than one CT.
pub fn wanted(args: &SegmentArgs) -> bool {
    args.manifest.is_some()
        || args.output_dir.is_some()
        || args.inputs.len() > 1
        || args
            .inputs
            .first()
            .is_some_and(|p| !nifti_files(p).is_empty())
}

fn is_nifti(p: &Path) -> bool {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    n.ends_with(".nii") || n.ends_with(".nii.gz")
}

/// The NIfTI files directly inside `dir`, sorted (none when `dir` is not a
/// folder). A folder without them is one input of its own (a DICOM series).
fn nifti_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_nifti(p))
        .collect();
    v.sort();
    v
}

/// A case's name from its input: the file name without `.nii` / `.nii.gz`,
/// or the folder's name.
pub fn case_name(input: &Path) -> String {
    let n = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| input.display().to_string());
    let lower = n.to_ascii_lowercase();
    for ext in [".nii.gz", ".nii"] {
        if lower.ends_with(ext) && n.len() > ext.len() {
            return n[..n.len() - ext.len()].to_string();
        }
    }
    n
}

/// The JSON next to a label map: `x.nii.gz` → `x.json`.
fn json_beside(output: &Path) -> PathBuf {
    let name = case_name(output);
    output.with_file_name(format!("{name}.json"))
}

/// The cases of a cohort run, in order, and where the summary goes.
pub struct Plan {
    pub cases: Vec<Case>,
    /// Cases whose outputs exist, with `--skip-existing`.
    skip: Vec<bool>,
    dir: PathBuf,
}

impl Plan {
    /// Every case's text prompts, for the unknown-name warnings.
    pub fn texts(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.cases
            .iter()
            .flat_map(|c| c.request.texts.iter().map(String::as_str))
            .filter(|t| seen.insert(*t))
            .collect()
    }
}

/// Lists the cases, names their outputs and refuses what cannot work for
/// the whole run (a missing output folder option, two cases writing one
/// file); a single case's problem is left for the run to report.
pub fn plan(args: &SegmentArgs, req: &Request) -> Result<Plan> {
    let refuse = |what: &str| {
        Err(Error::Invalid(format!(
            "{what} names one file; a cohort run (several CTs, a folder, --manifest or \
             --output-dir) writes NAME.nii.gz and NAME.json per case into --output-dir"
        )))
    };
    if args.output.is_some() {
        return refuse("-o");
    }
    if args.probabilities.is_some() {
        return refuse("--probabilities");
    }
    if args.json.is_some() {
        return refuse("--json");
    }
    let dir = args.output_dir.clone().ok_or_else(|| {
        Error::Invalid(
            "a cohort run (several CTs, a folder of CTs or --manifest) needs --output-dir DIR"
                .into(),
        )
    })?;
    let entries: Vec<manifest::Entry> = match &args.manifest {
        Some(m) => {
            if !args.inputs.is_empty() {
                return Err(Error::Invalid(
                    "give the CTs either on the command line or in --manifest, not both".into(),
                ));
            }
            manifest::read(m, req)?
        }
        None => {
            // A bad command-line prompt would fail every case: refuse it now.
            req.category_count()?;
            args.inputs
                .iter()
                .flat_map(|p| {
                    let inside = nifti_files(p);
                    if inside.is_empty() {
                        vec![p.clone()]
                    } else {
                        inside
                    }
                })
                .map(|input| manifest::Entry {
                    input,
                    output: None,
                    request: Ok(req.clone()),
                })
                .collect()
        }
    };
    if entries.is_empty() {
        return Err(Error::Invalid("no CT to segment".into()));
    }
    let n = entries.len();
    let mut taken: HashSet<PathBuf> = ["summary.json", "summary.csv"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let mut cases = Vec::with_capacity(n);
    for (i, e) in entries.into_iter().enumerate() {
        let name = case_name(&e.input);
        let output = match e.output {
            Some(o) => dir.join(o),
            None => dir.join(format!("{name}.nii.gz")),
        };
        let json = json_beside(&output);
        for p in [&output, &json] {
            if !taken.insert(p.clone()) {
                return Err(Error::Invalid(format!(
                    "two cases would write {} (case {}, {}): name the outputs in a --manifest's \
                     output column",
                    p.display(),
                    i + 1,
                    e.input.display()
                )));
            }
        }
        let (request, problem) = match e.request {
            Ok(r) => (r, None),
            Err(p) => (Request::default(), Some(p)),
        };
        cases.push(Case {
            label: format!("{}/{n} {name}: ", i + 1),
            input: e.input,
            output,
            probabilities: None,
            json: Some(json),
            request,
            problem,
        });
    }
    // Folders are made once every case is known to have its own outputs.
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for c in &cases {
        if let Some(parent) = c.output.parent() {
            std::fs::create_dir_all(parent).map_err(|err| Error::io(parent, err))?;
        }
    }
    let skip = cases
        .iter()
        .map(|c| {
            args.skip_existing && c.output.is_file() && c.json.as_ref().is_some_and(|j| j.is_file())
        })
        .collect();
    Ok(Plan { cases, skip, dir })
}

enum Status {
    Pending,
    Skipped,
    Done(Done, f64),
    Failed(String, f64),
}

/// Runs the cohort on `engine`; an error at the end when any case failed.
pub fn run<B: Backend>(engine: &Engine<B>, plan: &Plan, settings: &Settings) -> Result<()> {
    let cfg = engine.model().config().clone();
    let n = plan.cases.len();
    let mut status: Vec<Status> = plan
        .skip
        .iter()
        .map(|&s| if s { Status::Skipped } else { Status::Pending })
        .collect();
    let skipped = plan.skip.iter().filter(|&&s| s).count();
    if skipped > 0 {
        tracing::info!("{skipped} of {n} cases already done (--skip-existing): not recomputed");
        for (c, _) in plan.cases.iter().zip(&plan.skip).filter(|(_, &s)| s) {
            tracing::debug!("{}skipped: {} exists", c.label, c.output.display());
        }
    }
    let bars = Bars::new(n);
    for _ in 0..skipped {
        bars.case_done();
    }
    let todo: Vec<usize> = (0..n).filter(|&i| !plan.skip[i]).collect();
    let started = Instant::now();
    write_summary(engine, plan, &status, started)?;
    std::thread::scope(|scope| -> Result<()> {
        // Capacity 0: the reader hands a case over only when the main thread
        // takes it, so at most one case is read ahead.
        let (tx, rx) = sync_channel(0);
        let cfg = &cfg;
        scope.spawn(move || {
            for i in todo {
                let c = &plan.cases[i];
                let t = Instant::now();
                let progress = Progress::since(settings.start, c.label.clone());
                let loaded = case::read(c, cfg, settings, progress, None);
                // The case's own time: reading, not waiting for the hand-over.
                if tx.send((i, loaded, t.elapsed())).is_err() {
                    break;
                }
            }
        });
        for (i, loaded, read_time) in rx {
            let t = Instant::now();
            let c = &plan.cases[i];
            bars.case(c.label.trim_end_matches(": "));
            let r = loaded.and_then(|l| case::segment_and_write(engine, c, l, settings, &bars));
            let secs = (read_time + t.elapsed()).as_secs_f64();
            status[i] = match r {
                Ok(done) => Status::Done(done, secs),
                Err(e) => {
                    let msg = one_line(&e.to_string());
                    tracing::warn!("{}failed: {msg}; going on with the next case", c.label);
                    Status::Failed(msg, secs)
                }
            };
            bars.case_done();
            write_summary(engine, plan, &status, started)?;
        }
        Ok(())
    })?;
    let failed: Vec<&Case> = plan
        .cases
        .iter()
        .zip(&status)
        .filter(|(_, s)| matches!(s, Status::Failed(..)))
        .map(|(c, _)| c)
        .collect();
    let done = status
        .iter()
        .filter(|s| matches!(s, Status::Done(..)))
        .count();
    tracing::info!(
        "{done} done, {skipped} skipped, {} failed of {n} cases in {:.1} s; summary in {}",
        failed.len(),
        started.elapsed().as_secs_f64(),
        plan.dir.join("summary.json").display()
    );
    if failed.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = failed
        .iter()
        .take(3)
        .map(|c| super::cohort::case_name(&c.input))
        .collect();
    Err(Error::Invalid(format!(
        "{} of {n} cases failed ({}{}); see {}",
        failed.len(),
        names.join(", "),
        if failed.len() > 3 { ", ..." } else { "" },
        plan.dir.join("summary.json").display()
    )))
}

fn one_line(msg: &str) -> String {
    msg.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `summary.json` and `summary.csv`: every case with its status (`done`,
/// `skipped`, `failed`, or `pending` while the run goes on), the error of a
/// failed one, its seconds and its categories' volumes.
fn write_summary<B: Backend>(
    engine: &Engine<B>,
    plan: &Plan,
    status: &[Status],
    started: Instant,
) -> Result<()> {
    let count = |f: fn(&Status) -> bool| status.iter().filter(|s| f(s)).count();
    let done = count(|s| matches!(s, Status::Done(..)));
    let seconds = started.elapsed().as_secs_f64();
    let mut csv = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::Invalid(format!("summary.csv: {e}"));
    csv.write_record(["name", "input", "output", "status", "seconds", "error"])
        .map_err(csv_err)?;
    let mut cases = Vec::with_capacity(status.len());
    for (c, s) in plan.cases.iter().zip(status) {
        let name = case_name(&c.input);
        let (word, secs, error, cats) = match s {
            Status::Pending => ("pending", None, None, None),
            Status::Skipped => ("skipped", None, None, None),
            Status::Done(d, t) => ("done", Some(*t), None, Some(&d.categories)),
            Status::Failed(e, t) => ("failed", Some(*t), Some(e.as_str()), None),
        };
        csv.write_record([
            name.as_str(),
            &c.input.to_string_lossy(),
            &c.output.to_string_lossy(),
            word,
            &secs.map(|t| format!("{t:.3}")).unwrap_or_default(),
            error.unwrap_or(""),
        ])
        .map_err(csv_err)?;
        cases.push(json!({
            "name": name,
            "input": c.input,
            "output": c.output,
            "json": c.json,
            "status": word,
            "seconds": secs,
            "error": error,
            "categories": cats.map(|cs| cs.iter().map(|(n, v, ml)| json!({
                "name": n, "voxels": v, "volume_ml": ml
            })).collect::<Vec<_>>()),
        }));
    }
    let bytes = csv
        .into_inner()
        .map_err(|e| Error::Invalid(format!("summary.csv: {e}")))?;
    write_file(&plan.dir.join("summary.csv"), &bytes)?;
    write_json(
        &plan.dir.join("summary.json"),
        &json!({
            "cases_total": status.len(),
            "done": done,
            "skipped": count(|s| matches!(s, Status::Skipped)),
            "failed": count(|s| matches!(s, Status::Failed(..))),
            "pending": count(|s| matches!(s, Status::Pending)),
            "seconds": seconds,
            "volumes_per_minute": if seconds > 0.0 { done as f64 * 60.0 / seconds } else { 0.0 },
            "weights": engine.weights(),
            "device": engine.model().backend().name(),
            "cases": cases,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_input() {
        assert_eq!(case_name(Path::new("/d/ct_001.nii.gz")), "ct_001");
        assert_eq!(case_name(Path::new("a.b.NII")), "a.b");
        assert_eq!(case_name(Path::new("series/2.16.840")), "2.16.840");
        assert_eq!(case_name(Path::new(".nii.gz")), ".nii.gz");
        assert_eq!(
            json_beside(Path::new("out/sub/x.nii.gz")),
            PathBuf::from("out/sub/x.json")
        );
    }
}
