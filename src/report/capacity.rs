//! Knee and capacity: one rule each, used by `sweep` as it runs and by
//! `report` when it recomputes a sweep from its files.

use serde::{Deserialize, Serialize};

use crate::record::sweep_table::{SweepMode, SweepStep};

/// What the sweep concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Capacity {
    /// The offered rate of the knee step (see `knee_achieved_rate`), if
    /// the knee was reached.
    pub knee_offered_rate: Option<f64>,
    /// The offered rate of the highest step that met the goodput target.
    pub slo_capacity_rate: Option<f64>,
    /// The knee, judged from the load actually sent: the highest achieved
    /// rate up to which each step's extra achieved load still turned into
    /// at least half as much extra throughput (ok requests per second of
    /// the steady window). `None`: not reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knee_achieved_rate: Option<f64>,
    /// The achieved rate of the highest step that met the goodput target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_capacity_achieved_rate: Option<f64>,
    /// True when the capacity step is the sweep's highest: every higher
    /// load is untested, so the capacity is at least this much (`≥`).
    #[serde(default)]
    pub slo_capacity_lower_bound: bool,
    /// The highest achieved rate (or user count) the sweep ran: with no
    /// knee, the knee is above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_achieved: Option<f64>,
    /// The SLO, as given.
    pub slo: Option<String>,
    /// The goodput target.
    pub goodput_target: Option<f64>,
    /// Rates the auto probe ran, with the throughput each achieved.
    pub probe: Vec<(f64, f64)>,
    /// A concurrency sweep's knee: the most users up to which each extra
    /// user still added at least half the throughput per user of the step
    /// below, if reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knee_concurrency: Option<f64>,
    /// A concurrency sweep's highest user count at which the goodput
    /// target was met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_capacity_concurrency: Option<f64>,
}

impl Capacity {
    /// The knee and the SLO capacity of a sweep of users (`users`) or of
    /// rates and speedups.
    pub fn conclusions(&self, users: bool) -> (Option<f64>, Option<f64>) {
        if users {
            (self.knee_concurrency, self.slo_capacity_concurrency)
        } else {
            (self.knee_offered_rate, self.slo_capacity_rate)
        }
    }

    /// Fills the knee and, with an SLO, the capacity from `steps` (all of
    /// one mode): in requests per second for rate and speedup sweeps, in
    /// users for a concurrency sweep. The one rule `sweep` and `report`
    /// share.
    pub fn conclude(&mut self, steps: &[SweepStep], goodput: Option<f64>) {
        let concurrency =
            steps.iter().all(|s| s.mode == SweepMode::Concurrency) && !steps.is_empty();
        let top = if concurrency {
            steps.iter().map(|s| s.offered).reduce(f64::max)
        } else {
            steps.iter().map(|s| s.achieved_rate).reduce(f64::max)
        };
        self.highest_achieved = top;
        let passing =
            |s: &&SweepStep| goodput.is_some_and(|g| s.goodput_fraction.is_some_and(|f| f >= g));
        // The capacity step and whether any step above it (by offered
        // load) was run at all.
        let best = steps
            .iter()
            .filter(passing)
            .max_by(|a, b| a.offered.total_cmp(&b.offered));
        self.slo_capacity_lower_bound =
            best.is_some_and(|b| steps.iter().all(|s| s.offered <= b.offered));
        if concurrency {
            self.knee_concurrency = knee_concurrency(steps);
            self.slo_capacity_concurrency = goodput.and_then(|g| {
                steps
                    .iter()
                    .filter(|s| s.goodput_fraction.is_some_and(|f| f >= g))
                    .map(|s| s.offered)
                    .reduce(f64::max)
            });
        } else {
            let k = knee_step(steps);
            self.knee_offered_rate = k.map(|s| s.offered_rate);
            self.knee_achieved_rate = k.map(|s| s.achieved_rate);
            self.slo_capacity_rate = best.map(|s| s.offered_rate);
            self.slo_capacity_achieved_rate = best.map(|s| s.achieved_rate);
        }
    }
}

