//! The SegVol wrapper (docs/REFERENCE.md §2.5), split the way interactive use needs
//! it: the image embedding (the expensive ViT pass) is computed once and
//! reused by any number of cheap decoder calls; text embeddings are values
//! the caller can cache per name.

use std::sync::Arc;

use super::image_encoder::ImageEncoder;
use super::loader::Loader;
use super::mask_decoder::MaskDecoder;
use super::prompt_encoder::{GeomPrompt, PromptEncoder};
use super::text_encoder::{ClipOutput, TextEncoder};
use crate::backend::{Backend, Interp};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::Checkpoint;

/// Image tokens `[B, N, C]` of one or more images (ViT output after its
/// final LayerNorm).
pub struct ImageEmbedding<B: Backend> {
    pub tokens: B::Tensor,
}

/// A category's text embedding (`dim_align(CLIP pooled)`, length C).
#[derive(Clone, Debug, PartialEq)]
pub struct TextEmbedding(pub Vec<f32>);

/// Everything one decoder call needs for one mask.
#[derive(Clone, Debug, Default)]
pub struct Prompt {
    pub geom: GeomPrompt,
    pub text: Option<TextEmbedding>,
}

/// Prompts decoded together at most (see `decode_lowres`).
pub const MAX_DECODE_BATCH: usize = 4;

pub struct SegVol<B: Backend> {
    backend: B,
    cfg: ModelConfig,
    pub image_encoder: ImageEncoder<B>,
    pub text_encoder: TextEncoder<B>,
    pub prompt_encoder: PromptEncoder,
    pub mask_decoder: MaskDecoder<B>,
    /// `get_dense_pe()` as `[N, C]`.
    dense_pe: B::Tensor,
    /// The dense prompt embedding (`no_mask_embed`), `[C]`.
    no_mask: B::Tensor,
}

