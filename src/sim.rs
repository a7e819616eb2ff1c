//! The embedded simulated endpoint: an OpenAI-compatible server
//! (`/v1/models`, `/v1/completions`, `/v1/chat/completions`, streaming and
//! not, `usage` counts, Prometheus `/metrics`, `/health`) whose latency
//! follows a continuous-batching model ([`engine`]), with seeded fault
//! injection for tests. So anyone can run the whole pipeline without a GPU.
//!
//! Faults are drawn per request from the shares given, or forced by a
//! request whose `X-Request-Id` contains `fault=429`, `fault=500`,
//! `fault=stall`, `fault=disconnect` or `fault=garble`.

pub mod arrivals;
pub mod engine;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use engine::{EngineGauges, EngineParams, Job};

/// Simulator parameters. Defaults model a small GPU serving a small model:
/// about 50k prefill tokens/s and 100-150 decode tokens/s per sequence.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimConfig {
    /// Model name served (and the default for a body without one).
    pub model: String,
    /// Further model names listed as served: the embedded simulator serves
    /// every model a run names (`--model`, `--model-map`, `--models`).
    pub also_serves: Vec<String>,
    /// Most sequences decoded together (continuous batching).
    pub max_batch: usize,
    /// KV-cache budget in tokens; a sequence reserves prompt + max_tokens,
    /// and new requests wait while it is full.
    pub kv_tokens: u64,
    /// Prefill cost per prompt token, µs.
    pub prefill_us_per_token: f64,
    /// Fixed cost of one decode step, µs.
    pub decode_base_us: f64,
    /// Extra cost of one decode step per running sequence, µs.
    pub decode_per_seq_us: f64,
    /// No model time at all (to benchmark the client).
    pub zero_delay: bool,
    /// Seed of fault draws.
    pub seed: u64,
    /// Share of requests answered 429 Too Many Requests.
    pub fail_429: f64,
    /// Share of requests answered 500.
    pub fail_500: f64,
    /// Share of requests that stall before their first token.
    pub stall: f64,
    /// How long a stall lasts.
    #[serde(skip)]
    pub stall_time: Duration,
    /// Share of streams cut mid-response (connection dropped).
    pub disconnect: f64,
    /// Share of streams with a garbled (invalid JSON) event mid-response.
    pub garble: f64,
    /// Keep every X-Request-Id received (tests).
    pub record_request_ids: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            model: "llm-replay-sim".into(),
            also_serves: Vec::new(),
            max_batch: 64,
            kv_tokens: 262_144,
            prefill_us_per_token: 20.0,
            decode_base_us: 6_000.0,
            decode_per_seq_us: 100.0,
            zero_delay: false,
            seed: 0,
            fail_429: 0.0,
            fail_500: 0.0,
            stall: 0.0,
            stall_time: Duration::from_secs(30),
            disconnect: 0.0,
            garble: 0.0,
            record_request_ids: false,
        }
    }
}

/// The simulator could not start.
#[derive(Debug, Error)]
pub enum SimError {
    /// Binding the address failed.
    #[error("binding {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error (not a `source`: `{:#}` would print it twice).
        error: std::io::Error,
    },
    /// A parameter out of range.
    #[error("{0}")]
    Config(String),
}

/// What the simulator saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Generation requests received.
    pub requests: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// `X-Request-Id`s received (only with `record_request_ids`).
    pub request_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Http429,
    Http500,
    Stall,
    Disconnect,
    Garble,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Http429 => "429",
            Self::Http500 => "500",
            Self::Stall => "stall",
            Self::Disconnect => "disconnect",
            Self::Garble => "garble",
        }
    }
}

struct AppState {
    /// Where arrivals go (`sim --log-arrivals`), until shutdown.
    arrivals: Mutex<Option<std::sync::mpsc::Sender<(i64, String)>>>,
    cfg: SimConfig,
    jobs: mpsc::UnboundedSender<Job>,
    gauges: Arc<EngineGauges>,
    rng: Mutex<StdRng>,
    stats: Mutex<SimStats>,
    requests_total: AtomicU64,
    stop: CancellationToken,
}

