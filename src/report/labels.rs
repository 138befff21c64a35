//! Label names and colours for viewers: a JSON sidecar (label value → name,
//! colour), an ITK-SNAP label description file and a 3D Slicer colour table,
//! written next to the label map; plus the file-system-safe category names
//! the per-category files use.
//!
//! Colours are fixed per category name, so a liver is the same colour in
//! every run, every viewer and the PNG preview:
//! - a name from the training vocabulary ([`crate::vocabulary::categories`])
//!   at position `n` gets hue `n × 137.508°` (the golden angle, so neighbours
//!   in the list differ widely), saturation 0.80 or 0.60 (`n` even or odd)
//!   and value 0.95 or 0.75 (`n / 2` even or odd);
//! - any other name (a free text, `box1`, `points`) gets the hue
//!   `FNV-1a-64(name) mod 360`, saturation 0.70, value 0.90.
//!
//! Names are compared lower-case with single spaces, as the vocabulary does.
//! `docs/OUTPUTS.md` lists the resulting colour of every vocabulary name
//! (a test keeps it current).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::split_nifti_name;
use crate::error::Result;
use crate::io::write::write_bytes_atomic;
use crate::vocabulary::categories;

/// Lower case, single spaces: the form names are compared in.
fn normalise(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// HSV (hue in degrees, s and v in 0..=1) to 8-bit RGB.
fn hsv(h: f64, s: f64, v: f64) -> [u8; 3] {
    let h = h.rem_euclid(360.0) / 60.0;
    let c = v * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r, g, b].map(|u| ((u + m) * 255.0).round().clamp(0.0, 255.0) as u8)
}

fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The fixed colour of a category name (see the module documentation).
pub fn category_color(name: &str) -> [u8; 3] {
    let n = normalise(name);
    match categories().iter().position(|c| normalise(c) == n) {
        Some(i) => {
            let s = if i % 2 == 0 { 0.80 } else { 0.60 };
            let v = if (i / 2) % 2 == 0 { 0.95 } else { 0.75 };
            hsv(i as f64 * 137.508, s, v)
        }
        None => hsv((fnv1a64(&n) % 360) as f64, 0.70, 0.90),
    }
}

/// Names Windows refuses as file names, whatever the extension.
const RESERVED: &[&str] = &[
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];
const MAX_NAME: usize = 100;

/// A category name as a file name on any system: ASCII letters, digits and
/// `-` kept, every other run of characters (spaces, `/`, `.`, accents)
/// turned into one `_`, at most 100 characters; an empty result becomes
/// `label<value>`.
fn sanitise(name: &str, value: usize) -> String {
    let mut out = String::new();
    for ch in name.trim().chars() {
        if ch.is_ascii_alphanumeric() || ch == '-' {
            out.push(ch);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let mut out: String = out.trim_matches('_').chars().take(MAX_NAME).collect();
    if out.is_empty() {
        out = format!("label{value}");
    }
    if RESERVED.contains(&out.to_lowercase().as_str()) {
        out.push('_');
    }
    out
}

/// One file-name stem per category (label `c + 1` for `names[c]`), unique
/// even on case-insensitive file systems: a stem already taken gets
/// `_<label>` appended.
pub fn file_stems(names: &[String]) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    names
        .iter()
        .enumerate()
        .map(|(c, n)| {
            let mut stem = sanitise(n, c + 1);
            if !taken.insert(stem.to_lowercase()) {
                stem = format!("{stem}_{}", c + 1);
                let mut extra = 2;
                while !taken.insert(stem.to_lowercase()) {
                    stem = format!("{}_{}_{extra}", sanitise(n, c + 1), c + 1);
                    extra += 1;
                }
            }
            stem
        })
        .collect()
}

/// The sidecar files of a label map `<dir>/<stem>.nii[.gz]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarPaths {
    /// `<stem>.labels.json`: label value → name and colour.
    pub json: PathBuf,
    /// `<stem>.itksnap.txt`: ITK-SNAP's label description format.
    pub itksnap: PathBuf,
    /// `<stem>.ctbl`: 3D Slicer's colour table format.
    pub slicer: PathBuf,
}

impl SidecarPaths {
    pub fn for_label_map(label_map: &Path) -> SidecarPaths {
        let (stem, _) = split_nifti_name(label_map);
        let at = |suffix: &str| label_map.with_file_name(format!("{stem}{suffix}"));
        SidecarPaths {
            json: at(".labels.json"),
            itksnap: at(".itksnap.txt"),
            slicer: at(".ctbl"),
        }
    }

