//! `llm-replay transform`: flags -> [`TransformSpec`] -> one
//! [`transform::apply`] -> the trace written, and what `inspect` says of
//! it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;

use super::ingest::length_filters;
use super::{EXIT_INVARIANTS, Output, UsageError, claim_outputs, stdout};
use crate::cli::TransformArgs;
use crate::trace::{inspect, read_trace};
use crate::workload::synth::write_records;
use crate::workload::transform::{self, TransformSpec, parse_merge};

/// The transform flags as the inputs and a [`TransformSpec`].
pub fn spec(args: &TransformArgs) -> anyhow::Result<(Vec<PathBuf>, TransformSpec)> {
    let (inputs, shares) = match (&args.input, &args.merge) {
        (Some(_), Some(_)) => bail!(UsageError(
            "give the input either as TRACE or in --merge A:0.7,B:0.3, not both".into()
        )),
        (None, None) => bail!(UsageError(
            "transform needs a trace: TRACE, or --merge A:0.7,B:0.3".into()
        )),
        (Some(p), None) => (vec![p.clone()], Vec::new()),
        (None, Some(m)) => {
            let parts = parse_merge(m).map_err(|e| UsageError(format!("--merge: {e}")))?;
            parts.into_iter().unzip()
        }
    };
    let spec = TransformSpec {
        merge_shares: shares,
        window: args.window,
        filters: length_filters(&args.filters),
        reweight: args.reweight.clone(),
        sample_sessions: args.sample_sessions,
        scale_load: args.scale_load,
        jitter: args.jitter,
        scale_lengths: args.scale_lengths,
        cap: args.cap.unwrap_or((None, None)),
        compress_day: args.compress_day,
        speedup: args.speedup,
        seed: args.seed,
    };
    Ok((inputs, spec))
}

/// Runs `llm-replay transform`.
pub fn run(args: &TransformArgs) -> anyhow::Result<ExitCode> {
    let (paths, spec) = spec(args)?;
    let borrowed: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    claim_outputs(
        &[Output {
            path: &args.output,
            flag: "-o",
        }],
        &borrowed,
        args.force,
    )?;
    let traces = paths
        .iter()
        .map(|p| read_trace(p))
        .collect::<Result<Vec<_>, _>>()?;
    let out = transform::apply(&traces, &spec)?;
    if out.records.is_empty() {
        bail!(
            "{}: no rows are left after the transforms; nothing written",
            paths[0].display()
        );
    }
    write_records(&args.output, &out.records, out.metadata)?;
    print_result(&args.output, args.json)
}

/// Reads back the trace just written and prints what `inspect` says of it;
/// exit code [`EXIT_INVARIANTS`] if it broke one (a bug, never expected).
pub fn print_result(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let trace = read_trace(path)?;
    let stats = inspect::compute(&trace);
    if json {
        stdout(format_args!("{}\n", serde_json::to_string_pretty(&stats)?));
    } else {
        stdout(format_args!("wrote {}\n{stats}", path.display()));
    }
    Ok(if stats.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVARIANTS)
    })
}