/// A running simulator.
pub struct SimServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    state: Arc<AppState>,
    server: tokio::task::JoinHandle<()>,
    engine: tokio::task::JoinHandle<()>,
    /// Writes the arrival log; ends when the log's sender is dropped.
    arrival_writer: Option<std::thread::JoinHandle<std::io::Result<u64>>>,
}

impl SimServer {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it has seen so far.
    pub fn stats(&self) -> SimStats {
        self.state
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Stops serving, ending open streams.
    pub async fn shutdown(self) {
        self.state.stop.cancel();
        let _ = self.server.await;
        let _ = self.engine.await;
        if let Ok(mut log) = self.state.arrivals.lock() {
            log.take();
        }
        if let Some(writer) = self.arrival_writer {
            match writer.join() {
                Ok(Ok(n)) => tracing::debug!(arrivals = n, "arrival log written"),
                Ok(Err(e)) => eprintln!("writing the arrival log: {e}"),
                Err(_) => eprintln!("the arrival log writer panicked"),
            }
        }
    }
}

/// Binds `bind` (port 0 picks one) and serves in the background.
pub async fn start(cfg: SimConfig, bind: SocketAddr) -> Result<SimServer, SimError> {
    start_logging(cfg, bind, None).await
}

/// Names of the simulator's threads start with this, so that a process
/// running it embedded can tell its CPU time from the client's.
pub const THREAD_PREFIX: &str = "llm-replay-sim";

/// A simulator on threads of its own (a runtime whose threads' names start
/// with [`THREAD_PREFIX`]): the embedded endpoint of a replay. It stops
/// when dropped.
#[derive(Debug)]
pub struct EmbeddedSim {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl EmbeddedSim {
    /// Starts it on loopback, at a free port.
    pub async fn start(cfg: SimConfig) -> Result<Self, SimError> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(THREAD_PREFIX.into())
            .spawn(move || {
                // As many workers as the process may use CPUs: the embedded
                // simulator shares the machine with the client, as a
                // simulator started on its own would.
                let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .thread_name(format!("{THREAD_PREFIX}-worker"))
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(SimError::Config(format!(
                            "the simulator's runtime: {e}"
                        ))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let bind = SocketAddr::from(([127, 0, 0, 1], 0));
                    match start(cfg, bind).await {
                        Ok(server) => {
                            if ready_tx.send(Ok(server.url())).is_ok() {
                                // Until told to stop, or the owner is gone.
                                let _ = stop_rx.await;
                            }
                            server.shutdown().await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| SimError::Config(format!("starting the simulator's thread: {e}")))?;
        let url = ready_rx
            .await
            .map_err(|_| SimError::Config("the simulator's thread ended at start".into()))??;
        Ok(Self {
            url,
            stop: Some(stop_tx),
        })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for EmbeddedSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// [`start`], and with `arrival_log` a CSV of every generation request's
/// (POST's) arrival:
/// `arrival_us,request_id`, the time (UTC microseconds since the epoch, the
/// clock of the results' `scheduled_at` and `sent_at`) at which its head
/// was parsed, before its body is read, and its `X-Request-Id`. Rows are
/// handed to a writer thread, so the log costs a request a clock read and
/// a channel send.
pub async fn start_logging(
    cfg: SimConfig,
    bind: SocketAddr,
    arrival_log: Option<&std::path::Path>,
) -> Result<SimServer, SimError> {
    let (arrivals, arrival_writer) = match arrival_log {
        None => (None, None),
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|error| {
                SimError::Config(format!("--log-arrivals {}: {error}", path.display()))
            })?;
            let (tx, rx) = std::sync::mpsc::channel::<(i64, String)>();
            let writer = std::thread::Builder::new()
                .name("llm-replay-sim-arrivals".into())
                .spawn(move || write_arrivals(file, &rx))
                .map_err(|e| SimError::Config(format!("starting the arrival log writer: {e}")))?;
            (Some(tx), Some(writer))
        }
    };
    for (name, v) in [
        ("--sim-fail-429", cfg.fail_429),
        ("--sim-fail-500", cfg.fail_500),
        ("--sim-stall", cfg.stall),
        ("--sim-disconnect", cfg.disconnect),
        ("--sim-garble", cfg.garble),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(SimError::Config(format!(
                "{name} is a share in [0, 1], got {v}"
            )));
        }
    }
    if cfg.max_batch == 0 || cfg.kv_tokens == 0 {
        return Err(SimError::Config(
            "--sim-max-batch and --sim-kv-tokens must be positive".into(),
        ));
    }
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|error| SimError::Bind { addr: bind, error })?;
    let addr = listener
        .local_addr()
        .map_err(|error| SimError::Bind { addr: bind, error })?;
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    let gauges = Arc::new(EngineGauges::default());
    let stop = CancellationToken::new();
    let params = if cfg.zero_delay {
        EngineParams {
            max_batch: cfg.max_batch,
            kv_tokens: cfg.kv_tokens,
            prefill_us_per_token: 0.0,
            decode_base_us: 0.0,
            decode_per_seq_us: 0.0,
        }
    } else {
        EngineParams {
            max_batch: cfg.max_batch,
            kv_tokens: cfg.kv_tokens,
            prefill_us_per_token: cfg.prefill_us_per_token,
            decode_base_us: cfg.decode_base_us,
            decode_per_seq_us: cfg.decode_per_seq_us,
        }
    };
    let engine = tokio::spawn(engine::run(params, jobs_rx, gauges.clone(), stop.clone()));
    let logging = arrivals.is_some();
    let state = Arc::new(AppState {
        arrivals: Mutex::new(arrivals),
        rng: Mutex::new(StdRng::seed_from_u64(cfg.seed)),
        cfg,
        jobs: jobs_tx,
        gauges,
        stats: Mutex::new(SimStats::default()),
        requests_total: AtomicU64::new(0),
        stop: stop.clone(),
    });
    let app = Router::new()
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(responses))
        .route("/v1/messages", post(messages))
        .route("/v1/embeddings", post(embeddings))
        .with_state(state.clone());
    let app = if logging {
        app.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            log_arrival,
        ))
    } else {
        app
    };
    let server = tokio::spawn(async move {
        let shutdown = stop.clone();
        // Without TCP_NODELAY, Nagle holds each small SSE event until the
        // client's delayed ACK (about 40 ms on Linux): every TTFT would be
        // at least that long.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(SimServer {
        addr,
        state,
        server,
        engine,
        arrival_writer,
    })
}