/// The knee of a concurrency sweep: the most users up to which each step's
/// extra users still added at least half as much throughput per added user
/// as the step below had per user. In a closed loop throughput follows the
/// users while the server has room, then flattens while latency grows.
pub fn knee_concurrency(steps: &[SweepStep]) -> Option<f64> {
    if steps.iter().all(|s| s.ok == 0) {
        return None;
    }
    let mut sorted: Vec<&SweepStep> = steps.iter().collect();
    sorted.sort_by(|a, b| a.offered.total_cmp(&b.offered));
    sorted.windows(2).find_map(|w| {
        let d_users = w[1].offered - w[0].offered;
        let per_user = w[0].request_throughput / w[0].offered.max(1.0);
        let d_tput = w[1].request_throughput - w[0].request_throughput;
        (d_users > 0.0 && d_tput < 0.5 * per_user * d_users).then_some(w[0].offered)
    })
}

/// The knee's offered rate (see [`knee_step`]).
pub fn knee(steps: &[SweepStep]) -> Option<f64> {
    knee_step(steps).map(|s| s.offered_rate)
}

/// The knee step: the highest step, by the load actually sent (achieved
/// rate, not the nominal one: a Poisson step of 8 req/s may send 6.9), up
/// to which each step's extra achieved load still turned into at least
/// half as much extra throughput (ok requests per second of the steady
/// window, so the drain tail after the last send does not dilute it).
/// Marginal gains rather than ratios, so that a constant shortfall at
/// every load (the window's edges) does not read as saturation. Steps with
/// no successful request say nothing about throughput: with no such step
/// at all there is no knee.
pub fn knee_step(steps: &[SweepStep]) -> Option<&SweepStep> {
    if steps.iter().all(|s| s.ok == 0) {
        return None;
    }
    let mut sorted: Vec<&SweepStep> = steps.iter().collect();
    sorted.sort_by(|a, b| a.achieved_rate.total_cmp(&b.achieved_rate));
    sorted.windows(2).find_map(|w| {
        let d_load = w[1].achieved_rate - w[0].achieved_rate;
        let d_tput = w[1].request_throughput - w[0].request_throughput;
        (d_load > 0.0 && d_tput < 0.5 * d_load).then_some(w[0])
    })
}

/// The highest offered rate whose goodput met `target`, if any step did
/// (`Capacity::conclude` also keeps that step's achieved rate).
pub fn slo_capacity(steps: &[SweepStep], target: f64) -> Option<f64> {
    steps
        .iter()
        .filter(|s| s.goodput_fraction.is_some_and(|g| g >= target))
        .map(|s| s.offered_rate)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
}

