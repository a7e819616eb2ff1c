//! Open-loop replay: every scheduled request leaves at its time however slow
//! the server is, and every request that was due becomes exactly one result
//! row.
//!
//! Threads and tasks of a run:
//! - a *producer* thread walks the schedule (generated as it goes, so its
//!   memory does not depend on the run's length), builds request bodies
//!   (prompt synthesis) ahead of time, and deals them in batches to
//! - the *engine* threads (`--engine-threads`, one per CPU by default): each
//!   is a single-threaded event loop that owns an interleaved share of the
//!   schedule (whole sessions in session replay) and its own connections.
//!   It paces to each absolute deadline on a timerfd inside that loop
//!   ([`pacer::TimerPacer`]), so a request is written by the thread that woke
//!   for it; it never waits for a response. Its requests are futures the
//!   dispatcher itself polls (a due one at once, ahead of responses waiting
//!   to be read); they send, stream, time, and hand a plain row to
//! - the *recorder* thread, which owns the results file and the summary.
//!
//! The producer and the recorder run under `SCHED_IDLE`: on a core they
//! share with an engine, the engine takes the CPU the moment it wakes.
//!
//! One shutdown path ([`Shutdown`]) for a signal, the end of the schedule and
//! a fatal error: dispatch stops; requests not yet due are not rows, they are
//! counted as never reached; in-flight requests get `--grace` to finish, then
//! are cancelled keeping what each measured; the recorder closes the file
//! last.

pub mod dispatch;
pub mod pacer;
pub mod progress;
pub mod recorder;
pub mod scrape;
pub mod session;
pub mod token_check;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::{Api, Endpoint, EndpointConfig, Prompt, RequestSpec, Timeouts};
use crate::prompt::{PromptMode, PromptSynth};
use crate::record::ResultsWriter;
use crate::record::run_meta::{RunConfig, key};
use crate::record::summary::{FidelityLimits, Slo, SummaryBuilder};
use crate::schedule::{self, Remaining, ScheduleSpec, ScheduledRequest};
use crate::sim::SimConfig;
use crate::tokenize::{Tokenizer, TokenizerSpec};
use crate::trace::{InputFile, Trace, TraceRecord};
use dispatch::{CapPolicy, Counters, Phases, Prepared, RunClock, Shared};
pub use recorder::{Recorded, RunEnd};

/// Version of the results format written by this build.
pub const RESULTS_VERSION: u32 = 1;

/// Where requests go and how they are built: the validated form of the
/// target flags.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Base URL of the server; `None` starts the embedded simulator.
    pub url: Option<String>,
    /// API called.
    pub api: Api,
    /// Model name; `None` takes the first model the server lists.
    pub model: Option<String>,
    /// Extra headers, sent as given (an Authorization here wins over the
    /// key variable).
    pub headers: Vec<(String, String)>,
    /// Environment variable holding the API key.
    pub api_key_env: String,
    /// HTTP/2 with prior knowledge.
    pub http2: bool,
    /// Per-request timeouts.
    pub timeouts: Timeouts,
    /// Longest response line or body a request may receive.
    pub max_response_bytes: usize,
    /// Streaming requests.
    pub stream: bool,
    /// Ask vLLM/SGLang to produce exactly `max_tokens`.
    pub force_output_len: bool,
    /// What is sent as the prompt.
    pub prompts: PromptMode,
    /// Tokenizer of synthetic prompts; `None`: the trace's embedded one,
    /// else o200k_base.
    pub tokenizer: Option<TokenizerSpec>,
    /// In-flight cap and what a request over it does.
    pub cap: Option<(usize, CapPolicy)>,
    /// Most connections (with HTTP/2, streams) open at once; requests over
    /// it wait for one, recorded as `queue_wait_us`. `None`: the smaller
    /// of [`MAX_CONNECTIONS_DEFAULT`] and half the open-file limit.
    pub max_connections: Option<usize>,
    /// Engine threads (`--engine-threads`): each runs its own event loop,
    /// paces and sends an interleaved share of the schedule (whole
    /// sessions), and owns its connections. `None`: one per CPU this
    /// process may run on, at most [`MAX_ENGINE_THREADS`].
    pub engine_threads: Option<usize>,
    /// Engine threads under SCHED_FIFO (`--realtime`); refused, the engine
    /// threads fail the run before t=0 saying what it needs (the command
    /// line asks first, with [`check_realtime`], before any output).
    pub realtime: bool,
    /// Merged into every request body: sampling parameters and
    /// `--extra-body` (validated at the edge).
    pub extra_body: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// Rows to APIs and models other than the defaults.
    pub routing: Routing,
    /// Inputs per embeddings request (`--embedding-batch`), each of the
    /// row's `input_tokens`.
    pub embedding_batch: u32,
    /// Prometheus endpoint read every second.
    pub scrape: Option<String>,
    /// Check the server, credentials and model before t=0.
    pub preflight: bool,
    /// `--check-tokens`: the server counts this many of the run's first
    /// prompts before t=0 ([`token_check`]).
    pub check_tokens: Option<usize>,
    /// The embedded simulator's parameters (used without `url`).
    pub sim: SimConfig,
}

impl Default for TargetConfig {
    /// The embedded simulator, completions API, synthetic streaming prompts.
    fn default() -> Self {
        Self {
            url: None,
            api: Api::Completions,
            model: None,
            headers: Vec::new(),
            api_key_env: "OPENAI_API_KEY".into(),
            http2: false,
            timeouts: Timeouts {
                connect: Duration::from_secs(10),
                ttft: None,
                request: Some(Duration::from_secs(600)),
            },
            max_response_bytes: crate::client::DEFAULT_MAX_RESPONSE_BYTES,
            stream: true,
            force_output_len: false,
            prompts: PromptMode::Synthetic,
            tokenizer: None,
            cap: None,
            max_connections: None,
            engine_threads: None,
            realtime: false,
            extra_body: None,
            routing: Routing::default(),
            embedding_batch: 1,
            scrape: None,
            preflight: true,
            check_tokens: None,
            sim: SimConfig::default(),
        }
    }
}

/// The most engine threads a run starts by default.
pub const MAX_ENGINE_THREADS: usize = 8;

