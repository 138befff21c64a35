//! The `params` JSON of MONAI Label requests, checked and turned into
//! SegVol prompts. Coordinates are voxel indices (IJK) of the uploaded
//! image, as 3D Slicer's extension sends them.

use serde_json::{Map, Value};

use crate::serve::error::ApiError;
use segvol::vocabulary;

/// The `params` form field: a JSON object (absent or empty means `{}`).
pub fn parse(text: Option<&str>) -> Result<Map<String, Value>, ApiError> {
    let text = text
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("{}");
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("params: expected a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("params: invalid JSON: {e}"))),
    }
}

/// The result file format (`result_extension`; NIfTI gzip by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    NiftiGz,
    Nifti,
    Nrrd,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::NiftiGz => ".nii.gz",
            Format::Nifti => ".nii",
            Format::Nrrd => ".nrrd",
        }
    }
    pub fn mime(self) -> &'static str {
        match self {
            Format::NiftiGz => "application/gzip",
            Format::Nifti | Format::Nrrd => "application/octet-stream",
        }
    }
}

pub fn format(p: &Map<String, Value>) -> Result<Format, ApiError> {
    match p.get("result_extension") {
        None | Some(Value::Null) => Ok(Format::NiftiGz),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "" | ".nii.gz" | "nii.gz" => Ok(Format::NiftiGz),
            ".nii" | "nii" => Ok(Format::Nifti),
            ".nrrd" | "nrrd" | ".seg.nrrd" => Ok(Format::Nrrd),
            other => Err(ApiError::bad_request(format!(
                "result_extension {other:?}: supported are .nii.gz, .nii and .nrrd"
            ))),
        },
        Some(_) => Err(ApiError::bad_request(
            "result_extension: expected a string such as \".nrrd\"",
        )),
    }
}

/// The categories the `segvol` model segments: `labels` (a list of names,
/// or a name → value object as MONAI Label writes label maps) or `label`
/// (one name); otherwise every name of `all`.
pub fn segmentation_labels(p: &Map<String, Value>, all: &[&str]) -> Result<Vec<String>, ApiError> {
    let names: Vec<String> = match (p.get("labels"), p.get("label")) {
        (Some(Value::Array(a)), _) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request("labels: expected a list of names"))
            })
            .collect::<Result<_, _>>()?,
        (Some(Value::Object(m)), _) => {
            let mut named: Vec<(&String, f64)> = m
                .iter()
                .map(|(k, v)| (k, v.as_f64().unwrap_or(f64::MAX)))
                .collect();
            named.sort_by(|a, b| a.1.total_cmp(&b.1));
            named.into_iter().map(|(k, _)| k.clone()).collect()
        }
        (Some(Value::Null) | None, Some(Value::String(s))) => vec![s.clone()],
        (Some(Value::Null) | None, None | Some(Value::Null)) => {
            all.iter().map(|s| s.to_string()).collect()
        }
        _ => {
            return Err(ApiError::bad_request(
                "labels: expected a list of category names (or label: one name)",
            ))
        }
    };
    let names: Vec<String> = names
        .into_iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Err(ApiError::bad_request("labels: no category names given"));
    }
    if names.len() > 255 {
        return Err(ApiError::bad_request(format!(
            "labels: {} categories, at most 255 fit a uint8 label map",
            names.len()
        )));
    }
    Ok(names)
}

/// The prompts of one `segvol_interactive` (deepgrow) request.
#[derive(Clone, Debug, PartialEq)]
pub struct Interactive {
    /// `label` when it names a SegVol category (used as the text prompt).
    pub text: Option<String>,
    /// The name the result is reported under (`label`, or "object").
    pub name: String,
    /// `roi` as two opposite corners `(i0, j0, k0, i1, j1, k1)`.
    pub corners: Option<[f64; 6]>,
    /// `foreground` (positive) then `background` (negative) clicks.
    pub points: Vec<([f64; 3], bool)>,
}

pub fn interactive(p: &Map<String, Value>) -> Result<Interactive, ApiError> {
    let label = match p.get("label") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Some(_) => return Err(ApiError::bad_request("label: expected a string")),
    };
    let text = label.clone().filter(|l| vocabulary::is_known(l));
    let mut points = Vec::new();
    for (key, positive) in [("foreground", true), ("background", false)] {
        for at in clicks(p.get(key), key)? {
            points.push((at, positive));
        }
    }
    let corners = roi(p.get("roi"))?;
    if text.is_none() && corners.is_none() && points.is_empty() {
        return Err(ApiError::bad_request(
            "no prompt: give foreground clicks, a roi, or a label that names a SegVol category (GET /info/ lists them)",
        ));
    }
    Ok(Interactive {
        text,
        name: label.unwrap_or_else(|| "object".into()),
        corners,
        points,
    })
}

