//! CT input (NIfTI, DICOM series) and NIfTI output: a CT in, label maps and
//! probabilities out, in the CT's own voxel grid and world placement.

pub mod affine;
pub mod dicom;
pub mod input;
pub mod nifti;
pub mod write;

pub use self::affine::{Affine, AffineSource};
pub use self::input::{read_input, CtSource};
pub use self::nifti::{read_ct, CtVolume, MAX_VOXELS};
pub use self::write::{write_label_map, write_probabilities, LabelVoxel};
