//! Synthetic prompts with exactly `input_tokens` tokens under a tokenizer.
//!
//! Prompts are built from "safe words": vocabulary entries that decode to a
//! space followed by 3-10 lowercase ASCII letters and re-encode to exactly
//! their own id. Pre-tokenizers of BPE vocabularies (tiktoken, Llama 3,
//! Qwen, GPT-2 style) split text before each leading space, so a sequence of
//! safe words re-encodes to the same ids, one token per word; every prompt is
//! checked by re-tokenizing all the same (a peer's decode/encode drift turned
//! 6,758-token rows into 7,253). Prompts therefore start with a space.
//!
//! Each prompt is unique from its first token (its first words come from a
//! hash of the seed, request id and loop count), so the server's prefix cache
//! is not flattered, except where `prefix_block_ids` say requests share a
//! prefix: a block's words come from the block id alone, so equal ids give
//! equal token blocks.

use thiserror::Error;

use crate::tokenize::{TokenizeError, Tokenizer};
use crate::trace::TraceRecord;

/// What to send as the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
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

/// A synthesised prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthPrompt {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Their text.
    pub text: String,
}

/// Why a prompt could not be built.
#[derive(Debug, Error)]
pub enum PromptError {
    /// The vocabulary has too few safe words.
    #[error(
        "tokenizer {tokenizer}: only {found} single-token words found (need {needed}); synthetic prompts need a BPE vocabulary with space-prefixed words"
    )]
    Vocabulary {
        /// Tokenizer name.
        tokenizer: String,
        /// Safe words found.
        found: usize,
        /// Needed.
        needed: usize,
    },
    /// A prompt of zero tokens (servers refuse empty prompts).
    #[error("request {0:?}: input_tokens is 0; a prompt needs at least one token")]
    Empty(String),
    /// Re-tokenizing did not give the asked length.
    #[error("request {request_id:?}: synthetic prompt re-tokenizes to {got} tokens, not {want}")]
    Drift {
        /// Request.
        request_id: String,
        /// Asked.
        want: usize,
        /// Got.
        got: usize,
    },
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizeError),
}

/// Safe words needed for prompts to be varied enough.
const MIN_WORDS: usize = 1_000;
/// Words of a prompt derived from its own hash, before any shared block.
const UNIQUE_HEAD: usize = 4;

/// Builds synthetic prompts; `Send + Sync`.
pub struct PromptSynth {
    tokenizer: Tokenizer,
    words: Vec<(u32, Box<str>)>,
    block_size: usize,
    seed: u64,
}

impl std::fmt::Debug for PromptSynth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptSynth")
            .field("tokenizer", &self.tokenizer)
            .field("words", &self.words.len())
            .field("block_size", &self.block_size)
            .finish()
    }
}

/// splitmix64: a fast, well-mixed 64-bit generator for word choice.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hash_str(seed: u64, s: &str, salt: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&salt.to_le_bytes());
    h.update(s.as_bytes());
    let out = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

impl PromptSynth {
    /// Scans the vocabulary for safe words. `block_size` is the trace's
    /// prefix block size; `seed` varies every prompt.
    pub fn new(tokenizer: Tokenizer, block_size: u32, seed: u64) -> Result<Self, PromptError> {
        let mut words = Vec::new();
        let vocab = u32::try_from(tokenizer.vocab_size()).unwrap_or(u32::MAX);
        for id in 0..vocab {
            let Ok(text) = tokenizer.decode(&[id]) else {
                continue;
            };
            let Some(word) = text.strip_prefix(' ') else {
                continue;
            };
            if !(3..=10).contains(&word.len()) || !word.bytes().all(|b| b.is_ascii_lowercase()) {
                continue;
            }
            if tokenizer.encode(&text)? == [id] {
                words.push((id, text.into_boxed_str()));
            }
        }
        if words.len() < MIN_WORDS {
            return Err(PromptError::Vocabulary {
                tokenizer: tokenizer.name(),
                found: words.len(),
                needed: MIN_WORDS,
            });
        }
        Ok(Self {
            tokenizer,
            words,
            block_size: usize::try_from(block_size.max(1)).unwrap_or(512),
            seed,
        })
    }

