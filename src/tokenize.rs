//! Tokenizer choice: tiktoken's embedded encodings, or a HuggingFace
//! `tokenizer.json` (Llama and Qwen users need exact counts) given by path,
//! by model directory, or by model id from the local HuggingFace hub cache
//! (never downloaded: runs and tests stay offline).
//!
//! Every tokenizer here is `Send + Sync`, so ingest can count tokens on all
//! cores with rayon.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use thiserror::Error;

/// The file a HuggingFace model keeps its tokenizer in.
pub const TOKENIZER_JSON: &str = "tokenizer.json";

/// Which tokenizer to use, as given on the command line. Directories and
/// model ids are resolved to their `tokenizer.json` when parsed, so a
/// missing file is a usage error naming the flag, and the spec keeps both
/// what was given (its `Display`) and the file it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerSpec {
    /// tiktoken `o200k_base` (GPT-4o family), embedded.
    O200kBase,
    /// tiktoken `cl100k_base` (GPT-4, GPT-3.5), embedded.
    Cl100kBase,
    /// A HuggingFace `tokenizer.json` file.
    HuggingFace(PathBuf),
    /// A model directory holding `tokenizer.json`, as a HuggingFace
    /// download leaves it (`./Llama-3.2-1B/`).
    ModelDir {
        /// The directory given.
        dir: PathBuf,
        /// Its `tokenizer.json`.
        file: PathBuf,
    },
    /// A model id (`meta-llama/Llama-3.2-1B`) found in the local
    /// HuggingFace hub cache.
    HubModel {
        /// The id given.
        id: String,
        /// The snapshot (revision) whose `tokenizer.json` was taken.
        revision: String,
        /// That `tokenizer.json`.
        file: PathBuf,
    },
}

impl TokenizerSpec {
    /// The `tokenizer.json` this spec loads, if it is a HuggingFace one.
    pub fn json_path(&self) -> Option<&Path> {
        match self {
            Self::O200kBase | Self::Cl100kBase => None,
            Self::HuggingFace(file) | Self::ModelDir { file, .. } | Self::HubModel { file, .. } => {
                Some(file)
            }
        }
    }

    /// Parses `s` as [`FromStr`] does, looking model ids up in the hub
    /// cache at `cache` (`None`: no cache could be located).
    pub fn parse_with_cache(s: &str, cache: Option<&Path>) -> Result<Self, TokenizerSpecError> {
        match s {
            "o200k_base" => return Ok(Self::O200kBase),
            "cl100k_base" => return Ok(Self::Cl100kBase),
            _ => {}
        }
        let path = Path::new(s);
        if path.is_dir() {
            let file = path.join(TOKENIZER_JSON);
            return if file.is_file() {
                Ok(Self::ModelDir {
                    dir: path.to_path_buf(),
                    file,
                })
            } else {
                Err(TokenizerSpecError::NoTokenizerJson {
                    dir: path.to_path_buf(),
                })
            };
        }
        if s.ends_with(".json") || path.is_file() {
            return Ok(Self::HuggingFace(path.to_path_buf()));
        }
        if !is_model_id(s) {
            return Err(TokenizerSpecError::Unknown {
                given: s.to_owned(),
            });
        }
        let Some(cache) = cache else {
            return Err(TokenizerSpecError::NotInCache {
                id: s.to_owned(),
                cache: None,
            });
        };
        let (revision, file) = resolve_in_hub_cache(cache, s)?;
        Ok(Self::HubModel {
            id: s.to_owned(),
            revision,
            file,
        })
    }
}

impl FromStr for TokenizerSpec {
    type Err = TokenizerSpecError;

    /// `o200k_base`, `cl100k_base`, a model directory holding
    /// `tokenizer.json`, the path of a `tokenizer.json` (anything else that
    /// names an existing file, or has a `.json` ending), or a model id in
    /// the local hub cache ([`hub_cache_dir`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_with_cache(s, hub_cache_dir().as_deref())
    }
}

impl fmt::Display for TokenizerSpec {
    /// What was given: it parses back to the same spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::O200kBase => f.write_str("o200k_base"),
            Self::Cl100kBase => f.write_str("cl100k_base"),
            Self::HuggingFace(path) => write!(f, "{}", path.display()),
            Self::ModelDir { dir, .. } => write!(f, "{}", dir.display()),
            Self::HubModel { id, .. } => f.write_str(id),
        }
    }
}

