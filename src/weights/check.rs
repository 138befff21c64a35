//! Does a checkpoint hold the SegVol network for a config? And which config
//! does it hold?

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::expected::{expected_tensors, is_ignored_key};
use crate::weights::Checkpoint;

/// How many names each problem kind lists.
const SHOW: usize = 3;

fn tensors(n: usize) -> &'static str {
    if n == 1 {
        "tensor"
    } else {
        "tensors"
    }
}

/// Everything wrong with a checkpoint for a config, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Tensors the network reads (ignored keys excluded).
    pub expected: usize,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// `(name, found shape, expected shape)`.
    pub wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// `(name, dtype name)`.
    pub not_float: Vec<(String, &'static str)>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.wrong_shape.is_empty()
            && self.not_float.is_empty()
    }

    /// One line per problem kind, with counts and the first few names.
    pub fn problems(&self) -> Vec<String> {
        fn first<T>(v: &[T], f: impl Fn(&T) -> String) -> String {
            let mut s: Vec<String> = v.iter().take(SHOW).map(f).collect();
            if v.len() > SHOW {
                s.push("...".into());
            }
            s.join(", ")
        }
        let mut out = Vec::new();
        if !self.missing.is_empty() {
            out.push(format!(
                "{} of {} tensors missing, first: {}",
                self.missing.len(),
                self.expected,
                first(&self.missing, |s| s.clone())
            ));
        }
        if !self.unexpected.is_empty() {
            out.push(format!(
                "{} unexpected {}, first: {}",
                self.unexpected.len(),
                tensors(self.unexpected.len()),
                first(&self.unexpected, |s| s.clone())
            ));
        }
        if !self.wrong_shape.is_empty() {
            out.push(format!(
                "{} {} of the wrong shape, first: {}",
                self.wrong_shape.len(),
                tensors(self.wrong_shape.len()),
                first(&self.wrong_shape, |(n, got, want)| format!(
                    "{n} is {got:?}, expected {want:?}"
                ))
            ));
        }
        if !self.not_float.is_empty() {
            out.push(format!(
                "{} {} not floating point, first: {}",
                self.not_float.len(),
                tensors(self.not_float.len()),
                first(&self.not_float, |(n, d)| format!("{n} is {d}"))
            ));
        }
        out
    }
}

impl Checkpoint {
    /// Compares the checkpoint with the state dict `cfg` implies. Ignored
    /// keys may be present or absent.
    pub fn check_report(&self, cfg: &ModelConfig) -> CheckReport {
        let expected = expected_tensors(cfg);
        let mut report = CheckReport {
            expected: expected.iter().filter(|e| !e.ignored).count(),
            ..Default::default()
        };
        let mut known = BTreeSet::new();
        for e in &expected {
            known.insert(e.name.as_str());
            if e.ignored {
                continue;
            }
            match self.entry(&e.name) {
                None => report.missing.push(e.name.clone()),
                Some(got) => {
                    if got.shape != e.shape {
                        report.wrong_shape.push((
                            e.name.clone(),
                            got.shape.clone(),
                            e.shape.clone(),
                        ));
                    }
                    if !got.dtype.is_float() {
                        report.not_float.push((e.name.clone(), got.dtype.name()));
                    }
                }
            }
        }
        report.unexpected = self
            .names()
            .filter(|n| !known.contains(n) && !is_ignored_key(n))
            .map(str::to_string)
            .collect();
        report
    }

    /// `Ok` when the checkpoint holds exactly the network for `cfg`, else
    /// [`Error::NotSegVol`] with counts and the first names of each problem.
    pub fn check(&self, cfg: &ModelConfig) -> Result<()> {
        let r = self.check_report(cfg);
        if r.is_ok() {
            Ok(())
        } else {
            Err(Error::NotSegVol(r.problems().join("; ")))
        }
    }
}

