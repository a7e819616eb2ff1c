//! Replay: the open-loop dispatcher under paused time with a scripted
//! transport (timing exact and deterministic), and whole runs against the
//! embedded simulator over loopback (outcomes and row accounting).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use llm_replay::client::{Api, Exchange, Outcome, Prompt, RequestSpec, Timeouts};
use llm_replay::record::ResultRow;
use llm_replay::replay::dispatch::{
    self, CapPolicy, ClosedLoop, Phases, Prepared, RunClock, Shared, Transport,
};
use llm_replay::replay::pacer::TokioPacer;
use llm_replay::schedule::{self, Arrivals, Limit, Order, ScheduleSpec, Stages};
use llm_replay::trace::TraceRecord;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Answers every request after `ttft`, then streams `tokens` chunks `itl`
/// apart, on tokio's (paused) clock.
struct Scripted {
    ttft: Duration,
    itl: Duration,
    tokens: u32,
}

impl Transport for Scripted {
    async fn send(
        &self,
        _spec: &RequestSpec,
        _body: Bytes,
        _t: &Timeouts,
        _cancel: &CancellationToken,
    ) -> Exchange {
        tokio::time::sleep(self.ttft).await;
        let first = Instant::now();
        let mut chunks = vec![first];
        for _ in 1..self.tokens {
            tokio::time::sleep(self.itl).await;
            chunks.push(Instant::now());
        }
        Exchange {
            status_code: Some(200),
            outcome: Outcome::Ok,
            error: None,
            first_token_at: Some(first),
            completed_at: Some(Instant::now()),
            chunk_times: chunks,
            output_tokens: self.tokens,
            streamed: true,
            usage_prompt_tokens: Some(10),
            usage_completion_tokens: Some(self.tokens),
            reply_text: None,
        }
    }
}

fn trace(offsets_us: &[Option<i64>]) -> Vec<TraceRecord> {
    offsets_us
        .iter()
        .enumerate()
        .map(|(i, &t)| TraceRecord {
            request_id: format!("req-{i}"),
            arrival_offset_us: t,
            input_tokens: 10,
            output_tokens: 4,
            source_row: i as i64,
            ..TraceRecord::default()
        })
        .collect()
}

fn prepared(t: &[TraceRecord], spec: &ScheduleSpec) -> Vec<Prepared> {
    schedule::build(spec, t)
        .unwrap()
        .into_iter()
        .map(|s| {
            let r = &t[s.trace_index as usize];
            Prepared {
                sched: s,
                request_id: r.request_id.clone(),
                input_tokens: r.input_tokens,
                output_tokens_expected: r.output_tokens,
                request: Ok((
                    RequestSpec {
                        request_id: r.request_id.clone(),
                        api: Api::Completions,
                        model: "m".into(),
                        prompt: Prompt::Text("x".into()),
                        max_tokens: 4,
                        stream: true,
                        force_output_len: false,
                        extra_body: None,
                        keep_reply: false,
                    },
                    Bytes::from_static(b"{}"),
                )),
                turn: None,
                then: None,
                turns_after: 0,
                skip: None,
                class: Default::default(),
            }
        })
        .collect()
}

struct Run {
    rows: Vec<ResultRow>,
    clock: RunClock,
    dispatched: dispatch::Dispatched,
}

async fn run_paused(
    transport: Scripted,
    prepared: Vec<Prepared>,
    cap: Option<(usize, CapPolicy)>,
    stop_after: Option<Duration>,
) -> Run {
    run_closed(transport, prepared, cap, stop_after, None).await
}

async fn run_closed(
    transport: Scripted,
    prepared: Vec<Prepared>,
    cap: Option<(usize, CapPolicy)>,
    stop_after: Option<Duration>,
    closed: Option<ClosedLoop>,
) -> Run {
    let stages = closed.as_ref().and_then(|c| c.stages.clone());
    run_staged(transport, prepared, cap, stop_after, closed, stages).await
}