    pub fn all(&self) -> [&Path; 3] {
        [&self.json, &self.itksnap, &self.slicer]
    }
}

/// The JSON sidecar: `{"background": 0, "labels": [{"value", "name",
/// "color": [r, g, b], "file"?}]}`; `files` (per-category NIfTI names,
/// relative to the label map's folder) are listed when written.
pub fn labels_json(label_map: &Path, names: &[String], files: Option<&[String]>) -> String {
    let labels: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(c, n)| {
            let mut v = json!({"value": c + 1, "name": n, "color": category_color(n)});
            if let Some(f) = files {
                v["file"] = json!(f[c]);
            }
            v
        })
        .collect();
    let label_map_name = label_map
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let v = json!({
        "label_map": label_map_name,
        "background": 0,
        "labels": labels,
    });
    serde_json::to_string_pretty(&v).expect("JSON values always serialise") + "\n"
}

/// ITK-SNAP's label description file ("Label Descriptions > Import"):
/// `IDX R G B A VIS MSH "LABEL"`, label 0 the clear label.
pub fn itksnap_labels(names: &[String]) -> String {
    let mut s = String::from(
        "################################################\n\
         # ITK-SnAP Label Description File (written by segvol)\n\
         # File format:\n\
         # IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL\n\
         # Fields:\n\
         #    IDX:   Zero-based index\n\
         #    -R-:   Red color component (0..255)\n\
         #    -G-:   Green color component (0..255)\n\
         #    -B-:   Blue color component (0..255)\n\
         #    -A-:   Label transparency (0.00 .. 1.00)\n\
         #    VIS:   Label visibility (0 or 1)\n\
         #    MSH:   Label mesh visibility (0 or 1)\n\
         #  LABEL:   Label description\n\
         ################################################\n",
    );
    s += &format!(
        "{:>5} {:>5} {:>4} {:>4} {:>8} {:>2} {:>2}    \"Clear Label\"\n",
        0, 0, 0, 0, 0, 0, 0
    );
    for (c, n) in names.iter().enumerate() {
        let [r, g, b] = category_color(n);
        // The description is quoted; a quote inside it would end it early.
        let label = n.replace('"', "'");
        s += &format!(
            "{:>5} {r:>5} {g:>4} {b:>4} {:>8} {:>2} {:>2}    \"{label}\"\n",
            c + 1,
            1,
            1,
            1
        );
    }
    s
}

/// 3D Slicer's colour table (`.ctbl`, "# Color table file"): `index name R G
/// B A` with spaces in names replaced by `_`, as Slicer's reader requires.
pub fn slicer_color_table(names: &[String]) -> String {
    let mut s = format!(
        "# Color table file written by segvol\n# {} values\n0 Background 0 0 0 0\n",
        names.len() + 1
    );
    for (c, n) in names.iter().enumerate() {
        let [r, g, b] = category_color(n);
        let name: String = n
            .split_whitespace()
            .collect::<Vec<_>>()
            .join("_")
            .replace('#', "_");
        let name = if name.is_empty() {
            format!("label{}", c + 1)
        } else {
            name
        };
        s += &format!("{} {name} {r} {g} {b} 255\n", c + 1);
    }
    s
}

/// Writes the three sidecars of `label_map` (each atomically).
pub fn write_sidecars(
    label_map: &Path,
    names: &[String],
    files: Option<&[String]>,
) -> Result<SidecarPaths> {
    let p = SidecarPaths::for_label_map(label_map);
    write_bytes_atomic(&p.json, labels_json(label_map, names, files).as_bytes())?;
    write_bytes_atomic(&p.itksnap, itksnap_labels(names).as_bytes())?;
    write_bytes_atomic(&p.slicer, slicer_color_table(names).as_bytes())?;
    Ok(p)
}

