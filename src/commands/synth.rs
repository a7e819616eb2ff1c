//! `llm-replay synth`: flags -> [`SynthSpec`] -> [`synth::write`] -> what
//! `inspect` says of the result, so the asked statistics can be checked at
//! a glance.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;

use super::{Output, UsageError, claim_outputs};
use crate::cli::{ArrivalsArg, SynthArgs};
use crate::schedule::Arrivals;
use crate::workload::dist::Dist;
use crate::workload::synth::{self, RateShape, SessionShape, SynthArrivals, SynthSpec};

/// The synth flags as a [`SynthSpec`].
pub fn spec(args: &SynthArgs) -> anyhow::Result<SynthSpec> {
    let inline_rate = args.arrivals.and_then(|a| a.rate);
    let process = match args.arrivals {
        Some(a) => a.process,
        // A rate alone asks for Poisson arrivals.
        None if args.rate.is_some() || args.rate_curve.is_some() => Some(ArrivalsArg::Poisson),
        None => None,
    };
    let arrivals = match process {
        None => {
            for (given, flag) in [
                (args.rate.is_some(), "--rate"),
                (args.rate_curve.is_some(), "--rate-curve"),
                (args.bursts.is_some(), "--bursts"),
            ] {
                if given {
                    bail!(UsageError(format!(
                        "{flag} needs arrival times, and --arrivals none writes none: leave --arrivals out or give a process (poisson, gamma, constant)"
                    )));
                }
            }
            SynthArrivals::None
        }
        Some(p) => {
            let rates = [
                inline_rate.is_some(),
                args.rate.is_some(),
                args.rate_curve.is_some(),
            ];
            if rates.iter().filter(|g| **g).count() > 1 {
                bail!(UsageError(
                    "give the rate once: --arrivals PROCESS:RATE, --rate or --rate-curve".into()
                ));
            }
            let rate = match (inline_rate.or(args.rate), &args.rate_curve) {
                (Some(r), _) => RateShape::Constant(r),
                (None, Some(file)) => RateShape::from_csv(file)?,
                (None, None) => bail!(UsageError(
                    "arrivals need a rate: --arrivals poisson:20, --rate 20 or --rate-curve FILE.csv"
                        .into()
                )),
            };
            let process = match p {
                ArrivalsArg::Poisson => Arrivals::Poisson,
                ArrivalsArg::Gamma => Arrivals::Gamma {
                    shape: args.burstiness,
                },
                ArrivalsArg::Constant => Arrivals::Constant,
            };
            SynthArrivals::Process {
                process,
                rate,
                bursts: args.bursts,
            }
        }
    };
    Ok(SynthSpec {
        requests: args.requests,
        duration: args.duration,
        arrivals,
        sessions: SessionShape {
            turns: args.turns.clone(),
            think_time: args.think_time.clone(),
            system_prompt_tokens: args.system_prompt_tokens,
            system_prompts: args.system_prompts,
        },
        block_size: args.block_size.get(),
        request_kind: args.request_kind.clone(),
        model: args.model.clone(),
        seed: args.seed,
        ..SynthSpec::new(args.input_tokens.clone(), args.output_tokens.clone())
    })
}

/// The traces a spec reads (`from:TRACE` lengths): never an output.
pub fn inputs(spec: &SynthSpec) -> Vec<&Path> {
    [&spec.input.0, &spec.output.0]
        .into_iter()
        .filter_map(|d| match d {
            Dist::Empirical { trace, .. } => Some(trace.as_path()),
            _ => None,
        })
        .collect()
}

/// Runs `llm-replay synth`.
pub fn run(args: &SynthArgs) -> anyhow::Result<ExitCode> {
    let spec = spec(args)?;
    let mut ins = inputs(&spec);
    if let Some(curve) = &args.rate_curve {
        ins.push(curve);
    }
    claim_outputs(
        &[Output {
            path: &args.output,
            flag: "-o",
        }],
        &ins,
        args.force,
    )?;
    synth::write(&spec, &args.output)?;
    super::transform::print_result(&args.output, args.json)
}
