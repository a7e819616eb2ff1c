//! `llm-replay sweep`: one open-loop replay per offered load, into one
//! hive-partitioned directory, answering "how much traffic of this shape can
//! my deployment take before it breaks my SLOs?".
//!
//! ```text
//! DIR/rate=4/results.parquet      one results file per step (or speedup=2/)
//! DIR/_sweep.parquet, _sweep.csv  one row per step, rewritten after each step
//! DIR/_capacity.json              knee, SLO capacity and the auto probe
//! DIR/_probe/rate=1.parquet       the auto probe's runs
//! ```
//!
//! Names outside the steps start with `_` so that dataset readers
//! (`pd.read_parquet(DIR)`, Polars, DuckDB) skip them; older sweeps'
//! `sweep.parquet`, `sweep.csv` and `capacity.json` are still read
//! (`record::sweep_table`).
//!
//! A stopped sweep keeps the steps it finished; `resume` skips every step
//! whose results file is complete (has its summary) and was run with the
//! same trace and target, and recomputes its row from the file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::record::read_results;
use crate::record::run_meta::key;
use crate::record::summary::{FidelityLimits, Quantiles, Slo, summarize_with};
use crate::record::sweep_table::{self, SweepMode, SweepStep};
use crate::replay::dispatch::{ClosedLoop, Phases};
use crate::replay::{self, RunOptions, Shutdown, Target, TargetConfig};
use crate::report::capacity::{Capacity, fmt_load};
use crate::schedule::{Arrivals, Limit, Order, ScheduleSpec};
use crate::trace::{InputFile, Trace};

/// How `--rates A..B --steps N` spaces its rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spacing {
    /// Equal steps.
    Linear,
    /// Equal ratios.
    #[default]
    Geometric,
}

/// The loads a sweep steps through.
#[derive(Debug, Clone, PartialEq)]
pub enum Loads {
    /// Offered rates (requests per second), in run order.
    Rates(Vec<f64>),
    /// Speedups of the trace's recorded times, in run order.
    Speedups(Vec<f64>),
    /// Closed-loop virtual users (whole numbers), in run order.
    Concurrency(Vec<f64>),
    /// Probe at doubling rates for the knee, then sweep this many rates
    /// up to it.
    Auto {
        /// Rates swept after the probe.
        steps: usize,
    },
}

/// The schedule of every step but its load: arrival process, order, seed
/// and count for rate steps; the trace window for speedup steps.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSchedule {
    /// Inter-arrival process of rate steps.
    pub arrivals: Arrivals,
    /// Row order of rate steps.
    pub order: Order,
    /// Seed of arrivals, shuffles and prompts.
    pub seed: u64,
    /// Bound each step by this many requests instead of its duration.
    pub requests: Option<u64>,
    /// Trace window start (µs) of speedup steps.
    pub start_us: Option<i64>,
    /// Trace window end (µs) of speedup steps.
    pub end_us: Option<i64>,
    /// Spread of quantized timestamps (µs) of speedup steps.
    pub spread_us: Option<i64>,
}

impl StepSchedule {
    /// The schedule of one step.
    pub fn spec(&self, mode: SweepMode, load: f64, step_duration: Duration) -> ScheduleSpec {
        match mode {
            SweepMode::Rate => ScheduleSpec::Rate {
                rate: load,
                arrivals: self.arrivals,
                order: self.order,
                limit: Limit {
                    duration_ns: self
                        .requests
                        .is_none()
                        .then(|| u64::try_from(step_duration.as_nanos()).unwrap_or(u64::MAX)),
                    requests: self.requests,
                },
                seed: self.seed,
            },
            SweepMode::Speedup => ScheduleSpec::Recorded {
                speedup: load,
                start_us: self.start_us,
                end_us: self.end_us,
                spread_us: self.spread_us,
                requests: self.requests,
            },
            // Users, not times, decide when requests leave; the schedule
            // gives their order and, with --requests, their number (else
            // the step's duration ends it).
            SweepMode::Concurrency => ScheduleSpec::closed_loop(
                self.order,
                Some(self.requests.unwrap_or(u64::MAX)),
                self.seed,
            ),
        }
    }

    /// The closed loop of a concurrency step.
    pub fn closed_loop(
        &self,
        mode: SweepMode,
        load: f64,
        step_duration: Duration,
    ) -> Option<ClosedLoop> {
        (mode == SweepMode::Concurrency).then(|| ClosedLoop {
            users: load as usize,
            duration: self.requests.is_none().then_some(step_duration),
            stages: None,
        })
    }
}

