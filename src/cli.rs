//! The command line: clap derive, help from doc comments, a `ValueEnum` for
//! every closed set. Flag names are a contract with users' scripts.
//!
//! This is the only module that knows clap. `commands` turns these structs
//! into the library's typed configs; value parsers here reject values out of
//! range with the flag named, before any work starts.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::schedule::{Shard, Stages};
use crate::sim::SimConfig;
use crate::tokenize::TokenizerSpec;

/// Declares a `ValueEnum` for the command line that mirrors a library enum
/// variant for variant, so the library itself never depends on clap.
macro_rules! flag_enum {
    ($(#[$meta:meta])* $name:ident => $target:ty { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl From<$name> for $target {
            fn from(v: $name) -> Self {
                match v {
                    $($name::$variant => <$target>::$variant),+
                }
            }
        }
    };
}

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
    /// Write a trace from length, arrival and session distributions.
    Synth(SynthArgs),
    /// Reshape traces for what-if questions: scale load by whole sessions,
    /// compress a day, mix traces and classes, scale and cap lengths.
    Transform(TransformArgs),
    /// Validate a trace and print what to know before replaying it.
    Inspect(InspectArgs),
    /// Replay a trace against an endpoint, open loop, one result row per
    /// scheduled request. With no --url, against the embedded simulator.
    Replay(ReplayArgs),
    /// Replay a trace at a series of offered loads, find the knee and the
    /// capacity under SLOs.
    Sweep(SweepArgs),
    /// Recompute summaries from results files or sweep directories, as text,
    /// JSON or a self-contained HTML report with plots.
    Report(ReportArgs),
    /// Run the embedded simulated OpenAI-compatible endpoint on its own.
    Sim(SimArgs),
}

