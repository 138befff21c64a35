//! The nnInteractive v2 remote protocol (what napari-nninteractive and
//! SlicerNNInteractive's Remote mode speak), served over the library's
//! interactive [`segvol::api::Session`].

pub mod blosc2;
pub mod nnia;
mod routes;
pub mod state;

pub use routes::routes;

#[cfg(test)]
mod crosscheck;
#[cfg(test)]
mod http_tests;
