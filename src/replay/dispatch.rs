//! The open-loop dispatcher and the life of one request.
//!
//! The dispatcher walks the schedule (computed before t=0), waits for each
//! request's absolute deadline, and spawns the request as its own task: it
//! never waits for a response. An in-flight cap is a semaphore taken inside
//! the request's task, so a request it delays still leaves the dispatcher on
//! time (its wait is recorded as `queue_wait_us`), and one it drops is a row
//! with outcome `dropped`. Every request that was due becomes exactly one row.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::pacer::Pacer;
use crate::client::{Endpoint, Exchange, Outcome, RequestSpec, Timeouts};
use crate::record::{OUTCOMES, Phase, ResultRow, TokenSource};
use crate::schedule::{ScheduledRequest, Stages};

/// Sends one request and measures it. [`Endpoint`] is the real one; tests
/// script their own.
pub trait Transport: Send + Sync + 'static {
    /// Sends `body` for `spec`; never fails, every failure is an
    /// [`Exchange`] outcome. When `cancel` fires the request ends as
    /// `cancelled`, keeping what it measured so far.
    fn send(
        &self,
        spec: &RequestSpec,
        body: Bytes,
        timeouts: &Timeouts,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Exchange> + Send;
}

impl Transport for Endpoint {
    fn send(
        &self,
        spec: &RequestSpec,
        body: Bytes,
        timeouts: &Timeouts,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Exchange> + Send {
        Endpoint::send(self, spec, body, timeouts, cancel)
    }
}

/// What to do when `--max-in-flight` requests are already out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CapPolicy {
    /// Wait for a slot; the wait is recorded as `queue_wait_us` and is part
    /// of the send lag.
    #[default]
    Wait,
    /// Do not send; record the request as `dropped`.
    Drop,
}

/// A request ready to leave: its place in the schedule and its body, or
/// why it could not be built.
#[derive(Debug)]
pub struct Prepared {
    /// Where it sits in the schedule.
    pub sched: ScheduledRequest,
    /// The trace row's id.
    pub request_id: String,
    /// Prompt tokens asked.
    pub input_tokens: i32,
    /// Output tokens asked.
    pub output_tokens_expected: i32,
    /// The request, or the reason it could not be built.
    pub request: Result<(RequestSpec, Bytes), String>,
    /// Its place in a session, in session replay.
    pub turn: Option<Turn>,
    /// What follows it in its session, in session replay.
    pub then: Option<Continuation>,
    /// How many turns of its session follow it (0 outside session replay).
    pub turns_after: u64,
    /// Why it is recorded without being sent (`skipped`): an earlier turn
    /// of its session failed under `--on-turn-failure abort`.
    pub skip: Option<String>,
    /// Its API, model and the trace's class labels, for the results.
    pub class: RowClass,
}

/// What a row is, for breaking results down by class: the API and model it
/// went to, and the trace's labels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowClass {
    /// The API (`completions`, `chat`, ...).
    pub api: Option<&'static str>,
    /// The model name sent.
    pub model: Option<Arc<str>>,
    /// The trace's `request_kind`.
    pub request_kind: Option<String>,
    /// The trace's `user_id`.
    pub user_id: Option<String>,
    /// Inputs in the request (an embeddings batch; 1 otherwise).
    pub inputs: u32,
}

/// A request's place in its session (session replay).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Turn {
    /// The trace's session id.
    pub session_id: String,
    /// The turn's index in the session.
    pub turn_index: i32,
    /// Think time applied before it (none for a first turn).
    pub think_time_us: Option<i64>,
    /// Prompt tokens sent.
    pub prompt_tokens_sent: Option<i32>,
    /// Of those, tokens repeating the session so far.
    pub history_tokens: Option<i32>,
    /// When the trace says it left, on the run's clock (session start plus
    /// its recorded offset in the session, time-scaled).
    pub recorded_at: Option<Instant>,
}

/// What a finished turn tells the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnEnd {
    /// Whether it succeeded.
    pub ok: bool,
    /// Output tokens the server gave (0 for a failed request).
    pub reply_tokens: u32,
    /// The reply's text, when the turn asked for it (chat sessions).
    pub reply_text: Option<String>,
    /// When its response ended (or it failed).
    pub ended: Instant,
}

/// Builds the next turn of a session from how the last one ended: the
/// request and the instant it becomes due, or `None` when the session is
/// over.
pub struct Continuation(pub Box<dyn FnOnce(TurnEnd) -> Option<(Prepared, Instant)> + Send>);