flag_enum! {
    /// Input formats of `ingest`.
    IngestFormat => crate::ingest::Format {
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
    /// Tokenizer for counting text: o200k_base, cl100k_base, the path of a
    /// HuggingFace tokenizer.json or of a model directory holding one, or a
    /// model id (meta-llama/Llama-3.2-1B) in the local HuggingFace cache
    /// ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub; nothing is
    /// downloaded).
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
    #[arg(long, value_parser = block_size)]
    pub block_size: Option<NonZeroU32>,
    /// Mooncake only: link each request to the earlier one whose full prefix
    /// blocks it starts with (at least 2), into sessions with
    /// `session_id` and `turn_index`. Inferred, not recorded: a shared
    /// prefix is evidence of a conversation, not proof.
    #[arg(long)]
    pub infer_sessions: bool,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Replace the output trace if it exists (it is never an input).
    #[arg(long)]
    pub force: bool,
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
#[derive(Debug, Clone, Args)]
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

flag_enum! {
    /// Units of numeric log times.
    TimeUnitArg => crate::ingest::TimeUnit {
        /// From the magnitude of the number.
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
}

/// Filters and sampling, as vLLM's dataset sampler offers them.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Filters and sampling")]
pub struct FilterArgs {
    /// Keep only the first user turn of each conversation.
    #[arg(long)]
    pub first_turn_only: bool,
    /// Length filters.
    #[command(flatten)]
    pub lengths: LengthFilterArgs,
    /// Keep a uniform random sample of this many rows (after filters),
    /// in their original order.
    #[arg(long)]
    pub sample: Option<u64>,
    /// Seed for `--sample`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Length filters, shared by `ingest` and `transform`.
#[derive(Debug, Clone, Args)]
pub struct LengthFilterArgs {
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
}

/// `llm-replay synth -o TRACE`: a trace from distributions.
///
/// Lengths and counts take `100`, `normal:MEAN,SD`, `lognormal:MEAN,SD`
/// (mean and SD of the values), `uniform:LO,HI`, `exp:MEAN`, or
/// `from:TRACE[@KIND]` (the empirical distribution of a trace, optionally
/// of its rows of one `request_kind`). Draws are rounded and at least 1.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// The trace to write (Parquet).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Prompt tokens of each request (in a session: of each new user
    /// message; the history comes on top).
    #[arg(long, default_value = "512")]
    pub input_tokens: crate::workload::dist::Lengths,
    /// Tokens of each response.
    #[arg(long, default_value = "128")]
    pub output_tokens: crate::workload::dist::Lengths,
    /// Requests to generate (sessions, when `--turns` makes them); with
    /// arrivals, the first of this and `--duration` ends the trace.
    /// Default 1000 when neither is given.
    #[arg(long, visible_alias = "sessions", value_parser = count)]
    pub requests: Option<u64>,
    /// With arrivals: first turns stop arriving after this long.
    #[arg(long, value_parser = positive_duration)]
    pub duration: Option<Duration>,
    /// `none` (no times: replay it with `--rate`), or a process with its
    /// rate: `poisson:20`, `gamma:20` (shape `--burstiness`),
    /// `constant:20`; the rate may come from `--rate` or `--rate-curve`
    /// instead. Default: none, or poisson when a rate is given.
    #[arg(long, value_parser = synth_arrivals)]
    pub arrivals: Option<SynthArrivalsArg>,
    /// Mean arrival rate, requests (sessions) per second.
    #[arg(long, value_parser = rate, allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// Gamma shape for `gamma` arrivals (1 = Poisson, < 1 burstier).
    #[arg(long, default_value_t = 1.0, value_parser = positive, allow_negative_numbers = true)]
    pub burstiness: f64,
    /// CSV of `seconds,rate` points (a header line is allowed): the rate
    /// over time, linear between points, held after the last. A diurnal
    /// curve, a ramp, a drop to zero.
    #[arg(long)]
    pub rate_curve: Option<PathBuf>,
    /// Periodic bursts: `5x:10s/every:60s[/at:30s]` multiplies the rate by
    /// 5 for 10 s once a minute (the first at one period unless `at:`).
    #[arg(long)]
    pub bursts: Option<crate::workload::synth::Bursts>,
    /// Turns per session (a distribution as the lengths); 1 makes single
    /// requests.
    #[arg(long, default_value = "1")]
    pub turns: crate::workload::dist::Lengths,
    /// Time between a reply and the next turn: `5s`, `exp:5s`,
    /// `lognormal:5s,3s`, `uniform:1s,10s`.
    #[arg(long, default_value = "5s")]
    pub think_time: crate::workload::dist::Durations,
    /// Tokens of a system prompt that starts every session (0: none).
    #[arg(long, default_value_t = 0)]
    pub system_prompt_tokens: u32,
    /// Distinct system prompts, each session taking one at random: the
    /// prefix blocks a cache can share between sessions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub system_prompts: u32,
    /// Tokens per prefix block (`prefix_block_ids`).
    #[arg(long, default_value = "512", value_parser = block_size)]
    pub block_size: NonZeroU32,
    /// `request_kind` of every row.
    #[arg(long)]
    pub request_kind: Option<String>,
    /// `model` of every row.
    #[arg(long)]
    pub model: Option<String>,
    /// Seed of every draw; the same seed and flags give the same trace.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Replace the output trace if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `--synthetic input=100,output=16,...`: keys as `synth`'s flags; a part
/// without `=` continues the previous value (`input=normal:512,128`).
fn synthetic(s: &str) -> Result<crate::workload::synth::SynthSpec, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in s.split(',') {
        match part.split_once('=') {
            Some((k, v)) => pairs.push((k.trim().replace('-', "_"), v.trim().to_owned())),
            None => match pairs.last_mut() {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(part.trim());
                }
                None => return Err(format!("{part:?}: write input=100,output=16")),
            },
        }
    }
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let lengths = |key: &str| -> Result<crate::workload::dist::Lengths, String> {
        get(key)
            .ok_or_else(|| format!("{key}= is missing: write input=100,output=16"))?
            .parse()
            .map_err(|e| format!("{key}: {e}"))
    };
    let mut spec = crate::workload::synth::SynthSpec::new(lengths("input")?, lengths("output")?);
    for (k, v) in &pairs {
        match k.as_str() {
            "input" | "output" => {}
            "requests" | "sessions" => spec.requests = Some(count(v)?),
            "turns" => spec.sessions.turns = v.parse().map_err(|e| format!("turns: {e}"))?,
            "think_time" => {
                spec.sessions.think_time = v.parse().map_err(|e| format!("think_time: {e}"))?;
            }
            "system_prompt_tokens" => {
                spec.sessions.system_prompt_tokens = v
                    .parse()
                    .map_err(|_| format!("system_prompt_tokens: {v:?} is not a count"))?;
            }
            "system_prompts" => {
                spec.sessions.system_prompts = u32::try_from(count(v)?)
                    .map_err(|_| format!("system_prompts: {v} is too large"))?;
            }
            "seed" => {
                spec.seed = v
                    .parse()
                    .map_err(|_| format!("seed: {v:?} is not a number"))?
            }
            other => {
                return Err(format!(
                    "{other:?} is not a key of --synthetic (input, output, requests, turns, think_time, system_prompt_tokens, system_prompts, seed)"
                ));
            }
        }
    }
    Ok(spec)
}

/// `--arrivals` of `synth`: a process (none for a timeless trace) and maybe
/// its rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthArrivalsArg {
    /// `None` for `none`.
    pub process: Option<ArrivalsArg>,
    /// The rate after `:`, if given.
    pub rate: Option<f64>,
}

fn synth_arrivals(s: &str) -> Result<SynthArrivalsArg, String> {
    let t = s.trim();
    let (name, r) = match t.split_once(':') {
        Some((n, r)) => (n.trim(), Some(rate(r)?)),
        None => (t, None),
    };
    let process = match name.to_ascii_lowercase().as_str() {
        "none" if r.is_none() => None,
        "none" => return Err("`none` takes no rate".into()),
        "poisson" => Some(ArrivalsArg::Poisson),
        "gamma" => Some(ArrivalsArg::Gamma),
        "constant" => Some(ArrivalsArg::Constant),
        _ => {
            return Err(format!(
                "{s:?}: write none, poisson[:RATE], gamma[:RATE] or constant[:RATE]"
            ));
        }
    };
    Ok(SynthArrivalsArg { process, rate: r })
}

/// `llm-replay transform INPUT -o OUTPUT`: reshape a trace for a what-if.
///
/// The operations run in this order whatever the order of the flags:
/// merge, window, length filters, reweight, sample-sessions, scale-load,
/// scale-lengths, cap, compress-day, speedup. Sessions are kept whole;
/// each operation is listed in the output's metadata (`transforms`) with
/// its parameters and the inputs' SHA-256.
#[derive(Debug, Args)]
pub struct TransformArgs {
    /// The trace to reshape (leave out with --merge).
    pub input: Option<PathBuf>,
    /// The trace to write (Parquet).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Mix traces by share of sessions: `A.parquet:0.7,B.parquet:0.3`.
    /// Each starts at 0; shorter ones repeat to the first's span; ids are
    /// prefixed with the file's name so they stay distinct.
    #[arg(long)]
    pub merge: Option<String>,
    /// Keep sessions that start within `FROM..TO` of trace time
    /// (`10m..40m`), shifted to start at 0.
    #[arg(long, value_parser = crate::workload::transform::parse_window)]
    pub window: Option<(Duration, Duration)>,
    /// Length filters (a session ends at its first turn that fails one).
    #[command(flatten)]
    pub filters: LengthFilterArgs,
    /// Change the class mix: `request_kind:code=0.3,chat=0.7` (or
    /// `user_id:...`, `model:...`; `(none)` names rows without one).
    /// Sessions are drawn per class to those shares, the total kept.
    #[arg(long)]
    pub reweight: Option<crate::workload::transform::Reweight>,
    /// Keep this share of whole sessions (seeded), `0.1` or `10%`.
    #[arg(long, value_parser = share)]
    pub sample_sessions: Option<f64>,
    /// Scale the load by whole sessions: below 1 thins them, above 1
    /// overlays copies shifted by up to `--jitter` with fresh session and
    /// prefix ids (shared prefixes such as system prompts stay shared); the
    /// arrival shape and the sessions stay the trace's.
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    pub scale_load: Option<f64>,
    /// Largest shift of a `--scale-load` (or `--reweight`) copy, either
    /// way, wrapped into the trace's span. Each copy moves as a whole, so
    /// its bursts and their spacing stay the trace's own.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub jitter: Duration,
    /// Multiply lengths: `input=1.5,output=0.5`.
    #[arg(long, value_parser = crate::workload::transform::parse_length_factors)]
    pub scale_lengths: Option<(f64, f64)>,
    /// Cap lengths: `input=8192[,output=1024]`.
    #[arg(long, value_parser = crate::workload::transform::parse_cap)]
    pub cap: Option<(Option<u32>, Option<u32>)>,
    /// Compress a span of trace time into another, session starts only
    /// (think times stay real): `24h:1h` makes a day an hour.
    #[arg(long, value_parser = crate::workload::transform::parse_spans)]
    pub compress_day: Option<(Duration, Duration)>,
    /// Divide every time, think times too (as `replay --speedup`, baked in).
    #[arg(long, value_parser = speedup, allow_negative_numbers = true)]
    pub speedup: Option<f64>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Replace the output trace if it exists (it is never an input).
    #[arg(long)]
    pub force: bool,
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

flag_enum! {
    /// APIs of `--api`.
    ApiArg => crate::client::Api {
        /// `/v1/completions`: the prompt as text or token ids.
        Completions,
        /// `/v1/chat/completions`: the prompt as one user message.
        Chat,
        /// `/v1/embeddings`: inputs of exactly `input_tokens`, never
        /// streamed (no TTFT or output tokens).
        Embeddings,
        /// OpenAI Responses `/v1/responses`.
        Responses,
        /// Anthropic Messages `/v1/messages` (`x-api-key`, `anthropic-version`).
        Messages,
    }
}

flag_enum! {
    /// What `--prompts` sends.
    PromptsArg => crate::prompt::PromptMode {
        /// Synthetic text with exactly `input_tokens` tokens.
        Synthetic,
        /// The same synthetic prompt as token ids (completions API only).
        Tokens,
        /// The trace's `prompt_text` as it was (needs `ingest --keep-text`).
        Original,
    }
}

flag_enum! {
    /// What a request over `--max-in-flight` does.
    OnCapArg => crate::replay::dispatch::CapPolicy {
        /// Wait for a slot; the wait is recorded as `queue_wait_us` and is
        /// part of the send lag.
        Wait,
        /// Do not send; record the request as `dropped`.
        Drop,
    }
}

flag_enum! {
    /// Order of trace rows for `--rate`.
    OrderArg => crate::schedule::Order {
        /// The trace's order, looping.
        Sequential,
        /// A seeded shuffle of the trace, reshuffled on every loop.
        Shuffle,
    }
}

flag_enum! {
    /// Spacing of a `--rates A..B` range.
    SpacingArg => crate::sweep::Spacing {
        /// Equal steps.
        Linear,
        /// Equal ratios.
        Geometric,
    }
}

/// A positive, finite number (rates, speedups, shapes).
fn positive(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a positive number, got {s}"))
    }
}

/// Requests per second: positive, and at least one request a day so a run
/// never waits for days without a word.
fn rate(s: &str) -> Result<f64, String> {
    let v = positive(s)?;
    if v < 1.0 / 86_400.0 {
        return Err(format!(
            "{s} requests per second is less than one a day: the first gap alone would outlast any run"
        ));
    }
    if v > 10_000_000.0 {
        return Err(format!(
            "{s} requests per second is beyond what one client can send"
        ));
    }
    Ok(v)
}

/// A speedup: recorded times are divided by it.
fn speedup(s: &str) -> Result<f64, String> {
    let v = positive(s)?;
    if !(1e-3..=1e6).contains(&v) {
        return Err(format!(
            "{s} is outside 0.001..=1000000 (0.5 replays at half speed, 2 twice as fast)"
        ));
    }
    Ok(v)
}

/// A share in [0, 1]; also accepts a percentage such as `5%`.
/// `--goodput` on a sweep is the share to meet; vLLM's users write their
/// objectives there, so say where those go.
fn goodput_share(s: &str) -> Result<f64, String> {
    share(s).map_err(|e| {
        if s.contains([':', '=']) {
            format!("{e}; on a sweep --goodput is the share of requests that must meet the SLO: give the objectives (vLLM's `--goodput {s}`) as --slo {s:?}")
        } else {
            e
        }
    })
}

fn share(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, scale) = match t.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (t, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a share (0.05 or 5%)"))?;
    let v = v / scale;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "must be a share between 0 and 1 (or 0% and 100%), got {s}"
        ))
    }
}

