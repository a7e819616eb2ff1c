//! Schedules: when each request leaves, computed as data before t=0 from the
//! trace and a seed. Generation is a pure function of its inputs, so a run
//! can be reproduced from the seed written into its results.
//!
//! Offsets are nanoseconds from the start of the run: tokio's 1 ms timer
//! would bunch requests at high rates, so the dispatcher paces to these
//! offsets with a finer clock (see `replay::pacer`).

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Exp, Gamma};
use serde::Serialize;
use thiserror::Error;

use crate::trace::TraceRecord;

/// The inter-arrival process of a rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum, Default)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// The trace's order, looping.
    #[default]
    Sequential,
    /// A seeded shuffle of the trace, reshuffled on every loop.
    Shuffle,
}

/// When to stop a rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Limit {
    /// Stop before the first arrival at or past this many nanoseconds.
    pub duration_ns: Option<u64>,
    /// Stop after this many requests.
    pub requests: Option<u64>,
}

/// How to schedule a trace: validated, the only shape the dispatcher sees.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
        }
    }
}

/// Builds the schedule of `trace` under `spec`.
///
/// Invariants: offsets are non-decreasing; every `trace_index` is a valid
/// row; for `Recorded`, offsets are the rows' offsets (relative to the
/// window's first row, spread if asked) divided by the speedup; for `Rate`,
/// the same spec and trace always give the same schedule.
pub fn build(
    spec: &ScheduleSpec,
    trace: &[TraceRecord],
) -> Result<Vec<ScheduledRequest>, ScheduleError> {
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
        } => recorded(trace, *speedup, *start_us, *end_us, *spread_us, *requests),
        ScheduleSpec::Rate {
            rate,
            arrivals,
            order,
            limit,
            seed,
        } => Ok(rate_schedule(
            trace, *rate, *arrivals, *order, *limit, *seed,
        )),
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

fn rate_schedule(
    trace: &[TraceRecord],
    rate: f64,
    arrivals: Arrivals,
    order: Order,
    limit: Limit,
    seed: u64,
) -> Vec<ScheduledRequest> {
    let mut rng = StdRng::seed_from_u64(seed);
    // A second stream for shuffles, so the gaps are the same whatever the
    // order.
    let mut shuffle_rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mean_gap_ns = 1e9 / rate;
    let gaps: Box<dyn FnMut(&mut StdRng) -> f64> = match arrivals {
        Arrivals::Constant => Box::new(move |_| mean_gap_ns),
        Arrivals::Poisson => match Exp::new(rate) {
            Ok(exp) => Box::new(move |rng: &mut StdRng| exp.sample(rng) * 1e9),
            Err(_) => Box::new(move |_| mean_gap_ns),
        },
        Arrivals::Gamma { shape } => match Gamma::new(shape, 1.0 / (rate * shape)) {
            Ok(gamma) => Box::new(move |rng: &mut StdRng| gamma.sample(rng) * 1e9),
            Err(_) => Box::new(move |_| mean_gap_ns),
        },
    };
    let mut gaps = gaps;
    let one_pass = limit.duration_ns.is_none() && limit.requests.is_none();
    let mut order_buf: Vec<u32> = (0..trace.len())
        .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
        .collect();
    let mut out = Vec::new();
    // The first request leaves at t=0, as in vLLM's and GuideLLM's
    // generators; gaps follow.
    let mut t_ns = 0.0f64;
    let mut repeat = 0u32;
    'outer: loop {
        if order == Order::Shuffle {
            order_buf.shuffle(&mut shuffle_rng);
        }
        for &index in &order_buf {
            if limit.requests.is_some_and(|n| out.len() as u64 >= n) {
                break 'outer;
            }
            let offset_ns = t_ns.round() as u64;
            if limit.duration_ns.is_some_and(|d| offset_ns >= d) {
                break 'outer;
            }
            out.push(ScheduledRequest {
                offset_ns,
                trace_index: index,
                repeat,
            });
            t_ns += gaps(&mut rng);
        }
        if one_pass {
            break;
        }
        repeat = repeat.saturating_add(1);
    }
    out
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
}
