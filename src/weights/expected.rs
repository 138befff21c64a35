//! The state dict SegVol's reference code builds, for a given config
//! (docs/REFERENCE.md §3): every floating-point tensor with its shape, in state-dict
//! order. Names carry no `model.` / `module.` prefix.

use crate::config::ModelConfig;

/// One expected tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    /// Present in the reference state dict but never read at inference and
    /// allowed to be absent: the SAM leftover `prompt_encoder.mask_downscaling`.
    pub ignored: bool,
}

/// Keys that may appear in a checkpoint and are dropped without comment.
pub fn is_ignored_key(name: &str) -> bool {
    name.ends_with("position_ids") || name.starts_with("prompt_encoder.mask_downscaling.")
}

/// All floating-point tensors of the reference state dict (474 for the
/// default config), in the reference's registration order.
pub fn expected_tensors(cfg: &ModelConfig) -> Vec<ExpectedTensor> {
    let mut v = Vec::new();
    let mut push = |name: String, shape: &[usize]| {
        let ignored = is_ignored_key(&name);
        v.push(ExpectedTensor {
            name,
            shape: shape.to_vec(),
            ignored,
        });
    };
    let c = cfg.hidden_size;
    let n = cfg.num_tokens();

    // image encoder (MONAI ViT)
    let ie = "image_encoder";
    push(
        format!("{ie}.patch_embedding.position_embeddings"),
        &[1, n, c],
    );
    push(
        format!("{ie}.patch_embedding.patch_embeddings.1.weight"),
        &[c, cfg.patch_volume()],
    );
    push(
        format!("{ie}.patch_embedding.patch_embeddings.1.bias"),
        &[c],
    );
    for i in 0..cfg.vit_layers {
        let p = format!("{ie}.blocks.{i}");
        push(format!("{p}.mlp.linear1.weight"), &[cfg.vit_mlp_dim, c]);
        push(format!("{p}.mlp.linear1.bias"), &[cfg.vit_mlp_dim]);
        push(format!("{p}.mlp.linear2.weight"), &[c, cfg.vit_mlp_dim]);
        push(format!("{p}.mlp.linear2.bias"), &[c]);
        push(format!("{p}.norm1.weight"), &[c]);
        push(format!("{p}.norm1.bias"), &[c]);
        push(format!("{p}.attn.out_proj.weight"), &[c, c]);
        push(format!("{p}.attn.out_proj.bias"), &[c]);
        push(format!("{p}.attn.qkv.weight"), &[3 * c, c]);
        push(format!("{p}.norm2.weight"), &[c]);
        push(format!("{p}.norm2.bias"), &[c]);
    }
    push(format!("{ie}.norm.weight"), &[c]);
    push(format!("{ie}.norm.bias"), &[c]);

    // mask decoder
    let md = "mask_decoder";
    let ad = cfg.decoder_attn_dim();
    let attn = |push: &mut dyn FnMut(String, &[usize]), p: &str, inner: usize| {
        for proj in ["q_proj", "k_proj", "v_proj"] {
            push(format!("{p}.{proj}.weight"), &[inner, c]);
            push(format!("{p}.{proj}.bias"), &[inner]);
        }
        push(format!("{p}.out_proj.weight"), &[c, inner]);
        push(format!("{p}.out_proj.bias"), &[c]);
    };
    for l in 0..cfg.decoder_depth {
        let p = format!("{md}.transformer.layers.{l}");
        attn(&mut push, &format!("{p}.self_attn"), c);
        push(format!("{p}.norm1.weight"), &[c]);
        push(format!("{p}.norm1.bias"), &[c]);
        attn(&mut push, &format!("{p}.cross_attn_token_to_image"), ad);
        push(format!("{p}.norm2.weight"), &[c]);
        push(format!("{p}.norm2.bias"), &[c]);
        push(format!("{p}.mlp.lin1.weight"), &[cfg.decoder_mlp, c]);
        push(format!("{p}.mlp.lin1.bias"), &[cfg.decoder_mlp]);
        push(format!("{p}.mlp.lin2.weight"), &[c, cfg.decoder_mlp]);
        push(format!("{p}.mlp.lin2.bias"), &[c]);
        push(format!("{p}.norm3.weight"), &[c]);
        push(format!("{p}.norm3.bias"), &[c]);
        push(format!("{p}.norm4.weight"), &[c]);
        push(format!("{p}.norm4.bias"), &[c]);
        attn(&mut push, &format!("{p}.cross_attn_image_to_token"), ad);
    }
    attn(
        &mut push,
        &format!("{md}.transformer.final_attn_token_to_image"),
        ad,
    );
    push(format!("{md}.transformer.norm_final_attn.weight"), &[c]);
    push(format!("{md}.transformer.norm_final_attn.bias"), &[c]);
    push(format!("{md}.iou_token.weight"), &[1, c]);
    push(format!("{md}.mask_tokens.weight"), &[4, c]);
    let [c1, c2] = cfg.upscale_channels();
    let g1 = cfg.upscale1_grid();
    push(format!("{md}.output_upscaling.0.weight"), &[c, c1, 2, 2, 2]);
    push(format!("{md}.output_upscaling.0.bias"), &[c1]);
    push(
        format!("{md}.output_upscaling.1.weight"),
        &[c1, g1[0], g1[1], g1[2]],
    );
    push(
        format!("{md}.output_upscaling.1.bias"),
        &[c1, g1[0], g1[1], g1[2]],
    );
    push(
        format!("{md}.output_upscaling.3.weight"),
        &[c1, c2, 2, 2, 2],
    );
    push(format!("{md}.output_upscaling.3.bias"), &[c2]);
    for m in 0..4 {
        let p = format!("{md}.output_hypernetworks_mlps.{m}.layers");
        push(format!("{p}.0.weight"), &[c, c]);
        push(format!("{p}.0.bias"), &[c]);
        push(format!("{p}.1.weight"), &[c, c]);
        push(format!("{p}.1.bias"), &[c]);
        push(format!("{p}.2.weight"), &[c2, c]);
        push(format!("{p}.2.bias"), &[c2]);
    }
    let p = format!("{md}.iou_prediction_head.layers");
    push(format!("{p}.0.weight"), &[256, c]);
    push(format!("{p}.0.bias"), &[256]);
    push(format!("{p}.1.weight"), &[256, 256]);
    push(format!("{p}.1.bias"), &[256]);
    push(format!("{p}.2.weight"), &[4, 256]);
    push(format!("{p}.2.bias"), &[4]);
    push(
        format!("{md}.txt_align_upscaled_embedding.weight"),
        &[c2, c],
    );
    push(format!("{md}.txt_align_upscaled_embedding.bias"), &[c2]);

    // prompt encoder
    let pe = "prompt_encoder";
    push(
        format!("{pe}.pe_layer.positional_encoding_gaussian_matrix"),
        &[3, c / 2],
    );
    for i in 0..4 {
        push(format!("{pe}.point_embeddings.{i}.weight"), &[1, c]);
    }
    push(format!("{pe}.not_a_point_embed.weight"), &[1, c]);
    let mdn = format!("{pe}.mask_downscaling");
    push(format!("{mdn}.0.weight"), &[4, 1, 2, 2]);
    push(format!("{mdn}.0.bias"), &[4]);
    push(format!("{mdn}.1.weight"), &[4]);
    push(format!("{mdn}.1.bias"), &[4]);
    push(format!("{mdn}.3.weight"), &[16, 4, 2, 2]);
    push(format!("{mdn}.3.bias"), &[16]);
    push(format!("{mdn}.4.weight"), &[16]);
    push(format!("{mdn}.4.bias"), &[16]);
    push(format!("{mdn}.6.weight"), &[c, 16, 1, 1]);
    push(format!("{mdn}.6.bias"), &[c]);
    push(format!("{pe}.no_mask_embed.weight"), &[1, c]);

    // text encoder (CLIP text tower + dim_align)
    let w = cfg.clip_width;
    let tm = "text_encoder.clip_text_model.text_model";
    push(
        format!("{tm}.embeddings.token_embedding.weight"),
        &[cfg.clip_vocab, w],
    );
    push(
        format!("{tm}.embeddings.position_embedding.weight"),
        &[cfg.clip_max_positions, w],
    );
    for i in 0..cfg.clip_layers {
        let p = format!("{tm}.encoder.layers.{i}");
        for proj in ["k_proj", "v_proj", "q_proj", "out_proj"] {
            push(format!("{p}.self_attn.{proj}.weight"), &[w, w]);
            push(format!("{p}.self_attn.{proj}.bias"), &[w]);
        }
        push(format!("{p}.layer_norm1.weight"), &[w]);
        push(format!("{p}.layer_norm1.bias"), &[w]);
        push(format!("{p}.mlp.fc1.weight"), &[cfg.clip_mlp, w]);
        push(format!("{p}.mlp.fc1.bias"), &[cfg.clip_mlp]);
        push(format!("{p}.mlp.fc2.weight"), &[w, cfg.clip_mlp]);
        push(format!("{p}.mlp.fc2.bias"), &[w]);
        push(format!("{p}.layer_norm2.weight"), &[w]);
        push(format!("{p}.layer_norm2.bias"), &[w]);
    }
    push(format!("{tm}.final_layer_norm.weight"), &[w]);
    push(format!("{tm}.final_layer_norm.bias"), &[w]);
    push("text_encoder.dim_align.weight".into(), &[c, w]);
    push("text_encoder.dim_align.bias".into(), &[c]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_counts_match_spec() {
        let cfg = ModelConfig::default();
        let t = expected_tensors(&cfg);
        assert_eq!(t.len(), 474);
        assert_eq!(t.iter().filter(|e| !e.ignored).count(), 464);
        let count = |prefix: &str| t.iter().filter(|e| e.name.starts_with(prefix)).count();
        assert_eq!(count("image_encoder."), 137);
        assert_eq!(count("mask_decoder."), 122);
        assert_eq!(count("prompt_encoder."), 17);
        assert_eq!(count("text_encoder."), 198);
        let params: usize = t.iter().map(|e| e.shape.iter().product::<usize>()).sum();
        // docs/REFERENCE.md §2.6: 180,891,216 values.
        assert_eq!(params, 180_891_216);
        let ie: usize = t
            .iter()
            .filter(|e| e.name.starts_with("image_encoder."))
            .map(|e| e.shape.iter().product::<usize>())
            .sum();
        assert_eq!(ie, 87_388_416);
    }

    #[test]
    fn tiny_param_count_matches_fixture() {
        let t = expected_tensors(&ModelConfig::tiny());
        // The fixture counts parameters only: the Gaussian PE matrix is a buffer.
        let params: usize = t
            .iter()
            .filter(|e| !e.name.ends_with("gaussian_matrix"))
            .map(|e| e.shape.iter().product::<usize>())
            .sum();
        assert_eq!(params, 70_891_984);
        assert_eq!(t.len(), 204);
    }
}
