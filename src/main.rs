//! The `llm-replay` binary: parse the command line, run, map the outcome to
//! an exit code (documented in the README).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = llm_replay::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match llm_replay::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::from(llm_replay::EXIT_FAILURE)
        }
    }
}
