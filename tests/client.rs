//! The client at the edge, against a loopback server that misbehaves on
//! purpose: endless lines and bodies stop at the response cap, timed-out
//! and cancelled requests keep what they measured, the user's own
//! Authorization header wins over the key variable, and refused credentials
//! are explained before t=0.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream;
use llm_replay::client::{
    Api, Endpoint, EndpointConfig, Exchange, Outcome, Prompt, RequestSpec, Timeouts, build_body,
};
use llm_replay::replay::{Target, TargetConfig};
use llm_replay::trace::{Trace, TraceMetadata};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Authorization headers received, in arrival order.
type Seen = Arc<Mutex<Vec<Option<String>>>>;

const CHUNK: &str =
    "data: {\"choices\":[{\"index\":0,\"text\":\" x\",\"finish_reason\":null}]}\n\n";

fn sse(body: Body) -> Response {
    ([("content-type", "text/event-stream")], body).into_response()
}

/// A line that never ends: 64 KiB of `a` after `data: `, forever.
async fn endless_line() -> Response {
    let head = stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"data: ")) });
    let tail = stream::repeat_with(|| Ok(Bytes::from(vec![b'a'; 64 << 10])));
    sse(Body::from_stream(futures_util::StreamExt::chain(
        head, tail,
    )))
}

/// A non-streamed body of 2 MiB.
async fn big_body() -> Response {
    let text = format!("{{\"pad\":\"{}\"}}", "b".repeat(2 << 20));
    ([("content-type", "application/json")], text).into_response()
}

/// Three content chunks 10 ms apart, then silence.
async fn stalls() -> Response {
    let chunks = stream::unfold(0u32, |i| async move {
        if i < 3 {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Some((
                Ok::<_, Infallible>(Bytes::from_static(CHUNK.as_bytes())),
                i + 1,
            ))
        } else {
            std::future::pending::<()>().await;
            None
        }
    });
    sse(Body::from_stream(chunks))
}

/// Records the Authorization header; answers one chunk, or 401 for any
/// key but `good`.
async fn auth(State(seen): State<Seen>, headers: HeaderMap) -> Response {
    let got = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    seen.lock().unwrap().push(got.clone());
    if got.as_deref() != Some("Bearer good") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"message": "invalid api key", "type": "auth"}})),
        )
            .into_response();
    }
    sse(Body::from(format!("{CHUNK}data: [DONE]\n\n")))
}

fn empty_trace() -> Trace {
    Trace {
        path: "empty.parquet".into(),
        metadata: TraceMetadata::default(),
        records: Vec::new(),
    }
}

async fn models() -> impl IntoResponse {
    axum::Json(json!({"object": "list", "data": [{"id": "m", "object": "model"}]}))
}

async fn serve() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/endless/v1/completions", post(endless_line))
        .route("/big/v1/completions", post(big_body))
        .route("/stall/v1/completions", post(stalls))
        .route("/auth/v1/completions", post(auth))
        .route("/auth/v1/models", get(auth))
        .route("/v1/models", get(models))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

fn endpoint(url: String, headers: Vec<(&str, &str)>, key: Option<&str>, cap: usize) -> Endpoint {
    Endpoint::new(EndpointConfig {
        base_url: url,
        api: Api::Completions,
        headers: headers
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
        api_key: key.map(str::to_owned),
        http2: false,
        connect_timeout: Duration::from_secs(2),
        pool_max_idle_per_host: 4,
        max_response_bytes: cap,
    })
    .unwrap()
}

fn spec(stream: bool) -> RequestSpec {
    RequestSpec {
        request_id: "r1".into(),
        api: Api::Completions,
        model: "m".into(),
        prompt: Prompt::Text(" a b".into()),
        max_tokens: 8,
        stream,
        force_output_len: false,
        extra_body: None,
        keep_reply: false,
    }
}

fn timeouts(request: Duration) -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        ttft: None,
        request: Some(request),
    }
}

async fn send(e: &Endpoint, stream: bool, t: &Timeouts, cancel: &CancellationToken) -> Exchange {
    let s = spec(stream);
    e.send(&s, build_body(&s).unwrap(), t, cancel).await
}

