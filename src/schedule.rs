//! Schedules: when each request leaves, a pure function of the trace, the
//! spec and a seed, so a run can be reproduced from the seed written into
//! its results. Rate schedules are generated as the run walks them
//! ([`plan`]), so their memory does not grow with `--duration`.
//!
//! Offsets are nanoseconds from the start of the run: tokio's 1 ms timer
//! would bunch requests at high rates, so the dispatcher paces to these
//! offsets with a finer clock (see `replay::pacer`).

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Exp, Gamma};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::trace::TraceRecord;

/// The inter-arrival process of a rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arrivals {
    /// Exponential gaps (a Poisson process).
    Poisson,
    /// Gamma-distributed gaps with this shape (vLLM's `--burstiness`):
    /// shape 1 is Poisson, below 1 burstier, above 1 more regular.
    Gamma {
        /// Shape parameter k; the scale is `1 / (rate * k)` so the mean rate
        /// is kept.
        shape: f64,
    },
    /// Equal gaps of `1 / rate`.
    Constant,
}

/// Which trace rows a rate schedule takes, in what order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// The trace's order, looping.
    #[default]
    Sequential,
    /// A seeded shuffle of the trace, reshuffled on every loop.
    Shuffle,
}

/// When to stop a rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Limit {
    /// Stop before the first arrival at or past this many nanoseconds.
    pub duration_ns: Option<u64>,
    /// Stop after this many requests.
    pub requests: Option<u64>,
}

/// How to schedule a trace: validated, the only shape the dispatcher sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ScheduleSpec {
    /// The trace's own arrival offsets, time-scaled.
    Recorded {
        /// Offsets are divided by this (2 = twice as fast).
        speedup: f64,
        /// Only rows at or after this trace offset (µs).
        start_us: Option<i64>,
        /// Only rows before this trace offset (µs).
        end_us: Option<i64>,
        /// Spread rows that share one recorded timestamp evenly over this
        /// many trace microseconds (for quantized traces such as Mooncake's).
        spread_us: Option<i64>,
        /// Stop after this many requests (a prefix of the window).
        requests: Option<u64>,
    },
    /// A target rate with an arrival process, taking trace rows in order or
    /// shuffled, looping to fill the limit.
    Rate {
        /// Requests per second.
        rate: f64,
        /// Inter-arrival process.
        arrivals: Arrivals,
        /// Row order.
        order: Order,
        /// When to stop; with neither limit set, one pass over the trace.
        limit: Limit,
        /// Seed of gaps and shuffles.
        seed: u64,
    },
    /// Rate stages (`--stages`): the arrival process runs at each stage's
    /// rate in turn, optionally ramping between them, and stops at the end
    /// of the last stage.
    Stages {
        /// The stages, every one a rate.
        stages: Stages,
        /// Inter-arrival process, applied in each stage at its rate.
        arrivals: Arrivals,
        /// Row order.
        order: Order,
        /// Stop after this many requests, even before the last stage ends.
        requests: Option<u64>,
        /// Seed of gaps and shuffles.
        seed: u64,
    },
}

/// The load of one stage: an open-loop rate or a number of closed-loop
/// users.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageLoad {
    /// Requests (or, for a session trace, sessions) per second; 0 is idle.
    Rate(f64),
    /// Virtual users running back to back; 0 is idle.
    Users(usize),
}

impl StageLoad {
    /// The load as a number (rate or users).
    pub fn level(self) -> f64 {
        match self {
            Self::Rate(r) => r,
            Self::Users(u) => u as f64,
        }
    }
}

impl std::fmt::Display for StageLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rate(r) => write!(f, "{r}/s"),
            Self::Users(u) => write!(f, "{u} users"),
        }
    }
}

/// One stage: a load held for a duration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// What the stage offers.
    pub load: StageLoad,
    /// How long it lasts, nanoseconds.
    pub duration_ns: u64,
}

/// A run's stages (`--stages "10/s:60s,50/s:30s"` or `"2u:60s,8u:60s"`),
/// every one the same kind, and the ramp into each stage after the first.
///
/// Stage k covers `[start_k, start_k + duration_k)` of the run's clock. With
/// a ramp, the load moves linearly from stage k-1's level to stage k's over
/// the first `ramp` of stage k (or all of it, when shorter); the first
/// stage starts at its own level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stages {
    /// The stages in order.
    pub stages: Vec<Stage>,
    /// Ramp into each later stage, nanoseconds (0: steps).
    pub ramp_ns: u64,
}

/// The largest number of stages `--stages` takes.
pub const MAX_STAGES: usize = 100;

impl std::str::FromStr for Stages {
    type Err = String;

