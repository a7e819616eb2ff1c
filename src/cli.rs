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
    /// Replay a trace against an endpoint, open loop, one result row per
    /// scheduled request. With no --url, against the embedded simulator.
    Replay(ReplayArgs),
    /// Replay a trace at a series of offered loads, find the knee and the
    /// capacity under SLOs.
    Sweep(crate::sweep::SweepArgs),
    /// Recompute summaries from results files or sweep directories, as text,
    /// JSON or a self-contained HTML report with plots.
    Report(crate::report::ReportArgs),
    /// Run the embedded simulated OpenAI-compatible endpoint on its own.
    Sim(SimArgs),
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
    /// Production request logs, JSONL: gateway request/response pairs,
    /// LiteLLM spend logs, or an OpenAI Batch input file (with
    /// `--batch-output`). Always scrubbed: no content, ids or absolute
    /// times leave.
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
    /// Keep prompt text in the `prompt_text` column (public datasets only).
    #[arg(long)]
    pub keep_text: bool,
    /// Tokens per prefix block (`prefix_block_ids`): Mooncake 512, Bailian
    /// 16, openai-log 512; for text datasets, blocks are made only when this
    /// is given.
    #[arg(long)]
    pub block_size: Option<u32>,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Filters and sampling.
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Production logs.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Options of `ingest openai-log`. Field paths are dotted (`metadata.session_id`)
/// and looked up in the log record, then in the request body; a field that
/// holds a JSON string is looked into as well.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Production logs (openai-log)")]
pub struct LogArgs {
    /// OpenAI Batch API output file(s) joined to the input file by
    /// `custom_id` (their `response.body.usage` gives the token counts).
    #[arg(long)]
    pub batch_output: Vec<PathBuf>,
    /// Field with the request's start time (default: the first of
    /// startTime, start_time, request_time, timestamp, created_at, time, ts).
    #[arg(long)]
    pub time_field: Option<String>,
    /// Field with the response's end time, for think times (default:
    /// endTime, end_time, completion_time, response_time, finished_at).
    #[arg(long)]
    pub end_time_field: Option<String>,
    /// Unit of numeric times; `auto` reads seconds, milliseconds,
    /// microseconds or nanoseconds since the epoch from the magnitude.
    #[arg(long, value_enum, default_value = "auto")]
    pub time_unit: TimeUnitArg,
    /// Field with a session or conversation id (default: session_id,
    /// conversation_id, litellm_session_id, thread_id, and the same under
    /// metadata). Requests that resend an earlier request's history and
    /// reply are linked into its session as well.
    #[arg(long)]
    pub session_field: Option<String>,
    /// Field with the end user's (or tenant's) id, hashed into the
    /// `user_id` column (default: user, end_user, user_id, and
    /// metadata.user_api_key_user_id); e.g. `metadata.user_api_key_team_id`
    /// to group by team.
    #[arg(long)]
    pub user_field: Option<String>,
    /// Field with the request body (default: request, request_body, body,
    /// proxy_server_request.body, or the record itself when it has
    /// `messages`, `prompt` or `input`).
    #[arg(long)]
    pub request_field: Option<String>,
    /// Field with the response (default: response, response_body,
    /// response.body).
    #[arg(long)]
    pub response_field: Option<String>,
    /// Secret for the keyed hashes of ids and prefix blocks; the same salt
    /// gives the same ids across ingests. Default: a random salt per run
    /// (ids then match nothing else). Never written anywhere.
    #[arg(long, env = "LLM_REPLAY_SALT", hide_env_values = true)]
    pub salt: Option<String>,
    /// Write the absolute start time (RFC 3339, UTC) into the trace
    /// metadata; by default only offsets from the first request are kept.
    #[arg(long)]
    pub keep_t0: bool,
    /// Replace model names by keyed hashes (`model-<hex>`): fine-tuned
    /// model names can carry an organisation's name.
    #[arg(long)]
    pub hash_model: bool,
}

/// Units of numeric log times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TimeUnitArg {
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