async fn run_staged(
    transport: Scripted,
    prepared: Vec<Prepared>,
    cap: Option<(usize, CapPolicy)>,
    stop_after: Option<Duration>,
    closed: Option<ClosedLoop>,
    stages: Option<Stages>,
) -> Run {
    run_with(transport, prepared, cap, stop_after, closed, stages, None).await
}

async fn run_with(
    transport: Scripted,
    prepared: Vec<Prepared>,
    cap: Option<(usize, CapPolicy)>,
    stop_after: Option<Duration>,
    closed: Option<ClosedLoop>,
    stages: Option<Stages>,
    connections: Option<usize>,
) -> Run {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let clock = RunClock::starting_in(Duration::from_millis(10));
    let stop = CancellationToken::new();
    let shared = Arc::new(Shared {
        transport,
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            ttft: None,
            request: None,
        },
        cap: cap.map(|(n, p)| (Arc::new(Semaphore::new(n)), p)),
        connections: connections.map(|n| Arc::new(Semaphore::new(n))),
        rows: tx,
        clock,
        cancel: CancellationToken::new(),
        stop: stop.clone(),
        counters: Arc::default(),
        phases: Phases::default(),
        stages,
    });
    if let Some(after) = stop_after {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            stop.cancel();
        });
    }
    let tasks = TaskTracker::new();
    let dispatched = dispatch::dispatch(
        shared.clone(),
        prepared.into(),
        TokioPacer,
        stop,
        tasks.clone(),
        closed,
    )
    .await;
    tasks.close();
    tasks.wait().await;
    drop(shared);
    let mut rows = Vec::new();
    while let Some(r) = rx.recv().await {
        rows.push(r);
    }
    rows.sort_by_key(|r| (r.scheduled_at_us, r.request_id.clone()));
    Run {
        rows,
        clock,
        dispatched,
    }
}

#[tokio::test(start_paused = true)]
async fn recorded_offsets_leave_exactly_on_schedule() {
    let t = trace(&[
        Some(0),
        Some(1_500),
        Some(1_500),
        Some(250_000),
        Some(3_000_000),
    ]);
    let spec = ScheduleSpec::Recorded {
        speedup: 2.0,
        start_us: None,
        end_us: None,
        spread_us: None,
        requests: None,
    };
    let run = run_paused(
        Scripted {
            ttft: Duration::from_millis(40),
            itl: Duration::from_millis(5),
            tokens: 4,
        },
        prepared(&t, &spec),
        None,
        None,
    )
    .await;
    assert_eq!(run.rows.len(), 5);
    let start = run.clock.start_unix_us;
    let offsets: Vec<i64> = run.rows.iter().map(|r| r.scheduled_at_us - start).collect();
    assert_eq!(offsets, vec![0, 750, 750, 125_000, 1_500_000]);
    for r in &run.rows {
        assert_eq!(r.outcome.as_str(), "ok");
        // Under paused time the dispatcher wakes exactly at each deadline
        // (tokio's millisecond wheel rounds up, never down).
        assert!((0..1_000).contains(&r.send_lag_us.unwrap()), "{r:?}");
        assert_eq!(r.ttft_us, Some(40_000));
        assert_eq!(r.itl_us, vec![5_000, 5_000, 5_000]);
        assert_eq!(r.e2e_us, Some(55_000));
    }
}

