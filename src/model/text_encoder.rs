//! SegVol's text tower (docs/REFERENCE.md §2.2): transformers' `CLIPTextModel` with the
//! default config (12 pre-LN layers, causal attention, quick_gelu), pooled at
//! the first EOS token (the largest id), then `dim_align` 512 → 768. There is
//! no text projection.

use std::sync::Arc;

use super::loader::{LayerNorm, Linear, Loader};
use crate::backend::{Activation, AttnOperand, AttnSpec, Backend};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::{Checkpoint, WeightView};

struct Layer<B: Backend> {
    ln1: LayerNorm<B>,
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    out: Linear<B>,
    ln2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
}

pub struct TextEncoder<B: Backend> {
    cfg: ModelConfig,
    /// Token embeddings are gathered on the host straight from the
    /// checkpoint: 49408×512 values of which a prompt reads about a dozen.
    ckpt: Arc<Checkpoint>,
    pos: Vec<f32>,
    layers: Vec<Layer<B>>,
    final_ln: LayerNorm<B>,
    dim_align: Linear<B>,
}

/// The CLIP side outputs, kept for parity checks.
pub struct ClipOutput<B: Backend> {
    /// `[1, L, 512]` after `final_layer_norm`.
    pub last_hidden: B::Tensor,
    /// `[1, 512]`: the hidden state at the first EOS.
    pub pooled: B::Tensor,
    /// `[1, 768]`: `dim_align(pooled)`.
    pub embedding: B::Tensor,
}

const TM: &str = "text_encoder.clip_text_model.text_model";
const TOKEN_EMB: &str = "text_encoder.clip_text_model.text_model.embeddings.token_embedding.weight";

impl<B: Backend> TextEncoder<B> {
    pub fn load(ld: &Loader<'_, B>, ckpt: Arc<Checkpoint>, cfg: &ModelConfig) -> Result<Self> {
        let w = cfg.clip_width;
        let emb = ckpt.require(TOKEN_EMB)?;
        if emb.shape != [cfg.clip_vocab, w] {
            return Err(Error::NotSegVol(format!(
                "tensor {TOKEN_EMB} has shape {:?}, expected [{}, {w}]",
                emb.shape, cfg.clip_vocab
            )));
        }
        let layers = (0..cfg.clip_layers)
            .map(|i| {
                let p = format!("{TM}.encoder.layers.{i}");
                Ok(Layer {
                    ln1: ld.layer_norm(&format!("{p}.layer_norm1"), w)?,
                    q: ld.linear(&format!("{p}.self_attn.q_proj"), w, w, true)?,
                    k: ld.linear(&format!("{p}.self_attn.k_proj"), w, w, true)?,
                    v: ld.linear(&format!("{p}.self_attn.v_proj"), w, w, true)?,
                    out: ld.linear(&format!("{p}.self_attn.out_proj"), w, w, true)?,
                    ln2: ld.layer_norm(&format!("{p}.layer_norm2"), w)?,
                    fc1: ld.linear(&format!("{p}.mlp.fc1"), cfg.clip_mlp, w, true)?,
                    fc2: ld.linear(&format!("{p}.mlp.fc2"), w, cfg.clip_mlp, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TextEncoder {
            cfg: cfg.clone(),
            pos: ld.host(
                &format!("{TM}.embeddings.position_embedding.weight"),
                &[cfg.clip_max_positions, w],
            )?,
            layers,
            final_ln: ld.layer_norm(&format!("{TM}.final_layer_norm"), w)?,
            dim_align: ld.linear("text_encoder.dim_align", cfg.hidden_size, w, true)?,
            ckpt,
        })
    }

    /// Token embedding plus position embedding for `ids`, on the host.
    fn embed_tokens(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let w = self.cfg.clip_width;
        let table = self.ckpt.require(TOKEN_EMB)?;
        let row_bytes = w * table.dtype.size();
        let mut out = Vec::with_capacity(ids.len() * w);
        for (pos, &id) in ids.iter().enumerate() {
            if id as usize >= self.cfg.clip_vocab {
                return Err(Error::Tokenizer(format!(
                    "token id {id} is outside the {}-token vocabulary",
                    self.cfg.clip_vocab
                )));
            }
            let row = WeightView {
                shape: &[w],
                offset: table.offset + id as usize * row_bytes,
                ..table
            };
            let vals = row.to_f32()?;
            out.extend(
                vals.iter()
                    .zip(&self.pos[pos * w..(pos + 1) * w])
                    .map(|(t, p)| t + p),
            );
        }
        Ok(out)
    }

    /// Runs CLIP on one tokenized prompt (BOS … EOS, no padding).
    pub fn forward_ids(&self, be: &B, ids: &[u32]) -> Result<ClipOutput<B>> {
        let cfg = &self.cfg;
        let (w, len) = (cfg.clip_width, ids.len());
        if len == 0 || len > cfg.clip_max_positions {
            return Err(Error::Tokenizer(format!(
                "a prompt of {len} tokens does not fit CLIP's {} positions",
                cfg.clip_max_positions
            )));
        }
        let mut h = be.upload(&self.embed_tokens(ids)?, &[1, len, w])?;
        let spec = AttnSpec {
            batch: 1,
            heads: cfg.clip_heads,
            head_dim: w / cfg.clip_heads,
            q_len: len,
            kv_len: len,
            scale: ((w / cfg.clip_heads) as f32).powf(-0.5),
            causal: true,
        };
        for l in &self.layers {
            let x = l.ln1.forward(be, &h)?;
            let q = l.q.forward(be, &x, Activation::None)?;
            let k = l.k.forward(be, &x, Activation::None)?;
            let v = l.v.forward(be, &x, Activation::None)?;
            let a = be.attention(
                AttnOperand::new(&q),
                AttnOperand::new(&k),
                AttnOperand::new(&v),
                &spec,
            )?;
            h = l.out.forward_residual(be, &a, &h)?;
            let x = l.ln2.forward(be, &h)?;
            let m = l.fc1.forward(be, &x, Activation::QuickGelu)?;
            h = l.fc2.forward_residual(be, &m, &h)?;
        }
        let last_hidden = self.final_ln.forward(be, &h)?;
        // transformers pools at argmax(input_ids): the first EOS.
        let max = *ids.iter().max().expect("non-empty");
        let eos = ids.iter().position(|&t| t == max).expect("max is present");
        let pooled = be.narrow_rows(&last_hidden, eos, 1)?;
        let pooled = be.reshape(pooled, &[1, w])?;
        let embedding = self.dim_align.forward(be, &pooled, Activation::None)?;
        Ok(ClipOutput {
            last_hidden,
            pooled,
            embedding,
        })
    }
}
