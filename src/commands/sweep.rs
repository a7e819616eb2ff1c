//! `llm-replay sweep`: flags -> [`SweepPlan`] -> one [`sweep::run`] -> the
//! step table, knee and capacity, exit code.

use std::process::ExitCode;

use anyhow::bail;

use super::replay::{arrivals, target_config, us};
use super::{UsageError, run_exit_code, stdout, watch_signals};
use crate::cli::SweepArgs;
use crate::replay::Shutdown;
use crate::replay::progress::Monitor;
use crate::report::capacity::render_table;
use crate::sweep::{self, Loads, StepSchedule, SweepPlan, parse_loads};

/// The sweep flags as a [`SweepPlan`].
pub fn plan(args: &SweepArgs) -> anyhow::Result<SweepPlan> {
    if args.schedule.rate.is_some()
        || args.schedule.duration.is_some()
        || args.schedule.speedup != 1.0
    {
        bail!(UsageError(
            "sweep sets the load per step: use --rates, --speedups or --auto, and --step-duration (not --rate, --speedup or --duration)".into()
        ));
    }
    if args.resume && args.end.force {
        bail!(UsageError(
            "--resume keeps finished steps and --force runs them again: give one".into()
        ));
    }
    let usage = |e: anyhow::Error| UsageError(format!("{e:#}"));
    let loads = if let Some(s) = &args.speedups {
        Loads::Speedups(
            parse_loads(s, args.steps, args.spacing.into())
                .map_err(|e| usage(e.context("--speedups")))?,
        )
    } else if let Some(r) = &args.rates {
        Loads::Rates(
            parse_loads(r, args.steps, args.spacing.into())
                .map_err(|e| usage(e.context("--rates")))?,
        )
    } else if let Some(c) = &args.concurrency {
        let users = parse_loads(c, args.steps, args.spacing.into())
            .map_err(|e| usage(e.context("--concurrency")))?;
        // A range is rounded to whole users; a list must be whole already.
        let range = c.contains("..");
        let mut whole: Vec<f64> = Vec::with_capacity(users.len());
        for u in users {
            if u < 1.0 || (!range && u.fract() != 0.0) {
                bail!(UsageError(format!(
                    "--concurrency: {u} is not a whole number of users (1 or more)"
                )));
            }
            let u = u.round();
            if !whole.contains(&u) {
                whole.push(u);
            }
        }
        Loads::Concurrency(whole)
    } else if args.auto {
        Loads::Auto { steps: args.steps }
    } else {
        bail!(UsageError(
            "give --rates, --speedups, --concurrency or --auto".into()
        ));
    };
    if args.warmup + args.cooldown >= args.step_duration && !matches!(loads, Loads::Speedups(_)) {
        bail!(UsageError(format!(
            "--warmup {} and --cooldown {} leave nothing of --step-duration {} to summarise",
            humantime::format_duration(args.warmup),
            humantime::format_duration(args.cooldown),
            humantime::format_duration(args.step_duration)
        )));
    }
    let steps_planned = u32::try_from(match &loads {
        Loads::Rates(l) | Loads::Speedups(l) | Loads::Concurrency(l) => l.len(),
        Loads::Auto { steps } => *steps,
    })
    .ok();
    Ok(SweepPlan {
        trace: args
            .trace
            .clone()
            .unwrap_or_else(|| args.out_dir.join(SYNTHETIC_TRACE)),
        out_dir: args.out_dir.clone(),
        loads,
        step_duration: args.step_duration,
        slo: args.slo,
        goodput: args.goodput,
        search_steps: args.search_steps,
        warmup: args.warmup,
        cooldown: args.cooldown,
        resume: args.resume,
        force: args.end.force,
        grace: args.end.grace,
        progress: !args.quiet,
        monitor: Monitor {
            steps_planned,
            ..Monitor::new(args.live.progress.into())
        },
        target: target_config(&args.target)?,
        sessions: args.session.options(),
        prompt_salt: super::replay::prompt_salt(&args.target),
        quantiles: args.percentiles.unwrap_or_default(),
        schedule: StepSchedule {
            arrivals: arrivals(&args.schedule),
            order: args.schedule.order.into(),
            seed: args.schedule.seed,
            requests: args.schedule.requests,
            start_us: us(args.schedule.start),
            end_us: us(args.schedule.end),
            spread_us: us(args.schedule.spread),
        },
    })
}

/// Where `sweep --synthetic` writes the generated trace, in the sweep
/// directory.
pub const SYNTHETIC_TRACE: &str = "_trace.parquet";

/// Runs `llm-replay sweep`.
pub async fn run(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let mut plan = plan(&args)?;
    if plan.out_dir.is_file() {
        bail!(UsageError(format!(
            "--out-dir {}: is a file",
            plan.out_dir.display()
        )));
    }
    if let Some(spec) = &args.synthetic {
        // Generated again on --resume: the same spec and seed give the
        // same rows, so the steps already there still match the trace.
        let fresh = !crate::record::sweep_table::has_table(&plan.out_dir);
        if fresh || plan.resume || plan.force {
            std::fs::create_dir_all(&plan.out_dir)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", plan.out_dir.display()))?;
            let _ = std::fs::remove_file(&plan.trace);
            crate::workload::synth::write(spec, &plan.trace)?;
        }
    }
    plan.monitor = super::replay::monitor(&args.live, plan.monitor.steps_planned).await?;
    let shutdown = Shutdown::new();
    watch_signals(shutdown.clone(), plan.grace);
    let outcome = sweep::run(&plan, &shutdown).await?;
    stdout(format_args!(
        "{}",
        render_table(&outcome.steps, &outcome.capacity)
    ));
    let dir = plan.out_dir.display();
    let files: Vec<&str> = outcome
        .steps
        .iter()
        .map(|s| s.results_path.as_str())
        .collect();
    stdout(format_args!(
        "results       {dir}: {} (the directory reads whole as one dataset)\nstep table    {dir}/_sweep.csv, {dir}/_sweep.parquet\nconclusions   {dir}/_capacity.json\n",
        files.join(", ")
    ));
    // Judged over every step: a sweep whose every request failed measured
    // nothing, whatever its table says.
    let count = |f: fn(&crate::record::sweep_table::SweepStep) -> i64| {
        outcome
            .steps
            .iter()
            .map(|s| u64::try_from(f(s)).unwrap_or(0))
            .sum::<u64>()
    };
    Ok(run_exit_code(
        count(|s| s.requests),
        count(|s| s.errors),
        args.end.max_error_rate,
        shutdown.reason().as_deref(),
    ))
}
