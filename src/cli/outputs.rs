//! `segment`'s output options beyond the label map: `--split`, `--statistics`,
//! `--preview`, the category lists `--text all` / `--roi-subset`, and the
//! label sidecars written next to every label map. The work is in
//! `segvol::report`; this file parses, checks and calls it once per case.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};

use segvol::api::Segmentation;
use segvol::error::{Error, Result};
use segvol::io::nifti::CtVolume;
use segvol::report::labels::{write_sidecars, SidecarPaths};
use segvol::report::preview::{check_preview_path, render};
use segvol::report::split::{write_split, SplitPaths};
use segvol::report::statistics::{category_statistics, definitions, PERCENTILES};
use segvol::vocabulary::categories;

#[derive(Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Also write one 0/1 NIfTI per category, named after it, into a folder
    /// named after the label map beside it (out/ct.nii.gz → out/ct/liver.nii.gz).
    #[arg(long)]
    pub split: bool,
    /// Per category volume (ml) and HU mean, std, min, max and percentiles
    /// 5/25/50/75/95 (numpy's linear rule), printed and added to --json.
    #[arg(long)]
    pub statistics: bool,
    /// Write a PNG overview: per category, axial, coronal and sagittal
    /// slices through its centroid with the masks overlaid. In a cohort run
    /// this names a folder, and each case's overview is FOLDER/NAME.png.
    #[arg(long, value_name = "PNG")]
    pub preview: Option<PathBuf>,
    /// Categories to segment, comma separated (added to --text);
    /// `--text all` segments every name `segvol categories` lists.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub roi_subset: Vec<String>,
}

