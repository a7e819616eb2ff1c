//! `llm-replay sweep`: one open-loop replay per offered load, into one
//! hive-partitioned directory, answering "how much traffic of this shape can
//! my deployment take before it breaks my SLOs?".
//!
//! ```text
//! DIR/rate=4/results.parquet      one results file per step (or speedup=2/)
//! DIR/sweep.parquet, sweep.csv    one row per step, rewritten after each step
//! DIR/capacity.json               knee, SLO capacity and the auto probe
//! ```
//!
//! A stopped sweep keeps the steps it finished; `--resume` skips every step
//! whose results file is complete (has its summary) and recomputes its row
//! from the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{Field, Schema};
use clap::{Args, ValueEnum};
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cli::{ScheduleArgs, TargetArgs};
use crate::record::read_results;
use crate::replay::dispatch::Phases;
use crate::replay::{self, RunOptions, Target};
use crate::report::summary::{FidelityLimits, Slo, Summary, summarize};
use crate::schedule::ScheduleSpec;
use crate::trace::Trace;

/// How `--rates A..B --steps N` spaces its rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Spacing {
    /// Equal steps.
    Linear,
    /// Equal ratios.
    #[default]
    Geometric,
}

/// `llm-replay sweep TRACE --out-dir DIR`.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// The trace (Parquet, from `ingest`).
    pub trace: PathBuf,
    /// Output directory (created; existing steps are kept with --resume).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Offered rates: a list `1,2,4,8` or a range `2..32` (with --steps).
    #[arg(long, conflicts_with_all = ["speedups", "auto"])]
    pub rates: Option<String>,
    /// Steps of a `--rates A..B` range.
    #[arg(long, default_value_t = 6)]
    pub steps: usize,
    /// Spacing of a `--rates A..B` range.
    #[arg(long, value_enum, default_value = "geometric")]
    pub spacing: Spacing,
    /// Find the load where throughput stops growing with a short probe,
    /// then sweep from low load to it.
    #[arg(long, conflicts_with = "speedups")]
    pub auto: bool,
    /// For a recorded trace: speedups that keep its shape (burstiness,
    /// sessions) and multiply its load, e.g. `1,2,4`.
    #[arg(long)]
    pub speedups: Option<String>,
    /// How long each rate step schedules requests.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub step_duration: Duration,
    /// Objectives, e.g. `ttft=500ms,tpot=50ms`; with them the sweep
    /// searches for the SLO capacity.
    #[arg(long)]
    pub slo: Option<Slo>,
    /// Share of requests (failures counted) that must meet the SLO.
    #[arg(long, default_value_t = 0.99)]
    pub goodput: f64,
    /// Extra steps of the capacity search between the last passing and the
    /// first failing rate.
    #[arg(long, default_value_t = 3)]
    pub search_steps: usize,
    /// Requests scheduled in the first part of each step are marked warmup
    /// and left out of its summary.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Requests scheduled in the last part of each step are marked
    /// cooldown and left out of its summary.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub cooldown: Duration,
    /// Keep the steps already complete in --out-dir and run the rest.
    #[arg(long)]
    pub resume: bool,
    /// Grace for in-flight requests at the end of a stopped step.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// No live progress line.
    #[arg(long, short)]
    pub quiet: bool,
    /// The target.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Arrival process, order and seed of rate steps (`--rate`,
    /// `--duration` and `--speedup` are set per step by the sweep).
    #[command(flatten)]
    pub schedule: ScheduleArgs,
}