/// The default `--engine-threads`: one per CPU in this process's affinity
/// mask (so `taskset -c 0` gives one), at most [`MAX_ENGINE_THREADS`].
pub fn default_engine_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_ENGINE_THREADS)
}

/// The most connections a run opens by default: one core's worth of
/// streams with room to spare (10,000 req/s at 400 ms each).
pub const MAX_CONNECTIONS_DEFAULT: usize = 4_096;

/// The default `--max-connections`: the smaller of
/// [`MAX_CONNECTIONS_DEFAULT`] and half the open-file limit, so that
/// overload queues requests in the client (each one recorded) instead of
/// running the process, or a server on the same host, out of descriptors.
pub fn default_max_connections() -> usize {
    open_file_limit().map_or(MAX_CONNECTIONS_DEFAULT, |n| {
        (n / 2).clamp(1, MAX_CONNECTIONS_DEFAULT)
    })
}

/// The soft limit on open files (Linux `/proc/self/limits`).
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A connected target: the endpoint, the model, and how bodies are built.
pub struct Target {
    endpoint: Arc<Endpoint>,
    /// Builds each engine thread's own endpoint (its own connections).
    endpoint_config: EndpointConfig,
    engines: usize,
    realtime: bool,
    builder: Arc<RequestBuilder>,
    timeouts: Timeouts,
    cap: Option<(usize, CapPolicy)>,
    connections: usize,
    scrape: Option<String>,
    config_json: serde_json::Value,
    /// `--check-tokens`, and its result once checked.
    check_tokens: Option<usize>,
    token_check: tokio::sync::OnceCell<token_check::TokenCheck>,
    seed: u64,
    /// Keeps the embedded simulator alive while the target is.
    sim: Option<crate::sim::EmbeddedSim>,
}

