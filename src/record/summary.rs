//! Run summaries: one code path for the live recorder and for `report`, which
//! recomputes everything from Parquet. Latency distributions keep every
//! value (microseconds) and interpolate their percentiles linearly, as
//! numpy, pandas and DuckDB's `quantile_cont` do (docs/results-format.md).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::{Phase, ResultRow};
use crate::schedule::Stages;

/// Latency objectives for goodput. TTFT and E2E are checked as measured
/// from the schedule (send lag included), so a client that falls behind
/// cannot flatter the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Slo {
    /// Time to first token, µs.
    pub ttft_us: Option<u64>,
    /// Time per output token, µs.
    pub tpot_us: Option<u64>,
    /// End-to-end latency, µs.
    pub e2e_us: Option<u64>,
    /// Inter-token latency, µs: the request's longest gap between content
    /// chunks, so a stream that stalls mid-reply fails it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl_us: Option<u64>,
}

impl FromStr for Slo {
    type Err = String;

    /// `ttft=500ms,tpot=50ms,e2e=10s,itl=200ms` (any subset; humantime
    /// durations), or vLLM's `--goodput` form `ttft:500 tpot:50` (bare
    /// numbers are milliseconds; `e2el` is vLLM's name for e2e). Terms are
    /// separated by commas or spaces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut slo = Slo::default();
        let terms = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty());
        for part in terms {
            let (key, value) = part
                .split_once(['=', ':'])
                .ok_or_else(|| format!("SLO term {part:?} is not key=duration (or key:ms)"))?;
            let (key, value) = (key.trim(), value.trim());
            let us = match value.parse::<f64>() {
                Ok(ms) if ms.is_finite() && ms >= 0.0 => (ms * 1000.0).round() as u64,
                Ok(_) => {
                    return Err(format!(
                        "SLO {key}: {value:?} must be a positive number of ms"
                    ));
                }
                Err(_) => {
                    let d: Duration = humantime::parse_duration(value).map_err(|e| {
                        format!("SLO {key}: {value:?} is not a duration (500ms, 2s) or a number of ms: {e}")
                    })?;
                    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
                }
            };
            match key {
                "ttft" => slo.ttft_us = Some(us),
                "tpot" => slo.tpot_us = Some(us),
                "e2e" | "e2el" => slo.e2e_us = Some(us),
                "itl" => slo.itl_us = Some(us),
                other => {
                    return Err(format!(
                        "unknown SLO metric {other:?}: use ttft, tpot, e2e (or e2el) or itl"
                    ));
                }
            }
        }
        if slo == Slo::default() {
            return Err("an SLO needs at least one of ttft, tpot, e2e, itl".into());
        }
        Ok(slo)
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let ms = |us: u64| format!("{}ms", us as f64 / 1000.0);
        if let Some(v) = self.ttft_us {
            parts.push(format!("ttft={}", ms(v)));
        }
        if let Some(v) = self.tpot_us {
            parts.push(format!("tpot={}", ms(v)));
        }
        if let Some(v) = self.e2e_us {
            parts.push(format!("e2e={}", ms(v)));
        }
        if let Some(v) = self.itl_us {
            parts.push(format!("itl={}", ms(v)));
        }
        f.write_str(&parts.join(","))
    }
}

impl Slo {
    /// Whether `row` meets every objective; failed requests never do.
    pub fn met_by(&self, row: &ResultRow) -> bool {
        if !row.is_ok() {
            return false;
        }
        let within = |limit: Option<u64>, value: Option<f64>| match (limit, value) {
            (None, _) => true,
            (Some(l), Some(v)) => v <= l as f64,
            // An objective on a value the request does not have (TPOT of a
            // one-token reply) does not fail it.
            (Some(_), None) => true,
        };
        within(self.ttft_us, row.ttft_from_schedule_us().map(|v| v as f64))
            && within(self.tpot_us, row.tpot_us())
            && within(self.e2e_us, row.e2e_from_schedule_us().map(|v| v as f64))
            && within(self.itl_us, row.itl_us.iter().max().map(|&v| v as f64))
    }
}

/// Percentiles of one metric, milliseconds.
///
/// Every percentile is computed from the exact values by linear
/// interpolation between the closest ranks: with `n` sorted values
/// `x[0..n]` and a quantile `q`, `h = (n - 1) q` and the value is
/// `x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h])` — numpy's
/// default `linear`, pandas' `quantile` and DuckDB's `quantile_cont`, so a
/// figure here equals the one those tools compute from the rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// The percentiles asked for with `--percentiles`, ms, keyed `p95`,
    /// `p99.9`, ... (empty without the flag).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub percentiles: BTreeMap<String, f64>,
}

/// The percentiles a summary reports besides p50, p90 and p99
/// (`--percentiles 50,90,95,99,99.9`): up to [`Quantiles::MAX`] values in
/// percent, `0..=100`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Quantiles {
    values: [f64; Quantiles::MAX],
    len: usize,
}

impl Quantiles {
    /// Most percentiles one flag takes.
    pub const MAX: usize = 16;

    /// The percentiles, in percent, in the order given.
    pub fn as_slice(&self) -> &[f64] {
        &self.values[..self.len]
    }

    /// The key of percentile `p` (percent): `p95`, `p99.9`.
    pub fn key(p: f64) -> String {
        let s = format!("{p:.6}");
        format!("p{}", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

impl FromStr for Quantiles {
    type Err = String;

    /// `50,90,95,99,99.9`: percents in `0..=100`, at most [`Quantiles::MAX`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut q = Quantiles::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let p: f64 = part
                .trim_start_matches('p')
                .parse()
                .map_err(|_| format!("percentile {part:?} is not a number (e.g. 99.9)"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("percentile {part:?} is outside 0..=100"));
            }
            if q.len == Self::MAX {
                return Err(format!("at most {} percentiles", Self::MAX));
            }
            if !q.as_slice().contains(&p) {
                q.values[q.len] = p;
                q.len += 1;
            }
        }
        if q.len == 0 {
            return Err("no percentiles given: e.g. 50,90,95,99,99.9".into());
        }
        Ok(q)
    }
}

/// Every value of one metric, kept exactly so that its percentiles are
/// the ones pandas and DuckDB compute from the rows. Values are buffered
/// and, past [`Metric::COMPACT_AT`], sorted into runs of equal values
/// (latencies in whole microseconds repeat a lot), so memory follows the
/// distinct values rather than the samples: a million requests cost a few
/// MiB per metric.
#[derive(Default)]
struct Metric {
    buf: Vec<f64>,
    /// Sorted distinct values with their counts.
    runs: Vec<(f64, u64)>,
    count: u64,
    sum: f64,
    max: f64,
}

impl Metric {
    const COMPACT_AT: usize = 1 << 16;

    fn new() -> Self {
        Self::default()
    }

    fn record(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        if self.count == 0 || v > self.max {
            self.max = v;
        }
        self.count += 1;
        self.sum += v;
        self.buf.push(v);
        if self.buf.len() >= Self::COMPACT_AT {
            self.runs = merge_runs(&self.runs, std::mem::take(&mut self.buf));
        }
    }

    fn percentiles(&self, extra: &Quantiles) -> Percentiles {
        if self.count == 0 {
            return Percentiles::default();
        }
        let runs = merge_runs(&self.runs, self.buf.clone());
        // Cumulative counts: the value of 0-based rank k is the first run
        // whose cumulative count exceeds k.
        let mut cum = Vec::with_capacity(runs.len());
        let mut seen = 0u64;
        for &(_, n) in &runs {
            seen += n;
            cum.push(seen);
        }
        let at_rank = |k: u64| -> f64 {
            let i = cum.partition_point(|&c| c <= k);
            runs.get(i.min(runs.len() - 1)).map_or(0.0, |r| r.0)
        };
        let n = self.count;
        let q = |q: f64| -> f64 {
            let len = usize::try_from(n).unwrap_or(usize::MAX);
            quantile_by_rank(len, q, |k| at_rank(k as u64)).unwrap_or(0.0)
        };
        let ms = |us: f64| us / 1000.0;
        Percentiles {
            count: n,
            mean_ms: ms(self.sum / n as f64),
            p50_ms: ms(q(0.50)),
            p90_ms: ms(q(0.90)),
            p99_ms: ms(q(0.99)),
            max_ms: ms(self.max),
            percentiles: extra
                .as_slice()
                .iter()
                .map(|&p| (Quantiles::key(p), ms(q(p / 100.0))))
                .collect(),
        }
    }
}

/// The `q` quantile (0 to 1) of `n` values by linear interpolation between
/// the closest ranks, as numpy's default, pandas' `quantile` and DuckDB's
/// `quantile_cont` compute it: the one method of every percentile
/// llm-replay reports. `at(k)` is the value of 0-based rank `k` (in
/// ascending order); `None` without values.
pub fn quantile_by_rank(n: usize, q: f64, mut at: impl FnMut(usize) -> f64) -> Option<f64> {
    if n == 0 {
        return None;
    }
    let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
    let k = h.floor() as usize;
    let x0 = at(k);
    let frac = h - k as f64;
    if frac == 0.0 || k + 1 >= n {
        return Some(x0);
    }
    Some(x0 + frac * (at(k + 1) - x0))
}

/// `runs` with the values of `more` merged in (sorted, equal values
/// counted once).
fn merge_runs(runs: &[(f64, u64)], mut more: Vec<f64>) -> Vec<(f64, u64)> {
    more.sort_by(f64::total_cmp);
    let mut fresh: Vec<(f64, u64)> = Vec::new();
    for v in more {
        match fresh.last_mut() {
            Some((last, n)) if *last == v => *n += 1,
            _ => fresh.push((v, 1)),
        }
    }
    if runs.is_empty() {
        return fresh;
    }
    let mut out = Vec::with_capacity(runs.len() + fresh.len());
    let (mut a, mut b) = (runs.iter().peekable(), fresh.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.0.total_cmp(&y.0) {
                std::cmp::Ordering::Less => a.next().copied(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    let (v, n) = **x;
                    let m = y.1;
                    a.next();
                    b.next();
                    Some((v, n + m))
                }
            },
            (Some(_), None) => a.next().copied(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        if let Some(r) = next {
            out.push(r);
        }
    }
    out
}

/// Whether the load generator kept up, and why not if it did not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Fidelity {
    /// Requests per second asked for (`--rate`, or the recorded schedule's
    /// mean rate).
    pub target_rate: f64,
    /// Requests per second of the schedule actually drawn (a random process
    /// realises its target only on average).
    pub scheduled_rate: f64,
    /// Requests per second actually sent.
    pub achieved_rate: f64,
    /// `achieved / scheduled - 1`: the generator's own error.
    pub rate_error: f64,
    /// Send lag (actual minus scheduled send time).
    pub send_lag: Percentiles,
    /// True when the generator, not the server, limited the run.
    pub generator_bottleneck: bool,
    /// Why, in words.
    pub verdict: String,
}

/// A run's summary, as printed and as `--summary-json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Summary {
    /// Rows counted (steady phase when a run has phases).
    pub requests: u64,
    /// Counts by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// First scheduled send to last completion, seconds.
    pub duration_s: f64,
    /// Schedule fidelity.
    pub fidelity: Fidelity,
    /// Successful requests per second of the steady window (see
    /// `window_s`).
    pub request_throughput: f64,
    /// Output tokens per second of the steady window (successful requests).
    pub output_token_throughput: f64,
    /// Input tokens per second of the steady window (successful requests).
    pub input_token_throughput: f64,
    /// The steady window the throughputs are taken over, seconds: as long
    /// as from the first to the last scheduled send, and shifted a median
    /// E2E (from the send, of the successes) later, so that it holds the
    /// completions of the requests sent in it. Throughputs count the
    /// successful requests (and their tokens) completed inside it: a server
    /// that keeps up shows the rate sent, one that falls behind the rate it
    /// served, and neither the ramp-up at the start nor the drain tail after
    /// the last send dilutes them. When nothing completed inside it (one
    /// burst) it is the whole run, `duration_s`, counting every success,
    /// and `throughput_window` says so.
    #[serde(default)]
    pub window_s: f64,
    /// `steady` (the window above) or `run` (the whole run, fallback).
    #[serde(default)]
    pub throughput_window: String,
    /// TTFT from the actual send.
    pub ttft: Percentiles,
    /// TTFT from the schedule.
    pub ttft_from_schedule: Percentiles,
    /// Gaps between streamed chunks.
    pub itl: Percentiles,
    /// Time per output token after the first.
    pub tpot: Percentiles,
    /// E2E from the actual send.
    pub e2e: Percentiles,
    /// E2E from the schedule.
    pub e2e_from_schedule: Percentiles,
    /// Goodput, when an SLO was given.
    pub goodput: Option<Goodput>,
    /// The load generator's own resource use (live runs only; a report
    /// recomputed from rows has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientUsage>,
    /// The first error of each kind (outcome and status), in the order
    /// they first happened: `http_error 404` -> the server's message.
    #[serde(default)]
    pub first_errors: Vec<FirstError>,
    /// Requests of the schedule not reached because the run was stopped
    /// (not rows; live runs only).
    #[serde(default)]
    pub not_reached: u64,
    /// Whether `not_reached` is exact (else estimated from the rate and
    /// the time left).
    #[serde(default)]
    pub not_reached_exact: bool,
    /// What stopped the run before its schedule ended (`SIGINT`,
    /// `SIGTERM`, `SIGHUP`, `fatal: ...`); none when it ran to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
    /// Session replay figures, when rows belong to sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionSummary>,
    /// Virtual users of a closed-loop run (`--concurrency`); none for the
    /// open-loop modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_loop_users: Option<u64>,
    /// Requests that waited in the client for a connection
    /// (`--max-connections`) or a `--max-in-flight` slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<Queued>,
    /// Per stage, for a run with `--stages` (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageSummary>,
    /// The server's prompt token counts (`usage.prompt_tokens`) against
    /// the counts sent, over the ok requests that reported usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<PromptTokens>,
    /// Figures per class: per API, model, `request_kind` and `user_id`
    /// when the rows hold more than one of it, and per value of each
    /// `--by` column always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassSummary>,
}

