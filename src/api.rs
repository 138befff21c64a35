//! The embedding API: one call from a CT and prompts to a label map in the
//! CT's own grid ([`Engine::segment_file`], [`Engine::segment_volume`]), and
//! an interactive [`Session`] shaped like nnInteractive's (`set_image`,
//! `add_point`, `add_box`, `add_text`, `reset`, the current mask) that keeps
//! the image embeddings between prompts.
//!
//! The `segvol segment` command runs on the same functions, so a label map
//! from here is the CLI's for the same prompts and options. The C and Python
//! bindings wrap these types and nothing lower.
//!
//! ```
//! use segvol::api::{Engine, Options};
//! use segvol::io::{affine, nifti::CtVolume};
//! use segvol::pipeline::request::Request;
//!
//! # fn main() -> segvol::Result<()> {
//! // Synthetic tiny weights: meaningless masks, but the real network and pipeline.
//! let engine = Engine::synthetic_tiny()?;
//! // A 40×32×24 volume with a bright block, voxels 1.5 × 1.5 × 3 mm.
//! let dims = [40, 32, 24];
//! let data: Vec<f32> = (0..40 * 32 * 24)
//!     .map(|n| if n % 40 > 8 { (n % 40 * 5 + n / 40 % 32) as f32 } else { -1000.0 })
//!     .collect();
//! let ct = CtVolume::from_array("in-memory", dims, data, affine::from_spacing([1.5, 1.5, 3.0]))?;
//! let req = Request::text("liver").with_box([10.0, 8.0, 2.0, 30.0, 25.0, 20.0]);
//! let seg = engine.segment_volume(&ct, &req, &Options::default())?;
//! assert_eq!(seg.labels.len(), 40 * 32 * 24); // one label per CT voxel, file order
//! assert_eq!(seg.names, ["liver"]);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::io::nifti::CtVolume;
use crate::io::read_input;
use crate::io::write::{write_label_map, write_probabilities};
use crate::model::{ClipTokenizer, SegVol, TextEmbedder, TextEmbedding};
use crate::pipeline::output::{label_counts, label_map, probability_map, Placement};
use crate::pipeline::preprocess::{preprocess_ct, Preprocessed};
use crate::pipeline::progress::Progress;
use crate::pipeline::prompt_frames::{Frame, UserBox, UserPoint};
use crate::pipeline::request::{Category, Request};
use crate::pipeline::windows::BoxI;
use crate::pipeline::zoom::{CategoryResult, Segmenter, Timings, ZoomOptions};
use crate::weights::{check::detect_config, hub, Checkpoint};

/// How a segmentation runs and what it returns.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The zoom-out-zoom-in settings (the CLI's `--mode`, `--no-zoom-in`,
    /// `--seed`, `--window-batch`).
    pub zoom: ZoomOptions,
    /// Also return each category's foreground probability over the CT.
    pub probabilities: bool,
}

/// A loaded model with its tokenizer: shared by any number of sessions and
/// calls, from any thread (`Engine<CpuBackend>` is `Send + Sync`).
pub struct Engine<B: Backend = CpuBackend> {
    model: SegVol<B>,
    // Text embeddings are cached per name; the lock is held only while one
    // text is embedded (milliseconds), never during segmentation.
    texts: Mutex<TextEmbedder>,
    weights: PathBuf,
}

/// The folder whose `tokenizer.json` / `config.json` go with the weights.
fn weights_folder(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        Some(path.to_path_buf())
    } else {
        path.parent().map(Path::to_path_buf)
    }
}

impl Engine<CpuBackend> {
    /// Loads a checkpoint (`.bin`, `.pth`, `.safetensors` or a folder) on the
    /// CPU backend with all cores.
    pub fn open(weights: impl AsRef<Path>) -> Result<Self> {
        Engine::load(CpuBackend::new(), weights.as_ref())
    }

    /// Loads the official BAAI/SegVol weights from the Hugging Face cache,
    /// downloading them once when missing (needs the `hub` feature).
    /// `progress` receives one line per step.
    pub fn open_official(progress: &mut dyn FnMut(&str)) -> Result<Self> {
        let path = hub::official_weights(progress)?;
        Engine::open(path)
    }

    /// The tiny configuration with the synthetic test weights: the real
    /// network and pipeline with meaningless masks, loaded in milliseconds
    /// and without files. For tests and examples.
    pub fn synthetic_tiny() -> Result<Self> {
        let cfg = ModelConfig::tiny();
        let ckpt = crate::weights::synth::synth_checkpoint(&cfg)?;
        Engine::from_checkpoint(CpuBackend::new(), ckpt, ClipTokenizer::builtin()?)
    }
}