impl std::fmt::Debug for Continuation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Continuation")
    }
}

/// The requests one engine thread sends, in schedule order: batches from
/// the producer thread (one wake-up per batch, not per request), or a list
/// made up front.
#[derive(Debug)]
pub struct Feed {
    rx: Option<mpsc::Receiver<Vec<Prepared>>>,
    batch: std::vec::IntoIter<Prepared>,
}

impl Feed {
    /// Batches as the producer sends them; the feed ends when it hangs up.
    pub fn new(rx: mpsc::Receiver<Vec<Prepared>>) -> Self {
        Self {
            rx: Some(rx),
            batch: Vec::new().into_iter(),
        }
    }

    /// The next request, waiting for the producer when it is behind.
    pub async fn next(&mut self) -> Option<Prepared> {
        loop {
            if let Some(p) = self.batch.next() {
                return Some(p);
            }
            self.batch = self.rx.as_mut()?.recv().await?.into_iter();
        }
    }

    /// Counts what is left, to the producer's end (it stops at its next
    /// hand-over once the run is stopped).
    pub async fn count(mut self) -> u64 {
        let mut n = self.batch.len() as u64;
        if let Some(rx) = self.rx.as_mut() {
            while let Some(batch) = rx.recv().await {
                n += batch.len() as u64;
            }
        }
        n
    }
}

impl From<Vec<Prepared>> for Feed {
    fn from(prepared: Vec<Prepared>) -> Self {
        Self {
            rx: None,
            batch: prepared.into_iter(),
        }
    }
}

/// Maps run instants to absolute UTC microseconds.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    /// t=0 of the schedule.
    pub start: Instant,
    /// t=0 as microseconds since the Unix epoch.
    pub start_unix_us: i64,
}

impl RunClock {
    /// A clock whose t=0 is `start`, `lead` from now.
    pub fn starting_in(lead: Duration) -> Self {
        let now = Instant::now();
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self {
            start: now + lead,
            start_unix_us: unix_now + i64::try_from(lead.as_micros()).unwrap_or(0),
        }
    }

    /// A clock whose t=0 is the wall-clock time `unix_us` (`--start-at`),
    /// or `None` when that is already past.
    pub fn starting_at(unix_us: i64) -> Option<Self> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let lead = u64::try_from(unix_us.checked_sub(now)?).ok()?;
        Some(Self {
            start: Instant::now() + Duration::from_micros(lead),
            start_unix_us: unix_us,
        })
    }

    /// Absolute microseconds of `at`.
    pub fn unix_us(&self, at: Instant) -> i64 {
        self.start_unix_us + signed_us(at, self.start)
    }

    /// The deadline of a schedule offset.
    pub fn deadline(&self, offset_ns: u64) -> Instant {
        self.start + Duration::from_nanos(offset_ns)
    }
}

