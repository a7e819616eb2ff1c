//! `llm-replay inspect`: a trace -> its statistics and invariant checks.

use std::process::ExitCode;

use super::{EXIT_INVARIANTS, stdout};
use crate::cli::InspectArgs;
use crate::trace::inspect::compute;

/// Runs `llm-replay inspect`: prints the trace's statistics (text, or JSON
/// with `--json`) and returns exit code 0, or [`EXIT_INVARIANTS`] when any
/// invariant is broken. A file that cannot be read is an `Err` (exit 1).
pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let trace = crate::trace::read_trace(&args.trace)?;
    let stats = compute(&trace);
    if args.json {
        stdout(format_args!("{}\n", serde_json::to_string_pretty(&stats)?));
    } else {
        stdout(format_args!("{stats}"));
    }
    Ok(if stats.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVARIANTS)
    })
}
