//! The CLIP ViT-B/32 BPE tokenizer that turns category names into text-encoder
//! input ids (docs/REFERENCE.md §6).
//!
//! Two sources give the same tokenizer: a checkpoint's `tokenizer.json` (what
//! the reference loads with `AutoTokenizer`), or the OpenAI merge list shipped
//! in `assets/` (see `assets/LICENSE-CLIP-BPE`), from which the vocabulary is
//! rebuilt exactly as OpenAI's `SimpleTokenizer` does. The second lets the
//! engine run from a bare `.pth`/`.safetensors` checkpoint.

use std::io::Read;
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};

/// SegVol's prompt template; `{}` is replaced by the category name.
pub const PROMPT_TEMPLATE: &str = "A computerized tomography of a {}.";
pub const BOS_TOKEN: &str = "<|startoftext|>";
pub const EOS_TOKEN: &str = "<|endoftext|>";
pub const BOS_ID: u32 = 49406;
pub const EOS_ID: u32 = 49407;
/// The reference pads with `<|endoftext|>`.
pub const PAD_ID: u32 = EOS_ID;
/// Rows of CLIP's position-embedding table: no sequence may be longer.
pub const MAX_POSITIONS: usize = 77;
pub const VOCAB_SIZE: usize = 49408;
/// `SimpleTokenizer` keeps merge lines 1..=48894 (`49152 - 256 - 2`).
pub const NUM_MERGES: usize = 48894;

/// The CLIP split regex of `tokenizer.json` (OpenAI's `SimpleTokenizer.pat`).
const CLIP_SPLIT_REGEX: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

static BPE_MERGES_GZ: &[u8] = include_bytes!("../../assets/bpe_simple_vocab_16e6.txt.gz");

/// Token ids of several prompts padded to the longest, as the reference's
/// `tokenizer(texts, padding=True)` returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    pub input_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u32>>,
}

impl TokenBatch {
    /// Number of positions per row (the longest prompt).
    pub fn seq_len(&self) -> usize {
        self.input_ids.first().map_or(0, Vec::len)
    }

    /// Index of the first EOS in each row: the token CLIP pools (HF CLIP takes
    /// `argmax(input_ids)`, and EOS is the largest id).
    pub fn eos_positions(&self) -> Vec<usize> {
        self.input_ids
            .iter()
            .map(|row| {
                row.iter()
                    .position(|&t| t == EOS_ID)
                    .unwrap_or(row.len().saturating_sub(1))
            })
            .collect()
    }
}

