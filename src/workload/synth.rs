//! `synth`: a trace (format v1, `source_format = synth`) from distributions
//! instead of a dataset. Every parameter goes into the metadata
//! (`llm_replay.synth`, `llm_replay.seed`), so the same spec and seed give the
//! same file.
//!
//! The arrival process, when there is one, gives the starts of sessions (a
//! session of one turn is a request): a renewal process (Poisson, gamma,
//! constant gaps) in operational time, mapped onto a rate that may change
//! over time (a `--rate-curve`, piecewise linear) and be multiplied in
//! bursts. Inside a session, turn k+1 arrives a think time after turn k; its
//! prompt is the shared system prompt, every earlier user message and reply,
//! and a new user message of `input` tokens, so its prefix blocks repeat
//! those of the turn before, as chat produces them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Exp, Gamma};

use super::WorkloadError;
use super::dist::{Dist, Durations, Lengths, Sampler};
use crate::schedule::Arrivals;
use crate::trace::{InputFile, Trace, TraceMetadata, TraceRecord, TraceWriter, read_trace};

/// How session starts arrive.
#[derive(Debug, Clone, PartialEq)]
pub enum SynthArrivals {
    /// No times: the trace is for `replay --rate` or a closed loop.
    None,
    /// A process at a rate that may change over time.
    Process {
        /// Gap distribution around the mean.
        process: Arrivals,
        /// Mean rate over time.
        rate: RateShape,
        /// Rate multiplied in periodic bursts.
        bursts: Option<Bursts>,
    },
}

/// The mean arrival rate over time, in sessions (requests) per second.
#[derive(Debug, Clone, PartialEq)]
pub enum RateShape {
    /// The same all along.
    Constant(f64),
    /// Piecewise linear through `(seconds, rate)` points, held after the
    /// last (and before the first) point.
    Curve {
        /// Where it was read from, for the metadata.
        file: String,
        /// The points, by time.
        points: Vec<(f64, f64)>,
    },
}

impl RateShape {
    /// Reads a rate curve: CSV rows `time,rate`, the time in seconds or as a
    /// duration (`90s`, `1h`), the rate in requests per second; a header
    /// row is skipped.
    pub fn from_csv(path: &Path) -> Result<Self, WorkloadError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| WorkloadError::Input {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let mut points: Vec<(f64, f64)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |field: &str, message: String| WorkloadError::Input {
                path: format!("{shown}: line {}", i + 1),
                message: format!("{field}: {message}"),
            };
            let mut cols = line.split(',').map(str::trim);
            let (Some(t), Some(r), None) = (cols.next(), cols.next(), cols.next()) else {
                return Err(bad(
                    "row",
                    format!("expected two columns time,rate, found {line:?}"),
                ));
            };
            let time = t
                .parse::<f64>()
                .ok()
                .or_else(|| humantime::parse_duration(t).ok().map(|d| d.as_secs_f64()));
            let rate = r.parse::<f64>().ok();
            let (time, rate) = match (time, rate) {
                (Some(t), Some(r)) => (t, r),
                // A header.
                _ if points.is_empty() && i == 0 => continue,
                (None, _) => {
                    return Err(bad("time", format!("{t:?} is not seconds or a duration")));
                }
                (_, None) => return Err(bad("rate", format!("{r:?} is not a number"))),
            };
            if !rate.is_finite() || rate < 0.0 {
                return Err(bad("rate", format!("{r} must be at least 0")));
            }
            if let Some((last, _)) = points.last()
                && time <= *last
            {
                return Err(bad(
                    "time",
                    format!("{t} is not after the previous row's {last} s"),
                ));
            }
            points.push((time, rate));
        }
        if points.is_empty() {
            return Err(WorkloadError::Input {
                path: shown,
                message: "no rows: expected CSV rows time,rate".into(),
            });
        }
        if points.iter().all(|(_, r)| *r == 0.0) {
            return Err(WorkloadError::Input {
                path: shown,
                message: "every rate is 0".into(),
            });
        }
        Ok(Self::Curve {
            file: path
                .file_name()
                .map_or(shown.clone(), |n| n.to_string_lossy().into_owned()),
            points,
        })
    }

    /// The rate at `t` seconds, and the next time its formula changes.
    fn at(&self, t: f64) -> (f64, f64, f64) {
        match self {
            Self::Constant(r) => (*r, 0.0, f64::INFINITY),
            Self::Curve { points, .. } => {
                let i = points.partition_point(|(pt, _)| *pt <= t);
                if i == 0 {
                    return (points[0].1, 0.0, points[0].0);
                }
                if i == points.len() {
                    return (points[i - 1].1, 0.0, f64::INFINITY);
                }
                let (t0, r0) = points[i - 1];
                let (t1, r1) = points[i];
                let slope = (r1 - r0) / (t1 - t0);
                (r0 + slope * (t - t0), slope, t1)
            }
        }
    }
}

