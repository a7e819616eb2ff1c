//! llm-replay: a trace-replay, open-loop traffic simulator for LLM inference
//! endpoints.
//!
//! The modules follow the pipeline, and imports run one way, down this
//! list of layers (a module imports only those below it):
//!
//! - [`commands`]: the edge. One file per subcommand turns the flags of
//!   [`cli`] (the only module that knows clap) into a typed config, calls one
//!   library function, prints, and maps the outcome to an exit code; it
//!   hooks signals to the one shutdown path and claims output paths;
//! - [`sweep`]: one replay per offered load, over a [`sweep::SweepPlan`];
//! - [`report`]: recomputes everything from the files [`record`] wrote;
//!   knee and capacity have their one rule in [`report::capacity`];
//! - [`replay`]: the open-loop engine (producer, dispatcher, request tasks,
//!   recorder) and its [`replay::Shutdown`];
//! - [`record`]: everything a run measures and writes, each with one schema:
//!   results rows, the summary, server metrics, the sweep table;
//! - [`prompt`], [`client`], [`sim`]: prompts with exact token counts and
//!   shared prefix blocks; OpenAI-compatible requests and SSE parsing; the
//!   embedded simulated endpoint;
//! - [`workload`]: traces without a dataset ([`workload::synth`]) and
//!   traces reshaped whole session by whole session
//!   ([`workload::transform`]);
//! - [`schedule`]: when each request leaves, a pure seeded function,
//!   generated lazily;
//! - [`ingest`] -> [`trace`]: datasets, public traces and production logs
//!   (an [`ingest::Config`] each) into the one Parquet trace format, whose
//!   metadata carries the scrub report typed ([`trace::scrub`]), with
//!   [`tokenize`] for token counts.

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
pub mod workload;

pub use commands::{
    EXIT_FAILURE, EXIT_INVARIANTS, EXIT_REQUESTS_FAILED, EXIT_USAGE, UsageError, run, stdout,
};
