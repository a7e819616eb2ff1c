//! The results schema, defined once. Column names are a contract with users'
//! SQL and scripts: add columns, never rename.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Column names.
pub mod col {
    /// Joins to the trace.
    pub const REQUEST_ID: &str = "request_id";
    /// Loop count.
    pub const REPEAT_INDEX: &str = "repeat_index";
    /// Trace row.
    pub const TRACE_ROW: &str = "trace_row";
    /// Scheduled send time.
    pub const SCHEDULED_AT: &str = "scheduled_at";
    /// Actual send time.
    pub const SENT_AT: &str = "sent_at";
    /// Lag.
    pub const SEND_LAG_US: &str = "send_lag_us";
    /// Wait for an in-flight slot.
    pub const QUEUE_WAIT_US: &str = "queue_wait_us";
    /// First token time.
    pub const FIRST_TOKEN_AT: &str = "first_token_at";
    /// Completion time.
    pub const COMPLETED_AT: &str = "completed_at";
    /// TTFT from send.
    pub const TTFT_US: &str = "ttft_us";
    /// E2E from send.
    pub const E2E_US: &str = "e2e_us";
    /// Inter-token gaps.
    pub const ITL_US: &str = "itl_us";
    /// Prompt tokens asked.
    pub const INPUT_TOKENS: &str = "input_tokens";
    /// Output tokens asked.
    pub const OUTPUT_TOKENS_EXPECTED: &str = "output_tokens_expected";
    /// Output tokens counted.
    pub const OUTPUT_TOKENS: &str = "output_tokens";
    /// Server-reported prompt tokens.
    pub const USAGE_PROMPT_TOKENS: &str = "usage_prompt_tokens";
    /// Server-reported completion tokens.
    pub const USAGE_COMPLETION_TOKENS: &str = "usage_completion_tokens";
    /// HTTP status.
    pub const STATUS_CODE: &str = "status_code";
    /// Outcome class.
    pub const OUTCOME: &str = "outcome";
    /// Error text.
    pub const ERROR: &str = "error";
    /// Run phase.
    pub const PHASE: &str = "phase";
    /// Session of the trace row (session replay).
    pub const SESSION_ID: &str = "session_id";
    /// Turn in its session.
    pub const TURN_INDEX: &str = "turn_index";
    /// Think time applied before this turn.
    pub const THINK_TIME_US: &str = "think_time_us";
    /// Prompt tokens actually sent.
    pub const PROMPT_TOKENS_SENT: &str = "prompt_tokens_sent";
    /// Tokens of the prompt that repeat the conversation so far.
    pub const HISTORY_TOKENS: &str = "history_tokens";
    /// When the trace says the turn left, on the run's clock.
    pub const RECORDED_AT: &str = "recorded_at";
    /// The `--stages` stage the request was scheduled in.
    pub const STAGE: &str = "stage";
    /// The API the request went to.
    pub const API: &str = "api";
    /// The model name sent.
    pub const MODEL: &str = "model";
    /// The trace row's `request_kind`.
    pub const REQUEST_KIND: &str = "request_kind";
    /// The trace row's `user_id` (tenant).
    pub const USER_ID: &str = "user_id";
    /// Content chunks counted from the stream.
    pub const OUTPUT_CHUNKS: &str = "output_chunks";
    /// Where `output_tokens` came from: `usage` or `chunks`.
    pub const OUTPUT_TOKENS_SOURCE: &str = "output_tokens_source";
}

/// One documented column.
#[derive(Debug, Clone, Copy)]
pub struct ColumnDoc {
    /// Column name.
    pub name: &'static str,
    /// Type as documented.
    pub type_name: &'static str,
    /// May be null.
    pub nullable: bool,
    /// Meaning.
    pub meaning: &'static str,
}

const fn c(
    name: &'static str,
    type_name: &'static str,
    nullable: bool,
    meaning: &'static str,
) -> ColumnDoc {
    ColumnDoc {
        name,
        type_name,
        nullable,
        meaning,
    }
}