/// Notes a request's arrival before it is handled.
async fn log_arrival(
    State(s): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Generation requests only: the model list and metrics scrapes are
    // not load.
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Ok(log) = s.arrivals.lock()
        && let Some(tx) = log.as_ref()
    {
        let _ = tx.send((at, id));
    }
    next.run(request).await
}

/// Writes arrivals as CSV until every sender is gone; returns the count.
fn write_arrivals(
    file: std::fs::File,
    rx: &std::sync::mpsc::Receiver<(i64, String)>,
) -> std::io::Result<u64> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    writeln!(out, "arrival_us,request_id")?;
    let mut n = 0u64;
    for (at, id) in rx {
        // Ids are the trace's; quote the rare one that needs it.
        if id.contains([',', '"', '\n', '\r']) {
            writeln!(out, "{at},\"{}\"", id.replace('"', "\"\""))?;
        } else {
            writeln!(out, "{at},{id}")?;
        }
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = std::iter::once(&s.cfg.model)
        .chain(s.cfg.also_serves.iter().filter(|m| **m != s.cfg.model))
        .map(|m| json!({"id": m, "object": "model", "owned_by": "llm-replay"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let g = &s.gauges;
    let kv = g.kv_used.load(Ordering::Relaxed) as f64 / s.cfg.kv_tokens as f64;
    let body = format!(
        "# HELP sim:num_requests_running Sequences in the running batch.\n# TYPE sim:num_requests_running gauge\nsim:num_requests_running{{model_name=\"{m}\"}} {}\n\
         # HELP sim:num_requests_waiting Requests waiting for admission.\n# TYPE sim:num_requests_waiting gauge\nsim:num_requests_waiting{{model_name=\"{m}\"}} {}\n\
         # HELP sim:kv_cache_usage_perc Share of the KV-cache budget reserved.\n# TYPE sim:kv_cache_usage_perc gauge\nsim:kv_cache_usage_perc{{model_name=\"{m}\"}} {kv}\n\
         # HELP sim:prompt_tokens_total Prompt tokens prefilled.\n# TYPE sim:prompt_tokens_total counter\nsim:prompt_tokens_total{{model_name=\"{m}\"}} {}\n\
         # HELP sim:generation_tokens_total Tokens generated.\n# TYPE sim:generation_tokens_total counter\nsim:generation_tokens_total{{model_name=\"{m}\"}} {}\n\
         # HELP sim:requests_total Generation requests received.\n# TYPE sim:requests_total counter\nsim:requests_total{{model_name=\"{m}\"}} {}\n",
        g.running.load(Ordering::Relaxed),
        g.waiting.load(Ordering::Relaxed),
        g.prompt_tokens_total.load(Ordering::Relaxed),
        g.generation_tokens_total.load(Ordering::Relaxed),
        s.requests_total.load(Ordering::Relaxed),
        m = s.cfg.model,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn completions(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    generate(s, headers, body, Dialect::Completions).await
}

async fn chat(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    generate(s, headers, body, Dialect::Chat).await
}

async fn responses(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    generate(s, headers, body, Dialect::Responses).await
}

async fn messages(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    generate(s, headers, body, Dialect::Messages).await
}

/// The generation APIs the simulator speaks: request fields and response
/// events differ, the engine is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Completions,
    Chat,
    Responses,
    Messages,
}

impl Dialect {
    /// The request field holding the prompt.
    fn prompt_field(self) -> &'static str {
        match self {
            Self::Completions => "prompt",
            Self::Chat | Self::Messages => "messages",
            Self::Responses => "input",
        }
    }

    /// The request field holding the output limit.
    fn max_field(self) -> &'static str {
        match self {
            Self::Responses => "max_output_tokens",
            Self::Completions | Self::Chat | Self::Messages => "max_tokens",
        }
    }

    /// An SSE frame of `v`; Responses and Messages name the event too.
    fn frame(self, v: &Value) -> Bytes {
        match self {
            Self::Completions | Self::Chat => Bytes::from(format!("data: {v}\n\n")),
            Self::Responses | Self::Messages => {
                let kind = v.get("type").and_then(Value::as_str).unwrap_or("message");
                Bytes::from(format!("event: {kind}\ndata: {v}\n\n"))
            }
        }
    }

    /// Events before the first token.
    fn opening(self, id: &str, model: &str, prompt: u64) -> Vec<Value> {
        match self {
            Self::Completions => vec![],
            Self::Chat => vec![
                json!({"id": id, "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
            ],
            Self::Responses => vec![json!({"type": "response.created",
                "response": {"id": id, "object": "response", "status": "in_progress", "model": model}})],
            Self::Messages => vec![
                json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
                    "model": model, "content": [], "usage": {"input_tokens": prompt, "output_tokens": 1}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ],
        }
    }

    /// The event of one generated word.
    fn token(self, id: &str, model: &str, text: &str) -> Value {
        match self {
            Self::Completions => json!({"id": id, "object": "text_completion", "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": null}]}),
            Self::Chat => json!({"id": id, "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]}),
            Self::Responses => {
                json!({"type": "response.output_text.delta", "item_id": format!("msg-{id}"),
                "output_index": 0, "content_index": 0, "delta": text})
            }
            Self::Messages => json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}),
        }
    }

    /// Events after the last token, and whether `[DONE]` follows.
    fn closing(
        self,
        id: &str,
        model: &str,
        prompt: u64,
        n: u64,
        include_usage: bool,
    ) -> (Vec<Value>, bool) {
        let usage =
            json!({"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n});
        match self {
            Self::Completions | Self::Chat => {
                let (object, fin) = if self == Self::Chat {
                    (
                        "chat.completion.chunk",
                        json!({"index": 0, "delta": {}, "finish_reason": "length"}),
                    )
                } else {
                    (
                        "text_completion",
                        json!({"index": 0, "text": "", "finish_reason": "length"}),
                    )
                };
                let mut events =
                    vec![json!({"id": id, "object": object, "model": model, "choices": [fin]})];
                if include_usage {
                    events.push(json!({"id": id, "object": object, "model": model, "choices": [], "usage": usage}));
                }
                (events, true)
            }
            Self::Responses => (
                vec![
                    json!({"type": "response.completed", "response": {"id": id, "object": "response",
                    "status": "completed", "model": model,
                    "usage": {"input_tokens": prompt, "output_tokens": n, "total_tokens": prompt + n}}}),
                ],
                false,
            ),
            Self::Messages => (
                vec![
                    json!({"type": "content_block_stop", "index": 0}),
                    json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
                        "usage": {"output_tokens": n}}),
                    json!({"type": "message_stop"}),
                ],
                false,
            ),
        }
    }

    /// A whole (non-streamed) response.
    fn whole(self, id: &str, model: &str, prompt: u64, n: u64, text: String) -> Value {
        let usage =
            json!({"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n});
        match self {
            Self::Completions => json!({"id": id, "object": "text_completion", "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": "length"}], "usage": usage}),
            Self::Chat => json!({"id": id, "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
                "usage": usage}),
            Self::Responses => {
                json!({"id": id, "object": "response", "status": "completed", "model": model,
                "output": [{"type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": text}]}],
                "usage": {"input_tokens": prompt, "output_tokens": n, "total_tokens": prompt + n}})
            }
            Self::Messages => {
                json!({"id": id, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "max_tokens",
                "usage": {"input_tokens": prompt, "output_tokens": n}})
            }
        }
    }
}