/// `a - b` in microseconds, negative when `a` is earlier.
pub fn signed_us(a: Instant, b: Instant) -> i64 {
    if a >= b {
        i64::try_from((a - b).as_micros()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from((b - a).as_micros()).unwrap_or(i64::MAX)
    }
}

/// Outcomes that count as errors: every outcome but the first, `ok`, in
/// the order [`crate::record::OUTCOMES`] lists them.
pub const ERROR_KINDS: [Outcome; OUTCOMES.len() - 1] = {
    assert!(matches!(OUTCOMES[0], Outcome::Ok));
    let mut kinds = [Outcome::Ok; OUTCOMES.len() - 1];
    let mut i = 0;
    while i < kinds.len() {
        kinds[i] = OUTCOMES[i + 1];
        i += 1;
    }
    kinds
};

/// Where `outcome` sits in [`ERROR_KINDS`] (`None` for ok).
fn kind_index(outcome: Outcome) -> Option<usize> {
    ERROR_KINDS.iter().position(|k| *k == outcome)
}

/// Rows that are not ok, by outcome: one relaxed atomic add per failed row.
#[derive(Debug, Default)]
pub struct ErrorCounts([AtomicU64; ERROR_KINDS.len()]);

impl ErrorCounts {
    /// Counts a row of this outcome (nothing for ok).
    pub fn add(&self, outcome: Outcome) {
        if let Some(i) = kind_index(outcome) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts, in [`ERROR_KINDS`] order.
    pub fn load(&self) -> [u64; ERROR_KINDS.len()] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// Live counts for the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests that left.
    pub sent: AtomicU64,
    /// Rows produced (any outcome).
    pub done: AtomicU64,
    /// Rows whose outcome is not ok, by outcome.
    pub errors_by_kind: ErrorCounts,
    /// Requests out and not yet answered.
    pub in_flight: AtomicU64,
    /// Later turns of sessions that the run stopped before they were due.
    pub not_reached: AtomicU64,
}

/// Which phase a scheduled offset falls in (sweeps' warm-up and cool-down).
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    /// Requests scheduled before this offset are warm-up.
    pub warmup_ns: u64,
    /// Requests scheduled at or after this offset are cool-down.
    pub cooldown_from_ns: Option<u64>,
}

impl Phases {
    /// The phase of a request scheduled at `offset_ns`.
    pub fn of(&self, offset_ns: u64) -> Phase {
        if offset_ns < self.warmup_ns {
            Phase::Warmup
        } else if self.cooldown_from_ns.is_some_and(|c| offset_ns >= c) {
            Phase::Cooldown
        } else {
            Phase::Steady
        }
    }
}

/// What every request task shares.
pub struct Shared<T> {
    /// Sends requests.
    pub transport: T,
    /// Per-request timeouts.
    pub timeouts: Timeouts,
    /// In-flight cap.
    pub cap: Option<(Arc<Semaphore>, CapPolicy)>,
    /// Connections (streams, with HTTP/2) open at once (`--max-connections`):
    /// a request waits for one after any in-flight cap.
    pub connections: Option<Arc<Semaphore>>,
    /// To the recorder.
    pub rows: mpsc::UnboundedSender<ResultRow>,
    /// Instants to UTC.
    pub clock: RunClock,
    /// Fired when in-flight requests must give up (after the grace period).
    pub cancel: CancellationToken,
    /// Fired when the run stops: sessions send no further turns.
    pub stop: CancellationToken,
    /// Live counts, one set for all the run's engine threads.
    pub counters: Arc<Counters>,
    /// Phase boundaries.
    pub phases: Phases,
    /// The run's stages (`--stages`), which label each row.
    pub stages: Option<Stages>,
}

impl<T: Transport> Shared<T> {
    fn base_row(&self, p: &Prepared) -> ResultRow {
        ResultRow {
            request_id: p.request_id.clone(),
            repeat_index: i32::try_from(p.sched.repeat).unwrap_or(i32::MAX),
            trace_row: i64::from(p.sched.trace_index),
            scheduled_at_us: self.clock.unix_us(self.clock.deadline(p.sched.offset_ns)),
            input_tokens: p.input_tokens,
            output_tokens_expected: p.output_tokens_expected,
            phase: self.phases.of(p.sched.offset_ns),
            session_id: p.turn.as_ref().map(|t| t.session_id.clone()),
            turn_index: p.turn.as_ref().map(|t| t.turn_index),
            think_time_us: p.turn.as_ref().and_then(|t| t.think_time_us),
            prompt_tokens_sent: p
                .turn
                .as_ref()
                .and_then(|t| t.prompt_tokens_sent)
                .or_else(|| {
                    // A batch sends every input at the row's length.
                    (p.class.inputs > 1).then(|| {
                        p.input_tokens
                            .saturating_mul(i32::try_from(p.class.inputs).unwrap_or(i32::MAX))
                    })
                }),
            history_tokens: p.turn.as_ref().and_then(|t| t.history_tokens),
            recorded_at_us: p
                .turn
                .as_ref()
                .and_then(|t| t.recorded_at)
                .map(|t| self.clock.unix_us(t)),
            stage: self
                .stages
                .as_ref()
                .map(|s| i32::try_from(s.index_at(p.sched.offset_ns)).unwrap_or(i32::MAX)),
            api: p.class.api.map(str::to_owned),
            model: p.class.model.as_deref().map(str::to_owned),
            request_kind: p.class.request_kind.clone(),
            user_id: p.class.user_id.clone(),
            ..ResultRow::default()
        }
    }

    fn emit(&self, row: ResultRow) {
        self.counters.errors_by_kind.add(row.outcome);
        self.counters.done.fetch_add(1, Ordering::Relaxed);
        // The recorder outlives every task (it ends when the last sender is
        // dropped), so this only fails if the recorder thread died, which the
        // run reports when it joins it.
        let _ = self.rows.send(row);
    }
}

/// The life of one request, from its deadline to its row, and in session
/// replay the turns that follow it: each waits for its due time (the last
/// turn's end plus think time, or its recorded time), unless the run
/// stops, which leaves the session's remaining turns never reached.
pub async fn run_request<T: Transport>(shared: Arc<Shared<T>>, p: Prepared, scheduled: Instant) {
    let mut p = p;
    let mut scheduled = scheduled;
    loop {
        let then = p.then.take();
        let mut reply_text = None;
        let row = execute(&shared, p, scheduled, &mut reply_text).await;
        let next = then.and_then(|c| {
            (c.0)(TurnEnd {
                ok: row.is_ok(),
                reply_tokens: u32::try_from(
                    row.usage_completion_tokens.unwrap_or(row.output_tokens),
                )
                .unwrap_or(0),
                reply_text,
                ended: Instant::now(),
            })
        });
        shared.emit(row);
        let Some((next, due)) = next else {
            return;
        };
        let stopped = tokio::select! {
            () = tokio::time::sleep_until(due) => false,
            () = shared.stop.cancelled() => true,
        };
        if stopped {
            // This turn and those after it were not yet due.
            shared
                .counters
                .not_reached
                .fetch_add(1 + next.turns_after, Ordering::Relaxed);
            return;
        }
        p = next;
        scheduled = due;
    }
}

/// One request, from its deadline to its row; the reply's text goes to
/// `reply_text` when the request kept it.
async fn execute<T: Transport>(
    shared: &Shared<T>,
    p: Prepared,
    scheduled: Instant,
    reply_text: &mut Option<String>,
) -> ResultRow {
    let mut row = shared.base_row(&p);
    if let Some(why) = p.skip {
        row.outcome = Outcome::Skipped;
        row.error = Some(why);
        return row;
    }
    let (spec, body) = match p.request {
        Ok(r) => r,
        Err(why) => {
            row.outcome = Outcome::Dropped;
            row.error = Some(why);
            return row;
        }
    };
    let queue_start = Instant::now();
    let cancelled = |mut row: ResultRow, waiting_for: &str| {
        row.outcome = Outcome::Cancelled;
        row.error = Some(format!("cancelled while waiting for {waiting_for}"));
        row.queue_wait_us = Some(signed_us(Instant::now(), queue_start));
        row
    };
    let _permit = match &shared.cap {
        None => None,
        Some((sem, CapPolicy::Wait)) => match wait_for(sem, &shared.cancel).await {
            Ok(permit) => permit,
            Err(Cancelled) => return cancelled(row, "an in-flight slot"),
        },
        Some((sem, CapPolicy::Drop)) => match sem.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                row.outcome = Outcome::Dropped;
                row.error = Some("--max-in-flight reached; dropped (--on-cap drop)".into());
                return row;
            }
        },
    };
    let mut waited_for_connection = false;
    let _connection = match &shared.connections {
        None => None,
        Some(sem) => match sem.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                waited_for_connection = true;
                match wait_for(sem, &shared.cancel).await {
                    Ok(permit) => permit,
                    Err(Cancelled) => {
                        return cancelled(row, "a connection (--max-connections)");
                    }
                }
            }
        },
    };
    let sent = Instant::now();
    if shared.cap.is_some() || waited_for_connection {
        row.queue_wait_us = Some(signed_us(sent, queue_start));
    }
    row.sent_at_us = Some(shared.clock.unix_us(sent));
    row.send_lag_us = Some(signed_us(sent, scheduled));
    shared.counters.sent.fetch_add(1, Ordering::Relaxed);
    shared.counters.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut exchange = shared
        .transport
        .send(&spec, body, &shared.timeouts, &shared.cancel)
        .await;
    shared.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    fill_from_exchange(&mut row, &exchange, sent, &shared.clock);
    *reply_text = exchange.reply_text.take();
    row
}