impl Target {
    /// Connects to `cfg.url` (or starts the embedded simulator), checks it
    /// serves the model (unless `cfg.preflight` is off), and loads the prompt
    /// tokenizer. `seed` seeds the prompts and is written into the results.
    pub async fn connect(cfg: &TargetConfig, trace: &Trace, seed: u64) -> anyhow::Result<Self> {
        let apis = run_apis(cfg);
        if cfg.prompts == PromptMode::Tokens
            && let Some(api) = apis.iter().find(|a| !a.takes_tokens())
        {
            bail!(
                "--prompts tokens needs the completions or embeddings API ({api} takes text only)"
            );
        }
        if cfg.prompts == PromptMode::Original
            && let Some(r) = trace.records.iter().find(|r| r.prompt_text.is_none())
        {
            bail!(
                "--prompts original: trace row {:?} has no prompt_text; ingest with --keep-text, or use --prompts synthetic",
                r.request_id
            );
        }
        let (base_url, sim) = match &cfg.url {
            Some(url) => (url.clone(), None),
            None => {
                let mut sim_cfg = cfg.sim.clone();
                sim_cfg.also_serves = cfg
                    .model
                    .iter()
                    .map(String::as_str)
                    .chain(cfg.routing.served_models())
                    .map(str::to_owned)
                    .collect();
                let server = crate::sim::EmbeddedSim::start(sim_cfg)
                    .await
                    .context("starting the embedded simulated endpoint")?;
                (server.url().to_owned(), Some(server))
            }
        };
        let api_key = std::env::var(&cfg.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        let connections = cfg
            .max_connections
            .unwrap_or_else(default_max_connections)
            .max(1);
        let endpoint_config = EndpointConfig {
            base_url,
            api: cfg.api,
            headers: cfg.headers.clone(),
            api_key,
            http2: cfg.http2,
            connect_timeout: cfg.timeouts.connect,
            pool_max_idle_per_host: connections,
            max_response_bytes: cfg.max_response_bytes,
        };
        let endpoint = Endpoint::new(endpoint_config.clone())?;
        let engines = cfg
            .engine_threads
            .unwrap_or_else(default_engine_threads)
            .max(1);
        let model = pick_model(&endpoint, cfg).await?;
        let served: Vec<(String, Arc<str>)> = cfg
            .routing
            .served_models()
            .into_iter()
            .map(|m| (m.to_owned(), Arc::from(m)))
            .collect();
        let synth = match cfg.prompts {
            PromptMode::Original => None,
            PromptMode::Synthetic | PromptMode::Tokens => {
                let spec = prompt_tokenizer(cfg.tokenizer.as_ref(), trace);
                let tokenizer = Tokenizer::load(&spec)?;
                let block = trace.metadata.prefix_block_size.unwrap_or(512);
                Some(Arc::new(PromptSynth::new(tokenizer, block, seed)?))
            }
        };
        let config_json = json!({
            "url": endpoint.display_url(),
            "embedded_simulator": sim.is_some(),
            "api": cfg.api,
            "apis": apis,
            "model": model,
            "api_map": cfg.routing.api_map.iter().map(|(k, a)| json!([k, a])).collect::<Vec<_>>(),
            "model_map": cfg.routing.model_map.iter().map(|(k, m)| json!([k, m])).collect::<Vec<_>>(),
            "models": cfg.routing.models.iter().map(|(m, w)| json!([m, w])).collect::<Vec<_>>(),
            "embedding_batch": cfg.embedding_batch,
            "headers": cfg.headers.iter().map(|(n, _)| format!("{n}: <redacted>")).collect::<Vec<_>>(),
            "api_key_env": cfg.api_key_env,
            "http2": cfg.http2,
            "connect_timeout": humantime::format_duration(cfg.timeouts.connect).to_string(),
            "ttft_timeout": cfg.timeouts.ttft.map(|d| humantime::format_duration(d).to_string()),
            "request_timeout": cfg.timeouts.request.map(|d| humantime::format_duration(d).to_string()),
            "max_response_bytes": cfg.max_response_bytes,
            "stream": cfg.stream,
            "force_output_len": cfg.force_output_len,
            "prompts": cfg.prompts,
            "tokenizer": synth.as_ref().map(|s: &Arc<PromptSynth>| s.tokenizer().name()),
            "max_in_flight": cfg.cap.map(|(n, _)| n),
            "on_cap": cfg.cap.map(|(_, p)| p),
            "max_connections": connections,
            "engine_threads": engines,
            "realtime": cfg.realtime,
            "extra_body": cfg.extra_body.as_deref(),
            "preflight": cfg.preflight,
            "sim": sim.is_some().then(|| serde_json::to_value(&cfg.sim).unwrap_or_default()),
        });
        Ok(Self {
            endpoint: Arc::new(endpoint),
            endpoint_config,
            engines,
            realtime: cfg.realtime,
            builder: Arc::new(RequestBuilder {
                model: Arc::from(model.as_str()),
                served,
                routing: cfg.routing.clone(),
                seed,
                embedding_batch: cfg.embedding_batch,
                api: cfg.api,
                stream: cfg.stream,
                force_output_len: cfg.force_output_len,
                prompts: cfg.prompts,
                synth,
                extra_body: cfg.extra_body.clone(),
            }),
            timeouts: cfg.timeouts.clone(),
            cap: cfg.cap,
            connections,
            scrape: cfg.scrape.clone(),
            config_json,
            check_tokens: cfg.check_tokens,
            token_check: tokio::sync::OnceCell::new(),
            seed,
            sim,
        })
    }

    /// The URL requests go to, without credentials.
    pub fn display_url(&self) -> String {
        self.endpoint.display_url()
    }

    /// Whether this target is the embedded simulator.
    pub fn is_embedded(&self) -> bool {
        self.sim.is_some()
    }

    /// Model name sent in every request.
    pub fn model(&self) -> &str {
        &self.builder.model
    }
}

/// The APIs a run may call: the default and those of `--api-map`.
fn run_apis(cfg: &TargetConfig) -> Vec<Api> {
    let mut apis: Vec<Api> = std::iter::once(cfg.api)
        .chain(cfg.routing.api_map.iter().map(|(_, a)| *a))
        .collect();
    apis.sort_unstable();
    apis.dedup();
    apis
}

/// The model to send: `--model` (checked against the server's list when
/// preflight is on), else the first model the server lists. The served
/// names of `--model-map` and `--models` are checked too.
async fn pick_model(endpoint: &Endpoint, cfg: &TargetConfig) -> anyhow::Result<String> {
    if let (Some(m), false) = (&cfg.model, cfg.preflight) {
        return Ok(m.clone());
    }
    let models = match endpoint.list_models().await {
        Ok(models) => models,
        Err(e) => {
            let status = match &e {
                crate::client::ClientError::Request { status, .. } => *status,
                _ => None,
            };
            let hint = match status {
                Some(401 | 403) => format!("\n{}", credentials_hint(cfg)),
                Some(404) => format!(
                    "\nhint: the server has no GET /v1/models; --url is the server's base (with or without /v1){}",
                    if cfg.model.is_some() {
                        ", or --no-preflight sends without checking"
                    } else {
                        ""
                    }
                ),
                _ => String::new(),
            };
            // The hint goes last, under the server's own answer.
            bail!(
                "checking {} before the run (GET /v1/models; --no-preflight skips this{}): {e}{hint}",
                endpoint.display_url(),
                if cfg.model.is_none() {
                    ", with --model"
                } else {
                    ""
                }
            );
        }
    };
    if let Some(m) = cfg
        .routing
        .served_models()
        .into_iter()
        .find(|m| cfg.preflight && !models.iter().any(|x| x == m))
    {
        bail!(
            "{} does not serve model {m:?} (named in --model-map or --models); it lists: {} (fix the flag, or --no-preflight to send it anyway)",
            endpoint.display_url(),
            if models.is_empty() {
                "nothing".to_owned()
            } else {
                models.join(", ")
            }
        );
    }
    match &cfg.model {
        Some(m) if models.iter().any(|x| x == m) => Ok(m.clone()),
        Some(m) => bail!(
            "{} does not serve model {m:?}; it lists: {} (fix --model, or --no-preflight to send it anyway)",
            endpoint.display_url(),
            if models.is_empty() {
                "nothing".to_owned()
            } else {
                models.join(", ")
            }
        ),
        None => models
            .into_iter()
            .next()
            .with_context(|| format!("{} lists no models: pass --model", endpoint.display_url())),
    }
}

/// What to check when the server refuses the credentials: which key was
/// sent, and how to send another. Never the key itself.
pub fn credentials_hint(cfg: &TargetConfig) -> String {
    let header = cfg
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("authorization"));
    let var = &cfg.api_key_env;
    let sent = if header {
        "the -H Authorization header given was sent".to_owned()
    } else if std::env::var(var).is_ok_and(|k| !k.is_empty()) {
        format!("the key in ${var} was sent as a Bearer token")
    } else {
        format!("no key was sent: ${var} is not set")
    };
    format!(
        "hint: the server refused the credentials; {sent}. Set ${var}, name another variable with --api-key-env, or pass -H 'Authorization: ...'"
    )
}

/// Which API and model each trace row goes to: the run's defaults, the
/// trace's `request_kind` through `--api-map`, the trace's `model` through
/// `--model-map`, and seeded weights (`--models`) for rows without one.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// `request_kind` value -> API (`--api-map`).
    pub api_map: Vec<(String, Api)>,
    /// The trace's `model` -> the served name (`--model-map`).
    pub model_map: Vec<(String, String)>,
    /// Served names with weights, for rows whose trace has no `model`
    /// (`--models`); drawn per request from the seed and its id.
    pub models: Vec<(String, f64)>,
}

impl Routing {
    /// Whether any row may leave the run's default API or model.
    pub fn is_empty(&self) -> bool {
        self.api_map.is_empty() && self.model_map.is_empty() && self.models.is_empty()
    }

