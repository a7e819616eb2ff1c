//! Live figures of a run while it goes: what was scheduled, sent and
//! answered, errors by kind, and TTFT, send lag and output tokens/s over
//! the last [`WINDOW`]; drawn as a bar on a terminal, as a plain line every
//! [`LINE_EVERY`] elsewhere (CI, `nohup`, container logs), and served as
//! Prometheus text with `--metrics-port` ([`exporter`]).
//!
//! It costs the hot path nothing new but one atomic add per failed row:
//! request tasks already count sends, rows and requests in flight in
//! [`Counters`]; the latency window is fed by the recorder thread, which
//! sees every row anyway, and published a few times a second under a lock
//! nobody else takes per request ([`Tap`]). The renderer runs on its own
//! timer.

pub mod exporter;

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use super::dispatch::ERROR_KINDS;
use super::dispatch::{ClosedLoop, Counters, RunClock};
use crate::client::Outcome;
use crate::record::ResultRow;
use crate::schedule::{Remaining, Schedule};
pub use exporter::Exporter;

/// The live latency and throughput figures cover this much of the recent
/// past.
pub const WINDOW: Duration = Duration::from_secs(10);

/// How often the plain line is printed when stderr is not a terminal.
pub const LINE_EVERY: Duration = Duration::from_secs(10);

/// How often the bar is redrawn.
const BAR_EVERY: Duration = Duration::from_millis(250);

/// How often the recorder publishes the window's figures.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// The window holds at most this many rows (the last ones): at 100,000
/// rows a second, a tenth of [`WINDOW`]. Bounds its memory on huge rates.
const WINDOW_MAX_ROWS: usize = 1_000_000;

/// How the progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, else plain lines.
    #[default]
    Auto,
    /// A bar (drawn only when stderr is a terminal).
    Bar,
    /// A plain line every [`LINE_EVERY`], and one at the end.
    Lines,
    /// Nothing.
    Off,
}

impl ProgressMode {
    /// What `Auto` becomes for a stderr that is (or is not) a terminal.
    pub fn resolve(self, terminal: bool) -> Self {
        match self {
            Self::Auto if terminal => Self::Bar,
            Self::Auto => Self::Lines,
            other => other,
        }
    }
}

/// How a run shows its progress: the mode, the metrics exporter (if
/// `--metrics-port` is given) and, in a sweep, which step this is. Cheap
/// to clone; the default is [`ProgressMode::Auto`], no exporter, no label.
#[derive(Debug, Clone, Default)]
pub struct Monitor {
    /// How the progress is drawn.
    pub mode: ProgressMode,
    /// Serves the live figures, when asked for.
    pub exporter: Option<Arc<Exporter>>,
    /// Says which run this is (a sweep's `step 2/4 rate=8`).
    pub label: Option<String>,
    /// The sweep step (1-based), exported as `llm_replay_step`.
    pub step: Option<u32>,
    /// Steps a sweep plans (the capacity search may add some).
    pub steps_planned: Option<u32>,
}

impl Monitor {
    /// A monitor drawing in `mode`.
    pub fn new(mode: ProgressMode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// This monitor for sweep step `index` (0-based) at `load` (such as
    /// `rate=8`): labelled `step 2/4 rate=8`, or `step 5 (search) rate=6`
    /// past the steps planned.
    pub fn step(&self, index: i32, load: &str) -> Self {
        let n = u32::try_from(index).unwrap_or(0).saturating_add(1);
        let label = match self.steps_planned {
            Some(total) if n <= total => format!("step {n}/{total} {load}"),
            Some(_) => format!("step {n} (search) {load}"),
            None => format!("step {n} {load}"),
        };
        Self {
            label: Some(label),
            step: Some(n),
            ..self.clone()
        }
    }

    /// The mode drawn when the run shows progress at all (`shown`).
    pub fn mode_for(&self, shown: bool) -> ProgressMode {
        if shown { self.mode } else { ProgressMode::Off }
    }

    /// This monitor with another label (a sweep's probes).
    pub fn labelled(&self, label: String) -> Self {
        Self {
            label: Some(label),
            ..self.clone()
        }
    }
}

/// What a run knows up front about its size and length.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Requests scheduled.
    pub scheduled: u64,
    /// Whether `scheduled` is exact (else estimated from the rate).
    pub exact: bool,
    /// Offset of the schedule's last send, when known.
    pub span: Option<Duration>,
}

