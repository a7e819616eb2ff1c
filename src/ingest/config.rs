//! What one ingest is asked to do, validated: the typed form of the ingest
//! flags, built once by `commands::ingest` (or by a test or bench directly).

use std::num::NonZeroU32;
use std::path::PathBuf;

use super::Input;
use crate::tokenize::TokenizerSpec;

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// ShareGPT JSON array `[{id, conversations:[{from, value}]}]`.
    Sharegpt,
    /// JSONL `{messages:[{role, content}], ...}`.
    OpenaiMessages,
    /// Azure LLM inference trace CSV.
    Azure,
    /// BurstGPT CSV (v1 or v2).
    Burstgpt,
    /// Mooncake JSONL.
    Mooncake,
    /// Qwen/Bailian JSONL.
    Bailian,
    /// Production request logs (gateway pairs, LiteLLM spend logs, Batch).
    OpenaiLog,
}

impl Format {
    /// The name as written on the command line and in trace metadata.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sharegpt => "sharegpt",
            Self::OpenaiMessages => "openai-messages",
            Self::Azure => "azure",
            Self::Burstgpt => "burstgpt",
            Self::Mooncake => "mooncake",
            Self::Bailian => "bailian",
            Self::OpenaiLog => "openai-log",
        }
    }
}

/// One ingest.
#[derive(Debug, Clone)]
pub struct Config {
    /// Input format.
    pub format: Format,
    /// Input files (or standard input), in order.
    pub inputs: Vec<Input>,
    /// The trace to write.
    pub output: PathBuf,
    /// Tokenizer for counting text.
    pub tokenizer: TokenizerSpec,
    /// Count invalid records by reason instead of stopping at the first.
    pub skip_invalid: bool,
    /// Keep prompt text (public datasets only).
    pub keep_text: bool,
    /// Tokens per prefix block; `None` takes the format's own (Mooncake
    /// 512, Bailian 16, openai-log 512; text datasets make no blocks).
    pub block_size: Option<NonZeroU32>,
    /// Length filters and sampling.
    pub filters: FilterConfig,
    /// Production-log options.
    pub log: LogConfig,
    /// Mooncake only: infer sessions from prefix chains (see
    /// [`super::mooncake`]). The command line refuses it with other
    /// formats; a library caller that sets it for one has it ignored.
    pub infer_sessions: bool,
}

impl Config {
    /// An ingest of `inputs` in `format` into `output`, with defaults:
    /// o200k_base, stop at the first bad record, no text, no filters, no
    /// inferred sessions.
    pub fn new(format: Format, inputs: Vec<Input>, output: impl Into<PathBuf>) -> Self {
        Self {
            format,
            inputs,
            output: output.into(),
            tokenizer: TokenizerSpec::O200kBase,
            skip_invalid: false,
            keep_text: false,
            block_size: None,
            filters: FilterConfig::default(),
            log: LogConfig::default(),
            infer_sessions: false,
        }
    }

    /// The block size given, or the format's `default`.
    pub fn block_or(&self, default: u32) -> u32 {
        self.block_size.map_or(default, NonZeroU32::get)
    }
}

/// Length filters and sampling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterConfig {
    /// Keep only the first user turn of each conversation.
    pub first_turn_only: bool,
    /// Drop rows with fewer input tokens.
    pub min_input: Option<u32>,
    /// Drop rows with more input tokens.
    pub max_input: Option<u32>,
    /// Drop rows with fewer output tokens.
    pub min_output: Option<u32>,
    /// Drop rows with more output tokens.
    pub max_output: Option<u32>,
    /// Drop rows with fewer input + output tokens.
    pub min_total: Option<u32>,
    /// Drop rows with more input + output tokens.
    pub max_total: Option<u32>,
    /// Keep a uniform random sample of this many rows, in input order.
    pub sample: Option<u64>,
    /// Seed for `sample`.
    pub seed: u64,
}

/// Units of numeric log times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeUnit {
    /// From the magnitude of the number.
    #[default]
    Auto,
    /// Seconds since the epoch (may have a fraction).
    S,
    /// Milliseconds since the epoch.
    Ms,
    /// Microseconds since the epoch.
    Us,
    /// Nanoseconds since the epoch.
    Ns,
}

/// Options of production-log ingest (`openai-log`); field paths are dotted.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// OpenAI Batch output files joined to the input by `custom_id`.
    pub batch_output: Vec<PathBuf>,
    /// Field with the request's start time.
    pub time_field: Option<String>,
    /// Field with the response's end time.
    pub end_time_field: Option<String>,
    /// Unit of numeric times.
    pub time_unit: TimeUnit,
    /// Field with a session or conversation id.
    pub session_field: Option<String>,
    /// Field with the end user's or tenant's id.
    pub user_field: Option<String>,
    /// Field with the request body.
    pub request_field: Option<String>,
    /// Field with the response.
    pub response_field: Option<String>,
    /// Secret for the keyed hashes (never written anywhere).
    pub salt: Option<String>,
    /// Write the absolute start time into the metadata.
    pub keep_t0: bool,
    /// Replace model names by keyed hashes.
    pub hash_model: bool,
}