fn number(v: &Value, what: &str) -> Result<f64, ApiError> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| ApiError::bad_request(format!("{what}: expected finite numbers")))
}

/// A list of clicks, each `[i, j, k]` (extra trailing values are ignored).
fn clicks(v: Option<&Value>, key: &str) -> Result<Vec<[f64; 3]>, ApiError> {
    let bad = || ApiError::bad_request(format!("{key}: expected a list of [i, j, k] clicks"));
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad()),
    };
    if list.len() > 10_000 {
        return Err(ApiError::bad_request(format!("{key}: too many clicks")));
    }
    list.iter()
        .map(|c| match c.as_array() {
            Some(xs) if xs.len() >= 3 => Ok([
                number(&xs[0], key)?,
                number(&xs[1], key)?,
                number(&xs[2], key)?,
            ]),
            _ => Err(bad()),
        })
        .collect()
}

/// `roi`: the Slicer extension's `[i_a, i_b, j_a, j_b, k_a, k_b]` (each pair
/// may come in either order after its RAS → IJK mapping) or
/// `[[i_a, i_b], [j_a, j_b], [k_a, k_b]]`; empty means no box.
fn roi(v: Option<&Value>) -> Result<Option<[f64; 6]>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "roi: expected [i0, i1, j0, j1, k0, k1] or [[i0, i1], [j0, j1], [k0, k1]]",
        )
    };
    let list = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if a.is_empty() => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad()),
    };
    let flat: Vec<f64> = if list.len() == 3 && list.iter().all(Value::is_array) {
        let mut out = Vec::with_capacity(6);
        for pair in list {
            match pair.as_array() {
                Some(p) if p.len() == 2 => {
                    out.push(number(&p[0], "roi")?);
                    out.push(number(&p[1], "roi")?);
                }
                _ => return Err(bad()),
            }
        }
        out
    } else if list.len() == 6 {
        list.iter()
            .map(|x| number(x, "roi"))
            .collect::<Result<_, _>>()?
    } else {
        return Err(bad());
    };
    // Per-axis pairs to two corners; the box takes corners in any order.
    Ok(Some([flat[0], flat[2], flat[4], flat[1], flat[3], flat[5]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn deepgrow_params_become_prompts() {
        let p = map(json!({
            "label": "liver",
            "foreground": [[10, 12, 3]],
            "background": [[1.5, 2, 3, 99]],
            "roi": [30, 5, 4, 20, 9, 1],
        }));
        let got = interactive(&p).unwrap();
        assert_eq!(got.text.as_deref(), Some("liver"));
        assert_eq!(
            got.points,
            vec![([10.0, 12.0, 3.0], true), ([1.5, 2.0, 3.0], false)]
        );
        assert_eq!(got.corners, Some([30.0, 4.0, 9.0, 5.0, 20.0, 1.0]));
        let nested = map(json!({"roi": [[30, 5], [4, 20], [9, 1]]}));
        assert_eq!(interactive(&nested).unwrap().corners, got.corners);
    }

    #[test]
    fn an_unknown_label_is_a_name_not_a_prompt() {
        let p = map(json!({"label": "Segment_1", "foreground": [[1, 2, 3]]}));
        let got = interactive(&p).unwrap();
        assert_eq!(got.text, None);
        assert_eq!(got.name, "Segment_1");
        assert!(interactive(&map(json!({"label": "Segment_1"}))).is_err());
    }

    #[test]
    fn bad_params_are_400s() {
        assert!(parse(Some("{not json")).is_err());
        assert!(parse(Some("[1]")).is_err());
        assert!(parse(None).unwrap().is_empty());
        assert!(interactive(&map(json!({"foreground": [[1, 2]]}))).is_err());
        assert!(interactive(&map(json!({"roi": [1, 2, 3]}))).is_err());
        assert!(format(&map(json!({"result_extension": ".png"}))).is_err());
        assert_eq!(
            format(&map(json!({"result_extension": ".nrrd"}))).unwrap(),
            Format::Nrrd
        );
    }

    #[test]
    fn segmentation_labels_default_to_all() {
        let all = ["liver", "spleen"];
        assert_eq!(segmentation_labels(&Map::new(), &all).unwrap(), all);
        let p = map(json!({"labels": {"spleen": 2, "liver": 1}}));
        assert_eq!(segmentation_labels(&p, &all).unwrap(), ["liver", "spleen"]);
        let p = map(json!({"label": "kidney"}));
        assert_eq!(segmentation_labels(&p, &all).unwrap(), ["kidney"]);
    }
}