#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    max_len: usize,
    source: String,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("source", &self.source)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl ClipTokenizer {
    /// Loads a Hugging Face `tokenizer.json` (SegVol's `config/clip/`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let inner = Tokenizer::from_bytes(&bytes).map_err(|e| {
            Error::Tokenizer(format!(
                "{}: cannot parse tokenizer.json: {e}",
                path.display()
            ))
        })?;
        Self::checked(inner, path.display().to_string())
    }

    /// The CLIP tokenizer rebuilt from the OpenAI merge list compiled into the
    /// crate; identical ids to SegVol's `tokenizer.json`.
    pub fn builtin() -> Result<Self> {
        let (vocab, merges) = clip_vocab_and_merges()?;
        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(EOS_TOKEN.to_string())
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".to_string())
            .fuse_unk(false)
            .build()
            .map_err(|e| Error::Tokenizer(format!("builtin BPE model: {e}")))?;

        let replace = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
            .map_err(|e| Error::Tokenizer(format!("builtin whitespace normalizer: {e}")))?;
        let normalizer = NormSequence::new(vec![NFC.into(), replace.into(), Lowercase.into()]);

        let split = Split::new(
            SplitPattern::Regex(CLIP_SPLIT_REGEX.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| Error::Tokenizer(format!("builtin split regex: {e}")))?;
        // use_regex=true is what a tokenizer.json ByteLevel without the field
        // deserialises to, so the builtin matches SegVol's file exactly.
        let pre = PreSequence::new(vec![split.into(), ByteLevel::new(false, true, true).into()]);

        let post = RobertaProcessing::new((EOS_TOKEN.into(), EOS_ID), (BOS_TOKEN.into(), BOS_ID))
            .trim_offsets(false)
            .add_prefix_space(false);

        let mut inner = Tokenizer::new(model);
        inner
            .with_normalizer(Some(normalizer))
            .with_pre_tokenizer(Some(pre))
            .with_post_processor(Some(post))
            .with_decoder(Some(ByteLevel::new(true, true, true)));
        inner.add_special_tokens(&[
            AddedToken::from(BOS_TOKEN, true).normalized(true),
            AddedToken::from(EOS_TOKEN, true).normalized(false),
        ]);
        Self::checked(inner, "builtin CLIP BPE".into())
    }

    /// The checkpoint folder's `tokenizer.json` when there is one, else the
    /// builtin tokenizer. A path to a checkpoint file looks in its folder.
    pub fn for_checkpoint(dir: Option<&Path>) -> Result<Self> {
        if let Some(candidate) = dir.and_then(tokenizer_json_near) {
            return Self::from_file(&candidate);
        }
        Self::builtin()
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Where the tokenizer came from, for logs.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Ids of `"A computerized tomography of a {name}."` with BOS and EOS.
    pub fn encode_prompt(&self, name: &str) -> Result<Vec<u32>> {
        if name.trim().is_empty() {
            return Err(Error::prompt(format!("{name:?}"), "empty category name"));
        }
        let text = PROMPT_TEMPLATE.replace("{}", name);
        self.encode_checked(&text, name)
    }

    /// Ids of `text` as given (no template) with BOS and EOS.
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_checked(text, text)
    }

    /// Templated prompts for several names, padded with EOS to the longest.
    pub fn encode_batch<S: AsRef<str>>(&self, names: &[S]) -> Result<TokenBatch> {
        let rows = names
            .iter()
            .map(|n| self.encode_prompt(n.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(pad_rows(rows))
    }

    fn encode_checked(&self, text: &str, label: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::prompt(format!("{label:?}"), format!("tokenizer failed: {e}")))?;
        let ids = enc.get_ids().to_vec();
        if ids.len() > self.max_len {
            return Err(Error::prompt(
                format!("{label:?}"),
                format!(
                    "the prompt is {} tokens long, more than the {} positions of the CLIP text encoder",
                    ids.len(),
                    self.max_len
                ),
            ));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= VOCAB_SIZE) {
            return Err(Error::Tokenizer(format!(
                "{}: token id {bad} is outside the CLIP vocabulary of {VOCAB_SIZE}",
                self.source
            )));
        }
        Ok(ids)
    }

    /// Rejects a tokenizer that would feed CLIP the wrong ids: other special
    /// tokens, or no BOS/EOS post-processing.
    fn checked(inner: Tokenizer, source: String) -> Result<Self> {
        for (tok, want) in [(BOS_TOKEN, BOS_ID), (EOS_TOKEN, EOS_ID)] {
            let got = inner.token_to_id(tok);
            if got != Some(want) {
                return Err(Error::Tokenizer(format!(
                    "{source}: {tok} has id {got:?}, expected {want}; not the CLIP tokenizer"
                )));
            }
        }
        let probe = inner
            .encode("a", true)
            .map_err(|e| Error::Tokenizer(format!("{source}: {e}")))?;
        let ids = probe.get_ids();
        if ids.first() != Some(&BOS_ID) || ids.last() != Some(&EOS_ID) {
            return Err(Error::Tokenizer(format!(
                "{source}: encoding does not add {BOS_TOKEN} and {EOS_TOKEN} (got {ids:?})"
            )));
        }
        Ok(ClipTokenizer {
            inner,
            max_len: MAX_POSITIONS,
            source,
        })
    }
}

fn tokenizer_json_near(path: &Path) -> Option<PathBuf> {
    let dir = if path.is_file() { path.parent()? } else { path };
    let candidate = dir.join("tokenizer.json");
    candidate.is_file().then_some(candidate)
}

fn pad_rows(rows: Vec<Vec<u32>>) -> TokenBatch {
    let len = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut input_ids = Vec::with_capacity(rows.len());
    let mut attention_mask = Vec::with_capacity(rows.len());
    for mut row in rows {
        let n = row.len();
        row.resize(len, PAD_ID);
        let mut mask = vec![1u32; n];
        mask.resize(len, 0);
        input_ids.push(row);
        attention_mask.push(mask);
    }
    TokenBatch {
        input_ids,
        attention_mask,
    }
}

/// GPT-2/CLIP's reversible byte → printable-char table, in `SimpleTokenizer`'s
/// order: printable Latin-1 bytes map to themselves first, then the remaining
/// bytes to U+0100 onwards. The order fixes vocabulary ids 0..256.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let printable = |b: &u8| matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    // A u8 converts to the Latin-1 char of the same code point.
    let mut table: Vec<(u8, char)> = (0..=255u8)
        .filter(printable)
        .map(|b| (b, char::from(b)))
        .collect();
    let rest = (0..=255u8).filter(|b| !printable(b));
    table.extend(rest.zip('\u{100}'..));
    table
}