    /// Every served name a row may be sent with, besides the default.
    pub fn served_models(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .model_map
            .iter()
            .map(|(_, s)| s.as_str())
            .chain(self.models.iter().map(|(m, _)| m.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The API of a row with `kind`, else `default`.
    pub fn api(&self, kind: Option<&str>, default: Api) -> Api {
        kind.and_then(|k| self.api_map.iter().find(|(m, _)| m == k))
            .map_or(default, |(_, a)| *a)
    }

    /// The index into `models` of request `request_id` under `seed`, or
    /// `None` without `--models`.
    pub fn weighted(&self, seed: u64, request_id: &str) -> Option<usize> {
        let total: f64 = self.models.iter().map(|(_, w)| w).sum();
        if self.models.is_empty() || total <= 0.0 {
            return None;
        }
        let draw = crate::prompt::derive_salt(seed, request_id.as_bytes());
        // 53 bits of the draw as a uniform value in [0, 1).
        let u = (draw >> 11) as f64 / (1u64 << 53) as f64 * total;
        let mut acc = 0.0;
        for (i, (_, w)) in self.models.iter().enumerate() {
            acc += w;
            if u < acc {
                return Some(i);
            }
        }
        Some(self.models.len() - 1)
    }
}

/// Builds request bodies; shared with the producer thread.
struct RequestBuilder {
    model: Arc<str>,
    /// Served names of `routing.model_map` and `routing.models`, shared by
    /// rows.
    served: Vec<(String, Arc<str>)>,
    routing: Routing,
    seed: u64,
    /// Inputs per embeddings request (`--embedding-batch`).
    embedding_batch: u32,
    api: Api,
    stream: bool,
    force_output_len: bool,
    prompts: PromptMode,
    synth: Option<Arc<PromptSynth>>,
    extra_body: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

impl RequestBuilder {
    /// The same builder with its prompts salted by `salt` (0: unchanged).
    fn salted(&self, salt: u64) -> Self {
        Self {
            model: self.model.clone(),
            served: self.served.clone(),
            routing: self.routing.clone(),
            seed: self.seed,
            embedding_batch: self.embedding_batch,
            api: self.api,
            stream: self.stream,
            force_output_len: self.force_output_len,
            prompts: self.prompts,
            synth: self.synth.as_ref().map(|s| Arc::new(s.salted(salt))),
            extra_body: self.extra_body.clone(),
        }
    }

    /// Builds the request for one scheduled trace row.
    fn prepare(&self, record: &TraceRecord, sched: ScheduledRequest) -> Prepared {
        let request = self.build(record, sched.repeat);
        Prepared {
            sched,
            request_id: record.request_id.clone(),
            input_tokens: record.input_tokens,
            output_tokens_expected: record.output_tokens,
            request,
            turn: None,
            then: None,
            turns_after: 0,
            skip: None,
            class: self.class_of(record),
        }
    }

    /// The API `record` goes to.
    fn api_of(&self, record: &TraceRecord) -> Api {
        self.routing.api(record.request_kind.as_deref(), self.api)
    }

    /// The model `record` is sent with: its trace model through
    /// `--model-map`, else a `--models` draw for a row without one, else
    /// the run's model.
    fn model_of(&self, record: &TraceRecord) -> Arc<str> {
        let served = |name: &str| {
            self.served
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, a)| a.clone())
        };
        if let Some(m) = &record.model
            && let Some((_, to)) = self.routing.model_map.iter().find(|(from, _)| from == m)
        {
            return served(to).unwrap_or_else(|| Arc::from(to.as_str()));
        }
        if record.model.is_none()
            && let Some(i) = self.routing.weighted(self.seed, &record.request_id)
        {
            let name = &self.routing.models[i].0;
            return served(name).unwrap_or_else(|| Arc::from(name.as_str()));
        }
        self.model.clone()
    }

    /// The row's class for the results.
    fn class_of(&self, record: &TraceRecord) -> dispatch::RowClass {
        let api = self.api_of(record);
        dispatch::RowClass {
            api: Some(api.as_str()),
            model: Some(self.model_of(record)),
            request_kind: record.request_kind.clone(),
            user_id: record.user_id.clone(),
            inputs: if api == Api::Embeddings {
                self.embedding_batch.max(1)
            } else {
                1
            },
        }
    }

    fn build(&self, record: &TraceRecord, repeat: u32) -> Result<(RequestSpec, Bytes), String> {
        let batch = self.embedding_batch.max(1);
        if batch > 1 && self.api_of(record) == Api::Embeddings {
            return self.build_batch(record, repeat, batch);
        }
        let prompt = match (self.prompts, &self.synth) {
            (PromptMode::Original, _) => {
                Prompt::Text(record.prompt_text.clone().unwrap_or_default())
            }
            (PromptMode::Synthetic, Some(s)) => Prompt::Text(
                s.synthesize(record, repeat)
                    .map_err(|e| format!("prompt: {e}"))?
                    .text,
            ),
            (PromptMode::Tokens, Some(s)) => Prompt::Tokens(
                s.synthesize(record, repeat)
                    .map_err(|e| format!("prompt: {e}"))?
                    .ids,
            ),
            (_, None) => return Err("prompt: no tokenizer loaded".into()),
        };
        self.body(record, repeat, prompt)
    }

    /// An embeddings request of `batch` inputs, each of exactly the row's
    /// `input_tokens` (synthetic inputs are distinct: input `j` is drawn as
    /// repeat `repeat * batch + j` of the row).
    fn build_batch(
        &self,
        record: &TraceRecord,
        repeat: u32,
        batch: u32,
    ) -> Result<(RequestSpec, Bytes), String> {
        let prompt = match (self.prompts, &self.synth) {
            (PromptMode::Original, _) => {
                Prompt::Texts(vec![
                    record.prompt_text.clone().unwrap_or_default();
                    batch as usize
                ])
            }
            (mode, Some(s)) => {
                let mut texts = Vec::new();
                let mut ids = Vec::new();
                for j in 0..batch {
                    let p = s
                        .synthesize(record, repeat.saturating_mul(batch).saturating_add(j))
                        .map_err(|e| format!("prompt: {e}"))?;
                    if mode == PromptMode::Tokens {
                        ids.push(p.ids);
                    } else {
                        texts.push(p.text);
                    }
                }
                if mode == PromptMode::Tokens {
                    Prompt::TokenBatch(ids)
                } else {
                    Prompt::Texts(texts)
                }
            }
            (_, None) => return Err("prompt: no tokenizer loaded".into()),
        };
        self.body(record, repeat, prompt)
    }

    /// A synthetic prompt as this target sends it (text, or token ids).
    fn prompt_of(&self, p: crate::prompt::SynthPrompt) -> Prompt {
        match self.prompts {
            PromptMode::Tokens => Prompt::Tokens(p.ids),
            PromptMode::Synthetic | PromptMode::Original => Prompt::Text(p.text),
        }
    }

    /// The request of `record` with `prompt`.
    fn body(
        &self,
        record: &TraceRecord,
        repeat: u32,
        prompt: Prompt,
    ) -> Result<(RequestSpec, Bytes), String> {
        self.body_keeping(record, repeat, prompt, false)
    }

    /// [`Self::body`], keeping the reply's text when `keep_reply`.
    fn body_keeping(
        &self,
        record: &TraceRecord,
        repeat: u32,
        prompt: Prompt,
        keep_reply: bool,
    ) -> Result<(RequestSpec, Bytes), String> {
        let request_id = if repeat == 0 {
            record.request_id.clone()
        } else {
            format!("{}#{repeat}", record.request_id)
        };
        let api = self.api_of(record);
        let spec = RequestSpec {
            request_id,
            api,
            model: self.model_of(record).to_string(),
            prompt,
            // Servers refuse max_tokens 0; a trace row that recorded no
            // output (a failed request) still asks for one token, and
            // `output_tokens_expected` keeps the trace's value.
            max_tokens: u32::try_from(record.output_tokens.max(1)).unwrap_or(1),
            // Embeddings are never streamed.
            stream: self.stream && api.generates(),
            force_output_len: self.force_output_len,
            extra_body: self.extra_body.clone(),
            keep_reply,
        };
        let body = crate::client::build_body(&spec).map_err(|e| format!("request body: {e}"))?;
        Ok((spec, body))
    }
}

/// The tokenizer for prompts: the flag, else the trace's when it is an
/// embedded encoding, else o200k_base.
fn prompt_tokenizer(flag: Option<&TokenizerSpec>, trace: &Trace) -> TokenizerSpec {
    if let Some(spec) = flag {
        return spec.clone();
    }
    match trace
        .metadata
        .tokenizer
        .as_deref()
        .map(str::parse::<TokenizerSpec>)
    {
        Some(Ok(spec @ (TokenizerSpec::O200kBase | TokenizerSpec::Cl100kBase))) => spec,
        _ => TokenizerSpec::O200kBase,
    }
}

/// One shutdown path for every way a run can end early: a signal, a fatal
/// error, or the caller. [`Shutdown::stop`] ends dispatch and gives
/// in-flight requests the grace period; [`Shutdown::stop_now`] (a second
/// Ctrl-C, a fatal error) cancels them at once. Either way the recorder
/// writes every row that was due and closes the file.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    stop: CancellationToken,
    now: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl Shutdown {
    /// A shutdown that has not been asked for.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops dispatch; in-flight requests get the grace period. The first
    /// reason given is the one recorded.
    pub fn stop(&self, reason: &str) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_none()
        {
            *r = Some(reason.to_owned());
        }
        self.stop.cancel();
    }

    /// Stops dispatch and cancels in-flight requests now.
    pub fn stop_now(&self, reason: &str) {
        self.stop(reason);
        self.now.cancel();
    }

    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Why the run was stopped, if it was.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    /// Resolves when a stop is asked for.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }

    /// The token fired by [`Self::stop`] (for the dispatcher thread).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Resolves when in-flight requests must be cancelled at once.
    pub async fn stopped_now(&self) {
        self.now.cancelled().await;
    }
}

/// One run's options beyond the target.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The schedule.
    pub schedule: ScheduleSpec,
    /// Results file (created new; the caller checks and clears the path).
    pub output: PathBuf,
    /// Goodput objectives.
    pub slo: Option<Slo>,
    /// Columns the summary breaks down by, besides the automatic ones.
    pub by: Vec<crate::record::summary::ClassColumn>,
    /// Grace for in-flight requests after a stop.
    pub grace: Duration,
    /// When the generator counts as the bottleneck.
    pub limits: FidelityLimits,
    /// Warm-up and cool-down boundaries.
    pub phases: Phases,
    /// Show the live progress (`false`: nothing, whatever `monitor` says).
    pub progress: bool,
    /// How the progress is shown and exported, and the sweep step's label.
    pub monitor: progress::Monitor,
    /// Extra key-values for the results metadata (sweep step, ...).
    pub extra_metadata: Vec<(String, String)>,
    /// Replay the trace's sessions as conversations (when it has any);
    /// `None` sends every row on its own.
    pub sessions: Option<session::SessionOptions>,
    /// Closed loop (`--concurrency`): the schedule gives the order and
    /// number of requests, and virtual users send them back to back.
    pub closed_loop: Option<dispatch::ClosedLoop>,
    /// Send only this shard of the schedule (`--shard K/N`).
    pub shard: Option<schedule::Shard>,
    /// Salts every synthetic prompt of the run (0: none), so that a rerun
    /// or the next sweep step finds nothing of this one in the server's
    /// prefix cache; sharing inside the run is kept.
    pub prompt_salt: u64,
    /// The schedule's t=0 as wall-clock microseconds since the epoch
    /// (`--start-at`), so that shards start together; `None` starts
    /// shortly after the run is set up.
    pub start_at_us: Option<i64>,
}