/// Why a `--tokenizer` value names no tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenizerSpecError {
    /// Neither an encoding, a path that exists, nor a model id.
    #[error(
        "unknown tokenizer {given:?}: no file or directory of that name; use o200k_base, cl100k_base, the path of a HuggingFace tokenizer.json or of a model directory holding one, or a model id such as meta-llama/Llama-3.2-1B from the local HuggingFace cache"
    )]
    Unknown {
        /// The value given.
        given: String,
    },
    /// A directory was given that has no `tokenizer.json`.
    #[error(
        "{}: the directory has no tokenizer.json (looked for {}); give a model directory holding tokenizer.json, or the path of the tokenizer.json itself",
        dir.display(), dir.join(TOKENIZER_JSON).display()
    )]
    NoTokenizerJson {
        /// The directory given.
        dir: PathBuf,
    },
    /// A model id that the local hub cache does not hold.
    #[error(
        "tokenizer {id:?}: not o200k_base or cl100k_base, no file or directory of that name, and not in the local HuggingFace cache ({}; nothing is downloaded); get it with `huggingface-cli download {id} tokenizer.json`, or pass the path of its tokenizer.json or model directory",
        match cache {
            Some(dir) => format!("searched {}", dir.join(hub_model_dir_name(id)).display()),
            None => "none found: $HF_HUB_CACHE, $HF_HOME and $HOME are unset".to_owned(),
        }
    )]
    NotInCache {
        /// The id given.
        id: String,
        /// The cache root searched.
        cache: Option<PathBuf>,
    },
    /// The cache holds the model, but no snapshot of it has a
    /// `tokenizer.json` (only other files were downloaded).
    #[error(
        "tokenizer {id:?}: the local HuggingFace cache has {} but no snapshot there holds tokenizer.json; get it with `huggingface-cli download {id} tokenizer.json`, or pass the path of a tokenizer.json",
        model_dir.display()
    )]
    NoSnapshot {
        /// The id given.
        id: String,
        /// The model's directory in the cache.
        model_dir: PathBuf,
    },
}

/// Whether `s` has the shape of a HuggingFace model id: `name` or
/// `org/name`, of ASCII letters, digits, `-`, `_` and `.`, neither part
/// starting with `.` or `-`.
fn is_model_id(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '-'])
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match s.split_once('/') {
        Some((org, name)) => part(org) && part(name),
        None => part(s),
    }
}

/// The cache directory of model `id`: `models--{org}--{name}`.
fn hub_model_dir_name(id: &str) -> String {
    format!("models--{}", id.replace('/', "--"))
}

