//! `segvol inspect WEIGHTS`: what a weight file holds and whether it is a
//! SegVol checkpoint, in a form a person can read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::check::{detect_config, params_per_module};
use crate::weights::{Checkpoint, Format};

#[derive(Clone, Debug)]
pub struct InspectReport {
    pub path: PathBuf,
    pub format: Format,
    pub tensors: usize,
    /// Values per top-level module (`image_encoder`, ...).
    pub params: BTreeMap<String, usize>,
    /// dtype name → tensor count.
    pub dtypes: BTreeMap<&'static str, usize>,
    pub stripped_prefixes: Vec<String>,
    pub container: Option<String>,
    /// safetensors `__metadata__`.
    pub metadata: Vec<(String, String)>,
    /// Keys dropped because the network never reads them.
    pub ignored: Vec<String>,
    /// The detected config, or why none could be detected.
    pub config: std::result::Result<ModelConfig, String>,
    /// Problems against the detected config; empty when it checks out.
    pub problems: Vec<String>,
}

impl InspectReport {
    /// Inspects an opened checkpoint. Never fails: problems are reported.
    pub fn of(ck: &Checkpoint) -> InspectReport {
        let mut dtypes = BTreeMap::new();
        for name in ck.names() {
            if let Some(e) = ck.entry(name) {
                *dtypes.entry(e.dtype.name()).or_insert(0) += 1;
            }
        }
        let config = detect_config(ck).map_err(|e| e.to_string());
        let problems = match &config {
            Ok(cfg) => ck.check_report(cfg).problems(),
            Err(e) => vec![e.clone()],
        };
        let info = ck.load_info();
        InspectReport {
            path: ck.path().to_path_buf(),
            format: ck.format(),
            tensors: ck.len(),
            params: params_per_module(ck),
            dtypes,
            stripped_prefixes: info.stripped_prefixes.clone(),
            container: info.container.clone(),
            metadata: info.metadata.clone(),
            ignored: info.ignored.clone(),
            config,
            problems,
        }
    }

    /// Opens and inspects `path`; fails only when the file cannot be parsed.
    pub fn open(path: &Path) -> Result<InspectReport> {
        Ok(InspectReport::of(&Checkpoint::open(path)?))
    }

    pub fn is_ok(&self) -> bool {
        self.config.is_ok() && self.problems.is_empty()
    }
}

/// Names the config when it equals a built-in one.
fn config_name(cfg: &ModelConfig) -> String {
    if *cfg == ModelConfig::default() {
        "default".into()
    } else if *cfg == ModelConfig::tiny() {
        "tiny".into()
    } else {
        format!(
            "custom (input {:?}, patch {:?}, {} ViT layers, {} CLIP layers)",
            cfg.spatial_size, cfg.patch_size, cfg.vit_layers, cfg.clip_layers
        )
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = match self.format {
            Format::Safetensors => "safetensors",
            Format::TorchZip => "torch zip (torch.save)",
            Format::Memory => "in memory",
        };
        writeln!(f, "path:     {}", self.path.display())?;
        writeln!(f, "format:   {format}")?;
        if let Some(c) = &self.container {
            writeln!(f, "state:    {c}")?;
        }
        if !self.stripped_prefixes.is_empty() {
            writeln!(
                f,
                "prefix:   {} (stripped)",
                self.stripped_prefixes.join(", ")
            )?;
        }
        for (k, v) in &self.metadata {
            writeln!(f, "metadata: {k} = {v}")?;
        }
        writeln!(f, "tensors:  {}", self.tensors)?;
        let total: usize = self.params.values().sum();
        writeln!(f, "values:   {}", thousands(total))?;
        for (m, n) in &self.params {
            writeln!(f, "  {m:<16} {:>14}", thousands(*n))?;
        }
        let d: Vec<String> = self
            .dtypes
            .iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect();
        writeln!(f, "dtypes:   {}", d.join(", "))?;
        if !self.ignored.is_empty() {
            writeln!(
                f,
                "ignored:  {} keys never read by the network",
                self.ignored.len()
            )?;
            for k in &self.ignored {
                writeln!(f, "  {k}")?;
            }
        }
        match (&self.config, self.problems.is_empty()) {
            (Ok(cfg), true) => write!(f, "OK: SegVol checkpoint, config {}", config_name(cfg)),
            (Ok(cfg), false) => {
                writeln!(f, "NOT OK for config {}:", config_name(cfg))?;
                for (i, p) in self.problems.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "  {p}")?;
                }
                Ok(())
            }
            (Err(e), _) => write!(f, "NOT OK: no config detected: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(180_891_216), "180,891,216");
    }
}