    /// The tokenizer prompts are exact under.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn push_words(&self, state: &mut u64, n: usize, ids: &mut Vec<u32>) {
        let len = self.words.len() as u64;
        for _ in 0..n {
            let i = (splitmix(state) % len) as usize;
            ids.push(self.words[i].0);
        }
    }

    fn ids_for(&self, record: &TraceRecord, repeat: u32) -> Vec<u32> {
        let want = usize::try_from(record.input_tokens).unwrap_or(0);
        let mut ids = Vec::with_capacity(want);
        if let Some(blocks) = &record.prefix_block_ids {
            for &block in blocks {
                if ids.len() >= want {
                    break;
                }
                let mut state = hash_str(self.seed, "block", block);
                let n = self.block_size.min(want - ids.len());
                self.push_words(&mut state, n, &mut ids);
            }
        }
        if ids.len() < want {
            // Unique filler: its first words are the request's own, so a
            // prompt without shared blocks differs from every other at its
            // first token (and one with blocks, right after them).
            let mut state = hash_str(self.seed, &record.request_id, u64::from(repeat));
            self.push_words(&mut state, (want - ids.len()).min(UNIQUE_HEAD), &mut ids);
            let rest = want - ids.len();
            self.push_words(&mut state, rest, &mut ids);
        }
        ids
    }

    fn text_of(&self, ids: &[u32]) -> String {
        let mut text = String::with_capacity(ids.len() * 7);
        for &id in ids {
            // Word ids come from `words`; a linear search is avoided by
            // decoding through the tokenizer only when needed.
            match self.words.binary_search_by_key(&id, |(w, _)| *w) {
                Ok(i) => text.push_str(&self.words[i].1),
                Err(_) => {
                    if let Ok(t) = self.tokenizer.decode(&[id]) {
                        text.push_str(&t);
                    }
                }
            }
        }
        text
    }

    /// A prompt of exactly `record.input_tokens` tokens, checked by
    /// re-tokenizing. `repeat` (loops of the trace) varies the unique part.
    pub fn synthesize(
        &self,
        record: &TraceRecord,
        repeat: u32,
    ) -> Result<SynthPrompt, PromptError> {
        if record.input_tokens <= 0 {
            return Err(PromptError::Empty(record.request_id.clone()));
        }
        let ids = self.ids_for(record, repeat);
        let text = self.text_of(&ids);
        let prompt = SynthPrompt { ids, text };
        let got = self.retokenized_len(&prompt)?;
        if got != prompt.ids.len() {
            return Err(PromptError::Drift {
                request_id: record.request_id.clone(),
                want: prompt.ids.len(),
                got,
            });
        }
        Ok(prompt)
    }

    /// Re-tokenizes `prompt.text`; returns the count.
    pub fn retokenized_len(&self, prompt: &SynthPrompt) -> Result<usize, PromptError> {
        Ok(self.tokenizer.count(&prompt.text)?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;

    use super::*;
    use crate::tokenize::TokenizerSpec;

    static O200K: LazyLock<PromptSynth> = LazyLock::new(|| {
        PromptSynth::new(Tokenizer::load(&TokenizerSpec::O200kBase).unwrap(), 16, 7).unwrap()
    });
    static CL100K: LazyLock<PromptSynth> = LazyLock::new(|| {
        PromptSynth::new(Tokenizer::load(&TokenizerSpec::Cl100kBase).unwrap(), 16, 7).unwrap()
    });

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
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Every prompt re-tokenizes to exactly its asked length.
        #[test]
        fn prompts_have_exact_lengths(n in 1i32..9_000, id in "[a-z0-9]{1,12}", o200k in any::<bool>()) {
            let synth = if o200k { &*O200K } else { &*CL100K };
            let p = synth.synthesize(&rec(&id, n, None), 0).unwrap();
            prop_assert_eq!(p.ids.len(), n as usize);
            prop_assert_eq!(synth.retokenized_len(&p).unwrap(), n as usize);
            prop_assert_eq!(synth.tokenizer().decode(&p.ids).unwrap(), p.text);
        }
    }

    #[test]
    fn prompts_differ_from_the_first_token_and_are_deterministic() {
        let s = &*O200K;
        let a = s.synthesize(&rec("a", 50, None), 0).unwrap();
        let b = s.synthesize(&rec("b", 50, None), 0).unwrap();
        let a_again = s.synthesize(&rec("a", 50, None), 0).unwrap();
        let a_loop = s.synthesize(&rec("a", 50, None), 1).unwrap();
        assert_ne!(a.ids[0], b.ids[0]);
        assert_eq!(a, a_again);
        assert_ne!(a.ids[..4], a_loop.ids[..4]);
    }

    #[test]
    fn shared_block_ids_give_shared_token_blocks() {
        let s = &*O200K; // block size 16
        let x = s
            .synthesize(&rec("x", 60, Some(vec![1, 2, 3, 4])), 0)
            .unwrap();
        let y = s
            .synthesize(&rec("y", 60, Some(vec![1, 2, 9, 10])), 0)
            .unwrap();
        assert_eq!(x.ids[..32], y.ids[..32]);
        assert_ne!(x.ids[32..48], y.ids[32..48]);
        // A partial last block is the start of that block's words.
        let short = s.synthesize(&rec("z", 20, Some(vec![1, 2])), 0).unwrap();
        assert_eq!(short.ids[..20], x.ids[..20]);
        // Blocks covering fewer tokens than asked are followed by unique
        // filler.
        let long = s.synthesize(&rec("w", 40, Some(vec![1])), 0).unwrap();
        assert_eq!(long.ids[..16], x.ids[..16]);
        assert_ne!(long.ids[16..20], x.ids[16..20]);
    }

    #[test]
    fn empty_prompts_are_refused() {
        assert!(matches!(
            O200K.synthesize(&rec("e", 0, None), 0),
            Err(PromptError::Empty(_))
        ));
    }
}