/// A results column that summaries break down by (`--by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassColumn {
    /// `api`.
    Api,
    /// `model`.
    Model,
    /// `request_kind`.
    RequestKind,
    /// `user_id` (tenant).
    UserId,
    /// `phase`.
    Phase,
    /// `stage`.
    Stage,
    /// `turn_index`.
    TurnIndex,
    /// `status_code`.
    StatusCode,
}

impl ClassColumn {
    /// Every column, in display order.
    pub const ALL: [ClassColumn; 8] = [
        Self::Api,
        Self::Model,
        Self::RequestKind,
        Self::UserId,
        Self::Phase,
        Self::Stage,
        Self::TurnIndex,
        Self::StatusCode,
    ];

    /// Broken down whenever a run holds more than one value.
    pub const AUTOMATIC: [ClassColumn; 4] =
        [Self::Api, Self::Model, Self::RequestKind, Self::UserId];

    /// The results column's name.
    pub fn name(self) -> &'static str {
        use crate::record::schema::col;
        match self {
            Self::Api => col::API,
            Self::Model => col::MODEL,
            Self::RequestKind => col::REQUEST_KIND,
            Self::UserId => col::USER_ID,
            Self::Phase => col::PHASE,
            Self::Stage => col::STAGE,
            Self::TurnIndex => col::TURN_INDEX,
            Self::StatusCode => col::STATUS_CODE,
        }
    }

    /// The row's value in this column (`None`: null).
    pub fn value(self, row: &ResultRow) -> Option<String> {
        match self {
            Self::Api => row.api.clone(),
            Self::Model => row.model.clone(),
            Self::RequestKind => row.request_kind.clone(),
            Self::UserId => row.user_id.clone(),
            Self::Phase => Some(row.phase.as_str().to_owned()),
            Self::Stage => row.stage.map(|s| s.to_string()),
            Self::TurnIndex => row.turn_index.map(|s| s.to_string()),
            Self::StatusCode => row.status_code.map(|s| s.to_string()),
        }
    }
}

impl FromStr for ClassColumn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!(
                    "cannot break down by {s:?}: use one of {}",
                    Self::ALL.map(ClassColumn::name).join(", ")
                )
            })
    }
}

/// One class's figures (rows with one value in one column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSummary {
    /// The column (`model`, `request_kind`, ...).
    pub column: String,
    /// Its value; `(null)` for rows without one, `(other)` for values past
    /// the first [`MAX_CLASS_VALUES`].
    pub value: String,
    /// Rows.
    pub requests: u64,
    /// Ok rows.
    pub ok: u64,
    /// Failed rows (every outcome but ok).
    pub errors: u64,
    /// Ok requests per second over the run's steady window.
    pub request_throughput: f64,
    /// Input tokens per second (ok requests).
    pub input_token_throughput: f64,
    /// Output tokens per second (ok requests).
    pub output_token_throughput: f64,
    /// TTFT from the schedule.
    pub ttft_from_schedule: Percentiles,
    /// Time per output token after the first.
    pub tpot: Percentiles,
    /// E2E from the schedule.
    pub e2e_from_schedule: Percentiles,
    /// Share of rows that met the SLO, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goodput: Option<f64>,
}

/// Values kept apart per column; further values are counted as `(other)`.
pub const MAX_CLASS_VALUES: usize = 64;

/// One class's figures being gathered.
struct ClassAcc {
    requests: u64,
    ok: u64,
    met: u64,
    input_tokens: u64,
    output_tokens: u64,
    ttft_sched: Metric,
    tpot: Metric,
    e2e_sched: Metric,
    /// Its index among its column's values (the order they first came).
    id: u32,
}

/// The class columns every row is broken down by, in one fixed order:
/// the automatic ones, then those of `--by` not among them.
fn class_columns(by: &[ClassColumn]) -> impl Iterator<Item = ClassColumn> + '_ {
    ClassColumn::AUTOMATIC.into_iter().chain(
        by.iter()
            .copied()
            .filter(|c| !ClassColumn::AUTOMATIC.contains(c)),
    )
}

/// One successful request as the throughput window counts it: 24 bytes,
/// the summary's only memory that grows with the run (classes share it).
#[derive(Debug, Clone, Copy)]
struct Done {
    /// Completion, µs since the epoch.
    at: i64,
    input_tokens: u32,
    output_tokens: u32,
    /// Its class values, an index into [`SummaryBuilder::combos`].
    combo: u32,
    met: bool,
}

/// The window the throughputs are taken over, µs since the epoch: the
/// span from the first to the last scheduled send of the rows summarised,
/// shifted by their median E2E (from the send), so that it holds the
/// completions of the requests sent in it: a server that keeps up
/// completes as many as were sent, one that falls behind only what it can.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: f64,
    end: f64,
}

impl Window {
    fn seconds(&self) -> f64 {
        (self.end - self.start) / 1e6
    }

    /// Whether a completion at `at` falls in the window.
    fn holds(&self, at: i64) -> bool {
        let at = at as f64;
        at >= self.start && at <= self.end
    }

    /// Requests, input tokens, output tokens and SLO-meeting requests of
    /// `done` completed in the window, per second of it; with no window,
    /// all of `done` per second of `whole_s`.
    fn rates(window: Option<Window>, whole_s: f64, done: &DoneLog) -> [f64; 4] {
        let span = window.map_or(whole_s, |w| w.seconds());
        if span <= 0.0 {
            return [0.0; 4];
        }
        let mut sums = [0.0f64; 4];
        done.for_each(|d| {
            if window.is_none_or(|w| w.holds(d.at)) {
                d.add_to(&mut sums);
            }
        });
        sums.map(|v| v / span)
    }
}

/// The successes the throughput window counts, in the order they came:
/// the latest (up to [`DoneLog::SPILL_AT`]) in memory, the rest spilled to
/// a temporary file in whole chunks, so that a summary's memory does not
/// grow with the run (a million requests would otherwise hold 24 MiB, and
/// twice that while the list doubles). The window is only known at the
/// end (it is shifted by the median E2E), so every record is kept exactly;
/// where no temporary file can be written they all stay in memory.
#[derive(Default)]
struct DoneLog {
    recent: Vec<Done>,
    spill: Option<Spill>,
    /// A spill file could not be made or written: keep everything here.
    in_memory: bool,
}

/// A temporary file of spilled [`Done`] records, removed when dropped.
struct Spill {
    path: std::path::PathBuf,
    file: std::fs::File,
    records: u64,
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl DoneLog {
    /// Records kept in memory before a chunk goes to the file.
    const SPILL_AT: usize = 1 << 16;
    /// Bytes of one spilled record.
    const RECORD: usize = 21;

    fn push(&mut self, d: Done) {
        self.recent.push(d);
        if self.recent.len() >= Self::SPILL_AT && !self.in_memory {
            match self.spill_recent() {
                Ok(()) => self.recent.clear(),
                Err(e) => {
                    tracing::debug!("keeping the throughput records in memory: {e}");
                    self.in_memory = true;
                }
            }
        }
    }

    fn spill_recent(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        static FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        if self.spill.is_none() {
            let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("llm-replay-{}-{n}.throughput", std::process::id()));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            self.spill = Some(Spill {
                path,
                file,
                records: 0,
            });
        }
        let mut bytes = Vec::with_capacity(self.recent.len() * Self::RECORD);
        for d in &self.recent {
            bytes.extend_from_slice(&d.at.to_le_bytes());
            bytes.extend_from_slice(&d.input_tokens.to_le_bytes());
            bytes.extend_from_slice(&d.output_tokens.to_le_bytes());
            bytes.extend_from_slice(&d.combo.to_le_bytes());
            bytes.push(u8::from(d.met));
        }
        if let Some(spill) = self.spill.as_mut() {
            spill.file.write_all(&bytes)?;
            spill.records += self.recent.len() as u64;
        }
        Ok(())
    }

