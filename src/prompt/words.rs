//! The safe-word pool: whole lowercase words that are one token each under a
//! tokenizer and stay one token each when written one after another.
//!
//! Two vocabulary families are recognised, told apart by how a token decodes
//! next to itself rather than by the tokenizer's type, so that tiktoken and
//! any `tokenizer.json` are handled alike:
//!
//! - byte-level BPE (tiktoken, Llama 3, Qwen, GPT-2): a word token decodes to
//!   `" word"`, and the pre-tokenizer splits text before each space, so
//!   `" alpha beta"` is `[" alpha", " beta"]`. The first word of a prompt is a
//!   space-less token (`"alpha"`) where the vocabulary has enough of them,
//!   because chat templates often trim the message (the Llama 3 template does)
//!   and a trimmed leading space would change the first token;
//! - SentencePiece-style vocabularies (`▁word`, Llama 2, Mistral): the
//!   tokenizer itself marks each word start, so text is `"alpha beta"` and the
//!   pieces are `["▁alpha", "▁beta"]`.

use crate::tokenize::{TokenizeError, Tokenizer};

use super::{PromptError, SplitMix};

/// Fewest safe words a vocabulary must have. Below this, prompts repeat words
/// so often that they stop looking like text to anything that inspects them,
/// and fewer leading words tell one prompt from another (two prompts share
/// their first `k` words with odds `1/n^k`). Real vocabularies have tens of
/// thousands.
pub(super) const MIN_WORDS: usize = 256;

/// Fewest space-less start words worth using; with fewer, prompts start with
/// a spaced word instead (and so with a space).
const MIN_STARTS: usize = 16;

/// Rounds of dropping words that do not re-tokenize in sequence before the
/// tokenizer is declared unusable. Each round costs one encode of the whole
/// pool written out twice.
const MAX_ROUNDS: usize = 64;

/// Seed of the order the pool is re-checked in; fixed so that the pool (and
/// therefore every prompt) depends only on the tokenizer.
const CHECK_SEED: u64 = 0x5afe_3a7d_0bad_cafe;

/// How the pool checks encode text: the tokenizer, or a fake in tests.
type Encode<'a> = dyn Fn(&str) -> Result<Vec<u32>, TokenizeError> + 'a;

/// One safe word: its token id and its text as written in a prompt.
#[derive(Debug, Clone)]
pub(super) struct Word {
    /// The token id.
    pub id: u32,
    /// `" word"` in the middle of a prompt, `"word"` (usually) at its start.
    pub text: Box<str>,
}

/// The words prompts are made of.
#[derive(Debug)]
pub(super) struct WordPool {
    /// Candidates for the first word of a prompt.
    pub starts: Vec<Word>,
    /// Candidates for every other word; each text begins with a space.
    pub words: Vec<Word>,
}

/// What a vocabulary entry is good for.
enum Kind {
    /// Byte-level `" word"`.
    Spaced,
    /// Byte-level `"word"`, glued to what precedes it.
    Glued,
    /// SentencePiece-style `"▁word"`.
    Piece,
}

/// `3..=10` lowercase ASCII letters: common enough in every vocabulary,
/// free of anything a pre-tokenizer or normaliser treats specially.
fn is_plain_word(s: &str) -> bool {
    (3..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase())
}

/// Classifies one id; `None` for ids that are not safe words (including
/// tiktoken ids that are partial UTF-8 sequences and do not decode alone).
fn classify(tok: &Tokenizer, id: u32) -> Result<Option<(Kind, String)>, TokenizeError> {
    let Ok(text) = tok.decode(&[id]) else {
        return Ok(None);
    };
    let (spaced, letters) = match text.strip_prefix(' ') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    if !is_plain_word(letters) {
        return Ok(None);
    }
    if spaced && tok.encode(&text)? == [id] {
        return Ok(Some((Kind::Spaced, letters.to_owned())));
    }
    if tok.encode(letters)? != [id] {
        return Ok(None);
    }
    // A token that brings its own word boundary decodes twice in a row with
    // a space between; a continuation piece decodes glued together.
    let Ok(pair) = tok.decode(&[id, id]) else {
        return Ok(None);
    };
    let kind = if pair.trim_start_matches(' ') == format!("{letters} {letters}") {
        Kind::Piece
    } else if !spaced && pair == format!("{letters}{letters}") {
        Kind::Glued
    } else {
        return Ok(None);
    };
    Ok(Some((kind, letters.to_owned())))
}

