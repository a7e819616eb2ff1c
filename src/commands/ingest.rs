//! `llm-replay ingest`: flags -> [`ingest::Config`] -> one [`ingest::run`]
//! -> the summary. The output is claimed first: never an input, never
//! overwritten without `--force`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;

use super::{Output, UsageError, claim_outputs, stdout};
use crate::cli::{FilterArgs, IngestArgs, LengthFilterArgs, LogArgs};
use crate::ingest::{self, Config, FilterConfig, Format, Input, LogConfig};

/// The ingest flags as a [`Config`].
pub fn config(args: &IngestArgs) -> Config {
    Config {
        format: args.format.into(),
        inputs: Input::from_args(&args.inputs),
        output: args.output.clone(),
        tokenizer: args.tokenizer.clone(),
        skip_invalid: args.skip_invalid,
        keep_text: args.keep_text,
        block_size: args.block_size,
        filters: filters(&args.filters),
        log: log(&args.log),
        infer_sessions: args.infer_sessions,
    }
}

fn filters(a: &FilterArgs) -> FilterConfig {
    FilterConfig {
        first_turn_only: a.first_turn_only,
        sample: a.sample,
        seed: a.seed,
        ..length_filters(&a.lengths)
    }
}

/// The length filters as a [`FilterConfig`] that keeps every row otherwise.
pub fn length_filters(a: &LengthFilterArgs) -> FilterConfig {
    FilterConfig {
        min_input: a.min_input,
        max_input: a.max_input,
        min_output: a.min_output,
        max_output: a.max_output,
        min_total: a.min_total,
        max_total: a.max_total,
        ..FilterConfig::default()
    }
}

fn log(a: &LogArgs) -> LogConfig {
    LogConfig {
        batch_output: a.batch_output.clone(),
        time_field: a.time_field.clone(),
        end_time_field: a.end_time_field.clone(),
        time_unit: a.time_unit.into(),
        session_field: a.session_field.clone(),
        user_field: a.user_field.clone(),
        request_field: a.request_field.clone(),
        response_field: a.response_field.clone(),
        salt: a.salt.clone(),
        keep_t0: a.keep_t0,
        hash_model: a.hash_model,
    }
}

/// Runs `llm-replay ingest`.
pub fn run(args: &IngestArgs) -> anyhow::Result<ExitCode> {
    let cfg = config(args);
    // The other formats either carry their sessions (Bailian, the chat
    // formats, openai-log, BurstGPT v2) or have no prefix blocks to link by
    // (Azure, BurstGPT v1): the flag would do nothing there, silently.
    if cfg.infer_sessions && cfg.format != Format::Mooncake {
        bail!(UsageError(format!(
            "--infer-sessions is for mooncake traces only ({} traces carry their own sessions or have no prefix blocks to link by)",
            cfg.format.name()
        )));
    }
    let mut inputs: Vec<&Path> = cfg
        .inputs
        .iter()
        .filter_map(|i| match i {
            Input::File(p) => Some(p.as_path()),
            Input::Stdin => None,
        })
        .collect();
    inputs.extend(cfg.log.batch_output.iter().map(|p| p.as_path()));
    if let Some(p) = cfg.tokenizer.json_path() {
        inputs.push(p);
    }
    claim_outputs(
        &[Output {
            path: &cfg.output,
            flag: "-o",
        }],
        &inputs,
        args.force,
    )?;
    let summary = ingest::run(&cfg)?;
    if args.json {
        stdout(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&summary.metadata)?
        ));
    } else {
        stdout(format_args!("{summary}"));
    }
    Ok(ExitCode::SUCCESS)
}
