//! `transform`: traces reshaped for what-if questions, whole sessions at a
//! time. The operations run in one fixed order, whatever the order of the
//! flags: merge, window, filter, reweight, sample-sessions, scale-load,
//! scale-lengths, cap, compress-day, speedup. Each is appended to the
//! output's `llm_replay.transforms` metadata (a JSON list) with its
//! parameters, the SHA-256 of the input file and the rows before and after.
//!
//! A *unit* is a session (rows sharing a `session_id`) or a request outside
//! any session. Thinning keeps or drops whole units; overlaying adds copies
//! of units with fresh request and session ids, shifted in time by a random
//! amount within `jitter` (wrapped into the trace's span) so that slow
//! changes of the rate (time of day) stay where they were while the copies
//! are independent at short time scales. A copy renames the prefix blocks
//! only its unit uses (its own history) and keeps the blocks units share
//! (system prompts): copies are new users of the same application.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::WorkloadError;
use crate::ingest::{FilterConfig, Filters};
use crate::trace::{InputFile, Trace, TraceMetadata, TraceRecord};

/// Which column a reweight changes the mix of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassKey {
    /// Tenants.
    UserId,
    /// Request classes.
    RequestKind,
    /// Models.
    Model,
}

impl ClassKey {
    fn name(self) -> &'static str {
        match self {
            Self::UserId => "user_id",
            Self::RequestKind => "request_kind",
            Self::Model => "model",
        }
    }

    fn of(self, r: &TraceRecord) -> &str {
        let v = match self {
            Self::UserId => r.user_id.as_deref(),
            Self::RequestKind => r.request_kind.as_deref(),
            Self::Model => r.model.as_deref(),
        };
        v.unwrap_or(NO_CLASS)
    }
}

/// The class of rows whose column is null.
pub const NO_CLASS: &str = "(none)";

/// A new class mix: `--reweight request_kind:code=0.3,conv=0.7`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reweight {
    /// The column.
    pub key: ClassKey,
    /// Target shares of units by class; classes not listed share what is
    /// left in their present proportions.
    pub shares: Vec<(String, f64)>,
}

impl std::str::FromStr for Reweight {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "write COLUMN:CLASS=SHARE,..., e.g. request_kind:code=0.3,conv=0.7 (COLUMN: user_id, request_kind, model)";
        let (key, rest) = s.split_once(':').ok_or_else(|| format!("{s:?}: {usage}"))?;
        let key = match key.trim() {
            "user_id" => ClassKey::UserId,
            "request_kind" => ClassKey::RequestKind,
            "model" => ClassKey::Model,
            other => return Err(format!("{other:?} is not a column to reweight; {usage}")),
        };
        let mut shares = Vec::new();
        for part in rest.split(',') {
            let (class, share) = part
                .rsplit_once('=')
                .ok_or_else(|| format!("{part:?}: {usage}"))?;
            let share: f64 = share
                .trim()
                .parse()
                .map_err(|_| format!("{share:?} is not a share; {usage}"))?;
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("share {share} of {class:?} must be within 0..1"));
            }
            shares.push((class.trim().to_owned(), share));
        }
        let sum: f64 = shares.iter().map(|(_, s)| s).sum();
        if sum > 1.0 + 1e-9 {
            return Err(format!("the shares add up to {sum}, above 1"));
        }
        Ok(Self { key, shares })
    }
}