impl WordPool {
    /// Scans the whole vocabulary of `tok`, then checks the words in sequence
    /// (dropping any that do not re-tokenize one token per word).
    pub fn scan(tok: &Tokenizer) -> Result<Self, PromptError> {
        let vocab = u32::try_from(tok.vocab_size()).unwrap_or(u32::MAX);
        let (mut spaced, mut glued, mut pieces) = (Vec::new(), Vec::new(), Vec::new());
        for id in 0..vocab {
            match classify(tok, id)? {
                Some((Kind::Spaced, w)) => spaced.push((id, w)),
                Some((Kind::Glued, w)) => glued.push((id, w)),
                Some((Kind::Piece, w)) => pieces.push((id, w)),
                None => {}
            }
        }
        let spaced_text = |(id, w): &(u32, String)| Word {
            id: *id,
            text: format!(" {w}").into_boxed_str(),
        };
        let bare_text = |(id, w): &(u32, String)| Word {
            id: *id,
            text: w.clone().into_boxed_str(),
        };
        let mut pool = if spaced.len() >= pieces.len() {
            let words: Vec<Word> = spaced.iter().map(spaced_text).collect();
            let starts = if glued.len() >= MIN_STARTS {
                glued.iter().map(bare_text).collect()
            } else {
                words.clone()
            };
            Self { starts, words }
        } else {
            Self {
                starts: pieces.iter().map(bare_text).collect(),
                words: pieces.iter().map(spaced_text).collect(),
            }
        };
        if pool.words.len() < MIN_WORDS {
            return Err(PromptError::Vocabulary {
                tokenizer: tok.name(),
                found: pool.words.len(),
                needed: MIN_WORDS,
            });
        }
        let name = tok.name();
        let encode = |text: &str| tok.encode(text);
        pool.check_starts(&name, &encode)?;
        pool.check_sequence(&name, &encode)?;
        Ok(pool)
    }

    /// Keeps the start words that, followed by a word, encode to both ids.
    fn check_starts(&mut self, tokenizer: &str, encode: &Encode<'_>) -> Result<(), PromptError> {
        let mut kept = Vec::with_capacity(self.starts.len());
        for (start, next) in self.starts.iter().zip(self.words.iter().cycle()) {
            let text = format!("{}{}", start.text, next.text);
            if encode(&text)? == [start.id, next.id] {
                kept.push(start.clone());
            }
        }
        if kept.is_empty() {
            return Err(PromptError::Unstable {
                tokenizer: tokenizer.to_owned(),
                rounds: 1,
            });
        }
        self.starts = kept;
        Ok(())
    }

