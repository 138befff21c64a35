//! `segvol categories`: the names SegVol was trained on, and the warning for
//! a `--text` name outside them.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use segvol::error::{Error, Result};
use segvol::vocabulary::{categories, datasets_of, is_known, nearest, DATASETS};

use super::common::write_json;

/// Prints one line per training name with the datasets that use it, or
/// writes them as JSON.
pub fn run(json: Option<&Path>) -> Result<()> {
    let names = categories();
    if let Some(path) = json {
        let rows: Vec<_> = names
            .iter()
            .map(|n| {
                let ds: Vec<_> = datasets_of(n).iter().map(|d| d.name).collect();
                json!({"name": n, "datasets": ds})
            })
            .collect();
        let sets: Vec<_> = DATASETS
            .iter()
            .map(|d| json!({"code": d.code, "name": d.name, "labels": d.labels}))
            .collect();
        return write_json(path, &json!({"categories": rows, "datasets": sets}));
    }
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut text = String::new();
    for n in &names {
        let ds: Vec<_> = datasets_of(n).iter().map(|d| d.name).collect();
        text += &format!("{n:width$}  {}\n", ds.join(", "));
    }
    text += &format!(
        "{} names from {} datasets; any other text also runs (the text encoder takes any text)\n",
        names.len(),
        DATASETS.len()
    );
    // A reader that stops early (`| head`) is not an error.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Invalid(format!("writing to standard output: {e}")))
        }
        _ => Ok(()),
    }
}

/// The warning for a text prompt that is not a training name: it still
/// runs, but a typo ("liverr") would otherwise go unnoticed.
pub fn unknown_text_warning(name: &str) -> Option<String> {
    (!is_known(name)).then(|| {
        format!(
            "{name:?} is not one of the names SegVol was trained on (`segvol categories` \
             lists them); nearest: {}. Running it anyway: the text encoder takes any text.",
            nearest(name, 3).join(", ")
        )
    })
}