/// Numbers in each simulated embedding.
const EMBEDDING_DIMS: usize = 32;

/// `/v1/embeddings`: the inputs are prefilled by the same engine as
/// generation (one step each, no output), so embeddings and generation
/// share capacity and an embeddings sweep finds a knee in input tokens/s.
async fn embeddings(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let (fault, v) = match admit(&s, &headers, &body) {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    // One input (text or token ids) or a list of them.
    let inputs: Vec<u64> = match v.get("input") {
        Some(Value::String(t)) => vec![approx_tokens(t)],
        Some(Value::Array(items)) => match items.first() {
            Some(Value::Number(_)) => vec![items.len() as u64],
            _ => items
                .iter()
                .map(|i| match i {
                    Value::String(t) => approx_tokens(t),
                    Value::Array(ids) => ids.len() as u64,
                    _ => 0,
                })
                .collect(),
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "missing input",
                "invalid_request_error",
            );
        }
    };
    let prompt: u64 = inputs.iter().sum();
    if prompt + 1 > s.cfg.kv_tokens {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "the inputs hold {prompt} tokens, more than the KV budget of {}",
                s.cfg.kv_tokens
            ),
            "invalid_request_error",
        );
    }
    // No stream to cut or garble: those faults are server errors here.
    let fault = match fault {
        Fault::Disconnect | Fault::Garble => Fault::Http500,
        other => other,
    };
    let mut tok_rx = match to_engine(&s, fault, prompt, 1).await {
        Ok(rx) => rx,
        Err(refused) => return refused,
    };
    loop {
        tokio::select! {
            t = tok_rx.recv() => if t.is_none() { break },
            () = s.stop.cancelled() => return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down", "server_error"),
        }
    }
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(&s.cfg.model);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let vector: Vec<f64> = (0..EMBEDDING_DIMS)
                .map(|d| ((i + d) as f64 * 0.37 + *n as f64).sin())
                .collect();
            json!({"object": "embedding", "index": i, "embedding": vector})
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}))
    .into_response()
}

