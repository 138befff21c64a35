//! The fixtures' synthetic weights, "synth v2" (`fixtures/README.md`): every
//! float tensor is a deterministic function of its name and shape, so tests
//! and benchmarks need no weight file. Meaningless for segmentation.

use rayon::prelude::*;

use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::expected::expected_tensors;
use crate::weights::Checkpoint;

/// Initialisation class of a tensor (first match wins, as in the README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Ln,
    Gauss,
    Qk,
    Emb,
    VitMlpB1,
    VitMlpW2,
    Default,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Ln => "LN",
            Class::Gauss => "GAUSS",
            Class::Qk => "QK",
            Class::Emb => "EMB",
            Class::VitMlpB1 => "VIT_MLP_B1",
            Class::VitMlpW2 => "VIT_MLP_W2",
            Class::Default => "DEFAULT",
        }
    }
}

fn is_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// `norm\d*`, `layer_norm\d*`, `final_layer_norm`, `norm_final_attn` as a whole
/// dotted component.
fn is_norm_component(c: &str) -> bool {
    if c == "final_layer_norm" || c == "norm_final_attn" {
        return true;
    }
    if let Some(rest) = c.strip_prefix("layer_norm") {
        return is_digits(rest);
    }
    if let Some(rest) = c.strip_prefix("norm") {
        return is_digits(rest);
    }
    false
}

/// `^image_encoder\.blocks\.\d+\.mlp\.{layer}\.{param}$`
fn is_vit_mlp(key: &str, layer: &str, param: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    parts.len() == 6
        && parts[0] == "image_encoder"
        && parts[1] == "blocks"
        && !parts[2].is_empty()
        && is_digits(parts[2])
        && parts[3] == "mlp"
        && parts[4] == layer
        && parts[5] == param
}

pub fn classify(key: &str) -> Class {
    let parts: Vec<&str> = key.split('.').collect();
    let last = parts.last().copied().unwrap_or("");
    let prev = if parts.len() >= 2 {
        parts[parts.len() - 2]
    } else {
        ""
    };

    if last == "weight" && is_norm_component(prev) {
        return Class::Ln;
    }
    if [
        "output_upscaling.1.weight",
        "mask_downscaling.1.weight",
        "mask_downscaling.4.weight",
    ]
    .iter()
    .any(|s| key.ends_with(s))
    {
        return Class::Ln;
    }
    if key.ends_with("positional_encoding_gaussian_matrix") {
        return Class::Gauss;
    }
    // The regex needs a dot before the projection name.
    if parts.len() >= 3 && last == "weight" && matches!(prev, "qkv" | "q_proj" | "k_proj") {
        return Class::Qk;
    }
    let emb_suffixes = [
        "position_embeddings",
        "token_embedding.weight",
        "position_embedding.weight",
        "not_a_point_embed.weight",
        "no_mask_embed.weight",
        "iou_token.weight",
        "mask_tokens.weight",
    ];
    if emb_suffixes.iter().any(|s| key.ends_with(s)) {
        return Class::Emb;
    }
    if parts.len() >= 3
        && last == "weight"
        && is_digits(prev)
        && !prev.is_empty()
        && parts[parts.len() - 3].ends_with("point_embeddings")
    {
        return Class::Emb;
    }
    if is_vit_mlp(key, "linear1", "bias") {
        return Class::VitMlpB1;
    }
    if is_vit_mlp(key, "linear2", "weight") {
        return Class::VitMlpW2;
    }
    Class::Default
}

pub fn fnv1a64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[inline]
fn splitmix64(mut z: u64) -> u64 {
    z ^= z >> 30;
    z = z.wrapping_mul(0xBF58476D1CE4E5B9);
    z ^= z >> 27;
    z = z.wrapping_mul(0x94D049BB133111EB);
    z ^= z >> 31;
    z
}

/// The `n` values of tensor `key` with shape `shape`.
pub fn synth_tensor(key: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let class = classify(key);
    let fan_in = shape.get(1).copied().unwrap_or(1) as f64;
    let sqrt3 = 3.0f64.sqrt();
    // value = offset + scale * u, all in f64, one rounding to f32.
    let (offset, scale) = match class {
        Class::Ln => (1.0, 0.1),
        Class::VitMlpB1 => (-2.0, 0.02 * sqrt3),
        Class::Gauss => (0.0, 1.0 * sqrt3),
        Class::Qk => (0.0, (2.0 / fan_in.sqrt()) * sqrt3),
        Class::Emb => (0.0, 0.5 * sqrt3),
        Class::VitMlpW2 => (0.0, (8.0 / fan_in.sqrt()) * sqrt3),
        Class::Default => (0.0, 0.02 * sqrt3),
    };
    let h = fnv1a64(key);
    let mut out = vec![0f32; n];
    out.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let base = ci << 16;
            for (j, o) in chunk.iter_mut().enumerate() {
                let i = (base + j) as u64;
                let z = h.wrapping_add((i + 1).wrapping_mul(0x9E3779B97F4A7C15));
                let x = splitmix64(z);
                let u = ((x >> 40) as f64) / 16_777_216.0 * 2.0 - 1.0;
                *o = if offset == 0.0 {
                    (scale * u) as f32
                } else {
                    (offset + scale * u) as f32
                };
            }
        });
    out
}