    /// Calls `f` on every record, spilled ones first (in their order).
    fn for_each(&self, mut f: impl FnMut(&Done)) {
        if let Some(spill) = &self.spill
            && let Err(e) = Self::read_spill(spill, &mut f)
        {
            tracing::warn!(
                "reading back {}: {e}; throughputs leave out the requests it held",
                spill.path.display()
            );
        }
        self.recent.iter().for_each(f);
    }

    fn read_spill(spill: &Spill, f: &mut impl FnMut(&Done)) -> std::io::Result<()> {
        use std::io::Read;
        let mut reader = std::io::BufReader::new(std::fs::File::open(&spill.path)?);
        let mut rec = [0u8; Self::RECORD];
        for _ in 0..spill.records {
            reader.read_exact(&mut rec)?;
            let u32_at =
                |i: usize| u32::from_le_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]]);
            let mut at = [0u8; 8];
            at.copy_from_slice(&rec[..8]);
            f(&Done {
                at: i64::from_le_bytes(at),
                input_tokens: u32_at(8),
                output_tokens: u32_at(12),
                combo: u32_at(16),
                met: rec[20] != 0,
            });
        }
        Ok(())
    }

    /// Whether any record satisfies `p`.
    fn any(&self, mut p: impl FnMut(&Done) -> bool) -> bool {
        let mut found = false;
        self.for_each(|d| found = found || p(d));
        found
    }
}

impl Done {
    /// Adds it to request, input token, output token and met counts.
    fn add_to(&self, sums: &mut [f64; 4]) {
        sums[0] += 1.0;
        sums[1] += f64::from(self.input_tokens);
        sums[2] += f64::from(self.output_tokens);
        sums[3] += f64::from(u8::from(self.met));
    }
}

impl ClassAcc {
    fn new(id: u32) -> Self {
        Self {
            requests: 0,
            ok: 0,
            met: 0,
            input_tokens: 0,
            output_tokens: 0,
            ttft_sched: Metric::new(),
            tpot: Metric::new(),
            e2e_sched: Metric::new(),
            id,
        }
    }
}

/// Prompt tokens as the server counted them against those sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptTokens {
    /// Requests compared (ok, with usage).
    pub requests: u64,
    /// Tokens sent (the trace's, or in session replay the whole prompt's).
    pub sent: u64,
    /// Tokens the server counted.
    pub server: u64,
    /// `server / sent - 1`.
    pub difference: f64,
    /// Per request, server minus sent: median.
    pub per_request_p50: i64,
    /// Per request: 99th percentile.
    pub per_request_p99: i64,
    /// Set above [`PROMPT_TOKEN_WARNING`]: what the difference points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Above this relative difference the summary warns.
pub const PROMPT_TOKEN_WARNING: f64 = 0.02;

/// What per-request differences from `lo` to `hi` between the server's
/// prompt counts and those sent point to: a constant one is tokens the
/// server adds itself, a wandering one another tokenizer. Shared by the
/// summary and `--check-tokens`.
pub(crate) fn prompt_token_mismatch(lo: i64, hi: i64) -> String {
    if lo == hi {
        format!(
            "the server counts {lo:+} tokens on every request: tokens it adds itself (BOS, chat template), not a different tokenizer; the prompts' own counts match"
        )
    } else {
        format!(
            "the server's counts differ by {lo:+} to {hi:+} tokens per request: the prompts were counted with another tokenizer than the served model's; pass its tokenizer.json with --tokenizer"
        )
    }
}

impl PromptTokens {
    /// The comparison of `diffs` (server minus sent, per request: how
    /// many requests had each), `sent` and `server` tokens in all; `None`
    /// with nothing to compare.
    pub(crate) fn from_differences(
        diffs: &std::collections::BTreeMap<i64, u64>,
        sent: u64,
        server: u64,
    ) -> Option<Self> {
        let requests: u64 = diffs.values().sum();
        if requests == 0 || sent == 0 {
            return None;
        }
        let at = |q: f64| {
            let rank = ((requests as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            for (&d, &n) in diffs {
                seen += n;
                if seen >= rank {
                    return d;
                }
            }
            0
        };
        let difference = server as f64 / sent as f64 - 1.0;
        let (lo, hi) = (
            diffs.keys().next().copied().unwrap_or(0),
            diffs.keys().next_back().copied().unwrap_or(0),
        );
        let warning =
            (difference.abs() > PROMPT_TOKEN_WARNING).then(|| prompt_token_mismatch(lo, hi));
        Some(Self {
            requests,
            sent,
            server,
            difference,
            per_request_p50: at(0.5),
            per_request_p99: at(0.99),
            warning,
        })
    }
}

/// Requests held in the client because every connection (or in-flight
/// slot) was busy: the server's backpressure, counted in their latency
/// from the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    /// How many waited.
    pub requests: u64,
    /// How long (their `queue_wait_us`).
    pub wait: Percentiles,
}

/// One stage of a `--stages` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    /// 0-based, as in the `stage` column.
    pub stage: u32,
    /// The stage's load as given (`10/s`, `8 users`).
    pub load: String,
    /// Its length in seconds.
    pub duration_s: f64,
    /// Rows scheduled in it.
    pub requests: u64,
    /// Of those, sent.
    pub sent: u64,
    /// Of those, ok.
    pub ok: u64,
    /// Rows scheduled per second of the stage.
    pub scheduled_rate: f64,
    /// Requests sent per second of the stage.
    pub achieved_rate: f64,
    /// Ok requests per second of the stage.
    pub request_throughput: f64,
    /// TTFT of ok requests, from the schedule.
    pub ttft_from_schedule: Percentiles,
    /// E2E of ok requests, from the schedule.
    pub e2e_from_schedule: Percentiles,
}

/// How a session replay went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SessionSummary {
    /// Sessions with at least one row.
    pub sessions: u64,
    /// Rows that belong to a session.
    pub turns: u64,
    /// Per session, how much later than recorded its last turn left
    /// (`sent_at - recorded_at` of the last turn sent).
    pub stretch: Percentiles,
    /// Share of turns that left more than 1 ms after their recorded time.
    pub late_turn_share: f64,
    /// Turns whose prompt had another length than the trace's
    /// `input_tokens` (the server answered otherwise than recorded).
    pub prompt_drift_turns: u64,
    /// Mean of `prompt_tokens_sent - input_tokens` over turns sent.
    pub prompt_drift_mean_tokens: f64,
    /// TTFT from the schedule by turn index (`0`, `1`, `2`, `3`, `4+`).
    pub ttft_by_turn: Vec<TurnLatency>,
    /// TTFT (from the schedule) of ok later turns by the share of their
    /// prompt that repeated the conversation: `0-25%`, `25-50%`, `50-75%`,
    /// `75-100%` (what a prefix cache could serve).
    #[serde(default)]
    pub ttft_by_history_share: Vec<ShareLatency>,
}

/// TTFT of the later turns whose prompt repeated the conversation by a
/// share in one range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ShareLatency {
    /// `0-25%`, `25-50%`, `50-75%` or `75-100%`.
    pub history_share: String,
    /// TTFT from the schedule of its ok rows.
    pub ttft: Percentiles,
}

/// TTFT of the turns at one index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TurnLatency {
    /// `0`, `1`, ... or `4+`.
    pub turn: String,
    /// TTFT from the schedule of its ok rows.
    pub ttft: Percentiles,
}

/// The first error of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstError {
    /// The outcome (`http_error`, `timeout`, ...).
    pub outcome: String,
    /// The HTTP status, when a response arrived.
    pub status_code: Option<i32>,
    /// How many rows had this outcome and status.
    pub count: u64,
    /// The first row's error text (the server's message for HTTP errors).
    pub error: String,
}

impl Summary {
    /// Requests that did not succeed.
    pub fn failed(&self) -> u64 {
        self.requests - self.outcomes.get("ok").copied().unwrap_or(0)
    }

    /// The share of requests that did not succeed (0 with no requests).
    pub fn failure_share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failed() as f64 / self.requests as f64
        }
    }
}

/// CPU and memory the llm-replay process used during a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct ClientUsage {
    /// User + system CPU seconds of the client during the run: the whole
    /// process, less the embedded simulator's threads when it ran one.
    pub cpu_s: f64,
    /// CPU microseconds per scheduled request (of `cpu_s`).
    pub cpu_us_per_request: f64,
    /// Peak resident memory of the process (MiB), the embedded simulator's
    /// included.
    pub peak_rss_mib: f64,
    /// CPU seconds of the embedded simulator's threads (not in `cpu_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulator_cpu_s: Option<f64>,
}

impl ClientUsage {
    /// Process CPU seconds so far (user + system), from `/proc/self/stat`;
    /// `None` off Linux.
    pub fn cpu_now() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line: 11 and 12 here.
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        // /proc reports USER_HZ ticks, 100 per second on Linux.
        Some(ticks / 100.0)
    }

    /// CPU seconds so far (user + system) of this process's threads whose
    /// names start with `prefix` (the embedded simulator's), from
    /// `/proc/self/task`; `None` off Linux or with no such thread.
    pub fn threads_cpu_now(prefix: &str) -> Option<f64> {
        let mut ticks = 0.0;
        let mut found = false;
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            if !stat[open + 1..close].starts_with(prefix) {
                continue;
            }
            let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            if let (Some(u), Some(s)) = (f.get(11), f.get(12))
                && let (Ok(u), Ok(s)) = (u.parse::<f64>(), s.parse::<f64>())
            {
                ticks += u + s;
                found = true;
            }
        }
        found.then_some(ticks / 100.0)
    }

    /// Peak resident memory (MiB), from `/proc/self/status`.
    pub fn peak_rss_mib() -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

/// Share of requests meeting an SLO, failures counted as misses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    /// The objectives.
    pub slo: Slo,
    /// Requests that met them.
    pub met: u64,
    /// Requests counted (every outcome).
    pub total: u64,
    /// `met / total`.
    pub fraction: f64,
    /// Requests meeting the SLO per second.
    pub rate: f64,
}

/// Thresholds that decide whether the generator was the bottleneck.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FidelityLimits {
    /// Allowed relative rate error (default 1%).
    pub max_rate_error: f64,
    /// Allowed p99 send lag in ms (default 10 ms).
    pub max_p99_lag_ms: f64,
    /// Percentiles reported besides p50, p90 and p99 (`--percentiles`);
    /// carried with the limits so that every path that builds a summary
    /// (live run, sweep step, report) reports the same ones.
    pub quantiles: Quantiles,
}

impl Default for FidelityLimits {
    fn default() -> Self {
        Self {
            max_rate_error: 0.01,
            max_p99_lag_ms: 10.0,
            quantiles: Quantiles::default(),
        }
    }
}