#[tokio::test(start_paused = true)]
async fn dispatch_never_waits_for_responses() {
    // Each response takes 10 s; 50 requests at 100/s must still all leave
    // within half a second of t=0.
    let t = trace(&[None; 50]);
    let spec = ScheduleSpec::Rate {
        rate: 100.0,
        arrivals: Arrivals::Constant,
        order: Order::Sequential,
        limit: Limit::default(),
        seed: 1,
    };
    let run = run_paused(
        Scripted {
            ttft: Duration::from_secs(10),
            itl: Duration::from_millis(1),
            tokens: 2,
        },
        prepared(&t, &spec),
        None,
        None,
    )
    .await;
    assert_eq!(run.rows.len(), 50);
    for (i, r) in run.rows.iter().enumerate() {
        let sent = r.sent_at_us.unwrap() - run.clock.start_unix_us;
        assert!(
            (sent - i as i64 * 10_000).abs() < 1_000,
            "row {i} sent at {sent}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn in_flight_cap_drops_are_rows() {
    let t = trace(&[None; 10]);
    let spec = ScheduleSpec::Rate {
        rate: 1_000.0,
        arrivals: Arrivals::Constant,
        order: Order::Sequential,
        limit: Limit::default(),
        seed: 1,
    };
    let slow = || Scripted {
        ttft: Duration::from_millis(100),
        itl: Duration::from_millis(1),
        tokens: 2,
    };
    let dropped = run_paused(
        slow(),
        prepared(&t, &spec),
        Some((3, CapPolicy::Drop)),
        None,
    )
    .await;
    assert_eq!(dropped.rows.len(), 10);
    let n_dropped = dropped
        .rows
        .iter()
        .filter(|r| r.outcome.as_str() == "dropped")
        .count();
    assert_eq!(n_dropped, 7);
    assert!(
        dropped
            .rows
            .iter()
            .filter(|r| r.outcome.as_str() == "dropped")
            .all(|r| r.sent_at_us.is_none())
    );

    let waited = run_paused(
        slow(),
        prepared(&t, &spec),
        Some((3, CapPolicy::Wait)),
        None,
    )
    .await;
    assert_eq!(waited.rows.len(), 10);
    assert!(waited.rows.iter().all(|r| r.outcome.as_str() == "ok"));
    // The fourth request waits for the first to finish (100 ms after t=0,
    // it was due at 3 ms): its wait is recorded and is part of its lag.
    let fourth = &waited.rows[3];
    assert!(fourth.queue_wait_us.unwrap() >= 90_000, "{fourth:?}");
    assert!(fourth.send_lag_us.unwrap() >= fourth.queue_wait_us.unwrap());
}

#[tokio::test(start_paused = true)]
async fn stopping_dispatch_counts_requests_not_yet_due_without_rows() {
    let t = trace(&[None; 100]);
    let spec = ScheduleSpec::Rate {
        rate: 100.0,
        arrivals: Arrivals::Constant,
        order: Order::Sequential,
        limit: Limit::default(),
        seed: 1,
    };
    let run = run_paused(
        Scripted {
            ttft: Duration::from_millis(5),
            itl: Duration::from_millis(1),
            tokens: 2,
        },
        prepared(&t, &spec),
        None,
        Some(Duration::from_millis(505)),
    )
    .await;
    // Requests due before the stop (t = 0, 10, ..., 490 ms after the 10 ms
    // lead) are rows; the rest were never reached and are only counted.
    assert!(run.rows.iter().all(|r| r.outcome.as_str() == "ok"));
    let ok = run.rows.len() as u64;
    assert!((49..=51).contains(&ok), "ok {ok}");
    assert_eq!(run.dispatched.dispatched, ok);
    assert_eq!(run.dispatched.dispatched + run.dispatched.not_reached, 100);
}

/// Most rows in flight at once, from their send and completion times.
fn max_in_flight(rows: &[ResultRow]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for r in rows {
        if let (Some(s), Some(c)) = (r.sent_at_us, r.completed_at_us) {
            // Ends sort before starts at the same instant: back to back is
            // not overlap.
            edges.push((s, 1));
            edges.push((c, -1));
        }
    }
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(start_paused = true)]
async fn a_closed_loop_keeps_its_users_busy_and_never_more() {
    let t = trace(&[Some(0); 20]);
    let spec = ScheduleSpec::Rate {
        rate: 1.0,
        arrivals: Arrivals::Constant,
        order: Order::Sequential,
        limit: Limit {
            duration_ns: None,
            requests: None,
        },
        seed: 0,
    };
    // Each request takes 40 ms + 3 x 10 ms.
    let transport = || Scripted {
        ttft: Duration::from_millis(40),
        itl: Duration::from_millis(10),
        tokens: 4,
    };
    let run = run_closed(
        transport(),
        prepared(&t, &spec),
        None,
        None,
        Some(ClosedLoop {
            users: 3,
            duration: None,
            stages: None,
        }),
    )
    .await;
    assert_eq!(run.rows.len(), 20);
    assert_eq!(max_in_flight(&run.rows), 3);
    let start = run.clock.start_unix_us;
    let mut sent: Vec<i64> = run
        .rows
        .iter()
        .map(|r| r.sent_at_us.unwrap() - start)
        .collect();
    sent.sort_unstable();
    // Three leave at t=0, then one each time a user is free: back to back,
    // 70 ms apart, so the 20th leaves in the seventh round at 420 ms.
    assert_eq!(&sent[..3], &[0, 0, 0]);
    assert_eq!(sent[19], 6 * 70_000);
    for r in &run.rows {
        assert_eq!(r.send_lag_us, Some(0), "the user's turn is the schedule");
        assert_eq!(Some(r.scheduled_at_us), r.sent_at_us);
    }

    // Bounded by time: 200 ms of three users is three rounds of 70 ms (the
    // fourth would start at 210 ms), and nothing counts as never reached.
    let many = trace(&[Some(0); 1_000]);
    let run = run_closed(
        transport(),
        prepared(&many, &spec),
        None,
        None,
        Some(ClosedLoop {
            users: 3,
            duration: Some(Duration::from_millis(200)),
            stages: None,
        }),
    )
    .await;
    assert_eq!(run.rows.len(), 9);
    assert_eq!(run.dispatched.dispatched, 9);
    assert_eq!(run.dispatched.not_reached, 0);
}

/// Sent times of `rows` relative to the run's t=0, by their `stage`.
fn sent_by_stage(run: &Run, stages: usize) -> Vec<Vec<i64>> {
    let mut out = vec![Vec::new(); stages];
    for r in &run.rows {
        let stage = usize::try_from(r.stage.expect("every row has a stage")).unwrap();
        out[stage].push(r.sent_at_us.unwrap() - run.clock.start_unix_us);
    }
    for s in &mut out {
        s.sort_unstable();
    }
    out
}

#[tokio::test(start_paused = true)]
async fn rate_stages_change_the_rate_at_their_boundaries() {
    let t = trace(&[None; 50]);
    let stages: Stages = "10/s:1s,50/s:1s,0/s:500ms,10/s:1s".parse().unwrap();
    let spec = ScheduleSpec::Stages {
        stages: stages.clone(),
        arrivals: Arrivals::Constant,
        order: Order::Sequential,
        requests: None,
        seed: 0,
    };
    let fast = || Scripted {
        ttft: Duration::from_millis(5),
        itl: Duration::from_millis(1),
        tokens: 2,
    };
    let run = run_staged(fast(), prepared(&t, &spec), None, None, None, Some(stages)).await;
    let by_stage = sent_by_stage(&run, 4);
    let counts: Vec<usize> = by_stage.iter().map(Vec::len).collect();
    assert_eq!(counts, [10, 50, 0, 10]);
    // 100 ms apart, then 20 ms apart from the boundary at 1 s, then idle
    // until 2.5 s, then 100 ms apart again.
    assert_eq!(by_stage[0][..3], [0, 100_000, 200_000]);
    assert_eq!(by_stage[0][9], 900_000);
    assert_eq!(by_stage[1][..2], [1_000_000, 1_020_000]);
    assert_eq!(by_stage[1][49], 1_980_000);
    assert_eq!(by_stage[3][..2], [2_500_000, 2_600_000]);
    assert!(run.rows.iter().all(|r| r.send_lag_us == Some(0)));
    assert_eq!(run.dispatched.not_reached, 0);

    // A ramp: from 10/s to 30/s over the whole second stage is 20 expected
    // arrivals there, leaving further apart at its start than at its end.
    let mut ramped: Stages = "10/s:1s,30/s:1s".parse().unwrap();
    ramped.ramp_ns = 1_000_000_000;
    let spec = ScheduleSpec::Stages {
        stages: ramped.clone(),
        arrivals: Arrivals::Constant,
        order: Order::Sequential,
        requests: None,
        seed: 0,
    };
    let run = run_staged(fast(), prepared(&t, &spec), None, None, None, Some(ramped)).await;
    let by_stage = sent_by_stage(&run, 2);
    assert_eq!(by_stage[0].len(), 10);
    assert_eq!(by_stage[1].len(), 20);
    let gaps: Vec<i64> = by_stage[1].windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] <= g[0]),
        "gaps shrink: {gaps:?}"
    );
    assert!(
        gaps[0] > 80_000 && gaps[gaps.len() - 1] < 40_000,
        "{gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn user_stages_change_the_users_at_their_boundaries() {
    let t = trace(&[Some(0); 500]);
    let spec = ScheduleSpec::Rate {
        rate: 1.0,
        arrivals: Arrivals::Constant,
        order: Order::Sequential,
        limit: Limit::default(),
        seed: 0,
    };
    // Each request takes 100 ms.
    let transport = Scripted {
        ttft: Duration::from_millis(70),
        itl: Duration::from_millis(10),
        tokens: 4,
    };
    let stages: Stages = "2u:1s,5u:1s,1u:1s".parse().unwrap();
    let run = run_closed(
        transport,
        prepared(&t, &spec),
        None,
        None,
        Some(ClosedLoop {
            users: 5,
            duration: Some(Duration::from_secs(3)),
            stages: Some(stages),
        }),
    )
    .await;
    let in_stage = |k: i32| -> Vec<ResultRow> {
        run.rows
            .iter()
            .filter(|r| r.stage == Some(k))
            .cloned()
            .collect()
    };
    // Back to back, 100 ms each: 2 users x 10, 5 x 10, 1 x 10.
    let counts: Vec<usize> = (0..3).map(|k| in_stage(k).len()).collect();
    assert_eq!(counts, [20, 50, 10]);
    assert_eq!(max_in_flight(&in_stage(0)), 2);
    assert_eq!(max_in_flight(&in_stage(1)), 5);
    assert_eq!(max_in_flight(&in_stage(2)), 1);
    // Users leave as their request ends: none is cut off, none is lost.
    assert!(run.rows.iter().all(|r| r.outcome.as_str() == "ok"));
    assert_eq!(run.dispatched.dispatched as usize, run.rows.len());
}

