//! llm-replay: a trace-replay, open-loop traffic simulator for LLM inference
//! endpoints.
//!
//! The modules follow the pipeline, and data flows one way:
//!
//! - [`ingest`] turns datasets, public traces and production logs into
//!   [`trace`] records, using [`tokenize`] for token counts;
//! - [`trace`] is the one Parquet trace format (schema, writer, reader,
//!   validator, inspection);
//! - [`schedule`] computes, before t=0, when each request leaves;
//! - [`prompt`] synthesises prompts with exact token counts and shared prefix
//!   blocks;
//! - [`client`] builds OpenAI-compatible requests and parses SSE streams;
//! - [`replay`] is the open-loop dispatcher;
//! - [`record`] owns the results Parquet writer and histograms;
//! - [`report`] recomputes summaries from results files;
//! - [`sweep`] runs a replay per offered load;
//! - [`sim`] is the embedded simulated endpoint.

pub mod cli;
pub mod client;
pub mod commands;
pub mod ingest;
pub mod prompt;
pub mod record;
pub mod replay;
pub mod report;
pub mod schedule;
pub mod sim;
pub mod sweep;
pub mod tokenize;
pub mod trace;

pub use commands::{
    EXIT_FAILURE, EXIT_INVARIANTS, EXIT_REQUESTS_FAILED, EXIT_USAGE, UsageError, run, stdout,
};