/// Builds a [`Summary`] from rows fed one at a time (memory independent of
/// the number of rows).
pub struct SummaryBuilder {
    slo: Option<Slo>,
    limits: FidelityLimits,
    target_rate: Option<f64>,
    only_steady: bool,
    outcomes: BTreeMap<String, u64>,
    requests: u64,
    met: u64,
    ok_output_tokens: u64,
    ok_input_tokens: u64,
    ok: u64,
    first_scheduled: Option<i64>,
    last_scheduled: Option<i64>,
    first_sent: Option<i64>,
    last_sent: Option<i64>,
    sent: u64,
    last_done: Option<i64>,
    /// Successes, for the throughput window.
    done: DoneLog,
    send_lag: Metric,
    /// Send lag minus the wait for a connection or slot: the generator's
    /// own lateness.
    own_lag: Metric,
    /// Rows that waited for a connection or `--max-in-flight` slot.
    queued: u64,
    /// Rows sent later than the lag limit, and of those the ones that
    /// waited for a connection or slot: whether the run's own cap explains
    /// the lateness or the generator does.
    late: u64,
    late_queued: u64,
    queue_wait: Metric,
    ttft: Metric,
    ttft_sched: Metric,
    itl: Metric,
    tpot: Metric,
    e2e: Metric,
    e2e_sched: Metric,
    first_errors: Vec<FirstError>,
    sessions: SessionAcc,
    closed_loop_users: Option<u64>,
    stages: Vec<StageAcc>,
    /// Server minus sent prompt tokens of ok requests with usage, by value.
    prompt_token_diffs: std::collections::BTreeMap<i64, u64>,
    prompt_tokens_sent: u64,
    prompt_tokens_server: u64,
    /// Columns asked for with `--by` (always shown).
    by: Vec<ClassColumn>,
    /// Per column, per value.
    classes: BTreeMap<ClassColumn, BTreeMap<String, ClassAcc>>,
    /// Each distinct combination of class values seen, as the values' ids
    /// in the order of [`class_columns`], with its index.
    combos: std::collections::HashMap<Vec<u32>, u32>,
}

/// One stage's figures being gathered.
struct StageAcc {
    load: String,
    duration_s: f64,
    requests: u64,
    sent: u64,
    ok: u64,
    ttft_sched: Metric,
    e2e_sched: Metric,
}

/// Session figures being gathered.
#[derive(Default)]
struct SessionAcc {
    turns: u64,
    late: u64,
    timed: u64,
    /// Later turns (index > 0) with a recorded time.
    timed_later: u64,
    drift_turns: u64,
    drift_sum: i64,
    drift_n: u64,
    /// Per session: the highest turn sent so far and its stretch (µs).
    last: std::collections::HashMap<String, (i32, Option<i64>)>,
    ttft_by_turn: [Option<Metric>; 5],
    ttft_by_share: [Option<Metric>; 4],
}

/// Kinds of error kept with their first message; more are only counted
/// under their outcome.
const MAX_ERROR_KINDS: usize = 16;

impl SummaryBuilder {
    /// A builder; `target_rate` is the configured rate when the schedule
    /// had one (otherwise it is derived from the scheduled times).
    /// `only_steady` skips warm-up and cool-down rows.
    pub fn new(
        slo: Option<Slo>,
        limits: FidelityLimits,
        target_rate: Option<f64>,
        only_steady: bool,
    ) -> Self {
        Self {
            slo,
            limits,
            target_rate,
            only_steady,
            outcomes: BTreeMap::new(),
            requests: 0,
            met: 0,
            ok_output_tokens: 0,
            ok_input_tokens: 0,
            ok: 0,
            first_scheduled: None,
            last_scheduled: None,
            first_sent: None,
            last_sent: None,
            sent: 0,
            last_done: None,
            done: DoneLog::default(),
            send_lag: Metric::new(),
            own_lag: Metric::new(),
            queued: 0,
            late: 0,
            late_queued: 0,
            queue_wait: Metric::new(),
            ttft: Metric::new(),
            ttft_sched: Metric::new(),
            itl: Metric::new(),
            tpot: Metric::new(),
            e2e: Metric::new(),
            e2e_sched: Metric::new(),
            first_errors: Vec::new(),
            sessions: SessionAcc::default(),
            closed_loop_users: None,
            stages: Vec::new(),
            prompt_token_diffs: std::collections::BTreeMap::new(),
            prompt_tokens_sent: 0,
            prompt_tokens_server: 0,
            by: Vec::new(),
            classes: BTreeMap::new(),
            combos: std::collections::HashMap::new(),
        }
    }

    /// Breaks the figures down by `columns` too (`--by`), besides the
    /// automatic ones.
    pub fn by(mut self, columns: &[ClassColumn]) -> Self {
        self.by = columns.to_vec();
        self
    }

    /// Counts `row` in its class of each column; returns the index of its
    /// combination of classes, which its [`Done`] carries.
    fn note_class(&mut self, row: &ResultRow, met: bool) -> u32 {
        let mut ids = Vec::with_capacity(ClassColumn::AUTOMATIC.len() + self.by.len());
        for column in class_columns(&self.by) {
            let values = self.classes.entry(column).or_default();
            let mut value = column.value(row).unwrap_or_else(|| "(null)".to_owned());
            if !values.contains_key(&value) && values.len() >= MAX_CLASS_VALUES {
                value = "(other)".to_owned();
            }
            let next = u32::try_from(values.len()).unwrap_or(u32::MAX);
            let acc = values.entry(value).or_insert_with(|| ClassAcc::new(next));
            ids.push(acc.id);
            acc.requests += 1;
            acc.met += u64::from(met);
            if !row.is_ok() {
                continue;
            }
            acc.ok += 1;
            let (input, output) = row_tokens(row);
            acc.input_tokens += input;
            acc.output_tokens += output;
            if let Some(v) = row.ttft_from_schedule_us() {
                acc.ttft_sched.record(v as f64);
            }
            if let Some(v) = row.tpot_us() {
                acc.tpot.record(v);
            }
            if let Some(v) = row.e2e_from_schedule_us() {
                acc.e2e_sched.record(v as f64);
            }
        }
        let n = u32::try_from(self.combos.len()).unwrap_or(u32::MAX);
        *self.combos.entry(ids).or_insert(n)
    }

    fn class_summaries(&self, window: Option<Window>, duration_s: f64) -> Vec<ClassSummary> {
        // Each class's completions in the window, in one pass over them:
        // sums[column][value id].
        let columns: Vec<ClassColumn> = class_columns(&self.by).collect();
        let mut by_combo = vec![Vec::new(); self.combos.len()];
        for (ids, &n) in &self.combos {
            if let Some(slot) = by_combo.get_mut(n as usize) {
                *slot = ids.clone();
            }
        }
        let mut sums: Vec<Vec<[f64; 4]>> = columns
            .iter()
            .map(|c| vec![[0.0; 4]; self.classes.get(c).map_or(0, BTreeMap::len)])
            .collect();
        let span = window.map_or(duration_s, |w| w.seconds());
        self.done.for_each(|d| {
            if !window.is_none_or(|w| w.holds(d.at)) {
                return;
            }
            let Some(ids) = by_combo.get(d.combo as usize) else {
                return;
            };
            for (column, &id) in sums.iter_mut().zip(ids) {
                if let Some(s) = column.get_mut(id as usize) {
                    d.add_to(s);
                }
            }
        });
        let mut out = Vec::new();
        for (column, values) in &self.classes {
            if values.len() < 2 && !self.by.contains(column) {
                continue;
            }
            let at = columns.iter().position(|c| c == column);
            for (value, a) in values {
                let counted = at
                    .and_then(|i| sums.get(i))
                    .and_then(|v| v.get(a.id as usize))
                    .copied()
                    .unwrap_or_default();
                let [requests, input, output, _] = if span > 0.0 {
                    counted.map(|v| v / span)
                } else {
                    [0.0; 4]
                };
                out.push(ClassSummary {
                    column: column.name().to_owned(),
                    value: value.clone(),
                    requests: a.requests,
                    ok: a.ok,
                    errors: a.requests - a.ok,
                    request_throughput: requests,
                    input_token_throughput: input,
                    output_token_throughput: output,
                    ttft_from_schedule: a.ttft_sched.percentiles(&self.limits.quantiles),
                    tpot: a.tpot.percentiles(&self.limits.quantiles),
                    e2e_from_schedule: a.e2e_sched.percentiles(&self.limits.quantiles),
                    goodput: self.slo.map(|_| {
                        if a.requests > 0 {
                            a.met as f64 / a.requests as f64
                        } else {
                            0.0
                        }
                    }),
                });
            }
        }
        out
    }

