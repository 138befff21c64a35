//! The cohort manifest: a CSV file with a header row and one case per row.
//!
//! | column   | meaning                                                          |
//! |----------|------------------------------------------------------------------|
//! | `input`  | the CT (required); relative paths are from the manifest's folder |
//! | `output` | the label map; relative to `--output-dir` (default `NAME.nii.gz`) |
//! | `text`   | category names, `;`-separated (`liver;spleen`)                   |
//! | `box`    | boxes `i0,j0,k0,i1,j1,k1`, `;`-separated (quote the cell)        |
//! | `point`  | clicks `i,j,k[,label]`, `;`-separated (quote the cell)           |
//! | `labels` | category names for the outputs, `;`-separated                    |
//! | `frame`  | `voxel`, `world` or `zoom` for this row's coordinates            |
//!
//! Only `input` is required; columns may come in any order. A row with any
//! of `text`, `box`, `point` filled uses only its own prompts; a row with
//! none of them takes the command line's (`--text`, `--box`, `--point`,
//! `--labels`). An unknown column is refused (a typo would otherwise
//! silently fall back to the command line's prompts); a bad prompt in one
//! row fails that case only.

use std::path::{Path, PathBuf};

use segvol::error::{Error, Result};
use segvol::pipeline::prompt_frames::Frame;

use super::prompt_args::{parse_box, parse_point};
use segvol::pipeline::request::Request;

const COLUMNS: [&str; 7] = ["input", "output", "text", "box", "point", "labels", "frame"];

/// One row: where the CT is, where its label map goes, and its prompts (or
/// why they cannot be used).
pub struct Entry {
    pub input: PathBuf,
    pub output: Option<PathBuf>,
    pub request: std::result::Result<Request, String>,
}

/// Reads the manifest; `default` is the command line's request, used by rows
/// without prompts of their own.
pub fn read(path: &Path, default: &Request) -> Result<Vec<Entry>> {
    let err = |msg: String| Error::Invalid(format!("--manifest {}: {msg}", path.display()));
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| err(e.to_string()))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| err(e.to_string()))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    for h in &header {
        if !COLUMNS.contains(&h.as_str()) {
            return Err(err(format!(
                "unknown column {h:?} (the columns are {})",
                COLUMNS.join(", ")
            )));
        }
    }
    let col = |name: &str| header.iter().position(|h| h == name);
    let input_col = col("input").ok_or_else(|| err("no `input` column".into()))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let mut entries = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|e| err(e.to_string()))?;
        let cell = |name: &str| {
            col(name)
                .and_then(|i| record.get(i))
                .filter(|v| !v.is_empty())
        };
        let input = record.get(input_col).unwrap_or("");
        if input.is_empty() {
            return Err(err(format!("row {}: the `input` cell is empty", n + 2)));
        }
        entries.push(Entry {
            input: base.join(input),
            output: cell("output").map(PathBuf::from),
            request: row_request(&cell, default)
                .map_err(|e| format!("manifest row {}: {e}", n + 2)),
        });
    }
    if entries.is_empty() {
        return Err(err("no rows".into()));
    }
    Ok(entries)
}

/// A row's request: its own prompts when it has any, else the default's.
fn row_request<'a>(cell: &dyn Fn(&str) -> Option<&'a str>, default: &Request) -> Result<Request> {
    let list = |name: &str| -> Vec<&'a str> {
        cell(name)
            .map(|v| {
                v.split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let own = ["text", "box", "point"].iter().any(|c| cell(c).is_some());
    let mut req = if own {
        Request {
            texts: list("text").into_iter().map(String::from).collect(),
            boxes: list("box")
                .into_iter()
                .map(parse_box)
                .collect::<Result<_>>()?,
            points: list("point")
                .into_iter()
                .map(parse_point)
                .collect::<Result<_>>()?,
            frame: default.frame,
            labels: Vec::new(),
        }
    } else {
        default.clone()
    };
    if cell("labels").is_some() {
        req.labels = list("labels").into_iter().map(String::from).collect();
    }
    if let Some(f) = cell("frame") {
        req.frame = Some(f.parse::<Frame>()?);
    }
    req.category_count()?;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, text: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("segvol-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn rows_take_their_own_prompts_or_the_command_lines() {
        let default = Request {
            texts: vec!["kidney".into()],
            ..Request::default()
        };
        let p = manifest(
            "m.csv",
            "\u{feff}Input, box ,labels,frame\n\
             a.nii,\"1,2,3,4,5,6; 7,8,9,10,11,12\",x;y,world\n\
             /abs/b.nii,,,\n\
             c.nii,,,sideways\n",
        );
        let rows = read(&p, &default).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].input, p.parent().unwrap().join("a.nii"));
        let r = rows[0].request.as_ref().unwrap();
        assert_eq!((r.texts.len(), r.boxes.len()), (0, 2));
        assert_eq!(r.labels, ["x", "y"]);
        assert_eq!(r.frame, Some(Frame::World));
        assert_eq!(rows[1].input, PathBuf::from("/abs/b.nii"));
        assert_eq!(rows[1].request.as_ref().unwrap().texts, ["kidney"]);
        let why = rows[2].request.as_ref().unwrap_err();
        assert!(
            why.starts_with("manifest row 4:") && why.contains("sideways"),
            "{why}"
        );

        let bad = manifest("bad.csv", "input,texts\na.nii,liver\n");
        let e = read(&bad, &default).err().unwrap().to_string();
        assert!(e.contains("unknown column \"texts\""), "{e}");
        let empty = manifest("empty.csv", "input,text\n");
        assert!(read(&empty, &default)
            .err()
            .unwrap()
            .to_string()
            .contains("no rows"));
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }
}