/// Replays `trace` against `target` under `opts` until the schedule ends
/// or `shutdown` stops it; the results hold a row for every request that
/// was due either way.
pub async fn run(
    trace: Arc<Trace>,
    target: &Target,
    opts: RunOptions,
    shutdown: &Shutdown,
) -> anyhow::Result<Recorded> {
    let sessions = opts
        .sessions
        .filter(|_| session::SessionPlan::has_sessions(&trace))
        .map(|o| (session::SessionPlan::group(&trace, &o), o));
    let session_opts_json = sessions
        .as_ref()
        .map(|(_, o)| serde_json::to_value(o))
        .transpose()?;
    let schedule = match &sessions {
        Some((plan, _)) => schedule::plan(&opts.schedule, &plan.firsts)?,
        None => schedule::plan(&opts.schedule, &trace.records)?,
    };
    let schedule = match opts.shard {
        Some(shard) => schedule.sharded(shard),
        None => schedule,
    };
    // Before the clock is set, so the check cannot make t=0 late.
    let rows = sessions
        .as_ref()
        .map_or(&trace.records, |(plan, _)| &plan.firsts);
    let token_check = target.check_tokens(&opts, rows).await?;
    // The clock is set now, before the results file exists: a start time
    // already past is an error, not a run that starts late.
    let clock = match opts.start_at_us {
        Some(at) => RunClock::starting_at(at).ok_or_else(|| {
            anyhow::anyhow!(
                "--start-at {} has passed: give a time a little in the future, the same for every shard",
                chrono::DateTime::from_timestamp_micros(at)
                    .map_or_else(|| at.to_string(), |t| t.to_rfc3339())
            )
        })?,
        // A short lead lets the producer fill its queue before t=0.
        None => RunClock::starting_in(Duration::from_millis(200)),
    };
    // In session mode the schedule counts sessions; a session stands for
    // its turns on average.
    let turns_per_unit = sessions.as_ref().map_or(1.0, |(plan, _)| {
        plan.turns() as f64 / plan.sessions.len().max(1) as f64
    });
    let planned = schedule.remaining();
    let planned = Remaining {
        requests: (planned.requests as f64 * turns_per_unit).round() as u64,
        exact: planned.exact && turns_per_unit == 1.0,
    };
    let target_rate = match (&opts.schedule, &opts.closed_loop) {
        (ScheduleSpec::Rate { rate, .. }, None) => Some(*rate),
        _ => None,
    };
    // The stages that label rows: a staged schedule's, or a closed loop's.
    let stages = opts
        .schedule
        .stages()
        .cloned()
        .or_else(|| opts.closed_loop.as_ref().and_then(|c| c.stages.clone()));
    let trace_file = InputFile::describe(&trace.path)
        .with_context(|| format!("hashing {}", trace.path.display()))?;
    let started_at = chrono::Utc::now();
    let config = RunConfig {
        target: target.config_with_check(token_check),
        schedule: opts.schedule.clone(),
        seed: target.seed,
        slo: opts.slo.map(|s| s.to_string()),
        grace: Some(humantime::format_duration(opts.grace).to_string()),
        sessions: session_opts_json,
        closed_loop: opts.closed_loop.as_ref().map(dispatch::ClosedLoop::to_json),
    };
    let mut kv: Vec<(String, String)> = [
        (key::RESULTS_VERSION, RESULTS_VERSION.to_string()),
        (key::TOOL_VERSION, env!("CARGO_PKG_VERSION").to_owned()),
        // Seeds the arrival process (rate schedules) and the prompts (all).
        (key::SEED, target.seed.to_string()),
        (key::TRACE_FILE, trace_file.name.clone()),
        (key::TRACE_SHA256, trace_file.sha256.clone()),
        (key::TRACE_ROWS, trace.records.len().to_string()),
        (key::TARGET_URL, target.display_url()),
        (key::MODEL, target.model().to_owned()),
        (key::STARTED_AT, started_at.to_rfc3339()),
        (key::REQUESTS_SCHEDULED, planned.requests.to_string()),
        (key::CONFIG, serde_json::to_string(&config)?),
        (
            key::T0,
            chrono::DateTime::from_timestamp_micros(clock.start_unix_us)
                .map_or_else(String::new, |t| {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                }),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(shard) = opts.shard {
        kv.push((key::SHARD.to_owned(), shard.to_string()));
    }
    kv.push((key::PROMPT_SALT.to_owned(), opts.prompt_salt.to_string()));
    let builder = if opts.prompt_salt == 0 {
        target.builder.clone()
    } else {
        Arc::new(target.builder.salted(opts.prompt_salt))
    };
    kv.extend(opts.extra_metadata.iter().cloned());
    let writer = ResultsWriter::create(&opts.output, &kv)?;
    let (rows_tx, rows_rx) = mpsc::unbounded_channel();
    let summary = SummaryBuilder::new(opts.slo, opts.limits, target_rate, true)
        .by(&opts.by)
        .closed_loop(opts.closed_loop.as_ref().map(|c| c.users as u64))
        .stages(stages.as_ref());
    let end = Arc::new(Mutex::new(RunEnd::default()));
    let counters = Arc::new(Counters::default());
    let live = Arc::new(progress::LiveRun::new(
        counters.clone(),
        progress::Plan::of(planned, &schedule, opts.closed_loop.as_ref()),
        clock.start,
        &opts.monitor,
    ));
    if let Some(exporter) = &opts.monitor.exporter {
        exporter.attach(live.clone());
    }
    let mode = opts.monitor.mode_for(opts.progress);
    // The window costs the recorder a little per row: kept only when
    // someone looks at it.
    let tap = (mode != progress::ProgressMode::Off || opts.monitor.exporter.is_some())
        .then(|| progress::Tap::new(live.clone(), clock));
    let recorder = recorder::Recorder::start(
        writer,
        opts.output.clone(),
        rows_rx,
        summary,
        end.clone(),
        shutdown.clone(),
        tap,
    )?;

    let session_run = sessions.map(|(plan, o)| {
        Arc::new(session::SessionRun {
            trace: trace.clone(),
            plan,
            builder: builder.clone(),
            opts: o,
            speedup: match opts.schedule {
                ScheduleSpec::Recorded { speedup, .. } => speedup,
                ScheduleSpec::Rate { .. } | ScheduleSpec::Stages { .. } => 1.0,
            },
            clock,
        })
    });
    if let Some(run) = &session_run {
        eprintln!(
            "session replay: {} sessions, {} turns; later turns wait for the last reply (--turn-timing {}, think times x{}); --sessions independent sends rows on their own",
            run.plan.sessions.len(),
            run.plan.turns(),
            run.opts.timing.as_str(),
            run.opts.think_time_scale
        );
    }
    // One engine per thread; a closed loop's users share one count, so it
    // runs on one engine.
    let engines = if opts.closed_loop.is_some() {
        1
    } else {
        target.engines
    };
    let mut feeds = Vec::with_capacity(engines);
    let mut senders = Vec::with_capacity(engines);
    for _ in 0..engines {
        let (tx, rx) = mpsc::channel::<Vec<Prepared>>((FEED_BATCHES / engines).max(2));
        senders.push(tx);
        feeds.push(dispatch::Feed::new(rx));
    }
    let producer = {
        let trace = trace.clone();
        let stop = shutdown.stop_token();
        let builder = builder.clone();
        let session_run = session_run.clone();
        std::thread::Builder::new()
            .name("llm-replay-prompts".into())
            .spawn(move || -> Remaining {
                background_thread();
                produce(
                    schedule,
                    &senders,
                    clock,
                    &stop,
                    turns_per_unit,
                    |s| match &session_run {
                        Some(run) => run.first(s),
                        None => trace
                            .records
                            .get(s.trace_index as usize)
                            .map(|record| builder.prepare(record, s)),
                    },
                )
            })?
    };

    let scrape_stop = CancellationToken::new();
    let scraper = target
        .scrape
        .clone()
        .map(|url| tokio::spawn(scrape::run(url, scrape_stop.clone())));
    let cancel = CancellationToken::new();
    let cap = target
        .cap
        .map(|(n, policy)| (Arc::new(Semaphore::new(n)), policy));
    let connections = Arc::new(Semaphore::new(target.connections));
    let tasks = TaskTracker::new();
    let mut threads = Vec::with_capacity(engines);
    let mut dispatched_rx = Vec::with_capacity(engines);
    for (index, feed) in feeds.into_iter().enumerate() {
        // Each engine has its own endpoint: its connections live on its
        // event loop and never wake another thread.
        let shared = Shared {
            transport: EndpointRef(Arc::new(Endpoint::new(target.endpoint_config.clone())?)),
            timeouts: target.timeouts.clone(),
            cap: cap.clone(),
            connections: Some(connections.clone()),
            rows: rows_tx.clone(),
            clock,
            cancel: cancel.clone(),
            stop: shutdown.stop_token(),
            counters: counters.clone(),
            phases: opts.phases,
            stages: stages.clone(),
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        dispatched_rx.push(done_rx);
        let stop = shutdown.stop_token();
        let tasks = tasks.clone();
        let closed = opts.closed_loop.clone();
        let realtime = target.realtime;
        threads.push(
            std::thread::Builder::new()
                .name(format!("llm-replay-engine-{index}"))
                .spawn(move || -> anyhow::Result<()> {
                    if realtime {
                        realtime_thread()?;
                    }
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let pacer = engine_pacer()?;
                        let shared = Arc::new(shared);
                        // The dispatcher polls its own requests (see
                        // `dispatch`): tokio's per-task budget would make
                        // their sockets and its timer answer "not yet" after
                        // a few dozen reads in one wake-up.
                        let dispatched = tokio::task::unconstrained(dispatch::dispatch(
                            shared,
                            feed,
                            pacer,
                            stop,
                            tasks.clone(),
                            closed,
                        ))
                        .await;
                        let _ = done_tx.send(dispatched);
                        // Its requests run on this thread until they end.
                        tasks.wait().await;
                        Ok(())
                    })
                })?,
        );
    }
    // The recorder finishes when the last row sender goes: this one goes
    // only after the run's end (stop reason, requests never reached) is
    // written for it below.
    let last_rows = rows_tx;

    let view = progress::View::start(mode, live.clone());

    let mut dispatched = dispatch::Dispatched::default();
    let mut engine_failed = false;
    for rx in dispatched_rx {
        match rx.await {
            Ok(d) => {
                dispatched.dispatched += d.dispatched;
                dispatched.not_reached += d.not_reached;
            }
            // The engine thread ended before dispatching: its error comes
            // with the join below.
            Err(_) => engine_failed = true,
        }
    }
    if engine_failed {
        shutdown.stop_now("fatal: an engine thread failed");
    }
    // Every first request has left; in session replay later turns still
    // go out, so only a run of single requests is draining now.
    if session_run.is_none() {
        live.set_draining();
    }
    tracing::debug!(?dispatched, "dispatch finished");
    tasks.close();
    // In-flight requests finish (each bounded by --request-timeout) unless
    // the run is stopped; after a stop they get the grace period, and a
    // second stop (or the grace running out) cancels them.
    if !shutdown.is_stopped() {
        tokio::select! {
            () = tasks.wait() => {}
            () = shutdown.stopped() => {}
        }
    }
    if shutdown.is_stopped() {
        tokio::select! {
            () = tasks.wait() => {}
            () = tokio::time::sleep(opts.grace) => cancel.cancel(),
            () = shutdown.stopped_now() => cancel.cancel(),
        }
        tasks.wait().await;
    }
    if let Some(why) = shutdown.reason() {
        live.set_stopped(why);
    }
    view.finish().await;
    let joined = tokio::task::spawn_blocking(move || {
        threads.into_iter().map(|t| t.join()).collect::<Vec<_>>()
    })
    .await
    .context("joining the engine threads")?;
    for result in joined {
        result.map_err(|_| anyhow::anyhow!("an engine thread panicked"))??;
    }
    let produced = tokio::task::spawn_blocking(move || producer.join())
        .await
        .context("joining the prompt producer")?
        .map_err(|_| anyhow::anyhow!("the prompt producer thread panicked"))?;
    if let Ok(mut e) = end.lock() {
        let later_turns = counters.not_reached.load(Ordering::Relaxed);
        // A closed loop bounded by time has no schedule left to miss.
        let timed_closed_loop = opts
            .closed_loop
            .as_ref()
            .is_some_and(|c| c.duration.is_some());
        e.not_reached = if timed_closed_loop {
            0
        } else {
            produced.requests
                + (dispatched.not_reached as f64 * turns_per_unit).round() as u64
                + later_turns
        };
        e.not_reached_exact = produced.exact || timed_closed_loop;
        e.stopped_by = shutdown.reason();
    }
    drop(last_rows);
    let recorded = tokio::task::spawn_blocking(move || recorder.join())
        .await
        .context("joining the recorder")??;
    if let Some(task) = scraper {
        scrape_stop.cancel();
        let (samples, failures) = task.await.context("joining the metrics scraper")?;
        let path = crate::record::server_metrics::path_for(&opts.output);
        crate::record::server_metrics::write(&path, &samples)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "server metrics {} ({} samples{})",
            path.display(),
            samples.len(),
            if failures > 0 {
                format!(", {failures} scrapes failed")
            } else {
                String::new()
            }
        );
    }
    Ok(recorded)
}