    /// Writes every word twice, in two orders (so each follows two different
    /// words), encodes the lot and drops the words around the first token
    /// that differs, until the text re-encodes to exactly the ids written.
    fn check_sequence(&mut self, tokenizer: &str, encode: &Encode<'_>) -> Result<(), PromptError> {
        let n = self.words.len();
        let mut order: Vec<usize> = (0..n).collect();
        let mut shuffled = order.clone();
        let mut rng = SplitMix::new(CHECK_SEED);
        for i in (1..n).rev() {
            shuffled.swap(i, rng.below(i + 1));
        }
        order.extend(shuffled);
        let mut dropped = vec![false; n];
        let start = self
            .starts
            .first()
            .cloned()
            .ok_or_else(|| PromptError::Unstable {
                tokenizer: tokenizer.to_owned(),
                rounds: 0,
            })?;
        for _ in 0..MAX_ROUNDS {
            order.retain(|&k| !dropped[k]);
            let mut text = String::from(&*start.text);
            let mut ids = vec![start.id];
            for &k in &order {
                text.push_str(&self.words[k].text);
                ids.push(self.words[k].id);
            }
            let got = encode(&text)?;
            let Some(at) = super::first_difference(&ids, &got) else {
                let words = std::mem::take(&mut self.words);
                self.words = words
                    .into_iter()
                    .zip(dropped)
                    .filter_map(|(w, gone)| (!gone).then_some(w))
                    .collect();
                if self.words.len() < MIN_WORDS {
                    return Err(PromptError::Vocabulary {
                        tokenizer: tokenizer.to_owned(),
                        found: self.words.len(),
                        needed: MIN_WORDS,
                    });
                }
                return Ok(());
            };
            // Token `at` is the first that differs; it belongs to word
            // `at - 1` of `order` (token 0 is the start word, checked
            // already), which either is at fault or merged with the word
            // before it: drop both.
            for back in 1..=2 {
                if let Some(&k) = at.checked_sub(back).and_then(|p| order.get(p)) {
                    dropped[k] = true;
                }
            }
        }
        Err(PromptError::Unstable {
            tokenizer: tokenizer.to_owned(),
            rounds: MAX_ROUNDS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::TokenizerSpec;

    #[test]
    fn plain_words_are_three_to_ten_lowercase_letters() {
        assert!(is_plain_word("the"));
        assert!(is_plain_word("abcdefghij"));
        assert!(!is_plain_word("ab"));
        assert!(!is_plain_word("abcdefghijk"));
        assert!(!is_plain_word("The"));
        assert!(!is_plain_word("don't"));
        assert!(!is_plain_word("café"));
    }

    /// Word `i` is `" w{i}"` with id `i`; a fake tokenizer splits text at
    /// spaces and maps words back to ids, except where told otherwise.
    fn fake_pool(n: u32) -> WordPool {
        let word = |i: u32| Word {
            id: i,
            text: format!(" w{i}").into_boxed_str(),
        };
        WordPool {
            starts: vec![Word {
                id: 1_000_000,
                text: "start".into(),
            }],
            words: (0..n).map(word).collect(),
        }
    }

    fn fake_ids(text: &str) -> Vec<u32> {
        text.split(' ')
            .map(|w| {
                w.strip_prefix('w')
                    .map_or(1_000_000, |d| d.parse().unwrap_or(u32::MAX))
            })
            .collect()
    }

    #[test]
    fn words_that_merge_or_split_in_sequence_are_dropped() {
        let mut pool = fake_pool(400);
        // Word 7 always splits in two; word 20 merges with a following 21.
        let encode = |text: &str| -> Result<Vec<u32>, TokenizeError> {
            let mut out: Vec<u32> = Vec::new();
            for id in fake_ids(text) {
                match (out.last(), id) {
                    (_, 7) => out.extend([7, 7]),
                    (Some(20), 21) => *out.last_mut().unwrap() = 9_999,
                    _ => out.push(id),
                }
            }
            Ok(out)
        };
        pool.check_sequence("fake", &encode).unwrap();
        let kept: Vec<u32> = pool.words.iter().map(|w| w.id).collect();
        assert!(!kept.contains(&7));
        assert!(!(kept.contains(&20) && kept.contains(&21)));
        // Only words next to a fault are dropped (at most two per fault,
        // and 20-21 adjacent in two orders).
        assert!(kept.len() >= 400 - 6, "{}", kept.len());
    }

    #[test]
    fn a_tokenizer_that_never_settles_is_unstable() {
        let mut pool = fake_pool(400);
        let always_more = |text: &str| -> Result<Vec<u32>, TokenizeError> {
            let mut ids = fake_ids(text);
            ids.insert(1, 0);
            Ok(ids)
        };
        let err = pool.check_sequence("fake", &always_more).unwrap_err();
        assert!(matches!(err, PromptError::Unstable { .. }), "{err}");
    }

    #[test]
    fn embedded_encodings_keep_every_scanned_word() {
        // o200k_base and cl100k_base split before every space, so the
        // sequence check drops nothing: every spaced word is kept.
        for spec in [TokenizerSpec::O200kBase, TokenizerSpec::Cl100kBase] {
            let tok = Tokenizer::load(&spec).unwrap();
            let pool = WordPool::scan(&tok).unwrap();
            let spaced = (0..u32::try_from(tok.vocab_size()).unwrap())
                .filter(|&id| matches!(classify(&tok, id), Ok(Some((Kind::Spaced, _)))))
                .count();
            assert_eq!(pool.words.len(), spaced, "{spec}");
        }
    }
}
