//! SAM's mask decoder in 3-D as SegVol builds it (docs/REFERENCE.md §2.4): a two-way
//! transformer between prompt tokens and image tokens, transposed-conv
//! upscaling with a LayerNorm over the whole (C, D, H, W) feature, and the
//! hypernetwork readout plus SegVol's text-similarity term.
//!
//! Only mask 0 is ever read (multimask_output=False), so the readout is the
//! fused form `(MLP0(mask_token_0) + txt_align(text)) · upscaled`; hypernet
//! MLPs 1-3 and the IoU head are not evaluated.

use super::loader::{LayerNorm, Linear, Loader};
use crate::backend::{Activation, AttnOperand, AttnSpec, Backend};
use crate::config::ModelConfig;
use crate::error::Result;

struct Attention<B: Backend> {
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    out: Linear<B>,
    heads: usize,
    inner: usize,
}

impl<B: Backend> Attention<B> {
    fn load(ld: &Loader<'_, B>, p: &str, c: usize, inner: usize, heads: usize) -> Result<Self> {
        Ok(Attention {
            q: ld.linear(&format!("{p}.q_proj"), inner, c, true)?,
            k: ld.linear(&format!("{p}.k_proj"), inner, c, true)?,
            v: ld.linear(&format!("{p}.v_proj"), inner, c, true)?,
            out: ld.linear(&format!("{p}.out_proj"), c, inner, true)?,
            heads,
            inner,
        })
    }

    /// `out_proj(attn(q_proj(q), k_proj(k), v_proj(v)))`, plus `residual`
    /// when given.
    fn forward(
        &self,
        be: &B,
        q: &B::Tensor,
        k: &B::Tensor,
        v: &B::Tensor,
        residual: Option<&B::Tensor>,
    ) -> Result<B::Tensor> {
        let (qs, ks) = (be.shape(q).to_vec(), be.shape(k).to_vec());
        let qp = self.q.forward(be, q, Activation::None)?;
        let kp = self.k.forward(be, k, Activation::None)?;
        let vp = self.v.forward(be, v, Activation::None)?;
        let dh = self.inner / self.heads;
        let spec = AttnSpec {
            batch: qs[0],
            heads: self.heads,
            head_dim: dh,
            q_len: qs[1],
            kv_len: ks[1],
            scale: 1.0 / (dh as f32).sqrt(),
            causal: false,
        };
        let a = be.attention(
            AttnOperand::new(&qp),
            AttnOperand::new(&kp),
            AttnOperand::new(&vp),
            &spec,
        )?;
        match residual {
            Some(r) => self.out.forward_residual(be, &a, r),
            None => self.out.forward(be, &a, Activation::None),
        }
    }
}

struct TwoWayBlock<B: Backend> {
    self_attn: Attention<B>,
    norm1: LayerNorm<B>,
    cross_t2i: Attention<B>,
    norm2: LayerNorm<B>,
    lin1: Linear<B>,
    lin2: Linear<B>,
    norm3: LayerNorm<B>,
    norm4: LayerNorm<B>,
    cross_i2t: Attention<B>,
}

struct Mlp3<B: Backend> {
    layers: [Linear<B>; 3],
}

impl<B: Backend> Mlp3<B> {
    fn forward(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let h = self.layers[0].forward(be, x, Activation::Relu)?;
        let h = self.layers[1].forward(be, &h, Activation::Relu)?;
        self.layers[2].forward(be, &h, Activation::None)
    }
}

pub struct MaskDecoder<B: Backend> {
    cfg: ModelConfig,
    blocks: Vec<TwoWayBlock<B>>,
    final_attn: Attention<B>,
    norm_final: LayerNorm<B>,
    /// `[5, C]` on the host: iou token then the 4 mask tokens.
    output_tokens: Vec<f32>,
    up1_w: B::Tensor,
    up1_b: B::Tensor,
    /// The full-shape LayerNorm affine, permuted to channels-last.
    up_ln_w: B::Tensor,
    up_ln_b: B::Tensor,
    up2_w: B::Tensor,
    up2_b: B::Tensor,
    hyper0: Mlp3<B>,
    txt_align: Linear<B>,
}