impl<B: Backend> Engine<B> {
    /// Loads a checkpoint on `backend`; the tokenizer comes from the
    /// checkpoint's folder (`tokenizer.json`) or the built-in vocabulary.
    pub fn load(backend: B, weights: &Path) -> Result<Self> {
        let ckpt = Checkpoint::open(weights)?;
        let tokenizer = ClipTokenizer::for_checkpoint(weights_folder(weights).as_deref())?;
        let mut engine = Engine::from_checkpoint(backend, ckpt, tokenizer)?;
        engine.weights = weights.to_path_buf();
        Ok(engine)
    }

    /// A model from an opened checkpoint (its config detected from the
    /// tensor shapes) and a tokenizer.
    pub fn from_checkpoint(backend: B, ckpt: Checkpoint, tokenizer: ClipTokenizer) -> Result<Self> {
        let cfg = detect_config(&ckpt)?;
        let weights = ckpt.path().to_path_buf();
        tracing::debug!(
            target: "segvol::api",
            "{}: {} tensors, input {:?}, on {}",
            weights.display(),
            ckpt.len(),
            cfg.spatial_size,
            backend.name()
        );
        let model = SegVol::load(backend, Arc::new(ckpt), cfg)?;
        Ok(Engine {
            model,
            texts: Mutex::new(TextEmbedder::new(tokenizer)),
            weights,
        })
    }

    /// The network (for the lower-level API: `embed_image`, `decode`).
    pub fn model(&self) -> &SegVol<B> {
        &self.model
    }

    /// The network and the text embedder, for callers that drive the
    /// network directly (benchmarks, evaluation).
    pub fn into_parts(self) -> (SegVol<B>, TextEmbedder) {
        let texts = self.texts.into_inner().unwrap_or_else(|p| p.into_inner());
        (self.model, texts)
    }

    /// The checkpoint path the engine was loaded from.
    pub fn weights(&self) -> &Path {
        &self.weights
    }

    /// The CLIP embedding of `"A computerized tomography of a {name}."`,
    /// cached per name.
    pub fn text_embedding(&self, name: &str) -> Result<TextEmbedding> {
        // A poisoned lock only means another thread panicked mid-insert into
        // the cache; the cache itself is still a valid map.
        let mut texts = self.texts.lock().unwrap_or_else(|p| p.into_inner());
        texts.embed(&self.model, name)
    }

    /// Reads a CT (a NIfTI file or a DICOM series folder holding one series)
    /// and segments it: [`Engine::segment_volume`] on it.
    pub fn segment_file(
        &self,
        ct: impl AsRef<Path>,
        request: &Request,
        opts: &Options,
    ) -> Result<Segmentation> {
        request.category_count()?;
        let ct = read_input(&[ct.as_ref().to_path_buf()], None)?;
        self.segment_volume(&ct, request, opts)
    }

    /// Segments a CT (read from a file or built with [`CtVolume::from_array`])
    /// and returns the label map, and the probabilities when asked, in the
    /// CT's grid.
    pub fn segment_volume(
        &self,
        ct: &CtVolume,
        request: &Request,
        opts: &Options,
    ) -> Result<Segmentation> {
        request.category_count()?;
        let pre = preprocess_ct(ct, self.model.config().spatial_size)?;
        self.segment_preprocessed(ct, pre, request, opts, &mut |_| {})
    }

