//! Synthetic prompts with exactly `input_tokens` tokens under a tokenizer.
//!
//! Prompts are sequences of "safe words" ([`words`]): vocabulary entries that
//! are whole lowercase words (3-10 ASCII letters) of one token each and stay
//! one token each when written one after another, because the pre-tokenizer
//! splits before every space. The pool is checked in sequence when a
//! [`PromptSynth`] is built. Under a HuggingFace tokenizer every prompt is
//! re-tokenized before it is returned (a peer's decode/encode drift turned
//! 6,758-token rows into 7,253, so a prompt of the wrong length is never
//! handed out); under tiktoken's encodings a prompt is exact by
//! construction, which one prompt in 64 re-tokenized checks during the run
//! (see `PromptSynth::exact_under_tokenizer`).
//!
//! Each prompt is unique from its first token: its words come from a hash of
//! the seed, the request id and the loop count, so the server's prefix cache
//! is not flattered. Where `prefix_block_ids` say requests share a prefix,
//! block `i` of the prompt is `block_size` words drawn from a hash of the
//! block id (and the pass over the trace, see [`PromptSynth::synthesize`]),
//! so equal ids give equal token blocks and the cache sees what production
//! saw.
//!
//! Text of byte-level vocabularies (tiktoken, Llama 3, Qwen) reads
//! `"alpha beta gamma"`: the first word is a space-less token, because chat
//! templates often trim the message. Where a vocabulary has too few of those,
//! the text starts with a space (`" alpha beta"`). SentencePiece-style
//! vocabularies (`▁alpha`) give `"alpha beta gamma"` as well.

mod words;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use thiserror::Error;

use crate::tokenize::{TokenizeError, Tokenizer, TokenizerSpec};
use crate::trace::TraceRecord;

use words::{Word, WordPool};

/// What to send as the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptMode {
    /// Synthetic text with exactly `input_tokens` tokens.
    #[default]
    Synthetic,
    /// The same synthetic prompt as token ids (completions API only).
    Tokens,
    /// The trace's `prompt_text` as it was (needs `ingest --keep-text`).
    Original,
}

/// A synthesised prompt: `text` re-tokenizes to exactly `ids`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthPrompt {
    /// Token ids, no special tokens (the server adds BOS or a chat template).
    pub ids: Vec<u32>,
    /// Their text. Under tiktoken and byte-level `tokenizer.json` files this
    /// is also what decoding `ids` gives.
    pub text: String,
}

/// Why a prompt, or the synthesiser, could not be built.
#[derive(Debug, Error)]
pub enum PromptError {
    /// The vocabulary has too few safe words.
    #[error(
        "tokenizer {tokenizer}: only {found} whole lowercase words of one token each (need {needed}); synthetic prompts need a BPE or SentencePiece vocabulary of words: use another --tokenizer or --prompts original"
    )]
    Vocabulary {
        /// Tokenizer name.
        tokenizer: String,
        /// Safe words found.
        found: usize,
        /// Needed.
        needed: usize,
    },
    /// Safe words kept merging or splitting when written in sequence.
    #[error(
        "tokenizer {tokenizer}: words do not re-tokenize one token per word when written in sequence (gave up after {rounds} rounds of dropping words); use another --tokenizer or --prompts original"
    )]
    Unstable {
        /// Tokenizer name.
        tokenizer: String,
        /// Rounds of repair tried.
        rounds: usize,
    },
    /// `input_tokens` is 0 or negative. Servers refuse empty prompts, so
    /// none is sent; the replay records the row as failed.
    #[error(
        "request {request_id:?}: input_tokens is {input_tokens}; a prompt needs at least one token"
    )]
    Empty {
        /// The record's request id.
        request_id: String,
        /// Its `input_tokens`.
        input_tokens: i32,
    },
    /// `input_tokens` is beyond any context window (a corrupt row); building
    /// it would take gigabytes.
    #[error(
        "request {request_id:?}: input_tokens is {input_tokens}, more than the {MAX_INPUT_TOKENS} a synthetic prompt may have"
    )]
    TooLong {
        /// The record's request id.
        request_id: String,
        /// Its `input_tokens`.
        input_tokens: i32,
    },
    /// The record has prefix blocks but the trace's block size is 0.
    #[error(
        "request {request_id:?}: has prefix_block_ids but the prefix block size is 0 (the trace's llm_replay.prefix_block_size metadata)"
    )]
    BlockSize {
        /// The record's request id.
        request_id: String,
    },
    /// The prompt re-tokenized to another length, even after repairs.
    #[error(
        "request {request_id:?}: synthetic prompt of {want} tokens re-tokenizes to {got} under {tokenizer} after {repairs} repairs; not sent"
    )]
    Drift {
        /// The record's request id.
        request_id: String,
        /// Tokenizer name.
        tokenizer: String,
        /// Tokens asked for.
        want: usize,
        /// Tokens the text re-tokenized to.
        got: usize,
        /// Words replaced before giving up.
        repairs: usize,
    },
    /// Re-tokenizing a prompt failed.
    #[error("request {request_id:?}: re-tokenizing the synthetic prompt: {error}")]
    Retokenize {
        /// The record's request id.
        request_id: String,
        /// What the tokenizer said (not a `source`: `{:#}` would print it
        /// twice).
        error: TokenizeError,
    },
    /// The tokenizer failed while its vocabulary was scanned, or while a
    /// prompt was counted.
    #[error(transparent)]
    Tokenizer(#[from] TokenizeError),
}