/// Counts a generation or embeddings request, draws its fault and parses
/// its body; a body that is not JSON is refused with 400.
// The error is the response itself, returned once per refused request.
#[allow(clippy::result_large_err)]
fn admit(s: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<(Fault, Value), Response> {
    s.requests_total.fetch_add(1, Ordering::Relaxed);
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let fault = pick_fault(s, request_id);
    if let Ok(mut st) = s.stats.lock() {
        st.requests += 1;
        if fault != Fault::None {
            *st.faults.entry(fault.name().to_owned()).or_insert(0) += 1;
        }
        if s.cfg.record_request_ids {
            st.request_ids.push(request_id.to_owned());
        }
    }
    serde_json::from_slice(body)
        .map(|v| (fault, v))
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("invalid JSON body: {e}"),
                "invalid_request_error",
            )
        })
}

/// Answers the 429 and 500 faults, waits out a stall, then hands the
/// request to the engine: the receiver gets one message per token.
async fn to_engine(
    s: &AppState,
    fault: Fault,
    prompt_tokens: u64,
    max_tokens: u64,
) -> Result<mpsc::UnboundedReceiver<()>, Response> {
    match fault {
        Fault::Http429 => {
            return Err(error(
                StatusCode::TOO_MANY_REQUESTS,
                "simulated overload",
                "rate_limit_error",
            ));
        }
        Fault::Http500 => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "simulated server error",
                "server_error",
            ));
        }
        Fault::Stall => {
            tokio::select! {
                () = tokio::time::sleep(s.cfg.stall_time) => {}
                () = s.stop.cancelled() => return Err(error(StatusCode::SERVICE_UNAVAILABLE, "shutting down", "server_error")),
            }
        }
        Fault::None | Fault::Disconnect | Fault::Garble => {}
    }
    let (tokens, rx) = mpsc::unbounded_channel();
    s.jobs
        .send(Job {
            prompt_tokens,
            max_tokens,
            tokens,
        })
        .map_err(|_| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "engine stopped",
                "server_error",
            )
        })?;
    Ok(rx)
}