#[tokio::test(start_paused = true)]
async fn over_max_connections_requests_wait_in_the_client_and_are_rows() {
    // 40 requests 10 ms apart, each holding its connection 100 ms: about
    // ten would be open at once; with 4 connections the rest queue.
    let offsets: Vec<Option<i64>> = (0..40).map(|i| Some(i * 10_000)).collect();
    let t = trace(&offsets);
    let spec = ScheduleSpec::Recorded {
        speedup: 1.0,
        start_us: None,
        end_us: None,
        spread_us: None,
        requests: None,
    };
    let slow = Scripted {
        ttft: Duration::from_millis(70),
        itl: Duration::from_millis(10),
        tokens: 4,
    };
    let run = run_with(slow, prepared(&t, &spec), None, None, None, None, Some(4)).await;
    assert_eq!(run.rows.len(), 40);
    assert!(run.rows.iter().all(|r| r.outcome.as_str() == "ok"));
    assert_eq!(max_in_flight(&run.rows), 4);
    // The first four never waited (no queue_wait_us); later ones did, and
    // their wait is their send lag.
    let waited: Vec<&ResultRow> = run
        .rows
        .iter()
        .filter(|r| r.queue_wait_us.is_some())
        .collect();
    assert!(waited.len() >= 30, "{}", waited.len());
    assert!(run.rows[..4].iter().all(|r| r.queue_wait_us.is_none()));
    for r in waited {
        assert_eq!(r.queue_wait_us, r.send_lag_us);
        assert!(r.queue_wait_us.unwrap() > 0);
    }
}