/// The rate multiplied by `factor` for `length` every `every`, the first
/// burst starting at `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bursts {
    /// Rate multiplier inside a burst.
    pub factor: f64,
    /// How long each burst lasts.
    pub length: Duration,
    /// Time from one burst's start to the next's.
    pub every: Duration,
    /// Start of the first burst.
    pub at: Duration,
}

impl FromStr for Bursts {
    type Err = String;
    /// `5x:10s/every:60s[/at:30s]`; the first burst starts one period in
    /// unless `at` says otherwise.
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "write FACTORx:LENGTH/every:PERIOD[/at:START], e.g. 5x:10s/every:60s";
        let mut parts = s.split('/');
        let head = parts.next().unwrap_or_default();
        let (factor, length) = head
            .split_once("x:")
            .ok_or_else(|| format!("{s:?}: {usage}"))?;
        let factor: f64 = factor
            .trim()
            .parse()
            .map_err(|_| format!("{factor:?} is not a factor; {usage}"))?;
        if !factor.is_finite() || factor < 0.0 {
            return Err(format!("burst factor {factor} must be at least 0"));
        }
        let dur = |v: &str| {
            humantime::parse_duration(v.trim()).map_err(|e| format!("{v:?}: {e}; {usage}"))
        };
        let length = dur(length)?;
        let (mut every, mut at) = (None, None);
        for p in parts {
            match p.split_once(':') {
                Some(("every", v)) => every = Some(dur(v)?),
                Some(("at", v)) => at = Some(dur(v)?),
                _ => return Err(format!("{p:?}: {usage}")),
            }
        }
        let every = every.ok_or_else(|| format!("{s:?} has no /every:PERIOD; {usage}"))?;
        if length.is_zero() || length > every {
            return Err(format!(
                "a burst of {} every {} must last more than 0 and at most its period",
                humantime::format_duration(length),
                humantime::format_duration(every)
            ));
        }
        Ok(Self {
            factor,
            length,
            every,
            at: at.unwrap_or(every),
        })
    }
}

impl fmt::Display for Bursts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = humantime::format_duration;
        write!(
            f,
            "{}x:{}/every:{}/at:{}",
            self.factor,
            d(self.length),
            d(self.every),
            d(self.at)
        )
    }
}

impl Bursts {
    /// The multiplier at `t` seconds and the next time it changes.
    fn at(&self, t: f64) -> (f64, f64) {
        let (len, every, at) = (
            self.length.as_secs_f64(),
            self.every.as_secs_f64(),
            self.at.as_secs_f64(),
        );
        if t < at {
            return (1.0, at);
        }
        let k = ((t - at) / every).floor();
        let start = at + k * every;
        if t < start + len {
            (self.factor, start + len)
        } else {
            (1.0, start + every)
        }
    }
}

/// Sessions: how many turns, the think time between them, and the system
/// prompts they share.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionShape {
    /// Turns per session (1: independent requests).
    pub turns: Lengths,
    /// Between a turn's arrival and the next's.
    pub think_time: Durations,
    /// Tokens of the system prompt each session starts with (0: none).
    pub system_prompt_tokens: u32,
    /// How many different system prompts; each session draws one uniformly.
    pub system_prompts: u32,
}

impl Default for SessionShape {
    fn default() -> Self {
        Self {
            turns: Lengths(Dist::Constant(1.0)),
            think_time: Durations(Dist::Constant(5.0)),
            system_prompt_tokens: 0,
            system_prompts: 1,
        }
    }
}

impl SessionShape {
    /// Whether rows carry sessions (some session may have several turns).
    pub fn has_sessions(&self) -> bool {
        self.turns.0 != Dist::Constant(1.0) && self.turns.0 != Dist::Constant(0.0)
    }
}

