//! `llm-replay report`: results files or sweep directories -> text, JSON or
//! HTML, recomputed from the Parquet rows.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::{Output, UsageError, claim_outputs, stdout};
use crate::cli::{ReportArgs, ReportFormat};
use crate::report::{self, Input};

/// Runs `llm-replay report`.
pub fn run(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    if args.format == ReportFormat::Html && args.output.is_none() {
        bail!(UsageError("--format html needs -o FILE.html".into()));
    }
    if let Some(out) = &args.output {
        let inputs: Vec<&Path> = args.inputs.iter().map(|p| p.as_path()).collect();
        claim_outputs(
            &[Output {
                path: out,
                flag: "-o",
            }],
            &inputs,
            args.force,
        )?;
    }
    let inputs: Vec<Input> = args
        .inputs
        .iter()
        .map(|p| report::load_with(p, args.slo, &args.by, args.percentiles.unwrap_or_default()))
        .collect::<anyhow::Result<_>>()?;
    let text = match args.format {
        ReportFormat::Text => report::render_text(&inputs),
        ReportFormat::Json => serde_json::to_string_pretty(&inputs)? + "\n",
        ReportFormat::Html => report::render_html(&inputs),
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            stdout(format_args!("report        {}\n", path.display()));
        }
        None => stdout(format_args!("{text}")),
    }
    Ok(ExitCode::SUCCESS)
}
