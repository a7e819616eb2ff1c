//! Reports: everything recomputed from the Parquet files (one run, a sweep
//! directory, or two of either side by side), as text, JSON, or one
//! self-contained HTML file with SVG charts drawn by plotters ([`html`],
//! [`charts`]). The summaries stored in the
//! files are never trusted: a killed run has none, and the rows are the
//! record.

pub mod capacity;
pub mod charts;
pub mod html;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;

pub use crate::record::summary::{self, ClassColumn, Slo, Summary, SummaryBuilder, summarize};

use crate::record::run_meta::{RunConfig, key};
use crate::record::sweep_table::{SweepMode, SweepStep};
use crate::record::{ResultRow, read_results};
use capacity::{Capacity, render_table};
pub use html::render_html;

/// One run, recomputed.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The results file.
    pub path: String,
    /// Its summary.
    pub summary: Summary,
    /// Whether the run finished and wrote its summary (every shard's, in a
    /// sharded run). A killed run's file ends at its last checkpoint, and
    /// requests due after that are in no file.
    pub complete: bool,
    /// The shards of a sharded run (`--shard`), read as one run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardInfo>,
    #[serde(skip)]
    rows: Vec<ResultRow>,
    /// The results file's key-value metadata (the first shard's).
    #[serde(skip)]
    meta: std::collections::BTreeMap<String, String>,
    #[serde(skip)]
    server_metrics: Vec<crate::record::server_metrics::Sample>,
}

/// One shard of a sharded run.
#[derive(Debug, Clone, Serialize)]
pub struct ShardInfo {
    /// `K/N`.
    pub shard: String,
    /// Its results file.
    pub path: String,
    /// Its rows.
    pub rows: u64,
    /// Whether it finished (wrote its summary).
    pub complete: bool,
    /// Its schedule's t=0 (RFC 3339).
    pub t0: String,
    /// Its t=0 minus the earliest shard's, ms: 0 when the shards were
    /// started together with `--start-at` (as each host's clock saw it;
    /// whether the clocks agree only the server's side can tell).
    pub t0_offset_ms: f64,
    /// Its send lag p99, ms.
    pub send_lag_p99_ms: f64,
}

/// A sweep, recomputed.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// The directory.
    pub dir: String,
    /// One row per step.
    pub steps: Vec<SweepStep>,
    /// Knee and capacity.
    pub capacity: Capacity,
    /// Per step (in `steps` order): TTFT and E2E from the schedule of its
    /// ok steady rows, ms, for the distribution plots.
    #[serde(skip)]
    latencies: Vec<Latencies>,
    /// The first step's key-value metadata (target, model, trace, seed).
    #[serde(skip)]
    meta: std::collections::BTreeMap<String, String>,
    /// The SLO the steps were judged by.
    #[serde(skip)]
    slo: Option<Slo>,
}

/// TTFT and E2E samples of one step (ms).
type Latencies = (Vec<f64>, Vec<f64>);

/// One input of a report.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Input {
    /// A results file.
    Run(Box<RunReport>),
    /// A sweep directory.
    Sweep(Box<SweepReport>),
}

/// Loads one results file.
pub fn load_run(path: &Path, slo: Option<Slo>, by: &[ClassColumn]) -> anyhow::Result<RunReport> {
    load_run_with(path, slo, by, summary::Quantiles::default())
}

/// [`load_run`], reporting the percentiles `quantiles` too.
fn load_run_with(
    path: &Path,
    slo: Option<Slo>,
    by: &[ClassColumn],
    quantiles: summary::Quantiles,
) -> anyhow::Result<RunReport> {
    let results = read_results(path)?;
    let server_metrics = match crate::record::server_metrics::existing_for(path) {
        Some(metrics) => crate::record::server_metrics::read(&metrics)?,
        None => Vec::new(),
    };
    Ok(run_report(
        path.display().to_string(),
        results.rows,
        &results.metadata,
        slo,
        by,
        server_metrics,
        quantiles,
    ))
}

/// The shard files of a sharded run (`DIR/shard=K/results.parquet`), by K.
fn shard_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let k = name.strip_prefix("shard=")?.parse().ok()?;
            let path = e.path().join("results.parquet");
            path.exists().then_some((k, path))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// Loads a sharded run's directory as one run.
pub fn load_shards(dir: &Path, slo: Option<Slo>, by: &[ClassColumn]) -> anyhow::Result<RunReport> {
    load_shards_with(dir, slo, by, summary::Quantiles::default())
}