/// Everything `synth` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    /// Prompt tokens of a request (in a session: of each new user message).
    pub input: Lengths,
    /// Tokens of each response.
    pub output: Lengths,
    /// Sessions (requests) to generate; with arrivals, the first of this and
    /// `duration` to be reached ends the trace.
    pub requests: Option<u64>,
    /// Arrivals of first turns stop here.
    pub duration: Option<Duration>,
    /// The arrival process.
    pub arrivals: SynthArrivals,
    /// Sessions and system prompts.
    pub sessions: SessionShape,
    /// Tokens per prefix block.
    pub block_size: u32,
    /// `request_kind` of every row.
    pub request_kind: Option<String>,
    /// `model` of every row.
    pub model: Option<String>,
    /// Seed of every draw.
    pub seed: u64,
}

/// Requests when neither a count nor a duration is given.
pub const DEFAULT_REQUESTS: u64 = 1_000;

impl SynthSpec {
    /// A spec of `input` and `output` lengths with the defaults: no times,
    /// no sessions, [`DEFAULT_REQUESTS`] requests, seed 0.
    pub fn new(input: Lengths, output: Lengths) -> Self {
        Self {
            input,
            output,
            requests: None,
            duration: None,
            arrivals: SynthArrivals::None,
            sessions: SessionShape::default(),
            block_size: 512,
            request_kind: None,
            model: None,
            seed: 0,
        }
    }

    /// The spec as one line, as the metadata keeps it.
    pub fn describe(&self) -> String {
        let mut out = vec![
            format!("input={}", self.input),
            format!("output={}", self.output),
        ];
        if let Some(n) = self.requests {
            out.push(format!("requests={n}"));
        }
        if let Some(d) = self.duration {
            out.push(format!("duration={}", humantime::format_duration(d)));
        }
        if let SynthArrivals::Process {
            process,
            rate,
            bursts,
        } = &self.arrivals
        {
            let name = match process {
                Arrivals::Poisson => "poisson".to_owned(),
                Arrivals::Gamma { shape } => format!("gamma(shape {shape})"),
                Arrivals::Constant => "constant".to_owned(),
            };
            out.push(format!("arrivals={name}"));
            match rate {
                RateShape::Constant(r) => out.push(format!("rate={r}")),
                RateShape::Curve { file, points } => {
                    out.push(format!("rate_curve={file} ({} points)", points.len()));
                }
            }
            if let Some(b) = bursts {
                out.push(format!("bursts={b}"));
            }
        }
        let s = &self.sessions;
        if s.has_sessions() {
            out.push(format!("turns={}", s.turns));
            out.push(format!("think_time={}", s.think_time));
        }
        if s.system_prompt_tokens > 0 {
            out.push(format!(
                "system_prompt_tokens={} system_prompts={}",
                s.system_prompt_tokens, s.system_prompts
            ));
        }
        if let Some(k) = &self.request_kind {
            out.push(format!("request_kind={k}"));
        }
        if let Some(m) = &self.model {
            out.push(format!("model={m}"));
        }
        out.push(format!("seed={}", self.seed));
        out.join(" ")
    }

    fn validate(&self) -> Result<(), WorkloadError> {
        let usage = |m: String| Err(WorkloadError::Usage(m));
        if self.requests == Some(0) {
            return usage("--requests must be at least 1".into());
        }
        if self.block_size == 0 {
            return usage("--block-size must be at least 1".into());
        }
        if self.sessions.system_prompts == 0 {
            return usage("--system-prompts must be at least 1".into());
        }
        if matches!(self.sessions.turns.0, Dist::Empirical { .. }) {
            return usage("--turns takes a value or a distribution, not from:TRACE".into());
        }
        match &self.arrivals {
            SynthArrivals::None if self.duration.is_some() => usage(
                "--duration bounds arrival times: give an arrival process (--arrivals poisson:RATE, --rate-curve) or use --requests"
                    .into(),
            ),
            SynthArrivals::Process { process, rate, .. } => {
                if let RateShape::Constant(r) = rate
                    && !(r.is_finite() && *r > 0.0)
                {
                    return usage(format!("the arrival rate must be above 0 (got {r})"));
                }
                if let Arrivals::Gamma { shape } = process
                    && !(shape.is_finite() && *shape > 0.0)
                {
                    return usage(format!("--burstiness must be above 0 (got {shape})"));
                }
                Ok(())
            }
            SynthArrivals::None => Ok(()),
        }
    }
}