/// `llm-replay inspect TRACE`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The trace file.
    pub trace: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Where requests go and how they are built (shared by `replay` and
/// `sweep`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Target")]
pub struct TargetArgs {
    /// Base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:8000).
    /// Without it, an embedded simulated endpoint is started on 127.0.0.1.
    #[arg(long)]
    pub url: Option<String>,
    /// API to call.
    #[arg(long, value_enum, default_value = "completions")]
    pub api: crate::client::Api,
    /// Model name; default: the first model of /v1/models.
    #[arg(long)]
    pub model: Option<String>,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Environment variable holding the API key (sent as a Bearer token,
    /// never printed or written).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// Use HTTP/2 (prior knowledge) instead of an HTTP/1.1 keep-alive pool.
    #[arg(long)]
    pub http2: bool,
    /// Connection timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: std::time::Duration,
    /// Give up on a request with no first token after this long (outcome
    /// timeout).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttft_timeout: Option<std::time::Duration>,
    /// Give up on a whole request after this long (outcome timeout).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,
    /// Send non-streaming requests (no TTFT or inter-token latency).
    #[arg(long)]
    pub no_stream: bool,
    /// Force the output length with the vLLM/SGLang extensions `ignore_eos`
    /// and `min_tokens`.
    #[arg(long)]
    pub force_output_len: bool,
    /// What to send as the prompt: synthetic text with exactly
    /// `input_tokens` tokens, the same as token ids (completions only), or
    /// the trace's original text (`ingest --keep-text`).
    #[arg(long, value_enum, default_value = "synthetic")]
    pub prompts: crate::prompt::PromptMode,
    /// Tokenizer for synthetic prompts: o200k_base, cl100k_base or a
    /// tokenizer.json path. Default: the trace's tokenizer when it is an
    /// embedded one, else o200k_base. Use the served model's tokenizer.json
    /// for exact counts at the server.
    #[arg(long)]
    pub tokenizer: Option<TokenizerSpec>,
    /// Cap on requests in flight; requests over it wait or are dropped
    /// (`--on-cap`), and either way are recorded.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// What a request over `--max-in-flight` does.
    #[arg(long, value_enum, default_value = "wait")]
    pub on_cap: crate::replay::dispatch::CapPolicy,
    /// Read this Prometheus endpoint (e.g. http://127.0.0.1:8000/metrics)
    /// every second during the run into server_metrics.parquet beside the
    /// results; `report` plots it on the run's timeline.
    #[arg(long)]
    pub scrape: Option<String>,
    /// Options of the embedded simulated endpoint (used without --url).
    #[command(flatten)]
    pub sim: crate::sim::SimConfig,
}

/// How requests are scheduled.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Schedule")]
pub struct ScheduleArgs {
    /// Send at this many requests per second (instead of the recorded
    /// times).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Inter-arrival process for --rate.
    #[arg(long, value_enum, default_value = "poisson")]
    pub arrivals: ArrivalsArg,
    /// Gamma shape for `--arrivals gamma` (1 = Poisson, < 1 burstier).
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Order of trace rows for --rate.
    #[arg(long, value_enum, default_value = "sequential")]
    pub order: crate::schedule::Order,
    /// Stop scheduling after this long (loops the trace to fill it with
    /// --rate).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Stop after this many requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Recorded times are divided by this (2 = twice as fast).
    #[arg(long, default_value_t = 1.0)]
    pub speedup: f64,
    /// Start of the window of trace time to replay.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub start: Option<std::time::Duration>,
    /// End of the window of trace time to replay.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub end: Option<std::time::Duration>,
    /// Spread requests that share one recorded timestamp evenly over this
    /// much trace time (for quantized traces such as Mooncake's, e.g. 1s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub spread: Option<std::time::Duration>,
    /// Seed of every random choice (arrival gaps, shuffles, prompts);
    /// written into the results.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Arrival processes for `--arrivals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArrivalsArg {
    /// Exponential gaps.
    Poisson,
    /// Gamma gaps with shape `--burstiness`.
    Gamma,
    /// Equal gaps.
    Constant,
}

/// `llm-replay replay TRACE`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The trace to replay (Parquet, from `ingest`).
    pub trace: PathBuf,
    /// Results file (Parquet); default: a new results-<time>.parquet in the
    /// current folder. Never overwritten.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Also write the summary as JSON here.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Goodput objectives, e.g. `ttft=500ms,tpot=50ms,e2e=10s`.
    #[arg(long)]
    pub slo: Option<crate::report::Slo>,
    /// On Ctrl-C, how long in-flight requests may finish before they are
    /// cancelled.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
    /// p99 send lag above which the summary says the generator, not the
    /// server, was the bottleneck.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    pub max_send_lag: std::time::Duration,
    /// No live progress line.
    #[arg(long, short)]
    pub quiet: bool,
    /// The target.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The schedule.
    #[command(flatten)]
    pub schedule: ScheduleArgs,
}

/// `llm-replay sim`.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub bind: std::net::SocketAddr,
    /// Simulator options.
    #[command(flatten)]
    pub sim: crate::sim::SimConfig,
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
