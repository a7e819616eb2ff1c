//! Session replay against a scripted loopback server that records what
//! arrived and when: later turns wait for the previous reply and its think
//! time, repeat the conversation so far, and keep the trace's lengths.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use llm_replay::client::Api;
use llm_replay::prompt::PromptMode;
use llm_replay::record::{Outcome, ResultRow, read_results};
use llm_replay::replay::dispatch::ClosedLoop;
use llm_replay::replay::session::{SessionOptions, TurnFailure, TurnTiming};
use llm_replay::replay::{RunOptions, Shutdown, Target, TargetConfig};
use llm_replay::schedule::ScheduleSpec;
use llm_replay::trace::{TraceMetadata, TraceRecord, TraceWriter, read_trace};
use serde_json::{Value, json};

/// Bodies received, in arrival order.
type Received = Arc<Mutex<Vec<Value>>>;

/// What the scripted server does: records bodies, and answers 500 to a
/// prompt of `fail_words` words.
#[derive(Clone)]
struct Script {
    seen: Received,
    fail_words: Option<usize>,
    /// Requests being answered now, and the most at once.
    busy: Arc<(AtomicUsize, AtomicUsize)>,
    /// How long each completion takes before it streams.
    work: Duration,
}

fn words(v: &Value) -> usize {
    v["prompt"]
        .as_str()
        .map_or(0, |p| p.split(' ').filter(|w| !w.is_empty()).count())
}

async fn completions(State(script): State<Script>, body: Bytes) -> axum::response::Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = v["max_tokens"].as_u64().unwrap_or(1);
    let fail = script.fail_words == Some(words(&v));
    script.seen.lock().unwrap().push(v);
    if fail {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "scripted failure",
        )
            .into_response();
    }
    // A short wait, then exactly max_tokens content chunks and usage.
    let now = script.busy.0.fetch_add(1, Ordering::SeqCst) + 1;
    script.busy.1.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(script.work).await;
    script.busy.0.fetch_sub(1, Ordering::SeqCst);
    let mut out = String::new();
    for _ in 0..n {
        out.push_str(
            "data: {\"choices\":[{\"index\":0,\"text\":\" x\",\"finish_reason\":null}]}\n\n",
        );
    }
    out.push_str(&format!(
        "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\n",
        n + 1
    ));
    out.push_str("data: [DONE]\n\n");
    ([("content-type", "text/event-stream")], out).into_response()
}

/// The chat API: a role-only first chunk, then `max_tokens` content chunks
/// ` x`, usage and `[DONE]`.
async fn chat(State(script): State<Script>, body: Bytes) -> axum::response::Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = v["max_tokens"].as_u64().unwrap_or(1);
    script.seen.lock().unwrap().push(v);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut out =
        String::from("data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n");
    for _ in 0..n {
        out.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" x\"}}]}\n\n");
    }
    out.push_str(
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
    );
    out.push_str("data: [DONE]\n\n");
    ([("content-type", "text/event-stream")], out).into_response()
}

async fn models() -> impl IntoResponse {
    axum::Json(json!({"object": "list", "data": [{"id": "m", "object": "model"}]}))
}

type Busy = Arc<(AtomicUsize, AtomicUsize)>;

