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

use std::process::ExitCode;

use cli::{Cli, Command};

/// Exit code of a run that failed (bad input, unusable flags, I/O errors).
pub const EXIT_FAILURE: u8 = 1;

/// Runs one command line to completion.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ingest(args) => {
            let summary = ingest::run(&args)?;
            if args.json {
                stdout(format_args!("{}\n", serde_json::to_string_pretty(&summary.metadata)?));
            } else {
                stdout(format_args!("{summary}"));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect(args) => trace::inspect::run(&args),
        Command::Replay(args) => runtime()?.block_on(replay::command(args)),
        Command::Sweep(args) => runtime()?.block_on(sweep::command(args)),
        Command::Report(args) => report::command(&args),
        Command::Sim(args) => runtime()?.block_on(async move {
            let server = sim::start(args.sim, args.bind).await?;
            eprintln!(
                "simulated endpoint on {} (OpenAI-compatible: /v1/models, /v1/completions, /v1/chat/completions, /metrics); Ctrl-C stops it",
                server.url()
            );
            tokio::signal::ctrl_c().await?;
            server.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// Writes to standard output. Unlike `print!`, a reader that went away
/// (`| head`) ends the output quietly instead of panicking.
pub fn stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(text).and_then(|()| out.flush());
}

/// The multi-threaded runtime for the commands that do network I/O.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("llm-replay")
        .build()
}