/// One step of a sweep, as a row of `sweep.parquet` and `sweep.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepStep {
    /// Step number in run order.
    pub step: u32,
    /// `rate` or `speedup`.
    pub mode: String,
    /// The rate or speedup.
    pub offered: f64,
    /// Requests per second offered.
    pub offered_rate: f64,
    /// Requests per second sent.
    pub achieved_rate: f64,
    /// Rows summarised (steady phase).
    pub requests: u64,
    /// Successful requests.
    pub ok: u64,
    /// Requests that were not ok.
    pub errors: u64,
    /// Share meeting the SLO (failures counted), when one was given.
    pub goodput_fraction: Option<f64>,
    /// Requests per second meeting the SLO.
    pub goodput_rate: Option<f64>,
    /// Successful requests per second.
    pub request_throughput: f64,
    /// Output tokens per second.
    pub output_token_throughput: f64,
    /// TTFT from the schedule, p50 (ms).
    pub ttft_p50_ms: f64,
    /// p90.
    pub ttft_p90_ms: f64,
    /// p99.
    pub ttft_p99_ms: f64,
    /// TPOT p50 (ms).
    pub tpot_p50_ms: f64,
    /// p90.
    pub tpot_p90_ms: f64,
    /// p99.
    pub tpot_p99_ms: f64,
    /// ITL p50 (ms).
    pub itl_p50_ms: f64,
    /// p99.
    pub itl_p99_ms: f64,
    /// E2E from the schedule, p50 (ms).
    pub e2e_p50_ms: f64,
    /// p90.
    pub e2e_p90_ms: f64,
    /// p99.
    pub e2e_p99_ms: f64,
    /// p99 send lag (ms).
    pub send_lag_p99_ms: f64,
    /// The generator could not keep the schedule.
    pub generator_bottleneck: bool,
    /// Results file, relative to the sweep directory.
    pub results_path: String,
}

impl SweepStep {
    /// The row of a step from its summary.
    pub fn from_summary(
        step: u32,
        mode: &str,
        offered: f64,
        s: &Summary,
        results_path: String,
    ) -> Self {
        let ok = s.outcomes.get("ok").copied().unwrap_or(0);
        Self {
            step,
            mode: mode.to_owned(),
            offered,
            offered_rate: s.fidelity.target_rate,
            achieved_rate: s.fidelity.achieved_rate,
            requests: s.requests,
            ok,
            errors: s.requests - ok,
            goodput_fraction: s.goodput.as_ref().map(|g| g.fraction),
            goodput_rate: s.goodput.as_ref().map(|g| g.rate),
            request_throughput: s.request_throughput,
            output_token_throughput: s.output_token_throughput,
            ttft_p50_ms: s.ttft_from_schedule.p50_ms,
            ttft_p90_ms: s.ttft_from_schedule.p90_ms,
            ttft_p99_ms: s.ttft_from_schedule.p99_ms,
            tpot_p50_ms: s.tpot.p50_ms,
            tpot_p90_ms: s.tpot.p90_ms,
            tpot_p99_ms: s.tpot.p99_ms,
            itl_p50_ms: s.itl.p50_ms,
            itl_p99_ms: s.itl.p99_ms,
            e2e_p50_ms: s.e2e_from_schedule.p50_ms,
            e2e_p90_ms: s.e2e_from_schedule.p90_ms,
            e2e_p99_ms: s.e2e_from_schedule.p99_ms,
            send_lag_p99_ms: s.fidelity.send_lag.p99_ms,
            generator_bottleneck: s.fidelity.generator_bottleneck,
            results_path,
        }
    }
}

/// What the sweep concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Capacity {
    /// Offered rate beyond which throughput stops growing (achieved
    /// throughput falls below 90% of the offered rate), if reached.
    pub knee_offered_rate: Option<f64>,
    /// Highest offered rate at which the goodput target was met.
    pub slo_capacity_rate: Option<f64>,
    /// The SLO, as given.
    pub slo: Option<String>,
    /// The goodput target.
    pub goodput_target: Option<f64>,
    /// Rates the auto probe ran, with the throughput each achieved.
    pub probe: Vec<(f64, f64)>,
}

/// Parses `1,2,4` or `A..B` (with `steps` and `spacing`).
pub fn parse_loads(text: &str, steps: usize, spacing: Spacing) -> anyhow::Result<Vec<f64>> {
    let num = |s: &str| -> anyhow::Result<f64> {
        let v: f64 = s
            .trim()
            .parse()
            .with_context(|| format!("{s:?} is not a number"))?;
        if !(v.is_finite() && v > 0.0) {
            bail!("loads must be positive, got {v}");
        }
        Ok(v)
    };
    if let Some((a, b)) = text.split_once("..") {
        let (a, b) = (num(a)?, num(b)?);
        if a >= b || steps < 2 {
            bail!("a range A..B needs A < B and --steps of at least 2");
        }
        let n = steps - 1;
        return Ok((0..=n)
            .map(|i| {
                let f = i as f64 / n as f64;
                let v = match spacing {
                    Spacing::Linear => a + (b - a) * f,
                    Spacing::Geometric => a * (b / a).powf(f),
                };
                (v * 1000.0).round() / 1000.0
            })
            .collect());
    }
    let loads: Vec<f64> = text.split(',').map(num).collect::<anyhow::Result<_>>()?;
    if loads.is_empty() {
        bail!("no loads given");
    }
    Ok(loads)
}