/// `[C, D, H, W]` → `[D, H, W, C]`.
fn to_channels_last(x: &[f32], c: usize, s: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for ch in 0..c {
        for p in 0..s {
            out[p * c + ch] = x[ch * s + p];
        }
    }
    out
}

impl<B: Backend> MaskDecoder<B> {
    pub fn load(ld: &Loader<'_, B>, cfg: &ModelConfig) -> Result<Self> {
        let c = cfg.hidden_size;
        let ad = cfg.decoder_attn_dim();
        let h = cfg.decoder_heads;
        let p = "mask_decoder";
        let t = format!("{p}.transformer");
        let blocks = (0..cfg.decoder_depth)
            .map(|l| {
                let b = format!("{t}.layers.{l}");
                Ok(TwoWayBlock {
                    self_attn: Attention::load(ld, &format!("{b}.self_attn"), c, c, h)?,
                    norm1: ld.layer_norm(&format!("{b}.norm1"), c)?,
                    cross_t2i: Attention::load(
                        ld,
                        &format!("{b}.cross_attn_token_to_image"),
                        c,
                        ad,
                        h,
                    )?,
                    norm2: ld.layer_norm(&format!("{b}.norm2"), c)?,
                    lin1: ld.linear(&format!("{b}.mlp.lin1"), cfg.decoder_mlp, c, true)?,
                    lin2: ld.linear(&format!("{b}.mlp.lin2"), c, cfg.decoder_mlp, true)?,
                    norm3: ld.layer_norm(&format!("{b}.norm3"), c)?,
                    norm4: ld.layer_norm(&format!("{b}.norm4"), c)?,
                    cross_i2t: Attention::load(
                        ld,
                        &format!("{b}.cross_attn_image_to_token"),
                        c,
                        ad,
                        h,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut output_tokens = ld.host(&format!("{p}.iou_token.weight"), &[1, c])?;
        output_tokens.extend(ld.host(&format!("{p}.mask_tokens.weight"), &[4, c])?);
        let [c1, c2] = cfg.upscale_channels();
        let g1 = cfg.upscale1_grid();
        let s1: usize = g1.iter().product();
        let ln_shape = [c1, g1[0], g1[1], g1[2]];
        let be = ld.backend;
        let ln_w = to_channels_last(
            &ld.host(&format!("{p}.output_upscaling.1.weight"), &ln_shape)?,
            c1,
            s1,
        );
        let ln_b = to_channels_last(
            &ld.host(&format!("{p}.output_upscaling.1.bias"), &ln_shape)?,
            c1,
            s1,
        );
        let hp = format!("{p}.output_hypernetworks_mlps.0.layers");
        Ok(MaskDecoder {
            cfg: cfg.clone(),
            blocks,
            final_attn: Attention::load(ld, &format!("{t}.final_attn_token_to_image"), c, ad, h)?,
            norm_final: ld.layer_norm(&format!("{t}.norm_final_attn"), c)?,
            output_tokens,
            up1_w: ld.tensor(&format!("{p}.output_upscaling.0.weight"), &[c, c1, 2, 2, 2])?,
            up1_b: ld.tensor(&format!("{p}.output_upscaling.0.bias"), &[c1])?,
            up_ln_w: be.upload(&ln_w, &[s1, c1])?,
            up_ln_b: be.upload(&ln_b, &[s1, c1])?,
            up2_w: ld.tensor(
                &format!("{p}.output_upscaling.3.weight"),
                &[c1, c2, 2, 2, 2],
            )?,
            up2_b: ld.tensor(&format!("{p}.output_upscaling.3.bias"), &[c2])?,
            hyper0: Mlp3 {
                layers: [
                    ld.linear(&format!("{hp}.0"), c, c, true)?,
                    ld.linear(&format!("{hp}.1"), c, c, true)?,
                    ld.linear(&format!("{hp}.2"), c2, c, true)?,
                ],
            },
            txt_align: ld.linear(&format!("{p}.txt_align_upscaled_embedding"), c2, c, true)?,
        })
    }

    /// Decoder tokens `[5 + Ns, C]` for given sparse prompt tokens.
    pub fn tokens(&self, sparse: &[f32]) -> Vec<f32> {
        let mut t = self.output_tokens.clone();
        t.extend_from_slice(sparse);
        t
    }

    /// The two-way transformer. `tokens [B, T, C]` (also the query PE),
    /// `keys [B, N, C]` (image tokens + dense prompt), `key_pe [N, C]`
    /// broadcast. Returns (queries, keys).
    pub fn transformer(
        &self,
        be: &B,
        tokens: &B::Tensor,
        keys: B::Tensor,
        key_pe: &B::Tensor,
    ) -> Result<(B::Tensor, B::Tensor)> {
        let mut queries: Option<B::Tensor> = None;
        let mut keys = keys;
        for blk in &self.blocks {
            // Block 0 skips the PE and the residual around self-attention.
            let attended = match &queries {
                None => blk.self_attn.forward(be, tokens, tokens, tokens, None)?,
                Some(cur) => {
                    let q = be.add(cur, tokens)?;
                    blk.self_attn.forward(be, &q, &q, cur, Some(cur))?
                }
            };
            let mut cur = blk.norm1.forward(be, &attended)?;

            let q = be.add(&cur, tokens)?;
            let k = be.add_broadcast(&keys, key_pe)?;
            cur = blk.cross_t2i.forward(be, &q, &k, &keys, Some(&cur))?;
            cur = blk.norm2.forward(be, &cur)?;

            let m = blk.lin1.forward(be, &cur, Activation::Relu)?;
            cur = blk.lin2.forward_residual(be, &m, &cur)?;
            cur = blk.norm3.forward(be, &cur)?;

            let q = be.add(&cur, tokens)?;
            let k = be.add_broadcast(&keys, key_pe)?;
            keys = blk.cross_i2t.forward(be, &k, &q, &cur, Some(&keys))?;
            keys = blk.norm4.forward(be, &keys)?;
            queries = Some(cur);
        }
        let queries = queries.ok_or_else(|| {
            crate::error::Error::Config("decoder_depth must be at least 1".into())
        })?;
        let q = be.add(&queries, tokens)?;
        let k = be.add_broadcast(&keys, key_pe)?;
        let queries = self.final_attn.forward(be, &q, &k, &keys, Some(&queries))?;
        let queries = self.norm_final.forward(be, &queries)?;
        Ok((queries, keys))
    }

    /// `output_upscaling` on the transformer's keys: `[B, N, C]` →
    /// `[B, 64·N, C/8]`, channels-last over the 4× grid.
    pub fn upscale(&self, be: &B, keys: &B::Tensor) -> Result<B::Tensor> {
        let g = self.cfg.grid();
        let x = be.conv_transpose_k2s2(keys, g, &self.up1_w, &self.up1_b, Activation::None)?;
        let x = be.layer_norm_item(&x, &self.up_ln_w, &self.up_ln_b, 1e-5, Activation::Gelu)?;
        be.conv_transpose_k2s2(
            &x,
            self.cfg.upscale1_grid(),
            &self.up2_w,
            &self.up2_b,
            Activation::Gelu,
        )
    }

    /// Low-resolution logits `[B, 1, 4D', 4H', 4W']` of mask 0.
    /// `text [B, C]` adds SegVol's text similarity when given.
    pub fn readout(
        &self,
        be: &B,
        queries: &B::Tensor,
        upscaled: &B::Tensor,
        text: Option<&B::Tensor>,
    ) -> Result<B::Tensor> {
        let b = be.shape(queries)[0];
        let c2 = self.cfg.upscale_channels()[1];
        // Token 1 is mask token 0 (token 0 is the IoU token).
        let m0 = be.narrow_rows(queries, 1, 1)?;
        let mut hyper = self.hyper0.forward(be, &m0)?; // [B, 1, c2]
        if let Some(t) = text {
            let t = be.reshape(
                self.txt_align.forward(be, t, Activation::None)?,
                &[b, 1, c2],
            )?;
            hyper = be.add(&hyper, &t)?;
        }
        let logits = be.bmm_nt(upscaled, &hyper)?; // [B, S, 1]
        let g = self.cfg.lowres_grid();
        be.reshape(logits, &[b, 1, g[0], g[1], g[2]])
    }
}