/// Requests handed to an engine at once: one wake-up of its event loop per
/// batch, not per request.
const FEED_BATCH: usize = 64;

/// Batches the engines' feeds hold between them: the producer runs up to
/// this many times [`FEED_BATCH`] requests ahead (each holds its body).
const FEED_BATCHES: usize = 64;

/// A batch not yet full is handed over when its first request is due
/// within this (slow traces, and a producer that is behind).
const FEED_AHEAD: Duration = Duration::from_millis(50);

/// The producer: walks the schedule (generated as it goes), builds each
/// request with `prepare`, and deals them to the engines in turn, so each
/// engine sends an interleaved share of the schedule (in session replay an
/// entry is a whole session, which stays on its engine). Returns what a stop
/// left unsent: requests never reached, counted and not built.
fn produce(
    mut schedule: schedule::Schedule,
    engines: &[mpsc::Sender<Vec<Prepared>>],
    clock: RunClock,
    stop: &CancellationToken,
    turns_per_unit: f64,
    mut prepare: impl FnMut(ScheduledRequest) -> Option<Prepared>,
) -> Remaining {
    let unsent = |schedule: &schedule::Schedule, held: usize| {
        let rest = schedule.remaining();
        Remaining {
            requests: ((rest.requests + held as u64) as f64 * turns_per_unit).round() as u64,
            exact: rest.exact && turns_per_unit == 1.0,
        }
    };
    let held = |pending: &[Vec<Prepared>]| pending.iter().map(Vec::len).sum::<usize>();
    let mut pending: Vec<Vec<Prepared>> = engines
        .iter()
        .map(|_| Vec::with_capacity(FEED_BATCH))
        .collect();
    let mut turn = 0;
    while let Some(s) = schedule.next() {
        if stop.is_cancelled() {
            return unsent(&schedule, 1 + held(&pending));
        }
        let Some(prepared) = prepare(s) else {
            continue;
        };
        pending[turn].push(prepared);
        turn = (turn + 1) % engines.len();
        let soon = tokio::time::Instant::now() + FEED_AHEAD;
        for (engine, batch) in engines.iter().zip(pending.iter_mut()) {
            let due = batch
                .first()
                .is_some_and(|p| clock.deadline(p.sched.offset_ns) <= soon);
            if batch.len() >= FEED_BATCH || due {
                let full = std::mem::replace(batch, Vec::with_capacity(FEED_BATCH));
                if let Err(lost) = engine.blocking_send(full) {
                    return unsent(&schedule, lost.0.len() + held(&pending));
                }
            }
        }
    }
    let mut lost = 0;
    for (engine, batch) in engines.iter().zip(pending) {
        if !batch.is_empty()
            && let Err(e) = engine.blocking_send(batch)
        {
            lost += e.0.len();
        }
    }
    if lost > 0 {
        return unsent(&schedule, lost);
    }
    Remaining {
        requests: 0,
        exact: true,
    }
}

