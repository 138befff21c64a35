//! `segvol serve`.

pub mod nninteractive;