#[tokio::test]
async fn an_endless_line_ends_as_stream_error_at_the_cap() {
    let (url, _) = serve().await;
    let e = endpoint(format!("{url}/endless"), vec![], None, 1 << 20);
    // The request timeout is far away: only the cap can end this request.
    let ex = tokio::time::timeout(
        Duration::from_secs(20),
        send(
            &e,
            true,
            &timeouts(Duration::from_secs(60)),
            &CancellationToken::new(),
        ),
    )
    .await
    .expect("the cap must end an endless line");
    assert_eq!(ex.outcome, Outcome::StreamError);
    assert_eq!(ex.status_code, Some(200));
    let err = ex.error.unwrap();
    assert!(err.contains("--max-response-bytes 1048576"), "{err}");
}

#[tokio::test]
async fn a_body_over_the_cap_ends_as_stream_error() {
    let (url, _) = serve().await;
    let e = endpoint(format!("{url}/big"), vec![], None, 1 << 20);
    let ex = send(
        &e,
        false,
        &timeouts(Duration::from_secs(60)),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(ex.outcome, Outcome::StreamError);
    assert!(
        ex.error
            .unwrap()
            .contains("longer than --max-response-bytes")
    );
    // Under the cap the same body is read (and is not a completion).
    let e = endpoint(format!("{url}/big"), vec![], None, 4 << 20);
    let ex = send(
        &e,
        false,
        &timeouts(Duration::from_secs(60)),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(ex.outcome, Outcome::Ok);
}

#[tokio::test]
async fn a_timed_out_stream_keeps_status_ttft_and_tokens() {
    let (url, _) = serve().await;
    let e = endpoint(format!("{url}/stall"), vec![], None, 1 << 20);
    let ex = send(
        &e,
        true,
        &timeouts(Duration::from_millis(400)),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(ex.outcome, Outcome::Timeout);
    assert_eq!(ex.status_code, Some(200));
    assert!(ex.first_token_at.is_some());
    assert_eq!(ex.output_tokens, 3);
    assert_eq!(ex.chunk_times.len(), 3);
    assert!(ex.error.unwrap().contains("--request-timeout"));
}

#[tokio::test]
async fn a_cancelled_stream_keeps_what_it_measured() {
    let (url, _) = serve().await;
    let e = endpoint(format!("{url}/stall"), vec![], None, 1 << 20);
    let cancel = CancellationToken::new();
    let later = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        later.cancel();
    });
    let ex = send(&e, true, &timeouts(Duration::from_secs(60)), &cancel).await;
    assert_eq!(ex.outcome, Outcome::Cancelled);
    assert_eq!(ex.status_code, Some(200));
    assert!(ex.first_token_at.is_some());
    assert_eq!(ex.output_tokens, 3);
    assert!(ex.completed_at.unwrap() > ex.first_token_at.unwrap());
}

#[tokio::test]
async fn the_users_authorization_header_wins_over_the_key_variable() {
    let (url, seen) = serve().await;
    let t = timeouts(Duration::from_secs(10));
    let none = CancellationToken::new();
    // Both given: the header goes out, the ambient key does not.
    let e = endpoint(
        format!("{url}/auth"),
        vec![("Authorization", "Bearer good")],
        Some("ambient"),
        1 << 20,
    );
    assert_eq!(send(&e, true, &t, &none).await.outcome, Outcome::Ok);
    // Any spelling of the name counts.
    let e = endpoint(
        format!("{url}/auth"),
        vec![("authorization", "Bearer good")],
        Some("ambient"),
        1 << 20,
    );
    assert_eq!(send(&e, true, &t, &none).await.outcome, Outcome::Ok);
    // Only the key: it is sent as a Bearer token.
    let e = endpoint(format!("{url}/auth"), vec![], Some("ambient"), 1 << 20);
    let ex = send(&e, true, &t, &none).await;
    assert_eq!(ex.outcome, Outcome::HttpError);
    assert_eq!(ex.status_code, Some(401));
    assert!(ex.error.unwrap().contains("invalid api key"));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            Some("Bearer good".to_owned()),
            Some("Bearer good".to_owned()),
            Some("Bearer ambient".to_owned())
        ]
    );
}

