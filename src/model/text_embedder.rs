//! Text embeddings per category name: tokenized with the CLIP tokenizer,
//! embedded once, then served from a cache (the reference re-encodes the
//! text for every window).

use std::collections::HashMap;

use super::segvol::{SegVol, TextEmbedding};
use super::tokenizer::ClipTokenizer;
use crate::backend::Backend;
use crate::error::Result;

pub struct TextEmbedder {
    tokenizer: ClipTokenizer,
    cache: HashMap<String, TextEmbedding>,
}

impl TextEmbedder {
    pub fn new(tokenizer: ClipTokenizer) -> Self {
        TextEmbedder {
            tokenizer,
            cache: HashMap::new(),
        }
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// The embedding of `"A computerized tomography of a {name}."`.
    pub fn embed<B: Backend>(&mut self, model: &SegVol<B>, name: &str) -> Result<TextEmbedding> {
        if let Some(e) = self.cache.get(name) {
            return Ok(e.clone());
        }
        let ids = self.tokenizer.encode_prompt(name)?;
        let e = model.embed_text_ids(&ids)?;
        self.cache.insert(name.to_string(), e.clone());
        Ok(e)
    }
}