/// Draws lengths; input and output from the same trace (and kind) come
/// from one row, so their correlation is the trace's own.
struct LengthDraws {
    input: Sampler,
    output: Sampler,
    joint: Option<Vec<(f64, f64)>>,
    files: Vec<InputFile>,
}

impl LengthDraws {
    fn new(spec: &SynthSpec) -> Result<Self, WorkloadError> {
        let mut files = Vec::new();
        let mut load = |dist: &Dist| -> Result<Option<Vec<(f64, f64)>>, WorkloadError> {
            let Dist::Empirical { trace, kind } = dist else {
                return Ok(None);
            };
            let t = read_trace(trace)?;
            let pairs = empirical_pairs(&t, kind.as_deref())?;
            let file = InputFile::describe(trace).map_err(|e| WorkloadError::Input {
                path: trace.display().to_string(),
                message: e.to_string(),
            })?;
            if !files.contains(&file) {
                files.push(file);
            }
            Ok(Some(pairs))
        };
        let inp = load(&spec.input.0)?;
        let out = load(&spec.output.0)?;
        let param = |d: &Dist| -> Result<Sampler, WorkloadError> {
            Sampler::param(d)
                .map_err(WorkloadError::Usage)?
                .ok_or_else(|| WorkloadError::Usage("empirical lengths not loaded".into()))
        };
        let joint = (spec.input.0 == spec.output.0)
            .then(|| inp.clone())
            .flatten();
        let input = match inp {
            Some(p) => Sampler::Values(p.iter().map(|(i, _)| *i).collect()),
            None => param(&spec.input.0)?,
        };
        let output = match out {
            Some(p) => Sampler::Values(p.iter().map(|(_, o)| *o).collect()),
            None => param(&spec.output.0)?,
        };
        Ok(Self {
            input,
            output,
            joint,
            files,
        })
    }

    fn draw(&self, rng: &mut StdRng) -> (i32, i32) {
        if let Some(pairs) = &self.joint
            && !pairs.is_empty()
        {
            let (i, o) = pairs[rng.random_range(0..pairs.len())];
            return (count(i), count(o));
        }
        (
            self.input.draw_count(rng, 1),
            self.output.draw_count(rng, 1),
        )
    }
}

fn count(v: f64) -> i32 {
    if v >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        (v.round() as i32).max(1)
    }
}

/// The (input, output) lengths of the first turns... of every row of `t`
/// of `kind`, or an error naming the trace when none is left.
fn empirical_pairs(t: &Trace, kind: Option<&str>) -> Result<Vec<(f64, f64)>, WorkloadError> {
    let pairs: Vec<(f64, f64)> = t
        .records
        .iter()
        .filter(|r| kind.is_none_or(|k| r.request_kind.as_deref() == Some(k)))
        .map(|r| (f64::from(r.input_tokens), f64::from(r.output_tokens)))
        .collect();
    if pairs.is_empty() {
        let kinds: std::collections::BTreeSet<&str> = t
            .records
            .iter()
            .filter_map(|r| r.request_kind.as_deref())
            .collect();
        return Err(WorkloadError::Input {
            path: t.path.display().to_string(),
            message: match kind {
                Some(k) => format!(
                    "no rows of request_kind {k:?} (it has {})",
                    if kinds.is_empty() {
                        "none".to_owned()
                    } else {
                        kinds.into_iter().collect::<Vec<_>>().join(", ")
                    }
                ),
                None => "no rows".into(),
            },
        });
    }
    Ok(pairs)
}

/// Unit-mean gaps of a renewal process.
enum Gaps {
    Exp(Exp<f64>),
    Gamma(Gamma<f64>),
    Constant,
}

impl Gaps {
    fn new(process: Arrivals) -> Result<Self, WorkloadError> {
        Ok(match process {
            Arrivals::Poisson => {
                Self::Exp(Exp::new(1.0).map_err(|e| WorkloadError::Usage(e.to_string()))?)
            }
            Arrivals::Gamma { shape } => Self::Gamma(
                Gamma::new(shape, 1.0 / shape)
                    .map_err(|e| WorkloadError::Usage(format!("--burstiness {shape}: {e}")))?,
            ),
            Arrivals::Constant => Self::Constant,
        })
    }