fn fmt_load(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

struct Sweeper<'a> {
    args: &'a SweepArgs,
    trace: Arc<Trace>,
    target: Target,
    stop: CancellationToken,
    steps: Vec<SweepStep>,
}

impl Sweeper<'_> {
    fn spec(&self, mode: &str, load: f64) -> anyhow::Result<(ScheduleSpec, u64)> {
        let mut sched = self.args.schedule.clone();
        if mode == "rate" {
            sched.rate = Some(load);
            // `--requests` (from the schedule flags) bounds a step by count
            // instead of by --step-duration.
            if sched.requests.is_none() {
                sched.duration = Some(self.args.step_duration);
            }
        } else {
            sched.rate = None;
            sched.speedup = load;
        }
        let spec = replay::schedule_spec(&sched)?;
        let span_ns = crate::schedule::build(&spec, &self.trace.records)?
            .last()
            .map_or(0, |r| r.offset_ns);
        Ok((spec, span_ns))
    }

    /// Runs (or, resuming, reads back) one step.
    async fn step(&mut self, mode: &str, load: f64) -> anyhow::Result<SweepStep> {
        let dir_name = format!("{mode}={}", fmt_load(load));
        let rel = format!("{dir_name}/results.parquet");
        let path = self.args.out_dir.join(&rel);
        let step_no = u32::try_from(self.steps.len()).unwrap_or(u32::MAX);
        if path.exists() {
            let done = read_results(&path)
                .ok()
                .filter(|r| r.metadata.contains_key("llm_replay.summary"));
            match done {
                Some(results) if self.args.resume => {
                    eprintln!(
                        "step {mode}={}: complete in {}, kept",
                        fmt_load(load),
                        path.display()
                    );
                    let target = (mode == "rate").then_some(load);
                    let s = summarize(&results.rows, self.args.slo, target);
                    return Ok(SweepStep::from_summary(step_no, mode, load, &s, rel));
                }
                Some(_) => bail!(
                    "{} exists: use --resume to keep finished steps, or another --out-dir",
                    path.display()
                ),
                None => {
                    // A step cut short: its rows stay for inspection under
                    // another name, and the step runs again.
                    let aside = path.with_extension("parquet.incomplete");
                    std::fs::rename(&path, &aside)
                        .with_context(|| format!("moving aside {}", path.display()))?;
                }
            }
        }
        std::fs::create_dir_all(self.args.out_dir.join(&dir_name))?;
        let (schedule, span_ns) = self.spec(mode, load)?;
        let warmup_ns = u64::try_from(self.args.warmup.as_nanos()).unwrap_or(u64::MAX);
        let cooldown_ns = u64::try_from(self.args.cooldown.as_nanos()).unwrap_or(0);
        let phases = Phases {
            warmup_ns,
            cooldown_from_ns: (cooldown_ns > 0).then(|| span_ns.saturating_sub(cooldown_ns)),
        };
        eprintln!("step {mode}={}: {}", fmt_load(load), path.display());
        let recorded = replay::run(
            self.trace.clone(),
            &self.target,
            RunOptions {
                schedule,
                output: path,
                slo: self.args.slo,
                grace: self.args.grace,
                limits: FidelityLimits::default(),
                phases,
                progress: !self.args.quiet,
                extra_metadata: vec![
                    ("llm_replay.sweep_step".into(), step_no.to_string()),
                    ("llm_replay.sweep_mode".into(), mode.to_owned()),
                    ("llm_replay.sweep_offered".into(), load.to_string()),
                ],
            },
            self.stop.clone(),
        )
        .await?;
        Ok(SweepStep::from_summary(
            step_no,
            mode,
            load,
            &recorded.summary,
            rel,
        ))
    }

    async fn record(&mut self, mode: &str, load: f64) -> anyhow::Result<SweepStep> {
        let s = self.step(mode, load).await?;
        self.steps.push(s.clone());
        write_tables(&self.args.out_dir, &self.steps)?;
        Ok(s)
    }

    fn meets_slo(&self, s: &SweepStep) -> bool {
        s.goodput_fraction.is_some_and(|g| g >= self.args.goodput)
    }
}