/// Lower case, single spaces: how names are compared.
fn normalise(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The text prompts to run: `--text` as given with `all` replaced by every
/// vocabulary name, then the `--roi-subset` names; a name that the lists
/// add and that is already there is not added twice.
pub fn expand_texts(texts: &[String], roi_subset: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in texts {
        if normalise(t) == "all" {
            for c in categories() {
                if seen.insert(normalise(c)) {
                    out.push(c.to_string());
                }
            }
        } else {
            seen.insert(normalise(t));
            out.push(t.clone());
        }
    }
    for t in roi_subset {
        let n = normalise(t);
        if n.is_empty() {
            return Err(Error::Invalid(format!(
                "--roi-subset {:?}: an empty name (two commas in a row?)",
                roi_subset.join(",")
            )));
        }
        if n == "all" {
            return Err(Error::Invalid(
                "--roi-subset all: use --text all for every name".into(),
            ));
        }
        if seen.insert(n) {
            out.push(t.trim().to_string());
        }
    }
    Ok(out)
}

impl OutputArgs {
    /// Whether the CT's intensities must stay in memory until the outputs.
    pub fn needs_intensities(&self) -> bool {
        self.statistics || self.preview.is_some()
    }

    /// Checks the paths before any work, so a typo cannot fail the run
    /// after the network has run.
    pub fn check(&self, label_map: &Path) -> Result<()> {
        if let Some(p) = &self.preview {
            check_preview_path(p)?;
        }
        for p in SidecarPaths::for_label_map(label_map).all() {
            if p.is_dir() {
                return Err(Error::Invalid(format!(
                    "{}: the label sidecar's path is a folder",
                    p.display()
                )));
            }
        }
        if self.split {
            let folder = SplitPaths::new(label_map, &[]).folder;
            if folder.exists() && !folder.is_dir() {
                return Err(Error::Invalid(format!(
                    "--split: {} exists and is not a folder",
                    folder.display()
                )));
            }
        }
        Ok(())
    }
}

/// Writes one case's extra outputs (sidecars always; split files, preview
/// and statistics when asked) and returns what to add to its JSON summary.
pub fn write_case(
    args: &OutputArgs,
    seg: &Segmentation,
    ct: &CtVolume,
    label_map: &Path,
    preview: Option<&Path>,
) -> Result<CaseOutputs> {
    let mut files = serde_json::Map::new();
    let split = if args.split {
        let written = write_split(label_map, &seg.names, &seg.labels, ct)?;
        files.insert("split".into(), json!(written));
        Some(SplitPaths::new(label_map, &seg.names).relative())
    } else {
        None
    };
    let side = write_sidecars(label_map, &seg.names, split.as_deref())?;
    files.insert("labels_json".into(), json!(side.json));
    files.insert("itksnap_labels".into(), json!(side.itksnap));
    files.insert("slicer_color_table".into(), json!(side.slicer));
    if let Some(p) = preview {
        let img = render(ct, &seg.labels, &seg.names)?;
        img.write(p)?;
        let rows: Vec<_> = img
            .layout
            .rows
            .iter()
            .map(|(c, at)| json!({"category": c.map(|c| &seg.names[c]), "through_ijk": at}))
            .collect();
        files.insert(
            "preview".into(),
            json!({"path": p, "width": img.width, "height": img.height, "rows": rows}),
        );
    }
    let statistics = if args.statistics {
        let stats = category_statistics(&seg.labels, seg.names.len(), ct)?;
        print_statistics(&seg.names, &stats);
        Some(stats.iter().map(|s| s.to_json()).collect())
    } else {
        None
    };
    Ok(CaseOutputs {
        files: Value::Object(files),
        statistics,
    })
}

fn print_statistics(names: &[String], stats: &[segvol::report::statistics::CategoryStatistics]) {
    let q: Vec<String> = PERCENTILES.iter().map(|q| format!("p{q}")).collect();
    eprintln!(
        "  {:>3} {:24} {:>10} {:>9} {:>8} {:>8} {}",
        "",
        "statistics (HU)",
        "volume ml",
        "mean",
        "std",
        "",
        q.join("/")
    );
    for (n, s) in names.iter().zip(stats) {
        match &s.intensity {
            Some(h) => {
                let p: Vec<String> = h.percentiles.iter().map(|v| format!("{v:.0}")).collect();
                eprintln!(
                    "  {:>3} {:24} {:>10.1} {:>9.1} {:>8.1} {:>8} {}",
                    s.label,
                    n,
                    s.volume_ml,
                    h.mean,
                    h.std,
                    "",
                    p.join("/")
                );
            }
            None => eprintln!("  {:>3} {n:24} {:>10.1} (empty)", s.label, s.volume_ml),
        }
    }
}

/// What one case's outputs add to its JSON summary.
pub struct CaseOutputs {
    /// `{"labels_json", "itksnap_labels", "slicer_color_table", "split"?,
    /// "preview"?}`.
    pub files: Value,
    /// Per category (label order), when `--statistics` was given.
    pub statistics: Option<Vec<Value>>,
}

impl CaseOutputs {
    /// Adds `"outputs"` to the summary and each category's `"statistics"`
    /// (to the entries of `summary["categories"]`, in label order), with
    /// `"statistics_definitions"` saying how they are computed.
    pub fn merge_into(self, summary: &mut Value) {
        summary["outputs"] = self.files;
        if let Some(stats) = self.statistics {
            if let Some(cats) = summary["categories"].as_array_mut() {
                for (c, s) in cats.iter_mut().zip(stats) {
                    c["statistics"] = s;
                }
            }
            summary["statistics_definitions"] = definitions();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn all_and_subsets_expand_without_duplicates() {
        let all = expand_texts(&s(&["All"]), &[]).unwrap();
        assert_eq!(all.len(), categories().len());
        let t = expand_texts(&s(&["my lesion", "all"]), &s(&["liver", "new thing"])).unwrap();
        assert_eq!(t[0], "my lesion");
        assert_eq!(t.len(), categories().len() + 2);
        assert_eq!(t.last().unwrap(), "new thing");
        assert_eq!(
            expand_texts(&s(&["liver"]), &s(&["Liver", " spleen ", "kidney"])).unwrap(),
            s(&["liver", "spleen", "kidney"])
        );
        // Repeated --text stays as the user wrote it (two categories).
        assert_eq!(
            expand_texts(&s(&["liver", "liver"]), &[]).unwrap(),
            s(&["liver", "liver"])
        );
        assert!(expand_texts(&[], &s(&["liver", ""])).is_err());
        assert!(expand_texts(&[], &s(&["all"])).is_err());
    }
}
