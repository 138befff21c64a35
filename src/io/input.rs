//! One entry for a CT input, whatever its format: a `.nii` / `.nii.gz`
//! file, a DICOM series folder, or the files of one series. The header (or
//! headers) are read on `open`, so the volume's size is known, and a bad
//! input refused, before the model loads; `read` decodes the voxels.

use std::path::{Path, PathBuf};

use super::dicom::{is_dicom_input, DicomSeries};
use super::nifti::{probe_ct, read_ct, CtVolume};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub enum CtSource {
    Nifti(PathBuf),
    Dicom(Box<DicomSeries>),
}

impl CtSource {
    /// Opens `inputs`: one NIfTI file, one DICOM folder, or several DICOM
    /// files of one series. `series_uid` picks a series where several share
    /// the folder (it is refused for NIfTI input).
    pub fn open(inputs: &[PathBuf], series_uid: Option<&str>) -> Result<CtSource> {
        if is_dicom_input(inputs) {
            return Ok(CtSource::Dicom(Box::new(DicomSeries::open(
                inputs, series_uid,
            )?)));
        }
        match inputs {
            [one] => {
                if series_uid.is_some() {
                    return Err(Error::Invalid(format!(
                        "{}: --series applies to DICOM input only",
                        one.display()
                    )));
                }
                probe_ct(one)?;
                Ok(CtSource::Nifti(one.clone()))
            }
            [] => Err(Error::Invalid("no CT input given".into())),
            _ => Err(Error::Invalid(
                "several inputs for one CT: they must all be DICOM files of one series".into(),
            )),
        }
    }

    /// The input as the user named it (the folder or first file).
    pub fn path(&self) -> &Path {
        match self {
            CtSource::Nifti(p) => p,
            CtSource::Dicom(d) => &d.series.source,
        }
    }

    /// Voxel counts along (i, j, k).
    pub fn dims(&self) -> Result<[usize; 3]> {
        match self {
            CtSource::Nifti(p) => Ok(probe_ct(p)?.dims),
            CtSource::Dicom(d) => Ok(d.dims()),
        }
    }

    /// The DICOM series, when the input is one (for DICOM outputs).
    pub fn dicom(&self) -> Option<&DicomSeries> {
        match self {
            CtSource::Dicom(d) => Some(d),
            CtSource::Nifti(_) => None,
        }
    }

    /// Reads the voxels.
    pub fn read(&self) -> Result<CtVolume> {
        match self {
            CtSource::Nifti(p) => read_ct(p),
            CtSource::Dicom(d) => d.read(),
        }
    }
}

/// Reads a CT from a NIfTI file, a DICOM folder or DICOM files.
pub fn read_input(inputs: &[PathBuf], series_uid: Option<&str>) -> Result<CtVolume> {
    CtSource::open(inputs, series_uid)?.read()
}
