//! The loaded model behind object-safe traits, so the server is written once
//! and not generic over the backend: `segvol serve` picks CPU or CUDA at
//! start (as `segvol segment` does) and wraps the engine in [`Model`]; each
//! interactive session is a [`Interactive`] box. Only this file names the
//! backend type parameter.

use std::sync::Arc;

use segvol::api::{Engine, Options, Segmentation, Session};
use segvol::backend::Backend;
use segvol::error::Result;
use segvol::io::nifti::CtVolume;
use segvol::pipeline::request::Request;

/// One loaded model, shared by every session and request.
pub trait Model: Send + Sync {
    /// The backend's name ("cpu", "cuda:0 ..."), for `/healthz` and logs.
    fn device(&self) -> String;
    /// One-shot segmentation, as `segvol segment` does it with the same
    /// prompts and options.
    fn segment(&self, ct: &CtVolume, req: &Request) -> Result<Segmentation>;
    /// A new interactive session on this model (no image yet).
    fn new_session(&self) -> Box<dyn Interactive>;
}

/// One interactive session ([`segvol::api::Session`] with its backend
/// erased). Coordinates are voxel indices `(i, j, k)` of the image.
/// MONAI Label resends every prompt and uses `set_prompts`; the one-prompt
/// methods serve protocols whose clients send one interaction at a time.
#[allow(dead_code)] // Not every protocol uses every method.
pub trait Interactive: Send {
    /// Sets the image (preprocesses it; clears prompts, mask, embeddings).
    fn set_image(&mut self, ct: CtVolume) -> Result<()>;
    /// Adds a positive or negative click; returns the new mask.
    fn add_point(&mut self, at: [f64; 3], positive: bool) -> Result<&Segmentation>;
    /// Sets the box (two opposite corners, inclusive); returns the new mask.
    fn add_box(&mut self, corners: [f64; 6]) -> Result<&Segmentation>;
    /// Sets the text prompt; returns the new mask.
    fn add_text(&mut self, name: &str) -> Result<&Segmentation>;
    /// Replaces every prompt at once and segments once.
    fn set_prompts(
        &mut self,
        text: Option<&str>,
        corners: Option<[f64; 6]>,
        points: &[([f64; 3], bool)],
    ) -> Result<&Segmentation>;
    /// Forgets prompts and mask; keeps the image and its embeddings.
    fn reset(&mut self);
    /// The mask after the latest prompt.
    fn mask(&self) -> Option<&Segmentation>;
    /// Bytes of cached embeddings ([`Interactive::drop_embeddings`] frees them).
    fn embedding_bytes(&self) -> usize;
    /// Frees the cached embeddings; the next prompt recomputes them.
    fn drop_embeddings(&mut self);
    /// Bytes of the preprocessed image and the mask.
    fn image_bytes(&self) -> usize;
}

/// [`Model`] over an engine on backend `B`.
pub struct EngineModel<B: Backend> {
    engine: Arc<Engine<B>>,
    opts: Options,
}

impl<B: Backend> EngineModel<B> {
    /// `opts` are used for every segmentation and session (the zoom
    /// settings given on the command line).
    pub fn new(engine: Engine<B>, opts: Options) -> Self {
        EngineModel {
            engine: Arc::new(engine),
            opts,
        }
    }
}

impl<B> Model for EngineModel<B>
where
    B: Backend + 'static,
    Engine<B>: Send + Sync,
    Session<B>: Send,
{
    fn device(&self) -> String {
        self.engine.model().backend().name()
    }

    fn segment(&self, ct: &CtVolume, req: &Request) -> Result<Segmentation> {
        self.engine.segment_volume(ct, req, &self.opts)
    }

    fn new_session(&self) -> Box<dyn Interactive> {
        Box::new(Session::with_options(
            self.engine.clone(),
            self.opts.clone(),
        ))
    }
}

impl<B> Interactive for Session<B>
where
    B: Backend + 'static,
    Session<B>: Send,
{
    fn set_image(&mut self, ct: CtVolume) -> Result<()> {
        Session::set_image(self, ct)
    }
    fn add_point(&mut self, at: [f64; 3], positive: bool) -> Result<&Segmentation> {
        Session::add_point(self, at, positive)
    }
    fn add_box(&mut self, corners: [f64; 6]) -> Result<&Segmentation> {
        Session::add_box(self, corners)
    }
    fn add_text(&mut self, name: &str) -> Result<&Segmentation> {
        Session::add_text(self, name)
    }
    fn set_prompts(
        &mut self,
        text: Option<&str>,
        corners: Option<[f64; 6]>,
        points: &[([f64; 3], bool)],
    ) -> Result<&Segmentation> {
        Session::set_prompts(self, text, corners, points)
    }
    fn reset(&mut self) {
        Session::reset(self)
    }
    fn mask(&self) -> Option<&Segmentation> {
        Session::mask(self)
    }
    fn embedding_bytes(&self) -> usize {
        Session::embedding_bytes(self)
    }
    fn drop_embeddings(&mut self) {
        Session::drop_embeddings(self)
    }
    fn image_bytes(&self) -> usize {
        Session::image_bytes(self)
    }
}