    fn draw(&self, rng: &mut StdRng) -> f64 {
        match self {
            Self::Exp(d) => d.sample(rng),
            Self::Gamma(d) => d.sample(rng),
            Self::Constant => 1.0,
        }
    }
}

/// The time `t` seconds when the integral of the rate from `from` reaches
/// `area`; `None` when the rate stays 0 for ever after.
fn advance(rate: &RateShape, bursts: Option<&Bursts>, from: f64, mut area: f64) -> Option<f64> {
    let mut t = from;
    for _ in 0..10_000_000 {
        let (r, slope, next_r) = rate.at(t);
        let (m, next_b) = bursts.map_or((1.0, f64::INFINITY), |b| b.at(t));
        let end = next_r.min(next_b);
        let (r, slope) = (r * m, slope * m);
        if end.is_infinite() {
            if r <= 0.0 {
                return None;
            }
            return Some(t + area / r);
        }
        let width = end - t;
        let whole = (r + (r + slope * width)) / 2.0 * width;
        if whole >= area && whole > 0.0 {
            // r x + slope x^2 / 2 = area, in the stable form.
            let disc = (r * r + 2.0 * slope * area).max(0.0);
            let x = 2.0 * area / (r + disc.sqrt());
            return Some(t + x.clamp(0.0, width));
        }
        area -= whole.max(0.0);
        // Step past the boundary so `at` sees the next segment.
        t = end;
    }
    None
}

/// Ids of prefix blocks: block `k` of system prompt `v`, or of session `s`.
fn block_id(space: u64, a: u64, k: u64) -> u64 {
    mix(mix(mix(space) ^ a) ^ k)
}

/// `id` renamed under `salt`: the same pair always gives the same id.
pub(crate) fn remix(id: u64, salt: u64) -> u64 {
    mix(id ^ mix(salt ^ 0x5eed))
}

