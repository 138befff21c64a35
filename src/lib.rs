//! segvol: inference for SegVol, the universal and interactive 3D CT
//! segmentation model, on CPU and CUDA.
//!
//! The library is layered: [`weights`] reads checkpoints, [`backend`] holds the
//! numeric ops (CPU and CUDA), [`model`] is the network written once against
//! the backend trait, [`pipeline`] is the zoom-out-zoom-in algorithm, and
//! [`io`] reads and writes NIfTI volumes; [`report`] turns a label map into
//! per-category files, viewer colour tables, statistics and a preview. [`api`] is the embedding surface
//! on top: one call from a CT and prompts to a label map in the CT's grid,
//! and an interactive session. The `segvol` binary is a thin CLI over these.

pub mod api;
pub mod backend;
pub mod config;
pub mod error;
pub mod io;
pub mod model;
pub mod pipeline;
pub mod report;
pub mod tempfiles;
#[cfg(test)]
mod test_data;
pub mod vocabulary;
pub mod weights;

pub use config::ModelConfig;
pub use error::{Error, Result};

// The README's code blocks are doctests, so its library snippet keeps compiling.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

// docs/EMBEDDING.md's Rust snippet is compiled (not run: it reads files).
#[cfg(doctest)]
#[doc = include_str!("../docs/EMBEDDING.md")]
pub struct EmbeddingDoctests;
