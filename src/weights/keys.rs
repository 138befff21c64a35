//! Key normalisation: the HF checkpoint wraps the network as `SegVolModel.model`
//! (keys `model.…`), the GitHub one was saved from DataParallel (keys
//! `module.…`); both map to the bare state-dict names of `expected`. Keys the
//! network never reads (`position_ids`, `prompt_encoder.mask_downscaling.*`)
//! are dropped here and remembered for `segvol inspect`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::weights::expected::is_ignored_key;

/// Wrapper prefixes, outermost first. A DataParallel-wrapped HF model would
/// stack them (`module.model.`), so they are stripped repeatedly.
const PREFIXES: [&str; 2] = ["module.", "model."];

/// What normalisation did to a file's keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadInfo {
    /// Distinct prefixes removed, e.g. `["model."]`.
    pub stripped_prefixes: Vec<String>,
    /// Normalised names of the keys dropped as never read by the network.
    pub ignored: Vec<String>,
    /// Where in the file the state dict sat, when it was not the top level
    /// (e.g. `'model' entry; other entries: epoch`).
    pub container: Option<String>,
    /// A safetensors header's `__metadata__`, sorted by key.
    pub metadata: Vec<(String, String)>,
}

/// The key without its wrapper prefixes, and the prefix string removed.
pub fn strip_prefixes(key: &str) -> (&str, &str) {
    let mut rest = key;
    while let Some(r) = PREFIXES.iter().find_map(|p| rest.strip_prefix(p)) {
        rest = r;
    }
    (rest, &key[..key.len() - rest.len()])
}

/// Normalises `(file key, value)` pairs: strips prefixes, drops ignored keys,
/// and refuses two file keys that collapse onto one name.
pub fn normalise<T>(path: &Path, raw: Vec<(String, T)>) -> Result<(BTreeMap<String, T>, LoadInfo)> {
    let mut out = BTreeMap::new();
    let mut info = LoadInfo::default();
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in raw {
        let (name, prefix) = strip_prefixes(&key);
        if !prefix.is_empty() && !info.stripped_prefixes.iter().any(|p| p == prefix) {
            info.stripped_prefixes.push(prefix.to_string());
        }
        if name.is_empty() {
            return Err(Error::checkpoint(
                path,
                format!("key {key:?} is only a prefix, no tensor name"),
            ));
        }
        if let Some(first) = origin.get(name) {
            return Err(Error::checkpoint(
                path,
                format!("keys {first:?} and {key:?} both name tensor {name}"),
            ));
        }
        origin.insert(name.to_string(), key.clone());
        if is_ignored_key(name) {
            info.ignored.push(name.to_string());
            continue;
        }
        out.insert(name.to_string(), value);
    }
    Ok((out, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hf_github_and_stacked_prefixes() {
        assert_eq!(
            strip_prefixes("model.image_encoder.norm.weight"),
            ("image_encoder.norm.weight", "model.")
        );
        assert_eq!(
            strip_prefixes("module.mask_decoder.iou_token.weight"),
            ("mask_decoder.iou_token.weight", "module.")
        );
        assert_eq!(
            strip_prefixes("module.model.text_encoder.dim_align.bias"),
            ("text_encoder.dim_align.bias", "module.model.")
        );
        assert_eq!(
            strip_prefixes("image_encoder.norm.bias"),
            ("image_encoder.norm.bias", "")
        );
    }

    #[test]
    fn drops_ignored_and_records_them() {
        let raw = vec![
            ("model.a.weight".to_string(), 1),
            (
                "model.text_encoder.clip_text_model.text_model.embeddings.position_ids".to_string(),
                2,
            ),
            (
                "model.prompt_encoder.mask_downscaling.0.weight".to_string(),
                3,
            ),
        ];
        let (m, info) = normalise(Path::new("x"), raw).unwrap();
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            vec![("a.weight".to_string(), 1)]
        );
        assert_eq!(info.stripped_prefixes, vec!["model.".to_string()]);
        assert_eq!(info.ignored.len(), 2);
        assert!(info.ignored[0].ends_with("position_ids"));
    }

    #[test]
    fn collapsing_keys_are_refused() {
        let raw = vec![("model.a".to_string(), 1), ("module.a".to_string(), 2)];
        let err = normalise(Path::new("x"), raw).unwrap_err().to_string();
        assert!(
            err.contains("\"model.a\"") && err.contains("\"module.a\""),
            "{err}"
        );
        let err = normalise(Path::new("x"), vec![("model.".to_string(), 1)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("only a prefix"), "{err}");
    }
}