/// A salt from a string (FNV-1a, then mixed).
pub(crate) fn mix_str(s: &str) -> u64 {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    mix(h)
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generated trace, ready to write.
#[derive(Debug, Clone)]
pub struct Synthesized {
    /// The rows, sorted by arrival.
    pub records: Vec<TraceRecord>,
    /// Its metadata.
    pub metadata: TraceMetadata,
}

/// Generates the trace `spec` asks for.
pub fn generate(spec: &SynthSpec) -> Result<Synthesized, WorkloadError> {
    spec.validate()?;
    let lengths = LengthDraws::new(spec)?;
    let turns = Sampler::param(&spec.sessions.turns.0)
        .map_err(WorkloadError::Usage)?
        .ok_or_else(|| WorkloadError::Usage("--turns from:TRACE is not supported".into()))?;
    let think = Sampler::param(&spec.sessions.think_time.0)
        .map_err(WorkloadError::Usage)?
        .ok_or_else(|| WorkloadError::Usage("--think-time from:TRACE is not supported".into()))?;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    // Separate streams, so changing the lengths does not move the times.
    let mut time_rng = StdRng::seed_from_u64(mix(spec.seed ^ 0x7469_6d65));
    let sessions = spec.sessions.has_sessions();
    let sys = spec.sessions.system_prompt_tokens;
    let with_blocks = sessions || sys > 0;
    let b = u64::from(spec.block_size);
    let space = mix(spec.seed);
    let limit = spec.requests.or(match spec.arrivals {
        SynthArrivals::None => Some(DEFAULT_REQUESTS),
        SynthArrivals::Process { .. } => spec.duration.is_none().then_some(DEFAULT_REQUESTS),
    });
    let horizon = spec.duration.map(|d| d.as_secs_f64());
    let process = match &spec.arrivals {
        SynthArrivals::None => None,
        SynthArrivals::Process {
            process,
            rate,
            bursts,
        } => Some((Gaps::new(*process)?, rate, bursts.as_ref())),
    };
    // The renewal process is stationary from t = 0: the first gap is drawn
    // like the others (for constant gaps, half a gap).
    let mut clock = 0.0f64;
    let mut first = true;
    let mut rows: Vec<(f64, u64, TraceRecord)> = Vec::new();
    let mut n_sessions = 0u64;
    while limit.is_none_or(|n| n_sessions < n) {
        let start = match &process {
            None => None,
            Some((gaps, rate, bursts)) => {
                let mut area = gaps.draw(&mut time_rng);
                if first && matches!(gaps, Gaps::Constant) {
                    area = 0.5;
                }
                first = false;
                let Some(t) = advance(rate, *bursts, clock, area) else {
                    break;
                };
                if horizon.is_some_and(|h| t >= h) {
                    break;
                }
                clock = t;
                Some(t)
            }
        };
        let s = n_sessions;
        n_sessions += 1;
        let n_turns = if sessions {
            turns.draw_count(&mut rng, 1)
        } else {
            1
        };
        let variant = if sys > 0 && spec.sessions.system_prompts > 1 {
            rng.random_range(0..spec.sessions.system_prompts)
        } else {
            0
        };
        let mut history = i64::from(sys);
        let mut at = start;
        for turn in 0..n_turns {
            let think_s = (turn > 0).then(|| think.draw(&mut time_rng));
            if let (Some(a), Some(th)) = (at, think_s) {
                at = Some(a + th);
            }
            let (user, output) = lengths.draw(&mut rng);
            let input = (history + i64::from(user)).min(i64::from(i32::MAX));
            let blocks = with_blocks.then(|| {
                let n = (input as u64).div_ceil(b);
                (0..n)
                    .map(|k| {
                        if (k + 1) * b <= u64::from(sys) {
                            block_id(space ^ 1, u64::from(variant), k)
                        } else if (k + 1) * b <= input as u64 {
                            block_id(space ^ 2, s, k)
                        } else {
                            // The last, partial block: this turn's own.
                            block_id(space ^ 3, s << 20 | u64::from(turn as u32), k)
                        }
                    })
                    .collect()
            });
            let record = TraceRecord {
                request_id: String::new(),
                arrival_offset_us: at.map(|t| (t * 1e6).round() as i64),
                input_tokens: input as i32,
                output_tokens: output,
                session_id: sessions.then(|| format!("s{s}")),
                turn_index: sessions.then_some(turn),
                think_time_us: think_s.map(|t| (t * 1e6).round() as i64),
                prefix_block_ids: blocks,
                model: spec.model.clone(),
                request_kind: spec.request_kind.clone(),
                prompt_text: None,
                source_row: 0,
                user_id: None,
            };
            rows.push((at.unwrap_or(0.0), rows.len() as u64, record));
            history = input + i64::from(output);
        }
    }
    if process.is_some() {
        rows.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    }
    let records: Vec<TraceRecord> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (_, made, mut r))| {
            r.request_id = format!("synth-{i}");
            r.source_row = made as i64;
            r
        })
        .collect();
    let mut metadata = TraceMetadata::new("synth");
    metadata.input_files = lengths.files;
    metadata.prefix_block_size = with_blocks.then_some(spec.block_size);
    metadata.time_unit = process.is_some().then(|| "us".to_owned());
    metadata.rows_read = records.len() as u64;
    metadata.rows_written = records.len() as u64;
    metadata.extra.insert("synth".into(), spec.describe());
    metadata.extra.insert("seed".into(), spec.seed.to_string());
    Ok(Synthesized { records, metadata })
}

/// Generates `spec` and writes it to `path`.
pub fn write(spec: &SynthSpec, path: &Path) -> Result<Synthesized, WorkloadError> {
    let synth = generate(spec)?;
    write_records(path, &synth.records, synth.metadata.clone())?;
    Ok(synth)
}

/// Writes rows and metadata as a trace file.
pub fn write_records(
    path: &Path,
    records: &[TraceRecord],
    metadata: TraceMetadata,
) -> Result<TraceMetadata, WorkloadError> {
    let mut w = TraceWriter::create(path)?;
    for r in records {
        w.write(r)?;
    }
    Ok(w.finish(metadata)?)
}