    /// Gathers figures per stage of `stages`, by the rows' `stage`.
    pub fn stages(mut self, stages: Option<&Stages>) -> Self {
        self.stages = stages
            .map(|st| {
                st.stages
                    .iter()
                    .map(|s| StageAcc {
                        load: s.load.to_string(),
                        duration_s: s.duration_ns as f64 / 1e9,
                        requests: 0,
                        sent: 0,
                        ok: 0,
                        ttft_sched: Metric::new(),
                        e2e_sched: Metric::new(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        self
    }

    /// Marks the run as closed loop with `users` virtual users.
    pub fn closed_loop(mut self, users: Option<u64>) -> Self {
        self.closed_loop_users = users;
        self
    }

    /// Counts one row.
    pub fn add(&mut self, row: &ResultRow) {
        if self.only_steady && row.phase != Phase::Steady {
            return;
        }
        self.requests += 1;
        *self
            .outcomes
            .entry(row.outcome.as_str().to_owned())
            .or_insert(0) += 1;
        let min = |a: Option<i64>, b: i64| Some(a.map_or(b, |a| a.min(b)));
        let max = |a: Option<i64>, b: i64| Some(a.map_or(b, |a| a.max(b)));
        self.first_scheduled = min(self.first_scheduled, row.scheduled_at_us);
        self.last_scheduled = max(self.last_scheduled, row.scheduled_at_us);
        if let Some(sent) = row.sent_at_us {
            self.sent += 1;
            self.first_sent = min(self.first_sent, sent);
            self.last_sent = max(self.last_sent, sent);
        }
        if let Some(done) = row.completed_at_us {
            self.last_done = max(self.last_done, done);
        }
        if let Some(lag) = row.send_lag_us {
            self.send_lag.record(lag as f64);
            let wait = row.queue_wait_us.unwrap_or(0);
            self.own_lag.record((lag - wait) as f64);
            if lag as f64 > self.limits.max_p99_lag_ms * 1e3 {
                self.late += 1;
                self.late_queued += u64::from(wait > 0);
            }
            if wait > 0 {
                self.queued += 1;
                self.queue_wait.record(wait as f64);
            }
        }
        let met = self.slo.as_ref().is_some_and(|slo| slo.met_by(row));
        self.met += u64::from(met);
        let combo = self.note_class(row, met);
        self.note_session(row);
        self.note_stage(row);
        if !row.is_ok() {
            self.note_error(row);
            return;
        }
        self.ok += 1;
        let (input, output) = row_tokens(row);
        self.ok_output_tokens += output;
        self.ok_input_tokens += input;
        if let Some(at) = row.completed_at_us {
            self.done.push(Done {
                at,
                input_tokens: u32::try_from(input).unwrap_or(u32::MAX),
                output_tokens: u32::try_from(output).unwrap_or(u32::MAX),
                combo,
                met,
            });
        }

        if let Some(server) = row.usage_prompt_tokens {
            let sent = row.prompt_tokens_sent.unwrap_or(row.input_tokens);
            *self
                .prompt_token_diffs
                .entry(i64::from(server) - i64::from(sent))
                .or_default() += 1;
            self.prompt_tokens_sent += u64::try_from(sent).unwrap_or(0);
            self.prompt_tokens_server += u64::try_from(server).unwrap_or(0);
        }
        let rec = |m: &mut Metric, v: Option<i64>| {
            if let Some(v) = v {
                m.record(v as f64);
            }
        };
        rec(&mut self.ttft, row.ttft_us);
        rec(&mut self.ttft_sched, row.ttft_from_schedule_us());
        rec(&mut self.e2e, row.e2e_us);
        rec(&mut self.e2e_sched, row.e2e_from_schedule_us());
        if let Some(t) = row.tpot_us() {
            self.tpot.record(t);
        }
        for &gap in &row.itl_us {
            self.itl.record(gap as f64);
        }
    }

    fn note_stage(&mut self, row: &ResultRow) {
        let Some(acc) = row
            .stage
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| self.stages.get_mut(s))
        else {
            return;
        };
        acc.requests += 1;
        acc.sent += u64::from(row.sent_at_us.is_some());
        if row.is_ok() {
            acc.ok += 1;
            if let Some(v) = row.ttft_from_schedule_us() {
                acc.ttft_sched.record(v as f64);
            }
            if let Some(v) = row.e2e_from_schedule_us() {
                acc.e2e_sched.record(v as f64);
            }
        }
    }

    fn note_session(&mut self, row: &ResultRow) {
        let (Some(session), Some(turn)) = (&row.session_id, row.turn_index) else {
            return;
        };
        let acc = &mut self.sessions;
        acc.turns += 1;
        let stretch = match (row.sent_at_us, row.recorded_at_us) {
            (Some(sent), Some(rec)) => {
                acc.timed += 1;
                if turn > 0 {
                    acc.timed_later += 1;
                }
                if sent - rec > 1_000 {
                    acc.late += 1;
                }
                Some(sent - rec)
            }
            _ => None,
        };
        if let Some(sent) = row.prompt_tokens_sent {
            let d = i64::from(sent) - i64::from(row.input_tokens);
            acc.drift_n += 1;
            acc.drift_sum += d;
            if d != 0 {
                acc.drift_turns += 1;
            }
        }
        let e = acc.last.entry(session.clone()).or_insert((turn, stretch));
        if turn >= e.0 && row.sent_at_us.is_some() {
            *e = (turn, stretch);
        }
        if row.is_ok()
            && let Some(v) = row.ttft_from_schedule_us()
        {
            let at = usize::try_from(turn).unwrap_or(0).min(4);
            acc.ttft_by_turn[at]
                .get_or_insert_with(Metric::new)
                .record(v as f64);
            if let (true, Some(history), Some(sent)) =
                (turn > 0, row.history_tokens, row.prompt_tokens_sent)
                && sent > 0
            {
                let quarter = (f64::from(history) / f64::from(sent) * 4.0) as usize;
                acc.ttft_by_share[quarter.min(3)]
                    .get_or_insert_with(Metric::new)
                    .record(v as f64);
            }
        }
    }

    fn session_summary(&self) -> Option<SessionSummary> {
        let acc = &self.sessions;
        if acc.turns == 0 {
            return None;
        }
        // Without recorded times inside sessions (a rate schedule of a
        // trace without times) there is nothing to stretch.
        let mut stretch = Metric::new();
        if acc.timed_later > 0 {
            for (_, s) in acc.last.values() {
                if let Some(s) = s {
                    stretch.record(*s as f64);
                }
            }
        }
        Some(SessionSummary {
            sessions: acc.last.len() as u64,
            turns: acc.turns,
            stretch: stretch.percentiles(&self.limits.quantiles),
            late_turn_share: if acc.timed > 0 {
                acc.late as f64 / acc.timed as f64
            } else {
                0.0
            },
            prompt_drift_turns: acc.drift_turns,
            prompt_drift_mean_tokens: if acc.drift_n > 0 {
                acc.drift_sum as f64 / acc.drift_n as f64
            } else {
                0.0
            },
            ttft_by_turn: acc
                .ttft_by_turn
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    m.as_ref().map(|m| TurnLatency {
                        turn: if i == 4 { "4+".into() } else { i.to_string() },
                        ttft: m.percentiles(&self.limits.quantiles),
                    })
                })
                .collect(),
            ttft_by_history_share: acc
                .ttft_by_share
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    m.as_ref().map(|m| ShareLatency {
                        history_share: format!("{}-{}%", i * 25, i * 25 + 25),
                        ttft: m.percentiles(&self.limits.quantiles),
                    })
                })
                .collect(),
        })
    }

    fn note_error(&mut self, row: &ResultRow) {
        let outcome = row.outcome.as_str();
        if let Some(e) = self
            .first_errors
            .iter_mut()
            .find(|e| e.outcome == outcome && e.status_code == row.status_code)
        {
            e.count += 1;
        } else if self.first_errors.len() < MAX_ERROR_KINDS {
            self.first_errors.push(FirstError {
                outcome: outcome.to_owned(),
                status_code: row.status_code,
                count: 1,
                error: row.error.clone().unwrap_or_default(),
            });
        }
    }

    /// The summary of the rows so far.
    pub fn finish(&self) -> Summary {
        let span_s = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
            _ => 0.0,
        };
        let sched_span = span_s(self.first_scheduled, self.last_scheduled);
        let sent_span = span_s(self.first_sent, self.last_sent);
        // N requests over a span have N-1 gaps between them.
        let rate = |n: u64, span: f64| {
            if n > 1 && span > 0.0 {
                (n - 1) as f64 / span
            } else {
                0.0
            }
        };
        let scheduled_rate = rate(self.requests, sched_span);
        let target_rate = self.target_rate.unwrap_or(scheduled_rate);
        let achieved_rate = rate(self.sent, sent_span);
        // Judged against the schedule drawn, not the nominal rate: a Poisson
        // schedule of 30 requests is rarely exactly at its target.
        let rate_error = if scheduled_rate > 0.0 && self.sent == self.requests {
            achieved_rate / scheduled_rate - 1.0
        } else {
            0.0
        };
        let send_lag = self.send_lag.percentiles(&self.limits.quantiles);
        let not_sent = self.requests - self.sent;
        let mut problems = Vec::new();
        // Requests waiting for the run's own cap (a connection, a
        // --max-in-flight slot) explain the lateness when at least half of
        // the late requests waited; a few that did, among many that were
        // late on their own, do not (a generator short of CPU).
        let cap_explains = self.queued > 0 && self.late_queued * 2 >= self.late;
        // A send rate short of the schedule because requests waited for a
        // connection is the server's doing (the lag check below still
        // catches a generator that is late as well).
        if self.sent > 1 && rate_error.abs() > self.limits.max_rate_error && !cap_explains {
            problems.push(format!(
                "achieved {achieved_rate:.2} req/s against a schedule of {scheduled_rate:.2} ({:+.1}%)",
                rate_error * 100.0
            ));
        }
        // Waiting for a connection or a --max-in-flight slot is the server
        // holding requests, not the generator being late.
        let own_lag = self.own_lag.percentiles(&self.limits.quantiles);
        let rate_kept = problems.is_empty();
        if own_lag.p99_ms > self.limits.max_p99_lag_ms {
            problems.push(format!(
                "p99 send lag {:.2} ms is above {:.2} ms",
                own_lag.p99_ms, self.limits.max_p99_lag_ms
            ));
        }
        // With the rate kept, lag of requests that waited for the run's
        // own cap (--max-in-flight, --max-connections) is that cap's doing:
        // the generator sent every request as soon as the cap let it.
        let capped_lag = rate_kept
            && cap_explains
            && !problems.is_empty()
            && send_lag.p99_ms > self.limits.max_p99_lag_ms;
        let queued = self.outcomes.get("dropped").copied().unwrap_or(0);
        let generator_bottleneck = !problems.is_empty() && !capped_lag;
        let verdict = if capped_lag {
            format!(
                "the generator kept the rate (achieved {achieved_rate:.2} req/s, {:+.2}% against the schedule); the send lag (p99 {:.2} ms) came from {} requests waiting for a slot under this run's own --max-in-flight or --max-connections cap, not from the load generator: raise the cap to offer the load as scheduled",
                rate_error * 100.0,
                send_lag.p99_ms,
                self.queued
            )
        } else if generator_bottleneck {
            format!(
                "the load generator, not the server, was the bottleneck: {}. Latencies are still measured from the schedule, but the offered load was not what was asked.",
                problems.join("; ")
            )
        } else if not_sent > 0 {
            format!(
                "schedule kept; {not_sent} requests were not sent ({queued} dropped by --max-in-flight, the rest cancelled)"
            )
        } else if self.queued > 0 && rate_error.abs() > self.limits.max_rate_error {
            format!(
                "this run's own --max-in-flight or --max-connections cap held the load sent to {achieved_rate:.2} req/s against a schedule of {scheduled_rate:.2} ({:+.1}%): {} requests waited for a slot while the server held every one busy, so the load offered was not what was asked (not the load generator's doing); raise the cap to offer it",
                rate_error * 100.0,
                self.queued
            )
        } else if self.queued > 0 {
            format!(
                "the generator kept the schedule; {} requests then waited for a free slot under this run's --max-in-flight or --max-connections cap while the server held every one busy",
                self.queued
            )
        } else {
            "schedule kept: every request left on time".to_owned()
        };
        let duration_s = span_s(self.first_scheduled, self.last_done.max(self.last_sent));
        // The steady window shifted by the median E2E, when something
        // completed in it (else the whole run: a burst scheduled at once).
        let shift_us = self.e2e.percentiles(&Quantiles::default()).p50_ms * 1e3;
        let window = match (self.first_scheduled, self.last_scheduled) {
            (Some(start), Some(end)) if end > start => Some(Window {
                start: start as f64 + shift_us,
                end: end as f64 + shift_us,
            })
            .filter(|w| self.done.any(|d| w.holds(d.at))),
            _ => None,
        };
        let [
            request_throughput,
            input_token_throughput,
            output_token_throughput,
            met_rate,
        ] = Window::rates(window, duration_s, &self.done);
        Summary {
            requests: self.requests,
            outcomes: self.outcomes.clone(),
            duration_s,
            fidelity: Fidelity {
                target_rate,
                scheduled_rate,
                achieved_rate,
                rate_error,
                send_lag,
                generator_bottleneck,
                verdict,
            },
            request_throughput,
            output_token_throughput,
            input_token_throughput,
            window_s: window.map_or(duration_s, |w| w.seconds()),
            throughput_window: if window.is_some() { "steady" } else { "run" }.to_owned(),
            ttft: self.ttft.percentiles(&self.limits.quantiles),
            ttft_from_schedule: self.ttft_sched.percentiles(&self.limits.quantiles),
            itl: self.itl.percentiles(&self.limits.quantiles),
            tpot: self.tpot.percentiles(&self.limits.quantiles),
            e2e: self.e2e.percentiles(&self.limits.quantiles),
            e2e_from_schedule: self.e2e_sched.percentiles(&self.limits.quantiles),
            goodput: self.slo.map(|slo| Goodput {
                slo,
                met: self.met,
                total: self.requests,
                fraction: if self.requests > 0 {
                    self.met as f64 / self.requests as f64
                } else {
                    0.0
                },
                rate: met_rate,
            }),
            client: None,
            first_errors: self.first_errors.clone(),
            not_reached: 0,
            not_reached_exact: true,
            stopped_by: None,
            sessions: self.session_summary(),
            closed_loop_users: self.closed_loop_users,
            queued: (self.queued > 0).then(|| Queued {
                requests: self.queued,
                wait: self.queue_wait.percentiles(&self.limits.quantiles),
            }),
            prompt_tokens: PromptTokens::from_differences(
                &self.prompt_token_diffs,
                self.prompt_tokens_sent,
                self.prompt_tokens_server,
            ),
            stages: self
                .stages
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let per_s = |n: u64| n as f64 / a.duration_s;
                    StageSummary {
                        stage: u32::try_from(i).unwrap_or(u32::MAX),
                        load: a.load.clone(),
                        duration_s: a.duration_s,
                        requests: a.requests,
                        sent: a.sent,
                        ok: a.ok,
                        scheduled_rate: per_s(a.requests),
                        achieved_rate: per_s(a.sent),
                        request_throughput: per_s(a.ok),
                        ttft_from_schedule: a.ttft_sched.percentiles(&self.limits.quantiles),
                        e2e_from_schedule: a.e2e_sched.percentiles(&self.limits.quantiles),
                    }
                })
                .collect(),
            classes: self.class_summaries(window, duration_s),
        }
    }
}