/// A duration longer than zero (`500ms`, `10s`, `5m`).
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    if d.is_zero() {
        Err("must be longer than zero".into())
    } else {
        Ok(d)
    }
}

/// A duration, zero allowed.
fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))
}

/// A count of at least one.
fn count(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

/// Tokens per prefix block: at least one.
fn block_size(s: &str) -> Result<NonZeroU32, String> {
    s.trim()
        .parse::<u32>()
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| format!("{s:?}: a block is a whole number of tokens, at least 1 (e.g. 512)"))
}

/// A count of at least one, as a `usize`.
fn count_usize(s: &str) -> Result<usize, String> {
    count(s).and_then(|n| usize::try_from(n).map_err(|_| format!("{s} is too large")))
}

/// A byte size: `8MiB`, `64KiB`, `1048576`.
fn byte_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 8MiB, 64KiB, 1048576)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}: use KiB, MiB or GiB")),
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s} is too large"))?;
    if v < 1024 {
        return Err(format!("{s} is below 1 KiB: no real response line fits"));
    }
    Ok(v)
}

/// An `http://` or `https://` URL with a host.
/// Pairs of `--api-map`: `KIND=API,...`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiMap(pub Vec<(String, crate::client::Api)>);

/// Pairs of `--model-map`: `TRACE=SERVED,...`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMap(pub Vec<(String, String)>);

/// Weights of `--models`: `NAME:WEIGHT,...`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelWeights(pub Vec<(String, f64)>);

/// `a=b,c=d` as pairs; each side non-empty, each key once.
fn pairs(s: &str, sep: char) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.rsplit_once(sep) else {
            return Err(format!("{part:?}: expected KEY{sep}VALUE"));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || v.is_empty() {
            return Err(format!("{part:?}: both sides of {sep:?} must be given"));
        }
        if out.iter().any(|(seen, _)| seen == k) {
            return Err(format!("{k:?} is given twice"));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    if out.is_empty() {
        return Err("expected at least one KEY".to_owned() + &sep.to_string() + "VALUE");
    }
    Ok(out)
}

fn api_map(s: &str) -> Result<ApiMap, String> {
    pairs(s, '=')?
        .into_iter()
        .map(|(k, v)| Ok((k, v.parse::<crate::client::Api>()?)))
        .collect::<Result<_, String>>()
        .map(ApiMap)
}

fn model_map(s: &str) -> Result<ModelMap, String> {
    pairs(s, '=').map(ModelMap)
}

fn model_weights(s: &str) -> Result<ModelWeights, String> {
    let weights = pairs(s, ':')?
        .into_iter()
        .map(|(m, w)| match w.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok((m, x)),
            _ => Err(format!("{m}: weight {w:?} is not a positive number")),
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ModelWeights(weights))
}

fn http_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{s:?}: only http:// and https:// URLs are supported"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    Ok(s.trim().to_owned())
}

