//! The command line: clap derive, help from doc comments, a `ValueEnum` for
//! every closed set. Flag names are a contract with users' scripts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::tokenize::TokenizerSpec;

/// Trace-replay, open-loop traffic simulator for LLM inference endpoints.
#[derive(Debug, Parser)]
#[command(name = "llm-replay", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands, in pipeline order.
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Turn a dataset, public trace or production log into a Parquet trace.
    Ingest(IngestArgs),
    /// Validate a trace and print what to know before replaying it.
    Inspect(InspectArgs),
}

/// Input formats of `ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IngestFormat {
    /// ShareGPT JSON array `[{id, conversations:[{from, value}]}]`.
    Sharegpt,
    /// JSONL `{messages:[{role, content}], ...}`.
    OpenaiMessages,
    /// Azure LLM inference trace CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`).
    Azure,
    /// BurstGPT CSV (v1 or v2, columns by name).
    Burstgpt,
    /// Mooncake JSONL `{timestamp, input_length, output_length, hash_ids}`.
    Mooncake,
    /// Qwen/Bailian JSONL (`chat_id`, `parent_chat_id`, `timestamp`, ...).
    Bailian,
    /// Production request logs (OpenAI-compatible gateway, LiteLLM, Batch
    /// API), scrubbed of all content.
    OpenaiLog,
}

impl IngestFormat {
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

/// `llm-replay ingest FORMAT INPUT... -o TRACE`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Input format.
    #[arg(value_enum)]
    pub format: IngestFormat,
    /// Input files; `-` (or none) reads standard input.
    pub inputs: Vec<PathBuf>,
    /// The trace to write (Parquet).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Tokenizer for counting text: o200k_base, cl100k_base, or the path of a
    /// HuggingFace tokenizer.json.
    #[arg(long, default_value = "o200k_base")]
    pub tokenizer: TokenizerSpec,
    /// Skip invalid records (counted by reason in the summary and metadata)
    /// instead of stopping at the first.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Keep prompt text in the `prompt_text` column (public datasets only;
    /// never for production logs).
    #[arg(long)]
    pub keep_text: bool,
    /// Tokens per prefix block (`prefix_block_ids`): Mooncake 512, Bailian
    /// 16, logs 512 unless given.
    #[arg(long)]
    pub block_size: Option<u32>,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Filters and sampling.
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Options for production logs.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Filters and sampling, as vLLM's dataset sampler offers them.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Filters and sampling")]
pub struct FilterArgs {
    /// Keep only the first user turn of each conversation.
    #[arg(long)]
    pub first_turn_only: bool,
    /// Drop rows with fewer input tokens.
    #[arg(long)]
    pub min_input: Option<u32>,
    /// Drop rows with more input tokens.
    #[arg(long)]
    pub max_input: Option<u32>,
    /// Drop rows with fewer output tokens.
    #[arg(long)]
    pub min_output: Option<u32>,
    /// Drop rows with more output tokens.
    #[arg(long)]
    pub max_output: Option<u32>,
    /// Drop rows with fewer input + output tokens.
    #[arg(long)]
    pub min_total: Option<u32>,
    /// Drop rows with more input + output tokens.
    #[arg(long)]
    pub max_total: Option<u32>,
    /// Keep a uniform random sample of this many rows (after filters),
    /// in their original order.
    #[arg(long)]
    pub sample: Option<u64>,
    /// Seed for `--sample`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Options for `openai-log` (production request logs).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Production logs (openai-log)")]
pub struct LogArgs {
    /// JSON path (dot-separated) of the request start time.
    #[arg(long)]
    pub time_field: Option<String>,
    /// JSON path of the request end time.
    #[arg(long)]
    pub end_time_field: Option<String>,
    /// JSON path of the session or conversation id.
    #[arg(long)]
    pub session_field: Option<String>,
    /// JSON path of the request body (`messages` or `prompt` inside).
    #[arg(long)]
    pub request_field: Option<String>,
    /// JSON path of the response body (or its `usage`).
    #[arg(long)]
    pub response_field: Option<String>,
    /// Batch API output file to pair with a Batch API input file.
    #[arg(long)]
    pub batch_output: Option<PathBuf>,
    /// Secret salt for the keyed hashes of ids and prefix blocks; random
    /// when not given, and never written out.
    #[arg(long, env = "LLM_REPLAY_SALT", hide_env_values = true)]
    pub salt: Option<String>,
    /// Write the absolute start time of the log into the trace metadata.
    #[arg(long)]
    pub keep_t0: bool,
}

/// `llm-replay inspect TRACE`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The trace file.
    pub trace: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
