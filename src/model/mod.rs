//! The SegVol network, written once against [`crate::backend::Backend`].

pub mod image_encoder;
pub mod loader;
pub mod mask_decoder;
pub mod prompt_encoder;
pub mod segvol;
pub mod text_embedder;
pub mod text_encoder;
pub mod tokenizer;

pub use prompt_encoder::GeomPrompt;
pub use segvol::{DecoderOutput, ImageEmbedding, Prompt, SegVol, TextEmbedding};
pub use text_embedder::TextEmbedder;
pub use tokenizer::ClipTokenizer;
