//! Knee and capacity: one rule each, used by `sweep` as it runs and by
//! `report` when it recomputes a sweep from its files.

use serde::{Deserialize, Serialize};

use crate::record::sweep_table::{SweepMode, SweepStep};

/// What the sweep concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Capacity {
    /// Offered rate beyond which throughput stops growing (achieved
    /// throughput falls below 90% of the offered rate), if reached.
    pub knee_offered_rate: Option<f64>,
    /// Highest offered rate at which the goodput target was met.
    pub slo_capacity_rate: Option<f64>,
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
            self.knee_offered_rate = knee(steps);
            self.slo_capacity_rate = goodput.and_then(|g| slo_capacity(steps, g));
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

/// The knee: the highest offered rate up to which each step's extra load
/// still turned into at least half as much extra throughput. Marginal gains
/// are used rather than throughput/offered ratios, because a short step's
/// throughput is diluted by its drain tail at every load alike.
/// Steps with no successful request say nothing about throughput: with no
/// such step at all there is no knee.
pub fn knee(steps: &[SweepStep]) -> Option<f64> {
    if steps.iter().all(|s| s.ok == 0) {
        return None;
    }
    let mut sorted: Vec<&SweepStep> = steps.iter().collect();
    sorted.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    sorted.windows(2).find_map(|w| {
        let d_offered = w[1].offered_rate - w[0].offered_rate;
        let d_tput = w[1].request_throughput - w[0].request_throughput;
        (d_offered > 0.0 && d_tput < 0.5 * d_offered).then_some(w[0].offered_rate)
    })
}

/// The highest offered rate whose goodput met `target`, if any step did.
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
        out.push_str(&format!(
            "{:>9} {:>9.2} {:>9.2} {:>7} {:>9} {:>8.0}ms {:>8.0}ms {:>7.1}ms {:>7.1}ms {:>8.0}ms {:>6.2}ms{}\n",
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
            s.ttft_p50_ms,
            s.ttft_p99_ms,
            s.tpot_p50_ms,
            s.tpot_p99_ms,
            s.e2e_p99_ms,
            s.send_lag_p99_ms,
            if s.generator_bottleneck { "  (generator-bound)" } else { "" }
        ));
    }
    let users = steps.iter().any(|s| s.mode == SweepMode::Concurrency);
    let (knee, slo_capacity) = capacity.conclusions(users);
    let load = |v: f64| {
        if users {
            format!("{v} users")
        } else {
            format!("{v:.2} req/s")
        }
    };
    let closed = if users { " (closed loop)" } else { "" };
    out.push_str(&match (knee, users) {
        (Some(k), _) => format!(
            "knee          throughput stops following the {} above {}{closed}\n",
            if users { "users" } else { "offered load" },
            load(k)
        ),
        (None, true) => {
            "knee          not reached: each added user still added throughput (closed loop)\n"
                .into()
        }
        (None, false) => {
            "knee          not reached: throughput kept up with every offered load\n".into()
        }
    });
    if let Some(slo) = &capacity.slo {
        out.push_str(&match slo_capacity {
            Some(c) => format!(
                "capacity      {} with {:.0}% of requests meeting {slo}{closed}\n",
                load(c),
                capacity.goodput_target.unwrap_or(0.0) * 100.0
            ),
            None => format!("capacity      no step met {slo} for enough requests\n"),
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
                    ..Default::default()
                },
                ..Summary::default()
            },
            String::new(),
        )
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
