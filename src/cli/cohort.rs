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
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use serde_json::json;

use segvol::api::Engine;
use segvol::backend::Backend;
use segvol::error::{Error, Result};
use segvol::io::dicom::is_dicom_input;
use segvol::pipeline::memory::{constant_bytes, MemoryLimit};
use segvol::pipeline::request::Request;
use segvol::report::envelope::wrap;
use segvol::report::split_nifti_name;

use super::bars::Bars;
use super::case::{self, Case, Done, Settings};
use super::common::{write_file, write_json, Progress};
use super::manifest;
use super::SegmentArgs;

/// Whether the arguments ask for a cohort run rather than one CT.
pub fn wanted(args: &SegmentArgs) -> bool {
    args.manifest.is_some()
        || args.output_dir.is_some()
        // Several files of one DICOM series are one CT.
        || (args.inputs.len() > 1 && !is_dicom_input(&args.inputs))
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
    match split_nifti_name(input) {
        (stem, _) if !stem.is_empty() => stem,
        // `.nii.gz` alone, or a path without a file name.
        _ => input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| input.display().to_string()),
    }
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
    if args.dicom_seg.is_some() {
        return refuse("--dicom-seg");
    }
    if args.series.is_some() {
        return Err(Error::Invalid(
            "--series picks the series of one DICOM input; a cohort run takes one series per \
             folder (or per manifest row)"
                .into(),
        ));
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
            sources: vec![e.input.clone()],
            series: None,
            dicom_seg: None,
            opened: None,
            input: e.input,
            output,
            probabilities: None,
            json: Some(json),
            // In a cohort, --preview names a folder: one NAME.png per case.
            preview: args
                .outputs
                .preview
                .as_ref()
                .map(|d| d.join(format!("{name}.png"))),
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

/// Memory admission of the case read ahead: its voxels are read while
/// the current case computes only if both cases' estimated peaks fit the
/// limit together (the weights and runtime counted once); otherwise the
/// reader waits for the current case to finish. Each case's share is taken
/// at admission and given back when the main thread is done with it.
struct Gate {
    /// Bytes held, and whether the main thread has stopped taking cases
    /// (then nobody waits).
    used: Mutex<(u64, bool)>,
    freed: Condvar,
    /// Bytes every case shares (weights, runtime), held all along.
    constant: u64,
    limit: u64,
}

impl Gate {
    fn new(constant: u64, limit: MemoryLimit) -> Self {
        Gate {
            used: Mutex::new((constant, false)),
            freed: Condvar::new(),
            constant,
            limit: limit.bytes,
        }
    }

    /// Waits until a case of estimated `peak` fits, takes its share and
    /// returns it. A case alone always fits here: one over the limit by
    /// itself was refused by the estimate's own check.
    fn admit(&self, peak: u64) -> u64 {
        let share = peak.saturating_sub(self.constant);
        let mut st = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while !st.1 && st.0 > self.constant && st.0.saturating_add(share) > self.limit {
            st = self.freed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.0 += share;
        share
    }

    fn release(&self, share: u64) {
        let mut st = self.used.lock().unwrap_or_else(|p| p.into_inner());
        st.0 = st.0.saturating_sub(share).max(self.constant);
        self.freed.notify_all();
    }
}

/// Opens the gate for good when the main thread leaves its loop, however it
/// leaves (an error writing the summary), so the reader never waits on a
/// case that will not finish.
struct CloseOnDrop<'g>(&'g Gate);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        let mut st = self.0.used.lock().unwrap_or_else(|p| p.into_inner());
        st.1 = true;
        self.0.freed.notify_all();
    }
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
    let gate = Gate::new(constant_bytes(&cfg), settings.limit);
    write_summary(engine, plan, &status, started)?;
    std::thread::scope(|scope| -> Result<()> {
        // Capacity 0: the reader hands a case over only when the main thread
        // takes it, so at most one case is read ahead.
        let (tx, rx) = sync_channel(0);
        let cfg = &cfg;
        let gate = &gate;
        scope.spawn(move || {
            for i in todo {
                let c = &plan.cases[i];
                let t = Instant::now();
                let progress = Progress::since(settings.start, c.label.clone());
                let mut share = 0;
                let loaded = case::read(c, cfg, settings, progress, None, &mut |peak| {
                    share = gate.admit(peak)
                });
                // The case's own time: reading, not waiting for the hand-over.
                if tx.send((i, loaded, t.elapsed(), share)).is_err() {
                    break;
                }
            }
        });
        let _close = CloseOnDrop(gate);
        for (i, loaded, read_time, share) in rx {
            let t = Instant::now();
            let c = &plan.cases[i];
            bars.case(c.label.trim_end_matches(": "));
            let r = loaded.and_then(|l| case::segment_and_write(engine, c, l, settings, &bars));
            let secs = (read_time + t.elapsed()).as_secs_f64();
            status[i] = match r {
                Ok(done) => Status::Done(done, secs),
                Err(e) => {
                    let msg = super::one_line(&e.to_string());
                    tracing::warn!("{}failed: {msg}; going on with the next case", c.label);
                    Status::Failed(msg, secs)
                }
            };
            gate.release(share);
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
    let device = engine.model().backend().name();
    write_json(
        &plan.dir.join("summary.json"),
        &wrap(
            "segment",
            &device,
            json!({
                "cases_total": status.len(),
                "done": done,
                "skipped": count(|s| matches!(s, Status::Skipped)),
                "failed": count(|s| matches!(s, Status::Failed(..))),
                "pending": count(|s| matches!(s, Status::Pending)),
                "seconds": seconds,
                "volumes_per_minute": if seconds > 0.0 { done as f64 * 60.0 / seconds } else { 0.0 },
                "weights": engine.weights(),
                "cases": cases,
            }),
        ),
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

    /// The read-ahead waits while the case being computed leaves no room,
    /// goes ahead when it does, and never waits once the run has stopped.
    #[test]
    fn the_gate_admits_the_next_case_only_when_both_fit() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;
        let limit = MemoryLimit {
            bytes: 100,
            ..MemoryLimit::UNLIMITED
        };
        let gate = Gate::new(40, limit);
        // 40 constant + 30 + 30 = 100 fits: no wait.
        let a = gate.admit(70);
        assert_eq!(a, 30);
        let b = gate.admit(70);
        gate.release(a);
        // 40 + 30 held; another 50 would make 120: it waits for a release.
        let admitted = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                gate.admit(90);
                admitted.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(100));
            assert!(!admitted.load(Ordering::SeqCst));
            gate.release(b);
        });
        assert!(admitted.load(Ordering::SeqCst));
        // Closed: no waiting even when nothing fits.
        drop(CloseOnDrop(&gate));
        gate.admit(100);
    }
}
