//! Every op family on every backend, one module per family (the same
//! cases run on the CPU, against the op's definition evaluated in f64 on a
//! sample of output elements, and, when a CUDA device is present, on the
//! CUDA backend in f32 and bf16 against the CPU). Random inputs; the seed
//! is printed and `SEGVOL_TEST_SEED` repeats a run. Without a device the
//! CUDA half prints "SKIP: no CUDA device (reason)".

#[path = "../common/mod.rs"]
mod common;
mod harness;

#[cfg(feature = "cuda")]
mod cuda;

mod attention;
mod conv_transpose;
mod elementwise;
mod layer_norm;
mod linear;
mod memory;
mod patch_embed;
mod resize;

#[cfg(feature = "cuda")]
mod nvrtc;
#[cfg(feature = "cuda")]
mod shapes;