/// The colour of every vocabulary name as a Markdown table (the list in
/// `docs/OUTPUTS.md`).
pub fn vocabulary_color_table() -> String {
    let mut s = String::from("| # | name | colour (R, G, B) |\n|---|---|---|\n");
    for (i, n) in categories().iter().enumerate() {
        let [r, g, b] = category_color(n);
        s += &format!("| {i} | {n} | {r}, {g}, {b} |\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_fixed_and_ignore_case_and_spacing() {
        assert_eq!(category_color("liver"), category_color("  Liver "));
        assert_eq!(category_color("liver"), hsv(0.0, 0.80, 0.95));
        assert_ne!(category_color("liver"), category_color("spleen"));
        // Free text: hashed, stable across runs.
        assert_eq!(category_color("my lesion"), category_color("My  lesion"));
        // Consecutive vocabulary names get clearly different colours.
        let cats = categories();
        for w in cats.windows(2) {
            let (a, b) = (category_color(w[0]), category_color(w[1]));
            let d: i32 = (0..3).map(|i| (a[i] as i32 - b[i] as i32).abs()).sum();
            assert!(d > 60, "{} {a:?} vs {} {b:?}", w[0], w[1]);
        }
    }

    #[test]
    fn hsv_primaries() {
        assert_eq!(hsv(0.0, 1.0, 1.0), [255, 0, 0]);
        assert_eq!(hsv(120.0, 1.0, 1.0), [0, 255, 0]);
        assert_eq!(hsv(240.0, 1.0, 1.0), [0, 0, 255]);
        assert_eq!(hsv(360.0 + 60.0, 1.0, 1.0), [255, 255, 0]);
    }

    #[test]
    fn file_stems_are_safe_and_unique() {
        let names: Vec<String> = [
            "kidney left",
            "a/b..c",
            "Kidney Left",
            "",
            "CON",
            "über tumor",
            "kidney_left",
        ]
        .map(String::from)
        .to_vec();
        let stems = file_stems(&names);
        assert_eq!(
            stems,
            [
                "kidney_left",
                "a_b_c",
                "Kidney_Left_3",
                "label4",
                "CON_",
                "ber_tumor",
                "kidney_left_7"
            ]
        );
    }

    #[test]
    fn colour_tables_list_every_label() {
        let names: Vec<String> = ["liver", "left kidney", "say \"hi\""]
            .map(String::from)
            .to_vec();
        let it = itksnap_labels(&names);
        let rows: Vec<&str> = it.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(rows.len(), 4);
        let [r, g, b] = category_color("left kidney");
        let fields: Vec<&str> = rows[2].split_whitespace().collect();
        assert_eq!(
            fields[..7],
            [
                "2",
                &r.to_string(),
                &g.to_string(),
                &b.to_string(),
                "1",
                "1",
                "1"
            ]
        );
        assert!(rows[2].ends_with("\"left kidney\""));
        assert!(rows[3].ends_with("\"say 'hi'\""));

        let sl = slicer_color_table(&names);
        let rows: Vec<Vec<&str>> = sl
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.len() == 6));
        assert_eq!(rows[2][..2], ["2", "left_kidney"]);
        assert!(sl.contains("# 4 values"));

        let js: serde_json::Value =
            serde_json::from_str(&labels_json(Path::new("x/seg.nii.gz"), &names, None)).unwrap();
        assert_eq!(js["labels"][1]["value"], 2);
        assert_eq!(js["labels"][1]["name"], "left kidney");
        assert_eq!(js["labels"][1]["color"], json!([r, g, b]));
        assert_eq!(js["label_map"], "seg.nii.gz");
    }

    /// docs/OUTPUTS.md lists every vocabulary colour; `SEGVOL_UPDATE_DOCS=1`
    /// rewrites the list instead of failing.
    #[test]
    fn docs_list_the_current_colours() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OUTPUTS.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- colours:begin -->\n", "<!-- colours:end -->");
        let (head, rest) = doc.split_once(begin).expect("begin marker");
        let (listed, tail) = rest.split_once(end).expect("end marker");
        let want = vocabulary_color_table();
        if listed != want {
            if std::env::var_os("SEGVOL_UPDATE_DOCS").is_some() {
                std::fs::write(&path, format!("{head}{begin}{want}{end}{tail}")).unwrap();
            } else {
                panic!(
                    "docs/OUTPUTS.md's colour list is out of date: run \
                     SEGVOL_UPDATE_DOCS=1 cargo test --release --lib report::labels"
                );
            }
        }
    }

    #[test]
    fn sidecars_sit_next_to_the_label_map() {
        let p = SidecarPaths::for_label_map(Path::new("out/case1.nii.gz"));
        assert_eq!(p.json, Path::new("out/case1.labels.json"));
        assert_eq!(p.itksnap, Path::new("out/case1.itksnap.txt"));
        assert_eq!(p.slicer, Path::new("out/case1.ctbl"));
    }
}