/// Runs the calling thread (the prompt producer, the recorder) only when
/// no engine wants the CPU: Linux's `SCHED_IDLE`, which a normal thread
/// preempts the moment it wakes. Prompt synthesis runs ahead and rows are
/// written in batches, so neither needs to be on time, and a send an
/// engine makes late is a measurement error. (`nice` was not enough: at
/// 10,000 requests a second on one core, nice +10 threads still held the
/// CPU for up to 2 ms while an engine waited to send.) Where the policy
/// cannot be set, the thread runs at `nice` +10, or as it is.
pub(crate) fn background_thread() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        );
        if let Err(e) = idle {
            tracing::debug!("SCHED_IDLE refused ({e:?}); lowering the thread's nice instead");
            let tid = rustix::thread::gettid();
            let now = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
            let _ = rustix::process::setpriority_process(Some(tid), now + 10);
        }
    }
}

/// Whether engine threads may run under SCHED_FIFO (`--realtime`), asked
/// on a throwaway thread of its own so that a refusal comes before any
/// output exists; the error says what the process needs.
pub fn check_realtime() -> anyhow::Result<()> {
    std::thread::spawn(realtime_thread)
        .join()
        .map_err(|_| anyhow::anyhow!("--realtime: the check panicked"))?
}

/// Puts the calling engine thread under SCHED_FIFO at the lowest
/// real-time priority (`--realtime`).
fn realtime_thread() -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            RealtimeThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        )
        .map_err(|e| {
            let why = match e {
                thread_priority::Error::OS(code) => {
                    std::io::Error::from_raw_os_error(code).to_string()
                }
                other => format!("{other:?}"),
            };
            anyhow::anyhow!(
                "--realtime: an engine thread could not take SCHED_FIFO ({why}): it needs root, CAP_SYS_NICE, or a real-time priority limit above 0 (`ulimit -r 1`)"
            )
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        anyhow::bail!("--realtime: SCHED_FIFO engine threads are Linux only")
    }
}