/// Every float tensor of the config's state dict (mask_downscaling included),
/// as `(name, shape, values)` in state-dict order.
pub fn synth_state_dict(cfg: &ModelConfig) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    expected_tensors(cfg)
        .into_iter()
        .map(|e| {
            let v = synth_tensor(&e.name, &e.shape);
            (e.name, e.shape, v)
        })
        .collect()
}

/// An in-memory checkpoint holding the synthetic weights of `cfg`.
pub fn synth_checkpoint(cfg: &ModelConfig) -> Result<Checkpoint> {
    Checkpoint::from_f32_tensors(synth_state_dict(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_hashes() {
        assert_eq!(fnv1a64("image_encoder.norm.weight"), 7369449390778106675);
        assert_eq!(
            fnv1a64("image_encoder.blocks.0.attn.qkv.weight"),
            6369157838000570316
        );
    }

    #[test]
    fn reference_values() {
        let cases: [(&str, &[usize], Class, [u32; 5]); 7] = [
            (
                "image_encoder.blocks.0.attn.qkv.weight",
                &[2304, 768],
                Class::Qk,
                [0xbd0d37e0, 0xbdcdeaa8, 0xbcaa25c0, 0xbdbd6a80, 0xbd816626],
            ),
            (
                "prompt_encoder.point_embeddings.1.weight",
                &[1, 768],
                Class::Emb,
                [0xbf1651a6, 0x3e695050, 0x3f156e77, 0x3f0026e7, 0xbf0e42d6],
            ),
            (
                "image_encoder.blocks.0.norm1.weight",
                &[768],
                Class::Ln,
                [0x3f6b5336, 0x3f8b6306, 0x3f7ede96, 0x3f84545b, 0x3f7334a5],
            ),
            (
                "image_encoder.blocks.0.mlp.linear1.bias",
                &[3072],
                Class::VitMlpB1,
                [0xc0011655, 0xbffe29a7, 0xbffc50bc, 0xbffe996c, 0xc0014b3b],
            ),
            (
                "image_encoder.blocks.0.mlp.linear2.weight",
                &[768, 3072],
                Class::VitMlpW2,
                [0x3d847cc8, 0xbdf7dbf4, 0xbe0161a8, 0x3cf6cb70, 0xbda91230],
            ),
            (
                "mask_decoder.transformer.layers.0.mlp.lin1.weight",
                &[2048, 768],
                Class::Default,
                [0xbcedc0e6, 0x3bdfd2aa, 0xbc2082a7, 0x394c61ca, 0x3c9c9c1e],
            ),
            (
                "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
                &[3, 384],
                Class::Gauss,
                [0x3fca047e, 0xbe31de28, 0xbe639f47, 0x3d9da77d, 0xbfa4a1ce],
            ),
        ];
        for (key, shape, class, bits) in cases {
            assert_eq!(classify(key), class, "{key}");
            let v = synth_tensor(key, shape);
            let got: Vec<u32> = v[..5].iter().map(|x| x.to_bits()).collect();
            assert_eq!(got, bits, "{key}");
        }
    }

    #[test]
    fn classes_of_tricky_keys() {
        assert_eq!(
            classify("mask_decoder.transformer.norm_final_attn.weight"),
            Class::Ln
        );
        assert_eq!(
            classify("mask_decoder.transformer.norm_final_attn.bias"),
            Class::Default
        );
        assert_eq!(
            classify("text_encoder.clip_text_model.text_model.final_layer_norm.weight"),
            Class::Ln
        );
        assert_eq!(
            classify("mask_decoder.output_upscaling.1.weight"),
            Class::Ln
        );
        assert_eq!(
            classify("mask_decoder.transformer.layers.0.self_attn.v_proj.weight"),
            Class::Default
        );
        assert_eq!(
            classify("image_encoder.patch_embedding.position_embeddings"),
            Class::Emb
        );
        assert_eq!(
            classify(
                "text_encoder.clip_text_model.text_model.embeddings.position_embedding.weight"
            ),
            Class::Emb
        );
        assert_eq!(
            classify("image_encoder.blocks.11.mlp.linear1.weight"),
            Class::Default
        );
    }
}
