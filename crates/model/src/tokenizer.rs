//! CLIP's tokenizer from a model's `tokenizer.json`, padded and truncated to the
//! text context as transformers' `CLIPTokenizer(padding="max_length",
//! truncation=True)` does: `<|startoftext|> tokens… <|endoftext|>`, padded with
//! `<|endoftext|>`.

use std::path::{Path, PathBuf};

use tch::Tensor;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use crate::error::{ModelError, Result};

/// The end-of-text token CLIP pads with.
pub const END_OF_TEXT: &str = "<|endoftext|>";

pub struct ClipTokenizer {
    inner: Tokenizer,
    context_length: usize,
    path: PathBuf,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("path", &self.path)
            .field("context_length", &self.context_length)
            .finish()
    }
}

impl ClipTokenizer {
    /// The id of CLIP's end-of-text token `<|endoftext|>`, if the vocabulary has it.
    pub fn end_of_text_id(&self) -> Option<i64> {
        self.inner.token_to_id("<|endoftext|>").map(i64::from)
    }

    /// Checks that a text tower with `eos_token_id` reads this tokenizer's prompts
    /// at their end (transformers' rule; the legacy id 2 means "the largest id"):
    /// another id would read every prompt at its first token, the same for all.
    pub fn check_end_of_text(&self, eos_token_id: i64) -> Result<()> {
        match self.end_of_text_id() {
            Some(eos) if eos_token_id != 2 && eos != eos_token_id => Err(ModelError::config(
                "tokenizer",
                format!(
                    "{}: its end-of-text token is id {eos}, the text tower's `eos_token_id` is \
                     {eos_token_id}: they must match (a tokenizer of another model?)",
                    self.path.display()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Loads `tokenizer.json` for sequences of `context_length` tokens (77 for CLIP).
    pub fn from_file(path: &Path, context_length: usize) -> Result<Self> {
        let err = |reason: String| ModelError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(err(
                "no such file (a CLIP model folder holds tokenizer.json)".into(),
            ));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        let pad_id = inner
            .token_to_id(END_OF_TEXT)
            .ok_or_else(|| err(format!("no `{END_OF_TEXT}` token in the vocabulary")))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: context_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| err(e.to_string()))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(context_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: END_OF_TEXT.into(),
        }));
        Ok(Self {
            inner,
            context_length,
            path: path.to_path_buf(),
        })
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of each text, `context_length` long.
    pub fn encode_ids(&self, texts: &[&str]) -> Result<Vec<Vec<i64>>> {
        let encodings =
            self.inner
                .encode_batch(texts.to_vec(), true)
                .map_err(|e| ModelError::Tokenizer {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
        Ok(encodings
            .iter()
            .map(|e| e.get_ids().iter().map(|&i| i64::from(i)).collect())
            .collect())
    }

    /// Token ids as a `[texts, context_length]` int64 tensor.
    pub fn encode(&self, texts: &[&str]) -> Result<Tensor> {
        let ids = self.encode_ids(texts)?;
        let flat: Vec<i64> = ids.concat();
        Ok(Tensor::from_slice(&flat).view([texts.len() as i64, self.context_length as i64]))
    }
}