    /// The steps after preprocessing, for callers that check memory or free
    /// the CT's intensities in between (the CLI): prompts mapped through
    /// `ct`'s geometry, zoom-out-zoom-in, paste-back. `ct.data` may already be
    /// empty; only its header and affine are used. `pre` is consumed so its
    /// image can be freed before the full-size outputs are allocated.
    pub fn segment_preprocessed(
        &self,
        ct: &CtVolume,
        mut pre: Preprocessed,
        request: &Request,
        opts: &Options,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Segmentation> {
        let cats = self.categories(ct, &pre, request)?;
        let prompts: Vec<_> = cats.iter().map(|c| c.prompt.clone()).collect();
        let mut seg = Segmenter::new(&self.model, opts.zoom.clone());
        let results = seg.segment(&pre, &prompts, progress)?;
        // The embeddings and the cropped image are freed before the
        // full-size outputs are allocated.
        let timings = std::mem::take(&mut seg.timings);
        drop(seg);
        pre.image = Vec::new();
        pre.zoom_out = Vec::new();
        assemble(ct, &pre, &cats, results, opts.probabilities, timings)
    }

    fn categories(
        &self,
        ct: &CtVolume,
        pre: &Preprocessed,
        req: &Request,
    ) -> Result<Vec<Category>> {
        let mut texts = self.texts.lock().unwrap_or_else(|p| p.into_inner());
        req.categories(ct, pre, &self.model, &mut texts)
    }
}

/// What the network found for one category.
#[derive(Clone, Debug)]
pub struct CategoryInfo {
    /// The category's name (its label, text, `box1`, ..., or `points`).
    pub name: String,
    /// Voxels labelled with it in the label map.
    pub voxels: usize,
    /// Its box in the network's zoom-out frame `(d0, h0, w0, d1, h1, w1)`.
    pub zoom_out_box: Option<[f32; 6]>,
    /// The zoom-in region in the cropped frame `(d0, h0, w0, d1, h1, w1)`,
    /// inclusive; `None` when the zoom-out pass found nothing or zoom-in is off.
    pub roi: Option<BoxI>,
    /// Zoom-in windows decoded for it.
    pub windows: usize,
}

/// A segmentation in the CT's own grid.
#[derive(Clone, Debug)]
pub struct Segmentation {
    /// Voxel counts along the CT's (i, j, k).
    pub dims: [usize; 3],
    /// One label per CT voxel in file order (i fastest): 0 background, `c + 1`
    /// where category `c` wins (the higher logit takes overlaps).
    pub labels: Vec<u16>,
    /// Category names, label 1 first.
    pub names: Vec<String>,
    /// Per category, `sigmoid(logit)` per CT voxel in file order (0 outside
    /// the foreground crop); empty unless [`Options::probabilities`].
    pub probabilities: Vec<Vec<f32>>,
    /// Per category details.
    pub categories: Vec<CategoryInfo>,
    /// Time spent in the network, and windows encoded and reused.
    pub timings: Timings,
}

impl Segmentation {
    /// `true` where category `c` (0-based) won: the mask of one object.
    pub fn mask(&self, c: usize) -> Vec<bool> {
        let l = c as u16 + 1;
        self.labels.iter().map(|&v| v == l).collect()
    }

    /// Writes the label map as NIfTI with `like`'s geometry (uint8 up to 255
    /// categories, else uint16), atomically (temporary file, then rename).
    pub fn write_label_map(&self, path: &Path, like: &CtVolume) -> Result<()> {
        if self.names.len() <= 255 {
            let l8: Vec<u8> = self.labels.iter().map(|&v| v as u8).collect();
            write_label_map(path, like, &l8)
        } else {
            write_label_map(path, like, &self.labels)
        }
    }