#[tokio::test]
async fn refused_credentials_are_explained_before_the_run() {
    let (url, _) = serve().await;
    let cfg = TargetConfig {
        url: Some(format!("{url}/auth")),
        model: Some("m".into()),
        api_key_env: "LLM_REPLAY_TEST_KEY_NEVER_SET".into(),
        ..TargetConfig::default()
    };
    let err = Target::connect(&cfg, &empty_trace(), 0)
        .await
        .err()
        .expect("a 401 at pre-flight stops the run");
    let text = format!("{err:#}");
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(text.contains("invalid api key"), "{text}");
    assert!(
        text.contains("$LLM_REPLAY_TEST_KEY_NEVER_SET is not set"),
        "{text}"
    );
    assert!(text.contains("--api-key-env"), "{text}");
    // With the user's header the hint says that header was sent.
    let cfg = TargetConfig {
        headers: vec![("Authorization".into(), "Bearer wrong".into())],
        ..cfg
    };
    let text = format!(
        "{:#}",
        Target::connect(&cfg, &empty_trace(), 0)
            .await
            .err()
            .unwrap()
    );
    assert!(
        text.contains("-H Authorization header given was sent"),
        "{text}"
    );
    assert!(
        !text.contains("wrong"),
        "the credential is never printed: {text}"
    );
}

/// Three content chunks, the second carrying two tokens (as a server that
/// holds back partial UTF-8 sends them), then usage when `usage` is set.
fn merged_stream(usage: bool) -> Response {
    let mut events: Vec<String> = [" a", " bc", " d"]
        .iter()
        .map(|t| {
            format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "text": t, "finish_reason": null}]})
            )
        })
        .collect();
    if usage {
        events.push(format!(
            "data: {}\n\n",
            json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}})
        ));
    }
    events.push("data: [DONE]\n\n".into());
    sse(Body::from(events.concat()))
}

/// Replays 3 rows of the bundled Azure sample against `url` (a run whose
/// every request failed exits non-zero, its rows written all the same).
async fn replay_rows(
    url: &str,
    extra: &[&str],
    succeeds: bool,
) -> Vec<llm_replay::record::ResultRow> {
    let args = [&["--requests", "3", "--rate", "100"][..], extra].concat();
    let run = crate::support::replay_azure(url, &args).await;
    assert_eq!(run.success, succeeds, "{}", run.stderr);
    run.results.rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_tokens_come_from_usage_and_the_chunk_count_has_its_own_column() {
    use llm_replay::record::TokenSource;
    let app = Router::new()
        .route("/usage/v1/models", get(models))
        .route(
            "/usage/v1/completions",
            post(|| async { merged_stream(true) }),
        )
        .route("/bare/v1/models", get(models))
        .route(
            "/bare/v1/completions",
            post(|| async { merged_stream(false) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let rows = replay_rows(&format!("{url}/usage"), &[], true).await;
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.error);
        assert_eq!(r.output_tokens, 4, "the server's count, not the 3 chunks");
        assert_eq!(r.output_chunks, Some(3));
        assert_eq!(r.output_tokens_source, Some(TokenSource::Usage));
        assert_eq!(r.itl_us.len(), 2, "gaps between the chunks");
    }

    let rows = replay_rows(&format!("{url}/bare"), &[], true).await;
    for r in &rows {
        assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.error);
        assert_eq!(r.usage_completion_tokens, None);
        assert_eq!(
            r.output_tokens, 3,
            "without usage, the chunks are the count"
        );
        assert_eq!(r.output_chunks, Some(3));
        assert_eq!(r.output_tokens_source, Some(TokenSource::Chunks));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_streamed_has_no_chunk_count() {
    use llm_replay::record::TokenSource;
    let app = Router::new()
        .route("/v1/models", get(models))
        .route(
            "/v1/completions",
            post(|| async {
                axum::Json(json!({
                    "choices": [{"index": 0, "text": " a bc d", "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 4}
                }))
            }),
        )
        .route("/fail/v1/models", get(models))
        .route(
            "/fail/v1/completions",
            post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "busy") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    for r in replay_rows(&url, &["--no-stream"], true).await {
        assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.error);
        assert_eq!(
            (r.output_tokens, r.output_chunks, r.output_tokens_source),
            (4, None, Some(TokenSource::Usage))
        );
    }
    for r in replay_rows(&format!("{url}/fail"), &[], false).await {
        assert_eq!(r.outcome, Outcome::HttpError);
        assert_eq!(
            (r.output_tokens, r.output_chunks, r.output_tokens_source),
            (0, None, None)
        );
    }
}