impl Plan {
    /// The plan of a run of `planned` requests walking `schedule`, or in a
    /// closed loop `closed` (which ends at its duration or last stage, if
    /// either is given).
    pub fn of(planned: Remaining, schedule: &Schedule, closed: Option<&ClosedLoop>) -> Self {
        Self {
            scheduled: planned.requests,
            exact: planned.exact,
            span: match closed {
                Some(c) => c.duration.or_else(|| {
                    c.stages
                        .as_ref()
                        .map(|s| Duration::from_nanos(s.total_ns()))
                }),
                None => Some(Duration::from_nanos(schedule.span_hint_ns())),
            },
        }
    }
}

/// Figures of the recent window and the run so far, as the recorder last
/// published them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowFigures {
    /// TTFT median over the window, µs.
    pub ttft_p50_us: Option<f64>,
    /// TTFT p99 over the window, µs.
    pub ttft_p99_us: Option<f64>,
    /// Send lag p99 over the window, µs.
    pub send_lag_p99_us: Option<f64>,
    /// Output tokens per second over the window.
    pub output_tokens_per_s: f64,
    /// Rows in the window.
    pub rows: u64,
    /// TTFTs of ok rows so far.
    pub ttft_count: u64,
    /// Sum of the TTFTs so far, µs.
    pub ttft_sum_us: f64,
    /// Send lags so far.
    pub send_lag_count: u64,
    /// Sum of the send lags so far, µs.
    pub send_lag_sum_us: f64,
    /// Output tokens so far.
    pub output_tokens: u64,
}

/// One run's live state, shared by the run, the recorder's [`Tap`], the
/// renderer and the exporter.
#[derive(Debug)]
pub struct LiveRun {
    counters: Arc<Counters>,
    plan: Plan,
    start: Instant,
    draining: AtomicBool,
    stopped: Mutex<Option<String>>,
    window: Mutex<WindowFigures>,
    label: Option<String>,
    step: Option<u32>,
}

impl LiveRun {
    /// The live state of a run counted by `counters`, whose t=0 is
    /// `start`.
    pub fn new(counters: Arc<Counters>, plan: Plan, start: Instant, monitor: &Monitor) -> Self {
        Self {
            counters,
            plan,
            start,
            draining: AtomicBool::new(false),
            stopped: Mutex::new(None),
            window: Mutex::new(WindowFigures::default()),
            label: monitor.label.clone(),
            step: monitor.step,
        }
    }

    /// The last request was sent: what is left is draining.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The run was stopped early, for `why` (a signal, a fatal error).
    pub fn set_stopped(&self, why: String) {
        if let Ok(mut s) = self.stopped.lock() {
            *s = Some(why);
        }
    }

    fn publish(&self, figures: WindowFigures) {
        if let Ok(mut w) = self.window.lock() {
            *w = figures;
        }
    }

    /// The figures now.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let c = &self.counters;
        let elapsed = now.saturating_duration_since(self.start);
        let draining = self.draining.load(Ordering::Relaxed);
        let (sent, done, in_flight) = (
            c.sent.load(Ordering::Relaxed),
            c.done.load(Ordering::Relaxed),
            c.in_flight.load(Ordering::Relaxed),
        );
        Snapshot {
            elapsed,
            label: self.label.clone(),
            step: self.step,
            scheduled: self.plan.scheduled,
            scheduled_exact: self.plan.exact,
            sent,
            done,
            in_flight,
            errors: c.errors_by_kind.load(),
            eta: self.plan.span.map(|s| s.saturating_sub(elapsed)),
            draining,
            finished: false,
            stopped: self.stopped.lock().ok().and_then(|s| s.clone()),
            send_rate: None,
            window: self.window.lock().map(|w| *w).unwrap_or_default(),
        }
    }
}