    /// Parses `LOAD:DURATION[,LOAD:DURATION...]` where `LOAD` is a rate
    /// (`10/s`, `600/m`) or users (`8u`, `8users`), and `DURATION` a
    /// humantime duration (`60s`, `1m30s`, `500ms`). The ramp is 0.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut stages = Vec::new();
        for (i, part) in text.split(',').enumerate() {
            let part = part.trim();
            let n = i + 1;
            let Some((load, duration)) = part.split_once(':') else {
                return Err(format!(
                    "stage {n} ({part:?}): expected LOAD:DURATION, such as 10/s:60s or 8u:60s"
                ));
            };
            let load = parse_load(load.trim()).map_err(|e| format!("stage {n} ({part:?}): {e}"))?;
            let duration = humantime::parse_duration(duration.trim())
                .map_err(|e| format!("stage {n} ({part:?}): duration: {e}"))?;
            if duration.is_zero() {
                return Err(format!(
                    "stage {n} ({part:?}): the duration must be above 0"
                ));
            }
            stages.push(Stage {
                load,
                duration_ns: u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
            });
            if stages.len() > MAX_STAGES {
                return Err(format!("more than {MAX_STAGES} stages"));
            }
        }
        let kinds = |l: &StageLoad| matches!(l, StageLoad::Rate(_));
        if let Some(first) = stages.first()
            && let Some(k) = stages
                .iter()
                .position(|s| kinds(&s.load) != kinds(&first.load))
        {
            return Err(format!(
                "stage {} is {} but stage 1 is {}: stages are all rates (open loop) or all users (closed loop)",
                k + 1,
                stages[k].load,
                first.load
            ));
        }
        if stages.iter().all(|s| s.load.level() == 0.0) {
            return Err("every stage is idle (0): nothing would be sent".into());
        }
        Ok(Self { stages, ramp_ns: 0 })
    }
}

fn parse_load(text: &str) -> Result<StageLoad, String> {
    let number = |t: &str| -> Result<f64, String> {
        t.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("load {text:?}: expected a number of 0 or more"))
    };
    if let Some(r) = text.strip_suffix("/s") {
        return Ok(StageLoad::Rate(number(r)?));
    }
    if let Some(r) = text.strip_suffix("/m") {
        return Ok(StageLoad::Rate(number(r)? / 60.0));
    }
    if let Some(u) = text
        .strip_suffix("users")
        .or_else(|| text.strip_suffix('u'))
    {
        let u = u.trim();
        return u
            .parse::<usize>()
            .map(StageLoad::Users)
            .map_err(|_| format!("load {text:?}: expected a whole number of users"));
    }
    Err(format!(
        "load {text:?}: expected a rate (10/s, 600/m) or users (8u)"
    ))
}

impl Stages {
    /// Whether the stages are closed-loop users.
    pub fn are_users(&self) -> bool {
        matches!(
            self.stages.first().map(|s| s.load),
            Some(StageLoad::Users(_))
        )
    }

    /// The sum of the stages' durations, nanoseconds.
    pub fn total_ns(&self) -> u64 {
        self.stages
            .iter()
            .fold(0u64, |t, s| t.saturating_add(s.duration_ns))
    }

    /// The stage an offset of the run falls in; offsets past the end count
    /// as the last stage.
    pub fn index_at(&self, offset_ns: u64) -> usize {
        let mut end = 0u64;
        for (i, s) in self.stages.iter().enumerate() {
            end = end.saturating_add(s.duration_ns);
            if offset_ns < end {
                return i;
            }
        }
        self.stages.len().saturating_sub(1)
    }

    /// The load's level at `offset_ns` (rate or users, ramps included), and
    /// the offset up to which it is the level's linear piece (the next
    /// change; `None` past the end).
    pub fn level_at(&self, offset_ns: u64) -> (f64, Option<u64>) {
        for seg in self.segments() {
            if offset_ns < seg.end_ns {
                let x = (offset_ns.saturating_sub(seg.start_ns)) as f64;
                let len = (seg.end_ns - seg.start_ns) as f64;
                let level = seg.from + (seg.to - seg.from) * (x / len);
                return (level, Some(seg.end_ns));
            }
        }
        (0.0, None)
    }

    /// The load as linear pieces over the run's clock, generated as walked
    /// (the closed loop asks for the level on every wait).
    fn segments(&self) -> impl Iterator<Item = Segment> + '_ {
        let mut start = 0u64;
        let mut prev: Option<f64> = None;
        self.stages.iter().flat_map(move |s| {
            let level = s.load.level();
            let end = start.saturating_add(s.duration_ns);
            let ramp = match prev {
                Some(p) if self.ramp_ns > 0 && p != level => self.ramp_ns.min(s.duration_ns),
                _ => 0,
            };
            let ramping = (ramp > 0).then(|| Segment {
                start_ns: start,
                end_ns: start + ramp,
                from: prev.unwrap_or(level),
                to: level,
            });
            let holding = (start + ramp < end).then_some(Segment {
                start_ns: start + ramp,
                end_ns: end,
                from: level,
                to: level,
            });
            prev = Some(level);
            start = end;
            ramping.into_iter().chain(holding)
        })
    }
}

/// A piece of a stage profile where the load moves linearly.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    start_ns: u64,
    end_ns: u64,
    from: f64,
    to: f64,
}

impl Segment {
    /// Expected arrivals over the whole piece.
    fn area(&self) -> f64 {
        (self.from + self.to) / 2.0 * (self.end_ns - self.start_ns) as f64 / 1e9
    }

