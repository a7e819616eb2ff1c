//! Reports: everything recomputed from the Parquet files (one run, a sweep
//! directory, or two of either side by side), as text, JSON, or one
//! self-contained HTML file with SVG plots. The summaries stored in the
//! files are never trusted: a killed run has none, and the rows are the
//! record.

pub mod capacity;
pub mod svg;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;

pub use crate::record::summary::{self, ClassColumn, Slo, Summary, SummaryBuilder, summarize};

use crate::record::run_meta::{RunConfig, key};
use crate::record::sweep_table::{SweepMode, SweepStep};
use crate::record::{ResultRow, read_results};
use capacity::{Capacity, render_table};
use svg::{Chart, Series, escape};

/// One run, recomputed.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The results file.
    pub path: String,
    /// Its summary.
    pub summary: Summary,
    /// The shards of a sharded run (`--shard`), read as one run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardInfo>,
    #[serde(skip)]
    rows: Vec<ResultRow>,
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
    let metrics_path = crate::record::server_metrics::path_for(path);
    let server_metrics = if metrics_path.exists() {
        crate::record::server_metrics::read(&metrics_path)?
    } else {
        Vec::new()
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
        shards: Vec::new(),
        rows,
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
    for (i, (mode, load, path, name)) in found.into_iter().enumerate() {
        let results = read_results(&path)?;
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
                for s in &r.shards {
                    let _ = writeln!(
                        out,
                        "shard {:<7} {:>8} rows  t0 {} ({:+.3} ms)  send lag p99 {:.3} ms",
                        s.shard, s.rows, s.t0, s.t0_offset_ms, s.send_lag_p99_ms
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

/// Per-second timeline of a run: offered, sent and completed per second,
/// requests in flight, and TTFT percentiles by scheduled second.
fn timeline(rows: &[ResultRow]) -> Vec<Chart> {
    let Some(t0) = rows.iter().map(|r| r.scheduled_at_us).min() else {
        return Vec::new();
    };
    let end = rows
        .iter()
        .map(|r| {
            r.completed_at_us
                .unwrap_or(r.scheduled_at_us)
                .max(r.scheduled_at_us)
        })
        .max()
        .unwrap_or(t0);
    let secs = usize::try_from((end - t0) / 1_000_000 + 1)
        .unwrap_or(1)
        .min(86_400);
    let bin = |t: i64| {
        usize::try_from((t - t0) / 1_000_000)
            .unwrap_or(0)
            .min(secs - 1)
    };
    let (mut offered, mut sent, mut done) = (vec![0f64; secs], vec![0f64; secs], vec![0f64; secs]);
    let mut inflight = vec![0f64; secs];
    let mut ttft: Vec<Vec<f64>> = vec![Vec::new(); secs];
    for r in rows {
        offered[bin(r.scheduled_at_us)] += 1.0;
        if let Some(s) = r.sent_at_us {
            sent[bin(s)] += 1.0;
            let stop = r.completed_at_us.map_or(secs - 1, bin);
            for v in &mut inflight[bin(s)..=stop.max(bin(s))] {
                *v += 1.0;
            }
        }
        if let Some(c) = r.completed_at_us {
            done[bin(c)] += 1.0;
        }
        if let Some(t) = r.ttft_from_schedule_us() {
            ttft[bin(r.scheduled_at_us)].push(t as f64 / 1e3);
        }
    }
    let series = |name: &str, v: &[f64]| Series {
        name: name.into(),
        points: v.iter().enumerate().map(|(i, y)| (i as f64, *y)).collect(),
    };
    let pct = |q: f64| -> Vec<(f64, f64)> {
        ttft.iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .map(|(i, v)| {
                let mut v = v.clone();
                v.sort_by(f64::total_cmp);
                (i as f64, v[((v.len() - 1) as f64 * q).round() as usize])
            })
            .collect()
    };
    vec![
        Chart {
            title: "Offered vs achieved rate".into(),
            x_label: "seconds since the first scheduled request".into(),
            y_label: "requests / s".into(),
            series: vec![
                series("scheduled", &offered),
                series("sent", &sent),
                series("completed", &done),
            ],
            ..Chart::default()
        },
        Chart {
            title: "Requests in flight".into(),
            x_label: "seconds".into(),
            y_label: "requests".into(),
            series: vec![series("in flight", &inflight)],
            ..Chart::default()
        },
        Chart {
            title: "TTFT from the schedule, by scheduled second".into(),
            x_label: "seconds".into(),
            y_label: "ms".into(),
            series: vec![
                Series {
                    name: "p50".into(),
                    points: pct(0.5),
                },
                Series {
                    name: "p99".into(),
                    points: pct(0.99),
                },
            ],
            ..Chart::default()
        },
    ]
}

fn cdf(name: &str, mut values: Vec<f64>) -> Series {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let step = (n / 400).max(1);
    let mut points: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .step_by(step)
        .map(|(i, v)| (*v, (i + 1) as f64 / n as f64))
        .collect();
    if let Some(last) = values.last() {
        points.push((*last, 1.0));
    }
    Series {
        name: name.into(),
        points,
    }
}

/// Queue and cache gauges of vLLM, SGLang, llama.cpp and the simulator, on
/// the run's timeline (label sets summed).
fn server_chart(
    rows: &[ResultRow],
    samples: &[crate::record::server_metrics::Sample],
) -> Option<Chart> {
    let t0 = rows.iter().map(|r| r.scheduled_at_us).min()?;
    let wanted = [
        "running",
        "waiting",
        "processing",
        "deferred",
        "queue",
        "kv_cache_usage",
        "cache_usage",
    ];
    let mut by_metric: std::collections::BTreeMap<&str, std::collections::BTreeMap<i64, f64>> =
        Default::default();
    for s in samples {
        if s.value.is_finite()
            && wanted.iter().any(|w| s.metric.contains(w))
            && !s.metric.ends_with("_total")
        {
            *by_metric
                .entry(s.metric.as_str())
                .or_default()
                .entry(s.ts_us)
                .or_insert(0.0) += s.value;
        }
    }
    if by_metric.is_empty() {
        return None;
    }
    Some(Chart {
        title: "Server metrics (scraped every second)".into(),
        x_label: "seconds since the first scheduled request".into(),
        y_label: "value".into(),
        series: by_metric
            .into_iter()
            .take(8)
            .map(|(name, points)| Series {
                name: name.to_owned(),
                points: points
                    .into_iter()
                    .map(|(t, v)| ((t - t0) as f64 / 1e6, v))
                    .collect(),
            })
            .collect(),
        ..Chart::default()
    })
}

fn run_charts(rows: &[ResultRow], label: &str) -> Vec<Chart> {
    let ms = |f: fn(&ResultRow) -> Option<i64>| -> Vec<f64> {
        rows.iter()
            .filter(|r| r.is_ok())
            .filter_map(f)
            .map(|v| v as f64 / 1e3)
            .collect()
    };
    let mut charts = timeline(rows);
    charts.push(Chart {
        title: format!("Latency distributions ({label})"),
        x_label: "ms".into(),
        y_label: "share of ok requests".into(),
        series: vec![
            cdf("TTFT (from schedule)", ms(ResultRow::ttft_from_schedule_us)),
            cdf("E2E (from schedule)", ms(ResultRow::e2e_from_schedule_us)),
        ],
        ..Chart::default()
    });
    charts.push(Chart {
        title: "Send lag (actual minus scheduled send)".into(),
        x_label: "ms".into(),
        y_label: "share of sent requests".into(),
        series: vec![cdf(
            "send lag",
            rows.iter()
                .filter_map(|r| r.send_lag_us)
                .map(|v| v as f64 / 1e3)
                .collect(),
        )],
        ..Chart::default()
    });
    charts
}

fn sweep_charts(s: &SweepReport) -> Vec<Chart> {
    // A concurrency sweep is drawn against its users, the others against
    // the offered rate.
    let users = s.steps.iter().any(|st| st.mode == SweepMode::Concurrency);
    let x = |st: &SweepStep| if users { st.offered } else { st.offered_rate };
    let line = |name: &str, f: fn(&SweepStep) -> f64| Series {
        name: name.into(),
        points: s.steps.iter().map(|st| (x(st), f(st))).collect(),
    };
    let mut markers = Vec::new();
    let (knee, capacity) = s.capacity.conclusions(users);
    if let Some(c) = capacity {
        markers.push((c, format!("SLO capacity {c:.2}")));
    }
    if let Some(k) = knee {
        markers.push((k, format!("knee {k:.2}")));
    }
    let chart = |title: &str, y: &str, series: Vec<Series>| Chart {
        title: title.into(),
        x_label: if users {
            "virtual users (closed loop)".into()
        } else {
            "offered load (requests / s)".into()
        },
        y_label: y.into(),
        series,
        markers: markers.clone(),
        dots: true,
    };
    vec![
        chart(
            "TTFT from the schedule vs offered load",
            "ms",
            vec![
                line("p50", |s| s.ttft_p50_ms),
                line("p90", |s| s.ttft_p90_ms),
                line("p99", |s| s.ttft_p99_ms),
            ],
        ),
        chart(
            "TPOT vs offered load",
            "ms",
            vec![
                line("p50", |s| s.tpot_p50_ms),
                line("p90", |s| s.tpot_p90_ms),
                line("p99", |s| s.tpot_p99_ms),
            ],
        ),
        chart(
            "E2E from the schedule vs offered load",
            "ms",
            vec![
                line("p50", |s| s.e2e_p50_ms),
                line("p90", |s| s.e2e_p90_ms),
                line("p99", |s| s.e2e_p99_ms),
            ],
        ),
        chart(
            "Throughput vs offered load",
            "requests / s",
            vec![
                line("offered", |s| s.offered_rate),
                line("completed ok", |s| s.request_throughput),
                line("meeting the SLO", |s| s.goodput_rate.unwrap_or(0.0)),
            ],
        ),
        chart(
            "Output tokens / s vs offered load",
            "tokens / s",
            vec![line("output tokens", |s| s.output_token_throughput)],
        ),
        distribution(s, "TTFT from the schedule, per step", |l| &l.0),
        distribution(s, "E2E from the schedule, per step", |l| &l.1),
    ]
}

/// One CDF per step.
fn distribution(s: &SweepReport, title: &str, pick: fn(&Latencies) -> &Vec<f64>) -> Chart {
    Chart {
        title: title.into(),
        x_label: "ms".into(),
        y_label: "share of ok requests".into(),
        series: s
            .steps
            .iter()
            .zip(&s.latencies)
            .map(|(st, l)| cdf(&format!("{}={}", st.mode, st.offered), pick(l).clone()))
            .collect(),
        ..Chart::default()
    }
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1340px;color:#222}h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}pre{background:#f6f8fa;padding:12px;overflow-x:auto;font-size:12px}.charts{display:flex;flex-wrap:wrap;gap:12px}svg{background:#fff;border:1px solid #e3e3e3}.title{font-weight:600;font-size:13px}.tick,.legend{font-size:11px;fill:#444}.label{font-size:12px;fill:#333}.grid{stroke:#eee}.axis{stroke:#888}.marker{stroke:#555;stroke-dasharray:4 3}.marker-label{font-size:11px;fill:#555}.empty{fill:#999}table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f3f3f3}";

/// The HTML report: one file, no external resources.
pub fn render_html(inputs: &[Input]) -> String {
    let mut h = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>llm-replay report</title><style>{STYLE}</style></head><body><h1>llm-replay report</h1>"
    );
    for input in inputs {
        match input {
            Input::Run(r) => {
                let _ = write!(
                    h,
                    "<h2>Run {}</h2><pre>{}</pre><div class=\"charts\">",
                    escape(&r.path),
                    escape(&r.summary.to_string())
                );
                for c in run_charts(&r.rows, &r.path) {
                    h.push_str(&c.render());
                }
                if let Some(c) = server_chart(&r.rows, &r.server_metrics) {
                    h.push_str(&c.render());
                }
                h.push_str("</div>");
            }
            Input::Sweep(s) => {
                let _ = write!(
                    h,
                    "<h2>Sweep {}</h2><pre>{}</pre><div class=\"charts\">",
                    escape(&s.dir),
                    escape(&render_table(&s.steps, &s.capacity))
                );
                for c in sweep_charts(s) {
                    h.push_str(&c.render());
                }
                h.push_str("</div>");
                h.push_str("<table><tr><th>offered</th><th>req/s</th><th>errors</th><th>goodput</th><th>TTFT p99 ms</th><th>TPOT p99 ms</th><th>E2E p99 ms</th><th>results</th></tr>");
                for st in &s.steps {
                    let _ = write!(
                        h,
                        "<tr><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{:.0}</td><td>{}</td></tr>",
                        st.offered_rate,
                        st.request_throughput,
                        st.errors,
                        st.goodput_fraction
                            .map_or("-".into(), |g| format!("{:.1}%", g * 100.0)),
                        st.ttft_p99_ms,
                        st.tpot_p99_ms,
                        st.e2e_p99_ms,
                        escape(&st.results_path)
                    );
                }
                h.push_str("</table>");
            }
        }
    }
    h.push_str("</body></html>\n");
    h
}
