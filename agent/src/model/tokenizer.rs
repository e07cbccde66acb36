//! Text to token ids, as the Hugging Face BERT tokenizer does it.

use std::fmt;
use std::path::Path;

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, PostProcessor, Tokenizer, TruncationDirection};

use super::weights::{file_name, parent_dir};
use super::{ModelError, one_line};

/// The bert-base-uncased vocabulary (the one distilbert-base-uncased uses), so
/// synthetic-weight runs tokenise exactly like the real model without the hub.
const BUILTIN_VOCAB: &str = include_str!("../../assets/bert-base-uncased-vocab.txt");

const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

pub(crate) struct TextEncoder {
    tokenizer: Tokenizer,
    /// Tokens the post-processor adds to one sequence ([CLS] and [SEP]).
    added_tokens: usize,
    pad_id: u32,
    /// Where the vocabulary came from, for messages.
    source: String,
}

impl fmt::Debug for TextEncoder {
    // The derived form would print the whole vocabulary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextEncoder")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl TextEncoder {
    /// A Hugging Face `tokenizer.json`.
    pub(crate) fn from_tokenizer_json(path: &Path, pad_fallback: u32) -> Result<Self, ModelError> {
        let invalid = |reason: String| ModelError::InvalidTokenizer {
            file: file_name(path),
            dir: parent_dir(path),
            reason,
        };
        let text = super::read_text_capped(path, super::MAX_TOKENIZER_BYTES, "tokenizer")?;
        let tokenizer: Tokenizer = text
            .parse()
            .map_err(|e: tokenizers::Error| invalid(one_line(&e.to_string())))?;
        Self::finish(tokenizer, path.display().to_string(), pad_fallback)
            .map_err(|e| invalid(one_line(&e)))
    }

    /// A BERT `vocab.txt` file (one token per line, line number = id).
    pub(crate) fn from_vocab_file(path: &Path, pad_fallback: u32) -> Result<Self, ModelError> {
        let text = super::read_text_capped(path, super::MAX_TOKENIZER_BYTES, "vocabulary")?;
        Self::from_vocab_text(&text, path.display().to_string(), pad_fallback).map_err(|reason| {
            ModelError::InvalidTokenizer {
                file: file_name(path),
                dir: parent_dir(path),
                reason: one_line(&reason),
            }
        })
    }

    /// The embedded bert-base-uncased vocabulary.
    pub(crate) fn builtin() -> Result<Self, ModelError> {
        Self::from_vocab_text(
            BUILTIN_VOCAB,
            "the built-in bert-base-uncased vocabulary".into(),
            0,
        )
        .map_err(|reason| ModelError::InvalidTokenizer {
            file: "bert-base-uncased-vocab.txt".into(),
            dir: "the agent's assets".into(),
            reason: one_line(&reason),
        })
    }

    /// Builds what `BertTokenizerFast` serialises for an uncased BERT model:
    /// lowercasing BertNormalizer (which then strips accents too), BERT
    /// pre-tokenisation, WordPiece and `[CLS] $A [SEP]`.
    fn from_vocab_text(text: &str, source: String, pad_fallback: u32) -> Result<Self, String> {
        let vocab = WordPiece::read_bytes(text.as_bytes()).map_err(|e| e.to_string())?;
        if vocab.is_empty() {
            return Err("the vocabulary is empty".to_string());
        }
        let id = |token: &str| {
            vocab
                .get(token)
                .copied()
                .ok_or_else(|| format!("the vocabulary has no {token} token"))
        };
        let cls = id("[CLS]")?;
        let sep = id("[SEP]")?;
        id("[UNK]")?;
        let specials: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .filter(|t| vocab.contains_key(**t))
            .map(|t| AddedToken::from(*t, true))
            .collect();
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".to_string())
            .continuing_subword_prefix("##".to_string())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| e.to_string())?;
        let mut tokenizer = Tokenizer::new(model);
        tokenizer
            .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
            .map_err(|e| e.to_string())?
            .with_pre_tokenizer(Some(BertPreTokenizer))
            .with_post_processor(Some(BertProcessing::new(
                ("[SEP]".to_string(), sep),
                ("[CLS]".to_string(), cls),
            )))
            .with_decoder(Some(WordPieceDecoder::new("##".to_string(), true)));
        tokenizer
            .add_special_tokens(specials)
            .map_err(|e| e.to_string())?;
        Self::finish(tokenizer, source, pad_fallback)
    }

    fn finish(mut tokenizer: Tokenizer, source: String, pad_fallback: u32) -> Result<Self, String> {
        // Padding and truncation are ours to apply per call (to seq_len), so a
        // preset in the file must not interfere.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| e.to_string())?;
        let added_tokens = tokenizer
            .get_post_processor()
            .map(|p| p.added_tokens(false))
            .unwrap_or(0);
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(pad_fallback);
        Ok(TextEncoder {
            tokenizer,
            added_tokens,
            pad_id,
            source,
        })
    }

    pub(crate) fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub(crate) fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Ids of one text with [CLS]/[SEP], truncated (at the end, keeping the
    /// final [SEP]) to at most `max_len` tokens, as `truncation=True` does.
    pub(crate) fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>, ModelError> {
        let tok_err = |e: tokenizers::Error| ModelError::Tokenize {
            reason: one_line(&e.to_string()),
        };
        let mut enc = self.tokenizer.encode(text, false).map_err(tok_err)?;
        let room = max_len.saturating_sub(self.added_tokens);
        if enc.len() > room {
            enc.truncate(room, 0, TruncationDirection::Right);
        }
        let enc = self
            .tokenizer
            .post_process(enc, None, true)
            .map_err(tok_err)?;
        let mut ids = enc.get_ids().to_vec();
        // Only when max_len is below the special-token count itself.
        ids.truncate(max_len);
        Ok(ids)
    }
}
