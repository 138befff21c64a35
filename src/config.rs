//! Model geometry. The official checkpoint fixes every number here except the
//! input size and patch size, which HF's `config.json` states; the `tiny`
//! config of the parity fixtures shrinks the input and the layer counts.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    /// Network input (D, H, W).
    pub spatial_size: [usize; 3],
    /// ViT patch (D, H, W).
    pub patch_size: [usize; 3],
    pub vit_layers: usize,
    pub hidden_size: usize,
    pub vit_mlp_dim: usize,
    pub vit_heads: usize,
    pub clip_layers: usize,
    pub clip_width: usize,
    pub clip_heads: usize,
    pub clip_mlp: usize,
    pub clip_vocab: usize,
    pub clip_max_positions: usize,
    pub decoder_depth: usize,
    pub decoder_heads: usize,
    pub decoder_mlp: usize,
    pub decoder_attn_downsample: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            spatial_size: [32, 256, 256],
            patch_size: [4, 16, 16],
            vit_layers: 12,
            hidden_size: 768,
            vit_mlp_dim: 3072,
            vit_heads: 12,
            clip_layers: 12,
            clip_width: 512,
            clip_heads: 8,
            clip_mlp: 2048,
            clip_vocab: 49408,
            clip_max_positions: 77,
            decoder_depth: 2,
            decoder_heads: 8,
            decoder_mlp: 2048,
            decoder_attn_downsample: 2,
        }
    }
}

impl ModelConfig {
    /// The fixtures' tiny model: input 16x64x64, 2 ViT and 2 CLIP layers.
    pub fn tiny() -> Self {
        ModelConfig {
            spatial_size: [16, 64, 64],
            vit_layers: 2,
            clip_layers: 2,
            ..Self::default()
        }
    }

    /// `default` or `tiny`.
    pub fn named(name: &str) -> Result<Self> {
        match name {
            "default" => Ok(Self::default()),
            "tiny" => Ok(Self::tiny()),
            other => Err(Error::Config(format!(
                "unknown config {other:?} (expected default or tiny)"
            ))),
        }
    }

    /// Reads a `config.json` (HF's, which states only sizes, or a full one).
    /// Unknown keys are ignored, so HF's `architectures`, `torch_dtype`, ...
    /// pass through.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: ModelConfig = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        for a in 0..3 {
            if self.patch_size[a] == 0
                || self.spatial_size[a] == 0
                || self.spatial_size[a] % self.patch_size[a] != 0
            {
                return Err(Error::Config(format!(
                    "spatial_size {:?} is not a multiple of patch_size {:?}",
                    self.spatial_size, self.patch_size
                )));
            }
        }
        let checks = [
            (self.vit_heads, self.hidden_size, "vit_heads"),
            (self.clip_heads, self.clip_width, "clip_heads"),
            (self.decoder_heads, self.hidden_size, "decoder_heads"),
        ];
        for (heads, width, name) in checks {
            if heads == 0 || width % heads != 0 {
                return Err(Error::Config(format!(
                    "{name} {heads} does not divide width {width}"
                )));
            }
        }
        if self.decoder_attn_downsample == 0
            || (self.hidden_size / self.decoder_attn_downsample) % self.decoder_heads != 0
        {
            return Err(Error::Config(
                "decoder_attn_downsample does not fit the head count".into(),
            ));
        }
        Ok(())
    }

    /// Token grid (D, H, W) of the image encoder.
    pub fn grid(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.spatial_size[a] / self.patch_size[a])
    }
    pub fn num_tokens(&self) -> usize {
        self.grid().iter().product()
    }
    pub fn patch_volume(&self) -> usize {
        self.patch_size.iter().product()
    }
    /// Grid after the first transposed conv (2x the token grid).
    pub fn upscale1_grid(&self) -> [usize; 3] {
        self.grid().map(|g| g * 2)
    }
    /// Grid of the low-resolution mask (4x the token grid).
    pub fn lowres_grid(&self) -> [usize; 3] {
        self.grid().map(|g| g * 4)
    }
    /// Channels after the first / second transposed conv.
    pub fn upscale_channels(&self) -> [usize; 2] {
        [self.hidden_size / 4, self.hidden_size / 8]
    }
    pub fn decoder_attn_dim(&self) -> usize {
        self.hidden_size / self.decoder_attn_downsample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_geometry() {
        let c = ModelConfig::default();
        assert_eq!(c.grid(), [8, 16, 16]);
        assert_eq!(c.num_tokens(), 2048);
        assert_eq!(c.lowres_grid(), [32, 64, 64]);
        assert_eq!(c.upscale_channels(), [192, 96]);
        c.validate().unwrap();
    }

    #[test]
    fn hf_config_json_is_accepted() {
        let text = r#"{"architectures":["SegVolModel"],"model_type":"segvol","patch_size":[4,16,16],
            "spatial_size":[32,256,256],"test_mode":true,"torch_dtype":"float32","transformers_version":"4.18.0"}"#;
        let c: ModelConfig = serde_json::from_str(text).unwrap();
        assert_eq!(c, ModelConfig::default());
    }

    #[test]
    fn fixture_tiny_matches() {
        let text = r#"{"spatial_size":[16,64,64],"patch_size":[4,16,16],"vit_layers":2,"clip_layers":2,
            "hidden_size":768,"feat_shape":[4,4,4],"n_params":70891984}"#;
        let c: ModelConfig = serde_json::from_str(text).unwrap();
        assert_eq!(c, ModelConfig::tiny());
        assert_eq!(c.grid(), [4, 4, 4]);
    }

    #[test]
    fn bad_sizes_are_refused() {
        let c = ModelConfig {
            spatial_size: [30, 256, 256],
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }
}