/// The figures of a run at one moment: what the renderers and the
/// exporter draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Since the schedule's t=0.
    pub elapsed: Duration,
    /// Which run (sweep step).
    pub label: Option<String>,
    /// The sweep step (1-based).
    pub step: Option<u32>,
    /// Requests scheduled.
    pub scheduled: u64,
    /// Whether `scheduled` is exact.
    pub scheduled_exact: bool,
    /// Requests sent.
    pub sent: u64,
    /// Rows produced (any outcome).
    pub done: u64,
    /// Requests out and not answered.
    pub in_flight: u64,
    /// Rows not ok, in [`ERROR_KINDS`] order.
    pub errors: [u64; ERROR_KINDS.len()],
    /// Time until the schedule's last send, when known.
    pub eta: Option<Duration>,
    /// The last request was sent.
    pub draining: bool,
    /// The run is over.
    pub finished: bool,
    /// Why the run was stopped early, if it was.
    pub stopped: Option<String>,
    /// Sends per second over the last [`WINDOW`] (the renderer's count).
    pub send_rate: Option<f64>,
    /// The recorder's window.
    pub window: WindowFigures,
}

impl Snapshot {
    /// Rows not ok.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// The rows the run will have and whether that is exact: the
    /// schedule's count, or once the last request of an estimated one has
    /// left, what is done and what is still out (unless the run was
    /// stopped: then what the schedule had is the total, not reached).
    pub fn total(&self) -> (u64, bool) {
        if !self.scheduled_exact && (self.draining || self.finished) && self.stopped.is_none() {
            (self.done + self.in_flight, true)
        } else {
            (self.scheduled, self.scheduled_exact)
        }
    }

    /// Rows done over [`Self::total`], 0-100.
    pub fn percent(&self) -> f64 {
        match self.total() {
            (0, _) => 0.0,
            (total, _) => (self.done as f64 * 100.0 / total as f64).min(100.0),
        }
    }

    /// The fields of the progress, `|`-separated in the line, the ones a
    /// reader looks for first (and a narrow terminal keeps) first; `bar`
    /// leaves out what the bar itself shows.
    fn fields(&self, bar: bool) -> Vec<String> {
        let mut f = Vec::with_capacity(9);
        if let Some(label) = &self.label {
            f.push(label.clone());
        }
        let (total, exact) = self.total();
        let approx = if exact { "" } else { "~" };
        f.push(format!(
            "{}/{approx}{total}{} ({:.1}%)",
            self.done,
            if bar { "" } else { " done" },
            self.percent()
        ));
        f.push(if self.finished {
            match &self.stopped {
                Some(why) => format!("stopped ({why})"),
                None => "finished".to_owned(),
            }
        } else if self.draining {
            format!("draining {} in flight", self.in_flight)
        } else {
            match self.eta {
                Some(eta) => format!("ETA {}", fmt_duration(eta)),
                None => "ETA ?".to_owned(),
            }
        });
        let w = &self.window;
        f.push(match (w.ttft_p50_us, w.ttft_p99_us) {
            (Some(p50), Some(p99)) => {
                format!("TTFT p50 {} p99 {}", fmt_us(p50), fmt_us(p99))
            }
            _ => "TTFT -".to_owned(),
        });
        f.push(format!("{:.0} tok/s", w.output_tokens_per_s));
        let total = self.error_total();
        if total == 0 {
            f.push("errors 0".to_owned());
        } else {
            let kinds: Vec<String> = ERROR_KINDS
                .iter()
                .zip(self.errors)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            f.push(format!("errors {total} ({})", kinds.join(", ")));
        }
        if !(self.finished || self.draining) {
            f.push(format!("in flight {}", self.in_flight));
        }
        f.push(format!("sent {}", self.sent));
        if !(self.finished || self.draining)
            && let Some(rate) = self.send_rate
        {
            f.push(format!("{rate:.1} req/s"));
        }
        f
    }

    /// The plain line: elapsed time, then every figure, `|`-separated; no
    /// control characters. TTFT and tok/s are over the last [`WINDOW`].
    pub fn line(&self) -> String {
        format!("{} {}", self.stamp(), self.fields(false).join(" | "))
    }