/// Where `replay --synthetic` keeps the trace it generated: beside the
/// results (`results-X.parquet` -> `results-X.trace.parquet`).
pub fn beside(results: &Path) -> PathBuf {
    let stem = results
        .file_stem()
        .map_or_else(|| "results".into(), |s| s.to_string_lossy().into_owned());
    results.with_file_name(format!("{stem}.trace.parquet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(input: &str, output: &str) -> SynthSpec {
        SynthSpec::new(input.parse().unwrap(), output.parse().unwrap())
    }

    fn poisson(rate: f64) -> SynthArrivals {
        SynthArrivals::Process {
            process: Arrivals::Poisson,
            rate: RateShape::Constant(rate),
            bursts: None,
        }
    }

    #[test]
    fn fixed_lengths_and_no_times_by_default() {
        let s = generate(&spec("100", "16")).unwrap();
        assert_eq!(s.records.len() as u64, DEFAULT_REQUESTS);
        assert!(s.records.iter().all(|r| r.input_tokens == 100
            && r.output_tokens == 16
            && r.arrival_offset_us.is_none()
            && r.session_id.is_none()
            && r.prefix_block_ids.is_none()));
        assert_eq!(s.metadata.source_format, "synth");
        assert_eq!(s.metadata.extra["synth"], "input=100 output=16 seed=0");
    }

    #[test]
    fn the_same_seed_gives_the_same_trace_and_another_does_not() {
        let mut a = spec("normal:512,128", "lognormal:200,100");
        a.arrivals = poisson(20.0);
        a.requests = Some(500);
        let x = generate(&a).unwrap().records;
        assert_eq!(x, generate(&a).unwrap().records);
        a.seed = 1;
        assert_ne!(x, generate(&a).unwrap().records);
    }

    #[test]
    fn poisson_arrivals_have_the_asked_rate_and_stop_at_the_duration() {
        let mut a = spec("100", "16");
        a.arrivals = poisson(50.0);
        a.duration = Some(Duration::from_secs(200));
        let s = generate(&a).unwrap();
        let n = s.records.len() as f64;
        // 10,000 expected, sd 100.
        assert!((n - 10_000.0).abs() < 400.0, "{n}");
        let last = s.records.last().unwrap().arrival_offset_us.unwrap();
        assert!(last < 200_000_000);
    }

    #[test]
    fn a_rate_curve_and_bursts_shape_the_arrivals() {
        // 10/s rising to 30/s over 100 s, then held: 2,000 + 30 * 100.
        let rate = RateShape::Curve {
            file: "c.csv".into(),
            points: vec![(0.0, 10.0), (100.0, 30.0)],
        };
        let mut a = spec("100", "16");
        a.arrivals = SynthArrivals::Process {
            process: Arrivals::Constant,
            rate: rate.clone(),
            bursts: None,
        };
        a.duration = Some(Duration::from_secs(200));
        let s = generate(&a).unwrap();
        assert!(
            (s.records.len() as i64 - 5_000).abs() <= 2,
            "{}",
            s.records.len()
        );
        let in_first = s
            .records
            .iter()
            .filter(|r| r.arrival_offset_us.unwrap() < 50_000_000)
            .count();
        // 10 * 50 + 10 * 50 / 2 (the ramp to 20/s).
        assert!((in_first as i64 - 750).abs() <= 2, "{in_first}");
        // Bursts of 5x for 10 s every 60 s, at 10/s: 60 s hold 500 + 1000.
        a.arrivals = SynthArrivals::Process {
            process: Arrivals::Constant,
            rate: RateShape::Constant(10.0),
            bursts: Some("5x:10s/every:60s".parse().unwrap()),
        };
        a.duration = Some(Duration::from_secs(120));
        let s = generate(&a).unwrap();
        let between = |lo: i64, hi: i64| {
            s.records
                .iter()
                .filter(|r| (lo..hi).contains(&r.arrival_offset_us.unwrap()))
                .count() as i64
        };
        assert!((between(60_000_000, 70_000_000) - 500).abs() <= 1);
        assert!((between(70_000_000, 120_000_000) - 500).abs() <= 1);
        assert!((between(0, 60_000_000) - 600).abs() <= 1);
    }

    #[test]
    fn sessions_grow_their_history_and_share_system_prompt_blocks() {
        let mut a = spec("100", "50");
        a.arrivals = poisson(1.0);
        a.requests = Some(40);
        a.block_size = 64;
        a.sessions = SessionShape {
            turns: "3".parse().unwrap(),
            think_time: "2s".parse().unwrap(),
            system_prompt_tokens: 256,
            system_prompts: 2,
        };
        let s = generate(&a).unwrap();
        assert_eq!(s.records.len(), 120);
        let stats = crate::trace::inspect::compute(&Trace {
            path: "t".into(),
            metadata: s.metadata.clone(),
            records: s.records.clone(),
        });
        assert!(stats.violations.is_empty(), "{:?}", stats.violations);
        let turns: Vec<&TraceRecord> = s
            .records
            .iter()
            .filter(|r| r.session_id.as_deref() == Some("s3"))
            .collect();
        let inputs: Vec<i32> = turns.iter().map(|r| r.input_tokens).collect();
        assert_eq!(inputs, [356, 506, 656]);
        let t: Vec<i64> = turns.iter().map(|r| r.arrival_offset_us.unwrap()).collect();
        assert_eq!((t[1] - t[0], t[2] - t[1]), (2_000_000, 2_000_000));
        assert_eq!(turns[1].think_time_us, Some(2_000_000));
        // Turn 1's full blocks are a prefix of turn 2's.
        let b1 = turns[1].prefix_block_ids.as_ref().unwrap();
        let b2 = turns[2].prefix_block_ids.as_ref().unwrap();
        let full = 506 / 64;
        assert_eq!(b1[..full], b2[..full]);
        // Four system-prompt blocks, shared by sessions with the same one.
        let firsts: std::collections::HashSet<u64> = s
            .records
            .iter()
            .map(|r| r.prefix_block_ids.as_ref().unwrap()[0])
            .collect();
        assert_eq!(firsts.len(), 2);
    }

    #[test]
    fn empirical_lengths_come_from_a_trace_of_one_kind() {
        let dir = std::env::temp_dir().join(format!("synth-emp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.parquet");
        let rows: Vec<TraceRecord> = (0..10)
            .map(|i| TraceRecord {
                request_id: format!("r{i}"),
                input_tokens: if i % 2 == 0 { 1000 } else { 10 },
                output_tokens: if i % 2 == 0 { 7 } else { 3 },
                request_kind: Some(if i % 2 == 0 { "code" } else { "conv" }.into()),
                ..TraceRecord::default()
            })
            .collect();
        let mut m = TraceMetadata::new("test");
        m.rows_read = 10;
        write_records(&path, &rows, m).unwrap();
        let from = format!("from:{}@code", path.display());
        let s = generate(&spec(&from, &from)).unwrap();
        assert!(
            s.records
                .iter()
                .all(|r| (r.input_tokens, r.output_tokens) == (1000, 7))
        );
        assert_eq!(s.metadata.input_files.len(), 1);
        let e = generate(&spec(&format!("from:{}@chat", path.display()), "1")).unwrap_err();
        assert!(
            e.to_string()
                .contains("no rows of request_kind \"chat\" (it has code, conv)"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rate_curves_read_with_errors_that_name_the_line() {
        let dir = std::env::temp_dir().join(format!("synth-curve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("day.csv");
        std::fs::write(&p, "time,rate\n0,5\n1h,20\n2h,0\n").unwrap();
        let c = RateShape::from_csv(&p).unwrap();
        assert_eq!(
            c,
            RateShape::Curve {
                file: "day.csv".into(),
                points: vec![(0.0, 5.0), (3600.0, 20.0), (7200.0, 0.0)]
            }
        );
        std::fs::write(&p, "time,rate\n0,5\n10,x\n").unwrap();
        let e = RateShape::from_csv(&p).unwrap_err().to_string();
        assert!(
            e.contains("day.csv: line 3: rate: \"x\" is not a number"),
            "{e}"
        );
        std::fs::write(&p, "0,5\n0,6\n").unwrap();
        let e = RateShape::from_csv(&p).unwrap_err().to_string();
        assert!(e.contains("line 2: time"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_curve_that_falls_to_zero_ends_the_trace() {
        let mut a = spec("10", "1");
        a.arrivals = SynthArrivals::Process {
            process: Arrivals::Poisson,
            rate: RateShape::Curve {
                file: "c".into(),
                points: vec![(0.0, 10.0), (10.0, 0.0)],
            },
            bursts: None,
        };
        a.requests = Some(1_000_000);
        let s = generate(&a).unwrap();
        // 50 expected.
        assert!((20..90).contains(&s.records.len()), "{}", s.records.len());
    }

    #[test]
    fn bursts_parse() {
        let b: Bursts = "5x:10s/every:60s".parse().unwrap();
        assert_eq!((b.factor, b.at), (5.0, Duration::from_secs(60)));
        assert!("5x:70s/every:60s".parse::<Bursts>().is_err());
        assert!("5:10s".parse::<Bursts>().unwrap_err().contains("FACTORx"));
    }
}
