//! Trace inspection: invariants and the summary a user wants before replaying
//! (being written).

use std::process::ExitCode;

use crate::cli::InspectArgs;

/// Runs `llm-replay inspect`.
pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let trace = super::read_trace(&args.trace)?;
    println!("{} rows", trace.records.len());
    Ok(ExitCode::SUCCESS)
}