    /// Writes the probabilities as a 4D NIfTI (i, j, k, category) with
    /// `like`'s geometry; an error when they were not computed.
    pub fn write_probabilities(&self, path: &Path, like: &CtVolume) -> Result<()> {
        if self.probabilities.is_empty() {
            return Err(Error::Invalid(
                "no probabilities: segment with Options::probabilities set".into(),
            ));
        }
        write_probabilities(path, like, &self.probabilities)
    }
}

/// Pastes cropped-frame results back into the CT's grid.
fn assemble(
    ct: &CtVolume,
    pre: &Preprocessed,
    cats: &[Category],
    results: Vec<CategoryResult>,
    probabilities: bool,
    timings: Timings,
) -> Result<Segmentation> {
    let place = Placement {
        dims: pre.dims,
        crop_start: pre.crop_start,
        crop_end: pre.crop_end,
    };
    let logits: Vec<&[f32]> = results.iter().map(|r| r.logits.as_slice()).collect();
    let labels = label_map(&place, &logits)?;
    let counts = label_counts(&labels, cats.len());
    let probabilities = if probabilities {
        results
            .iter()
            .map(|r| probability_map(&place, &r.logits))
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let categories = cats
        .iter()
        .zip(&results)
        .zip(&counts)
        .map(|((c, r), &voxels)| CategoryInfo {
            name: c.name.clone(),
            voxels,
            zoom_out_box: c.prompt.bbox,
            roi: r.roi,
            windows: r.windows.len(),
        })
        .collect();
    Ok(Segmentation {
        dims: ct.dims,
        labels,
        names: cats.iter().map(|c| c.name.clone()).collect(),
        probabilities,
        categories,
        timings,
    })
}

/// The image a session works on: the CT's geometry and its preprocessing.
struct Image {
    ct: CtVolume,
    pre: Preprocessed,
}

/// Interactive segmentation of one object, as in nnInteractive: set an image,
/// add prompts one at a time, read the mask after each. The image embeddings
/// (zoom-out pass and zoom-in windows) are kept, so each new prompt costs
/// decoder passes and only the windows not seen before.
///
/// Prompts accumulate into one category: points add up, while a new text or
/// box replaces the previous one (SegVol's decoder takes one of each per
/// object). Coordinates are in [`Session::frame`] (voxel indices by default).
///
/// ```
/// use std::sync::Arc;
/// use segvol::api::{Engine, Session};
/// use segvol::io::{affine, nifti::CtVolume};
///
/// # fn main() -> segvol::Result<()> {
/// let engine = Arc::new(Engine::synthetic_tiny()?);
/// let mut session = Session::new(engine);
/// let data: Vec<f32> = (0..32 * 32 * 20).map(|n| (n % 97) as f32).collect();
/// session.set_image(CtVolume::from_array("ct", [32, 32, 20], data, affine::from_spacing([1.0; 3]))?)?;
/// session.add_text("liver")?;
/// session.add_point([16.0, 16.0, 10.0], true)?; // refines; the embeddings are reused
/// let mask = session.mask().expect("after a prompt");
/// assert_eq!(mask.labels.len(), 32 * 32 * 20);
/// # Ok(())
/// # }
/// ```
pub struct Session<B: Backend = CpuBackend> {
    // Declared before `engine`: fields drop in order, so the segmenter (which
    // borrows the engine's model) is gone before the engine can be.
    seg: Segmenter<'static, B>,
    image: Option<Image>,
    text: Option<String>,
    bbox: Option<UserBox>,
    points: Vec<UserPoint>,
    mask: Option<Segmentation>,
    /// The frame of the coordinates given to `add_point` / `add_box`.
    pub frame: Frame,
    probabilities: bool,
    engine: Arc<Engine<B>>,
}

impl<B: Backend> Session<B> {
    /// A session with the default options.
    pub fn new(engine: Arc<Engine<B>>) -> Self {
        Session::with_options(engine, Options::default())
    }

    /// A session with `opts` (zoom settings; probabilities in the mask).
    pub fn with_options(engine: Arc<Engine<B>>, opts: Options) -> Self {
        // SAFETY: the model lives inside the `Arc` allocation, which does not
        // move and which `self.engine` keeps alive for as long as `seg`
        // exists (`seg` is dropped first, see the field order). The
        // 'static borrow never leaves this type: no method hands out `seg`,
        // so nothing can outlive the session while holding it.
        let model: &'static SegVol<B> = unsafe { &*(engine.model() as *const SegVol<B>) };
        Session {
            seg: Segmenter::new(model, opts.zoom),
            image: None,
            text: None,
            bbox: None,
            points: Vec::new(),
            mask: None,
            frame: Frame::Voxel,
            probabilities: opts.probabilities,
            engine,
        }
    }

    /// The engine this session runs on.
    pub fn engine(&self) -> &Arc<Engine<B>> {
        &self.engine
    }

    /// Sets the image: preprocesses it and clears the prompts, the mask and
    /// the embeddings of the previous image. The zoom-out embedding is
    /// computed at the first prompt. On error (NaN voxels, no foreground)
    /// the session keeps its previous image and prompts.
    pub fn set_image(&mut self, ct: CtVolume) -> Result<()> {
        let pre = preprocess_ct(&ct, self.engine.model.config().spatial_size)?;
        let mut ct = ct;
        // Only the geometry is needed from here on.
        ct.data = Vec::new();
        self.seg.reset();
        self.reset();
        self.image = Some(Image { ct, pre });
        Ok(())
    }

    /// Reads a CT (NIfTI file or DICOM series folder) and sets it as the image.
    pub fn set_image_file(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.set_image(read_input(&[path.as_ref().to_path_buf()], None)?)
    }

    /// Adds a click at `at` (in [`Session::frame`]), positive (object) or
    /// negative (background), and returns the updated mask.
    pub fn add_point(&mut self, at: [f64; 3], positive: bool) -> Result<&Segmentation> {
        self.prompt_with(|s| s.points.push(UserPoint::new(at, positive)))
    }

    /// Sets the object's box, corners `(i0, j0, k0, i1, j1, k1)` in
    /// [`Session::frame`], replacing any earlier box; returns the updated mask.
    pub fn add_box(&mut self, corners: [f64; 6]) -> Result<&Segmentation> {
        self.prompt_with(|s| s.bbox = Some(UserBox::new(corners)))
    }

    /// Sets the object's name (`"liver"`), replacing any earlier text;
    /// returns the updated mask.
    pub fn add_text(&mut self, name: &str) -> Result<&Segmentation> {
        let name = name.to_string();
        self.prompt_with(|s| s.text = Some(name))
    }

    /// Forgets the prompts and the mask; keeps the image and its embeddings,
    /// so the next object starts without an encoder pass.
    pub fn reset(&mut self) {
        self.text = None;
        self.bbox = None;
        self.points.clear();
        self.mask = None;
    }

    /// Replaces every prompt at once (text, box, clicks `(at, positive)`) and
    /// re-segments once: for clients that resend the whole prompt set with
    /// each request (MONAI Label's deepgrow), where one `add_*` call per
    /// prompt would run the network once per prompt. The result is the mask
    /// the same prompts give through `add_*` or `segvol segment`; on error
    /// the previous prompts are kept.
    pub fn set_prompts(
        &mut self,
        text: Option<&str>,
        corners: Option<[f64; 6]>,
        points: &[([f64; 3], bool)],
    ) -> Result<&Segmentation> {
        let text = text.map(str::to_string);
        let points: Vec<UserPoint> = points
            .iter()
            .map(|&(at, positive)| UserPoint::new(at, positive))
            .collect();
        self.prompt_with(|s| {
            s.text = text;
            s.bbox = corners.map(UserBox::new);
            s.points = points;
        })
    }

    /// Bytes held by the cached image embeddings (the zoom-out pass and the
    /// zoom-in windows), which [`Session::drop_embeddings`] frees.
    pub fn embedding_bytes(&self) -> usize {
        self.seg.cached_bytes()
    }

    /// Frees the cached image embeddings but keeps the image, the prompts
    /// and the mask: the next prompt recomputes what it needs (an encoder
    /// pass), with the same result. For servers that keep many sessions
    /// within a memory budget.
    pub fn drop_embeddings(&mut self) {
        self.seg.reset();
    }

    /// Bytes held by the preprocessed image and the current mask (what the
    /// session keeps besides the embeddings).
    pub fn image_bytes(&self) -> usize {
        let img = self.image.as_ref().map_or(0, |i| {
            (i.pre.image.len() + i.pre.zoom_out.len()) * std::mem::size_of::<f32>()
        });
        let mask = self.mask.as_ref().map_or(0, |m| {
            m.labels.len() * 2 + m.probabilities.iter().map(|p| p.len() * 4).sum::<usize>()
        });
        img + mask
    }

    /// The mask after the latest prompt (label 1 = the object), in the
    /// image's grid; `None` before the first prompt.
    pub fn mask(&self) -> Option<&Segmentation> {
        self.mask.as_ref()
    }

    /// Network time and window counts of the latest prompt
    /// (`windows_reused` shows the cache at work).
    pub fn timings(&self) -> &Timings {
        &self.seg.timings
    }

    /// Applies one prompt change and re-segments; on error the prompts are
    /// left as they were, so a bad click does not spoil the session.
    fn prompt_with(&mut self, change: impl FnOnce(&mut Self)) -> Result<&Segmentation> {
        if self.image.is_none() {
            return Err(Error::Invalid(
                "the session has no image: call set_image first".into(),
            ));
        }
        let saved = (self.text.clone(), self.bbox.clone(), self.points.clone());
        change(self);
        match self.run() {
            Ok(seg) => {
                self.mask = Some(seg);
                Ok(self.mask.as_ref().expect("set above"))
            }
            Err(e) => {
                (self.text, self.bbox, self.points) = saved;
                Err(e)
            }
        }
    }

    fn run(&mut self) -> Result<Segmentation> {
        let img = self.image.as_ref().expect("checked by prompt_with");
        let req = Request {
            texts: self.text.iter().cloned().collect(),
            boxes: self.bbox.iter().cloned().collect(),
            points: self.points.clone(),
            frame: Some(self.frame),
            labels: vec!["object".into()],
        };
        let cats = self.engine.categories(&img.ct, &img.pre, &req)?;
        let prompts: Vec<_> = cats.iter().map(|c| c.prompt.clone()).collect();
        // The segmenter's counters start from zero for each prompt, so they
        // say what this prompt cost (and how many windows it reused).
        self.seg.timings = Timings::default();
        let results = self.seg.segment(&img.pre, &prompts, &mut |_| {})?;
        let spent = self.seg.timings.clone();
        assemble(&img.ct, &img.pre, &cats, results, self.probabilities, spent)
    }
}