    /// `[   16.0s]`: the time since t=0.
    fn stamp(&self) -> String {
        format!("[{:>7.1}s]", self.elapsed.as_secs_f64())
    }
}

/// `42s`, `3m05s`, `2h07m`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64().ceil() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// A latency in µs as `850µs`, `9.3ms`, `137ms`, `7.05s` or `12.3s`.
pub fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 10_000.0 {
        format!("{:.1}ms", us / 1e3)
    } else if us < 999_500.0 {
        format!("{:.0}ms", us / 1e3)
    } else if us < 9_995_000.0 {
        format!("{:.2}s", us / 1e6)
    } else {
        format!("{:.1}s", us / 1e6)
    }
}

/// One finished row, as the window keeps it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_us: i64,
    ttft_us: Option<i64>,
    send_lag_us: Option<i64>,
    output_tokens: u64,
}

/// The rows that finished in the last `span`, by their end time (explicit
/// timestamps, so it is a pure function of what it was given).
#[derive(Debug)]
pub struct Window {
    span_us: i64,
    samples: VecDeque<Sample>,
    scratch: Vec<f64>,
}

impl Window {
    /// An empty window over `span`.
    pub fn new(span: Duration) -> Self {
        Self {
            span_us: i64::try_from(span.as_micros()).unwrap_or(i64::MAX),
            samples: VecDeque::new(),
            scratch: Vec::new(),
        }
    }

    /// A row that ended at `at_us`.
    pub fn add(
        &mut self,
        at_us: i64,
        ttft_us: Option<i64>,
        send_lag_us: Option<i64>,
        output_tokens: u64,
    ) {
        if self.samples.len() >= WINDOW_MAX_ROWS {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at_us,
            ttft_us,
            send_lag_us,
            output_tokens,
        });
    }

    /// Drops the rows that ended `span` or longer before `now_us`. Rows
    /// arrive nearly in end order; one that came late leaves when the rows
    /// ahead of it have.
    pub fn prune(&mut self, now_us: i64) {
        let cutoff = now_us.saturating_sub(self.span_us);
        while self.samples.front().is_some_and(|s| s.at_us <= cutoff) {
            self.samples.pop_front();
        }
    }

    /// Rows in the window.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// TTFT p50 and p99, send lag p99 and output tokens per second of the
    /// rows in the window at `now_us`; `run_us` is how long the run has
    /// gone, so a run younger than the window is not diluted.
    pub fn figures(&mut self, now_us: i64, run_us: i64) -> WindowFigures {
        self.prune(now_us);
        let tokens: u64 = self.samples.iter().map(|s| s.output_tokens).sum();
        let secs = run_us.clamp(1_000_000, self.span_us.max(1_000_000)) as f64 / 1e6;
        let mut out = WindowFigures {
            output_tokens_per_s: tokens as f64 / secs,
            rows: self.samples.len() as u64,
            ..WindowFigures::default()
        };
        self.scratch.clear();
        self.scratch.extend(
            self.samples
                .iter()
                .filter_map(|s| s.ttft_us)
                .map(|v| v as f64),
        );
        out.ttft_p50_us = quantile(&mut self.scratch, 0.5);
        out.ttft_p99_us = quantile(&mut self.scratch, 0.99);
        self.scratch.clear();
        self.scratch.extend(
            self.samples
                .iter()
                .filter_map(|s| s.send_lag_us)
                .map(|v| v as f64),
        );
        out.send_lag_p99_us = quantile(&mut self.scratch, 0.99);
        out
    }
}

/// The `q` quantile by the summary's one method, reordering `values`
/// (a selection per rank, not a sort).
fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    crate::record::summary::quantile_by_rank(values.len(), q, |k| {
        *values.select_nth_unstable_by(k, f64::total_cmp).1
    })
}

/// The recorder's end of the window: it adds every row it writes and
/// publishes the figures to the run's [`LiveRun`] every
/// [`PUBLISH_EVERY`], so request tasks take no lock for it.
#[derive(Debug)]
pub struct Tap {
    live: Arc<LiveRun>,
    clock: RunClock,
    window: Window,
    totals: WindowFigures,
    last: Option<std::time::Instant>,
}