/// Largest prompt built: 16 Mi tokens, above every context window, so that
/// a corrupt `input_tokens` is an error rather than an 8 GiB allocation.
pub const MAX_INPUT_TOKENS: usize = 16 * 1024 * 1024;

/// Words replaced, one per round, when a prompt does not re-tokenize to its
/// own ids. Never needed with the vocabularies tested (the pool is checked in
/// sequence at start-up); a safety net for tokenizers with cross-word merges.
const MAX_REPAIRS: usize = 8;

/// Domain tags of the hashes that seed word choice, so that a block id and a
/// request id with the same bytes never give the same words.
const TAG_REQUEST: &[u8] = b"llm-replay/prompt/request/v1";
const TAG_BLOCK: &[u8] = b"llm-replay/prompt/block/v1";
const TAG_REPLY: &[u8] = b"llm-replay/prompt/reply/v1";
const TAG_SALT: &[u8] = b"llm-replay/prompt/salt/v1";

/// splitmix64 (Steele, Lea and Flood, 2014): a few multiply-xorshifts per
/// word, statistically plenty for choosing words and several times faster
/// than a cryptographic RNG; the seed itself comes from blake3.
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-high; the bias is below 2^-40
    /// for the pool sizes here). `n` must be non-zero.
    fn below(&mut self, n: usize) -> usize {
        let wide = u128::from(self.next_u64()) * n as u128;
        (wide >> 64) as usize
    }
}