/// [`load_shards`], reporting the percentiles `quantiles` too.
fn load_shards_with(
    dir: &Path,
    slo: Option<Slo>,
    by: &[ClassColumn],
    quantiles: summary::Quantiles,
) -> anyhow::Result<RunReport> {
    let mut rows = Vec::new();
    let mut shards = Vec::new();
    let mut first_meta = None;
    for path in shard_files(dir) {
        let results = read_results(&path)?;
        let meta = &results.metadata;
        shards.push(ShardInfo {
            shard: meta.get(key::SHARD).cloned().unwrap_or_else(|| "?".into()),
            path: path.display().to_string(),
            rows: results.rows.len() as u64,
            complete: meta.contains_key(key::SUMMARY),
            t0: meta.get(key::T0).cloned().unwrap_or_default(),
            t0_offset_ms: 0.0,
            send_lag_p99_ms: summarize(&results.rows, None, None)
                .fidelity
                .send_lag
                .p99_ms,
        });
        rows.extend(results.rows);
        first_meta.get_or_insert(results.metadata);
    }
    let Some(meta) = first_meta else {
        bail!("{}: no shard=K/results.parquet", dir.display());
    };
    let t0s: Vec<Option<i64>> = shards
        .iter()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(&s.t0)
                .ok()
                .map(|t| t.timestamp_micros())
        })
        .collect();
    if let Some(min) = t0s.iter().flatten().min().copied() {
        for (s, t) in shards.iter_mut().zip(&t0s) {
            s.t0_offset_ms = t.map_or(0.0, |t| (t - min) as f64 / 1e3);
        }
    }
    rows.sort_by_key(|r| r.scheduled_at_us);
    let mut report = run_report(
        dir.display().to_string(),
        rows,
        &meta,
        slo,
        by,
        Vec::new(),
        quantiles,
    );
    report.complete = shards.iter().all(|s| s.complete);
    report.shards = shards;
    Ok(report)
}

/// The report of `rows`, run under the config in `metadata`.
fn run_report(
    path: String,
    rows: Vec<ResultRow>,
    metadata: &std::collections::BTreeMap<String, String>,
    slo: Option<Slo>,
    by: &[ClassColumn],
    server_metrics: Vec<crate::record::server_metrics::Sample>,
    quantiles: summary::Quantiles,
) -> RunReport {
    let config = RunConfig::from_metadata(metadata);
    let target = config.as_ref().and_then(|c| c.schedule.target_rate());
    // A staged run's stages: in the schedule (rates) or the closed loop
    // (users).
    let stages: Option<crate::schedule::Stages> = config.as_ref().and_then(|c| {
        c.schedule.stages().cloned().or_else(|| {
            c.closed_loop
                .as_ref()
                .and_then(|v| v.get("stages"))
                .and_then(|v| serde_json::from_value(v.clone()).ok())
        })
    });
    let slo = slo.or_else(|| {
        config
            .as_ref()
            .and_then(|c| c.slo.as_deref())
            .and_then(|s| s.parse().ok())
    });
    RunReport {
        path,
        summary: summary::summarize_with(
            &rows,
            slo,
            target,
            stages.as_ref(),
            by,
            summary::FidelityLimits {
                quantiles,
                ..Default::default()
            },
        ),
        complete: metadata.contains_key(key::SUMMARY),
        shards: Vec::new(),
        rows,
        meta: metadata.clone(),
        server_metrics,
    }
}

/// Loads a sweep directory: every `<mode>=<load>/results.parquet`.
pub fn load_sweep(dir: &Path, slo: Option<Slo>) -> anyhow::Result<SweepReport> {
    load_sweep_with(dir, slo, summary::Quantiles::default())
}

/// [`load_sweep`], reporting the percentiles `quantiles` too.
fn load_sweep_with(
    dir: &Path,
    slo: Option<Slo>,
    quantiles: summary::Quantiles,
) -> anyhow::Result<SweepReport> {
    // `_capacity.json`, or `capacity.json` in a sweep of an older version.
    let capacity_path = crate::record::sweep_table::capacity_path(dir);
    let mut capacity: Capacity = match std::fs::read_to_string(&capacity_path) {
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("{}", capacity_path.display()))?
        }
        Err(_) => Capacity::default(),
    };
    let slo = slo.or_else(|| capacity.slo.as_deref().and_then(|s| s.parse().ok()));
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((mode, load)) = name.split_once('=') else {
            continue;
        };
        let Some(mode) = SweepMode::parse(mode) else {
            continue;
        };
        let Ok(load) = load.parse::<f64>() else {
            continue;
        };
        let path = entry.path().join("results.parquet");
        if path.exists() {
            found.push((mode, load, path, name));
        }
    }
    if found.is_empty() {
        bail!(
            "{}: no <mode>=<load>/results.parquet steps: not a sweep directory",
            dir.display()
        );
    }
    found.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut steps = Vec::new();
    let mut latencies = Vec::new();
    let mut meta = None;
    for (i, (mode, load, path, name)) in found.into_iter().enumerate() {
        let results = read_results(&path)?;
        meta.get_or_insert_with(|| results.metadata.clone());
        let s = summary::summarize_with(
            &results.rows,
            slo,
            (mode == SweepMode::Rate).then_some(load),
            None,
            &[],
            summary::FidelityLimits {
                quantiles,
                ..Default::default()
            },
        );
        let ok = || {
            results
                .rows
                .iter()
                .filter(|r| r.is_ok() && r.phase == crate::record::Phase::Steady)
        };
        latencies.push((
            ok().filter_map(ResultRow::ttft_from_schedule_us)
                .map(|v| v as f64 / 1e3)
                .collect(),
            ok().filter_map(ResultRow::e2e_from_schedule_us)
                .map(|v| v as f64 / 1e3)
                .collect(),
        ));
        steps.push(SweepStep::from_summary(
            i32::try_from(i).unwrap_or(i32::MAX),
            mode,
            load,
            &s,
            format!("{name}/results.parquet"),
        ));
    }
    if let Some(slo) = slo {
        capacity.slo = Some(slo.to_string());
        capacity.goodput_target = Some(capacity.goodput_target.unwrap_or(0.99));
    }
    capacity.conclude(&steps, slo.and(capacity.goodput_target));
    Ok(SweepReport {
        dir: dir.display().to_string(),
        steps,
        capacity,
        latencies,
        meta: meta.unwrap_or_default(),
        slo,
    })
}

