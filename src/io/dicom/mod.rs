//! DICOM CT series in: a folder (or a list of files) of one series read
//! with dicom-rs into the same [`CtVolume`] the NIfTI reader gives, placed
//! as a NIfTI converter (dcm2niix) would place it, so everything downstream
//! (prompts in world coordinates, outputs in the CT's geometry) is unchanged.
//!
//! Headers are read first (up to the pixel data) for every file, so a bad
//! series is refused, and its size known, before any pixels are decoded.

pub mod geometry;
pub mod pixels;
pub mod seg;
pub mod series;

use std::path::PathBuf;

use rayon::prelude::*;

use crate::error::Result;
use crate::io::nifti::CtVolume;

pub use self::seg::{check_seg_output, write_dicom_seg};
pub use self::series::{has_dicom_magic, Series, SliceHeader};

/// One CT series, its headers read and checked, ready to decode.
#[derive(Debug, Clone)]
pub struct DicomSeries {
    pub series: Series,
}

impl DicomSeries {
    /// Reads the headers of `inputs` (one folder, or the files of a series)
    /// and keeps series `series_uid`, or the only one there is. Several
    /// series without a choice, missing geometry tags, mixed sizes, missing
    /// slices and gantry tilt are refused with a message naming the problem.
    pub fn open(inputs: &[PathBuf], series_uid: Option<&str>) -> Result<DicomSeries> {
        Ok(DicomSeries {
            series: series::open_series(inputs, series_uid)?,
        })
    }

    /// Voxel counts along (i, j, k) = (columns, rows, slices).
    pub fn dims(&self) -> [usize; 3] {
        self.series.dims()
    }

    /// Decodes every slice (in parallel) into Hounsfield units.
    pub fn read(&self) -> Result<CtVolume> {
        let s = &self.series;
        let plane = s.rows * s.columns;
        let n = plane * s.slices.len();
        let mut data: Vec<f32> = Vec::new();
        data.try_reserve_exact(n).map_err(|_| {
            crate::error::Error::Memory(format!(
                "{}: cannot allocate {n} voxels as float32",
                s.source.display()
            ))
        })?;
        data.resize(n, 0.0);
        data.par_chunks_mut(plane)
            .zip(s.slices.par_iter())
            .try_for_each(|(out, slice)| pixels::decode_slice(slice, out))?;
        CtVolume::from_array(&s.source, s.dims(), data, s.affine)
    }
}

/// Whether `inputs` name a DICOM series: one folder, or files that start
/// with the DICOM marker.
pub fn is_dicom_input(inputs: &[PathBuf]) -> bool {
    match inputs {
        [] => false,
        [one] if one.is_dir() => true,
        many => many.iter().all(|p| has_dicom_magic(p)),
    }
}