impl Tap {
    /// A tap publishing to `live`, on the run's `clock`.
    pub fn new(live: Arc<LiveRun>, clock: RunClock) -> Self {
        Self {
            live,
            clock,
            window: Window::new(WINDOW),
            totals: WindowFigures::default(),
            last: None,
        }
    }

    /// A row written.
    pub fn row(&mut self, row: &ResultRow) {
        let tokens = u64::try_from(row.output_tokens).unwrap_or(0);
        let ttft = row.ttft_us.filter(|_| row.outcome == Outcome::Ok);
        if let Some(t) = ttft {
            self.totals.ttft_count += 1;
            self.totals.ttft_sum_us += t as f64;
        }
        if let Some(l) = row.send_lag_us {
            self.totals.send_lag_count += 1;
            self.totals.send_lag_sum_us += l as f64;
        }
        self.totals.output_tokens += tokens;
        let at = row
            .completed_at_us
            .or(row.sent_at_us)
            .unwrap_or(row.scheduled_at_us);
        self.window.add(at, ttft, row.send_lag_us, tokens);
    }

    /// Publishes when [`PUBLISH_EVERY`] has passed since the last time.
    pub fn tick(&mut self) {
        if self.last.is_none_or(|t| t.elapsed() >= PUBLISH_EVERY) {
            self.publish();
        }
    }

    /// Publishes the figures now (and at the end, so the exporter's totals
    /// are the run's).
    pub fn publish(&mut self) {
        self.last = Some(std::time::Instant::now());
        let now = Instant::now();
        let now_us = self.clock.unix_us(now);
        let run_us = now_us.saturating_sub(self.clock.start_unix_us);
        let w = self.window.figures(now_us, run_us);
        self.live.publish(WindowFigures {
            ttft_count: self.totals.ttft_count,
            ttft_sum_us: self.totals.ttft_sum_us,
            send_lag_count: self.totals.send_lag_count,
            send_lag_sum_us: self.totals.send_lag_sum_us,
            output_tokens: self.totals.output_tokens,
            ..w
        });
    }
}

/// Sends per second over the last [`WINDOW`], from the sent count read at
/// each tick.
#[derive(Debug, Default)]
pub struct RateMeter {
    seen: VecDeque<(Duration, u64)>,
}

impl RateMeter {
    /// A meter with its first reading of `live` now.
    fn started(live: &LiveRun) -> Self {
        let mut m = Self::default();
        let s = live.snapshot(Instant::now());
        m.rate(s.elapsed, s.sent);
        m
    }

    /// Records `sent` at `elapsed` and returns the rate over the window
    /// (`None` until two readings are apart).
    pub fn rate(&mut self, elapsed: Duration, sent: u64) -> Option<f64> {
        self.seen.push_back((elapsed, sent));
        while self
            .seen
            .get(1)
            .is_some_and(|(t, _)| elapsed.saturating_sub(*t) >= WINDOW)
        {
            self.seen.pop_front();
        }
        let (t0, s0) = *self.seen.front()?;
        let dt = elapsed.saturating_sub(t0).as_secs_f64();
        (dt > 0.0).then(|| sent.saturating_sub(s0) as f64 / dt)
    }
}

/// The running renderer of a run: a bar or lines on stderr, on its own
/// timer; [`View::finish`] ends it.
pub struct View {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl View {
    /// Starts drawing `live` in `mode` (resolved against stderr).
    pub fn start(mode: ProgressMode, live: Arc<LiveRun>) -> Self {
        let stop = CancellationToken::new();
        let mode = mode.resolve(std::io::stderr().is_terminal());
        let task = match mode {
            ProgressMode::Off | ProgressMode::Auto => None,
            ProgressMode::Bar => Some(tokio::spawn(draw_bar(live, stop.clone()))),
            ProgressMode::Lines => Some(tokio::spawn(print_lines(live, stop.clone()))),
        };
        Self { stop, task }
    }