fn error(status: StatusCode, message: &str, kind: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "type": kind, "code": status.as_u16()}})),
    )
        .into_response()
}

/// A cheap prompt token count: words plus punctuation runs. Exact for the
/// synthetic prompts llm-replay sends (one token per space-led word).
fn approx_tokens(text: &str) -> u64 {
    let mut n = 0u64;
    for word in text.split_whitespace() {
        let punct = word.chars().filter(|c| c.is_ascii_punctuation()).count() as u64;
        n += 1 + punct;
    }
    n
}

fn prompt_tokens(v: &Value, dialect: Dialect) -> Option<u64> {
    let field = v.get(dialect.prompt_field())?;
    if let (Dialect::Responses, Value::String(s)) = (dialect, field) {
        return Some(approx_tokens(s));
    }
    if dialect != Dialect::Completions {
        let msgs = field.as_array()?;
        let mut n = 0;
        for m in msgs {
            match m.get("content") {
                Some(Value::String(s)) => n += approx_tokens(s),
                Some(Value::Array(parts)) => {
                    for p in parts {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            n += approx_tokens(t);
                        }
                    }
                }
                _ => {}
            }
        }
        return Some(n);
    }
    match field {
        Value::String(s) => Some(approx_tokens(s)),
        Value::Array(items) => match items.first() {
            Some(Value::String(s)) => Some(approx_tokens(s)),
            Some(Value::Number(_)) => Some(items.len() as u64),
            Some(Value::Array(ids)) => Some(ids.len() as u64),
            _ => Some(0),
        },
        _ => None,
    }
}

fn pick_fault(s: &AppState, request_id: &str) -> Fault {
    for (key, fault) in [
        ("fault=429", Fault::Http429),
        ("fault=500", Fault::Http500),
        ("fault=stall", Fault::Stall),
        ("fault=disconnect", Fault::Disconnect),
        ("fault=garble", Fault::Garble),
    ] {
        if request_id.contains(key) {
            return fault;
        }
    }
    let c = &s.cfg;
    if c.fail_429 + c.fail_500 + c.stall + c.disconnect + c.garble <= 0.0 {
        return Fault::None;
    }
    let x: f64 = match s.rng.lock() {
        Ok(mut rng) => rng.random(),
        Err(_) => return Fault::None,
    };
    let mut edge = 0.0;
    for (share, fault) in [
        (c.fail_429, Fault::Http429),
        (c.fail_500, Fault::Http500),
        (c.stall, Fault::Stall),
        (c.disconnect, Fault::Disconnect),
        (c.garble, Fault::Garble),
    ] {
        edge += share;
        if x < edge {
            return fault;
        }
    }
    Fault::None
}