/// The local HuggingFace hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`,
/// else `~/.cache/huggingface/hub` (as `huggingface_hub` locates it).
pub fn hub_cache_dir() -> Option<PathBuf> {
    hub_cache_from(
        std::env::var_os("HF_HUB_CACHE"),
        std::env::var_os("HF_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`hub_cache_dir`] from the three variables' values (empty is unset).
fn hub_cache_from(
    hub_cache: Option<OsString>,
    hf_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    set(hub_cache)
        .or_else(|| set(hf_home).map(|h| h.join("hub")))
        .or_else(|| set(home).map(|h| h.join(".cache/huggingface/hub")))
}

/// The revision and `tokenizer.json` of model `id` in the hub cache rooted
/// at `cache` (layout `models--{org}--{name}/snapshots/{revision}/`): the
/// revision `refs/main` names when its snapshot has the file, else the
/// newest snapshot (by modification time, then name) that has it.
pub fn resolve_in_hub_cache(
    cache: &Path,
    id: &str,
) -> Result<(String, PathBuf), TokenizerSpecError> {
    let model_dir = cache.join(hub_model_dir_name(id));
    let snapshots = model_dir.join("snapshots");
    if !snapshots.is_dir() {
        return Err(TokenizerSpecError::NotInCache {
            id: id.to_owned(),
            cache: Some(cache.to_path_buf()),
        });
    }
    if let Ok(main) = std::fs::read_to_string(model_dir.join("refs").join("main")) {
        let revision = main.trim();
        let file = snapshots.join(revision).join(TOKENIZER_JSON);
        // One plain path component (a commit hash), never `..` or a path.
        if is_model_id(revision) && !revision.contains('/') && file.is_file() {
            return Ok((revision.to_owned(), file));
        }
    }
    let newest = std::fs::read_dir(&snapshots)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.path().join(TOKENIZER_JSON).is_file())
        .filter_map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((modified, e.file_name()))
        })
        .max();
    match newest {
        Some((_, revision)) => Ok((
            revision.to_string_lossy().into_owned(),
            snapshots.join(&revision).join(TOKENIZER_JSON),
        )),
        None => Err(TokenizerSpecError::NoSnapshot {
            id: id.to_owned(),
            model_dir,
        }),
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
            TokenizerSpec::HuggingFace(path)
            | TokenizerSpec::ModelDir { file: path, .. }
            | TokenizerSpec::HubModel { file: path, .. } => {
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

    /// A short name for metadata that says what was given and the file it
    /// resolved to, never a full local path: the encoding name;
    /// `hf:tokenizer.json` for a file; `hf:{dir name}/tokenizer.json` for a
    /// model directory; `hf:{id}@{revision}/tokenizer.json` for a model
    /// from the hub cache.
    pub fn name(&self) -> String {
        let last = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        match &self.spec {
            TokenizerSpec::HuggingFace(path) => format!("hf:{}", last(path)),
            TokenizerSpec::ModelDir { dir, file } => {
                // `./` or `..` has no file name: take the directory's own.
                let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
                format!("hf:{}/{}", last(&dir), last(file))
            }
            TokenizerSpec::HubModel { id, revision, file } => {
                format!("hf:{id}@{revision}/{}", last(file))
            }
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

    /// A small word-level `tokenizer.json` written to `dir`.
    fn write_tokenizer_json(dir: &Path) -> PathBuf {
        use serde_json::json;
        let vocab = json!({"<unk>": 0, "hello": 1, "world": 2});
        let tok = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
        });
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(TOKENIZER_JSON);
        std::fs::write(&path, tok.to_string()).unwrap();
        path
    }

    /// A snapshot of `id` in the hub cache at `cache`, with a
    /// `tokenizer.json` when `with_file`, last modified `age_s` ago.
    fn snapshot(cache: &Path, id: &str, revision: &str, with_file: bool, age_s: u64) {
        let dir = cache
            .join(hub_model_dir_name(id))
            .join("snapshots")
            .join(revision);
        std::fs::create_dir_all(&dir).unwrap();
        if with_file {
            write_tokenizer_json(&dir);
        }
        let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age_s);
        std::fs::File::open(&dir)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    #[test]
    fn model_directory_resolves_to_its_tokenizer_json() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("Llama-3.2-1B");
        let file = write_tokenizer_json(&dir);
        let given = format!("{}/", dir.display());
        let spec: TokenizerSpec = given.parse().unwrap();
        assert_eq!(spec.json_path(), Some(file.as_path()));
        assert_eq!(spec.to_string(), given, "Display is what was given");
        let tok = Tokenizer::load(&spec).unwrap();
        assert_eq!(tok.count("hello world hello").unwrap(), 3);
        assert_eq!(tok.name(), "hf:Llama-3.2-1B/tokenizer.json");
    }

    #[test]
    fn directory_without_tokenizer_json_names_it_and_what_was_looked_for() {
        let tmp = tempfile::tempdir().unwrap();
        let err = tmp
            .path()
            .to_str()
            .unwrap()
            .parse::<TokenizerSpec>()
            .unwrap_err();
        assert_eq!(
            err,
            TokenizerSpecError::NoTokenizerJson {
                dir: tmp.path().into()
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&tmp.path().join("tokenizer.json").display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn hub_model_resolves_to_the_revision_refs_main_names() {
        let cache = tempfile::tempdir().unwrap();
        let id = "meta-llama/Llama-3.2-1B";
        snapshot(cache.path(), id, "aaa111", true, 100);
        // Newer, but not the one refs/main names.
        snapshot(cache.path(), id, "bbb222", true, 0);
        let refs = cache.path().join("models--meta-llama--Llama-3.2-1B/refs");
        std::fs::create_dir_all(&refs).unwrap();
        std::fs::write(refs.join("main"), "aaa111\n").unwrap();
        let spec = TokenizerSpec::parse_with_cache(id, Some(cache.path())).unwrap();
        let file = cache
            .path()
            .join("models--meta-llama--Llama-3.2-1B/snapshots/aaa111/tokenizer.json");
        assert_eq!(
            spec,
            TokenizerSpec::HubModel {
                id: id.into(),
                revision: "aaa111".into(),
                file
            }
        );
        assert_eq!(spec.to_string(), id);
        let tok = Tokenizer::load(&spec).unwrap();
        assert_eq!(
            tok.name(),
            "hf:meta-llama/Llama-3.2-1B@aaa111/tokenizer.json"
        );
    }

    #[test]
    fn hub_model_without_refs_takes_the_newest_snapshot_with_tokenizer_json() {
        let cache = tempfile::tempdir().unwrap();
        let id = "Qwen/Qwen2.5-0.5B";
        snapshot(cache.path(), id, "old", true, 200);
        snapshot(cache.path(), id, "mid", true, 100);
        // The newest holds only other files.
        snapshot(cache.path(), id, "new", false, 0);
        let (revision, file) = resolve_in_hub_cache(cache.path(), id).unwrap();
        assert_eq!(revision, "mid");
        assert!(file.ends_with("snapshots/mid/tokenizer.json"), "{file:?}");
        // A refs/main naming a snapshot without the file falls back too.
        let refs = cache.path().join("models--Qwen--Qwen2.5-0.5B/refs");
        std::fs::create_dir_all(&refs).unwrap();
        std::fs::write(refs.join("main"), "new").unwrap();
        assert_eq!(resolve_in_hub_cache(cache.path(), id).unwrap().0, "mid");
    }

    #[test]
    fn model_id_missing_from_the_cache_says_where_it_looked_and_how_to_get_it() {
        let cache = tempfile::tempdir().unwrap();
        let err = TokenizerSpec::parse_with_cache("org/absent-model", Some(cache.path()))
            .unwrap_err()
            .to_string();
        let searched = cache.path().join("models--org--absent-model");
        assert!(
            err.contains(&searched.display().to_string()),
            "names the directory searched: {err}"
        );
        assert!(
            err.contains("huggingface-cli download org/absent-model tokenizer.json"),
            "{err}"
        );
        assert!(err.contains("path"), "{err}");
        // In the cache, but without tokenizer.json in any snapshot.
        snapshot(cache.path(), "org/partial", "r1", false, 0);
        let err = TokenizerSpec::parse_with_cache("org/partial", Some(cache.path())).unwrap_err();
        assert!(
            matches!(err, TokenizerSpecError::NoSnapshot { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("huggingface-cli download org/partial tokenizer.json")
        );
        // No cache located at all.
        let err = TokenizerSpec::parse_with_cache("org/absent-model", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("HF_HUB_CACHE"), "{err}");
        // Not shaped like an id: no cache lookup, the general message.
        let err = TokenizerSpec::parse_with_cache("no/such/thing", Some(cache.path())).unwrap_err();
        assert!(matches!(err, TokenizerSpecError::Unknown { .. }), "{err}");
    }

    #[test]
    fn hub_cache_location_follows_huggingface_precedence() {
        let v = |s: &str| Some(OsString::from(s));
        assert_eq!(
            hub_cache_from(v("/c"), v("/h"), v("/home/u")),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            hub_cache_from(v(""), v("/h"), v("/home/u")),
            Some(PathBuf::from("/h/hub"))
        );
        assert_eq!(
            hub_cache_from(None, None, v("/home/u")),
            Some(PathBuf::from("/home/u/.cache/huggingface/hub"))
        );
        assert_eq!(hub_cache_from(None, None, None), None);
    }

    #[test]
    fn model_ids_are_told_from_paths() {
        for id in [
            "meta-llama/Llama-3.2-1B",
            "gpt2",
            "Qwen/Qwen2.5-0.5B-Instruct",
        ] {
            assert!(is_model_id(id), "{id}");
        }
        for not in ["./x", "/abs/path", "a/b/c", "../up", "", "org/", "a b/c"] {
            assert!(!is_model_id(not), "{not}");
        }
    }
}