/// A sweep, validated.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// The trace.
    pub trace: PathBuf,
    /// Output directory.
    pub out_dir: PathBuf,
    /// The loads.
    pub loads: Loads,
    /// How long each rate step schedules requests.
    pub step_duration: Duration,
    /// Objectives; with them the sweep searches for the SLO capacity.
    pub slo: Option<Slo>,
    /// Share of requests that must meet the SLO.
    pub goodput: f64,
    /// Extra steps of the capacity search.
    pub search_steps: usize,
    /// Warm-up at the start of each step.
    pub warmup: Duration,
    /// Cool-down at the end of each step.
    pub cooldown: Duration,
    /// Keep complete steps already in `out_dir`.
    pub resume: bool,
    /// Overwrite steps already in `out_dir`.
    pub force: bool,
    /// Grace for in-flight requests after a stop.
    pub grace: Duration,
    /// Live progress line.
    pub progress: bool,
    /// How the progress is shown and exported (each step gets its label).
    pub monitor: crate::replay::progress::Monitor,
    /// Where requests go.
    pub target: TargetConfig,
    /// Everything of a step's schedule but its load.
    pub schedule: StepSchedule,
    /// Session replay options (`None`: rows on their own).
    pub sessions: Option<crate::replay::session::SessionOptions>,
    /// Salt of the sweep's prompts (0: none, `--same-prompts`); each step
    /// (and probe) salts its own from it, so no step is served from the
    /// prefix cache an earlier step warmed.
    pub prompt_salt: u64,
    /// Percentiles reported besides p50/p90/p99 (`--percentiles`).
    pub quantiles: Quantiles,
}

/// The prompt salt of step `step` (probes count down from -1).
fn step_salt(base: u64, step: i32) -> u64 {
    if base == 0 {
        return 0;
    }
    crate::prompt::derive_salt(base, &step.to_le_bytes())
}

impl SweepPlan {
    /// The summary limits of every step (and its extra percentiles).
    pub fn limits(&self) -> FidelityLimits {
        FidelityLimits {
            quantiles: self.quantiles,
            ..FidelityLimits::default()
        }
    }

    /// The mode of the loads.
    pub fn mode(&self) -> SweepMode {
        match self.loads {
            Loads::Speedups(_) => SweepMode::Speedup,
            Loads::Concurrency(_) => SweepMode::Concurrency,
            Loads::Rates(_) | Loads::Auto { .. } => SweepMode::Rate,
        }
    }
}

/// What a sweep found.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    /// One row per step, in run order.
    pub steps: Vec<SweepStep>,
    /// Knee and capacity.
    pub capacity: Capacity,
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

struct Sweeper<'a> {
    plan: &'a SweepPlan,
    trace: Arc<Trace>,
    trace_sha256: String,
    target: Target,
    shutdown: &'a Shutdown,
    steps: Vec<SweepStep>,
}