/// Where requests go and how they are built (shared by `replay` and
/// `sweep`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Target")]
pub struct TargetArgs {
    /// Base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:8000).
    /// Without it, an embedded simulated endpoint is started on 127.0.0.1.
    /// Credentials go in -H or the key variable, never in the URL.
    #[arg(long, value_parser = http_url)]
    pub url: Option<String>,
    /// API to call (for rows `--api-map` does not route elsewhere).
    #[arg(long, value_enum, default_value = "completions")]
    pub api: ApiArg,
    /// Route rows by the trace's `request_kind` to APIs, e.g.
    /// `chat=chat,embed=embeddings`, so chat and embeddings load share one
    /// server as in production; other rows go to `--api`.
    #[arg(long, value_parser = api_map)]
    pub api_map: Option<ApiMap>,
    /// Model name; default: the first model of /v1/models.
    #[arg(long)]
    pub model: Option<String>,
    /// Send each row's trace `model` as a served name, e.g.
    /// `llama-8b=meta-llama/Llama-3.1-8B,sql=sql-lora` (LoRA adapters,
    /// several models behind one gateway); other rows get `--model`.
    #[arg(long, value_parser = model_map)]
    pub model_map: Option<ModelMap>,
    /// Assign models by seeded weight to rows whose trace has no `model`,
    /// e.g. `a:0.7,b:0.3` (the same `--seed` gives each request the same
    /// model).
    #[arg(long, value_parser = model_weights)]
    pub models: Option<ModelWeights>,
    /// Inputs per embeddings request, each of the row's `input_tokens`
    /// (distinct synthetic texts).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub embedding_batch: u32,
    /// Extra request header, `Name: value` (repeatable). An Authorization
    /// header given here is sent as is, instead of the key variable's.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Environment variable holding the API key, sent as a Bearer token
    /// when no -H Authorization is given; never printed or written.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// Use HTTP/2 (prior knowledge) instead of an HTTP/1.1 keep-alive pool.
    #[arg(long)]
    pub http2: bool,
    /// Connection timeout.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub connect_timeout: Duration,
    /// Give up on a request with no first token after this long (outcome
    /// timeout; what it measured is kept).
    #[arg(long, value_parser = positive_duration)]
    pub ttft_timeout: Option<Duration>,
    /// Give up on a whole request after this long (outcome timeout; what
    /// it measured is kept).
    #[arg(long, default_value = "10m", value_parser = positive_duration)]
    pub request_timeout: Duration,
    /// Longest response line (SSE event) or whole response body a request
    /// may receive; beyond it the request ends as `stream_error`, so a
    /// runaway server cannot exhaust the client's memory.
    #[arg(long, default_value = "8MiB", value_parser = byte_size)]
    pub max_response_bytes: usize,
    /// Send non-streaming requests (no TTFT or inter-token latency).
    #[arg(long)]
    pub no_stream: bool,
    /// Force the output length with the vLLM/SGLang extensions `ignore_eos`
    /// and `min_tokens`.
    #[arg(long, visible_alias = "ignore-eos")]
    pub force_output_len: bool,
    /// What to send as the prompt: synthetic text with exactly
    /// `input_tokens` tokens, the same as token ids (completions only), or
    /// the trace's original text (`ingest --keep-text`).
    #[arg(long, value_enum, default_value = "synthetic")]
    pub prompts: PromptsArg,
    /// Tokenizer for synthetic prompts: o200k_base, cl100k_base, the path
    /// of a tokenizer.json or of a model directory holding one, or a model
    /// id (meta-llama/Llama-3.2-1B) in the local HuggingFace cache
    /// ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub; nothing is
    /// downloaded). Default: the trace's tokenizer when it is an embedded
    /// one, else o200k_base. Use the served model's tokenizer for exact
    /// counts at the server.
    #[arg(long)]
    pub tokenizer: Option<TokenizerSpec>,
    /// Cap on requests in flight; requests over it wait or are dropped
    /// (`--on-cap`), and either way are recorded.
    #[arg(long, visible_alias = "max-concurrency", value_parser = count_usize)]
    pub max_in_flight: Option<usize>,
    /// What a request over `--max-in-flight` does.
    #[arg(long, value_enum, default_value = "wait")]
    pub on_cap: OnCapArg,
    /// Most connections open at once (with --http2, requests in flight):
    /// a request over it waits for one, and the wait is its `queue_wait_us`
    /// (part of the send lag), so overload queues in the client instead of
    /// opening sockets until a side runs out of descriptors. Default: the
    /// smaller of 4096 and half the open-file limit.
    #[arg(long, value_parser = count_usize)]
    pub max_connections: Option<usize>,
    /// Engine threads: each is one event loop that paces and sends an
    /// interleaved share of the schedule (whole sessions) on connections of
    /// its own. Default: one per CPU this process may run on (`taskset`
    /// narrows it), at most 8. A closed loop (`--concurrency`) uses one.
    #[arg(long, value_parser = count_usize)]
    pub engine_threads: Option<usize>,
    /// Run the engine threads under SCHED_FIFO (Linux; needs root,
    /// CAP_SYS_NICE or `ulimit -r` above 0), so that no ordinary thread,
    /// kernel housekeeping threads included, delays a send on a shared
    /// core. At 10,000 req/s on one core it took the gap CV the server saw
    /// from 1.2 to 1.1. The engines sleep between requests, and the
    /// kernel's real-time throttling still leaves the core 5% to others.
    #[arg(long)]
    pub realtime: bool,
    /// Send the same synthetic prompts as an earlier run with the same
    /// seed. By default every run (and every sweep step) salts its prompts,
    /// so that nothing an earlier run left in the server's prefix cache is
    /// hit; prefix sharing inside the run stays as the trace says.
    #[arg(long, conflicts_with = "prompt_salt")]
    pub same_prompts: bool,
    /// Salt the prompts with this value (the `llm_replay.prompt_salt` of an
    /// earlier run's results sends that run's prompts again).
    #[arg(long)]
    pub prompt_salt: Option<u64>,
    /// Sampling temperature, sent as `temperature` in every body.
    #[arg(long, help_heading = "Sampling", allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    /// Nucleus sampling, sent as `top_p`.
    #[arg(long, help_heading = "Sampling", allow_negative_numbers = true)]
    pub top_p: Option<f64>,
    /// Top-k sampling, sent as `top_k` (vLLM, SGLang, llama.cpp, TGI).
    #[arg(long, help_heading = "Sampling", allow_negative_numbers = true)]
    pub top_k: Option<i64>,
    /// The body's `seed` (sampling; `--seed` seeds the schedule and prompts).
    #[arg(long, help_heading = "Sampling")]
    pub sampling_seed: Option<u64>,
    /// A stop sequence, sent in `stop` (repeat for several).
    #[arg(long, help_heading = "Sampling")]
    pub stop: Vec<String>,
    /// A JSON object merged into every body, or `@FILE` holding one (e.g.
    /// '{"ignore_eos": true}' or chat_template_kwargs); the sampling flags
    /// above win over its keys. The keys llm-replay sets itself (model,
    /// prompt, messages, max_tokens, stream) are refused: use their flags.
    #[arg(long, help_heading = "Sampling")]
    pub extra_body: Option<String>,
    /// Read this Prometheus endpoint (e.g. http://127.0.0.1:8000/metrics)
    /// every second during the run into server_metrics.parquet beside the
    /// results; `report` plots it on the run's timeline.
    #[arg(long, value_parser = http_url)]
    pub scrape: Option<String>,
    /// Skip the check before t=0 that the server answers /v1/models, accepts
    /// the credentials and serves the model.
    #[arg(long)]
    pub no_preflight: bool,
    /// Before t=0, ask the server to count the first N scheduled prompts
    /// (POST /tokenize, vLLM's or llama.cpp's) and print how its counts
    /// differ from the prompts' own: a constant difference is tokens it
    /// adds (BOS), a wandering one another tokenizer (fix --tokenizer).
    /// Needs --url and synthetic prompts; a server without /tokenize is
    /// noted and the run goes on.
    #[arg(long, value_name = "N", value_parser = count_usize)]
    pub check_tokens: Option<usize>,
    /// Options of the embedded simulated endpoint (used without --url).
    #[command(flatten)]
    pub sim: SimFlags,
}