/// Loads a results file or, for a directory, a sweep; a run's figures
/// are broken down by `by` too (a sweep's steps by the automatic classes).
pub fn load(path: &Path, slo: Option<Slo>, by: &[ClassColumn]) -> anyhow::Result<Input> {
    load_with(path, slo, by, summary::Quantiles::default())
}

/// [`load`], reporting the percentiles `quantiles` too (`--percentiles`).
pub fn load_with(
    path: &Path,
    slo: Option<Slo>,
    by: &[ClassColumn],
    quantiles: summary::Quantiles,
) -> anyhow::Result<Input> {
    if path.is_dir() && !shard_files(path).is_empty() {
        Ok(Input::Run(Box::new(load_shards_with(
            path, slo, by, quantiles,
        )?)))
    } else if path.is_dir() {
        Ok(Input::Sweep(Box::new(load_sweep_with(
            path, slo, quantiles,
        )?)))
    } else {
        Ok(Input::Run(Box::new(load_run_with(
            path, slo, by, quantiles,
        )?)))
    }
}

/// The text report (side by side deltas for two runs).
pub fn render_text(inputs: &[Input]) -> String {
    let mut out = String::new();
    for input in inputs {
        match input {
            Input::Run(r) => {
                let _ = writeln!(out, "== {}", r.path);
                if !r.complete {
                    let _ = writeln!(
                        out,
                        "incomplete    the run did not finish (killed, or still running): no summary in the file, its rows end at the last checkpoint, and requests due after that are in no file; the figures below are of the rows present"
                    );
                }
                for s in &r.shards {
                    let _ = writeln!(
                        out,
                        "shard {:<7} {:>8} rows  t0 {} ({:+.3} ms)  send lag p99 {:.3} ms{}",
                        s.shard,
                        s.rows,
                        s.t0,
                        s.t0_offset_ms,
                        s.send_lag_p99_ms,
                        if s.complete { "" } else { "  (incomplete)" }
                    );
                }
                let _ = write!(out, "{}", r.summary);
            }
            Input::Sweep(s) => {
                let _ = writeln!(out, "== sweep {}", s.dir);
                out.push_str(&render_table(&s.steps, &s.capacity));
            }
        }
    }
    if let [Input::Run(a), Input::Run(b)] = inputs {
        let _ = writeln!(out, "== comparison (second vs first)");
        let rows = [
            (
                "throughput req/s",
                a.summary.request_throughput,
                b.summary.request_throughput,
            ),
            (
                "output tok/s",
                a.summary.output_token_throughput,
                b.summary.output_token_throughput,
            ),
            (
                "TTFT p50 ms",
                a.summary.ttft_from_schedule.p50_ms,
                b.summary.ttft_from_schedule.p50_ms,
            ),
            (
                "TTFT p99 ms",
                a.summary.ttft_from_schedule.p99_ms,
                b.summary.ttft_from_schedule.p99_ms,
            ),
            ("TPOT p50 ms", a.summary.tpot.p50_ms, b.summary.tpot.p50_ms),
            ("TPOT p99 ms", a.summary.tpot.p99_ms, b.summary.tpot.p99_ms),
            (
                "E2E p99 ms",
                a.summary.e2e_from_schedule.p99_ms,
                b.summary.e2e_from_schedule.p99_ms,
            ),
        ];
        for (name, x, y) in rows {
            let delta = if x != 0.0 {
                format!("{:+.1}%", (y / x - 1.0) * 100.0)
            } else {
                "-".into()
            };
            let _ = writeln!(out, "{name:<18}{x:>12.2}{y:>12.2}{delta:>10}");
        }
    }
    out
}
