//! MONAI 0.9.0's ViT as SegVol builds it (docs/REFERENCE.md §2.1): perceptron patch
//! embedding, learned position embedding, pre-norm blocks with a bias-free
//! packed qkv projection, exact-erf GELU MLP, and a final LayerNorm. No CLS
//! token. Output: tokens `[B, N, C]` in D-major raster order.

use super::loader::{LayerNorm, Linear, Loader};
use crate::backend::{Activation, AttnOperand, AttnSpec, Backend};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

struct Block<B: Backend> {
    norm1: LayerNorm<B>,
    qkv: Linear<B>,
    out_proj: Linear<B>,
    norm2: LayerNorm<B>,
    linear1: Linear<B>,
    linear2: Linear<B>,
}

pub struct ImageEncoder<B: Backend> {
    cfg: ModelConfig,
    patch_w: B::Tensor,
    patch_b: B::Tensor,
    pos: B::Tensor,
    blocks: Vec<Block<B>>,
    norm: LayerNorm<B>,
}

impl<B: Backend> ImageEncoder<B> {
    pub fn load(ld: &Loader<'_, B>, cfg: &ModelConfig) -> Result<Self> {
        let c = cfg.hidden_size;
        let p = "image_encoder";
        let blocks = (0..cfg.vit_layers)
            .map(|i| {
                let b = format!("{p}.blocks.{i}");
                Ok(Block {
                    norm1: ld.layer_norm(&format!("{b}.norm1"), c)?,
                    // MONAI 0.9.0 builds qkv with bias=False.
                    qkv: ld.linear(&format!("{b}.attn.qkv"), 3 * c, c, false)?,
                    out_proj: ld.linear(&format!("{b}.attn.out_proj"), c, c, true)?,
                    norm2: ld.layer_norm(&format!("{b}.norm2"), c)?,
                    linear1: ld.linear(&format!("{b}.mlp.linear1"), cfg.vit_mlp_dim, c, true)?,
                    linear2: ld.linear(&format!("{b}.mlp.linear2"), c, cfg.vit_mlp_dim, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ImageEncoder {
            cfg: cfg.clone(),
            patch_w: ld.tensor(
                &format!("{p}.patch_embedding.patch_embeddings.1.weight"),
                &[c, cfg.patch_volume()],
            )?,
            patch_b: ld.tensor(
                &format!("{p}.patch_embedding.patch_embeddings.1.bias"),
                &[c],
            )?,
            pos: ld.tensor_as(
                &format!("{p}.patch_embedding.position_embeddings"),
                &[1, cfg.num_tokens(), c],
                &[cfg.num_tokens(), c],
            )?,
            blocks,
            norm: ld.layer_norm(&format!("{p}.norm"), c)?,
        })
    }

    /// Patch embedding plus position embedding: `[B, 1, D, H, W]` → `[B, N, C]`.
    pub fn embed_patches(&self, be: &B, image: &B::Tensor) -> Result<B::Tensor> {
        let s = be.shape(image);
        let want = self.cfg.spatial_size;
        if s.len() != 5 || s[1] != 1 || s[2..] != want {
            return Err(Error::shape(format!(
                "image encoder input {s:?}, expected [B, 1, {}, {}, {}]",
                want[0], want[1], want[2]
            )));
        }
        be.patch_embed(
            image,
            &self.patch_w,
            &self.patch_b,
            &self.pos,
            self.cfg.patch_size,
        )
    }

    /// The full encoder: `[B, 1, D, H, W]` in [0, 1] → tokens `[B, N, C]`.
    pub fn forward(&self, be: &B, image: &B::Tensor) -> Result<B::Tensor> {
        let mut x = self.embed_patches(be, image)?;
        for blk in &self.blocks {
            x = self.block(be, blk, x)?;
        }
        self.norm.forward(be, &x)
    }

    fn block(&self, be: &B, blk: &Block<B>, x: B::Tensor) -> Result<B::Tensor> {
        let cfg = &self.cfg;
        let c = cfg.hidden_size;
        let batch = be.shape(&x)[0];
        let n = cfg.num_tokens();
        let h = blk.norm1.forward(be, &x)?;
        let qkv = blk.qkv.forward(be, &h, Activation::None)?;
        // The 3c outputs split as (qkv, head, dim): q, k, v are column blocks.
        let spec = AttnSpec {
            batch,
            heads: cfg.vit_heads,
            head_dim: c / cfg.vit_heads,
            q_len: n,
            kv_len: n,
            scale: ((c / cfg.vit_heads) as f32).powf(-0.5),
            causal: false,
        };
        let a = be.attention(
            AttnOperand::at(&qkv, 0),
            AttnOperand::at(&qkv, c),
            AttnOperand::at(&qkv, 2 * c),
            &spec,
        )?;
        drop(qkv);
        let x = blk.out_proj.forward_residual(be, &a, &x)?;
        let h = blk.norm2.forward(be, &x)?;
        let m = blk.linear1.forward(be, &h, Activation::Gelu)?;
        blk.linear2.forward_residual(be, &m, &x)
    }
}
