//! `replay --check-tokens`: before t=0 the server counts the first prompts
//! at `POST /tokenize`, and one line on stderr says how its counts differ
//! from the prompts' own; a server without `/tokenize` is noted and the
//! run goes on. Driven through the binary against a scripted loopback
//! server, so the flag, the line and the recorded config are all checked.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};

/// Bodies `/tokenize` received.
type Seen = Arc<Mutex<Vec<Value>>>;

async fn models() -> impl IntoResponse {
    axum::Json(json!({"object": "list", "data": [{"id": "m", "object": "model"}]}))
}

/// One content chunk, usage and `[DONE]`.
async fn completions() -> axum::response::Response {
    let out = "data: {\"choices\":[{\"index\":0,\"text\":\" x\",\"finish_reason\":null}]}\n\n\
               data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n\
               data: [DONE]\n\n";
    ([("content-type", "text/event-stream")], out).into_response()
}

/// vLLM's `/tokenize`: a prompt's words (one token each under the
/// synthesiser's tokenizer) plus a BOS.
async fn tokenize(State(seen): State<Seen>, body: Bytes) -> axum::response::Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.lock().unwrap().push(v.clone());
    let words = v["prompt"]
        .as_str()
        .map_or(0, |p| p.split_whitespace().count());
    axum::Json(json!({"count": words + 1, "tokens": [], "max_model_len": 4096})).into_response()
}

/// A server with `/tokenize` when `with_tokenize` (else it 404s).
async fn serve(with_tokenize: bool) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let mut app = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions));
    if with_tokenize {
        app = app.route("/tokenize", post(tokenize));
    }
    let app = app.with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

/// Replays 8 requests of the bundled Azure sample against `url` with
/// `--check-tokens 8`: stderr, and the run config's `check_tokens`.
async fn replay_checked(url: &str) -> (String, Value) {
    let run = crate::support::replay_azure(
        url,
        &["--check-tokens", "8", "--requests", "8", "--rate", "100"],
    )
    .await;
    assert!(run.success, "the run completes: {}", run.stderr);
    assert_eq!(run.results.rows.len(), 8, "{}", run.stderr);
    let config: Value = serde_json::from_str(&run.results.metadata["llm_replay.config"]).unwrap();
    (run.stderr, config["target"]["check_tokens"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constant_extra_token_is_reported_as_one_line_before_the_run() {
    let (url, seen) = serve(true).await;
    let (stderr, check) = replay_checked(&url).await;
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("check-tokens:"))
        .collect();
    assert_eq!(
        lines,
        [
            "check-tokens: 8 prompts, server counted +1 token each (p50 +1, max +1) against o200k_base: likely a BOS token"
        ],
        "{stderr}"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 8, "one /tokenize per prompt");
    assert!(
        seen.iter()
            .all(|b| b["model"] == "m" && b["prompt"].is_string())
    );
    assert_eq!(check["outcome"], "counted", "{check}");
    assert_eq!(check["prompts"], 8);
    assert_eq!(check["per_prompt_p50"], 1);
    assert_eq!(
        check["server"].as_u64(),
        check["sent"].as_u64().map(|s| s + 8)
    );
    assert!(check.get("warning").is_none(), "{check}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tokenize_is_noted_and_the_run_goes_on() {
    let (url, _) = serve(false).await;
    let (stderr, check) = replay_checked(&url).await;
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("check-tokens:"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("has no /tokenize"), "{stderr}");
    assert!(lines[0].contains("going on"), "{stderr}");
    assert_eq!(check, json!({"outcome": "no_tokenize"}));
}

#[test]
fn check_tokens_without_a_url_is_a_usage_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-replay"))
        .arg("replay")
        .arg(crate::support::azure_trace())
        .args(["--check-tokens", "8", "--requests", "8"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(i32::from(llm_replay::EXIT_USAGE)),
        "{stderr}"
    );
    assert!(
        stderr.contains("--check-tokens 8") && stderr.contains("--url"),
        "{stderr}"
    );
}

/// llama.cpp's `/tokenize`: `{"tokens": [...]}` of `content` (none
/// without it, as llama-server answers vLLM's body), BOS only with
/// `add_special`.
async fn llama_tokenize(State(seen): State<Seen>, body: Bytes) -> axum::response::Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.lock().unwrap().push(v.clone());
    let mut tokens: Vec<u32> = Vec::new();
    if let Some(text) = v["content"].as_str() {
        if v["add_special"] == true {
            tokens.push(128_000);
        }
        tokens.extend(text.split_whitespace().map(|_| 7));
    }
    axum::Json(json!({ "tokens": tokens })).into_response()
}

#[tokio::test]
async fn llama_cpp_is_asked_with_its_own_body_and_counts_bos() {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/tokenize", post(llama_tokenize))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let endpoint = llm_replay::client::Endpoint::new(llm_replay::client::EndpointConfig {
        base_url: url,
        api: llm_replay::client::Api::Completions,
        headers: Vec::new(),
        api_key: None,
        http2: false,
        connect_timeout: std::time::Duration::from_secs(5),
        pool_max_idle_per_host: 1,
        max_response_bytes: 1 << 20,
    })
    .unwrap();
    let n = endpoint.count_tokens("m", "one two three").await.unwrap();
    assert_eq!(n, Some(4), "three words and BOS");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "vLLM's body, then llama.cpp's: {seen:?}");
    assert_eq!(
        seen[1],
        json!({"content": "one two three", "add_special": true})
    );
}