async fn serve_counting(fail_words: Option<usize>, work: Duration) -> (String, Received, Busy) {
    let seen: Received = Arc::default();
    let busy: Busy = Arc::default();
    let app = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .with_state(Script {
            seen: seen.clone(),
            fail_words,
            busy: busy.clone(),
            work,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen, busy)
}

/// Two sessions (three and two turns, 5 output tokens each, inputs that
/// grow by the last prompt, its reply and 15 new tokens) and a row on its
/// own.
fn write_trace(path: &std::path::Path) {
    let mut w = TraceWriter::create(path).unwrap();
    let rows = [
        ("a0", Some("a"), 0, 0, 20, None),
        ("b0", Some("b"), 0, 5_000, 30, None),
        ("solo", None, 0, 8_000, 10, None),
        ("a1", Some("a"), 1, 10_000, 40, Some(100_000)),
        ("b1", Some("b"), 1, 15_000, 50, Some(50_000)),
        ("a2", Some("a"), 2, 20_000, 60, Some(100_000)),
    ];
    for (i, (id, session, turn, at, input, think)) in rows.into_iter().enumerate() {
        w.write(&TraceRecord {
            request_id: id.into(),
            arrival_offset_us: Some(at),
            input_tokens: input,
            output_tokens: 5,
            session_id: session.map(str::to_owned),
            turn_index: session.map(|_| turn),
            think_time_us: think,
            prompt_text: Some(format!("question {id}")),
            source_row: i as i64,
            ..TraceRecord::default()
        })
        .unwrap();
    }
    let mut meta = TraceMetadata::new("test");
    meta.rows_read = 6;
    meta.tokenizer = Some("o200k_base".into());
    w.finish(meta).unwrap();
}

type Replayed = (
    Vec<ResultRow>,
    Vec<Value>,
    llm_replay::record::summary::Summary,
);

async fn replay(sessions: Option<SessionOptions>, fail_words: Option<usize>) -> Replayed {
    replay_api(sessions, fail_words, Api::Completions).await
}

async fn replay_api(
    sessions: Option<SessionOptions>,
    fail_words: Option<usize>,
    api: Api,
) -> Replayed {
    let (rows, bodies, summary, _) = replay_full(sessions, fail_words, api, None).await;
    (rows, bodies, summary)
}

async fn replay_full(
    sessions: Option<SessionOptions>,
    fail_words: Option<usize>,
    api: Api,
    closed_loop: Option<ClosedLoop>,
) -> (
    Vec<ResultRow>,
    Vec<Value>,
    llm_replay::record::summary::Summary,
    usize,
) {
    replay_prompts(
        sessions,
        fail_words,
        api,
        closed_loop,
        PromptMode::Synthetic,
        None,
    )
    .await
}

async fn replay_prompts(
    sessions: Option<SessionOptions>,
    fail_words: Option<usize>,
    api: Api,
    closed_loop: Option<ClosedLoop>,
    prompts: PromptMode,
    extra_body: Option<serde_json::Map<String, Value>>,
) -> (
    Vec<ResultRow>,
    Vec<Value>,
    llm_replay::record::summary::Summary,
    usize,
) {
    // A closed loop gets slow answers, so its users surely overlap.
    let work = Duration::from_millis(if closed_loop.is_some() { 200 } else { 20 });
    let (url, seen, busy) = serve_counting(fail_words, work).await;
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("t.parquet");
    write_trace(&trace_path);
    let trace = Arc::new(read_trace(&trace_path).unwrap());
    let cfg = TargetConfig {
        url: Some(url),
        model: Some("m".into()),
        api,
        prompts,
        extra_body: extra_body.map(Arc::new),
        ..TargetConfig::default()
    };
    let target = Target::connect(&cfg, &trace, 0).await.unwrap();
    let out = dir.path().join("r.parquet");
    let opts = RunOptions {
        by: Vec::new(),
        schedule: ScheduleSpec::Recorded {
            speedup: 1.0,
            start_us: None,
            end_us: None,
            spread_us: None,
            requests: None,
        },
        output: out.clone(),
        slo: None,
        grace: Duration::from_secs(5),
        limits: Default::default(),
        phases: Default::default(),
        progress: false,
        monitor: Default::default(),
        extra_metadata: vec![],
        sessions,
        closed_loop,
        shard: None,
        start_at_us: None,
        prompt_salt: 0,
    };
    let recorded = llm_replay::replay::run(trace, &target, opts, &Shutdown::new())
        .await
        .unwrap();
    let rows = read_results(&out).unwrap().rows;
    let bodies = seen.lock().unwrap().clone();
    (
        rows,
        bodies,
        recorded.summary,
        busy.1.load(Ordering::SeqCst),
    )
}

fn prompt_of<'a>(bodies: &'a [Value], id: &str, rows: &[ResultRow]) -> &'a str {
    // Bodies carry no request id; they are matched by their exact length
    // in words, which differs for every row of this trace.
    let row = rows.iter().find(|r| r.request_id == id).unwrap();
    let n = row.prompt_tokens_sent.unwrap() as usize;
    bodies
        .iter()
        .map(|b| b["prompt"].as_str().unwrap())
        .find(|p| p.split(' ').filter(|w| !w.is_empty()).count() == n)
        .unwrap_or_else(|| panic!("no body of {n} words for {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_turns_wait_for_the_reply_and_repeat_the_conversation() {
    let (rows, bodies, summary) = replay(
        Some(SessionOptions {
            timing: TurnTiming::Max,
            think_time_scale: 1.0,
            ..SessionOptions::default()
        }),
        None,
    )
    .await;
    assert_eq!(rows.len(), 6, "one row per trace row");
    assert_eq!(bodies.len(), 6);
    let row = |id: &str| rows.iter().find(|r| r.request_id == id).unwrap();
    for (prev, next) in [("a0", "a1"), ("a1", "a2"), ("b0", "b1")] {
        let (p, n) = (row(prev), row(next));
        assert!(p.is_ok() && n.is_ok(), "{p:?} {n:?}");
        assert_eq!(n.session_id, p.session_id);
        assert_eq!(n.turn_index, p.turn_index.map(|t| t + 1));
        // Closed inside the session: sent no earlier than the previous
        // reply's end plus the think time.
        let think = n.think_time_us.unwrap();
        assert!(think > 0);
        assert!(
            n.sent_at_us.unwrap() >= p.completed_at_us.unwrap() + think,
            "{next} left before {prev}'s reply + {think} µs"
        );
        // The server answered the recorded length, so the prompt has the
        // trace's length, and all but 15 tokens repeat the conversation.
        assert_eq!(n.prompt_tokens_sent, Some(n.input_tokens), "{next}");
        assert_eq!(n.history_tokens, Some(p.input_tokens + 5), "{next}");
        let (pp, np) = (
            prompt_of(&bodies, prev, &rows),
            prompt_of(&bodies, next, &rows),
        );
        assert!(
            np.starts_with(pp),
            "{next}'s prompt does not start with {prev}'s"
        );
    }
    assert_eq!(row("a0").turn_index, Some(0));
    assert_eq!(row("solo").session_id.as_deref(), Some("row-2"));
    assert_eq!(row("solo").turn_index, Some(0));
    // Recorded times on the run's clock: stretch is measurable.
    let a2 = row("a2");
    assert!(a2.sent_at_us.unwrap() > a2.recorded_at_us.unwrap());
    let ss = summary.sessions.expect("session figures");
    assert_eq!((ss.sessions, ss.turns), (3, 6));
    // a2 is due 200 ms of think time after a 20 ms recorded offset.
    assert!(ss.stretch.max_ms >= 150.0, "{ss:?}");
    assert_eq!(ss.prompt_drift_turns, 0);
    assert_eq!(ss.ttft_by_turn.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_rows_leave_at_their_own_times_with_their_own_prompts() {
    let (rows, bodies, summary) = replay(None, None).await;
    assert!(summary.sessions.is_none());
    assert_eq!(rows.len(), 6);
    assert_eq!(bodies.len(), 6);
    assert!(
        rows.iter()
            .all(|r| r.session_id.is_none() && r.turn_index.is_none())
    );
    // a1 left at its recorded 10 ms, before a0's 20 ms reply ended.
    let row = |id: &str| rows.iter().find(|r| r.request_id == id).unwrap();
    assert!(row("a1").sent_at_us.unwrap() < row("a0").completed_at_us.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_turn_continues_or_skips_the_rest_of_its_session() {
    // a0 (20 words) fails; session b and the solo row are untouched.
    let continued = replay(Some(SessionOptions::default()), Some(20)).await;
    let aborted = replay(
        Some(SessionOptions {
            on_failure: TurnFailure::Abort,
            ..SessionOptions::default()
        }),
        Some(20),
    )
    .await;
    for (rows, bodies, _) in [&continued, &aborted] {
        assert_eq!(rows.len(), 6, "every turn is a row");
        let a0 = rows.iter().find(|r| r.request_id == "a0").unwrap();
        assert_eq!(a0.outcome, Outcome::HttpError);
        assert_eq!(a0.status_code, Some(500));
        assert!(bodies.len() >= 4);
    }
    let row =
        |rows: &[ResultRow], id: &str| rows.iter().find(|r| r.request_id == id).cloned().unwrap();

    // continue: a1 and a2 are sent, the recorded reply length standing in
    // for a0's reply, so their prompts keep the trace's lengths.
    let (rows, bodies, _) = &continued;
    assert_eq!(bodies.len(), 6);
    for id in ["a1", "a2"] {
        let r = row(rows, id);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(r.prompt_tokens_sent, Some(r.input_tokens), "{id}");
    }

    // abort: a1 and a2 are rows with outcome skipped, never sent.
    let (rows, bodies, summary) = &aborted;
    assert_eq!(bodies.len(), 4, "a1 and a2 not sent");
    for id in ["a1", "a2"] {
        let r = row(rows, id);
        assert_eq!(r.outcome, Outcome::Skipped, "{id}");
        assert!(r.sent_at_us.is_none(), "{id}");
        assert_eq!(r.session_id.as_deref(), Some("a"));
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .contains("--on-turn-failure abort")
        );
    }
    assert!(row(rows, "b1").is_ok());
    assert_eq!(summary.outcomes.get("skipped").copied(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_turns_send_the_conversation_with_the_servers_own_replies() {
    let (rows, bodies, _) = replay_api(Some(SessionOptions::default()), None, Api::Chat).await;
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(ResultRow::is_ok), "{rows:?}");
    let messages = |i: usize| bodies[i]["messages"].as_array().unwrap().clone();
    // Bodies by conversation length: a2 has 5 messages, a1 and b1 3.
    let by_len = |n: usize| -> Vec<usize> {
        (0..bodies.len())
            .filter(|&i| messages(i).len() == n)
            .collect()
    };
    assert_eq!(by_len(1).len(), 3, "three first turns");
    assert_eq!(by_len(3).len(), 2);
    let a2 = messages(by_len(5)[0]);
    // Its history is a1's whole conversation, then the reply the server
    // streamed for a1, then a new user message.
    let a1 = by_len(3)
        .into_iter()
        .map(messages)
        .find(|m| a2.starts_with(m))
        .expect("a2 repeats a1's messages");
    let roles: Vec<&str> = a2.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
    assert_eq!(
        a2[3]["content"], " x x x x x",
        "the server's own reply text"
    );
    assert_eq!(a1[1]["content"], " x x x x x");
    // The server answered the recorded length, so each turn has the
    // trace's input length (messages counted one by one, as ingest does).
    for r in &rows {
        assert_eq!(
            r.prompt_tokens_sent,
            Some(r.input_tokens),
            "{}",
            r.request_id
        );
    }
    let a2_row = rows.iter().find(|r| r.request_id == "a2").unwrap();
    let a1_row = rows.iter().find(|r| r.request_id == "a1").unwrap();
    assert_eq!(a2_row.history_tokens, Some(a1_row.input_tokens + 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_never_has_more_users_in_flight_at_the_server() {
    // Two users, three sessions: a user keeps its session to the end.
    let users = Some(ClosedLoop {
        users: 2,
        duration: None,
        stages: None,
    });
    let (rows, bodies, summary, most) = replay_full(
        Some(SessionOptions::default()),
        None,
        Api::Completions,
        users.clone(),
    )
    .await;
    assert_eq!(rows.len(), 6);
    assert_eq!(bodies.len(), 6);
    assert_eq!(
        most, 2,
        "the server saw at most (and at some point) 2 at once"
    );
    assert_eq!(summary.closed_loop_users, Some(2));
    assert!(format!("{summary}").contains("closed loop, 2 users"));
    // Each session's turns still wait for the reply before them.
    let row = |id: &str| rows.iter().find(|r| r.request_id == id).unwrap();
    assert!(row("a1").sent_at_us.unwrap() >= row("a0").completed_at_us.unwrap());
    assert!(row("a2").sent_at_us.unwrap() >= row("a1").completed_at_us.unwrap());
    // Rows on their own: the same cap.
    let (rows, _, _, most) = replay_full(None, None, Api::Completions, users).await;
    assert_eq!(rows.len(), 6);
    assert_eq!(most, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_prompts_resend_the_recorded_conversation_with_the_servers_replies() {
    let opts = Some(SessionOptions {
        think_time_scale: 0.0,
        ..SessionOptions::default()
    });
    // Completions: a transcript of the turns' own text and the replies.
    let (rows, bodies, _, _) = replay_prompts(
        opts,
        None,
        Api::Completions,
        None,
        PromptMode::Original,
        None,
    )
    .await;
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r.outcome == Outcome::Ok));
    let prompts: Vec<&str> = bodies.iter().filter_map(|b| b["prompt"].as_str()).collect();
    let reply = " x x x x x";
    for want in [
        "question a0".to_owned(),
        format!("question a0{reply}\n\nquestion a1"),
        format!("question a0{reply}\n\nquestion a1{reply}\n\nquestion a2"),
        "question solo".to_owned(),
    ] {
        assert!(prompts.contains(&want.as_str()), "{want:?} in {prompts:?}");
    }
    // Chat: the messages, the assistant's replies as streamed between them.
    let (_, bodies, _, _) =
        replay_prompts(opts, None, Api::Chat, None, PromptMode::Original, None).await;
    let last = bodies
        .iter()
        .map(|b| b["messages"].as_array().unwrap().clone())
        .max_by_key(Vec::len)
        .unwrap();
    let got: Vec<(&str, &str)> = last
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("user", "question a0"),
            ("assistant", reply),
            ("user", "question a1"),
            ("assistant", reply),
            ("user", "question a2"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_parameters_and_the_extra_body_arrive_in_every_body() {
    use clap::Parser;
    let cli = llm_replay::cli::Cli::try_parse_from([
        "llm-replay",
        "replay",
        "t.parquet",
        "--temperature",
        "0.7",
        "--top-k",
        "20",
        "--sampling-seed",
        "42",
        "--stop",
        "END",
        "--stop",
        "###",
        "--extra-body",
        r#"{"ignore_eos": true, "temperature": 2.0, "chat_template_kwargs": {"enable_thinking": false}}"#,
    ])
    .unwrap();
    let llm_replay::cli::Command::Replay(args) = cli.command else {
        unreachable!()
    };
    let extra = llm_replay::commands::replay::extra_body(&args.target)
        .unwrap()
        .unwrap();
    let (rows, bodies, _, _) = replay_prompts(
        Some(SessionOptions::default()),
        None,
        Api::Chat,
        None,
        PromptMode::Synthetic,
        Some(extra),
    )
    .await;
    assert_eq!(bodies.len(), rows.len());
    for b in &bodies {
        // The flag wins over the same key in --extra-body.
        assert_eq!(b["temperature"], 0.7);
        assert_eq!(b["top_k"], 20);
        assert_eq!(b["seed"], 42);
        assert_eq!(b["stop"], json!(["END", "###"]));
        assert_eq!(b["ignore_eos"], true);
        assert_eq!(b["chat_template_kwargs"]["enable_thinking"], false);
        assert!(b["messages"].is_array() && b["model"] == "m");
    }
}