/// The run cancelled in-flight requests during a wait.
struct Cancelled;

/// A permit of `sem`, waiting for one unless `cancel` fires first (`None`
/// if the semaphore was closed, which the run never does).
async fn wait_for(
    sem: &Arc<Semaphore>,
    cancel: &CancellationToken,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Cancelled> {
    tokio::select! {
        permit = sem.clone().acquire_owned() => Ok(permit.ok()),
        () = cancel.cancelled() => Err(Cancelled),
    }
}

fn fill_from_exchange(row: &mut ResultRow, ex: &Exchange, sent: Instant, clock: &RunClock) {
    let as_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    row.status_code = ex.status_code.map(i32::from);
    row.outcome = ex.outcome;
    row.error = ex.error.clone();
    row.first_token_at_us = ex.first_token_at.map(|t| clock.unix_us(t));
    row.completed_at_us = ex.completed_at.map(|t| clock.unix_us(t));
    row.ttft_us = ex.first_token_at.map(|t| signed_us(t, sent));
    if ex.outcome == Outcome::Ok {
        row.e2e_us = ex.completed_at.map(|t| signed_us(t, sent));
    }
    row.itl_us = ex
        .chunk_times
        .windows(2)
        .map(|w| signed_us(w[1], w[0]))
        .collect();
    row.output_chunks = ex.streamed.then(|| as_i32(ex.output_tokens));
    (row.output_tokens, row.output_tokens_source) = match ex.usage_completion_tokens {
        Some(n) => (as_i32(n), Some(TokenSource::Usage)),
        None if ex.streamed => (as_i32(ex.output_tokens), Some(TokenSource::Chunks)),
        None => (as_i32(ex.output_tokens), None),
    };
    row.usage_prompt_tokens = ex.usage_prompt_tokens.map(as_i32);
    row.usage_completion_tokens = ex.usage_completion_tokens.map(as_i32);
}

/// How long one pacer wait may last before dispatch checks for a stop, so
/// a stop is honoured promptly even in a trace with long gaps.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// A closed-loop run: `users` virtual users, each taking the next request
/// (or session) of the schedule as soon as its last one ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedLoop {
    /// Virtual users, the most requests ever in flight (with `stages`, the
    /// largest stage).
    pub users: usize,
    /// The run ends this long after t=0 (in-flight requests finish).
    pub duration: Option<Duration>,
    /// User stages (`--stages 2u:60s,8u:60s`): how many users are active
    /// at each moment. When a stage has fewer users than the last, users
    /// leave as their request (or session) ends; none is cut off.
    pub stages: Option<Stages>,
}