/// The results columns in file order.
pub const COLUMNS: &[ColumnDoc] = &[
    c(
        col::REQUEST_ID,
        "utf8",
        false,
        "the trace's `request_id`; joins to the trace",
    ),
    c(
        col::REPEAT_INDEX,
        "int32",
        false,
        "how many times the trace had looped before this request (0 first)",
    ),
    c(
        col::TRACE_ROW,
        "int64",
        false,
        "0-based row of the trace file",
    ),
    c(
        col::SCHEDULED_AT,
        "timestamp[us, UTC]",
        false,
        "when the schedule said the request should leave",
    ),
    c(
        col::SENT_AT,
        "timestamp[us, UTC]",
        true,
        "when it left; null if it never did (dropped, skipped, cancelled before sending)",
    ),
    c(col::SEND_LAG_US, "int64", true, "`sent_at - scheduled_at`"),
    c(
        col::QUEUE_WAIT_US,
        "int64",
        true,
        "part of the send lag spent waiting for a `--max-in-flight` slot or, over `--max-connections`, for a connection (null when neither applied)",
    ),
    c(
        col::FIRST_TOKEN_AT,
        "timestamp[us, UTC]",
        true,
        "arrival of the first content token",
    ),
    c(
        col::COMPLETED_AT,
        "timestamp[us, UTC]",
        true,
        "end of the response, or when the failure was seen",
    ),
    c(
        col::TTFT_US,
        "int64",
        true,
        "time to first token from `sent_at` (from the schedule: add `send_lag_us`)",
    ),
    c(
        col::E2E_US,
        "int64",
        true,
        "end-to-end latency from `sent_at` (from the schedule: add `send_lag_us`)",
    ),
    c(
        col::ITL_US,
        "list<int64>",
        false,
        "gaps between streamed content chunks",
    ),
    c(
        col::INPUT_TOKENS,
        "int32",
        false,
        "prompt tokens asked (the trace's `input_tokens`)",
    ),
    c(
        col::OUTPUT_TOKENS_EXPECTED,
        "int32",
        false,
        "output tokens asked (`max_tokens`)",
    ),
    c(
        col::OUTPUT_TOKENS,
        "int32",
        false,
        "output tokens: the server's usage when it reported one, else the content chunks counted from the stream (`output_tokens_source` says which)",
    ),
    c(
        col::USAGE_PROMPT_TOKENS,
        "int32",
        true,
        "`usage.prompt_tokens` as the server reported it",
    ),
    c(
        col::USAGE_COMPLETION_TOKENS,
        "int32",
        true,
        "`usage.completion_tokens` as the server reported it",
    ),
    c(
        col::STATUS_CODE,
        "int32",
        true,
        "HTTP status, when a response arrived",
    ),
    c(
        col::OUTCOME,
        "utf8 dictionary",
        false,
        "ok, http_error, timeout, connect_error, stream_error, cancelled, dropped, or skipped (a later turn of a session whose earlier turn failed, with `--on-turn-failure abort`)",
    ),
    c(
        col::ERROR,
        "utf8",
        true,
        "error text, trimmed to 512 characters",
    ),
    c(
        col::PHASE,
        "utf8 dictionary",
        false,
        "warmup, steady or cooldown (sweeps); summaries use steady rows",
    ),
    c(
        col::SESSION_ID,
        "utf8",
        true,
        "the trace row's session, in session replay (null replaying rows independently)",
    ),
    c(
        col::TURN_INDEX,
        "int32",
        true,
        "the row's turn in its session, in session replay",
    ),
    c(
        col::THINK_TIME_US,
        "int64",
        true,
        "think time applied after the previous turn's end (scaled), in session replay",
    ),
    c(
        col::PROMPT_TOKENS_SENT,
        "int32",
        true,
        "prompt tokens sent, under the prompt tokenizer (differs from input_tokens when a session's history grew otherwise than recorded)",
    ),
    c(
        col::HISTORY_TOKENS,
        "int32",
        true,
        "tokens of the prompt that repeat the session so far (earlier prompts and replies)",
    ),
    c(
        col::RECORDED_AT,
        "timestamp[us, UTC]",
        true,
        "when the trace says this turn left (session start plus its recorded offset, time-scaled); sent_at - recorded_at is how far the session stretched",
    ),
    c(
        col::STAGE,
        "int32",
        true,
        "0-based index of the `--stages` stage the request was scheduled in (null without stages); the run config lists each stage's load and duration",
    ),
    c(
        col::API,
        "utf8 dictionary",
        true,
        "the API the request went to: completions, chat, embeddings, responses or messages (`--api`, or the row's `request_kind` under `--api-map`); null only in files of earlier versions",
    ),
    c(
        col::MODEL,
        "utf8 dictionary",
        true,
        "the model name sent (`--model`, `--model-map` of the trace's `model`, or `--models`); null only in files of earlier versions",
    ),
    c(
        col::REQUEST_KIND,
        "utf8 dictionary",
        true,
        "the trace row's `request_kind`, copied so that results break down by class without a join",
    ),
    c(
        col::USER_ID,
        "utf8 dictionary",
        true,
        "the trace row's `user_id` (tenant), copied like `request_kind`",
    ),
    c(
        col::OUTPUT_CHUNKS,
        "int32",
        true,
        "content chunks counted from the stream (null when not streamed): a server that merges partial UTF-8 into one chunk sends fewer chunks than tokens",
    ),
    c(
        col::OUTPUT_TOKENS_SOURCE,
        "utf8 dictionary",
        true,
        "where `output_tokens` came from: `usage` (the server's count) or `chunks` (no usage sent); null when neither (a request that failed before a response, or an answer without usage)",
    ),
];

fn data_type(type_name: &str) -> DataType {
    match type_name {
        "utf8" => DataType::Utf8,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "timestamp[us, UTC]" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "list<int64>" => DataType::List(Arc::new(Field::new("item", DataType::Int64, false))),
        _ => DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
    }
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(
        COLUMNS
            .iter()
            .map(|c| Field::new(c.name, data_type(c.type_name), c.nullable))
            .collect::<Vec<_>>(),
    ))
});

/// The Arrow schema of a results file.
pub fn arrow_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// The documentation table (Markdown), as in `docs/results-format.md`.
pub fn markdown_table() -> String {
    let mut out = String::from("| column | type | nullable | meaning |\n|---|---|---|---|\n");
    for c in COLUMNS {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            c.name,
            c.type_name,
            if c.nullable { "yes" } else { "no" },
            c.meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_table_matches_the_schema() {
        let doc = include_str!("../../docs/results-format.md");
        let begin = doc.find("<!-- columns:begin -->\n").map(|i| i + 23);
        let end = doc.find("<!-- columns:end -->");
        let (Some(b), Some(e)) = (begin, end) else {
            panic!("docs/results-format.md lacks the column markers");
        };
        assert_eq!(&doc[b..e], markdown_table());
    }

    #[test]
    fn every_column_has_a_known_type() {
        for c in COLUMNS {
            let t = data_type(c.type_name);
            if c.type_name != "utf8 dictionary" {
                assert!(!matches!(t, DataType::Dictionary(..)), "{}", c.name);
            }
        }
    }
}