    /// The offset into the piece, nanoseconds, by which `arrivals` expected
    /// arrivals have happened (`arrivals <= area`).
    fn offset_of(&self, arrivals: f64) -> f64 {
        let len_s = (self.end_ns - self.start_ns) as f64 / 1e9;
        let slope = (self.to - self.from) / len_s;
        // from * x + slope / 2 * x^2 = arrivals, solved in a form that stays
        // exact as the slope goes to 0.
        let disc = (self.from * self.from + 2.0 * slope * arrivals).max(0.0);
        let denom = self.from + disc.sqrt();
        let x = if denom > 0.0 {
            2.0 * arrivals / denom
        } else {
            0.0
        };
        (x * 1e9).min(len_s * 1e9)
    }
}

/// Maps a unit-rate arrival process onto a stage profile: an arrival at
/// `n` expected arrivals leaves when the profile's cumulative load
/// reaches `n` (time rescaling, which keeps the process's shape in every
/// stage).
#[derive(Debug)]
struct StagedClock {
    segments: Vec<Segment>,
    /// The piece being walked and the expected arrivals before it.
    at: usize,
    before: f64,
}

impl StagedClock {
    fn new(stages: &Stages) -> Self {
        Self {
            segments: stages.segments().collect(),
            at: 0,
            before: 0.0,
        }
    }

    /// The run offset of `arrivals` expected arrivals (non-decreasing calls),
    /// or `None` past the last stage.
    fn offset_ns(&mut self, arrivals: f64) -> Option<u64> {
        while let Some(seg) = self.segments.get(self.at) {
            let area = seg.area();
            if arrivals < self.before + area {
                let x = seg.offset_of(arrivals - self.before);
                return Some(seg.start_ns + x.round() as u64);
            }
            self.before += area;
            self.at += 1;
        }
        None
    }

    /// Expected arrivals over the whole profile.
    fn total(&self) -> f64 {
        self.segments.iter().map(Segment::area).sum()
    }
}

/// One request of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledRequest {
    /// Nanoseconds from the start of the run.
    pub offset_ns: u64,
    /// Row of the trace.
    pub trace_index: u32,
    /// How many times the trace had looped before this request (0 first).
    pub repeat: u32,
}

/// A schedule that cannot be built.
#[derive(Debug, Error, PartialEq)]
pub enum ScheduleError {
    /// The trace has no rows (in the window).
    #[error("the schedule is empty: {0}")]
    Empty(String),
    /// A recorded schedule of a trace without arrival times.
    #[error(
        "row {row} (request_id {request_id:?}) has no arrival_offset_us: this trace has no recorded times; use --rate"
    )]
    NoTimes {
        /// Trace row.
        row: usize,
        /// Its id.
        request_id: String,
    },
    /// A parameter out of range.
    #[error("{0}")]
    Invalid(String),
}

impl ScheduleSpec {
    /// The configured rate of a rate schedule (`None` for recorded times).
    pub fn target_rate(&self) -> Option<f64> {
        match self {
            Self::Rate { rate, .. } => Some(*rate),
            Self::Recorded { .. } | Self::Stages { .. } => None,
        }
    }

    /// The schedule of a closed loop (`--concurrency`, user stages, a
    /// concurrency sweep step): virtual users, not times, decide when
    /// requests leave, so only the rows' order and their number count
    /// (`None`: one pass over the trace).
    pub fn closed_loop(order: Order, requests: Option<u64>, seed: u64) -> Self {
        Self::Rate {
            // Unused: no request waits for an offset.
            rate: 1.0,
            arrivals: Arrivals::Constant,
            order,
            limit: Limit {
                duration_ns: None,
                requests,
            },
            seed,
        }
    }

    /// The stages of a staged schedule.
    pub fn stages(&self) -> Option<&Stages> {
        match self {
            Self::Stages { stages, .. } => Some(stages),
            _ => None,
        }
    }

