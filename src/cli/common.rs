//! What several subcommands share: progress lines, weight resolution,
//! backend choice and model loading.

use std::path::{Path, PathBuf};
use std::time::Instant;

use segvol::api::Engine;
use segvol::backend::cpu::CpuBackend;
#[cfg(feature = "cuda")]
use segvol::backend::cuda::{CudaBackend, Precision};
use segvol::backend::device::{cuda_unavailable_reason, Device};
use segvol::backend::Backend;
use segvol::error::{Error, Result};
use segvol::model::{SegVol, TextEmbedder};
use segvol::pipeline::memory::{Estimate, MemoryLimit, Workload};
use segvol::pipeline::progress::Progress as Step;
use segvol::pipeline::zoom::ZoomOptions;
use segvol::weights::hub;

use super::EngineArgs;

/// Progress lines (info-level `tracing` events, so `-q` hides them): each
/// step is announced, and its duration printed when it took more than a
/// second. The step durations go into the JSON summaries.
pub struct Progress {
    /// The run's start: every line shows the time since.
    start: Instant,
    /// Since when this progress counts (a case's own start in a cohort).
    own_start: Instant,
    /// Put before every line: the case in a cohort run.
    prefix: String,
    current: Option<(String, Instant)>,
    pub steps: Vec<(String, f64)>,
}

impl Progress {
    pub fn new() -> Self {
        Progress::since(Instant::now(), String::new())
    }

    /// Lines timed from `start`, each beginning with `prefix`.
    pub fn since(start: Instant, prefix: String) -> Self {
        Progress {
            start,
            own_start: Instant::now(),
            prefix,
            current: None,
            steps: Vec::new(),
        }
    }

    pub fn step(&mut self, name: &str) {
        self.finish();
        let t = self.start.elapsed().as_secs_f64();
        tracing::info!("[{t:7.1}s] {}{name}", self.prefix);
        self.current = Some((name.to_string(), Instant::now()));
    }

    pub fn note(&self, msg: &str) {
        let t = self.start.elapsed().as_secs_f64();
        tracing::info!("[{t:7.1}s]   {}{msg}", self.prefix);
    }

    /// The pipeline's stages as notes (single windows go to the bars only;
    /// with `-v` the library's own debug events say it instead).
    pub fn pipeline(&self, step: Step) {
        if !matches!(step, Step::Window { .. }) && !tracing::enabled!(tracing::Level::DEBUG) {
            self.note(&step.to_string());
        }
    }

    pub fn finish(&mut self) {
        if let Some((name, t)) = self.current.take() {
            let s = t.elapsed().as_secs_f64();
            if s > 1.0 {
                let at = self.start.elapsed().as_secs_f64();
                tracing::info!("[{at:7.1}s]   {}{name}: {s:.1} s", self.prefix);
            }
            self.steps.push((name, s));
        }
    }

    /// Seconds since this progress began.
    pub fn total(&self) -> f64 {
        self.own_start.elapsed().as_secs_f64()
    }
}

/// The checkpoint path: the argument, or the official weights from the
/// Hugging Face cache.
pub fn resolve_weights(arg: Option<&Path>, progress: &Progress) -> Result<PathBuf> {
    match arg {
        Some(p) => Ok(p.to_path_buf()),
        // hf-hub's own download bar, when ours would be drawn too.
        None => {
            hub::official_weights_with(&mut |m| progress.note(m), !super::log::bars().is_hidden())
        }
    }
}

/// A loaded model with its text embedder.
pub struct Loaded<B: Backend> {
    pub model: SegVol<B>,
    pub texts: TextEmbedder,
}

pub fn load_model<B: Backend>(backend: B, weights: &Path) -> Result<Loaded<B>> {
    let (model, texts) = Engine::load(backend, weights)?.into_parts();
    Ok(Loaded { model, texts })
}

/// A command body that runs on whichever backend the user picked.
pub trait BackendTask {
    type Output;
    fn run<B: Backend>(self, backend: B) -> Result<Self::Output>;
}

/// Builds the backend `--device` names and runs `task` on it.
pub fn dispatch<T: BackendTask>(engine: &EngineArgs, task: T) -> Result<T::Output> {
    let cpu = || match engine.threads {
        Some(n) => CpuBackend::with_threads(n),
        None => Ok(CpuBackend::new()),
    };
    let requested = Device::parse(&engine.device)?;
    match requested.resolve()? {
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => {
            let precision = Precision::parse(engine.precision.as_deref().unwrap_or("bf16"))?;
            match CudaBackend::new(n, precision) {
                Ok(be) => task.run(be),
                // auto falls back to the CPU, saying why.
                Err(e) if requested == Device::Auto => {
                    tracing::warn!("CUDA unavailable ({e}); using the CPU");
                    task.run(cpu()?)
                }
                Err(e) => Err(e),
            }
        }
        _ => {
            if requested == Device::Auto {
                if let Some(why) = cuda_unavailable_reason() {
                    tracing::info!("no GPU ({why}); using the CPU");
                }
            }
            if let Some(p) = engine.precision.as_deref().filter(|p| *p != "f32") {
                return Err(Error::Invalid(format!(
                    "precision {p}: the CPU backend computes in f32"
                )));
            }
            task.run(cpu()?)
        }
    }
}

/// The `--max-memory` limit (parsed before any work is done).
pub fn memory_limit(engine: &EngineArgs) -> Result<MemoryLimit> {
    MemoryLimit::from_arg(engine.max_memory.as_deref())
}

/// The progress line about memory.
pub fn memory_note(est: &Estimate, limit: MemoryLimit) -> String {
    let g = |b: u64| b as f64 / (1u64 << 30) as f64;
    if limit.bytes == u64::MAX {
        format!("memory: ~{:.2} GiB estimated peak", g(est.peak))
    } else {
        format!(
            "memory: ~{:.2} GiB estimated peak, limit {:.2} GiB",
            g(est.peak),
            g(limit.bytes)
        )
    }
}

/// The memory workload of a volume of `dims` (i, j, k) voxels.
pub fn workload(engine: &EngineArgs, dims: [usize; 3], categories: usize) -> Workload {
    let z = zoom_options(engine);
    Workload {
        dims,
        cropped: None,
        categories,
        probabilities: false,
        label_map_input: false,
        intensities_kept: false,
        zoom_in: z.zoom_in,
        window_batch: z.window_batch,
        cache_bytes: z.cache_bytes,
    }
}

pub fn zoom_options(engine: &EngineArgs) -> ZoomOptions {
    ZoomOptions {
        pad_mode: engine.mode.into(),
        zoom_in: !engine.no_zoom_in,
        seed: engine.seed,
        window_batch: engine.window_batch.max(1),
        ..ZoomOptions::default()
    }
}

/// Checks a `--json` path before any work, so a typo cannot fail the run
/// after the label map has been written.
pub fn check_json_path(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "--json {}: the folder {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    if path.is_dir() {
        return Err(Error::Invalid(format!(
            "--json {}: the path is a folder",
            path.display()
        )));
    }
    Ok(())
}

/// Writes a JSON value atomically (temporary file, then rename).
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(format!("JSON: {e}")))?;
    write_file(path, (text + "\n").as_bytes())
}

/// Writes bytes atomically (temporary file, then rename).
pub use segvol::io::write::write_bytes_atomic as write_file;