impl<B: Backend> SegVol<B> {
    /// Builds the network from a checkpoint with normalised keys, after
    /// checking that it is a SegVol state dict for `cfg`.
    pub fn load(backend: B, ckpt: Arc<Checkpoint>, cfg: ModelConfig) -> Result<Self> {
        cfg.validate()?;
        ckpt.check(&cfg)?;
        let ld = Loader::new(&backend, &ckpt);
        let image_encoder = ImageEncoder::load(&ld, &cfg)?;
        let text_encoder = TextEncoder::load(&ld, ckpt.clone(), &cfg)?;
        let prompt_encoder = PromptEncoder::load(&ld, &cfg)?;
        let mask_decoder = MaskDecoder::load(&ld, &cfg)?;
        let c = cfg.hidden_size;
        let dense_pe = backend.upload(&prompt_encoder.dense_pe(), &[cfg.num_tokens(), c])?;
        let no_mask = backend.upload(prompt_encoder.no_mask_embed(), &[c])?;
        Ok(SegVol {
            backend,
            cfg,
            image_encoder,
            text_encoder,
            prompt_encoder,
            mask_decoder,
            dense_pe,
            no_mask,
        })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// ViT pass over `image [B, 1, D, H, W]` (values in [0, 1]).
    pub fn embed_image(&self, image: &B::Tensor) -> Result<ImageEmbedding<B>> {
        Ok(ImageEmbedding {
            tokens: self.image_encoder.forward(&self.backend, image)?,
        })
    }

    /// [`Self::embed_image`] from host data, `batch` images of `spatial_size`.
    pub fn embed_image_host(&self, image: &[f32], batch: usize) -> Result<ImageEmbedding<B>> {
        let [d, h, w] = self.cfg.spatial_size;
        if image.len() != batch * d * h * w {
            return Err(Error::shape(format!(
                "{} voxels for {batch} images of {d}x{h}x{w}",
                image.len()
            )));
        }
        let t = self.backend.upload(image, &[batch, 1, d, h, w])?;
        self.embed_image(&t)
    }

    /// CLIP and `dim_align` on one tokenized prompt, with CLIP's outputs.
    pub fn clip(&self, ids: &[u32]) -> Result<ClipOutput<B>> {
        self.text_encoder.forward_ids(&self.backend, ids)
    }

    /// The text embedding of one tokenized prompt.
    pub fn embed_text_ids(&self, ids: &[u32]) -> Result<TextEmbedding> {
        let out = self.clip(ids)?;
        Ok(TextEmbedding(self.backend.download(&out.embedding)?))
    }

    /// Decoder token rows `[5 + Ns, C]` of one prompt.
    pub fn decoder_tokens(&self, p: &Prompt) -> Result<Vec<f32>> {
        let sparse = self
            .prompt_encoder
            .sparse(&p.geom, p.text.as_ref().map(|t| t.0.as_slice()))?;
        Ok(self.mask_decoder.tokens(&sparse))
    }

    /// Mask-decoder outputs for prompts that share a token count and text
    /// presence, against image `item` of `emb`: (queries, keys, low-res
    /// logits `[K, 1, 4D', 4H', 4W']`).
    pub fn decode_group(
        &self,
        emb: &ImageEmbedding<B>,
        item: usize,
        prompts: &[&Prompt],
    ) -> Result<DecoderOutput<B>> {
        let be = &self.backend;
        let c = self.cfg.hidden_size;
        let k = prompts.len();
        let mut tokens = Vec::new();
        let mut texts = Vec::new();
        let mut rows = None;
        for p in prompts {
            let t = self.decoder_tokens(p)?;
            let r = t.len() / c;
            if *rows.get_or_insert(r) != r || p.text.is_some() != prompts[0].text.is_some() {
                return Err(Error::Invalid(
                    "decode_group: prompts differ in token count or text presence".into(),
                ));
            }
            tokens.extend(t);
            if let Some(tx) = &p.text {
                texts.extend_from_slice(&tx.0);
            }
        }
        let rows = rows.ok_or_else(|| Error::Invalid("decode_group: no prompts".into()))?;
        let tokens = be.upload(&tokens, &[k, rows, c])?;
        let text = if texts.is_empty() {
            None
        } else {
            Some(be.upload(&texts, &[k, c])?)
        };

        let n_img = be.shape(&emb.tokens)[0];
        if item >= n_img {
            return Err(Error::Invalid(format!(
                "image {item} of a batch of {n_img}"
            )));
        }
        let img = be.slice_batch(&emb.tokens, item, 1)?;
        let img = if k > 1 {
            be.repeat_batch(&img, k)?
        } else {
            img
        };
        let keys = be.add_broadcast(&img, &self.no_mask)?;
        let (queries, keys) = self
            .mask_decoder
            .transformer(be, &tokens, keys, &self.dense_pe)?;
        let upscaled = self.mask_decoder.upscale(be, &keys)?;
        let lowres = self
            .mask_decoder
            .readout(be, &queries, &upscaled, text.as_ref())?;
        Ok(DecoderOutput {
            queries,
            keys,
            upscaled,
            lowres,
        })
    }

    /// Low-resolution logits `[K, 1, 4D', 4H', 4W']` for any prompts against
    /// image `item`, in prompt order. Prompts of equal shape share one batch.
    pub fn decode_lowres(
        &self,
        emb: &ImageEmbedding<B>,
        item: usize,
        prompts: &[Prompt],
    ) -> Result<B::Tensor> {
        let be = &self.backend;
        // Group by (token count, has text), keeping each prompt's slot.
        let mut groups: Vec<((usize, bool), Vec<usize>)> = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            let key = (
                p.geom.token_count() + usize::from(p.text.is_some()),
                p.text.is_some(),
            );
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        if groups.is_empty() {
            return Err(Error::prompt("(none)", "no prompts to decode"));
        }
        let mut slots: Vec<Option<B::Tensor>> = (0..prompts.len()).map(|_| None).collect();
        // A decoder batch holds K copies of the upscaled feature (50 MB each
        // in f32 at the default size): cap K to bound memory.
        for idx in groups
            .iter()
            .flat_map(|(_, idx)| idx.chunks(MAX_DECODE_BATCH))
        {
            let ps: Vec<&Prompt> = idx.iter().map(|&i| &prompts[i]).collect();
            let out = self.decode_group(emb, item, &ps)?;
            if let [i] = idx[..] {
                slots[i] = Some(out.lowres);
            } else {
                for (j, &i) in idx.iter().enumerate() {
                    slots[i] = Some(be.slice_batch(&out.lowres, j, 1)?);
                }
            }
        }
        let parts: Vec<B::Tensor> = slots
            .into_iter()
            .map(|s| s.expect("every prompt decoded"))
            .collect();
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().expect("one part"));
        }
        be.concat_batch(&parts.iter().collect::<Vec<_>>())
    }

    /// Final logits `[K, 1, D, H, W]` (trilinear upsample of the low-res
    /// logits to the input size). Raw logits: mask = logits > 0.
    pub fn decode(
        &self,
        emb: &ImageEmbedding<B>,
        item: usize,
        prompts: &[Prompt],
    ) -> Result<B::Tensor> {
        let lowres = self.decode_lowres(emb, item, prompts)?;
        self.backend
            .resize(&lowres, self.cfg.spatial_size, Interp::Trilinear)
    }
}

/// The decoder's intermediate tensors (for parity checks and inspection).
pub struct DecoderOutput<B: Backend> {
    /// `[K, 5 + Ns, C]` after `norm_final_attn`.
    pub queries: B::Tensor,
    /// `[K, N, C]` after the last two-way block.
    pub keys: B::Tensor,
    /// `[K, 64·N, C/8]` channels-last `output_upscaling` result.
    pub upscaled: B::Tensor,
    /// `[K, 1, 4D', 4H', 4W']`.
    pub lowres: B::Tensor,
}
