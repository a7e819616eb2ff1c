//! Results: one Parquet row per scheduled request, ok or failed, written as
//! the run goes. The schema is defined once here ([`schema::COLUMNS`]);
//! `docs/results-format.md` renders it and a test checks that the two agree.
//!
//! The hot path only builds a plain [`ResultRow`] and sends it over a
//! channel; the recorder thread owns the [`ResultsWriter`] and the running
//! [`crate::record::summary::SummaryBuilder`].

pub mod reader;
pub mod run_meta;
pub mod schema;
pub mod server_metrics;
pub mod summary;
pub mod sweep_table;
pub mod vllm;
pub mod writer;

pub use reader::read_results;
pub use writer::ResultsWriter;

use serde::{Deserialize, Serialize};

pub use crate::client::Outcome;

/// Every outcome, in the order the docs list them.
pub const OUTCOMES: [Outcome; 8] = [
    Outcome::Ok,
    Outcome::HttpError,
    Outcome::Timeout,
    Outcome::ConnectError,
    Outcome::StreamError,
    Outcome::Cancelled,
    Outcome::Dropped,
    Outcome::Skipped,
];

/// The outcome named `name` in an `outcome` column, if it is one.
pub fn parse_outcome(name: &str) -> Option<Outcome> {
    OUTCOMES.into_iter().find(|o| o.as_str() == name)
}

impl Default for Outcome {
    /// A row not yet filled in: it has not left.
    fn default() -> Self {
        Outcome::Dropped
    }
}

/// Phase of a run a request belongs to (sweeps mark warm-up and cool-down;
/// summaries use only the steady phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before `--warmup` ended.
    Warmup,
    /// Measured.
    #[default]
    Steady,
    /// After the steady window (`--cooldown`).
    Cooldown,
}

impl Phase {
    /// Name as written in the `phase` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warmup => "warmup",
            Self::Steady => "steady",
            Self::Cooldown => "cooldown",
        }
    }

    /// From the column value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "warmup" => Some(Self::Warmup),
            "steady" => Some(Self::Steady),
            "cooldown" => Some(Self::Cooldown),
            _ => None,
        }
    }
}

/// Where a row's `output_tokens` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The server's `usage` (completion or output tokens).
    Usage,
    /// Content chunks counted from the stream (the server sent no usage).
    Chunks,
}

impl TokenSource {
    /// Name as written in the `output_tokens_source` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usage => "usage",
            Self::Chunks => "chunks",
        }
    }

    /// From the column value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "usage" => Some(Self::Usage),
            "chunks" => Some(Self::Chunks),
            _ => None,
        }
    }
}

/// One result row. Timestamps are microseconds since the Unix epoch (UTC);
/// durations are microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResultRow {
    /// The trace row's `request_id`.
    pub request_id: String,
    /// How many times the trace had looped (0 first).
    pub repeat_index: i32,
    /// 0-based row of the trace.
    pub trace_row: i64,
    /// When the schedule said the request should leave.
    pub scheduled_at_us: i64,
    /// When it left; `None` when it never did (dropped, cancelled before
    /// sending).
    pub sent_at_us: Option<i64>,
    /// `sent_at - scheduled_at`.
    pub send_lag_us: Option<i64>,
    /// Time spent waiting for an in-flight slot under `--max-in-flight`
    /// (part of the send lag).
    pub queue_wait_us: Option<i64>,
    /// First content token (absolute).
    pub first_token_at_us: Option<i64>,
    /// End of the response (absolute).
    pub completed_at_us: Option<i64>,
    /// Time to first token from `sent_at`.
    pub ttft_us: Option<i64>,
    /// End-to-end latency from `sent_at`.
    pub e2e_us: Option<i64>,
    /// Gaps between streamed content chunks.
    pub itl_us: Vec<i64>,
    /// Prompt tokens asked (the trace's `input_tokens`).
    pub input_tokens: i32,
    /// Output tokens asked (`max_tokens`).
    pub output_tokens_expected: i32,
    /// Output tokens: the server's usage when it reported one, else the
    /// content chunks counted ([`Self::output_tokens_source`] says which).
    pub output_tokens: i32,
    /// Content chunks counted from the stream (`None`: not streamed). A
    /// server may merge tokens into one chunk (partial UTF-8) or split one.
    pub output_chunks: Option<i32>,
    /// Where `output_tokens` came from (`None`: neither usage nor a stream).
    pub output_tokens_source: Option<TokenSource>,
    /// `usage.prompt_tokens` as the server reported it.
    pub usage_prompt_tokens: Option<i32>,
    /// `usage.completion_tokens` as the server reported it.
    pub usage_completion_tokens: Option<i32>,
    /// HTTP status, when a response arrived.
    pub status_code: Option<i32>,
    /// How it ended; the `outcome` column holds its name (`ok`,
    /// `http_error`, `timeout`, `connect_error`, `stream_error`, `cancelled`
    /// or `dropped`).
    pub outcome: Outcome,
    /// Error text, trimmed.
    pub error: Option<String>,
    /// Run phase.
    pub phase: Phase,
    /// The trace row's session (session replay only).
    pub session_id: Option<String>,
    /// Its turn in the session (session replay only).
    pub turn_index: Option<i32>,
    /// Think time applied before this turn (session replay only).
    pub think_time_us: Option<i64>,
    /// Prompt tokens sent under the prompt tokenizer (synthetic prompts).
    pub prompt_tokens_sent: Option<i32>,
    /// Prompt tokens repeating the session so far (session replay only).
    pub history_tokens: Option<i32>,
    /// When the trace says this turn left, on the run's clock (session
    /// replay of a trace with times): later than this is session stretch.
    pub recorded_at_us: Option<i64>,
    /// The `--stages` stage it was scheduled in (0-based).
    pub stage: Option<i32>,
    /// The API it went to (`completions`, `chat`, ...).
    pub api: Option<String>,
    /// The model name sent.
    pub model: Option<String>,
    /// The trace row's `request_kind`.
    pub request_kind: Option<String>,
    /// The trace row's `user_id`.
    pub user_id: Option<String>,
}

impl ResultRow {
    /// Time per output token after the first, from the response:
    /// `(e2e - ttft) / (output_tokens - 1)`; `None` with fewer than two
    /// tokens.
    pub fn tpot_us(&self) -> Option<f64> {
        let (ttft, e2e) = (self.ttft_us?, self.e2e_us?);
        let tokens = self.usage_completion_tokens.unwrap_or(self.output_tokens);
        (tokens > 1).then(|| (e2e - ttft) as f64 / f64::from(tokens - 1))
    }

    /// TTFT measured from the schedule: send lag plus TTFT.
    pub fn ttft_from_schedule_us(&self) -> Option<i64> {
        Some(self.send_lag_us? + self.ttft_us?)
    }

    /// E2E measured from the schedule: send lag plus E2E.
    pub fn e2e_from_schedule_us(&self) -> Option<i64> {
        Some(self.send_lag_us? + self.e2e_us?)
    }

    /// Whether the request succeeded.
    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }
}
