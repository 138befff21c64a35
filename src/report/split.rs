//! `--split`: one 0/1 NIfTI per category, named after it, in a folder named
//! after the label map and beside it (`out/case1.nii.gz` →
//! `out/case1/liver.nii.gz`, ...), the layout TotalSegmentator users know.
//! The folder keeps cases apart when several label maps share one folder.

use std::path::{Path, PathBuf};

use super::labels::file_stems;
use super::split_nifti_name;
use crate::error::{Error, Result};
use crate::io::nifti::CtVolume;
use crate::io::write::{check_output_path, write_label_map};

/// Where the per-category files of `label_map` go: the folder and, per
/// category, the file name (same ending as the label map).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPaths {
    pub folder: PathBuf,
    pub files: Vec<String>,
}

impl SplitPaths {
    pub fn new(label_map: &Path, names: &[String]) -> SplitPaths {
        let (stem, ext) = split_nifti_name(label_map);
        SplitPaths {
            folder: label_map.with_file_name(stem),
            files: file_stems(names)
                .into_iter()
                .map(|s| format!("{s}{ext}"))
                .collect(),
        }
    }

    pub fn path(&self, c: usize) -> PathBuf {
        self.folder.join(&self.files[c])
    }

    /// The files relative to the label map's folder (for the sidecar).
    pub fn relative(&self) -> Vec<String> {
        let dir = self
            .folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.files.iter().map(|f| format!("{dir}/{f}")).collect()
    }

    /// Creates the folder (refusing a file in its place) before any work.
    pub fn prepare(&self) -> Result<()> {
        if self.folder.exists() && !self.folder.is_dir() {
            return Err(Error::Invalid(format!(
                "--split: {} exists and is not a folder",
                self.folder.display()
            )));
        }
        std::fs::create_dir_all(&self.folder).map_err(|e| Error::io(&self.folder, e))
    }
}

/// Writes one uint8 0/1 mask per category of `labels` (values `c + 1`) in
/// `like`'s geometry, each atomically; returns the paths written.
pub fn write_split(
    label_map: &Path,
    names: &[String],
    labels: &[u16],
    like: &CtVolume,
) -> Result<Vec<PathBuf>> {
    let paths = SplitPaths::new(label_map, names);
    paths.prepare()?;
    let mut mask = vec![0u8; labels.len()];
    let mut written = Vec::with_capacity(names.len());
    for c in 0..names.len() {
        let value = c as u16 + 1;
        for (m, &l) in mask.iter_mut().zip(labels) {
            *m = u8::from(l == value);
        }
        let p = paths.path(c);
        check_output_path(&p, &like.path)?;
        write_label_map(&p, like, &mask)?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_go_to_a_folder_named_after_the_label_map() {
        let names = vec!["liver".to_string(), "kidney left".to_string()];
        let p = SplitPaths::new(Path::new("out/case1.nii"), &names);
        assert_eq!(p.folder, Path::new("out/case1"));
        assert_eq!(p.path(1), Path::new("out/case1/kidney_left.nii"));
        assert_eq!(p.relative(), ["case1/liver.nii", "case1/kidney_left.nii"]);
    }
}
