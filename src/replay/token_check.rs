//! `--check-tokens N` (issue 13): before t=0 the server counts the run's
//! first N scheduled prompts (`POST /tokenize`), and the differences from
//! the prompts' own counts are told apart as the summary tells apart
//! `usage.prompt_tokens` after the run: a constant difference is tokens the
//! server adds (BOS), a wandering one another tokenizer. Catching the
//! second before the run saves a run measured with prompts of the wrong
//! length.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{RunOptions, Target};
use crate::prompt::PromptSynth;
use crate::record::summary::{PROMPT_TOKEN_WARNING, PromptTokens, prompt_token_mismatch};
use crate::schedule;
use crate::trace::TraceRecord;

/// What `--check-tokens` found; written into the run config under
/// `check_tokens`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TokenCheck {
    /// The server counted the prompts.
    Counted {
        /// Prompts counted.
        prompts: u64,
        /// The tokenizer the prompts were made with (its metadata name).
        tokenizer: String,
        /// Their tokens, as made.
        sent: u64,
        /// Their tokens as the server counted them.
        server: u64,
        /// `server / sent - 1`.
        difference: f64,
        /// Per prompt, server minus sent: the median.
        per_prompt_p50: i64,
        /// Per prompt: the difference of greatest magnitude.
        per_prompt_max: i64,
        /// Per prompt: the smallest and largest difference.
        per_prompt_range: (i64, i64),
        /// Set when the differences are not constant or exceed
        /// [`PROMPT_TOKEN_WARNING`]: what they point to.
        #[serde(skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
    },
    /// The server has no `/tokenize` (404 to vLLM's and llama.cpp's
    /// bodies).
    NoTokenize,
    /// Asking failed otherwise; the run goes on unchecked.
    Failed {
        /// What went wrong.
        error: String,
    },
}

impl TokenCheck {
    /// Compares the prompts' own counts with the server's, one pair per
    /// prompt (the summary's statistics and wording).
    pub fn compare(tokenizer: &str, counts: &[(u64, u64)]) -> Option<Self> {
        let mut diffs = BTreeMap::<i64, u64>::new();
        let (mut sent, mut server) = (0, 0);
        for &(own, theirs) in counts {
            *diffs.entry(theirs as i64 - own as i64).or_default() += 1;
            sent += own;
            server += theirs;
        }
        let stats = PromptTokens::from_differences(&diffs, sent, server)?;
        let lo = diffs.keys().next().copied().unwrap_or(0);
        let hi = diffs.keys().next_back().copied().unwrap_or(0);
        let warn = lo != hi || stats.difference.abs() > PROMPT_TOKEN_WARNING;
        Some(Self::Counted {
            prompts: stats.requests,
            tokenizer: tokenizer.to_owned(),
            sent,
            server,
            difference: stats.difference,
            per_prompt_p50: stats.per_request_p50,
            per_prompt_max: if hi.abs() >= lo.abs() { hi } else { lo },
            per_prompt_range: (lo, hi),
            warning: warn.then(|| prompt_token_mismatch(lo, hi)),
        })
    }

    /// The one line printed to stderr; `url` is the server's base URL.
    pub fn line(&self, url: &str) -> String {
        match self {
            Self::Counted {
                prompts,
                tokenizer,
                difference,
                per_prompt_p50: p50,
                per_prompt_max: max,
                per_prompt_range: (lo, hi),
                warning,
                ..
            } => {
                let counted = if lo == hi {
                    let s = if lo.abs() == 1 { "" } else { "s" };
                    format!("{lo:+} token{s} each")
                } else {
                    format!(
                        "{lo:+} to {hi:+} tokens per prompt ({:+.1}% in all)",
                        difference * 100.0
                    )
                };
                let meaning = match (warning, lo == hi, lo) {
                    (Some(w), _, _) => format!("warning: {w}"),
                    (None, true, 0) => "the counts match".to_owned(),
                    (None, true, 1) => "likely a BOS token".to_owned(),
                    (None, _, _) => "tokens the server adds itself (BOS, chat template)".to_owned(),
                };
                format!(
                    "check-tokens: {prompts} prompts, server counted {counted} (p50 {p50:+}, max {max:+}) against {tokenizer}: {meaning}"
                )
            }
            Self::NoTokenize => format!(
                "check-tokens: {url} has no /tokenize (404 to vLLM's and llama.cpp's requests); prompt lengths not checked, going on"
            ),
            Self::Failed { error } => format!(
                "check-tokens: asking {url}/tokenize failed ({error}); prompt lengths not checked, going on"
            ),
        }
    }
}