/// Everything `transform` does, in the order it does it.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformSpec {
    /// Further traces to mix in, with the share of units each supplies (the
    /// first input's share first).
    pub merge_shares: Vec<f64>,
    /// Keep units that start in `[from, to)`.
    pub window: Option<(Duration, Duration)>,
    /// Length filters; a session is cut at its first turn that fails one.
    pub filters: FilterConfig,
    /// Change the class mix.
    pub reweight: Option<Reweight>,
    /// Keep each unit with this probability.
    pub sample_sessions: Option<f64>,
    /// Load factor: thin below 1, overlay copies above.
    pub scale_load: Option<f64>,
    /// How far copies move in time.
    pub jitter: Duration,
    /// Multiply input and output lengths.
    pub scale_lengths: Option<(f64, f64)>,
    /// Cap input and output lengths.
    pub cap: (Option<u32>, Option<u32>),
    /// Map a span of session starts onto a shorter one (think times kept).
    pub compress_day: Option<(Duration, Duration)>,
    /// Divide every time (arrivals and think times).
    pub speedup: Option<f64>,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for TransformSpec {
    fn default() -> Self {
        Self {
            merge_shares: Vec::new(),
            window: None,
            filters: FilterConfig::default(),
            reweight: None,
            sample_sessions: None,
            scale_load: None,
            jitter: Duration::from_secs(60),
            scale_lengths: None,
            cap: (None, None),
            compress_day: None,
            speedup: None,
            seed: 0,
        }
    }
}

/// One applied operation, as the metadata lists it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Applied {
    /// The operation (`window`, `scale_load`, ...).
    pub op: String,
    /// Its parameters as given.
    pub params: String,
    /// The input files (name and SHA-256).
    pub inputs: Vec<InputFile>,
    /// Rows before.
    pub rows_in: u64,
    /// Rows after.
    pub rows_out: u64,
    /// The seed, for random operations.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seed: Option<u64>,
}

/// The metadata key of the list of transforms.
pub const TRANSFORMS_KEY: &str = "transforms";

/// A session or a request outside any.
#[derive(Debug, Clone)]
struct Unit {
    rows: Vec<TraceRecord>,
    /// Which input it came from.
    origin: usize,
}

impl Unit {
    fn start(&self) -> i64 {
        self.rows
            .iter()
            .filter_map(|r| r.arrival_offset_us)
            .min()
            .unwrap_or(0)
    }

    fn shift(&mut self, by: i64) {
        for r in &mut self.rows {
            if let Some(t) = &mut r.arrival_offset_us {
                *t += by;
            }
        }
    }
}

/// The traces being transformed, as units.
struct Work {
    units: Vec<Unit>,
    timed: bool,
    block_size: Option<u32>,
    rng: StdRng,
    log: Vec<Applied>,
    inputs: Vec<InputFile>,
}

impl Work {
    fn rows(&self) -> u64 {
        self.units.iter().map(|u| u.rows.len() as u64).sum()
    }

    fn record(&mut self, op: &str, params: String, rows_in: u64, seeded: Option<u64>) {
        let rows_out = self.rows();
        self.log.push(Applied {
            op: op.to_owned(),
            params,
            inputs: self.inputs.clone(),
            rows_in,
            rows_out,
            seed: seeded,
        });
    }