/// Input and output tokens of a row, the server's usage where it gave one.
fn row_tokens(row: &ResultRow) -> (u64, u64) {
    (
        u64::try_from(row.usage_prompt_tokens.unwrap_or(row.input_tokens)).unwrap_or(0),
        u64::try_from(row.usage_completion_tokens.unwrap_or(row.output_tokens)).unwrap_or(0),
    )
}

/// Summarises rows in one call.
pub fn summarize<'a>(
    rows: impl IntoIterator<Item = &'a ResultRow>,
    slo: Option<Slo>,
    target_rate: Option<f64>,
) -> Summary {
    summarize_stages(rows, slo, target_rate, None, &[])
}

/// Summarises rows in one call, with a line per stage of `stages`, broken
/// down by `by` too.
pub fn summarize_stages<'a>(
    rows: impl IntoIterator<Item = &'a ResultRow>,
    slo: Option<Slo>,
    target_rate: Option<f64>,
    stages: Option<&Stages>,
    by: &[ClassColumn],
) -> Summary {
    summarize_with(
        rows,
        slo,
        target_rate,
        stages,
        by,
        FidelityLimits::default(),
    )
}

/// [`summarize_stages`] under `limits` (and its extra percentiles).
pub fn summarize_with<'a>(
    rows: impl IntoIterator<Item = &'a ResultRow>,
    slo: Option<Slo>,
    target_rate: Option<f64>,
    stages: Option<&Stages>,
    by: &[ClassColumn],
    limits: FidelityLimits,
) -> Summary {
    let mut b = SummaryBuilder::new(slo, limits, target_rate, true)
        .stages(stages)
        .by(by);
    let mut any_steady = false;
    let rows: Vec<&ResultRow> = rows.into_iter().collect();
    for r in &rows {
        any_steady |= r.phase == Phase::Steady;
    }
    if !any_steady {
        b.only_steady = false;
    }
    for r in rows {
        b.add(r);
    }
    b.finish()
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fi = &self.fidelity;
        writeln!(
            f,
            "requests      {:>10}   duration {:.1} s",
            self.requests, self.duration_s
        )?;
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "outcomes      {}", outcomes.join(", "))?;
        if let Some(users) = self.closed_loop_users {
            writeln!(
                f,
                "load          closed loop, {users} users back to back: latencies are from the send, and the load waited for the server (--rate or recorded times give open-loop load)"
            )?;
        }
        if let Some(why) = &self.stopped_by {
            writeln!(
                f,
                "stopped       by {why}: {}{} later requests of the schedule were never sent (not rows)",
                if self.not_reached_exact { "" } else { "about " },
                self.not_reached
            )?;
        }
        for e in &self.first_errors {
            let status = e.status_code.map(|s| format!(" {s}")).unwrap_or_default();
            writeln!(
                f,
                "error         {}{status} x{}: {}",
                e.outcome,
                e.count,
                if e.error.is_empty() {
                    "(no message)"
                } else {
                    &e.error
                }
            )?;
        }
        let ok = self.outcomes.get("ok").copied().unwrap_or(0);
        if self.requests > 0 && ok == 0 {
            writeln!(
                f,
                "result        every request failed: no latency or throughput to report"
            )?;
            return writeln!(f, "fidelity      {}", fi.verdict);
        }
        writeln!(
            f,
            "rate          target {:.2} req/s, scheduled {:.2} req/s, achieved {:.2} req/s ({:+.2}%)",
            fi.target_rate,
            fi.scheduled_rate,
            fi.achieved_rate,
            fi.rate_error * 100.0
        )?;
        writeln!(
            f,
            "send lag      p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            fi.send_lag.p50_ms, fi.send_lag.p99_ms, fi.send_lag.max_ms
        )?;
        if let Some(q) = &self.queued {
            writeln!(
                f,
                "queued        {} requests waited in the client for a connection or slot (p50 {:.1} ms, p99 {:.1} ms) under this run's --max-in-flight or --max-connections cap: the server held every one busy, so this is server-side backpressure, part of their latency from the schedule",
                q.requests, q.wait.p50_ms, q.wait.p99_ms
            )?;
        }
        if let Some(p) = &self.prompt_tokens {
            writeln!(
                f,
                "prompt tokens the server counted {} for {} sent ({:+.1}%; per request p50 {:+}, p99 {:+})",
                p.server,
                p.sent,
                p.difference * 100.0,
                p.per_request_p50,
                p.per_request_p99
            )?;
            if let Some(w) = &p.warning {
                writeln!(f, "warning       {w}")?;
            }
        }
        writeln!(
            f,
            "throughput    {:.2} req/s, {:.1} output tok/s, {:.1} input tok/s ({})",
            self.request_throughput,
            self.output_token_throughput,
            self.input_token_throughput,
            if self.throughput_window == "run" {
                format!(
                    "over the whole run, {:.1} s: nothing completed before the last send",
                    self.window_s
                )
            } else {
                format!(
                    "completed in the steady window: the {:.1} s from the first to the last scheduled send, a median E2E later",
                    self.window_s
                )
            }
        )?;
        // Percentiles asked for besides p50/p90/p99, as extra columns.
        let extra: Vec<&String> = self
            .ttft_from_schedule
            .percentiles
            .keys()
            .chain(self.e2e.percentiles.keys())
            .filter(|k| !["p50", "p90", "p99"].contains(&k.as_str()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        write!(
            f,
            "{:<26}{:>10}{:>10}{:>10}{:>10}",
            "latency (ms)", "mean", "p50", "p90", "p99"
        )?;
        for k in &extra {
            write!(f, "{k:>10}")?;
        }
        writeln!(f, "{:>10}", "max")?;
        let rows = [
            ("TTFT (from schedule)", &self.ttft_from_schedule),
            ("TTFT (from send)", &self.ttft),
            ("TPOT", &self.tpot),
            ("ITL", &self.itl),
            ("E2E (from schedule)", &self.e2e_from_schedule),
            ("E2E (from send)", &self.e2e),
        ];
        for (name, p) in rows {
            // Embeddings have no first token and no stream: no such rows.
            if p.count == 0 && self.e2e.count > 0 {
                continue;
            }
            write!(
                f,
                "{name:<26}{:>10.2}{:>10.2}{:>10.2}{:>10.2}",
                p.mean_ms, p.p50_ms, p.p90_ms, p.p99_ms
            )?;
            for k in &extra {
                match p.percentiles.get(k.as_str()) {
                    Some(v) => write!(f, "{v:>10.2}")?,
                    None => write!(f, "{:>10}", "-")?,
                }
            }
            writeln!(f, "{:>10.2}", p.max_ms)?;
        }
        if let Some(c) = &self.client {
            write!(
                f,
                "client        {:.2} CPU s ({:.1} µs per request), peak memory {:.0} MiB",
                c.cpu_s, c.cpu_us_per_request, c.peak_rss_mib
            )?;
            match c.simulator_cpu_s {
                Some(sim) => writeln!(
                    f,
                    " (the embedded simulator's {sim:.2} CPU s not counted; its memory is)"
                )?,
                None => writeln!(f)?,
            }
        }
        if let Some(ss) = &self.sessions {
            if ss.stretch.count > 0 {
                writeln!(
                    f,
                    "sessions      {} sessions, {} turns; stretch of the last turn p50 {:.1} ms, p99 {:.1} ms; {:.1}% of turns left later than recorded",
                    ss.sessions,
                    ss.turns,
                    ss.stretch.p50_ms,
                    ss.stretch.p99_ms,
                    ss.late_turn_share * 100.0
                )?;
            } else {
                writeln!(
                    f,
                    "sessions      {} sessions, {} turns (no recorded times inside sessions: later turns follow think times)",
                    ss.sessions, ss.turns
                )?;
            }
            if ss.prompt_drift_turns > 0 {
                writeln!(
                    f,
                    "history       {} turns had another prompt length than the trace (mean {:+.1} tokens): the server answered otherwise than recorded",
                    ss.prompt_drift_turns, ss.prompt_drift_mean_tokens
                )?;
            }
            let by_turn: Vec<String> = ss
                .ttft_by_turn
                .iter()
                .map(|t| format!("{}: {:.1}/{:.1}", t.turn, t.ttft.p50_ms, t.ttft.p99_ms))
                .collect();
            if !by_turn.is_empty() {
                writeln!(
                    f,
                    "TTFT by turn  (from schedule, p50/p99 ms) {}",
                    by_turn.join(", ")
                )?;
            }
            let by_share: Vec<String> = ss
                .ttft_by_history_share
                .iter()
                .map(|t| {
                    format!(
                        "{}: {:.1}/{:.1} (n={})",
                        t.history_share, t.ttft.p50_ms, t.ttft.p99_ms, t.ttft.count
                    )
                })
                .collect();
            if !by_share.is_empty() {
                writeln!(
                    f,
                    "TTFT by history share  (later turns by the share of the prompt repeating the conversation, p50/p99 ms) {}",
                    by_share.join(", ")
                )?;
            }
        }
        if !self.stages.is_empty() {
            writeln!(
                f,
                "{:<8}{:>12}{:>9}{:>9}{:>8}{:>11}{:>11}{:>18}{:>16}",
                "stage",
                "load",
                "length",
                "rows",
                "ok",
                "sent/s",
                "ok/s",
                "TTFT p50/p99 ms",
                "E2E p50/p99 ms"
            )?;
            for st in &self.stages {
                writeln!(
                    f,
                    "{:<8}{:>12}{:>8.1}s{:>9}{:>8}{:>11.2}{:>11.2}{:>18}{:>16}",
                    st.stage,
                    st.load,
                    st.duration_s,
                    st.requests,
                    st.ok,
                    st.achieved_rate,
                    st.request_throughput,
                    format!(
                        "{:.0}/{:.0}",
                        st.ttft_from_schedule.p50_ms, st.ttft_from_schedule.p99_ms
                    ),
                    format!(
                        "{:.0}/{:.0}",
                        st.e2e_from_schedule.p50_ms, st.e2e_from_schedule.p99_ms
                    ),
                )?;
            }
        }
        write_classes(f, &self.classes)?;
        if let Some(g) = &self.goodput {
            writeln!(
                f,
                "goodput       {:.1}% of requests met {} ({} of {}, failures counted), {:.2} req/s",
                g.fraction * 100.0,
                g.slo,
                g.met,
                g.total,
                g.rate
            )?;
        }
        writeln!(f, "fidelity      {}", fi.verdict)
    }
}