/// How requests are scheduled.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Schedule")]
pub struct ScheduleArgs {
    /// Send at this many requests per second (instead of the recorded
    /// times). For a trace with sessions, this counts session starts.
    #[arg(long, visible_alias = "request-rate", value_parser = rate, allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// Inter-arrival process for --rate.
    #[arg(long, value_enum, default_value = "poisson")]
    pub arrivals: ArrivalsArg,
    /// Gamma shape for `--arrivals gamma` (1 = Poisson, < 1 burstier).
    #[arg(long, default_value_t = 1.0, value_parser = positive, allow_negative_numbers = true)]
    pub burstiness: f64,
    /// Order of trace rows for --rate.
    #[arg(long, value_enum, default_value = "sequential")]
    pub order: OrderArg,
    /// Stop scheduling after this long (loops the trace to fill it with
    /// --rate). The schedule is generated as the run goes, so any length
    /// costs no memory up front.
    #[arg(long, value_parser = positive_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    #[arg(long, visible_aliases = ["num-prompts", "request-count"], value_parser = count)]
    pub requests: Option<u64>,
    /// Recorded times are divided by this (2 = twice as fast).
    #[arg(long, default_value_t = 1.0, value_parser = speedup, allow_negative_numbers = true)]
    pub speedup: f64,
    /// Start of the window of trace time to replay.
    #[arg(long, value_parser = duration)]
    pub start: Option<Duration>,
    /// End of the window of trace time to replay.
    #[arg(long, value_parser = positive_duration)]
    pub end: Option<Duration>,
    /// Spread requests that share one recorded timestamp evenly over this
    /// much trace time (for quantized traces such as Mooncake's, e.g. 1s).
    #[arg(long, value_parser = positive_duration)]
    pub spread: Option<Duration>,
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

/// How the trace's sessions are replayed (shared by `replay` and `sweep`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sessions")]
pub struct SessionArgs {
    /// `auto`: when the trace has multi-turn sessions, replay them as
    /// conversations: a session's first turn leaves at its scheduled time
    /// (`--rate` then counts sessions per second, `--requests` sessions),
    /// each later turn only after the previous reply, its prompt repeating
    /// the conversation so far. `independent`: every row on its own at its
    /// own time, as a trace without sessions.
    #[arg(long, value_enum, default_value = "auto")]
    pub sessions: SessionsArg,
    /// When a later turn leaves: `think` = its think time after the
    /// previous reply ended; `recorded` = its recorded time in the session
    /// (time-scaled), but not before the previous reply ended; `max` = the
    /// later of the two.
    #[arg(long, value_enum, default_value = "max")]
    pub turn_timing: TurnTimingArg,
    /// Think times are multiplied by this (0 sends each turn as soon as the
    /// last reply ended).
    #[arg(long, default_value_t = 1.0, value_parser = non_negative)]
    pub think_time_scale: f64,
    /// Think time of turns the trace has none for (default: the median of
    /// the trace's think times).
    #[arg(long, value_parser = duration)]
    pub think_time: Option<Duration>,
    /// When a turn fails: `continue` sends the session's remaining turns
    /// (the recorded reply length stands in for the missing reply);
    /// `abort` sends none of them and records each as `skipped`.
    #[arg(long, value_enum, default_value = "continue")]
    pub on_turn_failure: TurnFailureArg,
}

/// Values of `--sessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SessionsArg {
    /// Conversations when the trace has sessions.
    Auto,
    /// Every row on its own.
    Independent,
}

flag_enum! {
    /// Values of `--turn-timing`.
    TurnTimingArg => crate::replay::session::TurnTiming {
        /// Think time after the previous reply.
        Think,
        /// The recorded time, not before the previous reply.
        Recorded,
        /// The later of the two.
        Max,
    }
}

flag_enum! {
    /// Values of `--on-turn-failure`.
    TurnFailureArg => crate::replay::session::TurnFailure {
        /// Send the remaining turns anyway.
        Continue,
        /// Record the remaining turns as `skipped`, unsent.
        Abort,
    }
}

impl SessionArgs {
    /// The session options, or `None` for `--sessions independent`.
    pub fn options(&self) -> Option<crate::replay::session::SessionOptions> {
        (self.sessions == SessionsArg::Auto).then(|| crate::replay::session::SessionOptions {
            timing: self.turn_timing.into(),
            on_failure: self.on_turn_failure.into(),
            think_time_scale: self.think_time_scale,
            default_think_time: self.think_time,
        })
    }
}

/// How a run ends and what it may write (shared by `replay` and `sweep`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Ending a run")]
pub struct EndArgs {
    /// After a stop (Ctrl-C, SIGTERM, SIGHUP, the end of the schedule with
    /// requests still out), how long in-flight requests may finish before
    /// they are cancelled, keeping what each measured. A second Ctrl-C
    /// cancels them at once.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub grace: Duration,
    /// Exit with code 3 when more than this share of requests failed
    /// (`0.05` or `5%`); by default only when every request failed.
    #[arg(long, default_value = "1", value_parser = share)]
    pub max_error_rate: f64,
    /// Overwrite output files that exist (never the run's own inputs).
    #[arg(long)]
    pub force: bool,
}