    /// Span of unit starts.
    fn span(&self) -> i64 {
        let starts = self.units.iter().map(Unit::start);
        let (lo, hi) = starts.fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(s), hi.max(s)));
        if lo > hi { 0 } else { hi - lo }
    }

    /// Units with their class under `key`.
    fn classes(&self, key: impl Fn(&Unit) -> String) -> BTreeMap<String, Vec<usize>> {
        let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, u) in self.units.iter().enumerate() {
            out.entry(key(u)).or_default().push(i);
        }
        out
    }

    /// Each unit `i` becomes `factor(i)` units in expectation: kept or
    /// dropped below 1, overlaid with copies above. `tag` keeps the copies'
    /// ids distinct from every other operation's.
    fn scale(&mut self, factor: impl Fn(usize) -> f64, tag: &str, jitter: Duration) {
        let mut users: HashMap<u64, u32> = HashMap::new();
        for u in &self.units {
            let mut own: Vec<u64> = u
                .rows
                .iter()
                .flat_map(|r| r.prefix_block_ids.iter().flatten().copied())
                .collect();
            own.sort_unstable();
            own.dedup();
            for id in own {
                *users.entry(id).or_insert(0) += 1;
            }
        }
        let span = self.span();
        let base = self.units.iter().map(Unit::start).min().unwrap_or(0);
        let jitter_us = i64::try_from(jitter.as_micros()).unwrap_or(i64::MAX);
        let units = std::mem::take(&mut self.units);
        let factors: Vec<f64> = (0..units.len()).map(|i| factor(i).max(0.0)).collect();
        // The c-th copies of all units move together, by one offset per
        // copy, so each copy is the trace's own arrival process (its bursts
        // and their spacing) shifted; per-unit offsets would smooth the
        // copies toward Poisson. Offsets are spread over (0, jitter] so no
        // copy lands on the original or on another copy.
        let copies = factors.iter().fold(0.0f64, |m, f| m.max(f.ceil())) as u64;
        let offsets: Vec<i64> = (1..copies.max(1))
            .map(|c| {
                if jitter_us == 0 {
                    return 0;
                }
                let u: f64 = self.rng.random_range(0.25..0.75);
                let d = (jitter_us as f64 * ((c - 1) as f64 + u) / (copies - 1) as f64) as i64;
                if self.rng.random::<bool>() { d } else { -d }
            })
            .collect();
        let mut out = Vec::with_capacity(units.len());
        for (unit, f) in units.into_iter().zip(factors) {
            let whole = f.floor();
            let k = whole as u64 + u64::from(self.rng.random::<f64>() < f - whole);
            for c in 1..k {
                let mut copy = unit.clone();
                let suffix = format!("#{tag}{c}");
                let salt = super::synth::mix_str(&suffix);
                for r in &mut copy.rows {
                    r.request_id.push_str(&suffix);
                    if let Some(s) = &mut r.session_id {
                        s.push_str(&suffix);
                    }
                    if let Some(ids) = &mut r.prefix_block_ids {
                        for id in ids {
                            if users.get(id).copied().unwrap_or(0) <= 1 {
                                *id = super::synth::remix(*id, salt);
                            }
                        }
                    }
                }
                if self.timed && span > 0 {
                    let d = offsets[c as usize - 1];
                    let start = copy.start();
                    let moved = (start - base + d).rem_euclid(span + 1) + base;
                    copy.shift(moved - start);
                } else if !self.timed {
                    // Timeless rows: a random place in the order.
                    let at = self.rng.random_range(0..=span.max(1));
                    let start = copy.start();
                    copy.shift(at - start);
                }
                out.push(copy);
            }
            if k >= 1 {
                out.push(unit);
            }
        }
        self.units = out;
    }
}

/// Groups a trace's rows into units, in order of first appearance.
fn units_of(trace: &Trace, origin: usize) -> Vec<Unit> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut units: Vec<Unit> = Vec::new();
    for r in &trace.records {
        match r.session_id.as_deref() {
            Some(s) => {
                let i = *index.entry(s).or_insert_with(|| {
                    units.push(Unit {
                        rows: Vec::new(),
                        origin,
                    });
                    units.len() - 1
                });
                units[i].rows.push(r.clone());
            }
            None => units.push(Unit {
                rows: vec![r.clone()],
                origin,
            }),
        }
    }
    units
}

fn describe_file(t: &Trace) -> Result<InputFile, WorkloadError> {
    InputFile::describe(&t.path).map_err(|e| WorkloadError::Input {
        path: t.path.display().to_string(),
        message: e.to_string(),
    })
}

/// Whether all of a trace's rows have times (`Some(true)`), none
/// (`Some(false)`), or some (`None`).
fn timed(t: &Trace) -> Option<bool> {
    let n = t
        .records
        .iter()
        .filter(|r| r.arrival_offset_us.is_some())
        .count();
    if n == t.records.len() {
        Some(true)
    } else if n == 0 {
        Some(false)
    } else {
        None
    }
}

/// The transformed trace.
#[derive(Debug, Clone)]
pub struct Transformed {
    /// Its rows, sorted by arrival.
    pub records: Vec<TraceRecord>,
    /// Its metadata, with the operations appended to `transforms`.
    pub metadata: TraceMetadata,
    /// The operations applied, in order.
    pub applied: Vec<Applied>,
}