/// The class breakdown as a table per column.
fn write_classes(f: &mut fmt::Formatter<'_>, classes: &[ClassSummary]) -> fmt::Result {
    let pair = |p: &Percentiles| {
        if p.count == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}/{:.1}", p.p50_ms, p.p99_ms)
        }
    };
    let mut last: Option<&str> = None;
    for c in classes {
        if last != Some(c.column.as_str()) {
            writeln!(
                f,
                "{:<24}{:>8}{:>8}{:>7}{:>9}{:>11}{:>11}{:>17}{:>15}{:>17}{:>9}",
                format!("by {}", c.column),
                "rows",
                "ok",
                "err",
                "ok/s",
                "in tok/s",
                "out tok/s",
                "TTFT p50/p99 ms",
                "TPOT p50/p99",
                "E2E p50/p99 ms",
                "goodput"
            )?;
            last = Some(c.column.as_str());
        }
        let mut value = c.value.clone();
        if value.chars().count() > 22 {
            value = value.chars().take(21).collect::<String>() + "…";
        }
        writeln!(
            f,
            "  {:<22}{:>8}{:>8}{:>7}{:>9.2}{:>11.1}{:>11.1}{:>17}{:>15}{:>17}{:>9}",
            value,
            c.requests,
            c.ok,
            c.errors,
            c.request_throughput,
            c.input_token_throughput,
            c.output_token_throughput,
            pair(&c.ttft_from_schedule),
            pair(&c.tpot),
            pair(&c.e2e_from_schedule),
            c.goodput
                .map_or_else(|| "-".to_owned(), |g| format!("{:.1}%", g * 100.0)),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_records_spill_to_a_file_and_read_back_whole_and_in_order() {
        let mut log = DoneLog::default();
        let n = DoneLog::SPILL_AT * 3 + 123;
        for i in 0..n {
            log.push(Done {
                at: -5 + i as i64 * 7,
                input_tokens: u32::try_from(i).unwrap(),
                output_tokens: u32::MAX - u32::try_from(i).unwrap(),
                combo: u32::try_from(i % 5).unwrap(),
                met: i % 3 == 0,
            });
        }
        let path = log.spill.as_ref().map(|s| s.path.clone()).unwrap();
        assert!(path.exists());
        // Only the last, partial chunk stays in memory.
        assert_eq!(log.recent.len(), 123);
        let mut seen = 0usize;
        log.for_each(|d| {
            assert_eq!(d.at, -5 + seen as i64 * 7);
            assert_eq!(d.input_tokens as usize, seen);
            assert_eq!(d.output_tokens, u32::MAX - u32::try_from(seen).unwrap());
            assert_eq!(d.combo as usize, seen % 5);
            assert_eq!(d.met, seen % 3 == 0);
            seen += 1;
        });
        assert_eq!(seen, n);
        assert!(log.any(|d| d.at == -5 + 7 * (n as i64 - 1)));
        assert!(!log.any(|d| d.at == -4));
        drop(log);
        assert!(!path.exists(), "the spill file outlived its summary");
    }

    fn row(i: i64, outcome: &str, ttft_ms: i64, e2e_ms: i64, tokens: i32) -> ResultRow {
        let sched = 1_000_000_000 + i * 100_000;
        ResultRow {
            request_id: format!("r{i}"),
            scheduled_at_us: sched,
            sent_at_us: Some(sched + 50),
            send_lag_us: Some(50),
            ttft_us: (outcome == "ok").then_some(ttft_ms * 1000),
            e2e_us: (outcome == "ok").then_some(e2e_ms * 1000),
            completed_at_us: Some(sched + e2e_ms * 1000),
            output_tokens: tokens,
            outcome: crate::record::parse_outcome(outcome).unwrap(),
            ..ResultRow::default()
        }
    }

    #[test]
    fn slo_parses_and_refuses_nonsense() {
        let slo: Slo = "ttft=500ms, tpot=50ms,e2e=10s".parse().unwrap();
        assert_eq!(slo.ttft_us, Some(500_000));
        assert_eq!(slo.tpot_us, Some(50_000));
        assert_eq!(slo.e2e_us, Some(10_000_000));
        assert!("ttft=fast".parse::<Slo>().is_err());
        assert!("latency=1s".parse::<Slo>().is_err());
        assert!("".parse::<Slo>().is_err());
    }

    #[test]
    fn thread_cpu_is_read_by_thread_name() {
        use rustix::time::{ClockId, clock_gettime};
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let burner = std::thread::Builder::new()
            .name("cpu-test-burner".into())
            .spawn(move || {
                // Burn 150 ms of this thread's own CPU time, then wait.
                let cpu = || {
                    let t = clock_gettime(ClockId::ThreadCPUTime);
                    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
                };
                let start = cpu();
                let mut x = 0u64;
                while cpu() - start < 0.15 {
                    x = x.wrapping_mul(31).wrapping_add(1);
                }
                tx.send(x).unwrap();
                done_rx.recv().unwrap();
            })
            .unwrap();
        rx.recv().unwrap();
        let burnt = ClientUsage::threads_cpu_now("cpu-test-burn").unwrap();
        assert!((0.1..5.0).contains(&burnt), "{burnt}");
        assert_eq!(ClientUsage::threads_cpu_now("no-such-thread"), None);
        done_tx.send(()).unwrap();
        burner.join().unwrap();
    }

    #[test]
    fn slo_takes_vllms_goodput_form_and_an_itl_objective() {
        let slo: Slo = "ttft:500 tpot:50.5 e2el:10000".parse().unwrap();
        assert_eq!(
            (slo.ttft_us, slo.tpot_us, slo.e2e_us),
            (Some(500_000), Some(50_500), Some(10_000_000)),
            "bare numbers are milliseconds"
        );
        let slo: Slo = "itl=200ms,ttft:1s".parse().unwrap();
        assert_eq!((slo.itl_us, slo.ttft_us), (Some(200_000), Some(1_000_000)));
        assert_eq!(slo.to_string(), "ttft=1000ms,itl=200ms");
        assert_eq!(
            slo.to_string().parse::<Slo>(),
            Ok(slo),
            "Display parses back"
        );
        let err = "ttft:-5".parse::<Slo>().unwrap_err();
        assert!(err.contains("positive"), "{err}");
        let err = "queue:5".parse::<Slo>().unwrap_err();
        assert!(err.contains("itl"), "{err}");
    }

    #[test]
    fn the_itl_objective_bounds_a_requests_longest_gap() {
        let slo: Slo = "itl=50ms".parse().unwrap();
        let mut steady = row(0, "ok", 100, 1_000, 4);
        steady.itl_us = vec![40_000, 50_000, 30_000];
        let mut stalled = steady.clone();
        stalled.itl_us = vec![10_000, 400_000, 10_000];
        let mut one_chunk = steady.clone();
        one_chunk.itl_us.clear();
        assert!(slo.met_by(&steady), "a gap equal to the limit meets it");
        assert!(!slo.met_by(&stalled), "one stall fails the request");
        assert!(slo.met_by(&one_chunk), "no gaps: nothing to fail");
        let s = summarize(&[steady, stalled, one_chunk], Some(slo), None);
        let g = s.goodput.unwrap();
        assert_eq!((g.met, g.total), (2, 3));
    }

    #[test]
    fn goodput_counts_failures_in_the_denominator() {
        let rows = vec![
            row(0, "ok", 100, 1_000, 11),
            row(1, "ok", 900, 1_000, 11),
            row(2, "http_error", 0, 0, 0),
            row(3, "ok", 100, 1_000, 11),
        ];
        let s = summarize(&rows, Some("ttft=500ms".parse().unwrap()), None);
        let g = s.goodput.unwrap();
        assert_eq!((g.met, g.total), (2, 4));
        assert_eq!(s.outcomes.get("http_error"), Some(&1));
        assert_eq!(s.ttft.count, 3);
        // TPOT = (e2e - ttft) / (tokens - 1) = 900 ms / 10 for the first row.
        assert!((s.tpot.p50_ms - 90.0).abs() < 0.5, "{}", s.tpot.p50_ms);
    }

    #[test]
    fn server_prompt_counts_are_compared_with_those_sent() {
        let with_usage = |sent: i32, server: &dyn Fn(i64) -> i32| -> Vec<ResultRow> {
            (0..100)
                .map(|i| ResultRow {
                    input_tokens: sent,
                    usage_prompt_tokens: Some(server(i)),
                    ..row(i, "ok", 10, 20, 2)
                })
                .collect()
        };
        // A BOS on 32-token prompts: over 2%, and named as the server's own.
        let s = summarize(&with_usage(32, &|_| 33), None, None);
        let p = s.prompt_tokens.as_ref().unwrap();
        assert_eq!((p.sent, p.server, p.per_request_p50), (3_200, 3_300, 1));
        assert!(p.warning.as_ref().unwrap().contains("BOS"), "{p:?}");
        assert!(
            s.to_string()
                .contains("prompt tokens the server counted 3300 for 3200 sent")
        );
        // Counts that wander: another tokenizer.
        let s = summarize(&with_usage(1_000, &|i| 1_030 + (i % 40) as i32), None, None);
        let p = s.prompt_tokens.unwrap();
        assert!(p.warning.unwrap().contains("--tokenizer"));
        // 30..=69, the low half three times: rank 50 falls on +46.
        assert_eq!((p.per_request_p50, p.per_request_p99), (46, 69));
        // The same +1 on 2,048 tokens is under 2%: no warning.
        let s = summarize(&with_usage(2_048, &|_| 2_049), None, None);
        assert!(s.prompt_tokens.unwrap().warning.is_none());
        // No usage, no comparison.
        assert!(
            summarize(&with_usage(10, &|_| 10)[..0], None, None)
                .prompt_tokens
                .is_none()
        );
    }

    #[test]
    fn lagging_generator_is_called_out() {
        let mut rows: Vec<ResultRow> = (0..100).map(|i| row(i, "ok", 10, 20, 2)).collect();
        for r in &mut rows {
            r.send_lag_us = Some(50_000);
        }
        let s = summarize(&rows, None, Some(10.0));
        assert!(s.fidelity.generator_bottleneck);
        assert!(
            s.fidelity.verdict.contains("load generator"),
            "{}",
            s.fidelity.verdict
        );
        let ok = summarize(&rows[..1], None, None);
        assert!(!ok.fidelity.verdict.is_empty());
        // The same lag spent waiting for a connection is the server's
        // backpressure, not the generator falling behind.
        for r in &mut rows {
            r.queue_wait_us = Some(49_900);
        }
        let s = summarize(&rows, None, Some(10.0));
        assert!(!s.fidelity.generator_bottleneck, "{}", s.fidelity.verdict);
        assert_eq!(s.queued.as_ref().map(|q| q.requests), Some(100));
        assert!(s.fidelity.verdict.contains("--max-in-flight"));
        assert!(format!("{s}").contains("server-side backpressure"));
    }

    #[test]
    fn percentiles_interpolate_between_closest_ranks() {
        let mut m = Metric::new();
        // 10..=1 in µs, out of order: numpy.percentile(range(1, 11), q).
        for v in (1..=10).rev() {
            m.record(f64::from(v) * 1000.0);
        }
        let q: Quantiles = "95,99.9,0,100".parse().unwrap();
        let p = m.percentiles(&q);
        assert_eq!(p.count, 10);
        assert!((p.p50_ms - 5.5).abs() < 1e-12, "{}", p.p50_ms);
        assert!((p.p90_ms - 9.1).abs() < 1e-12, "{}", p.p90_ms);
        assert!((p.p99_ms - 9.91).abs() < 1e-12, "{}", p.p99_ms);
        assert!((p.percentiles["p95"] - 9.55).abs() < 1e-12);
        assert!((p.percentiles["p99.9"] - 9.991).abs() < 1e-12);
        assert_eq!((p.percentiles["p0"], p.percentiles["p100"]), (1.0, 10.0));
        assert_eq!((p.mean_ms, p.max_ms), (5.5, 10.0));
        // One value is every percentile; none is all zeros.
        let mut one = Metric::new();
        one.record(7.0);
        assert_eq!(one.percentiles(&q).p99_ms, 0.007);
        assert_eq!(Metric::new().percentiles(&q), Percentiles::default());
    }

    #[test]
    fn compacted_runs_keep_every_value() {
        // Values merged in two batches count as if sorted in one.
        let first = merge_runs(&[], vec![3.0, 1.0, 3.0, 2.0]);
        assert_eq!(first, vec![(1.0, 1), (2.0, 1), (3.0, 2)]);
        let both = merge_runs(&first, vec![2.0, 5.0, 0.5]);
        assert_eq!(both, vec![(0.5, 1), (1.0, 1), (2.0, 2), (3.0, 2), (5.0, 1)]);
        let mut m = Metric::new();
        m.runs = first;
        m.count = 4;
        m.sum = 9.0;
        m.max = 3.0;
        for v in [2.0, 5.0, 0.5] {
            m.record(v);
        }
        // Sorted: 0.5 1 2 2 3 3 5; h = 6 * 0.5 = 3 -> 2.
        assert_eq!(m.percentiles(&Quantiles::default()).p50_ms, 0.002);
    }

    #[test]
    fn quantiles_parse_and_refuse_nonsense() {
        let q: Quantiles = "50, 90,p95,99.9,95".parse().unwrap();
        assert_eq!(q.as_slice(), &[50.0, 90.0, 95.0, 99.9]);
        assert_eq!(Quantiles::key(99.9), "p99.9");
        assert_eq!(Quantiles::key(50.0), "p50");
        assert!("101".parse::<Quantiles>().is_err());
        assert!("x".parse::<Quantiles>().is_err());
        assert!("".parse::<Quantiles>().is_err());
    }

    #[test]
    fn throughput_leaves_out_the_drain_tail() {
        // 11 requests scheduled 100 ms apart over 1 s, each done 20 ms
        // later but the last two, which drain for 9 s; one fails.
        let mut rows: Vec<ResultRow> = (0..11).map(|i| row(i, "ok", 10, 20, 2)).collect();
        for r in &mut rows[9..] {
            r.completed_at_us = Some(r.scheduled_at_us + 9_000_000);
        }
        rows[3] = row(3, "http_error", 0, 0, 0);
        let s = summarize(&rows, None, None);
        assert_eq!(s.throughput_window, "steady");
        assert!((s.window_s - 1.0).abs() < 1e-9, "{}", s.window_s);
        // 8 successes completed inside the 1 s window.
        assert!(
            (s.request_throughput - 8.0).abs() < 1e-9,
            "{}",
            s.request_throughput
        );
        assert!((s.output_token_throughput - 16.0).abs() < 1e-9);
        assert!(s.duration_s > 9.0);
        // One burst, all scheduled at once: no window, the whole run.
        let mut burst: Vec<ResultRow> = (0..3).map(|i| row(i, "ok", 10, 5_000, 2)).collect();
        for r in &mut burst {
            r.scheduled_at_us = 1_000_000_000;
        }
        let s = summarize(&burst, None, None);
        assert_eq!(s.throughput_window, "run");
        assert!((s.request_throughput - 3.0 / s.duration_s).abs() < 1e-9);
    }

    #[test]
    fn throughput_follows_a_server_that_keeps_up_and_one_that_falls_behind() {
        // 11 requests 100 ms apart (10/s over 1 s). A server that keeps up
        // but takes 2 s each: every completion lands after the last send,
        // yet the window a median E2E later holds them all.
        let slow: Vec<ResultRow> = (0..11).map(|i| row(i, "ok", 10, 2_000, 2)).collect();
        let s = summarize(&slow, None, None);
        assert_eq!(s.throughput_window, "steady");
        assert!(
            (s.request_throughput - 11.0).abs() < 1e-9,
            "{}",
            s.request_throughput
        );
        // A server that serves 5/s: request i ends at 0.1 + 0.2 i s, its
        // E2E growing by 0.1 s a request. The window (0.6 s to 1.6 s after
        // the first send) holds five completions: 5 req/s, what it served.
        let behind: Vec<ResultRow> = (0..11)
            .map(|i| row(i, "ok", 10, 100 + 100 * i, 2))
            .collect();
        let s = summarize(&behind, None, None);
        assert!(
            (s.request_throughput - 5.0).abs() < 1e-9,
            "{}",
            s.request_throughput
        );
    }

    #[test]
    fn lag_from_the_runs_own_cap_is_not_the_generators() {
        // Rate kept, lag above the limit, and the lagging requests waited
        // for a --max-in-flight slot: the cap, said so.
        let mut rows: Vec<ResultRow> = (0..100).map(|i| row(i, "ok", 10, 20, 2)).collect();
        for r in &mut rows {
            r.send_lag_us = Some(40_000);
            r.queue_wait_us = Some(20_000);
        }
        let s = summarize(&rows, None, Some(10.0));
        assert!(!s.fidelity.generator_bottleneck, "{}", s.fidelity.verdict);
        assert!(
            s.fidelity.verdict.contains("own --max-in-flight"),
            "{}",
            s.fidelity.verdict
        );
        assert!(
            !s.fidelity
                .verdict
                .contains("load generator, not the server")
        );
        // The cap holding the rate itself down (a tenth of the schedule)
        // is said with the rate, and is the cap's too.
        for (i, r) in rows.iter_mut().enumerate() {
            r.sent_at_us = Some(r.scheduled_at_us + i as i64 * 900_000);
            r.send_lag_us = Some(i as i64 * 900_000);
            r.queue_wait_us = r.send_lag_us;
        }
        let s = summarize(&rows, None, Some(10.0));
        assert!(!s.fidelity.generator_bottleneck, "{}", s.fidelity.verdict);
        assert!(
            s.fidelity.verdict.contains("own --max-in-flight or --max-connections cap held the load sent to 1.00 req/s against a schedule of 10.00 (-90.0%)"),
            "{}",
            s.fidelity.verdict
        );
    }

    #[test]
    fn a_few_capped_requests_do_not_excuse_a_late_generator() {
        // A generator short of CPU: nearly every request left 40 ms late
        // on its own, 2% also waited for a connection. The generator is
        // the bottleneck, not the cap.
        let mut rows: Vec<ResultRow> = (0..100).map(|i| row(i, "ok", 10, 20, 2)).collect();
        for (i, r) in rows.iter_mut().enumerate() {
            r.send_lag_us = Some(40_000 + i as i64 * 20_000);
            r.sent_at_us = Some(r.scheduled_at_us + 40_000 + i as i64 * 20_000);
            r.queue_wait_us = (i < 2).then_some(1_000);
        }
        let s = summarize(&rows, None, Some(10.0));
        assert!(s.fidelity.generator_bottleneck, "{}", s.fidelity.verdict);
        assert!(
            s.fidelity
                .verdict
                .contains("load generator, not the server"),
            "{}",
            s.fidelity.verdict
        );
    }

    #[test]
    fn steady_phase_only_when_present() {
        let mut rows: Vec<ResultRow> = (0..10).map(|i| row(i, "ok", 10, 20, 2)).collect();
        rows[0].phase = Phase::Warmup;
        rows[9].phase = Phase::Cooldown;
        assert_eq!(summarize(&rows, None, None).requests, 8);
    }

    #[test]
    fn later_turns_are_bucketed_by_their_history_share() {
        let turn = |i: i64, turn: i32, history: i32, ttft_ms: i64| ResultRow {
            session_id: Some(format!("s{i}")),
            turn_index: Some(turn),
            prompt_tokens_sent: Some(100),
            history_tokens: Some(history),
            ..row(i, "ok", ttft_ms, ttft_ms + 10, 2)
        };
        let rows = [
            turn(0, 0, 0, 50),
            turn(1, 1, 10, 40),
            turn(2, 1, 90, 5),
            turn(3, 2, 100, 7),
            turn(4, 1, 30, 20),
        ];
        let s = summarize(&rows, None, None);
        let shares: Vec<(&str, u64, f64)> = s
            .sessions
            .as_ref()
            .unwrap()
            .ttft_by_history_share
            .iter()
            .map(|b| {
                (
                    b.history_share.as_str(),
                    b.ttft.count,
                    b.ttft.p50_ms.round(),
                )
            })
            .collect();
        // The first turn is left out; 100% counts in the top quarter (its
        // median halfway between 5 and 7 ms).
        assert_eq!(
            shares,
            [("0-25%", 1, 40.0), ("25-50%", 1, 20.0), ("75-100%", 2, 6.0)]
        );
        assert!(format!("{s}").contains("TTFT by history share"));
    }
}