impl Sweeper<'_> {
    /// Whether a kept step was run with this sweep's trace and target.
    fn check_kept(
        &self,
        path: &std::path::Path,
        meta: &std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let checks = [
            (
                key::TRACE_SHA256,
                self.trace_sha256.as_str(),
                "trace (SHA-256)",
            ),
            (key::MODEL, self.target.model(), "model"),
        ];
        for (key, now, what) in checks {
            if let Some(then) = meta.get(key)
                && then != now
            {
                bail!(
                    "--resume: {} was run with another {what} ({then:?}, now {now:?}): resume with the same trace and target, or use another --out-dir",
                    path.display()
                );
            }
        }
        // The embedded simulator listens on a new port every run; only a
        // real target's URL must match.
        if !self.target.is_embedded()
            && let Some(then) = meta.get(key::TARGET_URL)
            && *then != self.target.display_url()
        {
            bail!(
                "--resume: {} was run against {then}, now {}: resume against the same --url, or use another --out-dir",
                path.display(),
                self.target.display_url()
            );
        }
        Ok(())
    }

    /// Runs (or, resuming, reads back) one step.
    async fn step(&mut self, mode: SweepMode, load: f64) -> anyhow::Result<SweepStep> {
        let dir_name = format!("{mode}={}", fmt_load(load));
        let rel = format!("{dir_name}/results.parquet");
        let path = self.plan.out_dir.join(&rel);
        let step_no = i32::try_from(self.steps.len()).unwrap_or(i32::MAX);
        if path.exists() {
            let done = read_results(&path)
                .ok()
                .filter(|r| r.metadata.contains_key(key::SUMMARY));
            match done {
                Some(results) if self.plan.resume => {
                    self.check_kept(&path, &results.metadata)?;
                    eprintln!(
                        "step {mode}={}: complete in {}, kept",
                        fmt_load(load),
                        path.display()
                    );
                    let target = (mode == SweepMode::Rate).then_some(load);
                    let s = summarize_with(
                        &results.rows,
                        self.plan.slo,
                        target,
                        None,
                        &[],
                        self.plan.limits(),
                    );
                    return Ok(SweepStep::from_summary(step_no, mode, load, &s, rel));
                }
                Some(_) if self.plan.force => std::fs::remove_file(&path)
                    .with_context(|| format!("removing {} (--force)", path.display()))?,
                Some(_) => bail!(
                    "{} exists: --resume keeps finished steps, --force runs them again, or use another --out-dir",
                    path.display()
                ),
                None => {
                    // A step cut short: its rows stay for inspection under
                    // another name (that dataset readers skip), and the
                    // step runs again.
                    let aside = path.with_file_name("_results.parquet.incomplete");
                    std::fs::rename(&path, &aside)
                        .with_context(|| format!("moving aside {}", path.display()))?;
                }
            }
        }
        std::fs::create_dir_all(self.plan.out_dir.join(&dir_name))?;
        let schedule = self.plan.schedule.spec(mode, load, self.plan.step_duration);
        let closed_loop = self
            .plan
            .schedule
            .closed_loop(mode, load, self.plan.step_duration);
        let span_ns = match &closed_loop {
            Some(_) => u64::try_from(self.plan.step_duration.as_nanos()).unwrap_or(u64::MAX),
            None => crate::schedule::plan(&schedule, &self.trace.records)?.span_hint_ns(),
        };
        if self.plan.target.scrape.is_some() {
            while let Some(metrics) = crate::record::server_metrics::existing_for(&path) {
                std::fs::remove_file(&metrics)
                    .with_context(|| format!("removing the old {}", metrics.display()))?;
            }
        }
        let warmup_ns = u64::try_from(self.plan.warmup.as_nanos()).unwrap_or(u64::MAX);
        let cooldown_ns = u64::try_from(self.plan.cooldown.as_nanos()).unwrap_or(0);
        let phases = Phases {
            warmup_ns,
            cooldown_from_ns: (cooldown_ns > 0).then(|| span_ns.saturating_sub(cooldown_ns)),
        };
        eprintln!("step {mode}={}: {}", fmt_load(load), path.display());
        let recorded = replay::run(
            self.trace.clone(),
            &self.target,
            RunOptions {
                by: Vec::new(),
                schedule,
                output: path,
                slo: self.plan.slo,
                grace: self.plan.grace,
                limits: self.plan.limits(),
                phases,
                progress: self.plan.progress,
                monitor: self.plan.monitor.step(step_no, &dir_name),
                extra_metadata: vec![
                    (key::SWEEP_STEP.into(), step_no.to_string()),
                    (key::SWEEP_MODE.into(), mode.as_str().to_owned()),
                    (key::SWEEP_OFFERED.into(), load.to_string()),
                ],
                sessions: self.plan.sessions,
                closed_loop,
                shard: None,
                start_at_us: None,
                prompt_salt: step_salt(self.plan.prompt_salt, step_no),
            },
            self.shutdown,
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

    async fn record(&mut self, mode: SweepMode, load: f64) -> anyhow::Result<SweepStep> {
        let s = self.step(mode, load).await?;
        self.steps.push(s.clone());
        sweep_table::write_tables(&self.plan.out_dir, &self.steps)?;
        Ok(s)
    }

    fn meets_slo(&self, s: &SweepStep) -> bool {
        s.goodput_fraction.is_some_and(|g| g >= self.plan.goodput)
    }
}

/// Runs a sweep until its plan is done or `shutdown` stops it; the steps
/// finished are kept either way.
pub async fn run(plan: &SweepPlan, shutdown: &Shutdown) -> anyhow::Result<SweepOutcome> {
    if sweep_table::has_table(&plan.out_dir) && !plan.resume && !plan.force {
        bail!(
            "{} holds a sweep already: --resume continues it, --force runs it again, or use another --out-dir",
            plan.out_dir.display()
        );
    }
    let trace = Arc::new(crate::trace::read_trace(&plan.trace)?);
    let trace_sha256 = InputFile::describe(&plan.trace)
        .with_context(|| format!("hashing {}", plan.trace.display()))?
        .sha256;
    std::fs::create_dir_all(&plan.out_dir)
        .with_context(|| format!("creating {}", plan.out_dir.display()))?;
    let target = Target::connect(&plan.target, &trace, plan.schedule.seed).await?;
    let mut sw = Sweeper {
        plan,
        trace,
        trace_sha256,
        target,
        shutdown,
        steps: Vec::new(),
    };
    let mut capacity = Capacity {
        slo: plan.slo.map(|s| s.to_string()),
        goodput_target: plan.slo.map(|_| plan.goodput),
        ..Capacity::default()
    };
    let mode = plan.mode();
    let loads = match &plan.loads {
        Loads::Rates(l) | Loads::Speedups(l) | Loads::Concurrency(l) => l.clone(),
        Loads::Auto { steps } => auto_probe(&mut sw, &mut capacity, *steps).await?,
    };
    for load in loads {
        if shutdown.is_stopped() {
            break;
        }
        sw.record(mode, load).await?;
    }
    // Capacity search between the last passing and the first failing rate
    // (or user count).
    let searched = matches!(mode, SweepMode::Rate | SweepMode::Concurrency);
    if searched && plan.slo.is_some() && !shutdown.is_stopped() {
        for _ in 0..plan.search_steps {
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
            let (mid, close) = if mode == SweepMode::Concurrency {
                let mid = ((lo + hi) / 2.0).floor();
                (mid, mid <= lo)
            } else {
                (
                    ((lo + hi) / 2.0 * 1000.0).round() / 1000.0,
                    (hi - lo) / hi < 0.05,
                )
            };
            if close || shutdown.is_stopped() {
                break;
            }
            sw.record(mode, mid).await?;
        }
    }
    capacity.conclude(&sw.steps, plan.slo.map(|_| plan.goodput));
    write_json(&plan.out_dir.join(sweep_table::CAPACITY_JSON), &capacity)?;
    sweep_table::remove_legacy(&plan.out_dir)?;
    Ok(SweepOutcome {
        steps: sw.steps,
        capacity,
    })
}

/// Writes `value` as pretty JSON to `path`.
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// The auto probe: short steps at doubling rates until throughput stops
/// growing; returns the rates to sweep (from an eighth of the knee to just
/// past it).
async fn auto_probe(
    sw: &mut Sweeper<'_>,
    capacity: &mut Capacity,
    steps: usize,
) -> anyhow::Result<Vec<f64>> {
    let probe_dir = sw.plan.out_dir.join(sweep_table::PROBE_DIR);
    std::fs::create_dir_all(&probe_dir)?;
    let mut rate = 1.0f64;
    let mut prev: Option<(f64, f64)> = None;
    let mut knee_rate = None;
    for i in 0..12 {
        if sw.shutdown.is_stopped() {
            break;
        }
        let mut sched = sw.plan.schedule.clone();
        sched.requests = None;
        let schedule = sched.spec(
            SweepMode::Rate,
            rate,
            Duration::from_secs(10).min(sw.plan.step_duration),
        );
        let path = probe_dir.join(format!("rate={}.parquet", fmt_load(rate)));
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
        eprintln!("probe {i}: rate {}", fmt_load(rate));
        let rec = replay::run(
            sw.trace.clone(),
            &sw.target,
            RunOptions {
                by: Vec::new(),
                schedule,
                output: path,
                slo: sw.plan.slo,
                grace: sw.plan.grace,
                limits: sw.plan.limits(),
                phases: Phases::default(),
                progress: sw.plan.progress,
                monitor: sw.plan.monitor.labelled(format!("probe {i} rate={rate}")),
                extra_metadata: vec![(key::SWEEP_PROBE.into(), rate.to_string())],
                sessions: sw.plan.sessions,
                closed_loop: None,
                shard: None,
                start_at_us: None,
                prompt_salt: step_salt(sw.plan.prompt_salt, -1 - i),
            },
            sw.shutdown,
        )
        .await?;
        let tput = rec.summary.request_throughput;
        // Judged from the load sent, not the nominal rate.
        let sent = rec.summary.fidelity.achieved_rate;
        capacity.probe.push((rate, tput));
        if rec.summary.requests > 0 && rec.summary.failed() == rec.summary.requests {
            bail!(
                "probe at rate {}: every request failed ({}); fix the target before sweeping",
                fmt_load(rate),
                rec.summary
                    .first_errors
                    .first()
                    .map_or(String::new(), |e| e.error.clone())
            );
        }
        // Throughput stopped following the load: less than half of the
        // extra offered load became extra throughput.
        if let Some((s0, t0)) = prev
            && sent > s0
            && tput - t0 < 0.5 * (sent - s0)
        {
            knee_rate = Some(rate);
            break;
        }
        prev = Some((sent, tput));
        rate *= 2.0;
    }
    let top = knee_rate.unwrap_or(rate);
    parse_loads(
        &format!("{}..{}", fmt_load(top / 8.0), fmt_load(top)),
        steps.max(2),
        Spacing::Geometric,
    )
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

    #[test]
    fn every_step_and_probe_salts_its_prompts_apart() {
        let salts: std::collections::HashSet<u64> =
            (-12..40).map(|step| step_salt(12345, step)).collect();
        assert_eq!(salts.len(), 52);
        assert!(!salts.contains(&0));
        assert_eq!(step_salt(0, 3), 0, "--same-prompts salts nothing");
    }
}
