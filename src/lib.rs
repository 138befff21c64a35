//! segvol: inference for SegVol, the universal and interactive 3D CT
//! segmentation model, on CPU and CUDA.
//!
//! The library is layered: [`weights`] reads checkpoints, [`backend`] holds the
//! numeric ops (CPU and CUDA), [`model`] is the network written once against
//! the backend trait, [`pipeline`] is the zoom-out-zoom-in algorithm, and
//! [`io`] reads and writes NIfTI volumes. The `segvol` binary is a thin CLI
//! over these.

pub mod backend;
pub mod config;
pub mod error;
pub mod io;
pub mod model;
pub mod pipeline;
pub mod tempfiles;
#[cfg(test)]
mod test_data;
pub mod vocabulary;
pub mod weights;

pub use config::ModelConfig;
pub use error::{Error, Result};
