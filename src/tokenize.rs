//! Tokenizer choice: tiktoken's embedded encodings, or a HuggingFace
//! `tokenizer.json` given by path (Llama and Qwen users need exact counts).
//!
//! Every tokenizer here is `Send + Sync`, so ingest can count tokens on all
//! cores with rayon.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use thiserror::Error;

/// Which tokenizer to use, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerSpec {
    /// tiktoken `o200k_base` (GPT-4o family), embedded.
    O200kBase,
    /// tiktoken `cl100k_base` (GPT-4, GPT-3.5), embedded.
    Cl100kBase,
    /// A HuggingFace `tokenizer.json` file.
    HuggingFace(PathBuf),
}

impl FromStr for TokenizerSpec {
    type Err = String;

    /// `o200k_base`, `cl100k_base`, or a path to a `tokenizer.json` (anything
    /// else that names an existing file, or has a `.json` ending).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "o200k_base" => Ok(Self::O200kBase),
            "cl100k_base" => Ok(Self::Cl100kBase),
            other if other.ends_with(".json") || Path::new(other).is_file() => {
                Ok(Self::HuggingFace(PathBuf::from(other)))
            }
            other => Err(format!(
                "unknown tokenizer {other:?}: use o200k_base, cl100k_base, or the path of a HuggingFace tokenizer.json"
            )),
        }
    }
}

impl fmt::Display for TokenizerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::O200kBase => f.write_str("o200k_base"),
            Self::Cl100kBase => f.write_str("cl100k_base"),
            Self::HuggingFace(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why a tokenizer could not be loaded or used.
#[derive(Debug, Error)]
pub enum TokenizeError {
    /// The embedded tiktoken tables failed to load.
    #[error("loading tiktoken encoding {name}: {message}")]
    Tiktoken {
        /// Encoding name.
        name: &'static str,
        /// What tiktoken said.
        message: String,
    },
    /// A `tokenizer.json` could not be read or parsed.
    #[error("{}: not a usable HuggingFace tokenizer.json: {message}", path.display())]
    HuggingFace {
        /// The file given.
        path: PathBuf,
        /// What the tokenizers crate said.
        message: String,
    },
    /// Text could not be tokenized (only a `tokenizer.json` with unusual
    /// truncation or padding settings does this).
    #[error("tokenizing text: {0}")]
    Encode(String),
    /// Token ids could not be turned back into text.
    #[error("decoding token ids: {0}")]
    Decode(String),
}

enum Inner {
    Tiktoken(tiktoken_rs::CoreBPE),
    HuggingFace(Box<tokenizers::Tokenizer>),
}

/// A loaded tokenizer; cheap to clone (shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
    spec: TokenizerSpec,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("spec", &self.spec)
            .finish()
    }
}

impl Tokenizer {
    /// Loads the tokenizer named by `spec`.
    pub fn load(spec: &TokenizerSpec) -> Result<Self, TokenizeError> {
        let inner = match spec {
            TokenizerSpec::O200kBase => Inner::Tiktoken(tiktoken_rs::o200k_base().map_err(
                |e| TokenizeError::Tiktoken {
                    name: "o200k_base",
                    message: e.to_string(),
                },
            )?),
            TokenizerSpec::Cl100kBase => {
                Inner::Tiktoken(tiktoken_rs::cl100k_base().map_err(|e| {
                    TokenizeError::Tiktoken {
                        name: "cl100k_base",
                        message: e.to_string(),
                    }
                })?)
            }
            TokenizerSpec::HuggingFace(path) => {
                let tok = tokenizers::Tokenizer::from_file(path).map_err(|e| {
                    TokenizeError::HuggingFace {
                        path: path.clone(),
                        message: e.to_string(),
                    }
                })?;
                Inner::HuggingFace(Box::new(tok))
            }
        };
        Ok(Self {
            inner: Arc::new(inner),
            spec: spec.clone(),
        })
    }

    /// The spec this tokenizer was loaded from.
    pub fn spec(&self) -> &TokenizerSpec {
        &self.spec
    }

    /// A short name for metadata: the encoding name, or the file name of a
    /// `tokenizer.json` (never the full local path).
    pub fn name(&self) -> String {
        match &self.spec {
            TokenizerSpec::HuggingFace(path) => format!(
                "hf:{}",
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            other => other.to_string(),
        }
    }

    /// Token ids of `text`, with no special tokens added (no BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        match &*self.inner {
            Inner::Tiktoken(bpe) => Ok(bpe.encode_ordinary(text)),
            Inner::HuggingFace(tok) => tok
                .encode_fast(text, false)
                .map(|enc| enc.get_ids().to_vec())
                .map_err(|e| TokenizeError::Encode(e.to_string())),
        }
    }

    /// Number of tokens in `text`, with no special tokens added.
    pub fn count(&self, text: &str) -> Result<usize, TokenizeError> {
        self.encode(text).map(|ids| ids.len())
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizeError> {
        match &*self.inner {
            Inner::Tiktoken(bpe) => bpe
                .decode(ids)
                .map_err(|e| TokenizeError::Decode(e.to_string())),
            Inner::HuggingFace(tok) => tok
                .decode(ids, false)
                .map_err(|e| TokenizeError::Decode(e.to_string())),
        }
    }

    /// Whether this tokenizer encodes text piece by piece, a piece ending
    /// at every space before a word, after a normalizer that leaves
    /// lowercase ASCII words alone: then text of words that are one token
    /// each encodes to those tokens, whatever their neighbours. True of the
    /// tiktoken encodings, and of a tokenizer.json whose normalizer is none
    /// (or Unicode normal forms, lowercasing, accent stripping) and whose
    /// pre-tokenizer splits words (byte-level with its regex, a regex
    /// split, Metaspace with splitting, whitespace). False otherwise, e.g.
    /// for SentencePiece models that replace spaces in a normalizer and let
    /// merges run across words.
    pub fn splits_at_words(&self) -> bool {
        match &*self.inner {
            Inner::Tiktoken(_) => true,
            Inner::HuggingFace(tok) => {
                let normalizer = serde_json::to_value(tok.get_normalizer()).ok();
                let pre = serde_json::to_value(tok.get_pre_tokenizer()).ok();
                normalizer.as_ref().is_some_and(word_safe_normalizer)
                    && pre
                        .as_ref()
                        .is_some_and(|p| word_safe_pre_tokenizer(p) && splits_words(p))
            }
        }
    }

    /// Size of the vocabulary, special tokens excluded where known.
    pub fn vocab_size(&self) -> usize {
        match &*self.inner {
            Inner::Tiktoken(_) => match self.spec {
                TokenizerSpec::Cl100kBase => 100_256,
                _ => 199_998,
            },
            Inner::HuggingFace(tok) => tok.get_vocab_size(false),
        }
    }
}