/// The knee: the highest offered rate up to which each step's extra load
/// still turned into at least half as much extra throughput. Marginal gains
/// are used rather than throughput/offered ratios, because a short step's
/// throughput is diluted by its drain tail at every load alike.
pub fn knee(steps: &[SweepStep]) -> Option<f64> {
    let mut sorted: Vec<&SweepStep> = steps.iter().collect();
    sorted.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    sorted.windows(2).find_map(|w| {
        let d_offered = w[1].offered_rate - w[0].offered_rate;
        let d_tput = w[1].request_throughput - w[0].request_throughput;
        (d_offered > 0.0 && d_tput < 0.5 * d_offered).then_some(w[0].offered_rate)
    })
}

/// Runs `llm-replay sweep`.
pub async fn command(args: SweepArgs) -> anyhow::Result<std::process::ExitCode> {
    if !(0.0..=1.0).contains(&args.goodput) {
        bail!("--goodput is a share in [0, 1]");
    }
    if args.schedule.rate.is_some()
        || args.schedule.duration.is_some()
        || args.schedule.speedup != 1.0
    {
        bail!(
            "sweep sets the load per step: use --rates, --speedups or --auto, and --step-duration (not --rate, --speedup or --duration)"
        );
    }
    let trace = Arc::new(crate::trace::read_trace(&args.trace)?);
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let target = Target::connect(&args.target, &trace, args.schedule.seed).await?;
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping the sweep: finished steps are kept (--resume runs the rest)");
            on_signal.cancel();
        }
    });
    let mut sw = Sweeper {
        args: &args,
        trace,
        target,
        stop: stop.clone(),
        steps: Vec::new(),
    };
    let mut capacity = Capacity {
        slo: args.slo.map(|s| s.to_string()),
        goodput_target: args.slo.map(|_| args.goodput),
        ..Capacity::default()
    };
    let (mode, loads) = if let Some(s) = &args.speedups {
        ("speedup", parse_loads(s, args.steps, args.spacing)?)
    } else if let Some(r) = &args.rates {
        ("rate", parse_loads(r, args.steps, args.spacing)?)
    } else if args.auto {
        ("rate", auto_probe(&mut sw, &mut capacity).await?)
    } else {
        bail!("give --rates, --speedups or --auto");
    };
    for load in loads {
        if stop.is_cancelled() {
            break;
        }
        sw.record(mode, load).await?;
    }
    // Capacity search between the last passing and the first failing rate.
    if mode == "rate" && args.slo.is_some() && !stop.is_cancelled() {
        for _ in 0..args.search_steps {
            let mut sorted = sw.steps.clone();
            sorted.sort_by(|a, b| a.offered.total_cmp(&b.offered));
            let pass = sorted
                .iter()
                .filter(|s| sw.meets_slo(s))
                .map(|s| s.offered)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            let fail = sorted
                .iter()
                .filter(|s| !sw.meets_slo(s) && pass.is_none_or(|p| s.offered > p))
                .map(|s| s.offered)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
            let (Some(lo), Some(hi)) = (pass, fail) else {
                break;
            };
            let mid = ((lo + hi) / 2.0 * 1000.0).round() / 1000.0;
            if (hi - lo) / hi < 0.05 || stop.is_cancelled() {
                break;
            }
            sw.record(mode, mid).await?;
        }
    }
    if sw.args.slo.is_some() {
        capacity.slo_capacity_rate = sw
            .steps
            .iter()
            .filter(|s| sw.meets_slo(s))
            .map(|s| s.offered_rate)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    }
    capacity.knee_offered_rate = knee(&sw.steps);
    crate::replay::write_json(&args.out_dir.join("capacity.json"), &capacity)?;
    crate::stdout(format_args!("{}", render_table(&sw.steps, &capacity)));
    crate::stdout(format_args!(
        "results       {} (sweep.parquet, sweep.csv, capacity.json, <mode>=<load>/results.parquet)\n",
        args.out_dir.display()
    ));
    Ok(std::process::ExitCode::SUCCESS)
}