/// A load as written in directory names and tables: up to three decimals,
/// no trailing zeros.
pub fn fmt_load(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Two latency cells (p50, p99) of the table; `-` for a step without the
/// figure (the TTFT of embeddings, the TPOT of one-token replies), whose
/// columns hold zeros.
fn latency_cells(p50: f64, p99: f64, decimals: usize, width: usize) -> (String, String) {
    if p50 == 0.0 && p99 == 0.0 {
        let dash = format!("{:>w$}", "-", w = width + 2);
        return (dash.clone(), dash);
    }
    (
        format!("{p50:>width$.decimals$}ms"),
        format!("{p99:>width$.decimals$}ms"),
    )
}

/// The printed table.
pub fn render_table(steps: &[SweepStep], capacity: &Capacity) -> String {
    let mut out = format!(
        "{:>9} {:>9} {:>9} {:>7} {:>9} {:>10} {:>10} {:>9} {:>9} {:>10} {:>8}\n",
        "offered",
        "req/s",
        "achieved",
        "errors",
        "goodput",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "E2E p99",
        "lag p99"
    );
    let mut sorted: Vec<&SweepStep> = steps.iter().collect();
    sorted.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    for s in sorted {
        let (ttft50, ttft99) = latency_cells(s.ttft_p50_ms, s.ttft_p99_ms, 0, 8);
        let (tpot50, tpot99) = latency_cells(s.tpot_p50_ms, s.tpot_p99_ms, 1, 7);
        out.push_str(&format!(
            "{:>9} {:>9.2} {:>9.2} {:>7} {:>9} {ttft50} {ttft99} {tpot50} {tpot99} {:>8.0}ms {:>6.2}ms{}\n",
            format!(
                "{}={}",
                match s.mode {
                    SweepMode::Rate => "r",
                    SweepMode::Speedup => "x",
                    SweepMode::Concurrency => "c",
                },
                fmt_load(s.offered)
            ),
            s.request_throughput,
            s.achieved_rate,
            s.errors,
            s.goodput_fraction.map_or("-".to_owned(), |g| format!("{:.1}%", g * 100.0)),
            s.e2e_p99_ms,
            s.send_lag_p99_ms,
            if s.generator_bottleneck { "  (generator-bound)" } else { "" }
        ));
    }
    out.push_str(&render_conclusions(steps, capacity));
    out
}

/// The knee and capacity lines, said plainly: the knee's and the
/// capacity's achieved rate (with the offered one), `≥` when the capacity
/// step was the highest one run, "not reached" with the highest load run.
pub fn render_conclusions(steps: &[SweepStep], capacity: &Capacity) -> String {
    let mut out = String::new();
    let users = steps.iter().any(|s| s.mode == SweepMode::Concurrency);
    let (knee, slo_capacity) = capacity.conclusions(users);
    let closed = if users { " (closed loop)" } else { "" };
    let top = capacity.highest_achieved;
    let rate = |achieved: Option<f64>, offered: f64| match achieved {
        Some(a) => format!("{a:.2} req/s achieved (offered {})", fmt_load(offered)),
        None => format!("{offered:.2} req/s offered"),
    };
    out.push_str(&match (knee, users) {
        (Some(k), true) => {
            format!("knee          throughput stops following the users above {k} users{closed}\n")
        }
        (Some(k), false) => format!(
            "knee          throughput stops following the load above {}\n",
            rate(capacity.knee_achieved_rate, k)
        ),
        (None, true) => format!(
            "knee          not reached: each added user still added throughput, up to {} users (closed loop)\n",
            top.unwrap_or(0.0)
        ),
        (None, false) => format!(
            "knee          not reached: throughput kept up with every load, up to {:.2} req/s achieved (the knee is above it)\n",
            top.unwrap_or(0.0)
        ),
    });
    if let Some(slo) = &capacity.slo {
        let pct = capacity.goodput_target.unwrap_or(0.0) * 100.0;
        let (ge, why) = if capacity.slo_capacity_lower_bound {
            (
                "≥ ",
                ": the highest step passed, higher loads were not tried",
            )
        } else {
            ("", "")
        };
        let every = capacity.slo_capacity_lower_bound
            && steps.iter().all(|s| {
                capacity
                    .goodput_target
                    .is_some_and(|g| s.goodput_fraction.is_some_and(|f| f >= g))
            });
        let why = if every { ": every step passed" } else { why };
        out.push_str(&match slo_capacity {
            Some(c) if users => format!(
                "capacity      {ge}{c} users with {pct:.0}% of requests meeting {slo}{closed}{why}\n"
            ),
            Some(c) => format!(
                "capacity      {ge}{} with {pct:.0}% of requests meeting {slo}{why}\n",
                rate(capacity.slo_capacity_achieved_rate, c)
            ),
            None => format!("capacity      no step met {slo} for {pct:.0}% of requests\n"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::summary::Summary;

    fn step(rate: f64, tput: f64) -> SweepStep {
        SweepStep::from_summary(
            0,
            SweepMode::Rate,
            rate,
            &Summary {
                requests: 10,
                outcomes: [("ok".to_owned(), 10)].into(),
                request_throughput: tput,
                fidelity: crate::record::summary::Fidelity {
                    target_rate: rate,
                    achieved_rate: rate,
                    ..Default::default()
                },
                ..Summary::default()
            },
            String::new(),
        )
    }

    #[test]
    fn the_table_shows_a_dash_for_latencies_a_step_does_not_have() {
        let mut chat = step(2.0, 1.9);
        (chat.ttft_p50_ms, chat.ttft_p99_ms) = (12.0, 30.0);
        (chat.tpot_p50_ms, chat.tpot_p99_ms) = (7.5, 8.25);
        // Embeddings: no TTFT and no TPOT, only E2E.
        let mut embed = step(4.0, 3.9);
        embed.e2e_p99_ms = 40.0;
        let table = render_table(&[chat, embed], &Capacity::default());
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].contains("12ms") && lines[1].contains("8.2ms"),
            "{table}"
        );
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(&cells[5..9], ["-", "-", "-", "-"], "{table}");
        assert_eq!(cells[9], "40ms");
        // The columns stay aligned.
        assert_eq!(lines[1].len(), lines[2].len(), "{table}");
    }

    #[test]
    fn the_knee_is_the_last_load_throughput_followed() {
        let steps = vec![
            step(2.0, 1.6),
            step(8.0, 6.2),
            step(4.0, 3.1),
            step(16.0, 8.0),
        ];
        assert_eq!(knee(&steps), Some(8.0));
        assert_eq!(knee(&steps[..3]), None);
    }

    #[test]
    fn the_knee_is_judged_from_the_load_sent_not_the_nominal_one() {
        // A Poisson step of 8 req/s that sent 6.93 and served all of it:
        // it passed, and so did everything below it.
        let mut a = step(4.0, 3.95);
        a.achieved_rate = 3.95;
        let mut b = step(8.0, 6.93);
        b.achieved_rate = 6.93;
        for s in [&mut a, &mut b] {
            s.goodput_fraction = Some(1.0);
        }
        let steps = [a, b];
        let mut c = Capacity {
            slo: Some("ttft=500ms".into()),
            goodput_target: Some(0.99),
            ..Capacity::default()
        };
        c.conclude(&steps, Some(0.99));
        assert_eq!(c.knee_offered_rate, None);
        assert_eq!(c.slo_capacity_achieved_rate, Some(6.93));
        assert!(c.slo_capacity_lower_bound);
        let text = render_table(&steps, &c);
        assert!(!text.contains("above 4"), "{text}");
        assert!(
            text.contains("knee          not reached: throughput kept up with every load, up to 6.93 req/s achieved"),
            "{text}"
        );
        assert!(
            text.contains("capacity      ≥ 6.93 req/s achieved (offered 8) with 99% of requests meeting ttft=500ms: every step passed"),
            "{text}"
        );
    }

    #[test]
    fn a_capacity_below_a_failing_step_is_exact() {
        let mut steps = vec![step(2.0, 2.0), step(4.0, 4.0), step(8.0, 7.9)];
        steps[0].goodput_fraction = Some(1.0);
        steps[1].goodput_fraction = Some(0.995);
        steps[2].goodput_fraction = Some(0.4);
        let mut c = Capacity {
            slo: Some("ttft=500ms".into()),
            goodput_target: Some(0.99),
            ..Capacity::default()
        };
        c.conclude(&steps, Some(0.99));
        assert_eq!(c.slo_capacity_rate, Some(4.0));
        assert!(!c.slo_capacity_lower_bound);
        let text = render_table(&steps, &c);
        assert!(
            text.contains("capacity      4.00 req/s achieved (offered 4) with 99%"),
            "{text}"
        );
        assert!(!text.contains('≥'), "{text}");
        // A knee reached is said with the load sent and the one offered.
        let steps = vec![step(2.0, 2.0), step(4.0, 4.0), step(8.0, 4.5)];
        let mut c = Capacity::default();
        c.conclude(&steps, None);
        assert_eq!(c.knee_achieved_rate, Some(4.0));
        assert!(
            render_table(&steps, &c).contains("above 4.00 req/s achieved (offered 4)"),
            "{}",
            render_table(&steps, &c)
        );
    }

    #[test]
    fn steps_that_all_failed_have_no_knee() {
        let mut steps = vec![step(2.0, 0.0), step(4.0, 0.0), step(8.0, 0.0)];
        for s in &mut steps {
            s.ok = 0;
            s.errors = s.requests;
        }
        assert_eq!(knee(&steps), None);
    }

    #[test]
    fn a_concurrency_knee_is_where_users_stop_adding_throughput() {
        let users = |n: f64, tput: f64| SweepStep {
            mode: SweepMode::Concurrency,
            offered: n,
            ..step(tput, tput)
        };
        // 1 -> 2 -> 4 users double throughput; 4 -> 8 adds a sixth of it.
        let steps = [
            users(1.0, 2.0),
            users(2.0, 4.0),
            users(4.0, 7.9),
            users(8.0, 9.2),
            users(16.0, 9.4),
        ];
        assert_eq!(knee_concurrency(&steps), Some(4.0));
        assert_eq!(knee_concurrency(&steps[..3]), None);
        let mut c = Capacity::default();
        c.conclude(&steps, Some(0.9));
        assert_eq!(c.knee_concurrency, Some(4.0));
        assert_eq!(c.knee_offered_rate, None);
        let table = render_table(&steps, &c);
        assert!(table.contains("c=16"), "{table}");
        assert!(table.contains("above 4 users"), "{table}");
    }
}