flag_enum! {
    /// How the live progress is shown.
    ProgressArg => crate::replay::progress::ProgressMode {
        /// A bar when stderr is a terminal, else a plain line every 10 s.
        Auto,
        /// A bar (drawn only when stderr is a terminal).
        Bar,
        /// A plain line every 10 s and one at the end, for logs (CI,
        /// nohup, Kubernetes).
        Lines,
        /// No progress.
        Off,
    }
}

/// Live progress and metrics of `replay` and `sweep`.
#[derive(Debug, Clone, Args)]
pub struct LiveArgs {
    /// How the live progress is shown on stderr: total, percent, ETA from
    /// the schedule, TTFT p50/p99 and output tokens/s over the last 10 s,
    /// errors by kind (and the step in a sweep).
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressArg,
    /// Serve the live figures as Prometheus text on
    /// `http://127.0.0.1:PORT/metrics` while the run goes (0 picks a free
    /// port, printed on stderr).
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,
    /// The address `--metrics-port` listens on (loopback unless given:
    /// `0.0.0.0` exposes the run to the network).
    #[arg(
        long,
        value_name = "IP",
        default_value = "127.0.0.1",
        requires = "metrics_port"
    )]
    pub metrics_addr: std::net::IpAddr,
}

/// `llm-replay replay TRACE`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The trace to replay (Parquet, from `ingest`, `synth` or
    /// `transform`); leave out with --synthetic.
    #[arg(required_unless_present = "synthetic")]
    pub trace: Option<PathBuf>,
    /// Generate the trace instead, as `synth` would:
    /// `input=100,output=16[,requests=N][,turns=T][,think_time=D][,seed=S]`
    /// (values as `synth`'s flags, e.g. `input=normal:512,128`). It has no
    /// times: the schedule comes from --rate (or --concurrency, --stages).
    /// Written beside the results (`results-X.trace.parquet`), so the run
    /// can be reproduced and joined.
    #[arg(long, conflicts_with = "trace", value_parser = synthetic)]
    pub synthetic: Option<crate::workload::synth::SynthSpec>,
    /// Results file (Parquet); default: a new results-<time>.parquet in the
    /// current folder. Never overwritten without --force.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Also write the summary as JSON here (checked before the run starts).
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Goodput objectives, e.g. `ttft=500ms,tpot=50ms,e2e=10s,itl=200ms`,
    /// or vLLM's form `"ttft:500 tpot:50"` (ms). `itl` bounds a request's
    /// longest gap between chunks.
    #[arg(long, visible_alias = "goodput")]
    pub slo: Option<crate::record::summary::Slo>,
    /// Break the summary down by these results columns too (api, model,
    /// request_kind and user_id are broken down whenever the run holds more
    /// than one value): e.g. `--by stage,turn_index`.
    #[arg(long, value_delimiter = ',')]
    pub by: Vec<crate::record::summary::ClassColumn>,
    /// p99 send lag above which the summary says the generator, not the
    /// server, was the bottleneck.
    #[arg(long, default_value = "10ms", value_parser = positive_duration)]
    pub max_send_lag: Duration,
    /// Report these percentiles too, e.g. `50,90,95,99,99.9` (linear
    /// interpolation, as numpy, pandas and DuckDB's `quantile_cont`): a
    /// `percentiles` map (`p95`, `p99.9`, ms) beside each metric's fixed
    /// keys in --summary-json, and columns in the printed table.
    #[arg(long)]
    pub percentiles: Option<crate::record::summary::Quantiles>,
    /// Form of the --summary-json file: `llm-replay` (the summary as
    /// printed) or `vllm` (the keys of vLLM's `benchmark_serving.py
    /// --save-result` JSON, so dashboards built on it read this run).
    #[arg(
        long,
        value_enum,
        default_value = "llm-replay",
        requires = "summary_json"
    )]
    pub summary_format: SummaryFormat,
    /// No live progress line (the same as `--progress off`).
    #[arg(long, short)]
    pub quiet: bool,
    /// Live progress and metrics.
    #[command(flatten)]
    pub live: LiveArgs,
    /// Stopping and outputs.
    #[command(flatten)]
    pub end: EndArgs,
    /// The target.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The schedule.
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Sessions.
    #[command(flatten)]
    pub session: SessionArgs,
    /// Closed loop: this many virtual users, each sending its next request
    /// (or whole session, turn after turn with think time) as soon as its
    /// last one ended, so never more than N are in flight. The trace's
    /// times are not used; --requests or --duration bound the run (default:
    /// one pass over the trace). Latencies are from the send: in a closed
    /// loop the load waits for the server, so there is no schedule to fall
    /// behind (the open-loop modes, --rate and recorded times, are the ones
    /// that show queueing).
    #[arg(long, value_parser = count_usize, help_heading = "Schedule")]
    pub concurrency: Option<usize>,
    /// Load in stages, one after another: `10/s:60s,50/s:30s,10/s:60s` (open
    /// loop: requests, or for a session trace session starts, per second,
    /// through --arrivals; `0/s` is idle) or `2u:60s,8u:60s` (closed loop:
    /// users, as --concurrency). Each row's `stage` column says which stage
    /// it was scheduled in, and the summary has a line per stage. The run
    /// lasts the stages' total; --requests may end it sooner.
    #[arg(long, help_heading = "Schedule", conflicts_with_all = ["concurrency", "rate", "duration", "speedup", "start", "end", "spread"])]
    pub stages: Option<Stages>,
    /// With --stages: move linearly from one stage's load to the next over
    /// this long at the start of each later stage (the whole stage when
    /// shorter) instead of stepping.
    #[arg(long, value_parser = positive_duration, requires = "stages", help_heading = "Schedule")]
    pub ramp: Option<Duration>,
    /// Send only the K-th of N interleaved parts (0-based) of the schedule
    /// this run would send, so N processes (on N hosts) with the same
    /// trace, seed and flags together send what one would; a shard owns
    /// whole sessions. Results go to `-o DIR` as `DIR/shard=K/results.parquet`,
    /// which `report DIR`, the SQL views and pandas read as one run.
    #[arg(long, help_heading = "Many hosts", conflicts_with = "concurrency")]
    pub shard: Option<Shard>,
    /// Start the schedule (t=0) at this wall-clock time, RFC 3339 (e.g.
    /// 2026-12-03T18:00:00Z), so that shards start together; it must not
    /// have passed. Hosts' clocks must agree (NTP).
    #[arg(long, value_parser = rfc3339_us, help_heading = "Many hosts")]
    pub start_at: Option<i64>,
}

/// An RFC 3339 time as microseconds since the Unix epoch.
fn rfc3339_us(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_micros())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2026-12-03T18:00:00Z: {e}"))
}