async fn generate(s: Arc<AppState>, headers: HeaderMap, body: Bytes, dialect: Dialect) -> Response {
    let (fault, v) = match admit(&s, &headers, &body) {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let Some(prompt) = prompt_tokens(&v, dialect) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("missing {}", dialect.prompt_field()),
            "invalid_request_error",
        );
    };
    let max_tokens = v
        .get(dialect.max_field())
        .or_else(|| v.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(16)
        .max(1);
    if prompt + max_tokens > s.cfg.kv_tokens {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "the request needs {} tokens of context, more than the KV budget of {}",
                prompt + max_tokens,
                s.cfg.kv_tokens
            ),
            "invalid_request_error",
        );
    }
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = v
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(&s.cfg.model)
        .to_owned();
    let mut tok_rx = match to_engine(&s, fault, prompt, max_tokens).await {
        Ok(rx) => rx,
        Err(refused) => return refused,
    };
    let id = format!("sim-{}", s.requests_total.load(Ordering::Relaxed));
    if !stream {
        let mut n = 0u64;
        loop {
            tokio::select! {
                t = tok_rx.recv() => match t {
                    Some(()) => n += 1,
                    None => break,
                },
                () = s.stop.cancelled() => return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down", "server_error"),
            }
        }
        let text: String = (0..n).map(word).collect();
        return axum::Json(dialect.whole(&id, &model, prompt, n, text)).into_response();
    }
    let (frames_tx, frames_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let stop = s.stop.clone();
    tokio::spawn(async move {
        for event in dialect.opening(&id, &model, prompt) {
            if frames_tx.send(Ok(dialect.frame(&event))).await.is_err() {
                return;
            }
        }
        let half = max_tokens / 2;
        let mut n = 0u64;
        loop {
            let got = tokio::select! {
                t = tok_rx.recv() => t,
                () = stop.cancelled() => None,
            };
            if got.is_none() {
                break;
            }
            if n == half && fault == Fault::Disconnect {
                let _ = frames_tx
                    .send(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "simulated disconnect",
                    )))
                    .await;
                return;
            }
            if n == half && fault == Fault::Garble {
                let _ = frames_tx
                    .send(Ok(Bytes::from_static(b"data: {\"choices\": [{\"te\n\n")))
                    .await;
            }
            let event = dialect.token(&id, &model, word(n));
            n += 1;
            if frames_tx.send(Ok(dialect.frame(&event))).await.is_err() {
                return; // client gone; dropping tok_rx frees the sequence
            }
        }
        if n < max_tokens {
            // Shut down mid-stream: end without the closing events, as a
            // dying server does.
            let _ = frames_tx
                .send(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "simulator shutting down",
                )))
                .await;
            return;
        }
        let (events, done) = dialect.closing(&id, &model, prompt, n, include_usage);
        for event in events {
            if frames_tx.send(Ok(dialect.frame(&event))).await.is_err() {
                return;
            }
        }
        if done {
            let _ = frames_tx
                .send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
                .await;
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(
        frames_rx,
        |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
    ));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "building the response",
                "server_error",
            )
        })
}

/// The `i`-th generated word: noise, like a random-weight model's.
fn word(i: u64) -> &'static str {
    const WORDS: [&str; 8] = [
        " lorem", " ipsum", " dolor", " sit", " amet", " sed", " do", " tempor",
    ];
    WORDS[(i % 8) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approximate_counts_are_exact_for_synthetic_prompts() {
        assert_eq!(approx_tokens(" alpha beta gamma"), 3);
        assert_eq!(approx_tokens("Hello, world!"), 4);
        assert_eq!(
            prompt_tokens(&json!({"prompt": [1, 2, 3]}), Dialect::Completions),
            Some(3)
        );
        assert_eq!(
            prompt_tokens(
                &json!({"messages": [{"role": "user", "content": " a b"}]}),
                Dialect::Chat
            ),
            Some(2)
        );
        assert_eq!(prompt_tokens(&json!({}), Dialect::Completions), None);
    }
}