/// A normalizer (as tokenizer.json writes it) that changes no lowercase
/// ASCII word and no space.
fn word_safe_normalizer(n: &serde_json::Value) -> bool {
    if n.is_null() {
        return true;
    }
    match n["type"].as_str() {
        Some("NFC" | "NFD" | "NFKC" | "NFKD" | "Lowercase" | "StripAccents") => true,
        Some("Sequence") => n["normalizers"]
            .as_array()
            .is_some_and(|all| all.iter().all(word_safe_normalizer)),
        _ => false,
    }
}

/// A pre-tokenizer made only of kinds that cut text into pieces (none
/// that joins or rewrites across words).
fn word_safe_pre_tokenizer(p: &serde_json::Value) -> bool {
    match p["type"].as_str() {
        Some(
            "ByteLevel" | "Metaspace" | "Whitespace" | "WhitespaceSplit" | "Split" | "Punctuation"
            | "Digits",
        ) => true,
        Some("Sequence") => p["pretokenizers"]
            .as_array()
            .is_some_and(|all| all.iter().all(word_safe_pre_tokenizer)),
        _ => false,
    }
}

/// Whether some part of the pre-tokenizer ends a piece at each word.
fn splits_words(p: &serde_json::Value) -> bool {
    match p["type"].as_str() {
        Some("ByteLevel") => p["use_regex"].as_bool().unwrap_or(true),
        Some("Metaspace") => p["split"].as_bool().unwrap_or(true),
        Some("Whitespace" | "WhitespaceSplit") => true,
        Some("Split") => matches!(
            p["behavior"].as_str(),
            Some("Isolated" | "Removed" | "MergedWithNext")
        ),
        Some("Sequence") => p["pretokenizers"]
            .as_array()
            .is_some_and(|all| all.iter().any(splits_words)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_splitting_configurations_are_told_apart() {
        use serde_json::json;
        let llama3 = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]});
        assert!(word_safe_pre_tokenizer(&llama3) && splits_words(&llama3));
        let gpt2 = json!({"type": "ByteLevel", "use_regex": true});
        assert!(word_safe_pre_tokenizer(&gpt2) && splits_words(&gpt2));
        let bytes_only = json!({"type": "ByteLevel", "use_regex": false});
        assert!(!splits_words(&bytes_only));
        let metaspace = json!({"type": "Metaspace", "replacement": "\u{2581}", "split": true});
        assert!(splits_words(&metaspace));
        assert!(!splits_words(&json!({"type": "Metaspace", "split": false})));
        assert!(!word_safe_pre_tokenizer(
            &json!({"type": "CharDelimiterSplit"})
        ));
        assert!(!word_safe_pre_tokenizer(&serde_json::Value::Null));
        // Llama 2 style: spaces replaced in the normalizer, merges across
        // words.
        let llama2 = json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]});
        assert!(!word_safe_normalizer(&llama2));
        assert!(word_safe_normalizer(&serde_json::Value::Null));
        assert!(word_safe_normalizer(
            &json!({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]})
        ));
        assert!(
            Tokenizer::load(&TokenizerSpec::O200kBase)
                .unwrap()
                .splits_at_words()
        );
    }

    #[test]
    fn embedded_encodings_count_and_round_trip() {
        for spec in [TokenizerSpec::O200kBase, TokenizerSpec::Cl100kBase] {
            let tok = Tokenizer::load(&spec).unwrap();
            let ids = tok.encode("Hello, world! How are you?").unwrap();
            assert!(ids.len() >= 6 && ids.len() <= 9, "{spec}: {ids:?}");
            assert_eq!(tok.decode(&ids).unwrap(), "Hello, world! How are you?");
        }
    }

    #[test]
    fn spec_parses_names_and_rejects_unknown() {
        assert_eq!("o200k_base".parse(), Ok(TokenizerSpec::O200kBase));
        assert_eq!("cl100k_base".parse(), Ok(TokenizerSpec::Cl100kBase));
        assert_eq!(
            "x/tokenizer.json".parse(),
            Ok(TokenizerSpec::HuggingFace("x/tokenizer.json".into()))
        );
        assert!("gpt2-ish".parse::<TokenizerSpec>().is_err());
    }

    #[test]
    fn missing_tokenizer_json_is_a_clear_error() {
        let err = Tokenizer::load(&TokenizerSpec::HuggingFace("nope/tokenizer.json".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope/tokenizer.json"), "{err}");
    }
}
