//! `--metrics-port`: the live figures as Prometheus text (exposition format
//! 0.0.4) on `GET /metrics`, so a long soak shows on a dashboard next to the
//! server's own metrics.
//!
//! Counters add up over every run the process makes (a sweep's steps), so
//! they only grow; gauges and the window quantiles are the current run's.
//! The quantiles are over the last [`super::WINDOW`], while a summary's
//! `_sum` and `_count` cover everything so far, as Prometheus clients'
//! sliding-window summaries do.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::time::Instant;

use super::{ERROR_KINDS, LiveRun, Snapshot};

/// The Content-Type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What finished runs counted, carried into the next run's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Totals {
    scheduled: u64,
    sent: u64,
    completed: u64,
    errors: [u64; ERROR_KINDS.len()],
    ttft_count: u64,
    ttft_sum_us: f64,
    send_lag_count: u64,
    send_lag_sum_us: f64,
    output_tokens: u64,
}

impl Totals {
    fn plus(&self, s: &Snapshot) -> Self {
        Self {
            scheduled: self.scheduled + s.scheduled,
            sent: self.sent + s.sent,
            completed: self.completed + s.done,
            errors: std::array::from_fn(|i| self.errors[i] + s.errors[i]),
            ttft_count: self.ttft_count + s.window.ttft_count,
            ttft_sum_us: self.ttft_sum_us + s.window.ttft_sum_us,
            send_lag_count: self.send_lag_count + s.window.send_lag_count,
            send_lag_sum_us: self.send_lag_sum_us + s.window.send_lag_sum_us,
            output_tokens: self.output_tokens + s.window.output_tokens,
        }
    }
}

#[derive(Debug, Default)]
struct Runs {
    current: Option<Arc<LiveRun>>,
    before: Totals,
}

/// The live figures of the process's runs, rendered on each scrape.
#[derive(Debug, Default)]
pub struct Exporter {
    runs: Mutex<Runs>,
}

impl Exporter {
    /// An exporter with no run yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves a new exporter on `addr` (port 0 picks a free one) until the
    /// runtime ends; returns it and the address it listens on.
    pub async fn serve(addr: SocketAddr) -> std::io::Result<(Arc<Self>, SocketAddr)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let exporter = Arc::new(Self::new());
        let app = Router::new()
            .route("/metrics", get(scrape))
            .with_state(exporter.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("metrics endpoint {bound}: {e}");
            }
        });
        Ok((exporter, bound))
    }

    /// `run` is now the one the gauges show; the counters of the one before
    /// are kept in the totals.
    pub fn attach(&self, run: Arc<LiveRun>) {
        if let Ok(mut runs) = self.runs.lock() {
            if let Some(prev) = runs.current.take() {
                runs.before = runs.before.plus(&prev.snapshot(Instant::now()));
            }
            runs.current = Some(run);
        }
    }

    /// The exposition text now.
    pub fn render(&self) -> String {
        let (before, current) = match self.runs.lock() {
            Ok(runs) => (runs.before, runs.current.clone()),
            Err(_) => (Totals::default(), None),
        };
        let snap = current.map(|r| r.snapshot(Instant::now()));
        render(&before, snap.as_ref())
    }
}

async fn scrape(State(exporter): State<Arc<Exporter>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], exporter.render())
}

/// A float as Prometheus writes it (`NaN` for none).
fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        Some(v) if v > 0.0 => "+Inf".to_owned(),
        Some(v) if v < 0.0 => "-Inf".to_owned(),
        _ => "NaN".to_owned(),
    }
}