    /// Stops drawing: the bar is cleared and the final line printed.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // A run that fails still ends its renderer.
        self.stop.cancel();
    }
}

/// The final snapshot of a run.
fn final_snapshot(live: &LiveRun, meter: &mut RateMeter) -> Snapshot {
    let mut s = live.snapshot(Instant::now());
    s.send_rate = meter.rate(s.elapsed, s.sent);
    s.finished = true;
    s
}

async fn draw_bar(live: Arc<LiveRun>, stop: CancellationToken) {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = ProgressBar::with_draw_target(
        Some(live.plan.scheduled.max(1)),
        ProgressDrawTarget::stderr_with_hz(4),
    );
    if let Ok(style) = ProgressStyle::with_template("{prefix} {bar:16.cyan/blue} {wide_msg}") {
        bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
    }
    let mut meter = RateMeter::started(&live);
    let mut tick = tokio::time::interval(BAR_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let mut s = live.snapshot(Instant::now());
        s.send_rate = meter.rate(s.elapsed, s.sent);
        bar.set_length(s.total().0.max(1));
        bar.set_position(s.done);
        bar.set_prefix(s.stamp());
        bar.set_message(s.fields(true).join(" | "));
    }
    bar.finish_and_clear();
    eprintln!("{}", final_snapshot(&live, &mut meter).line());
}