/// The pacer of an engine thread: its own timerfd.
#[cfg(target_os = "linux")]
fn engine_pacer() -> std::io::Result<pacer::TimerPacer> {
    pacer::TimerPacer::new()
}

/// The pacer of an engine thread: tokio's clock (1 ms) off Linux.
#[cfg(not(target_os = "linux"))]
fn engine_pacer() -> std::io::Result<pacer::TokioPacer> {
    Ok(pacer::TokioPacer)
}

/// An endpoint shared by the run's tasks.
struct EndpointRef(Arc<Endpoint>);

impl dispatch::Transport for EndpointRef {
    fn send(
        &self,
        spec: &RequestSpec,
        body: Bytes,
        timeouts: &Timeouts,
        cancel: &CancellationToken,
    ) -> impl std::future::Future<Output = crate::client::Exchange> + Send {
        self.0.send(spec, body, timeouts, cancel)
    }
}

/// A results path that does not exist yet: `results-<UTC time>.parquet` in
/// the current folder, with `-1`, `-2`, ... when taken.
pub fn default_output() -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut path = PathBuf::from(format!("results-{stamp}.parquet"));
    let mut n = 1;
    while path.exists() {
        path = PathBuf::from(format!("results-{stamp}-{n}.parquet"));
        n += 1;
    }
    path
}