/// Layer indices `i` of keys `{prefix}{i}.…`.
fn layer_indices<'a>(names: impl Iterator<Item = &'a str>, prefix: &str) -> BTreeSet<usize> {
    names
        .filter_map(|n| n.strip_prefix(prefix)?.split('.').next()?.parse().ok())
        .collect()
}

fn layer_count(ck: &Checkpoint, prefix: &str, what: &str) -> Result<usize> {
    let idx = layer_indices(ck.names(), prefix);
    let n = idx.len();
    if let Some(&max) = idx.iter().next_back() {
        if max + 1 != n {
            let gap = (0..max).find(|i| !idx.contains(i)).unwrap_or(max);
            return Err(Error::NotSegVol(format!(
                "{what} layers are not numbered 0..{}: layer {gap} is missing",
                max + 1
            )));
        }
    }
    Ok(n)
}

/// The config a checkpoint was trained with. Rule:
/// * `vit_layers` and `clip_layers` count the `image_encoder.blocks.{i}` and
///   `…text_model.encoder.layers.{i}` indices present (they must be 0..n);
///   the checkpoint is the authority on what it contains.
/// * Every other field, the input `spatial_size` and `patch_size` included,
///   comes from a `config.json` beside the weight file when there is one
///   (HF ships one stating the sizes), else from the default config, except:
/// * without a `config.json`, `spatial_size` is the default `patch_size`
///   times the token grid read from `mask_decoder.output_upscaling.1.weight`
///   (its trailing dims are twice the grid), when that tensor is present.
///   The patch size itself is not recoverable from shapes (only its volume
///   is), so it stays the default.
///
/// The result is validated but not checked against the tensors: call
/// [`Checkpoint::check`] with it.
pub fn detect_config(ck: &Checkpoint) -> Result<ModelConfig> {
    let json = ck
        .path()
        .parent()
        .map(|d| d.join("config.json"))
        .filter(|p| p.is_file());
    let mut cfg = match &json {
        Some(p) => ModelConfig::from_json_file(p)?,
        None => ModelConfig::default(),
    };
    cfg.vit_layers = layer_count(ck, "image_encoder.blocks.", "image encoder")?;
    cfg.clip_layers = layer_count(
        ck,
        "text_encoder.clip_text_model.text_model.encoder.layers.",
        "text encoder",
    )?;
    if json.is_none() {
        if let Some(e) = ck.entry("mask_decoder.output_upscaling.1.weight") {
            if let [_, d, h, w] = e.shape[..] {
                if [d, h, w].iter().all(|&g| g > 0 && g % 2 == 0) {
                    let grid = [d / 2, h / 2, w / 2];
                    cfg.spatial_size = [0, 1, 2].map(|a| grid[a] * cfg.patch_size[a]);
                }
            }
        }
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Parameters (values) per top-level module, e.g. `image_encoder`.
pub fn params_per_module(ck: &Checkpoint) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for name in ck.names() {
        let module = name.split('.').next().unwrap_or(name).to_string();
        let n = ck.entry(name).map_or(0, |e| e.numel());
        *out.entry(module).or_insert(0) += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_list_counts_and_first_names() {
        let r = CheckReport {
            expected: 464,
            missing: (0..5).map(|i| format!("m{i}")).collect(),
            wrong_shape: vec![("w".into(), vec![2], vec![3])],
            ..Default::default()
        };
        let p = r.problems();
        assert_eq!(p[0], "5 of 464 tensors missing, first: m0, m1, m2, ...");
        assert_eq!(
            p[1],
            "1 tensor of the wrong shape, first: w is [2], expected [3]"
        );
        assert!(!r.is_ok());
    }

    #[test]
    fn layer_indices_parse_only_numbers() {
        let names = [
            "image_encoder.blocks.0.norm1.weight",
            "image_encoder.blocks.1.norm1.weight",
            "image_encoder.blocks.x.norm1.weight",
            "image_encoder.norm.weight",
        ];
        let idx = layer_indices(names.iter().copied(), "image_encoder.blocks.");
        assert_eq!(idx.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    }
}