async fn print_lines(live: Arc<LiveRun>, stop: CancellationToken) {
    let mut meter = RateMeter::started(&live);
    let mut tick = tokio::time::interval(LINE_EVERY);
    // The first tick is at once: the first line comes after a full period.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let mut s = live.snapshot(Instant::now());
        s.send_rate = meter.rate(s.elapsed, s.sent);
        eprintln!("{}", s.line());
    }
    eprintln!("{}", final_snapshot(&live, &mut meter).line());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut errors = [0; ERROR_KINDS.len()];
        errors[1] = 2; // timeout
        errors[0] = 1; // http_error
        Snapshot {
            elapsed: Duration::from_millis(16_040),
            label: Some("step 2/4 rate=8".into()),
            step: Some(2),
            scheduled: 480,
            scheduled_exact: true,
            sent: 213,
            done: 104,
            in_flight: 109,
            errors,
            eta: Some(Duration::from_millis(43_200)),
            draining: false,
            finished: false,
            stopped: None,
            send_rate: Some(8.04),
            window: WindowFigures {
                ttft_p50_us: Some(91_400.0),
                ttft_p99_us: Some(137_000.0),
                send_lag_p99_us: Some(800.0),
                output_tokens_per_s: 412.4,
                rows: 80,
                ..WindowFigures::default()
            },
        }
    }

    #[test]
    fn the_line_shows_total_percent_eta_latency_tokens_and_errors_by_kind() {
        assert_eq!(
            snapshot().line(),
            "[   16.0s] step 2/4 rate=8 | 104/480 done (21.7%) | ETA 44s | TTFT p50 91ms p99 137ms | 412 tok/s | errors 3 (http_error 1, timeout 2) | in flight 109 | sent 213 | 8.0 req/s"
        );
    }

    #[test]
    fn draining_replaces_the_eta_and_rate() {
        let s = Snapshot {
            draining: true,
            sent: 480,
            in_flight: 37,
            done: 443,
            eta: Some(Duration::ZERO),
            send_rate: Some(0.0),
            label: None,
            errors: [0; ERROR_KINDS.len()],
            ..snapshot()
        };
        let line = s.line();
        assert_eq!(
            line,
            "[   16.0s] 443/480 done (92.3%) | draining 37 in flight | TTFT p50 91ms p99 137ms | 412 tok/s | errors 0 | sent 480"
        );
        assert!(!line.contains("req/s"));
    }

    #[test]
    fn an_estimated_total_an_unknown_eta_and_no_ttft_yet_say_so() {
        let s = Snapshot {
            scheduled_exact: false,
            eta: None,
            send_rate: None,
            window: WindowFigures::default(),
            label: None,
            ..snapshot()
        };
        let line = s.line();
        assert!(line.contains("104/~480 done"), "{line}");
        assert!(line.contains("| ETA ? |"), "{line}");
        assert!(line.contains("| TTFT - |"), "{line}");
        assert!(line.contains("| 0 tok/s |"), "{line}");
        assert!(line.ends_with("| sent 213"), "{line}");
    }

    #[test]
    fn an_estimated_total_is_known_once_the_last_request_left() {
        let s = Snapshot {
            scheduled_exact: false,
            draining: true,
            done: 500,
            in_flight: 24,
            ..snapshot()
        };
        assert_eq!(s.total(), (524, true));
        assert!(
            s.line().contains("| 500/524 done (95.4%) |"),
            "{}",
            s.line()
        );
        let sending = Snapshot {
            draining: false,
            ..s
        };
        assert_eq!(sending.total(), (480, false));
        assert!(sending.line().contains("| 500/~480 done (100.0%) |"));
    }

    #[test]
    fn a_stopped_run_says_so_and_keeps_the_scheduled_total() {
        let s = Snapshot {
            scheduled_exact: false,
            finished: true,
            draining: true,
            done: 54,
            in_flight: 0,
            stopped: Some("SIGINT".into()),
            label: None,
            ..snapshot()
        };
        assert!(
            s.line()
                .contains("] 54/~480 done (11.2%) | stopped (SIGINT) | TTFT"),
            "{}",
            s.line()
        );
    }

    #[test]
    fn the_final_line_says_finished_and_has_no_control_characters() {
        let s = Snapshot {
            finished: true,
            done: 480,
            sent: 480,
            elapsed: Duration::from_secs(61),
            ..snapshot()
        };
        let line = s.line();
        assert!(
            line.starts_with(
                "[   61.0s] step 2/4 rate=8 | 480/480 done (100.0%) | finished | TTFT"
            ),
            "{line}"
        );
        assert!(line.ends_with("| sent 480"), "{line}");
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }

    #[test]
    fn durations_and_latencies_read_at_a_glance() {
        assert_eq!(fmt_duration(Duration::from_millis(43_200)), "44s");
        assert_eq!(fmt_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(fmt_duration(Duration::from_secs(7620)), "2h07m");
        assert_eq!(fmt_us(850.0), "850µs");
        assert_eq!(fmt_us(9_340.0), "9.3ms");
        assert_eq!(fmt_us(137_000.0), "137ms");
        assert_eq!(fmt_us(999_000.0), "999ms");
        assert_eq!(fmt_us(7_048_000.0), "7.05s");
        assert_eq!(fmt_us(12_340_000.0), "12.3s");
    }

    #[test]
    fn the_window_drops_rows_older_than_ten_seconds() {
        let mut w = Window::new(WINDOW);
        let s = 1_000_000;
        // TTFT 100 ms at t=0..4 s, 10 ms at t=5..9 s (each 10 tokens).
        for i in 0..10 {
            let ttft = if i < 5 { 100_000 } else { 10_000 };
            w.add(i * s, Some(ttft), Some(100), 10);
        }
        let all = w.figures(9 * s + s / 2, 20 * s);
        assert_eq!(all.rows, 10);
        assert_eq!(all.ttft_p50_us, Some(55_000.0));
        assert!((all.output_tokens_per_s - 10.0).abs() < 1e-9);
        // At 12.5 s the rows of t=0, 1 and 2 are over ten seconds old.
        let later = w.figures(12 * s + s / 2, 20 * s);
        assert_eq!(later.rows, 7);
        assert_eq!(w.len(), 7);
        // 2 rows of 100 ms, 5 of 10 ms: median 10 ms, p99 100 ms.
        assert_eq!(later.ttft_p50_us, Some(10_000.0));
        assert_eq!(later.ttft_p99_us, Some(100_000.0));
        assert!((later.output_tokens_per_s - 7.0).abs() < 1e-9);
        // Exactly ten seconds old is out.
        let edge = w.figures(13 * s, 20 * s);
        assert_eq!(edge.rows, 6);
        let empty = w.figures(100 * s, 100 * s);
        assert!(w.is_empty());
        assert_eq!(empty.ttft_p50_us, None);
        assert_eq!(empty.output_tokens_per_s, 0.0);
    }

    #[test]
    fn a_young_run_is_not_diluted_by_the_window_length() {
        let mut w = Window::new(WINDOW);
        w.add(1_500_000, Some(1), None, 100);
        // Two seconds into the run: 100 tokens over 2 s.
        let f = w.figures(2_000_000, 2_000_000);
        assert!((f.output_tokens_per_s - 50.0).abs() < 1e-9);
    }

    #[test]
    fn quantiles_interpolate_linearly_between_ranks() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&mut v, 0.5), Some(2.5));
        assert_eq!(quantile(&mut v, 0.0), Some(1.0));
        assert_eq!(quantile(&mut v, 1.0), Some(4.0));
        let mut one = vec![7.0];
        assert_eq!(quantile(&mut one, 0.99), Some(7.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn the_send_rate_covers_the_last_ten_seconds() {
        let mut m = RateMeter::default();
        assert_eq!(m.rate(Duration::ZERO, 0), None);
        // 10 req/s for 20 s, then nothing.
        for t in 1..=20 {
            m.rate(Duration::from_secs(t), t * 10);
        }
        assert_eq!(m.rate(Duration::from_secs(21), 200), Some(9.0));
        for t in 22..=31 {
            m.rate(Duration::from_secs(t), 200);
        }
        assert_eq!(m.rate(Duration::from_secs(32), 200), Some(0.0));
    }

    #[test]
    fn the_tap_publishes_ok_ttfts_all_send_lags_and_every_token() {
        let clock = RunClock::starting_in(Duration::ZERO);
        let live = Arc::new(LiveRun::new(
            Arc::new(Counters::default()),
            Plan {
                scheduled: 3,
                exact: true,
                span: Some(Duration::from_secs(1)),
            },
            clock.start,
            &Monitor::default(),
        ));
        let mut tap = Tap::new(live.clone(), clock);
        let now = clock.unix_us(Instant::now());
        let row = |outcome, ttft_us, tokens| ResultRow {
            outcome,
            ttft_us: Some(ttft_us),
            send_lag_us: Some(1_000),
            completed_at_us: Some(now),
            output_tokens: tokens,
            ..ResultRow::default()
        };
        tap.row(&row(Outcome::Ok, 20_000, 5));
        tap.row(&row(Outcome::Ok, 40_000, 7));
        // A stream that broke after its first token: its tokens count, its
        // TTFT does not.
        tap.row(&row(Outcome::StreamError, 900_000, 3));
        tap.publish();
        let w = live.snapshot(Instant::now()).window;
        assert_eq!(w.rows, 3);
        assert_eq!(w.ttft_count, 2);
        assert_eq!(w.ttft_sum_us, 60_000.0);
        assert_eq!(w.ttft_p50_us, Some(30_000.0));
        assert_eq!(w.send_lag_count, 3);
        assert_eq!(w.send_lag_p99_us, Some(1_000.0));
        assert_eq!(w.output_tokens, 15);
    }

    #[test]
    fn sweep_steps_are_labelled_step_i_of_n() {
        let m = Monitor {
            steps_planned: Some(4),
            ..Monitor::default()
        };
        assert_eq!(
            m.step(1, "rate=8").label.as_deref(),
            Some("step 2/4 rate=8")
        );
        assert_eq!(m.step(1, "rate=8").step, Some(2));
        assert_eq!(
            m.step(4, "rate=6").label.as_deref(),
            Some("step 5 (search) rate=6")
        );
        assert_eq!(
            Monitor::default().step(0, "rate=1").label.as_deref(),
            Some("step 1 rate=1")
        );
    }

    #[test]
    fn auto_is_a_bar_on_a_terminal_and_lines_elsewhere() {
        assert_eq!(ProgressMode::Auto.resolve(true), ProgressMode::Bar);
        assert_eq!(ProgressMode::Auto.resolve(false), ProgressMode::Lines);
        assert_eq!(ProgressMode::Off.resolve(true), ProgressMode::Off);
        assert_eq!(ProgressMode::Lines.resolve(true), ProgressMode::Lines);
    }
}