/// The text of `before` plus the current run `now`.
fn render(before: &Totals, now: Option<&Snapshot>) -> String {
    let t = match now {
        Some(s) => before.plus(s),
        None => *before,
    };
    let mut out = String::with_capacity(2048);
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    for (name, help, v) in [
        (
            "llm_replay_requests_scheduled_total",
            "Requests scheduled (estimated from the rate for schedules bounded by time).",
            t.scheduled,
        ),
        ("llm_replay_requests_sent_total", "Requests sent.", t.sent),
        (
            "llm_replay_requests_completed_total",
            "Requests finished with a result row, whatever the outcome.",
            t.completed,
        ),
    ] {
        head(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let name = "llm_replay_requests_errors_total";
    head(
        &mut out,
        name,
        "counter",
        "Requests whose outcome was not ok, by outcome.",
    );
    for (kind, n) in ERROR_KINDS.iter().zip(t.errors) {
        let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {n}");
    }
    let name = "llm_replay_output_tokens_total";
    head(&mut out, name, "counter", "Output tokens received.");
    let _ = writeln!(out, "{name} {}", t.output_tokens);

    let gauge = |v: Option<f64>| num(v);
    let name = "llm_replay_requests_in_flight";
    head(
        &mut out,
        name,
        "gauge",
        "Requests sent and not yet answered.",
    );
    let _ = writeln!(
        out,
        "{name} {}",
        gauge(Some(now.map_or(0, |s| s.in_flight) as f64))
    );
    let name = "llm_replay_output_tokens_per_second";
    head(
        &mut out,
        name,
        "gauge",
        "Output tokens per second over the last 10 s.",
    );
    let _ = writeln!(
        out,
        "{name} {}",
        gauge(Some(now.map_or(0.0, |s| s.window.output_tokens_per_s)))
    );
    let name = "llm_replay_draining";
    head(
        &mut out,
        name,
        "gauge",
        "1 once the run's last request was sent and the rest are finishing.",
    );
    let _ = writeln!(
        out,
        "{name} {}",
        u8::from(now.is_some_and(|s| s.draining || s.finished))
    );
    if let Some(step) = now.and_then(|s| s.step) {
        let name = "llm_replay_step";
        head(&mut out, name, "gauge", "The sweep step running (1-based).");
        let _ = writeln!(out, "{name} {step}");
    }

    let w = now.map(|s| s.window).unwrap_or_default();
    let secs = |us: Option<f64>| us.map(|v| v / 1e6);
    let name = "llm_replay_ttft_seconds";
    head(
        &mut out,
        name,
        "summary",
        "Time to first token of ok requests: quantiles over the last 10 s, sum and count over the run.",
    );
    let _ = writeln!(
        out,
        "{name}{{quantile=\"0.5\"}} {}",
        num(secs(w.ttft_p50_us))
    );
    let _ = writeln!(
        out,
        "{name}{{quantile=\"0.99\"}} {}",
        num(secs(w.ttft_p99_us))
    );
    let _ = writeln!(out, "{name}_sum {}", num(Some(t.ttft_sum_us / 1e6)));
    let _ = writeln!(out, "{name}_count {}", t.ttft_count);
    let name = "llm_replay_send_lag_seconds";
    head(
        &mut out,
        name,
        "summary",
        "Send lag (sent minus scheduled): p99 over the last 10 s, sum and count over the run.",
    );
    let _ = writeln!(
        out,
        "{name}{{quantile=\"0.99\"}} {}",
        num(secs(w.send_lag_p99_us))
    );
    let _ = writeln!(out, "{name}_sum {}", num(Some(t.send_lag_sum_us / 1e6)));
    let _ = writeln!(out, "{name}_count {}", t.send_lag_count);
    out
}

#[cfg(test)]
mod tests {
    use super::super::WindowFigures;
    use super::*;

    fn snap(sent: u64, timeouts: u64) -> Snapshot {
        let mut errors = [0; ERROR_KINDS.len()];
        errors[1] = timeouts;
        Snapshot {
            elapsed: std::time::Duration::from_secs(3),
            label: Some("step 2/3 rate=4".into()),
            step: Some(2),
            scheduled: 20,
            scheduled_exact: true,
            sent,
            done: sent,
            in_flight: 3,
            errors,
            eta: None,
            draining: false,
            finished: false,
            stopped: None,
            send_rate: None,
            window: WindowFigures {
                ttft_p50_us: Some(91_000.0),
                ttft_p99_us: None,
                ttft_count: sent,
                ttft_sum_us: sent as f64 * 100_000.0,
                output_tokens: sent * 10,
                output_tokens_per_s: 40.0,
                ..WindowFigures::default()
            },
        }
    }

    #[test]
    fn counters_add_up_over_runs_and_gauges_are_the_current_run() {
        let before = Totals::default().plus(&snap(20, 1));
        let text = render(&before, Some(&snap(7, 2)));
        for line in [
            "llm_replay_requests_scheduled_total 40",
            "llm_replay_requests_sent_total 27",
            "llm_replay_requests_completed_total 27",
            "llm_replay_requests_errors_total{kind=\"timeout\"} 3",
            "llm_replay_requests_errors_total{kind=\"http_error\"} 0",
            "llm_replay_output_tokens_total 270",
            "llm_replay_requests_in_flight 3",
            "llm_replay_output_tokens_per_second 40",
            "llm_replay_step 2",
            "llm_replay_ttft_seconds{quantile=\"0.5\"} 0.091",
            "llm_replay_ttft_seconds{quantile=\"0.99\"} NaN",
            "llm_replay_ttft_seconds_sum 2.7",
            "llm_replay_ttft_seconds_count 27",
            "llm_replay_draining 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // Every sample has a TYPE line before it, and names are valid.
        let mut typed = Vec::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().unwrap_or("").to_owned());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap_or("");
                let base = name
                    .strip_suffix("_sum")
                    .or_else(|| name.strip_suffix("_count"))
                    .unwrap_or(name);
                assert!(typed.iter().any(|t| t == name || t == base), "{l}");
                assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            }
        }
    }

    #[test]
    fn before_any_run_the_counters_are_zero() {
        let text = render(&Totals::default(), None);
        assert!(text.contains("llm_replay_requests_sent_total 0\n"));
        assert!(!text.contains("llm_replay_step"));
    }
}