impl ClosedLoop {
    /// As written in the run config: the users, the duration in humantime
    /// form (as `grace` is) and the stages.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "users": self.users,
            "duration": self.duration.map(|d| humantime::format_duration(d).to_string()),
            "stages": self.stages,
        })
    }

    /// Users active at `offset_ns` into the run, and the offset at which
    /// that may next change.
    fn users_at(&self, offset_ns: u64) -> (usize, Option<u64>) {
        let Some(stages) = &self.stages else {
            return (self.users.max(1), None);
        };
        let (level, piece_end) = stages.level_at(offset_ns);
        let users = level.round() as usize;
        // Inside a ramp the count moves by one user at a time: wake again
        // when the next user is due, not at the end of the ramp.
        let next = piece_end.map(|end| {
            let (end_level, _) = stages.level_at(end.saturating_sub(1));
            let steps = (end_level - level).abs();
            if steps >= 1.0 {
                let step = (end - offset_ns) as f64 / steps;
                (offset_ns + step.max(1_000_000.0) as u64).min(end)
            } else {
                end
            }
        });
        (users, next)
    }
}

/// What dispatch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dispatched {
    /// Requests that left the dispatcher (each becomes a row).
    pub dispatched: u64,
    /// Requests still waiting for their time when dispatch stopped: not
    /// rows, counted as never reached.
    pub not_reached: u64,
}

