//! What a segmentation is turned into besides the label map: per-category
//! files (`split`), label names and colours for viewers (`labels`), volume
//! and intensity statistics (`statistics`), a PNG overview (`preview`) and
//! the JSON envelope every command's summary shares (`envelope`).
//!
//! Everything here works on a label map in the CT's grid (one `u16` per
//! voxel, file order, `c + 1` for category `c`) and the CT it came from, so
//! it serves the CLI, the embedding API and any other front end alike.

pub mod envelope;
pub mod labels;
pub mod preview;
pub mod split;
pub mod statistics;

use std::path::Path;

/// A label map's file name without its `.nii` / `.nii.gz` ending, and that
/// ending: the stem names the files written beside it.
pub fn split_nifti_name(label_map: &Path) -> (String, &'static str) {
    let name = label_map
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    for ext in [".nii.gz", ".nii"] {
        if lower.ends_with(ext) {
            return (name[..name.len() - ext.len()].to_string(), ext);
        }
    }
    (name, ".nii.gz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nifti_names_split_into_stem_and_ending() {
        assert_eq!(
            split_nifti_name(Path::new("out/case1.nii.gz")),
            ("case1".to_string(), ".nii.gz")
        );
        assert_eq!(
            split_nifti_name(Path::new("Seg.NII")),
            ("Seg".to_string(), ".nii")
        );
    }
}