/// Vocabulary and merges as `SimpleTokenizer.__init__` builds them.
fn clip_vocab_and_merges() -> Result<(Vocab, Vec<(String, String)>)> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(BPE_MERGES_GZ)
        .read_to_string(&mut text)
        .map_err(|e| Error::Tokenizer(format!("builtin BPE merge list: {e}")))?;
    parse_merges(&text)
}

fn parse_merges(text: &str) -> Result<(Vocab, Vec<(String, String)>)> {
    // Line 0 is a version header.
    let merges = text
        .split('\n')
        .skip(1)
        .take(NUM_MERGES)
        .enumerate()
        .map(|(i, line)| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
                _ => Err(Error::Tokenizer(format!(
                    "builtin BPE merge list: line {} is not a pair: {line:?}",
                    i + 2
                ))),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    if merges.len() != NUM_MERGES {
        return Err(Error::Tokenizer(format!(
            "builtin BPE merge list has {} merges, expected {NUM_MERGES}",
            merges.len()
        )));
    }

    let chars: Vec<String> = bytes_to_unicode()
        .into_iter()
        .map(|(_, c)| c.to_string())
        .collect();
    let tokens = chars
        .iter()
        .cloned()
        .chain(chars.iter().map(|c| format!("{c}</w>")))
        .chain(merges.iter().map(|(a, b)| format!("{a}{b}")))
        .chain([BOS_TOKEN.to_string(), EOS_TOKEN.to_string()]);
    let mut vocab = Vocab::default();
    for (id, tok) in tokens.enumerate() {
        if vocab.insert(tok.clone(), id as u32).is_some() {
            return Err(Error::Tokenizer(format!(
                "builtin BPE vocabulary repeats token {tok:?}"
            )));
        }
    }
    if vocab.len() != VOCAB_SIZE {
        return Err(Error::Tokenizer(format!(
            "builtin BPE vocabulary has {} tokens, expected {VOCAB_SIZE}",
            vocab.len()
        )));
    }
    Ok((vocab, merges))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_starting_with_printables() {
        let t = bytes_to_unicode();
        assert_eq!(t.len(), 256);
        assert_eq!(t[0], (b'!', '!'));
        // Space is not printable in the table: it becomes U+0120 'Ġ'.
        let space = t.iter().find(|(b, _)| *b == b' ').unwrap().1;
        assert_eq!(space, '\u{120}');
        let mut chars: Vec<char> = t.iter().map(|p| p.1).collect();
        chars.sort();
        chars.dedup();
        assert_eq!(chars.len(), 256);
    }

    #[test]
    fn builtin_vocab_layout_matches_simple_tokenizer() {
        let (vocab, merges) = clip_vocab_and_merges().unwrap();
        assert_eq!(merges.len(), NUM_MERGES);
        assert_eq!(merges[0], ("i".to_string(), "n".to_string()));
        assert_eq!(vocab["!"], 0);
        assert_eq!(vocab["!</w>"], 256);
        assert_eq!(vocab["in"], 512);
        assert_eq!(vocab[BOS_TOKEN], BOS_ID);
        assert_eq!(vocab[EOS_TOKEN], EOS_ID);
    }

    #[test]
    fn bad_merge_line_is_an_error() {
        let err = parse_merges("#version\ni n\nonlyone\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn padding_uses_eos_and_zero_mask() {
        let b = pad_rows(vec![vec![BOS_ID, 5, EOS_ID], vec![BOS_ID, EOS_ID]]);
        assert_eq!(b.input_ids[1], vec![BOS_ID, EOS_ID, PAD_ID]);
        assert_eq!(b.attention_mask[1], vec![1, 1, 0]);
        assert_eq!(b.eos_positions(), vec![2, 1]);
        assert_eq!(b.seq_len(), 3);
    }
}