/// `llm-replay sweep TRACE --out-dir DIR`.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// The trace to replay at each load; leave out with --synthetic.
    #[arg(required_unless_present = "synthetic")]
    pub trace: Option<PathBuf>,
    /// Generate the trace instead, as `replay --synthetic` does
    /// (`input=100,output=16[,requests=N]...`); written into the sweep
    /// directory as `_trace.parquet` (the leading `_` keeps dataset readers
    /// of the directory off it).
    #[arg(long, conflicts_with = "trace", value_parser = synthetic)]
    pub synthetic: Option<crate::workload::synth::SynthSpec>,
    /// Output directory (created; existing steps are kept with --resume).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Offered rates: a list `1,2,4,8` or a range `2..32` (with --steps).
    #[arg(long, conflicts_with_all = ["speedups", "auto", "concurrency"])]
    pub rates: Option<String>,
    /// Steps of a `--rates A..B` range.
    #[arg(long, default_value_t = 6, value_parser = count_usize)]
    pub steps: usize,
    /// Spacing of a `--rates A..B` range.
    #[arg(long, value_enum, default_value = "geometric")]
    pub spacing: SpacingArg,
    /// Find the load where throughput stops growing with a short probe,
    /// then sweep from low load to it.
    #[arg(long, conflicts_with_all = ["speedups", "concurrency"])]
    pub auto: bool,
    /// For a recorded trace: speedups that keep its shape (burstiness,
    /// sessions) and multiply its load, e.g. `1,2,4`.
    #[arg(long, conflicts_with = "concurrency")]
    pub speedups: Option<String>,
    /// Closed-loop virtual users per step, as `replay --concurrency`: a
    /// list `1,2,4,8` or a range `1..64` (with --steps; rounded to whole
    /// users). Each step runs --step-duration (or --requests); the knee
    /// and the SLO capacity are then user counts.
    #[arg(long)]
    pub concurrency: Option<String>,
    /// How long each rate step schedules requests.
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub step_duration: Duration,
    /// Objectives, e.g. `ttft=500ms,tpot=50ms` (or vLLM's
    /// `"ttft:500 tpot:50"`, ms); with them the sweep searches for the SLO
    /// capacity.
    #[arg(long)]
    pub slo: Option<crate::record::summary::Slo>,
    /// Share of requests (failures counted) that must meet the SLO.
    #[arg(long, default_value = "0.99", value_parser = goodput_share)]
    pub goodput: f64,
    /// Report these percentiles too in each step's summary, e.g.
    /// `50,90,95,99,99.9` (as `replay --percentiles`).
    #[arg(long)]
    pub percentiles: Option<crate::record::summary::Quantiles>,
    /// Extra steps of the capacity search between the last passing and the
    /// first failing rate.
    #[arg(long, default_value_t = 3)]
    pub search_steps: usize,
    /// Requests scheduled in the first part of each step are marked warmup
    /// and left out of its summary.
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub warmup: Duration,
    /// Requests scheduled in the last part of each step are marked
    /// cooldown and left out of its summary.
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub cooldown: Duration,
    /// Keep the steps already complete in --out-dir and run the rest (the
    /// trace and target must be the ones they were run with).
    #[arg(long)]
    pub resume: bool,
    /// No live progress line (the same as `--progress off`).
    #[arg(long, short)]
    pub quiet: bool,
    /// Live progress and metrics.
    #[command(flatten)]
    pub live: LiveArgs,
    /// Stopping and outputs.
    #[command(flatten)]
    pub end: EndArgs,
    /// The target.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Arrival process, order and seed of rate steps (`--rate`,
    /// `--duration` and `--speedup` are set per step by the sweep).
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Sessions.
    #[command(flatten)]
    pub session: SessionArgs,
}

/// Forms of `replay --summary-json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    /// llm-replay's own summary (schemas/summary.schema.json).
    #[value(name = "llm-replay")]
    LlmReplay,
    /// vLLM `benchmark_serving.py --save-result` keys.
    Vllm,
}

/// Output formats of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Plain text.
    Text,
    /// JSON.
    Json,
    /// One self-contained HTML file with SVG plots.
    Html,
}

/// `llm-replay report INPUT...`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// A results file, a sweep directory, or two of them to compare.
    #[arg(required = true, num_args = 1..=2)]
    pub inputs: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// Write here instead of standard output (required for html). Never
    /// overwritten without --force, never one of the inputs.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Overwrite -o if it exists.
    #[arg(long)]
    pub force: bool,
    /// Recompute goodput under these objectives (default: a sweep's own),
    /// in `--slo`'s forms (`ttft=500ms,tpot=50ms` or `"ttft:500 tpot:50"`).
    #[arg(long, visible_alias = "goodput")]
    pub slo: Option<crate::record::summary::Slo>,
    /// Report these percentiles too, e.g. `50,90,95,99,99.9` (as `replay
    /// --percentiles`).
    #[arg(long)]
    pub percentiles: Option<crate::record::summary::Quantiles>,
    /// Break a run's figures down by these results columns too (api,
    /// model, request_kind and user_id are broken down whenever a run holds
    /// more than one value): e.g. `--by stage,status_code`.
    #[arg(long, value_delimiter = ',')]
    pub by: Vec<crate::record::summary::ClassColumn>,
}