/// Applies `spec` to `inputs` (one trace, or several with `merge_shares`).
pub fn apply(inputs: &[Trace], spec: &TransformSpec) -> Result<Transformed, WorkloadError> {
    let usage = |m: String| WorkloadError::Usage(m);
    let Some(first) = inputs.first() else {
        return Err(usage("transform needs a trace".into()));
    };
    if inputs.len() > 1 && spec.merge_shares.len() != inputs.len() {
        return Err(usage("each merged trace needs its share".into()));
    }
    let mut timing = None;
    let mut block_size = None;
    for t in inputs {
        let shown = t.path.display().to_string();
        let Some(this) = timed(t) else {
            return Err(WorkloadError::Input {
                path: shown,
                message: "some rows have arrival times and some do not; transform takes traces with times on every row or none".into(),
            });
        };
        if timing.is_some_and(|x| x != this) {
            return Err(usage(format!(
                "{shown} {} arrival times but {} {}: merge traces that both have times, or both none",
                if this { "has" } else { "has no" },
                first.path.display(),
                if this { "has none" } else { "has them" },
            )));
        }
        timing = Some(this);
        if t.records.iter().any(|r| r.prefix_block_ids.is_some()) {
            match (block_size, t.metadata.prefix_block_size) {
                (Some(a), Some(b)) if a != b => {
                    return Err(usage(format!(
                        "{shown} has prefix blocks of {b} tokens but an earlier trace has {a}: merge traces with one block size"
                    )));
                }
                (_, Some(b)) => block_size = Some(b),
                _ => {}
            }
        }
    }
    let timed = timing.unwrap_or(false);
    let needs_times = |what: &str| -> Result<(), WorkloadError> {
        if timed {
            Ok(())
        } else {
            Err(WorkloadError::Input {
                path: first.path.display().to_string(),
                message: format!("{what} needs arrival times, and this trace has none"),
            })
        }
    };
    let mut files = Vec::with_capacity(inputs.len());
    for t in inputs {
        files.push(describe_file(t)?);
    }
    let mut work = Work {
        units: Vec::new(),
        timed,
        block_size,
        rng: StdRng::seed_from_u64(spec.seed),
        log: Vec::new(),
        inputs: files.clone(),
    };

    // merge
    if inputs.len() > 1 {
        merge(&mut work, inputs, &files, spec)?;
    } else {
        work.units = units_of(first, 0);
        if !timed {
            pseudo_times(&mut work.units);
        }
    }

    if let Some((from, to)) = spec.window {
        needs_times("--window")?;
        let rows_in = work.rows();
        let (a, b) = (micros(from), micros(to));
        work.units.retain(|u| (a..b).contains(&u.start()));
        work.record(
            "window",
            format!("{}..{}", fmt_d(from), fmt_d(to)),
            rows_in,
            None,
        );
    }

    let filters = Filters::new(spec.filters.clone()).map_err(|e| usage(e.to_string()))?;
    let described = filters.describe();
    if !described.is_empty() {
        let rows_in = work.rows();
        for u in &mut work.units {
            u.rows.sort_by_key(|r| r.turn_index.unwrap_or(0));
            if let Some(cut) = u.rows.iter().position(|r| filters.reject(r).is_some()) {
                u.rows.truncate(cut);
            }
        }
        work.units.retain(|u| !u.rows.is_empty());
        work.record("filter", described.join(","), rows_in, None);
    }

    if let Some(rw) = &spec.reweight {
        let rows_in = work.rows();
        let key = rw.key;
        let classes = work.classes(|u| key.of(&u.rows[0]).to_owned());
        let factors = class_factors(&classes, &rw.shares, work.units.len())
            .map_err(|m| usage(format!("--reweight {}: {m}", key.name())))?;
        let class_of: Vec<f64> = {
            let mut v = vec![0.0; work.units.len()];
            for (c, members) in &classes {
                for &i in members {
                    v[i] = factors.get(c).copied().unwrap_or(1.0);
                }
            }
            v
        };
        work.scale(|i| class_of[i], "w", spec.jitter);
        let params = format!(
            "{}:{}",
            key.name(),
            rw.shares
                .iter()
                .map(|(c, s)| format!("{c}={s}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        work.record("reweight", params, rows_in, Some(spec.seed));
    }

    if let Some(p) = spec.sample_sessions {
        if !(0.0..=1.0).contains(&p) {
            return Err(usage(format!("--sample-sessions {p} must be within 0..1")));
        }
        let rows_in = work.rows();
        work.scale(|_| p, "x", spec.jitter);
        work.record("sample_sessions", p.to_string(), rows_in, Some(spec.seed));
    }

    if let Some(x) = spec.scale_load {
        if !(x.is_finite() && x > 0.0) {
            return Err(usage(format!("--scale-load {x} must be above 0")));
        }
        let rows_in = work.rows();
        work.scale(|_| x, "s", spec.jitter);
        work.record(
            "scale_load",
            format!("{x} (jitter {})", fmt_d(spec.jitter)),
            rows_in,
            Some(spec.seed),
        );
    }

    if let Some((fi, fo)) = spec.scale_lengths {
        if !(fi.is_finite() && fi > 0.0 && fo.is_finite() && fo > 0.0) {
            return Err(usage("--scale-lengths factors must be above 0".into()));
        }
        let rows_in = work.rows();
        let new_block = work
            .block_size
            .map(|b| ((f64::from(b) * fi).round() as u32).max(1));
        for u in &mut work.units {
            for r in &mut u.rows {
                r.input_tokens = scaled(r.input_tokens, fi);
                r.output_tokens = scaled(r.output_tokens, fo);
                if let Some(b) = new_block {
                    fit_blocks(r, b);
                }
            }
        }
        work.block_size = new_block;
        work.record(
            "scale_lengths",
            format!("input={fi},output={fo}"),
            rows_in,
            None,
        );
    }

    if spec.cap != (None, None) {
        let rows_in = work.rows();
        let (ci, co) = spec.cap;
        for u in &mut work.units {
            for r in &mut u.rows {
                if let Some(c) = ci {
                    r.input_tokens = r.input_tokens.min(i32::try_from(c).unwrap_or(i32::MAX));
                }
                if let Some(c) = co {
                    r.output_tokens = r.output_tokens.min(i32::try_from(c).unwrap_or(i32::MAX));
                }
                if let Some(b) = work.block_size {
                    fit_blocks(r, b);
                }
            }
        }
        let mut p = Vec::new();
        if let Some(c) = ci {
            p.push(format!("input={c}"));
        }
        if let Some(c) = co {
            p.push(format!("output={c}"));
        }
        work.record("cap", p.join(","), rows_in, None);
    }

    if let Some((from, to)) = spec.compress_day {
        needs_times("--compress-day")?;
        if to.is_zero() || from.is_zero() {
            return Err(usage("--compress-day spans must be above 0".into()));
        }
        let rows_in = work.rows();
        let f = from.as_secs_f64() / to.as_secs_f64();
        for u in &mut work.units {
            let start = u.start();
            let moved = (start as f64 / f).round() as i64;
            u.shift(moved - start);
        }
        work.record(
            "compress_day",
            format!("{}:{}", fmt_d(from), fmt_d(to)),
            rows_in,
            None,
        );
    }

    if let Some(x) = spec.speedup {
        needs_times("--speedup")?;
        if !(x.is_finite() && x > 0.0) {
            return Err(usage(format!("--speedup {x} must be above 0")));
        }
        let rows_in = work.rows();
        for u in &mut work.units {
            for r in &mut u.rows {
                r.arrival_offset_us = r.arrival_offset_us.map(|t| (t as f64 / x).round() as i64);
                r.think_time_us = r.think_time_us.map(|t| (t as f64 / x).round() as i64);
            }
        }
        work.record("speedup", x.to_string(), rows_in, None);
    }

    let mut rows: Vec<(i64, usize, usize, TraceRecord)> = Vec::with_capacity(work.rows() as usize);
    for (ui, u) in work.units.into_iter().enumerate() {
        for (ri, r) in u.rows.into_iter().enumerate() {
            rows.push((r.arrival_offset_us.unwrap_or(0), ui, ri, r));
        }
    }
    rows.sort_by_key(|(t, ui, ri, _)| (*t, *ui, *ri));
    let t0 = rows.first().map_or(0, |r| r.0);
    let records: Vec<TraceRecord> = rows
        .into_iter()
        .map(|(_, _, _, mut r)| {
            r.arrival_offset_us = if timed {
                r.arrival_offset_us.map(|t| t - t0)
            } else {
                None
            };
            r
        })
        .collect();

    let mut metadata = first.metadata.clone();
    if inputs.len() > 1 {
        metadata.source_format = "merge".into();
        // Facts of the first trace alone (its synth spec, its seed) are
        // not facts of the mix.
        metadata
            .extra
            .retain(|k, v| inputs.iter().all(|t| t.metadata.extra.get(k) == Some(v)));
        metadata.input_files = inputs
            .iter()
            .flat_map(|t| t.metadata.input_files.iter().cloned())
            .collect();
    }
    let moved_times = spec.window.is_some()
        || spec.compress_day.is_some()
        || spec.speedup.is_some()
        || inputs.len() > 1
        || spec.scale_load.is_some();
    if moved_times {
        metadata.t0 = None;
    }
    metadata.prefix_block_size = work.block_size;
    metadata.rows_read = records.len() as u64;
    metadata.rows_written = records.len() as u64;
    metadata.rows_dropped.clear();
    let mut all: Vec<Applied> = metadata
        .extra
        .get(TRANSFORMS_KEY)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    all.extend(work.log.iter().cloned());
    metadata.extra.insert(
        TRANSFORMS_KEY.into(),
        serde_json::to_string(&all).unwrap_or_else(|_| "[]".into()),
    );
    metadata
        .extra
        .insert("transform_seed".into(), spec.seed.to_string());
    Ok(Transformed {
        records,
        metadata,
        applied: work.log,
    })
}

/// Timeless units get their position as a time, so scaling can place
/// copies; the times are dropped at the end.
fn pseudo_times(units: &mut [Unit]) {
    for (i, u) in units.iter_mut().enumerate() {
        for r in &mut u.rows {
            r.arrival_offset_us = Some(i as i64);
        }
    }
}

/// Mixes the inputs: each trace starts at 0, shorter ones repeat (with
/// fresh ids) to cover the first's span, the rest is cut, and each then
/// supplies its share of the first's count of units.
fn merge(
    work: &mut Work,
    inputs: &[Trace],
    files: &[InputFile],
    spec: &TransformSpec,
) -> Result<(), WorkloadError> {
    let total: f64 = spec.merge_shares.iter().sum();
    if total.is_nan()
        || total <= 0.0
        || spec
            .merge_shares
            .iter()
            .any(|s| !(s.is_finite() && *s >= 0.0))
    {
        return Err(WorkloadError::Usage(
            "--merge shares must be at least 0 and not all 0".into(),
        ));
    }
    let mut names: Vec<String> = files
        .iter()
        .map(|f| f.name.trim_end_matches(".parquet").to_owned())
        .collect();
    let distinct: std::collections::HashSet<&String> = names.iter().collect();
    if distinct.len() < names.len() {
        names = (0..names.len()).map(|i| format!("t{i}")).collect();
    }
    let rows_in: u64 = inputs.iter().map(|t| t.records.len() as u64).sum();
    let mut per: Vec<Vec<Unit>> = Vec::new();
    for (i, t) in inputs.iter().enumerate() {
        let mut units = units_of(t, i);
        for u in &mut units {
            for r in &mut u.rows {
                r.request_id = format!("{}:{}", names[i], r.request_id);
                if let Some(s) = &mut r.session_id {
                    *s = format!("{}:{s}", names[i]);
                }
                if let Some(ids) = &mut r.prefix_block_ids {
                    for id in ids {
                        *id = super::synth::remix(*id, i as u64 + 1);
                    }
                }
            }
        }
        if !work.timed {
            pseudo_times(&mut units);
        } else {
            let base = units.iter().map(Unit::start).min().unwrap_or(0);
            for u in &mut units {
                u.shift(-base);
            }
        }
        per.push(units);
    }
    let count_first = per[0].len() as f64;
    let span_first = per[0].iter().map(Unit::start).max().unwrap_or(0);
    for (i, units) in per.iter_mut().enumerate().skip(1) {
        let span = units.iter().map(Unit::start).max().unwrap_or(0);
        if work.timed && span < span_first {
            // Tile: repeat with fresh ids until the first's span is covered.
            let period = span + span.max(1) / units.len().max(1) as i64;
            let mut tiles = Vec::new();
            let mut k = 1i64;
            while period * k <= span_first {
                for u in units.iter() {
                    let mut c = u.clone();
                    let suffix = format!("#m{k}");
                    let salt = super::synth::mix_str(&suffix);
                    for r in &mut c.rows {
                        r.request_id.push_str(&suffix);
                        if let Some(s) = &mut r.session_id {
                            s.push_str(&suffix);
                        }
                        if let Some(ids) = &mut r.prefix_block_ids {
                            for id in ids {
                                *id = super::synth::remix(*id, salt);
                            }
                        }
                    }
                    c.shift(period * k);
                    tiles.push(c);
                }
                k += 1;
            }
            units.extend(tiles);
        }
        if work.timed {
            units.retain(|u| u.start() <= span_first);
        }
        let _ = i;
    }
    // Shares of the first trace's count, each trace scaled to its share.
    let mut factors = Vec::new();
    for (i, units) in per.iter().enumerate() {
        let want = spec.merge_shares[i] / total * count_first;
        if units.is_empty() && want > 0.0 {
            return Err(WorkloadError::Input {
                path: inputs[i].path.display().to_string(),
                message: "no rows to merge".into(),
            });
        }
        factors.push(if units.is_empty() {
            0.0
        } else {
            want / units.len() as f64
        });
    }
    work.units = per.into_iter().flatten().collect();
    if !work.timed {
        // Interleave the traces: each unit a random place.
        let n = work.units.len() as i64;
        for u in &mut work.units {
            let at = work.rng.random_range(0..n.max(1));
            let start = u.start();
            u.shift(at - start);
        }
    }
    let origin: Vec<f64> = work.units.iter().map(|u| factors[u.origin]).collect();
    work.scale(|i| origin[i], "m", spec.jitter);
    let params = names
        .iter()
        .zip(&spec.merge_shares)
        .map(|(n, s)| format!("{n}:{s}"))
        .collect::<Vec<_>>()
        .join(",");
    work.record("merge", params, rows_in, Some(spec.seed));
    Ok(())
}

/// Factor per class so that listed classes reach their share of `n` units
/// and the rest share what is left in their present proportions.
fn class_factors(
    classes: &BTreeMap<String, Vec<usize>>,
    shares: &[(String, f64)],
    n: usize,
) -> Result<HashMap<String, f64>, String> {
    let n = n as f64;
    let listed: f64 = shares.iter().map(|(_, s)| s).sum();
    let unlisted: usize = classes
        .iter()
        .filter(|(c, _)| !shares.iter().any(|(s, _)| s == *c))
        .map(|(_, m)| m.len())
        .sum();
    let mut out = HashMap::new();
    for (c, share) in shares {
        let Some(members) = classes.get(c) else {
            let have: Vec<&str> = classes.keys().map(String::as_str).collect();
            return Err(format!(
                "no sessions of class {c:?} to scale (the trace has {})",
                have.join(", ")
            ));
        };
        out.insert(c.clone(), share * n / members.len() as f64);
    }
    let rest = if unlisted > 0 {
        (1.0 - listed).max(0.0) * n / unlisted as f64
    } else {
        0.0
    };
    for c in classes.keys() {
        out.entry(c.clone()).or_insert(rest);
    }
    Ok(out)
}

fn scaled(v: i32, f: f64) -> i32 {
    let x = (f64::from(v) * f).round();
    if x >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        (x as i32).max(1)
    }
}

/// Keeps a row's block list within `floor(input / b) ..= ceil(input / b)`:
/// cut to the blocks its (new) input still covers, or, when it grew past
/// its ids, extended with ids of its own.
fn fit_blocks(r: &mut TraceRecord, b: u32) {
    let Some(ids) = &mut r.prefix_block_ids else {
        return;
    };
    let input = u64::try_from(r.input_tokens).unwrap_or(0);
    let (lo, hi) = (input / u64::from(b), input.div_ceil(u64::from(b)));
    ids.truncate(hi as usize);
    let own = super::synth::mix_str(&r.request_id);
    while (ids.len() as u64) < lo {
        let k = ids.len() as u64;
        ids.push(super::synth::remix(own, k));
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn fmt_d(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A window `FROM..TO` of durations (`10m..40m`).
pub fn parse_window(s: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?}: write FROM..TO, e.g. 10m..40m"))?;
    let d = |v: &str| {
        let v = v.trim();
        if v == "0" {
            return Ok(Duration::ZERO);
        }
        humantime::parse_duration(v).map_err(|e| format!("{v:?}: {e}"))
    };
    let (a, b) = (d(a)?, d(b)?);
    if a >= b {
        return Err(format!("{s:?}: the window ends before it starts"));
    }
    Ok((a, b))
}

/// A `FROM:TO` pair of spans (`24h:1h`).
pub fn parse_spans(s: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: write FROM:TO, e.g. 24h:1h"))?;
    let d = |v: &str| humantime::parse_duration(v.trim()).map_err(|e| format!("{v:?}: {e}"));
    Ok((d(a)?, d(b)?))
}

/// `input=1.5,output=0.5` (either may be left out: factor 1).
pub fn parse_length_factors(s: &str) -> Result<(f64, f64), String> {
    let (mut i, mut o) = (1.0, 1.0);
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: write input=X,output=Y"))?;
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| format!("{v:?} is not a number"))?;
        match k.trim() {
            "input" => i = v,
            "output" => o = v,
            other => return Err(format!("{other:?}: write input=X,output=Y")),
        }
    }
    Ok((i, o))
}

/// `input=8192[,output=1024]`.
pub fn parse_cap(s: &str) -> Result<(Option<u32>, Option<u32>), String> {
    let (mut i, mut o) = (None, None);
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: write input=N,output=M"))?;
        let v: u32 = v
            .trim()
            .parse()
            .map_err(|_| format!("{v:?} is not a token count"))?;
        if v == 0 {
            return Err("a cap must be at least 1 token".into());
        }
        match k.trim() {
            "input" => i = Some(v),
            "output" => o = Some(v),
            other => return Err(format!("{other:?}: write input=N,output=M")),
        }
    }
    Ok((i, o))
}

/// `A.parquet:0.7,B.parquet:0.3`.
pub fn parse_merge(s: &str) -> Result<Vec<(PathBuf, f64)>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (p, w) = part
            .rsplit_once(':')
            .ok_or_else(|| format!("{part:?}: write TRACE:SHARE,TRACE:SHARE"))?;
        let w: f64 = w
            .trim()
            .parse()
            .map_err(|_| format!("{w:?} is not a share"))?;
        out.push((PathBuf::from(p.trim()), w));
    }
    if out.len() < 2 {
        return Err("--merge takes two or more traces, TRACE:SHARE,TRACE:SHARE".into());
    }
    Ok(out)
}