/// Walks `prepared` (in schedule order), waits for each deadline with
/// `pacer`, and starts each request at its deadline. After `stop` fires,
/// the remaining requests are counted (draining `prepared`) and not sent.
/// With `closed`, deadlines are not used: each request waits for a free
/// virtual user instead (each request is then a task of its own on
/// `tasks`).
///
/// The requests of an open-loop run are futures owned by the dispatcher
/// itself, not tasks: a request is polled the moment its deadline comes,
/// so its write leaves then, ahead of responses that are waiting to be
/// read, and between two responses the dispatcher looks at the clock. (As
/// spawned tasks a due request queued behind every task the event loop
/// had already woken: at 10,000 requests a second, milliseconds.) When
/// dispatch ends the requests still in flight go on in one task on
/// `tasks`, and each holds a token of `tasks` until its row is out, so
/// `tasks.wait()` means every row is written.
pub async fn dispatch<T, P>(
    shared: Arc<Shared<T>>,
    mut prepared: Feed,
    mut pacer: P,
    stop: CancellationToken,
    tasks: TaskTracker,
    closed: Option<ClosedLoop>,
) -> Dispatched
where
    T: Transport,
    P: Pacer,
{
    use futures_util::StreamExt;

    if let Some(closed) = closed {
        return closed_loop(shared, prepared, pacer, stop, tasks, closed).await;
    }
    let mut out = Dispatched::default();
    let mut running: InFlight = futures_util::stream::FuturesUnordered::new();
    'feed: loop {
        // The next request, reading responses while the producer is behind.
        let Some(p) = driving(&mut running, prepared.next()).await else {
            break;
        };
        let deadline = shared.clock.deadline(p.sched.offset_ns);
        while !stop.is_cancelled() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let wait = pacer.wait_until(deadline.min(now + STOP_CHECK));
            tokio::pin!(wait);
            // Responses are read while the pacer waits; after each one
            // that ends, the clock decides, not the pacer's wake-up, which
            // the event loop sees only when the dispatcher yields.
            loop {
                tokio::select! {
                    biased;
                    () = &mut wait => break,
                    Some(()) = running.next(), if !running.is_empty() => {
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                }
            }
        }
        if stop.is_cancelled() {
            out.not_reached += 1;
            break 'feed;
        }
        let token = tasks.token();
        let shared = Arc::clone(&shared);
        let mut request: Request = Box::pin(async move {
            run_request(shared, p, deadline).await;
            drop(token);
        });
        // Polled once now: its write leaves at its deadline.
        if futures_util::poll!(request.as_mut()).is_pending() {
            running.push(request);
        }
        out.dispatched += 1;
    }
    // What the producer had already built (it stops at the next request),
    // counted while the requests in flight go on.
    out.not_reached += driving(&mut running, prepared.count()).await;
    if !running.is_empty() {
        tasks.spawn(async move { while running.next().await.is_some() {} });
    }
    out
}

/// `work` to its end, reading the responses of `running` meanwhile.
async fn driving<F: Future>(running: &mut InFlight, work: F) -> F::Output {
    use futures_util::StreamExt;

    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
}

/// One open-loop request, from its deadline to its row (and its session's
/// later turns).
type Request = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The requests a dispatcher has in flight.
type InFlight = futures_util::stream::FuturesUnordered<Request>;

/// Closed-loop dispatch: from t=0, each request (a whole session in
/// session replay) leaves when one of the users active then is free, and
/// holds that user until it, and every later turn of its session, ended.
async fn closed_loop<T, P>(
    shared: Arc<Shared<T>>,
    mut prepared: Feed,
    mut pacer: P,
    stop: CancellationToken,
    tasks: TaskTracker,
    closed: ClosedLoop,
) -> Dispatched
where
    T: Transport,
    P: Pacer,
{
    let mut out = Dispatched::default();
    let start = shared.clock.deadline(0);
    while !stop.is_cancelled() && Instant::now() < start {
        pacer
            .wait_until(start.min(Instant::now() + STOP_CHECK))
            .await;
    }
    let busy = Arc::new(AtomicUsize::new(0));
    let freed = Arc::new(Notify::new());
    let end = closed.duration.map(|d| start + d);
    let until_end = async {
        match end {
            Some(end) => tokio::time::sleep_until(end).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_end);
    let mut ended = false;
    let offset_of = |at: Instant| {
        u64::try_from(at.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX)
    };
    'requests: while let Some(p) = prepared.next().await {
        // Wait for a free user among those active now.
        let now = loop {
            let now = Instant::now();
            let (users, next_change) = closed.users_at(offset_of(now));
            if busy.load(Ordering::Acquire) < users {
                break now;
            }
            let change = async {
                match next_change {
                    Some(at) => tokio::time::sleep_until(shared.clock.deadline(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => {}
                () = &mut until_end => ended = true,
                () = freed.notified() => continue,
                () = change => continue,
            }
            out.not_reached += u64::from(!ended);
            break 'requests;
        };
        if stop.is_cancelled() {
            out.not_reached += 1;
            break;
        }
        if end.is_some_and(|end| now >= end) {
            ended = true;
            break;
        }
        busy.fetch_add(1, Ordering::AcqRel);
        // Its schedule is the moment its user was free.
        let mut p = p;
        p.sched.offset_ns = offset_of(now);
        let shared = shared.clone();
        let (busy, freed) = (busy.clone(), freed.clone());
        tasks.spawn(async move {
            run_request(shared, p, now).await;
            busy.fetch_sub(1, Ordering::AcqRel);
            freed.notify_one();
        });
        out.dispatched += 1;
    }
    if !ended {
        out.not_reached += prepared.count().await;
    }
    out
}