/// Options of the embedded simulated endpoint; defaults are
/// [`crate::sim::SimConfig::default`]'s.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Embedded simulator")]
pub struct SimFlags {
    /// Model name served.
    #[arg(id = "sim_model", long = "sim-model", default_value_t = SimConfig::default().model)]
    pub model: String,
    /// Most sequences decoded together (continuous batching).
    #[arg(id = "sim_max_batch", long = "sim-max-batch", default_value_t = SimConfig::default().max_batch, value_parser = count_usize)]
    pub max_batch: usize,
    /// KV-cache budget in tokens; a sequence reserves prompt + max_tokens,
    /// and new requests wait while it is full.
    #[arg(id = "sim_kv_tokens", long = "sim-kv-tokens", default_value_t = SimConfig::default().kv_tokens, value_parser = count)]
    pub kv_tokens: u64,
    /// Prefill cost per prompt token, µs.
    #[arg(id = "sim_prefill_us", long = "sim-prefill-us", default_value_t = SimConfig::default().prefill_us_per_token, value_parser = non_negative)]
    pub prefill_us_per_token: f64,
    /// Fixed cost of one decode step, µs.
    #[arg(id = "sim_decode_base_us", long = "sim-decode-base-us", default_value_t = SimConfig::default().decode_base_us, value_parser = non_negative)]
    pub decode_base_us: f64,
    /// Extra cost of one decode step per running sequence, µs.
    #[arg(id = "sim_decode_per_seq_us", long = "sim-decode-per-seq-us", default_value_t = SimConfig::default().decode_per_seq_us, value_parser = non_negative)]
    pub decode_per_seq_us: f64,
    /// No model time at all (to benchmark the client).
    #[arg(id = "sim_zero_delay", long = "sim-zero-delay")]
    pub zero_delay: bool,
    /// Seed of fault draws.
    #[arg(id = "sim_seed", long = "sim-seed", default_value_t = SimConfig::default().seed)]
    pub seed: u64,
    /// Share of requests answered 429 Too Many Requests.
    #[arg(id = "sim_fail_429", long = "sim-fail-429", default_value_t = SimConfig::default().fail_429, value_parser = share)]
    pub fail_429: f64,
    /// Share of requests answered 500.
    #[arg(id = "sim_fail_500", long = "sim-fail-500", default_value_t = SimConfig::default().fail_500, value_parser = share)]
    pub fail_500: f64,
    /// Share of requests that stall before their first token.
    #[arg(id = "sim_stall", long = "sim-stall", default_value_t = SimConfig::default().stall, value_parser = share)]
    pub stall: f64,
    /// How long a stall lasts.
    #[arg(id = "sim_stall_time", long = "sim-stall-time", default_value_t = SimConfig::default().stall_time.into())]
    pub stall_time: humantime::Duration,
    /// Share of streams cut mid-response (connection dropped).
    #[arg(id = "sim_disconnect", long = "sim-disconnect", default_value_t = SimConfig::default().disconnect, value_parser = share)]
    pub disconnect: f64,
    /// Share of streams with a garbled (invalid JSON) event mid-response.
    #[arg(id = "sim_garble", long = "sim-garble", default_value_t = SimConfig::default().garble, value_parser = share)]
    pub garble: f64,
}

impl From<SimFlags> for SimConfig {
    fn from(f: SimFlags) -> Self {
        Self {
            model: f.model,
            max_batch: f.max_batch,
            kv_tokens: f.kv_tokens,
            prefill_us_per_token: f.prefill_us_per_token,
            decode_base_us: f.decode_base_us,
            decode_per_seq_us: f.decode_per_seq_us,
            zero_delay: f.zero_delay,
            seed: f.seed,
            fail_429: f.fail_429,
            fail_500: f.fail_500,
            stall: f.stall,
            stall_time: f.stall_time.into(),
            disconnect: f.disconnect,
            garble: f.garble,
            ..SimConfig::default()
        }
    }
}

/// A number of zero or more.
fn non_negative(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("must be zero or more, got {s}"))
    }
}

/// `llm-replay sim`.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub bind: std::net::SocketAddr,
    /// Write every request's arrival to this CSV (`arrival_us,request_id`:
    /// UTC microseconds when its head was parsed, and its X-Request-Id),
    /// to judge a load generator from the server's side.
    #[arg(long)]
    pub log_arrivals: Option<std::path::PathBuf>,
    /// Simulator options.
    #[command(flatten)]
    pub sim: SimFlags,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_peers_flag_names_are_aliases_of_ours() {
        let cli = Cli::try_parse_from([
            "llm-replay",
            "replay",
            "t.parquet",
            "--request-rate",
            "5",
            "--num-prompts",
            "100",
            "--max-concurrency",
            "8",
            "--ignore-eos",
            "--goodput",
            "ttft:500 tpot:50",
        ])
        .unwrap();
        let Command::Replay(a) = cli.command else {
            panic!("replay")
        };
        assert_eq!(a.schedule.rate, Some(5.0));
        assert_eq!(a.schedule.requests, Some(100));
        assert_eq!(a.target.max_in_flight, Some(8));
        assert!(a.target.force_output_len);
        let slo = a.slo.unwrap();
        assert_eq!((slo.ttft_us, slo.tpot_us), (Some(500_000), Some(50_000)));
        let help = Cli::command()
            .find_subcommand_mut("replay")
            .unwrap()
            .render_long_help()
            .to_string();
        for alias in [
            "request-rate",
            "num-prompts",
            "max-concurrency",
            "ignore-eos",
            "goodput",
        ] {
            assert!(help.contains(alias), "--{alias} is listed in the help");
        }
    }

    #[test]
    fn vllms_goodput_objectives_on_a_sweep_point_to_slo() {
        let err =
            Cli::try_parse_from(["llm-replay", "sweep", "t.parquet", "--goodput", "ttft:500"])
                .unwrap_err()
                .to_string();
        assert!(err.contains(r#"--slo "ttft:500""#), "{err}");
    }

    #[test]
    fn out_of_range_values_name_the_flag_and_the_value() {
        for (argv, needle) in [
            (
                &["replay", "t.parquet", "--rate", "-1"][..],
                "must be a positive number",
            ),
            (
                &["replay", "t.parquet", "--rate", "1e-9"],
                "less than one a day",
            ),
            (
                &["replay", "t.parquet", "--speedup", "1e-12"],
                "outside 0.001",
            ),
            (
                &["replay", "t.parquet", "--duration", "0s"],
                "longer than zero",
            ),
            (&["replay", "t.parquet", "--requests", "0"], "at least 1"),
            (
                &["replay", "t.parquet", "--max-in-flight", "0"],
                "at least 1",
            ),
            (
                &["replay", "t.parquet", "--scrape", "not-a-url"],
                "not a URL",
            ),
            (&["replay", "t.parquet", "--url", "ftp://x"], "only http"),
            (
                &["replay", "t.parquet", "--max-error-rate", "2"],
                "between 0 and 1",
            ),
            (
                &["replay", "t.parquet", "--max-response-bytes", "10"],
                "below 1 KiB",
            ),
        ] {
            let mut full = vec!["llm-replay"];
            full.extend_from_slice(argv);
            let err = Cli::try_parse_from(&full).expect_err(needle).to_string();
            assert!(err.contains(needle), "{argv:?}: {err}");
            assert!(
                err.contains(argv[2]),
                "{argv:?} does not name its flag: {err}"
            );
        }
    }

    #[test]
    fn shares_take_fractions_and_percentages() {
        assert_eq!(share("0.05"), Ok(0.05));
        assert_eq!(share("5%"), Ok(0.05));
        assert!(share("101%").is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(byte_size("8MiB"), Ok(8 << 20));
        assert_eq!(byte_size("64KiB"), Ok(64 << 10));
        assert_eq!(byte_size("4096"), Ok(4096));
        assert!(byte_size("8XB").is_err());
    }
}
