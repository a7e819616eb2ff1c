//! The sweep table: one row per step of a sweep, in `_sweep.parquet` and
//! `_sweep.csv` (rewritten after every step). Counters are signed 64-bit
//! integers so that `ok - requests` is a plain subtraction in pandas and
//! DuckDB.
//!
//! Every file of a sweep directory that is not a step's results starts
//! with `_` (`_sweep.parquet`, `_sweep.csv`, `_capacity.json`, `_probe/`,
//! `_trace.parquet`): pyarrow, pandas, Polars and DuckDB dataset readers
//! skip such names, so `pd.read_parquet(DIR)` reads every step's rows and
//! nothing else. Sweeps written before kept them without the `_`; every
//! reader here accepts both, and a resumed sweep moves them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{Field, Schema};
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use super::summary::Summary;

/// What a sweep varies from step to step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepMode {
    /// The offered rate of a rate schedule (requests per second).
    Rate,
    /// The speedup of a recorded trace's own times.
    Speedup,
    /// Closed-loop virtual users (`sweep --concurrency`).
    Concurrency,
}

impl SweepMode {
    /// The name in directory names (`rate=4`), tables and metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Speedup => "speedup",
            Self::Concurrency => "concurrency",
        }
    }

    /// The mode named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "rate" => Some(Self::Rate),
            "speedup" => Some(Self::Speedup),
            "concurrency" => Some(Self::Concurrency),
            _ => None,
        }
    }
}