/// A 64-bit seed from a tag, the run seed, the loop count and a key.
fn seed_of(tag: &[u8], seed: u64, repeat: u32, key: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    // Fixed-width fields first and the key last: the encoding is unambiguous.
    h.update(tag);
    h.update(&seed.to_le_bytes());
    h.update(&repeat.to_le_bytes());
    h.update(key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// A salt made from `base` and `key` (a sweep step, a process), never 0
/// (which means no salt): the same hash that seeds every prompt.
pub fn derive_salt(base: u64, key: &[u8]) -> u64 {
    seed_of(TAG_SALT, base, u32::MAX, key).max(1)
}

/// Index of the first token where `want` and `got` differ, `None` if equal.
fn first_difference(want: &[u32], got: &[u32]) -> Option<usize> {
    match want.iter().zip(got).position(|(a, b)| a != b) {
        Some(i) => Some(i),
        None if want.len() == got.len() => None,
        None => Some(want.len().min(got.len())),
    }
}

/// A session's synthetic conversation so far: the words of the last
/// prompt sent, which the next turn repeats before its reply and new words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    picks: Vec<u32>,
}

impl History {
    /// Tokens of the conversation so far.
    pub fn len(&self) -> usize {
        self.picks.len()
    }

    /// Whether nothing was said yet.
    pub fn is_empty(&self) -> bool {
        self.picks.is_empty()
    }
}

/// Builds synthetic prompts; `Send + Sync`, share it behind an `Arc`.
#[derive(Debug)]
pub struct PromptSynth {
    tokenizer: Tokenizer,
    pool: std::sync::Arc<WordPool>,
    block_size: u32,
    seed: u64,
    /// Whether rendered ids are the text's tokens by construction (see
    /// [`PromptSynth::exact_under_tokenizer`]).
    by_construction: bool,
    /// Prompts handed out, for the spot checks.
    handed_out: AtomicU64,
    /// Set when a spot check found a prompt that was not exact: from then
    /// on every prompt is re-tokenized.
    tripped: AtomicBool,
}

/// A tokenizer.json that splits at words is trusted after this many
/// sample prompts of [`PROBATION_WORDS`] words re-encode exactly.
const PROBATION_PROMPTS: usize = 16;

/// Words in each probation prompt.
const PROBATION_WORDS: usize = 512;

/// With prompts exact by construction, one in this many is re-tokenized
/// anyway, so a tokenizer that breaks the argument is caught in the run.
const SPOT_CHECK_EVERY: u64 = 64;

impl PromptSynth {
    /// Scans the vocabulary of `tokenizer` for safe words and checks them in
    /// sequence: 0.1-0.3 s in a release build for a 100k-200k vocabulary,
    /// once per run.
    /// `block_size` is the trace's prefix block size in tokens; `seed` varies
    /// every prompt.
    pub fn new(tokenizer: Tokenizer, block_size: u32, seed: u64) -> Result<Self, PromptError> {
        let pool = WordPool::scan(&tokenizer)?;
        // tiktoken's pre-tokenizer regexes (o200k_base and cl100k_base)
        // split text of lowercase ASCII words joined by single spaces into
        // exactly one piece per word, `word` or ` word` (an optional
        // non-letter, then a run of letters, which the next space ends),
        // and encode each piece on its own. The pool holds only words whose
        // piece is one token, so a rendered prompt's ids are its tokens:
        // re-encoding it proves nothing new.
        // A tokenizer.json whose configuration splits words the same way
        // (see [`Tokenizer::splits_at_words`]) gets the same treatment once
        // it also passes a probation: sample prompts must re-encode to
        // their own ids with no repair. The configuration argument covers
        // what a sample cannot (every pair of words); the sample covers
        // what the argument cannot (a split regex read from the file).
        let mut synth = Self {
            tokenizer,
            pool: std::sync::Arc::new(pool),
            block_size,
            seed,
            by_construction: false,
            handed_out: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
        };
        synth.by_construction = match synth.tokenizer.spec() {
            TokenizerSpec::O200kBase | TokenizerSpec::Cl100kBase => true,
            TokenizerSpec::HuggingFace(_)
            | TokenizerSpec::ModelDir { .. }
            | TokenizerSpec::HubModel { .. } => {
                synth.tokenizer.splits_at_words() && synth.passes_probation()?
            }
        };
        Ok(synth)
    }

    /// Whether [`PROBATION_PROMPTS`] prompts of [`PROBATION_WORDS`] words
    /// each encode to exactly the ids they were rendered from.
    fn passes_probation(&self) -> Result<bool, PromptError> {
        let mut rng = SplitMix::new(seed_of(b"llm-replay/prompt/probation/v1", 0, 0, b""));
        let mut picks = Vec::with_capacity(PROBATION_WORDS);
        for _ in 0..PROBATION_PROMPTS {
            picks.clear();
            self.draw(&mut rng, PROBATION_WORDS, &mut picks);
            let prompt = self.render(&picks);
            let got =
                self.tokenizer
                    .encode(&prompt.text)
                    .map_err(|error| PromptError::Retokenize {
                        request_id: "(probation)".to_owned(),
                        error,
                    })?;
            if got != prompt.ids {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether prompts are exact by construction (spot-checked) rather
    /// than re-tokenized one by one.
    pub fn exact_by_construction(&self) -> bool {
        self.by_construction
    }

    /// The same synthesiser with every prompt salted by `salt` (0 keeps
    /// them): a run or sweep step that salts its prompts sends none of the
    /// text an earlier run left in the server's prefix cache, while prefix
    /// sharing inside the run (equal `prefix_block_ids`, session history)
    /// is kept, since every prompt of the run is salted alike.
    pub fn salted(&self, salt: u64) -> Self {
        Self {
            tokenizer: self.tokenizer.clone(),
            pool: self.pool.clone(),
            block_size: self.block_size,
            seed: if salt == 0 {
                self.seed
            } else {
                seed_of(TAG_SALT, self.seed, 0, &salt.to_le_bytes())
            },
            by_construction: self.by_construction,
            handed_out: AtomicU64::new(0),
            tripped: AtomicBool::new(self.tripped.load(Ordering::Relaxed)),
        }
    }

    /// The tokenizer prompts are exact under.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// A prompt of exactly `record.input_tokens` tokens, checked by
    /// re-tokenizing its text.
    ///
    /// `repeat` is how many times the trace has looped (0 the first time).
    /// It seeds the shared blocks too: within one pass equal block ids give
    /// equal tokens, but the next pass gets new content throughout, so a
    /// looped trace sees the cache hits production saw in one pass, not the
    /// previous pass's whole working set (with Mooncake-style traces, where
    /// every block of every request has an id, reusing blocks across passes
    /// would make the second pass nearly all hits).
    ///
    /// Blocks cover `block_size` tokens each; the last one may be cut short
    /// by `input_tokens`, and what they do not cover is filler unique to the
    /// request and pass. In the rare case that a prompt does not re-tokenize
    /// to its own ids, a word is replaced and the check repeated (the repair
    /// depends only on the content, so shared blocks stay shared unless the
    /// fault straddles a block boundary); a prompt that cannot be made exact
    /// is an error, never a prompt of the wrong length.
    pub fn synthesize(
        &self,
        record: &TraceRecord,
        repeat: u32,
    ) -> Result<SynthPrompt, PromptError> {
        let mut picks = self.picks(record, repeat)?;
        self.exact_under_tokenizer(&record.request_id, &mut picks)
    }

    /// The first turn of a session: the prompt [`Self::synthesize`] gives
    /// (shared prefix blocks included), and the history it starts.
    pub fn first_turn(
        &self,
        record: &TraceRecord,
        repeat: u32,
    ) -> Result<(SynthPrompt, History), PromptError> {
        let mut picks = self.picks(record, repeat)?;
        let prompt = self.exact_under_tokenizer(&record.request_id, &mut picks)?;
        Ok((prompt, History { picks }))
    }

    /// A later turn of a session: the previous turn's prompt (`history`),
    /// then `reply_tokens` words standing for the reply the server gave,
    /// then new words so that the prompt has `record.input_tokens` tokens;
    /// when the history is already that long (the server answered longer
    /// than recorded), the history is kept whole and one new word is added.
    /// Every token but the new ones repeats what the server saw or wrote
    /// before, in order, so its prefix cache can serve them. Returns the
    /// prompt, its history (to continue from), and how many of its tokens
    /// repeat the session so far.
    pub fn next_turn(
        &self,
        history: &History,
        reply_tokens: usize,
        record: &TraceRecord,
        repeat: u32,
    ) -> Result<(SynthPrompt, History, usize), PromptError> {
        let want = usize::try_from(record.input_tokens).unwrap_or(0);
        let mut picks = history.picks.clone();
        let mut reply = SplitMix::new(seed_of(
            TAG_REPLY,
            self.seed,
            repeat,
            record.request_id.as_bytes(),
        ));
        self.draw(&mut reply, reply_tokens, &mut picks);
        let repeated = picks.len();
        if repeated >= MAX_INPUT_TOKENS {
            return Err(PromptError::TooLong {
                request_id: record.request_id.clone(),
                input_tokens: i32::try_from(repeated).unwrap_or(i32::MAX),
            });
        }
        let fresh = want.saturating_sub(repeated).max(1);
        let mut rng = SplitMix::new(seed_of(
            TAG_REQUEST,
            self.seed,
            repeat,
            record.request_id.as_bytes(),
        ));
        self.draw(&mut rng, fresh, &mut picks);
        let prompt = self.exact_under_tokenizer(&record.request_id, &mut picks)?;
        Ok((prompt, History { picks }, repeated))
    }

    /// A message of exactly `tokens` tokens (at least one) for a turn of
    /// `request_id`: the new user message of a chat turn (`reply` false),
    /// or the stand-in for a reply that never came (`reply` true). Seeded
    /// by the request id and `repeat`, so equal runs send equal text.
    pub fn message(
        &self,
        request_id: &str,
        repeat: u32,
        tokens: usize,
        reply: bool,
    ) -> Result<SynthPrompt, PromptError> {
        if tokens > MAX_INPUT_TOKENS {
            return Err(PromptError::TooLong {
                request_id: request_id.to_owned(),
                input_tokens: i32::try_from(tokens).unwrap_or(i32::MAX),
            });
        }
        let tag = if reply { TAG_REPLY } else { TAG_REQUEST };
        let mut rng = SplitMix::new(seed_of(tag, self.seed, repeat, request_id.as_bytes()));
        let mut picks = Vec::with_capacity(tokens.max(1));
        self.draw(&mut rng, tokens.max(1), &mut picks);
        self.exact_under_tokenizer(request_id, &mut picks)
    }

    /// Tokens of `text` under the prompt tokenizer.
    pub fn count(&self, text: &str) -> Result<usize, PromptError> {
        Ok(self.tokenizer.count(text)?)
    }

    /// Re-tokenizes `prompt.text`; returns the count.
    pub fn retokenized_len(&self, prompt: &SynthPrompt) -> Result<usize, PromptError> {
        Ok(self.tokenizer.count(&prompt.text)?)
    }

    /// The words of a prompt as indices: the first into `pool.starts`, the
    /// others into `pool.words`.
    fn picks(&self, record: &TraceRecord, repeat: u32) -> Result<Vec<u32>, PromptError> {
        let request_id = &record.request_id;
        let want = match usize::try_from(record.input_tokens) {
            Ok(0) | Err(_) => {
                return Err(PromptError::Empty {
                    request_id: request_id.clone(),
                    input_tokens: record.input_tokens,
                });
            }
            Ok(n) if n > MAX_INPUT_TOKENS => {
                return Err(PromptError::TooLong {
                    request_id: request_id.clone(),
                    input_tokens: record.input_tokens,
                });
            }
            Ok(n) => n,
        };
        let mut picks = Vec::with_capacity(want);
        let blocks = record.prefix_block_ids.as_deref().unwrap_or_default();
        if !blocks.is_empty() && self.block_size == 0 {
            return Err(PromptError::BlockSize {
                request_id: request_id.clone(),
            });
        }
        let block_size = usize::try_from(self.block_size).unwrap_or(usize::MAX);
        for block in blocks {
            let left = want - picks.len();
            if left == 0 {
                break;
            }
            let mut rng =
                SplitMix::new(seed_of(TAG_BLOCK, self.seed, repeat, &block.to_le_bytes()));
            self.draw(&mut rng, block_size.min(left), &mut picks);
        }
        let left = want - picks.len();
        if left > 0 {
            let mut rng = SplitMix::new(seed_of(
                TAG_REQUEST,
                self.seed,
                repeat,
                request_id.as_bytes(),
            ));
            self.draw(&mut rng, left, &mut picks);
        }
        Ok(picks)
    }

    /// Appends `n` words drawn from `rng`.
    fn draw(&self, rng: &mut SplitMix, n: usize, picks: &mut Vec<u32>) {
        for _ in 0..n {
            let pool = if picks.is_empty() {
                self.pool.starts.len()
            } else {
                self.pool.words.len()
            };
            // Pools come from a u32 vocabulary, so indices fit in u32.
            picks.push(rng.below(pool) as u32);
        }
    }

    /// The word at position `pos` of a prompt with pick `k`.
    fn word(&self, pos: usize, k: u32) -> Option<&Word> {
        let pool = if pos == 0 {
            &self.pool.starts
        } else {
            &self.pool.words
        };
        pool.get(k as usize)
    }

    /// Ids and text of `picks`.
    fn render(&self, picks: &[u32]) -> SynthPrompt {
        let mut ids = Vec::with_capacity(picks.len());
        // Safe words average under 8 bytes with their space.
        let mut text = String::with_capacity(picks.len() * 8);
        for (pos, &k) in picks.iter().enumerate() {
            if let Some(w) = self.word(pos, k) {
                ids.push(w.id);
                text.push_str(&w.text);
            }
        }
        SynthPrompt { ids, text }
    }

    /// [`Self::exact`] under the prompt tokenizer. Where the ids are the
    /// text's tokens by construction (tiktoken encodings), only one prompt
    /// in [`SPOT_CHECK_EVERY`] is re-encoded; a spot check that finds a
    /// difference (which the construction rules out) is repaired as usual,
    /// logged, and makes every later prompt of the run re-encoded. The
    /// prompts are the same either way: re-encoding a correct prompt
    /// changes nothing.
    fn exact_under_tokenizer(
        &self,
        request_id: &str,
        picks: &mut [u32],
    ) -> Result<SynthPrompt, PromptError> {
        let n = self.handed_out.fetch_add(1, Ordering::Relaxed);
        let trusted = self.by_construction && !self.tripped.load(Ordering::Relaxed);
        if trusted && n % SPOT_CHECK_EVERY != 0 {
            return Ok(self.render(picks));
        }
        let before: Vec<u32> = if trusted { picks.to_vec() } else { Vec::new() };
        let prompt = self.exact(request_id, picks, |text| self.tokenizer.encode(text))?;
        if trusted && (before.as_slice() != &*picks || prompt.ids != self.render(picks).ids) {
            self.tripped.store(true, Ordering::Relaxed);
            tracing::warn!(
                request_id,
                tokenizer = %self.tokenizer.name(),
                "a synthetic prompt did not re-tokenize to its own ids; re-tokenizing every prompt from now on"
            );
        }
        Ok(prompt)
    }

    /// Renders `picks` and re-encodes the text with `encode` until it gives
    /// back exactly the ids written, replacing the first word that differs
    /// (by the next word of the pool) up to [`MAX_REPAIRS`] times. On the
    /// last round a text of the right length whose ids differ is accepted
    /// with the ids it re-encodes to, so `ids` is always what the server
    /// will see.
    fn exact(
        &self,
        request_id: &str,
        picks: &mut [u32],
        encode: impl Fn(&str) -> Result<Vec<u32>, TokenizeError>,
    ) -> Result<SynthPrompt, PromptError> {
        let want = picks.len();
        let mut repairs = 0;
        loop {
            let prompt = self.render(picks);
            let got = encode(&prompt.text).map_err(|error| PromptError::Retokenize {
                request_id: request_id.to_owned(),
                error,
            })?;
            let Some(at) = first_difference(&prompt.ids, &got) else {
                if prompt.ids.len() == want {
                    return Ok(prompt);
                }
                // Unreachable while picks index their pools; checked so that
                // a bug here is an error rather than a short prompt.
                return Err(PromptError::Drift {
                    request_id: request_id.to_owned(),
                    tokenizer: self.tokenizer.name(),
                    want,
                    got: got.len(),
                    repairs,
                });
            };
            if repairs == MAX_REPAIRS {
                if got.len() == want {
                    return Ok(SynthPrompt {
                        ids: got,
                        text: prompt.text,
                    });
                }
                return Err(PromptError::Drift {
                    request_id: request_id.to_owned(),
                    tokenizer: self.tokenizer.name(),
                    want,
                    got: got.len(),
                    repairs,
                });
            }
            // Tokens before `at` came out right, so the word at `at` is the
            // first one at fault (alone or merged with the next).
            let pos = at.min(want.saturating_sub(1));
            let pool = if pos == 0 {
                self.pool.starts.len()
            } else {
                self.pool.words.len()
            };
            if let Some(k) = picks.get_mut(pos) {
                *k = ((*k as usize + 1) % pool) as u32;
            }
            repairs += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::LazyLock;

    use proptest::prelude::*;

    use super::*;
    use crate::tokenize::TokenizerSpec;

    const BLOCK: u32 = 16;

    static O200K: LazyLock<PromptSynth> = LazyLock::new(|| synth(TokenizerSpec::O200kBase));
    static CL100K: LazyLock<PromptSynth> = LazyLock::new(|| synth(TokenizerSpec::Cl100kBase));
    /// A second load of o200k_base, to show prompts do not depend on the
    /// instance.
    static O200K_AGAIN: LazyLock<PromptSynth> = LazyLock::new(|| synth(TokenizerSpec::O200kBase));

    fn synth(spec: TokenizerSpec) -> PromptSynth {
        PromptSynth::new(Tokenizer::load(&spec).unwrap(), BLOCK, 7).unwrap()
    }

    fn rec(id: &str, n: i32, blocks: Option<Vec<u64>>) -> TraceRecord {
        TraceRecord {
            request_id: id.into(),
            input_tokens: n,
            output_tokens: 1,
            prefix_block_ids: blocks,
            ..TraceRecord::default()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Invariant: under both embedded encodings, a prompt has exactly
        /// `input_tokens` ids, its text re-tokenizes to exactly those ids,
        /// and decoding the ids gives the text back (with or without prefix
        /// blocks, whether they cover less or more than the prompt).
        #[test]
        fn prompts_have_exact_lengths(
            n in 1i32..9_000,
            id in "[a-z0-9-]{1,16}",
            blocks in proptest::option::of(proptest::collection::vec(0u64..50, 0..80)),
            repeat in 0u32..3,
        ) {
            for synth in [&*O200K, &*CL100K] {
                let p = synth.synthesize(&rec(&id, n, blocks.clone()), repeat).unwrap();
                prop_assert_eq!(p.ids.len(), n as usize);
                prop_assert_eq!(synth.retokenized_len(&p).unwrap(), n as usize);
                prop_assert_eq!(&synth.tokenizer().encode(&p.text).unwrap(), &p.ids);
                prop_assert_eq!(&synth.tokenizer().decode(&p.ids).unwrap(), &p.text);
            }
        }
    }

    #[test]
    fn short_prompts_are_exact_too() {
        for synth in [&*O200K, &*CL100K] {
            for n in 1..40 {
                let p = synth.synthesize(&rec("s", n, None), 0).unwrap();
                assert_eq!(synth.tokenizer().encode(&p.text).unwrap(), p.ids, "{n}");
                assert_eq!(p.ids.len(), n as usize);
            }
        }
    }

    #[test]
    fn text_does_not_start_or_end_with_a_space() {
        // Chat templates that trim the message (Llama 3's) must not change
        // the first token.
        for synth in [&*O200K, &*CL100K] {
            let p = synth.synthesize(&rec("t", 30, None), 0).unwrap();
            assert_eq!(p.text.trim(), p.text);
        }
    }

    #[test]
    fn pools_are_large() {
        for synth in [&*O200K, &*CL100K] {
            let (starts, words) = (synth.pool.starts.len(), synth.pool.words.len());
            assert!(words > 10_000 && starts > 1_000, "{starts} {words}");
        }
    }

    #[test]
    fn prompts_of_different_requests_differ_from_the_first_token() {
        let s = &*O200K;
        let a = s.synthesize(&rec("a", 50, None), 0).unwrap();
        let b = s.synthesize(&rec("b", 50, None), 0).unwrap();
        assert_ne!(a.ids[0], b.ids[0]);
        // Among many requests no two share even their first four tokens
        // (odds about n^2 / 2 / pool^4).
        let heads: HashSet<Vec<u32>> = (0..2_000)
            .map(|i| {
                s.synthesize(&rec(&format!("r{i}"), 4, None), 0)
                    .unwrap()
                    .ids
            })
            .collect();
        assert_eq!(heads.len(), 2_000);
    }

    #[test]
    fn same_request_and_repeat_is_deterministic_and_another_repeat_differs() {
        let s = &*O200K;
        let a = s.synthesize(&rec("a", 300, None), 0).unwrap();
        assert_eq!(a, s.synthesize(&rec("a", 300, None), 0).unwrap());
        // A second synthesiser (another load of the same tokenizer) agrees:
        // prompts depend only on tokenizer, seed, record and repeat.
        assert_eq!(a, O200K_AGAIN.synthesize(&rec("a", 300, None), 0).unwrap());
        let again = s.synthesize(&rec("a", 300, None), 1).unwrap();
        assert_ne!(a.ids[0], again.ids[0]);
        let other_seed = PromptSynth::new(s.tokenizer.clone(), BLOCK, 8).unwrap();
        assert_ne!(
            a.ids[..4],
            other_seed.synthesize(&rec("a", 300, None), 0).unwrap().ids[..4]
        );
    }

    #[test]
    fn shared_block_ids_give_shared_token_blocks() {
        let b = BLOCK as usize;
        for s in [&*O200K, &*CL100K] {
            let x = s
                .synthesize(&rec("x", 80, Some(vec![1, 2, 3, 4, 5])), 0)
                .unwrap();
            let y = s
                .synthesize(&rec("y", 80, Some(vec![1, 2, 9, 10, 11])), 0)
                .unwrap();
            // Exactly the first k = 2 blocks are shared.
            assert_eq!(x.ids[..2 * b], y.ids[..2 * b]);
            assert_ne!(x.ids[2 * b], y.ids[2 * b]);
            // Equal ids at equal positions give equal blocks whatever the
            // request id, and the block content does not depend on the
            // request.
            let z = s
                .synthesize(&rec("z", 80, Some(vec![1, 2, 3, 4, 5])), 0)
                .unwrap();
            assert_eq!(x, z);
        }
    }

    #[test]
    fn a_partial_last_block_is_the_start_of_that_block() {
        let b = BLOCK as usize;
        let s = &*O200K;
        let full = s.synthesize(&rec("f", 48, Some(vec![1, 2, 3])), 0).unwrap();
        let part = s.synthesize(&rec("p", 40, Some(vec![1, 2, 3])), 0).unwrap();
        assert_eq!(part.ids[..], full.ids[..40]);
        // Blocks that cover more than asked are cut at input_tokens.
        let cut = s.synthesize(&rec("c", 20, Some(vec![1, 2, 3])), 0).unwrap();
        assert_eq!(cut.ids[..], full.ids[..20]);
        // Blocks that cover fewer are followed by the request's own filler.
        let long = s.synthesize(&rec("l", 40, Some(vec![1])), 0).unwrap();
        let long2 = s.synthesize(&rec("m", 40, Some(vec![1])), 0).unwrap();
        assert_eq!(long.ids[..b], full.ids[..b]);
        assert_ne!(long.ids[b..b + 4], long2.ids[b..b + 4]);
        assert_ne!(long.ids[b..b + 4], full.ids[b..b + 4]);
    }

    #[test]
    fn another_repeat_changes_the_blocks_too() {
        let s = &*O200K;
        let r = rec("x", 64, Some(vec![1, 2, 3, 4]));
        let first = s.synthesize(&r, 0).unwrap();
        let second = s.synthesize(&r, 1).unwrap();
        assert_ne!(first.ids[..4], second.ids[..4]);
        // Within the second pass, blocks are shared as in the first.
        let other = s.synthesize(&rec("y", 64, Some(vec![1, 2, 7])), 1).unwrap();
        assert_eq!(second.ids[..32], other.ids[..32]);
    }

    #[test]
    fn empty_negative_and_absurd_lengths_are_refused_with_the_request_id() {
        for n in [0, -5] {
            let err = O200K.synthesize(&rec("e1", n, None), 0).unwrap_err();
            assert!(matches!(err, PromptError::Empty { .. }), "{err}");
            assert!(err.to_string().contains("\"e1\""), "{err}");
        }
        let err = O200K
            .synthesize(&rec("huge", i32::MAX, None), 0)
            .unwrap_err();
        assert!(matches!(err, PromptError::TooLong { .. }), "{err}");
    }

    #[test]
    fn blocks_with_a_zero_block_size_are_refused() {
        let s = PromptSynth::new(O200K.tokenizer.clone(), 0, 7).unwrap();
        let err = s.synthesize(&rec("z", 10, Some(vec![1])), 0).unwrap_err();
        assert!(matches!(err, PromptError::BlockSize { .. }), "{err}");
        // Without blocks the block size does not matter.
        assert_eq!(
            s.synthesize(&rec("z", 10, Some(vec![])), 0)
                .unwrap()
                .ids
                .len(),
            10
        );
    }

    #[test]
    fn a_drifting_tokenizer_is_repaired_by_replacing_the_word_at_fault() {
        let s = &*O200K;
        let p = s.synthesize(&rec("d", 60, None), 0).unwrap();
        let (a, b) = (p.ids[10], p.ids[11]);
        // A fake tokenizer that merges the pair (a, b) into one token, as a
        // cross-word BPE merge would.
        let merging = |text: &str| -> Result<Vec<u32>, TokenizeError> {
            let ids = s.tokenizer.encode(text)?;
            let mut out = Vec::with_capacity(ids.len());
            let mut i = 0;
            while i < ids.len() {
                if ids[i] == a && ids.get(i + 1) == Some(&b) {
                    out.push(u32::MAX);
                    i += 2;
                } else {
                    out.push(ids[i]);
                    i += 1;
                }
            }
            Ok(out)
        };
        let picks = s.picks(&rec("d", 60, None), 0).unwrap();
        let fixed = s.exact("d", &mut picks.clone(), merging).unwrap();
        assert_eq!(fixed.ids.len(), 60);
        assert_eq!(merging(&fixed.text).unwrap(), fixed.ids);
        assert_eq!(fixed.ids[..10], p.ids[..10]);
        assert_ne!(fixed.ids[10], a);
        assert_eq!(fixed.ids[11..], p.ids[11..]);
    }

    #[test]
    fn a_prompt_that_cannot_be_made_exact_is_an_error_naming_the_request() {
        let s = &*O200K;
        let picks = s.picks(&rec("bad-row", 60, None), 0).unwrap();
        let one_more = |text: &str| -> Result<Vec<u32>, TokenizeError> {
            let mut ids = s.tokenizer.encode(text)?;
            ids.push(0);
            Ok(ids)
        };
        let err = s
            .exact("bad-row", &mut picks.clone(), one_more)
            .unwrap_err();
        assert!(
            matches!(
                err,
                PromptError::Drift {
                    want: 60,
                    got: 61,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("\"bad-row\""), "{err}");
    }

    #[test]
    fn first_difference_finds_changes_and_length_mismatches() {
        assert_eq!(first_difference(&[1, 2, 3], &[1, 2, 3]), None);
        assert_eq!(first_difference(&[1, 2, 3], &[1, 5, 3]), Some(1));
        assert_eq!(first_difference(&[1, 2, 3], &[1, 2]), Some(2));
        assert_eq!(first_difference(&[1, 2], &[1, 2, 3]), Some(2));
    }

    /// A `tokenizer.json` with a word-level model: `spaced` words as
    /// byte-level `Ġword` (plus `glued` space-less ones) or, with `piece`,
    /// SentencePiece-style `▁word`.
    fn tokenizer_json(dir: &std::path::Path, words: usize, glued: usize, piece: bool) -> Tokenizer {
        let word = |i: usize| {
            let l = |d: usize| char::from(b'a' + (d % 26) as u8);
            format!("q{}{}{}", l(i / 676), l(i / 26), l(i))
        };
        let mut vocab = serde_json::Map::new();
        vocab.insert("<unk>".into(), 0.into());
        let mark = if piece { "\u{2581}" } else { "\u{120}" };
        for i in 0..words {
            let n = vocab.len();
            vocab.insert(format!("{mark}{}", word(i)), n.into());
        }
        for i in 0..glued {
            let n = vocab.len();
            vocab.insert(word(i), n.into());
        }
        let (pre, dec) = if piece {
            let m = serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": true});
            (m.clone(), m)
        } else {
            let b = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
            (b.clone(), b)
        };
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": pre, "post_processor": null, "decoder": dec,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
        });
        let path = dir.join(format!("tok-{words}-{glued}-{piece}.json"));
        std::fs::write(&path, json.to_string()).unwrap();
        Tokenizer::load(&TokenizerSpec::HuggingFace(path)).unwrap()
    }

    #[test]
    fn sentencepiece_style_vocabularies_give_exact_prompts_without_a_leading_space() {
        let dir = tempfile::tempdir().unwrap();
        let s = PromptSynth::new(tokenizer_json(dir.path(), 600, 300, true), BLOCK, 1).unwrap();
        // Space-less continuation pieces are not words here.
        assert_eq!((s.pool.starts.len(), s.pool.words.len()), (600, 600));
        for n in [1, 2, 17, 500] {
            let p = s.synthesize(&rec("sp", n, Some(vec![3, 4])), 0).unwrap();
            assert_eq!(s.tokenizer().encode(&p.text).unwrap(), p.ids);
            assert_eq!(p.ids.len(), n as usize);
            assert_eq!(s.tokenizer().decode(&p.ids).unwrap(), p.text);
            assert!(p.text.starts_with('q'), "{}", p.text);
        }
    }

    #[test]
    fn word_splitting_tokenizer_json_is_trusted_after_its_probation() {
        let dir = tempfile::tempdir().unwrap();
        for piece in [true, false] {
            let s =
                PromptSynth::new(tokenizer_json(dir.path(), 600, 300, piece), BLOCK, 1).unwrap();
            assert!(s.exact_by_construction(), "metaspace {piece}");
            // Spot-checked or not, every prompt is exact.
            for i in 0..130 {
                let p = s.synthesize(&rec(&format!("t{i}"), 200, None), 0).unwrap();
                assert_eq!(s.tokenizer().encode(&p.text).unwrap(), p.ids);
            }
            assert!(!s.tripped.load(Ordering::Relaxed));
        }
    }

    #[test]
    fn byte_level_tokenizer_json_uses_space_less_start_words() {
        let dir = tempfile::tempdir().unwrap();
        let s = PromptSynth::new(tokenizer_json(dir.path(), 600, 40, false), BLOCK, 1).unwrap();
        assert_eq!((s.pool.starts.len(), s.pool.words.len()), (40, 600));
        let p = s.synthesize(&rec("bl", 300, None), 0).unwrap();
        assert_eq!(s.tokenizer().encode(&p.text).unwrap(), p.ids);
        assert_eq!(s.tokenizer().decode(&p.ids).unwrap(), p.text);
        assert!(p.text.starts_with('q'), "{}", p.text);
        // Too few space-less words: the prompt starts with a spaced word.
        let s = PromptSynth::new(tokenizer_json(dir.path(), 600, 3, false), BLOCK, 1).unwrap();
        let p = s.synthesize(&rec("bl", 300, None), 0).unwrap();
        assert_eq!(s.tokenizer().encode(&p.text).unwrap(), p.ids);
        assert!(p.text.starts_with(" q"), "{}", p.text);
    }

    #[test]
    fn a_vocabulary_without_enough_words_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            PromptSynth::new(tokenizer_json(dir.path(), 100, 0, false), BLOCK, 1).unwrap_err();
        assert!(
            matches!(err, PromptError::Vocabulary { found: 100, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--prompts original"), "{err}");
    }

    #[test]
    fn synthesiser_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<PromptSynth>();
    }

    fn turn(id: &str, input_tokens: i32) -> TraceRecord {
        TraceRecord {
            request_id: id.into(),
            input_tokens,
            output_tokens: 8,
            ..TraceRecord::default()
        }
    }

    #[test]
    fn a_later_turn_repeats_the_last_prompt_and_reply_then_adds_new_words() {
        let s = &*O200K;
        let (first, h1) = s.first_turn(&turn("s/0", 30), 0).unwrap();
        assert_eq!(first.ids.len(), 30);
        assert_eq!(h1.len(), 30);
        // The server answered 8 tokens; the trace says turn 1 has 50.
        let (second, h2, repeated) = s.next_turn(&h1, 8, &turn("s/1", 50), 0).unwrap();
        assert_eq!(
            second.ids.len(),
            50,
            "the recorded length when the reply matches"
        );
        assert_eq!(repeated, 38);
        assert_eq!(
            &second.ids[..30],
            &first.ids[..],
            "starts with the last prompt"
        );
        assert!(second.text.starts_with(&first.text));
        assert_eq!(s.retokenized_len(&second).unwrap(), 50);
        // A reply far longer than recorded: the history is kept whole.
        let (third, _, repeated) = s.next_turn(&h2, 40, &turn("s/2", 60), 0).unwrap();
        assert_eq!(repeated, 90);
        assert_eq!(third.ids.len(), 91);
        assert_eq!(&third.ids[..50], &second.ids[..]);
    }

    #[test]
    fn prompts_exact_by_construction_equal_the_re_tokenized_ones() {
        for synth in [&*O200K, &*CL100K] {
            assert!(synth.by_construction);
            for i in 0..300 {
                let r = rec(&format!("c{i}"), 1 + (i * 37) % 900, None);
                let fast = synth.synthesize(&r, 0).unwrap();
                let mut picks = synth.picks(&r, 0).unwrap();
                let checked = synth
                    .exact(&r.request_id, &mut picks, |t| synth.tokenizer.encode(t))
                    .unwrap();
                assert_eq!(fast, checked, "{i}");
                assert_eq!(synth.tokenizer.encode(&fast.text).unwrap(), fast.ids);
            }
            assert!(
                !synth.tripped.load(Ordering::Relaxed),
                "no spot check failed"
            );
        }
    }

    #[test]
    fn a_salt_changes_every_prompt_and_keeps_sharing_inside_the_run() {
        let plain = &*O200K;
        let salted = plain.salted(99);
        let a = rec("a", 64, Some(vec![7, 8]));
        let b = rec("b", 64, Some(vec![7, 9]));
        let (pa, sa) = (
            plain.synthesize(&a, 0).unwrap(),
            salted.synthesize(&a, 0).unwrap(),
        );
        assert_ne!(pa.ids[..BLOCK as usize], sa.ids[..BLOCK as usize]);
        assert_eq!(sa.ids.len(), 64);
        assert_eq!(salted.tokenizer().encode(&sa.text).unwrap(), sa.ids);
        // Block 7 is shared by a and b under the salt as without it.
        let sb = salted.synthesize(&b, 0).unwrap();
        assert_eq!(sa.ids[..BLOCK as usize], sb.ids[..BLOCK as usize]);
        assert_ne!(sa.ids[BLOCK as usize..], sb.ids[BLOCK as usize..]);
        // Salt 0 is no salt; the same salt gives the same prompts.
        assert_eq!(plain.salted(0).synthesize(&a, 0).unwrap(), pa);
        assert_eq!(plain.salted(99).synthesize(&a, 0).unwrap(), sa);
    }
}