/// The auto probe: short steps at doubling rates until throughput stops
/// growing; returns the rates to sweep (from an eighth of the knee to just
/// past it).
async fn auto_probe(sw: &mut Sweeper<'_>, capacity: &mut Capacity) -> anyhow::Result<Vec<f64>> {
    let probe_dir = sw.args.out_dir.join("probe");
    std::fs::create_dir_all(&probe_dir)?;
    let mut rate = 1.0f64;
    let mut prev: Option<(f64, f64)> = None;
    let mut knee_rate = None;
    for i in 0..12 {
        if sw.stop.is_cancelled() {
            break;
        }
        let mut sched = sw.args.schedule.clone();
        sched.rate = Some(rate);
        sched.duration = Some(Duration::from_secs(10).min(sw.args.step_duration));
        sched.requests = None;
        let path = probe_dir.join(format!("rate={}.parquet", fmt_load(rate)));
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
        eprintln!("probe {i}: rate {}", fmt_load(rate));
        let rec = replay::run(
            sw.trace.clone(),
            &sw.target,
            RunOptions {
                schedule: replay::schedule_spec(&sched)?,
                output: path,
                slo: sw.args.slo,
                grace: sw.args.grace,
                limits: FidelityLimits::default(),
                phases: Phases::default(),
                progress: !sw.args.quiet,
                extra_metadata: vec![("llm_replay.sweep_probe".into(), rate.to_string())],
            },
            sw.stop.clone(),
        )
        .await?;
        let tput = rec.summary.request_throughput;
        capacity.probe.push((rate, tput));
        // Throughput stopped following the load: less than half of the
        // extra offered load became extra throughput.
        if let Some((r0, t0)) = prev
            && tput - t0 < 0.5 * (rate - r0)
        {
            knee_rate = Some(rate);
            break;
        }
        prev = Some((rate, tput));
        rate *= 2.0;
    }
    let top = knee_rate.unwrap_or(rate);
    parse_loads(
        &format!("{}..{}", fmt_load(top / 8.0), fmt_load(top)),
        sw.args.steps.max(2),
        Spacing::Geometric,
    )
}

/// Writes `sweep.parquet` and `sweep.csv` (rewritten after every step).
pub fn write_tables(dir: &Path, steps: &[SweepStep]) -> anyhow::Result<()> {
    let f64s = |f: fn(&SweepStep) -> f64| {
        Arc::new(Float64Array::from(steps.iter().map(f).collect::<Vec<_>>())) as ArrayRef
    };
    let opt = |f: fn(&SweepStep) -> Option<f64>| {
        Arc::new(Float64Array::from(steps.iter().map(f).collect::<Vec<_>>())) as ArrayRef
    };
    let u64s = |f: fn(&SweepStep) -> u64| {
        Arc::new(UInt64Array::from(steps.iter().map(f).collect::<Vec<_>>())) as ArrayRef
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "step",
            Arc::new(UInt32Array::from(
                steps.iter().map(|s| s.step).collect::<Vec<_>>(),
            )),
        ),
        (
            "mode",
            Arc::new(StringArray::from(
                steps.iter().map(|s| s.mode.as_str()).collect::<Vec<_>>(),
            )),
        ),
        ("offered", f64s(|s| s.offered)),
        ("offered_rate", f64s(|s| s.offered_rate)),
        ("achieved_rate", f64s(|s| s.achieved_rate)),
        ("requests", u64s(|s| s.requests)),
        ("ok", u64s(|s| s.ok)),
        ("errors", u64s(|s| s.errors)),
        ("goodput_fraction", opt(|s| s.goodput_fraction)),
        ("goodput_rate", opt(|s| s.goodput_rate)),
        ("request_throughput", f64s(|s| s.request_throughput)),
        (
            "output_token_throughput",
            f64s(|s| s.output_token_throughput),
        ),
        ("ttft_p50_ms", f64s(|s| s.ttft_p50_ms)),
        ("ttft_p90_ms", f64s(|s| s.ttft_p90_ms)),
        ("ttft_p99_ms", f64s(|s| s.ttft_p99_ms)),
        ("tpot_p50_ms", f64s(|s| s.tpot_p50_ms)),
        ("tpot_p90_ms", f64s(|s| s.tpot_p90_ms)),
        ("tpot_p99_ms", f64s(|s| s.tpot_p99_ms)),
        ("itl_p50_ms", f64s(|s| s.itl_p50_ms)),
        ("itl_p99_ms", f64s(|s| s.itl_p99_ms)),
        ("e2e_p50_ms", f64s(|s| s.e2e_p50_ms)),
        ("e2e_p90_ms", f64s(|s| s.e2e_p90_ms)),
        ("e2e_p99_ms", f64s(|s| s.e2e_p99_ms)),
        ("send_lag_p99_ms", f64s(|s| s.send_lag_p99_ms)),
        (
            "generator_bottleneck",
            Arc::new(BooleanArray::from(
                steps
                    .iter()
                    .map(|s| s.generator_bottleneck)
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "results_path",
            Arc::new(StringArray::from(
                steps
                    .iter()
                    .map(|s| s.results_path.as_str())
                    .collect::<Vec<_>>(),
            )),
        ),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), name.starts_with("goodput")))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )?;
    let tmp = dir.join("sweep.parquet.partial");
    let mut w = ArrowWriter::try_new(std::fs::File::create(&tmp)?, schema, None)?;
    w.write(&batch)?;
    w.close()?;
    std::fs::rename(&tmp, dir.join("sweep.parquet"))?;
    let mut csv = csv::Writer::from_path(dir.join("sweep.csv"))?;
    for s in steps {
        csv.serialize(s)?;
    }
    csv.flush()?;
    Ok(())
}