    /// Checks parameters that the type does not.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ScheduleError::Invalid(format!(
                    "{name} must be a positive number, got {v}"
                )))
            }
        };
        match self {
            Self::Recorded {
                speedup,
                start_us,
                end_us,
                spread_us,
                ..
            } => {
                positive("--speedup", *speedup)?;
                if let (Some(s), Some(e)) = (start_us, end_us)
                    && s >= e
                {
                    return Err(ScheduleError::Invalid(format!(
                        "--start ({s} µs) must be before --end ({e} µs)"
                    )));
                }
                if spread_us.is_some_and(|q| q <= 0) {
                    return Err(ScheduleError::Invalid(
                        "--spread must be a positive duration".into(),
                    ));
                }
                Ok(())
            }
            Self::Rate { rate, arrivals, .. } => {
                positive("--rate", *rate)?;
                if let Arrivals::Gamma { shape } = arrivals {
                    positive("--burstiness", *shape)?;
                }
                Ok(())
            }
            Self::Stages {
                stages, arrivals, ..
            } => {
                if let Arrivals::Gamma { shape } = arrivals {
                    positive("--burstiness", *shape)?;
                }
                if stages.are_users() {
                    return Err(ScheduleError::Invalid(
                        "user stages run a closed loop, not a rate schedule".into(),
                    ));
                }
                let bad = stages.stages.iter().position(|s| {
                    !matches!(s.load, StageLoad::Rate(r) if r.is_finite() && r >= 0.0)
                        || s.duration_ns == 0
                });
                if let Some(k) = bad {
                    return Err(ScheduleError::Invalid(format!(
                        "--stages: stage {} must have a rate of 0 or more and a duration above 0",
                        k + 1
                    )));
                }
                if stages.stages.iter().all(|s| s.load.level() == 0.0) {
                    return Err(ScheduleError::Invalid(
                        "--stages: every stage is idle (0/s)".into(),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Builds the whole schedule of `trace` under `spec` (for tests and small
/// schedules; a run walks [`plan`] instead).
///
/// Invariants: offsets are non-decreasing; every `trace_index` is a valid
/// row; for `Recorded`, offsets are the rows' offsets (relative to the
/// window's first row, spread if asked) divided by the speedup; for `Rate`,
/// the same spec and trace always give the same schedule.
pub fn build(
    spec: &ScheduleSpec,
    trace: &[TraceRecord],
) -> Result<Vec<ScheduledRequest>, ScheduleError> {
    Ok(plan(spec, trace)?.collect())
}

/// The schedule of `trace` under `spec`, generated as it is walked: a rate
/// schedule holds only its generator state, so memory does not depend on
/// `--duration` (a recorded one holds one entry per trace row in the
/// window). The same spec and trace give the same sequence as [`build`].
pub fn plan(spec: &ScheduleSpec, trace: &[TraceRecord]) -> Result<Schedule, ScheduleError> {
    spec.validate()?;
    if trace.is_empty() {
        return Err(ScheduleError::Empty("the trace has no rows".into()));
    }
    match spec {
        ScheduleSpec::Recorded {
            speedup,
            start_us,
            end_us,
            spread_us,
            requests,
        } => {
            let rows = recorded(trace, *speedup, *start_us, *end_us, *spread_us, *requests)?;
            Ok(Schedule::Recorded(rows.into_iter()))
        }
        ScheduleSpec::Rate {
            rate,
            arrivals,
            order,
            limit,
            seed,
        } => Ok(Schedule::Rate(Box::new(RateSchedule::new(
            trace.len(),
            *rate,
            *arrivals,
            *order,
            *limit,
            *seed,
        )))),
        ScheduleSpec::Stages {
            stages,
            arrivals,
            order,
            requests,
            seed,
        } => {
            let mut r = RateSchedule::new(
                trace.len(),
                1.0,
                *arrivals,
                *order,
                Limit {
                    duration_ns: Some(stages.total_ns()),
                    requests: *requests,
                },
                *seed,
            );
            r.staged = Some(StagedClock::new(stages));
            Ok(Schedule::Rate(Box::new(r)))
        }
    }
}

/// A schedule being walked, in offset order.
#[derive(Debug)]
pub enum Schedule {
    /// The trace's own times, computed up front (one entry per row).
    Recorded(std::vec::IntoIter<ScheduledRequest>),
    /// An arrival process, generated lazily.
    Rate(Box<RateSchedule>),
    /// One shard of a schedule: its entries `index`, `index + count`, ...
    Sharded {
        /// The whole schedule.
        inner: Box<Schedule>,
        /// Which part.
        shard: Shard,
        /// Entries of the whole schedule walked so far.
        pos: u64,
    },
}

/// One of `count` interleaved parts of a schedule (`--shard K/N`): entry
/// `i` of the whole schedule belongs to shard `i % count`, so N processes
/// with the same trace, seed and flags together send exactly what one
/// would. In session replay an entry is a session, so a shard owns whole
/// sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based (Kubernetes' `JOB_COMPLETION_INDEX`).
    pub index: u32,
    /// How many shards.
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `K/N` with `0 <= K < N`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?}: expected K/N with 0 <= K < N, such as 0/4");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// How many of the `len` entries from position `pos` of the whole
    /// schedule are this shard's.
    fn take_of(self, pos: u64, len: u64) -> u64 {
        let (k, n) = (u64::from(self.index), u64::from(self.count));
        let first = pos + (k + n - pos % n) % n;
        let end = pos.saturating_add(len);
        if first >= end {
            0
        } else {
            (end - 1 - first) / n + 1
        }
    }
}

/// How many requests a schedule still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Remaining {
    /// The count (an estimate from the rate when not `exact`).
    pub requests: u64,
    /// Whether `requests` is exact.
    pub exact: bool,
}

impl Schedule {
    /// What is left after the requests taken so far, without generating it:
    /// exact for recorded times and count-limited rates, else the rate times
    /// the time left.
    pub fn remaining(&self) -> Remaining {
        match self {
            Self::Recorded(rows) => Remaining {
                requests: rows.len() as u64,
                exact: true,
            },
            Self::Rate(r) => r.remaining(),
            Self::Sharded { inner, shard, pos } => {
                let all = inner.remaining();
                Remaining {
                    requests: shard.take_of(*pos, all.requests),
                    exact: all.exact,
                }
            }
        }
    }

    /// Only the entries of `shard` (all of them for a single shard).
    pub fn sharded(self, shard: Shard) -> Self {
        if shard.count <= 1 {
            return self;
        }
        Self::Sharded {
            inner: Box::new(self),
            shard,
            pos: 0,
        }
    }

    /// The offset of the last request (exact for recorded times; for a
    /// rate schedule the duration limit, or the expected span of its count).
    pub fn span_hint_ns(&self) -> u64 {
        match self {
            Self::Recorded(rows) => rows.as_slice().last().map_or(0, |r| r.offset_ns),
            Self::Rate(r) => r.span_hint_ns(),
            Self::Sharded { inner, .. } => inner.span_hint_ns(),
        }
    }
}

impl Iterator for Schedule {
    type Item = ScheduledRequest;

    fn next(&mut self) -> Option<ScheduledRequest> {
        match self {
            Self::Recorded(rows) => rows.next(),
            Self::Rate(r) => r.next(),
            Self::Sharded { inner, shard, pos } => loop {
                let entry = inner.next()?;
                let at = *pos;
                *pos += 1;
                if at % u64::from(shard.count) == u64::from(shard.index) {
                    break Some(entry);
                }
            },
        }
    }
}

fn recorded(
    trace: &[TraceRecord],
    speedup: f64,
    start_us: Option<i64>,
    end_us: Option<i64>,
    spread_us: Option<i64>,
    requests: Option<u64>,
) -> Result<Vec<ScheduledRequest>, ScheduleError> {
    // (trace index, trace offset µs) of the rows in the window.
    let mut rows: Vec<(usize, i64)> = Vec::new();
    for (i, r) in trace.iter().enumerate() {
        let Some(t) = r.arrival_offset_us else {
            return Err(ScheduleError::NoTimes {
                row: i,
                request_id: r.request_id.clone(),
            });
        };
        if start_us.is_some_and(|s| t < s) || end_us.is_some_and(|e| t >= e) {
            continue;
        }
        rows.push((i, t));
        if requests.is_some_and(|n| rows.len() as u64 >= n) {
            break;
        }
    }
    let Some(&(_, first)) = rows.first() else {
        return Err(ScheduleError::Empty(
            "no trace rows fall inside --start/--end".into(),
        ));
    };
    // Spread: rows sharing a timestamp get i/k of the quantum each.
    let mut out = Vec::with_capacity(rows.len());
    let mut group_start = 0;
    while group_start < rows.len() {
        let t = rows[group_start].1;
        let mut group_end = group_start + 1;
        while group_end < rows.len() && rows[group_end].1 == t {
            group_end += 1;
        }
        let k = (group_end - group_start) as f64;
        for (j, &(index, t)) in rows[group_start..group_end].iter().enumerate() {
            let spread = spread_us.map_or(0.0, |q| q as f64 * j as f64 / k);
            let trace_us = (t - first) as f64 + spread;
            out.push(ScheduledRequest {
                offset_ns: (trace_us * 1_000.0 / speedup).round() as u64,
                trace_index: u32::try_from(index).unwrap_or(u32::MAX),
                repeat: 0,
            });
        }
        group_start = group_end;
    }
    // Spreading can move a row past the next group's start when the quantum
    // is larger than the gap; keep the schedule sorted.
    out.sort_by_key(|r| r.offset_ns);
    Ok(out)
}

/// Inter-arrival gaps of a rate schedule, nanoseconds.
#[derive(Debug)]
enum Gaps {
    Constant(f64),
    Poisson(Exp<f64>),
    Gamma(Gamma<f64>),
}

impl Gaps {
    fn new(rate: f64, arrivals: Arrivals) -> Self {
        let mean_gap_ns = 1e9 / rate;
        match arrivals {
            Arrivals::Constant => Self::Constant(mean_gap_ns),
            Arrivals::Poisson => Exp::new(rate).map_or(Self::Constant(mean_gap_ns), Self::Poisson),
            Arrivals::Gamma { shape } => Gamma::new(shape, 1.0 / (rate * shape))
                .map_or(Self::Constant(mean_gap_ns), Self::Gamma),
        }
    }

    fn next_ns(&self, rng: &mut StdRng) -> f64 {
        match self {
            Self::Constant(g) => *g,
            Self::Poisson(exp) => exp.sample(rng) * 1e9,
            Self::Gamma(gamma) => gamma.sample(rng) * 1e9,
        }
    }
}

/// A rate schedule's generator: the state of its arrival process and of
/// its walk over the trace rows.
#[derive(Debug)]
pub struct RateSchedule {
    rate: f64,
    gaps: Gaps,
    rng: StdRng,
    /// A second stream for shuffles, so the gaps are the same whatever the
    /// order.
    shuffle_rng: StdRng,
    order: Order,
    limit: Limit,
    one_pass: bool,
    rows: Vec<u32>,
    /// Next position in `rows`.
    pos: usize,
    repeat: u32,
    /// Time of the next arrival: nanoseconds of the run, or with `staged`
    /// of a unit-rate process that the stages map onto the run's clock.
    t_ns: f64,
    taken: u64,
    done: bool,
    staged: Option<StagedClock>,
}

impl RateSchedule {
    fn new(
        rows: usize,
        rate: f64,
        arrivals: Arrivals,
        order: Order,
        limit: Limit,
        seed: u64,
    ) -> Self {
        let mut s = Self {
            rate,
            gaps: Gaps::new(rate, arrivals),
            rng: StdRng::seed_from_u64(seed),
            shuffle_rng: StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            order,
            limit,
            one_pass: limit.duration_ns.is_none() && limit.requests.is_none(),
            rows: (0..rows)
                .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
                .collect(),
            pos: 0,
            repeat: 0,
            // The first request leaves at t=0, as in vLLM's and GuideLLM's
            // generators; gaps follow.
            t_ns: 0.0,
            taken: 0,
            done: false,
            staged: None,
        };
        if order == Order::Shuffle {
            s.rows.shuffle(&mut s.shuffle_rng);
        }
        s
    }

    fn remaining(&self) -> Remaining {
        if self.done {
            return Remaining {
                requests: 0,
                exact: true,
            };
        }
        let by_count = self.limit.requests.map(|n| n.saturating_sub(self.taken));
        let by_time = match &self.staged {
            Some(clock) => Some((clock.total() - self.t_ns / 1e9).max(0.0).ceil() as u64),
            None => self.limit.duration_ns.map(|d| {
                let left_s = (d as f64 - self.t_ns).max(0.0) / 1e9;
                (left_s * self.rate).ceil() as u64
            }),
        };
        let one_pass = self
            .one_pass
            .then(|| (self.rows.len() - self.pos.min(self.rows.len())) as u64);
        match (by_count, by_time, one_pass) {
            (_, _, Some(n)) => Remaining {
                requests: n,
                exact: true,
            },
            (Some(c), None, _) => Remaining {
                requests: c,
                exact: true,
            },
            (Some(c), Some(t), _) => Remaining {
                requests: c.min(t),
                exact: false,
            },
            (None, Some(t), _) => Remaining {
                requests: t,
                exact: false,
            },
            (None, None, None) => Remaining {
                requests: 0,
                exact: true,
            },
        }
    }

    fn span_hint_ns(&self) -> u64 {
        if self.staged.is_some() {
            return self.limit.duration_ns.unwrap_or(0);
        }
        let gap = 1e9 / self.rate;
        let by_count = self
            .limit
            .requests
            .map(|n| (n.saturating_sub(1) as f64 * gap) as u64);
        match (self.limit.duration_ns, by_count) {
            (Some(d), Some(c)) => d.min(c),
            (Some(d), None) => d,
            (None, Some(c)) => c,
            (None, None) => (self.rows.len().saturating_sub(1) as f64 * gap) as u64,
        }
    }
}

impl Iterator for RateSchedule {
    type Item = ScheduledRequest;

    fn next(&mut self) -> Option<ScheduledRequest> {
        if self.done {
            return None;
        }
        if self.pos >= self.rows.len() {
            if self.one_pass {
                self.done = true;
                return None;
            }
            self.pos = 0;
            self.repeat = self.repeat.saturating_add(1);
            if self.order == Order::Shuffle {
                self.rows.shuffle(&mut self.shuffle_rng);
            }
        }
        if self.limit.requests.is_some_and(|n| self.taken >= n) {
            self.done = true;
            return None;
        }
        let offset_ns = match &mut self.staged {
            Some(clock) => match clock.offset_ns(self.t_ns / 1e9) {
                Some(o) => o,
                None => {
                    self.done = true;
                    return None;
                }
            },
            None => self.t_ns.round() as u64,
        };
        if self.limit.duration_ns.is_some_and(|d| offset_ns >= d) {
            self.done = true;
            return None;
        }
        let index = *self.rows.get(self.pos)?;
        self.pos += 1;
        self.taken += 1;
        self.t_ns += self.gaps.next_ns(&mut self.rng);
        Some(ScheduledRequest {
            offset_ns,
            trace_index: index,
            repeat: self.repeat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(offsets: &[Option<i64>]) -> Vec<TraceRecord> {
        offsets
            .iter()
            .enumerate()
            .map(|(i, &t)| TraceRecord {
                request_id: format!("r{i}"),
                arrival_offset_us: t,
                input_tokens: 10,
                output_tokens: 5,
                source_row: i as i64,
                ..TraceRecord::default()
            })
            .collect()
    }

    fn recorded_spec(speedup: f64) -> ScheduleSpec {
        ScheduleSpec::Recorded {
            speedup,
            start_us: None,
            end_us: None,
            spread_us: None,
            requests: None,
        }
    }

    #[test]
    fn recorded_offsets_are_scaled_by_speedup() {
        let t = trace(&[Some(0), Some(1_000), Some(3_000)]);
        let s = build(&recorded_spec(2.0), &t).unwrap();
        let offsets: Vec<u64> = s.iter().map(|r| r.offset_ns).collect();
        assert_eq!(offsets, vec![0, 500_000, 1_500_000]);
    }

    #[test]
    fn recorded_window_is_relative_to_its_first_row() {
        let t = trace(&[Some(0), Some(1_000), Some(3_000), Some(9_000)]);
        let spec = ScheduleSpec::Recorded {
            speedup: 1.0,
            start_us: Some(1_000),
            end_us: Some(9_000),
            spread_us: None,
            requests: None,
        };
        let s = build(&spec, &t).unwrap();
        assert_eq!(
            s.iter()
                .map(|r| (r.trace_index, r.offset_ns))
                .collect::<Vec<_>>(),
            vec![(1, 0), (2, 2_000_000)]
        );
    }

    #[test]
    fn spread_distributes_a_quantum_evenly() {
        let t = trace(&[Some(0), Some(0), Some(0), Some(0), Some(1_000)]);
        let spec = ScheduleSpec::Recorded {
            speedup: 1.0,
            start_us: None,
            end_us: None,
            spread_us: Some(1_000),
            requests: None,
        };
        let s = build(&spec, &t).unwrap();
        let offsets: Vec<u64> = s.iter().map(|r| r.offset_ns).collect();
        assert_eq!(offsets, vec![0, 250_000, 500_000, 750_000, 1_000_000]);
    }

    #[test]
    fn recorded_needs_times() {
        let t = trace(&[Some(0), None]);
        assert!(matches!(
            build(&recorded_spec(1.0), &t),
            Err(ScheduleError::NoTimes { row: 1, .. })
        ));
    }

    fn rate_spec(rate: f64, arrivals: Arrivals, limit: Limit, seed: u64) -> ScheduleSpec {
        ScheduleSpec::Rate {
            rate,
            arrivals,
            order: Order::Sequential,
            limit,
            seed,
        }
    }

    #[test]
    fn constant_rate_is_exact_and_loops() {
        let t = trace(&[None, None, None]);
        let limit = Limit {
            duration_ns: None,
            requests: Some(7),
        };
        let s = build(&rate_spec(1_000.0, Arrivals::Constant, limit, 1), &t).unwrap();
        assert_eq!(s.len(), 7);
        for (i, r) in s.iter().enumerate() {
            assert_eq!(r.offset_ns, i as u64 * 1_000_000);
            assert_eq!(r.trace_index as usize, i % 3);
            assert_eq!(r.repeat as usize, i / 3);
        }
    }

    #[test]
    fn poisson_and_gamma_keep_the_mean_rate() {
        let t = trace(&[None; 10]);
        let limit = Limit {
            duration_ns: Some(100_000_000_000),
            requests: None,
        };
        for arrivals in [
            Arrivals::Poisson,
            Arrivals::Gamma { shape: 0.5 },
            Arrivals::Gamma { shape: 4.0 },
        ] {
            let s = build(&rate_spec(200.0, arrivals, limit, 7), &t).unwrap();
            let achieved = s.len() as f64 / 100.0;
            assert!(
                (achieved - 200.0).abs() < 200.0 * 0.03,
                "{arrivals:?}: {achieved}"
            );
            assert!(s.windows(2).all(|w| w[0].offset_ns <= w[1].offset_ns));
        }
    }

    #[test]
    fn gamma_shape_sets_burstiness() {
        // Coefficient of variation of gamma gaps is 1/sqrt(shape).
        let t = trace(&[None; 10]);
        let limit = Limit {
            duration_ns: None,
            requests: Some(20_000),
        };
        for shape in [0.25f64, 1.0, 4.0] {
            let s = build(&rate_spec(100.0, Arrivals::Gamma { shape }, limit, 3), &t).unwrap();
            let gaps: Vec<f64> = s
                .windows(2)
                .map(|w| (w[1].offset_ns - w[0].offset_ns) as f64)
                .collect();
            let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
            let cv = var.sqrt() / mean;
            let expected = 1.0 / shape.sqrt();
            assert!(
                (cv - expected).abs() < expected * 0.1,
                "shape {shape}: cv {cv}"
            );
        }
    }

    #[test]
    fn same_seed_same_schedule_different_seed_differs() {
        let t = trace(&[None; 5]);
        let limit = Limit {
            duration_ns: None,
            requests: Some(50),
        };
        let spec = |seed| ScheduleSpec::Rate {
            rate: 10.0,
            arrivals: Arrivals::Poisson,
            order: Order::Shuffle,
            limit,
            seed,
        };
        assert_eq!(build(&spec(1), &t).unwrap(), build(&spec(1), &t).unwrap());
        assert_ne!(build(&spec(1), &t).unwrap(), build(&spec(2), &t).unwrap());
    }

    #[test]
    fn shuffle_visits_every_row_once_per_loop() {
        let t = trace(&[None; 6]);
        let limit = Limit {
            duration_ns: None,
            requests: Some(12),
        };
        let spec = ScheduleSpec::Rate {
            rate: 10.0,
            arrivals: Arrivals::Constant,
            order: Order::Shuffle,
            limit,
            seed: 9,
        };
        let s = build(&spec, &t).unwrap();
        for pass in s.chunks(6) {
            let mut idx: Vec<u32> = pass.iter().map(|r| r.trace_index).collect();
            idx.sort_unstable();
            assert_eq!(idx, vec![0, 1, 2, 3, 4, 5]);
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let t = trace(&[None]);
        assert!(build(&rate_spec(0.0, Arrivals::Poisson, Limit::default(), 0), &t).is_err());
        assert!(
            build(
                &rate_spec(1.0, Arrivals::Gamma { shape: -1.0 }, Limit::default(), 0),
                &t
            )
            .is_err()
        );
        assert!(build(&recorded_spec(0.0), &trace(&[Some(0)])).is_err());
        assert!(build(&recorded_spec(1.0), &[]).is_err());
    }

    #[test]
    fn stages_parse_and_refuse_with_the_stage_named() {
        let st: Stages = "10/s:60s, 600/m:1m30s,0/s:500ms".parse().unwrap();
        assert_eq!(st.stages.len(), 3);
        assert_eq!(st.stages[1].load, StageLoad::Rate(10.0));
        assert_eq!(st.stages[1].duration_ns, 90_000_000_000);
        assert_eq!(st.total_ns(), 150_500_000_000);
        assert_eq!(st.index_at(0), 0);
        assert_eq!(st.index_at(60_000_000_000), 1);
        assert_eq!(st.index_at(u64::MAX), 2);
        let users: Stages = "2u:10s,8users:10s".parse().unwrap();
        assert!(users.are_users());
        assert_eq!(users.stages[1].load, StageLoad::Users(8));
        for (text, says) in [
            ("10/s", "stage 1"),
            ("10/s:60s,fast:10s", "stage 2"),
            ("10/s:0s", "above 0"),
            ("-1/s:10s", "0 or more"),
            ("2.5u:10s", "whole number"),
            ("10/s:10s,2u:10s", "all rates"),
            ("0/s:10s", "idle"),
            ("10/s:ten", "duration"),
        ] {
            let err = text.parse::<Stages>().unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn poisson_stages_keep_each_stages_mean_rate() {
        let stages: Stages = "200/s:20s,1000/s:20s,0/s:5s,50/s:20s".parse().unwrap();
        let spec = ScheduleSpec::Stages {
            stages: stages.clone(),
            arrivals: Arrivals::Poisson,
            order: Order::Shuffle,
            requests: None,
            seed: 7,
        };
        let t = trace(&[None; 100]);
        let s = build(&spec, &t).unwrap();
        let mut counts = [0usize; 4];
        for r in &s {
            counts[stages.index_at(r.offset_ns)] += 1;
        }
        assert_eq!(counts[2], 0, "idle stage");
        for (k, expected) in [(0, 4_000.0), (1, 20_000.0), (3, 1_000.0)] {
            let got = counts[k] as f64;
            // Within four standard deviations of a Poisson count.
            assert!(
                (got - expected).abs() < 4.0 * expected.sqrt(),
                "stage {k}: {got} against {expected}"
            );
        }
        assert!(s.windows(2).all(|w| w[0].offset_ns <= w[1].offset_ns));
        assert!(s.last().unwrap().offset_ns < stages.total_ns());
        // Same seed, same schedule.
        assert_eq!(build(&spec, &t).unwrap(), s);
        // A request limit ends it sooner.
        let limited = ScheduleSpec::Stages {
            stages,
            arrivals: Arrivals::Poisson,
            order: Order::Shuffle,
            requests: Some(10),
            seed: 7,
        };
        assert_eq!(build(&limited, &t).unwrap(), s[..10]);
    }

    #[test]
    fn a_ramp_is_linear_between_levels() {
        let mut st: Stages = "10/s:10s,30/s:10s,30/s:5s,0/s:4s".parse().unwrap();
        st.ramp_ns = 4_000_000_000;
        // Stage 0 holds 10; stage 1 ramps 10 -> 30 over its first 4 s;
        // stage 2 holds (no change); stage 3 ramps 30 -> 0 over all of it.
        assert_eq!(st.level_at(5_000_000_000).0, 10.0);
        assert!((st.level_at(12_000_000_000).0 - 20.0).abs() < 1e-9);
        assert_eq!(st.level_at(15_000_000_000).0, 30.0);
        assert_eq!(st.level_at(22_000_000_000).0, 30.0);
        assert!((st.level_at(27_000_000_000).0 - 15.0).abs() < 1e-9);
        assert_eq!(st.level_at(29_000_000_000), (0.0, None));
        // Expected arrivals: 100 + (80 + 180) + 150 + 60 = 570.
        let clock = StagedClock::new(&st);
        assert!((clock.total() - 570.0).abs() < 1e-9);
        let spec = ScheduleSpec::Stages {
            stages: st,
            arrivals: Arrivals::Constant,
            order: Order::Sequential,
            requests: None,
            seed: 0,
        };
        let n = build(&spec, &trace(&[None; 3])).unwrap().len();
        assert!((569..=571).contains(&n), "{n}");
    }

    #[test]
    fn shards_interleave_to_exactly_the_whole_schedule() {
        let t = trace(&[None; 7]);
        let spec = rate_spec(
            100.0,
            Arrivals::Poisson,
            Limit {
                duration_ns: None,
                requests: Some(50),
            },
            9,
        );
        let whole = build(&spec, &t).unwrap();
        let mut union = Vec::new();
        for index in 0..3 {
            let shard = Shard { index, count: 3 };
            let part = plan(&spec, &t).unwrap().sharded(shard);
            let expected = part.remaining();
            let entries: Vec<_> = part.collect();
            assert_eq!(expected.requests, entries.len() as u64, "shard {index}");
            union.extend(entries);
        }
        union.sort_by_key(|r| (r.offset_ns, r.trace_index, r.repeat));
        let mut whole_sorted = whole.clone();
        whole_sorted.sort_by_key(|r| (r.offset_ns, r.trace_index, r.repeat));
        assert_eq!(union, whole_sorted);
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["3/3", "1/0", "a/2", "1"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        // Remaining counts midway.
        let mut part = plan(&spec, &t)
            .unwrap()
            .sharded(Shard { index: 1, count: 4 });
        part.next();
        // Entries 1, 5, ..., 49 are its 13; one taken leaves 12.
        assert_eq!(part.remaining().requests, 12);
    }
}