impl std::fmt::Display for SweepMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a sweep, as a row of `sweep.parquet` and `sweep.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepStep {
    /// Step number in run order.
    pub step: i32,
    /// What the step varies.
    pub mode: SweepMode,
    /// The rate, speedup or number of users.
    pub offered: f64,
    /// Requests per second offered.
    pub offered_rate: f64,
    /// Requests per second sent.
    pub achieved_rate: f64,
    /// Rows summarised (steady phase).
    pub requests: i64,
    /// Successful requests.
    pub ok: i64,
    /// Requests that were not ok.
    pub errors: i64,
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
    /// Requests per second of the schedule drawn.
    #[serde(default)]
    pub scheduled_rate: f64,
    /// Input tokens per second of the steady window (see the summary's
    /// `window_s`: the send span, a median E2E later).
    #[serde(default)]
    pub input_token_throughput: f64,
    /// The steady window the throughputs are over, seconds.
    #[serde(default)]
    pub window_s: f64,
    /// The `--percentiles` asked for besides the fixed columns, as
    /// `(column, ms)`: `ttft_p95_ms`, `e2e_p99_9_ms` (a `.` in the
    /// percentile becomes `_`). Extra columns after the fixed ones in
    /// `_sweep.parquet` and `_sweep.csv`.
    #[serde(skip)]
    pub extra_percentiles: Vec<(String, f64)>,
}

impl SweepStep {
    /// The row of a step from its summary.
    pub fn from_summary(
        step: i32,
        mode: SweepMode,
        offered: f64,
        s: &Summary,
        results_path: String,
    ) -> Self {
        let ok = s.outcomes.get("ok").copied().unwrap_or(0);
        Self {
            step,
            mode,
            offered,
            offered_rate: s.fidelity.target_rate,
            achieved_rate: s.fidelity.achieved_rate,
            requests: i64::try_from(s.requests).unwrap_or(i64::MAX),
            ok: i64::try_from(ok).unwrap_or(i64::MAX),
            errors: i64::try_from(s.failed()).unwrap_or(i64::MAX),
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
            scheduled_rate: s.fidelity.scheduled_rate,
            input_token_throughput: s.input_token_throughput,
            window_s: s.window_s,
            extra_percentiles: extra_percentiles(s),
        }
    }
}

/// The `--percentiles` of a summary that the fixed columns do not hold, as
/// `(column, ms)` (see [`SweepStep::extra_percentiles`]).
fn extra_percentiles(s: &Summary) -> Vec<(String, f64)> {
    let metrics = [
        ("ttft", &s.ttft_from_schedule, &["p50", "p90", "p99"][..]),
        ("tpot", &s.tpot, &["p50", "p90", "p99"][..]),
        ("itl", &s.itl, &["p50", "p99"][..]),
        ("e2e", &s.e2e_from_schedule, &["p50", "p90", "p99"][..]),
    ];
    let mut out = Vec::new();
    for (name, p, fixed) in metrics {
        for (key, v) in &p.percentiles {
            if !fixed.contains(&key.as_str()) {
                out.push((format!("{name}_{}_ms", key.replace('.', "_")), *v));
            }
        }
    }
    out
}

/// The step table, Parquet.
pub const TABLE_PARQUET: &str = "_sweep.parquet";
/// The step table, CSV.
pub const TABLE_CSV: &str = "_sweep.csv";
/// Knee, capacity and the auto probe.
pub const CAPACITY_JSON: &str = "_capacity.json";
/// The auto probe's results.
pub const PROBE_DIR: &str = "_probe";
/// The names sweeps of earlier versions used for the same files.
pub const LEGACY_NAMES: [&str; 3] = ["sweep.parquet", "sweep.csv", "capacity.json"];

/// Whether `dir` holds a sweep's step table (under either name).
pub fn has_table(dir: &Path) -> bool {
    dir.join(TABLE_PARQUET).exists() || dir.join(LEGACY_NAMES[0]).exists()
}

/// The capacity file of `dir`: `_capacity.json`, or the older
/// `capacity.json` when only that one is there.
pub fn capacity_path(dir: &Path) -> PathBuf {
    let new = dir.join(CAPACITY_JSON);
    let old = dir.join(LEGACY_NAMES[2]);
    if !new.exists() && old.exists() {
        old
    } else {
        new
    }
}

/// Removes the files of an older sweep's layout once their new names are
/// written, so the directory reads whole again.
pub fn remove_legacy(dir: &Path) -> anyhow::Result<()> {
    for name in LEGACY_NAMES {
        let path = dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path)
                .map_err(|e| anyhow::anyhow!("removing {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Writes `_sweep.parquet` and `_sweep.csv` (rewritten after every step).
pub fn write_tables(dir: &Path, steps: &[SweepStep]) -> anyhow::Result<()> {
    let f64s = |f: fn(&SweepStep) -> f64| {
        Arc::new(Float64Array::from(steps.iter().map(f).collect::<Vec<_>>())) as ArrayRef
    };
    let opt = |f: fn(&SweepStep) -> Option<f64>| {
        Arc::new(Float64Array::from(steps.iter().map(f).collect::<Vec<_>>())) as ArrayRef
    };
    let i64s = |f: fn(&SweepStep) -> i64| {
        Arc::new(Int64Array::from(steps.iter().map(f).collect::<Vec<_>>())) as ArrayRef
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "step",
            Arc::new(Int32Array::from(
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
        ("requests", i64s(|s| s.requests)),
        ("ok", i64s(|s| s.ok)),
        ("errors", i64s(|s| s.errors)),
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
        ("scheduled_rate", f64s(|s| s.scheduled_rate)),
        ("input_token_throughput", f64s(|s| s.input_token_throughput)),
        ("window_s", f64s(|s| s.window_s)),
    ];
    // The --percentiles columns, by the first step's names (every step of
    // a sweep has the same); a step without one has a null.
    let extra: Vec<String> = steps
        .first()
        .map(|s| s.extra_percentiles.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let value = |s: &SweepStep, k: &str| {
        s.extra_percentiles
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| *v)
    };
    let mut columns: Vec<(&str, ArrayRef)> = columns;
    for k in &extra {
        columns.push((
            k.as_str(),
            Arc::new(Float64Array::from(
                steps.iter().map(|s| value(s, k)).collect::<Vec<_>>(),
            )) as ArrayRef,
        ));
    }
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, a)| {
                Field::new(
                    *name,
                    a.data_type().clone(),
                    name.starts_with("goodput") || extra.iter().any(|k| k == name),
                )
            })
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )?;
    let tmp = dir.join("_sweep.parquet.partial");
    let mut w = ArrowWriter::try_new(std::fs::File::create(&tmp)?, schema, None)?;
    w.write(&batch)?;
    w.close()?;
    std::fs::rename(&tmp, dir.join(TABLE_PARQUET))?;
    let mut csv = csv::Writer::from_path(dir.join(TABLE_CSV))?;
    for (i, s) in steps.iter().enumerate() {
        // The fixed columns as serde writes them, then the extra ones.
        let mut one = csv::WriterBuilder::new()
            .has_headers(i == 0)
            .from_writer(Vec::new());
        one.serialize(s)?;
        let bytes = one.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut rows = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes.as_slice());
        for (j, record) in rows.records().enumerate() {
            let mut record = record?;
            for k in &extra {
                if i == 0 && j == 0 {
                    record.push_field(k);
                } else {
                    record.push_field(&value(s, k).map_or(String::new(), |v| v.to_string()));
                }
            }
            csv.write_record(&record)?;
        }
    }
    csv.flush()?;
    Ok(())
}