/// The printed table.
pub fn render_table(steps: &[SweepStep], capacity: &Capacity) -> String {
    let mut out = format!(
        "{:>9} {:>9} {:>9} {:>7} {:>9} {:>10} {:>10} {:>9} {:>9} {:>10} {:>8}\n",
        "offered",
        "req/s",
        "achieved",
        "errors",
        "goodput",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "E2E p99",
        "lag p99"
    );
    let mut sorted: Vec<&SweepStep> = steps.iter().collect();
    sorted.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    for s in sorted {
        out.push_str(&format!(
            "{:>9} {:>9.2} {:>9.2} {:>7} {:>9} {:>8.0}ms {:>8.0}ms {:>7.1}ms {:>7.1}ms {:>8.0}ms {:>6.2}ms{}\n",
            format!("{}={}", if s.mode == "rate" { "r" } else { "x" }, fmt_load(s.offered)),
            s.request_throughput,
            s.achieved_rate,
            s.errors,
            s.goodput_fraction.map_or("-".to_owned(), |g| format!("{:.1}%", g * 100.0)),
            s.ttft_p50_ms,
            s.ttft_p99_ms,
            s.tpot_p50_ms,
            s.tpot_p99_ms,
            s.e2e_p99_ms,
            s.send_lag_p99_ms,
            if s.generator_bottleneck { "  (generator-bound)" } else { "" }
        ));
    }
    match capacity.knee_offered_rate {
        Some(k) => out.push_str(&format!(
            "knee          throughput stops following the offered load above {k:.2} req/s\n"
        )),
        None => {
            out.push_str("knee          not reached: throughput kept up with every offered load\n")
        }
    }
    if let Some(slo) = &capacity.slo {
        match capacity.slo_capacity_rate {
            Some(c) => out.push_str(&format!(
                "capacity      {c:.2} req/s with {:.0}% of requests meeting {slo}\n",
                capacity.goodput_target.unwrap_or(0.0) * 100.0
            )),
            None => out.push_str(&format!(
                "capacity      no step met {slo} for enough requests\n"
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_parse_as_lists_and_ranges() {
        assert_eq!(
            parse_loads("1,2,4", 0, Spacing::Linear).unwrap(),
            vec![1.0, 2.0, 4.0]
        );
        assert_eq!(
            parse_loads("2..32", 5, Spacing::Geometric).unwrap(),
            vec![2.0, 4.0, 8.0, 16.0, 32.0]
        );
        assert_eq!(
            parse_loads("2..10", 5, Spacing::Linear).unwrap(),
            vec![2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert!(parse_loads("4..2", 3, Spacing::Linear).is_err());
        assert!(parse_loads("1,x", 3, Spacing::Linear).is_err());
        assert!(parse_loads("0,1", 3, Spacing::Linear).is_err());
    }

    fn step(rate: f64, tput: f64) -> SweepStep {
        SweepStep::from_summary(
            0,
            "rate",
            rate,
            &Summary {
                request_throughput: tput,
                fidelity: crate::report::summary::Fidelity {
                    target_rate: rate,
                    ..Default::default()
                },
                ..Summary::default()
            },
            String::new(),
        )
    }

    #[test]
    fn the_knee_is_the_last_load_throughput_followed() {
        let steps = vec![
            step(2.0, 1.6),
            step(8.0, 6.2),
            step(4.0, 3.1),
            step(16.0, 8.0),
        ];
        assert_eq!(knee(&steps), Some(8.0));
        assert_eq!(knee(&steps[..3]), None);
    }
}