impl Target {
    /// Runs `--check-tokens` once per target (a sweep checks before its
    /// first step, prints one line, and records the result in every step)
    /// on the first N prompts of the schedule `opts` gives over `rows`,
    /// built as the run builds them (salted). `None` without the flag.
    pub(super) async fn check_tokens(
        &self,
        opts: &RunOptions,
        rows: &[TraceRecord],
    ) -> anyhow::Result<Option<&TokenCheck>> {
        let (Some(n), Some(synth)) = (self.check_tokens, &self.builder.synth) else {
            return Ok(None);
        };
        if let Some(done) = self.token_check.get() {
            return Ok(Some(done));
        }
        let mut sched = schedule::plan(&opts.schedule, rows)?;
        if let Some(shard) = opts.shard {
            sched = sched.sharded(shard);
        }
        let synth = synth.salted(opts.prompt_salt);
        let firsts = sched
            .take(n)
            .filter_map(|s| Some((rows.get(s.trace_index as usize)?, s.repeat)));
        let check = self
            .token_check
            .get_or_init(|| async {
                let check = self.ask_server(&synth, firsts).await;
                eprintln!("{}", check.line(&self.endpoint.display_url()));
                check
            })
            .await;
        Ok(Some(check))
    }

    /// Asks the server to count each prompt of `rows` and compares.
    async fn ask_server<'a>(
        &self,
        synth: &PromptSynth,
        rows: impl Iterator<Item = (&'a TraceRecord, u32)>,
    ) -> TokenCheck {
        let mut counts = Vec::new();
        for (record, repeat) in rows {
            // A prompt that cannot be made fails in the run, as a row;
            // here it is left out.
            let Ok(prompt) = synth.synthesize(record, repeat) else {
                continue;
            };
            match self
                .endpoint
                .count_tokens(&self.builder.model, &prompt.text)
                .await
            {
                Ok(Some(theirs)) => counts.push((prompt.ids.len() as u64, theirs)),
                Ok(None) => return TokenCheck::NoTokenize,
                Err(e) => {
                    return TokenCheck::Failed {
                        error: e.to_string(),
                    };
                }
            }
        }
        TokenCheck::compare(&synth.tokenizer().name(), &counts).unwrap_or_else(|| {
            TokenCheck::Failed {
                error: "no prompt could be made to compare".into(),
            }
        })
    }

    /// The target's part of the run config, with the `--check-tokens`
    /// result under `check_tokens`.
    pub(super) fn config_with_check(&self, check: Option<&TokenCheck>) -> serde_json::Value {
        let mut config = self.config_json.clone();
        if let (Some(check), Some(map)) = (check, config.as_object_mut()) {
            map.insert(
                "check_tokens".into(),
                serde_json::to_value(check).unwrap_or_default(),
            );
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_and_wandering_differences_are_told_apart() {
        let bos = TokenCheck::compare("o200k_base", &[(500, 501); 8]).unwrap();
        let line = bos.line("http://x");
        assert_eq!(
            line,
            "check-tokens: 8 prompts, server counted +1 token each (p50 +1, max +1) against o200k_base: likely a BOS token"
        );
        // Short prompts: the same +1 is over 2%, and warned of.
        let short = TokenCheck::compare("o200k_base", &[(20, 21); 4]).unwrap();
        assert!(
            short
                .line("u")
                .contains("warning: the server counts +1 tokens on every request")
        );
        // Another tokenizer: differences wander, even under 2%.
        let other = TokenCheck::compare("o200k_base", &[(1000, 1003), (1000, 1010)]).unwrap();
        let line = other.line("u");
        assert!(line.contains("+3 to +10 tokens per prompt"), "{line}");
        assert!(line.contains("max +10"), "{line}");
        assert!(line.contains("another tokenizer"), "{line}");
        let same = TokenCheck::compare("t", &[(10, 10)]).unwrap();
        assert!(
            same.line("u").ends_with("the counts match"),
            "{}",
            same.line("u")
        );
        assert_eq!(TokenCheck::compare("t", &[]), None);
    }
}
