//! OpenAI-compatible requests: body building, SSE parsing, and one measured
//! exchange. No scheduling and no retries here: a retry would change the
//! offered load, so every failure is reported as an [`Outcome`].

pub mod h1;
pub mod sse;

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use sse::{SseEvent, SseParser, parse_chunk_into, parse_messages_event, parse_responses_event};

/// Which API to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// OpenAI `/v1/completions`: the prompt as text or token ids.
    Completions,
    /// OpenAI `/v1/chat/completions`: the prompt as one user message (or a
    /// conversation).
    Chat,
    /// OpenAI `/v1/embeddings`: inputs of exactly `input_tokens` tokens,
    /// never streamed; no output tokens, no TTFT.
    Embeddings,
    /// OpenAI Responses `/v1/responses`: the prompt as `input`, streamed as
    /// `response.*` events.
    Responses,
    /// Anthropic Messages `/v1/messages`: `x-api-key` and
    /// `anthropic-version` headers, streamed as its `message_*` and
    /// `content_block_*` events.
    Messages,
}

impl Api {
    /// Every API, in the order of [`Api::index`].
    pub const ALL: [Api; 5] = [
        Self::Completions,
        Self::Chat,
        Self::Embeddings,
        Self::Responses,
        Self::Messages,
    ];

    /// The request path.
    pub fn path(self) -> &'static str {
        match self {
            Self::Completions => "/v1/completions",
            Self::Chat => "/v1/chat/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Responses => "/v1/responses",
            Self::Messages => "/v1/messages",
        }
    }

    /// The name in the `api` results column and in `--api`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completions => "completions",
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
            Self::Responses => "responses",
            Self::Messages => "messages",
        }
    }

    /// Position in [`Api::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether a conversation (a message list) can be sent: chat,
    /// responses and messages.
    pub fn takes_messages(self) -> bool {
        matches!(self, Self::Chat | Self::Responses | Self::Messages)
    }

    /// Whether token ids can be sent as the prompt: completions and
    /// embeddings.
    pub fn takes_tokens(self) -> bool {
        matches!(self, Self::Completions | Self::Embeddings)
    }

    /// Whether the API generates tokens (all but embeddings).
    pub fn generates(self) -> bool {
        self != Self::Embeddings
    }
}

impl std::str::FromStr for Api {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown API {s:?}: use one of {}",
                    Self::ALL.map(Api::as_str).join(", ")
                )
            })
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The prompt of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// Token ids (completions and embeddings).
    Tokens(Vec<u32>),
    /// A batch of texts (embeddings).
    Texts(Vec<String>),
    /// A batch of token-id inputs (embeddings).
    TokenBatch(Vec<Vec<u32>>),
    /// A conversation (chat only): earlier turns, the assistant's replies,
    /// and the new user message last.
    Messages(Vec<Message>),
}

/// One message of a chat conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: &'static str,
    /// Its text.
    pub content: String,
}

/// One request, before serialisation.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    /// Sent as `X-Request-Id`, so server and gateway logs join with results.
    pub request_id: String,
    /// The API it goes to.
    pub api: Api,
    /// Model name.
    pub model: String,
    /// Prompt.
    pub prompt: Prompt,
    /// `max_tokens`.
    pub max_tokens: u32,
    /// Stream (with `stream_options.include_usage`).
    pub stream: bool,
    /// Add vLLM/SGLang's `ignore_eos` and `min_tokens` so the output is
    /// exactly `max_tokens` long.
    pub force_output_len: bool,
    /// Merged into the body last (sampling parameters, `--extra-body`);
    /// shared by every request of a run.
    pub extra_body: Option<std::sync::Arc<Map<String, Value>>>,
    /// Keep the reply's text in [`Exchange::reply_text`] (session replay
    /// sends it back as the conversation's history).
    pub keep_reply: bool,
}

/// Errors building requests or the client.
#[derive(Debug, Error)]
pub enum ClientError {
    /// A flag or URL that cannot work.
    #[error("{0}")]
    Config(String),
    /// The request could not be built.
    #[error("{0}")]
    Body(String),
    /// A request outside the replay (model listing) failed.
    #[error("{url}: {message}")]
    Request {
        /// The URL without credentials.
        url: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        /// What happened.
        message: String,
    },
}

/// Body keys that shape generation; an embeddings body leaves them out.
const GENERATION_KEYS: [&str; 7] = [
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "ignore_eos",
    "min_tokens",
];

/// Serialises the JSON body of `spec` for its API.
///
/// Per API: completions sends `prompt` and `max_tokens`; chat `messages`
/// and `max_tokens`; responses `input` and `max_output_tokens`; messages
/// `messages` and `max_tokens` (`stop` becomes `stop_sequences`);
/// embeddings `input` only (one input, or a list for a batch), without the
/// generation keys of `extra_body`.
pub fn build_body(spec: &RequestSpec) -> Result<Bytes, ClientError> {
    let api = spec.api;
    let mut body = Map::new();
    body.insert("model".into(), Value::String(spec.model.clone()));
    let refuse = |what: &str, needs: &str| {
        Err(ClientError::Body(format!(
            "{what} prompts need {needs}, not the {api} API"
        )))
    };
    let prompt_key = match api {
        Api::Completions => "prompt",
        Api::Chat | Api::Messages => "messages",
        Api::Embeddings | Api::Responses => "input",
    };
    let prompt = match (&spec.prompt, api) {
        (Prompt::Text(t), Api::Completions | Api::Embeddings | Api::Responses) => json!(t),
        (Prompt::Text(t), Api::Chat | Api::Messages) => json!([{"role": "user", "content": t}]),
        (Prompt::Messages(m), Api::Chat | Api::Messages | Api::Responses) => json!(m),
        (Prompt::Messages(_), _) => return refuse("message-list", "chat, responses or messages"),
        (Prompt::Tokens(ids), Api::Completions | Api::Embeddings) => json!(ids),
        (Prompt::Tokens(_), _) => return refuse("token-id", "completions or embeddings"),
        (Prompt::Texts(t), Api::Embeddings) => json!(t),
        (Prompt::TokenBatch(t), Api::Embeddings) => json!(t),
        (Prompt::Texts(_) | Prompt::TokenBatch(_), _) => return refuse("batched", "embeddings"),
    };
    body.insert(prompt_key.into(), prompt);
    if api.generates() {
        let max_key = if api == Api::Responses {
            "max_output_tokens"
        } else {
            "max_tokens"
        };
        body.insert(max_key.into(), json!(spec.max_tokens));
        body.insert("stream".into(), Value::Bool(spec.stream));
        if spec.stream && matches!(api, Api::Completions | Api::Chat) {
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        if spec.force_output_len {
            body.insert("ignore_eos".into(), Value::Bool(true));
            body.insert("min_tokens".into(), json!(spec.max_tokens));
        }
    }
    if let Some(extra) = &spec.extra_body {
        for (k, v) in extra.iter() {
            if !api.generates() && GENERATION_KEYS.contains(&k.as_str()) {
                continue;
            }
            if api == Api::Messages && k == "stop" {
                let list = if v.is_string() { json!([v]) } else { v.clone() };
                body.insert("stop_sequences".into(), list);
                continue;
            }
            body.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&Value::Object(body))
        .map(Bytes::from)
        .map_err(|e| ClientError::Body(e.to_string()))
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A complete response.
    Ok,
    /// A non-2xx status.
    HttpError,
    /// No first token within `--ttft-timeout`, or no end within
    /// `--request-timeout`.
    Timeout,
    /// The connection could not be made.
    ConnectError,
    /// The response broke off, was garbled, or carried an error event.
    StreamError,
    /// Stopped by the user (Ctrl-C) before it finished.
    Cancelled,
    /// Never sent (over `--max-in-flight` with `--on-cap drop`, or no
    /// request could be built).
    Dropped,
    /// A later turn of a session whose earlier turn failed, not sent
    /// (`--on-turn-failure abort`).
    Skipped,
}

impl Outcome {
    /// The name in the `outcome` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::HttpError => "http_error",
            Self::Timeout => "timeout",
            Self::ConnectError => "connect_error",
            Self::StreamError => "stream_error",
            Self::Cancelled => "cancelled",
            Self::Dropped => "dropped",
            Self::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Timeouts of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// From send to the first content token.
    pub ttft: Option<Duration>,
    /// From send to the end of the response.
    pub request: Option<Duration>,
}

/// What happened to one request, with its instants.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// HTTP status, when a response arrived.
    pub status_code: Option<u16>,
    /// Outcome.
    pub outcome: Outcome,
    /// Error text, trimmed to 512 characters.
    pub error: Option<String>,
    /// First chunk carrying generated content (not the role-only first
    /// chunk of chat streams).
    pub first_token_at: Option<Instant>,
    /// End of the response body, or when the failure was seen.
    pub completed_at: Option<Instant>,
    /// Arrival of each content-bearing chunk.
    pub chunk_times: Vec<Instant>,
    /// Content chunks counted (streaming), or usage's completion tokens.
    pub output_tokens: u32,
    /// Whether the response was read as a stream (`output_tokens` then
    /// counts content chunks).
    pub streamed: bool,
    /// `usage.prompt_tokens`.
    pub usage_prompt_tokens: Option<u32>,
    /// `usage.completion_tokens`.
    pub usage_completion_tokens: Option<u32>,
    /// The reply's text, when the request asked for it to be kept.
    pub reply_text: Option<String>,
}

impl Exchange {
    /// A request just sent: nothing measured yet, `ok` until it fails.
    pub fn started(spec: &RequestSpec) -> Self {
        Self {
            status_code: None,
            outcome: Outcome::Ok,
            error: None,
            first_token_at: None,
            completed_at: None,
            chunk_times: Vec::with_capacity(
                usize::try_from(spec.max_tokens).unwrap_or(0).min(4096),
            ),
            output_tokens: 0,
            streamed: false,
            usage_prompt_tokens: None,
            usage_completion_tokens: None,
            reply_text: spec.keep_reply.then(String::new),
        }
    }
}

/// Error texts are trimmed to this many characters.
pub const ERROR_CHARS: usize = 512;

fn trim(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(ERROR_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// How to reach an endpoint.
#[derive(Clone)]
pub struct EndpointConfig {
    /// Base URL, with or without a trailing `/v1`.
    pub base_url: String,
    /// API to call.
    pub api: Api,
    /// Extra headers, sent as given.
    pub headers: Vec<(String, String)>,
    /// Bearer token (never printed), sent only when `headers` carry no
    /// `Authorization` of their own.
    pub api_key: Option<String>,
    /// HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub http2: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// Longest SSE event or non-streamed body one response may carry; a
    /// longer one ends the request as `stream_error`.
    pub max_response_bytes: usize,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("base_url", &strip_credentials(&self.base_url))
            .field("api", &self.api)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("http2", &self.http2)
            .finish_non_exhaustive()
    }
}

/// An OpenAI-compatible endpoint with a connection pool.
pub struct Endpoint {
    client: reqwest::Client,
    base: reqwest::Url,
    api: Api,
    /// The request URL of each API, by [`Api::index`].
    urls: Vec<reqwest::Url>,
    /// Headers of Anthropic Messages requests: `anthropic-version`, and the
    /// key as `x-api-key`, unless the user gave their own.
    messages_headers: reqwest::header::HeaderMap,
    max_response_bytes: usize,
    /// Plain `http://` over HTTP/1.1: the lean client, with each API's
    /// request head written out once (see [`h1`]).
    h1: Option<Lean>,
}

/// The lean HTTP/1.1 client of an endpoint: its pool and, by
/// [`Api::index`], each API's request head up to the per-request lines.
struct Lean {
    pool: h1::Pool,
    heads: Vec<Vec<u8>>,
}

impl Lean {
    /// The pool and heads for `urls` (one per API, all on one host), with
    /// `headers` on every request and `messages_headers` on Messages ones.
    fn new(
        cfg: &EndpointConfig,
        base: &reqwest::Url,
        urls: &[reqwest::Url],
        headers: &reqwest::header::HeaderMap,
        messages_headers: &reqwest::header::HeaderMap,
    ) -> Self {
        let host = base.host_str().unwrap_or("localhost");
        let port = base.port_or_known_default().unwrap_or(80);
        let host_header = match base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let heads = Api::ALL
            .iter()
            .zip(urls)
            .map(|(api, url)| {
                let mut target = url.path().to_owned();
                if let Some(q) = url.query() {
                    target.push('?');
                    target.push_str(q);
                }
                let mut head = format!("POST {target} HTTP/1.1\r\n").into_bytes();
                let mut line = |name: &str, value: &[u8]| {
                    head.extend_from_slice(name.as_bytes());
                    head.extend_from_slice(b": ");
                    head.extend_from_slice(value);
                    head.extend_from_slice(b"\r\n");
                };
                // The user's own Host, User-Agent or Content-Type wins.
                let defaults = [
                    ("host", host_header.as_str()),
                    (
                        "user-agent",
                        concat!("llm-replay/", env!("CARGO_PKG_VERSION")),
                    ),
                    ("content-type", "application/json"),
                ];
                for (name, value) in defaults {
                    if !headers.contains_key(name) {
                        line(name, value.as_bytes());
                    }
                }
                let extra = (*api == Api::Messages).then_some(messages_headers);
                for (name, value) in headers.iter().chain(extra.into_iter().flatten()) {
                    // Framing and the request id are written per request.
                    if !matches!(
                        name.as_str(),
                        "content-length" | "transfer-encoding" | "connection" | "x-request-id"
                    ) {
                        line(name.as_str(), value.as_bytes());
                    }
                }
                head
            })
            .collect();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Self {
            pool: h1::Pool::new(host, port, cfg.pool_max_idle_per_host, cfg.connect_timeout),
            heads,
        }
    }

    /// The whole request: head, request id, length and body.
    fn request(&self, api: Api, request_id: &str, body: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let head = &self.heads[api.index()];
        let mut req = Vec::with_capacity(head.len() + request_id.len() + 64 + body.len());
        req.extend_from_slice(head);
        req.extend_from_slice(b"x-request-id: ");
        req.extend_from_slice(request_id.as_bytes());
        // Writing to a Vec cannot fail.
        let _ = write!(req, "\r\ncontent-length: {}\r\n\r\n", body.len());
        req.extend_from_slice(body);
        req
    }
}

/// A response being read, from either client.
enum Reply<'a> {
    Reqwest(reqwest::Response),
    Lean(h1::Response<'a>),
}

impl Reply<'_> {
    fn status(&self) -> u16 {
        match self {
            Self::Reqwest(r) => r.status().as_u16(),
            Self::Lean(r) => r.status,
        }
    }

    /// The next piece of the body (`None` at its end), or why it broke.
    async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            Self::Reqwest(r) => r.chunk().await.map_err(|e| error_chain(&e)),
            Self::Lean(r) => r.chunk().await.map_err(|e| e.to_string()),
        }
    }
}

/// The `anthropic-version` sent with Messages requests unless `-H` gives
/// another.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

fn strip_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

impl Endpoint {
    /// Builds the client (connection pool, TLS, headers).
    pub fn new(cfg: EndpointConfig) -> Result<Self, ClientError> {
        // reqwest is built without a default crypto provider; install ring
        // once (an error means one is already installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut base = reqwest::Url::parse(cfg.base_url.trim_end_matches('/')).map_err(|e| {
            ClientError::Config(format!("--url {}: {e}", strip_credentials(&cfg.base_url)))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Config(format!(
                "--url {}: only http and https are supported",
                strip_credentials(&cfg.base_url)
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(ClientError::Config(format!(
                "--url {}: credentials in the URL are not sent; pass a key with --api-key-env or -H 'Authorization: ...'",
                strip_credentials(&cfg.base_url)
            )));
        }
        let path = base.path().trim_end_matches('/').to_owned();
        let path = path.strip_suffix("/v1").unwrap_or(&path).to_owned();
        base.set_path(&path);
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &cfg.headers {
            let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ClientError::Config(format!("--header {name:?}: {e}")))?;
            let v = reqwest::header::HeaderValue::from_str(value)
                .map_err(|e| ClientError::Config(format!("--header {name}: {e}")))?;
            headers.insert(n, v);
        }
        // The user's own Authorization header wins: the key variable is only
        // a default.
        if let Some(key) = cfg
            .api_key
            .as_ref()
            .filter(|_| !headers.contains_key(reqwest::header::AUTHORIZATION))
        {
            let mut v =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    ClientError::Config("the API key has characters a header cannot carry".into())
                })?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let mut messages_headers = reqwest::header::HeaderMap::new();
        if !headers.contains_key("anthropic-version") {
            messages_headers.insert(
                "anthropic-version",
                reqwest::header::HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
        if let Some(key) = cfg
            .api_key
            .as_ref()
            .filter(|_| !headers.contains_key("x-api-key"))
        {
            let mut v = reqwest::header::HeaderValue::from_str(key).map_err(|_| {
                ClientError::Config("the API key has characters a header cannot carry".into())
            })?;
            v.set_sensitive(true);
            messages_headers.insert("x-api-key", v);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers.clone())
            .connect_timeout(cfg.connect_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .tcp_nodelay(true)
            .no_proxy()
            .user_agent(concat!("llm-replay/", env!("CARGO_PKG_VERSION")));
        if cfg.http2 {
            builder = builder.http2_prior_knowledge();
        }
        let client = builder
            .build()
            .map_err(|e| ClientError::Config(format!("building the HTTP client: {e}")))?;
        let join = |p: &str| {
            let mut u = base.clone();
            u.set_path(&format!("{}{p}", base.path().trim_end_matches('/')));
            u
        };
        let urls: Vec<reqwest::Url> = Api::ALL.iter().map(|a| join(a.path())).collect();
        let h1 = (base.scheme() == "http" && !cfg.http2)
            .then(|| Lean::new(&cfg, &base, &urls, &headers, &messages_headers));
        Ok(Self {
            client,
            urls,
            h1,
            messages_headers,
            api: cfg.api,
            base,
            max_response_bytes: cfg.max_response_bytes,
        })
    }

    /// The base URL without credentials.
    pub fn display_url(&self) -> String {
        strip_credentials(self.base.as_str())
    }

    /// The run's default API.
    pub fn api(&self) -> Api {
        self.api
    }

    /// The URL requests of `api` go to.
    pub fn request_url(&self, api: Api) -> &reqwest::Url {
        &self.urls[api.index()]
    }

    /// `path` under the base URL (`/v1/models`, `/tokenize`).
    fn url_at(&self, path: &str) -> reqwest::Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        url
    }

    /// A request outside the replay (the model list, token counts): sent
    /// with a 30 s timeout, its body read up to the response cap and parsed
    /// as JSON; a non-2xx answer is an error carrying its status, except a
    /// 404 when `missing_ok`, which is `Ok(None)`.
    async fn side_call(
        &self,
        request: reqwest::RequestBuilder,
        url: &reqwest::Url,
        missing_ok: bool,
    ) -> Result<Option<Value>, ClientError> {
        let err = |status: Option<u16>, message: String| side_error(url, status, message);
        let resp = request
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| err(None, error_chain(&e)))?;
        let status = resp.status();
        let mut resp = Reply::Reqwest(resp);
        let code = Some(status.as_u16());
        if missing_ok && status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let text = match read_body(&mut resp, self.max_response_bytes).await {
            Ok(b) => b,
            Err(BodyError::TooLong(_)) => {
                return Err(err(
                    code,
                    format!(
                        "longer than --max-response-bytes {}",
                        self.max_response_bytes
                    ),
                ));
            }
            Err(BodyError::Broken(e)) => return Err(err(code, e)),
        };
        if !status.is_success() {
            return Err(err(
                code,
                format!("HTTP {status}: {}", trim(&String::from_utf8_lossy(&text))),
            ));
        }
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| err(code, format!("not JSON: {e}")))
    }

    /// `GET /v1/models`: the model ids.
    pub async fn list_models(&self) -> Result<Vec<String>, ClientError> {
        let url = self.url_at("/v1/models");
        let v = self
            .side_call(self.client.get(url.clone()), &url, false)
            .await?
            .unwrap_or_default();
        Ok(v.get("data")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `POST {base}/tokenize` (served at the root by vLLM and llama.cpp):
    /// how many tokens the server makes of `text` as a prompt of `model`,
    /// special tokens it adds (BOS) included. vLLM's body
    /// `{"model", "prompt"}` first (it answers `count`); on 404, or an
    /// answer without `count` (llama.cpp answers a body without `content`
    /// with no tokens), llama.cpp's `{"content"}` with `add_special` (its
    /// default leaves BOS out, which completions count). `Ok(None)`: the
    /// server has no `/tokenize` (404 to both).
    pub async fn count_tokens(&self, model: &str, text: &str) -> Result<Option<u64>, ClientError> {
        let url = self.url_at("/tokenize");
        let post =
            |body: Value| self.side_call(self.client.post(url.clone()).json(&body), &url, true);
        let vllm = post(json!({"model": model, "prompt": text})).await?;
        if let Some(n) = vllm.as_ref().and_then(|v| v.get("count")?.as_u64()) {
            return Ok(Some(n));
        }
        match post(json!({"content": text, "add_special": true})).await? {
            None if vllm.is_none() => Ok(None),
            None => Err(side_error(
                &url,
                Some(404),
                "answered vLLM's body without a count, and llama.cpp's with 404".into(),
            )),
            Some(v) => v
                .get("tokens")
                .and_then(Value::as_array)
                .map(|t| Some(t.len() as u64))
                .ok_or_else(|| {
                    side_error(
                        &url,
                        None,
                        format!("no count or tokens in {}", trim(&v.to_string())),
                    )
                }),
        }
    }

    /// Sends one request and measures it; never panics, never retries.
    ///
    /// However it ends (a timeout, `cancel`, a broken stream), the exchange
    /// keeps what was measured until then: status, first token, chunk times
    /// and tokens.
    pub async fn send(
        &self,
        spec: &RequestSpec,
        body: Bytes,
        timeouts: &Timeouts,
        cancel: &CancellationToken,
    ) -> Exchange {
        let sent = Instant::now();
        let mut ex = Exchange::started(spec);
        let deadline = timeouts.request.map(|limit| sent + limit);
        let cut = {
            let exchange = self.exchange(spec, body, timeouts, sent, &mut ex);
            tokio::select! {
                biased;
                () = exchange => None,
                () = cancel.cancelled() => Some((
                    Outcome::Cancelled,
                    "cancelled before the response finished".to_owned(),
                )),
                () = sleep_until(deadline) => Some((
                    Outcome::Timeout,
                    format!(
                        "no complete response within --request-timeout {}",
                        timeouts.request.map(humantime::format_duration).map(|d| d.to_string()).unwrap_or_default()
                    ),
                )),
            }
        };
        if let Some((outcome, why)) = cut {
            fail(&mut ex, outcome, &why);
        }
        ex
    }

    async fn exchange(
        &self,
        spec: &RequestSpec,
        body: Bytes,
        timeouts: &Timeouts,
        sent: Instant,
        ex: &mut Exchange,
    ) {
        let request = async {
            if let Some(lean) = &self.h1 {
                if !h1::valid_header_value(&spec.request_id) {
                    return Err((
                        Outcome::StreamError,
                        format!(
                            "request id {:?} cannot be sent as X-Request-Id (a control character)",
                            spec.request_id
                        ),
                    ));
                }
                let req = lean.request(spec.api, &spec.request_id, &body);
                return match lean.pool.send(&req).await {
                    Ok(r) => Ok(Reply::Lean(r)),
                    Err(e @ h1::H1Error::Connect(_)) => Err((Outcome::ConnectError, e.to_string())),
                    Err(e @ h1::H1Error::Broken(_)) => Err((Outcome::StreamError, e.to_string())),
                };
            }
            let mut request = self
                .client
                .post(self.request_url(spec.api).clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("x-request-id", &spec.request_id);
            if spec.api == Api::Messages {
                request = request.headers(self.messages_headers.clone());
            }
            request
                .body(body)
                .send()
                .await
                .map(Reply::Reqwest)
                .map_err(|e| {
                    let outcome = if e.is_connect() {
                        Outcome::ConnectError
                    } else if e.is_timeout() {
                        Outcome::Timeout
                    } else {
                        Outcome::StreamError
                    };
                    (outcome, error_chain(&e))
                })
        };
        let ttft_deadline = timeouts.ttft.map(|t| sent + t);
        let ttft_timeout = |ex: &mut Exchange| {
            let limit = timeouts
                .ttft
                .map(|d| humantime::format_duration(d).to_string())
                .unwrap_or_default();
            fail(
                ex,
                Outcome::Timeout,
                &format!("no first token within --ttft-timeout {limit}"),
            );
        };
        let response = match ttft_deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, request).await {
                Ok(r) => r,
                Err(_) => return ttft_timeout(ex),
            },
            None => request.await,
        };
        let mut response = match response {
            Ok(r) => r,
            Err((outcome, why)) => return fail(ex, outcome, &why),
        };
        let status = response.status();
        ex.status_code = Some(status);
        if !(200..300).contains(&status) {
            // Only the start of an error body is kept (and it is trimmed).
            let text = match read_body(&mut response, ERROR_BODY_BYTES.min(self.max_response_bytes))
                .await
            {
                Ok(b) | Err(BodyError::TooLong(b)) => String::from_utf8_lossy(&b).into_owned(),
                Err(BodyError::Broken(_)) => String::new(),
            };
            return fail(ex, Outcome::HttpError, &format!("HTTP {status}: {text}"));
        }
        if !spec.stream {
            let body = read_body(&mut response, self.max_response_bytes).await;
            return finish_whole(spec, ex, body, self.max_response_bytes);
        }
        ex.streamed = true;
        let mut stream = StreamState::new(spec.api, self.max_response_bytes);
        loop {
            let next = response.chunk();
            let chunk = match (ex.first_token_at, ttft_deadline) {
                (None, Some(deadline)) => match tokio::time::timeout_at(deadline, next).await {
                    Ok(c) => c,
                    Err(_) => return ttft_timeout(ex),
                },
                _ => next.await,
            };
            let bytes = match chunk {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    return fail(ex, Outcome::StreamError, &format!("stream broke off: {e}"));
                }
            };
            if let Err((outcome, why)) = stream.push(ex, &bytes, Instant::now()) {
                return fail(ex, outcome, &why);
            }
        }
        stream.finish(ex);
    }
}

/// A streamed response being read: SSE events to chunks, chunks to the
/// exchange's instants and counts.
struct StreamState {
    api: Api,
    parser: SseParser,
    events: Vec<SseEvent>,
    done: bool,
    finished: bool,
    max_response_bytes: usize,
}

impl StreamState {
    fn new(api: Api, max_response_bytes: usize) -> Self {
        Self {
            api,
            parser: SseParser::new(),
            events: Vec::new(),
            done: false,
            finished: false,
            max_response_bytes,
        }
    }

    /// Takes body bytes that arrived at `now`; an error ends the request.
    fn push(
        &mut self,
        ex: &mut Exchange,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), (Outcome, String)> {
        self.parser.push(bytes, &mut self.events);
        for event in self.events.drain(..) {
            if event.data.trim() == "[DONE]" {
                self.done = true;
                continue;
            }
            let reply = ex.reply_text.as_mut();
            let parsed = match self.api {
                Api::Responses => parse_responses_event(&event.data, reply),
                Api::Messages => parse_messages_event(&event.data, reply),
                Api::Completions | Api::Chat | Api::Embeddings => {
                    parse_chunk_into(&event.data, reply)
                }
            };
            match parsed {
                Ok(info) => {
                    self.done |= info.done;
                    if let Some(err) = info.error {
                        return Err((Outcome::StreamError, format!("error event: {err}")));
                    }
                    if info.has_content {
                        if ex.first_token_at.is_none() {
                            ex.first_token_at = Some(now);
                        }
                        ex.chunk_times.push(now);
                        ex.output_tokens += 1;
                    }
                    self.finished |= info.finished;
                    if info.prompt_tokens.is_some() {
                        ex.usage_prompt_tokens = info.prompt_tokens;
                    }
                    if info.completion_tokens.is_some() {
                        ex.usage_completion_tokens = info.completion_tokens;
                    }
                }
                Err(e) => {
                    return Err((Outcome::StreamError, format!("garbled SSE data: {e}")));
                }
            }
        }
        // One event (or a line without its end) may not outgrow the cap:
        // a server that never ends a line must not grow memory forever.
        if self.parser.pending_bytes() > self.max_response_bytes {
            return Err((
                Outcome::StreamError,
                format!(
                    "an SSE event longer than --max-response-bytes {} (no line end in sight)",
                    self.max_response_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The body ended: a stream must end with `[DONE]` (OpenAI, vLLM,
    /// SGLang, llama.cpp and TGI all send it), or for Responses and
    /// Messages with their closing event; one that stops without it, or
    /// mid-event, was cut.
    fn finish(self, ex: &mut Exchange) {
        ex.completed_at = Some(Instant::now());
        if !self.done || self.parser.has_partial_event() {
            let why = if self.finished {
                match self.api {
                    Api::Responses => "stream ended without response.completed",
                    Api::Messages => "stream ended without message_stop",
                    Api::Completions | Api::Chat | Api::Embeddings => "stream ended without [DONE]",
                }
            } else {
                "stream ended before the response finished (no finish_reason, no [DONE])"
            };
            fail(ex, Outcome::StreamError, why);
        }
    }
}

/// A whole (non-streamed) response body: usage, the reply's text, and the
/// first token, seen only with the whole response (never for embeddings,
/// which generate none).
fn finish_whole(
    spec: &RequestSpec,
    ex: &mut Exchange,
    body: Result<Vec<u8>, BodyError>,
    max_response_bytes: usize,
) {
    let now = Instant::now();
    ex.completed_at = Some(now);
    let parsed = match body {
        Ok(b) => {
            serde_json::from_slice::<Value>(&b).map_err(|e| format!("response is not JSON: {e}"))
        }
        Err(BodyError::TooLong(_)) => Err(format!(
            "response body longer than --max-response-bytes {max_response_bytes}"
        )),
        Err(BodyError::Broken(e)) => Err(e),
    };
    let v = match parsed {
        Ok(v) => v,
        Err(e) => return fail(ex, Outcome::StreamError, &e),
    };
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let text = err
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| err.to_string(), str::to_owned);
        return fail(
            ex,
            Outcome::StreamError,
            &format!("error in the response: {text}"),
        );
    }
    let usage = v.get("usage");
    let get = |k: &str| {
        usage
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let (prompt_key, completion_key) = match spec.api {
        Api::Completions | Api::Chat | Api::Embeddings => ("prompt_tokens", "completion_tokens"),
        Api::Responses | Api::Messages => ("input_tokens", "output_tokens"),
    };
    ex.usage_prompt_tokens = get(prompt_key);
    if spec.api == Api::Embeddings {
        let inputs = match &spec.prompt {
            Prompt::Texts(t) => t.len(),
            Prompt::TokenBatch(t) => t.len(),
            Prompt::Text(_) | Prompt::Tokens(_) | Prompt::Messages(_) => 1,
        };
        let got = v.get("data").and_then(Value::as_array).map(Vec::len);
        if got != Some(inputs) {
            let got = got.map_or_else(|| "no data list".to_owned(), |n| n.to_string());
            fail(
                ex,
                Outcome::StreamError,
                &format!("{inputs} inputs sent, {got} embeddings returned"),
            );
        }
        return;
    }
    ex.usage_completion_tokens = get(completion_key);
    ex.output_tokens = ex.usage_completion_tokens.unwrap_or(0);
    if let Some(reply) = ex.reply_text.as_mut() {
        reply.push_str(&whole_reply_text(spec.api, &v));
    }
    ex.first_token_at = Some(now);
}

/// The reply text of a whole response.
fn whole_reply_text(api: Api, v: &Value) -> String {
    let texts = |parts: &Value, kind: &str| -> String {
        parts
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["type"] == kind)
            .filter_map(|p| p["text"].as_str())
            .collect()
    };
    match api {
        Api::Completions | Api::Chat => {
            let choice = &v["choices"][0];
            choice["text"]
                .as_str()
                .or_else(|| choice["message"]["content"].as_str())
                .unwrap_or_default()
                .to_owned()
        }
        Api::Responses => v["output"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|item| item["type"] == "message")
            .map(|item| texts(&item["content"], "output_text"))
            .collect(),
        Api::Messages => texts(&v["content"], "text"),
        Api::Embeddings => String::new(),
    }
}

/// At most this much of an error body is read.
const ERROR_BODY_BYTES: usize = 64 << 10;

/// The default of `--max-response-bytes`.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 << 20;

enum BodyError {
    /// The first `cap` bytes (the rest was not read).
    TooLong(Vec<u8>),
    /// The body broke off.
    Broken(String),
}

/// Reads a body of at most `cap` bytes.
async fn read_body(response: &mut Reply<'_>, cap: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(b)) => {
                if out.len() + b.len() > cap {
                    let room = cap - out.len();
                    out.extend_from_slice(&b[..room]);
                    return Err(BodyError::TooLong(out));
                }
                out.extend_from_slice(&b);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(BodyError::Broken(e)),
        }
    }
}

/// The error of a request outside the replay, naming its URL without
/// credentials.
fn side_error(url: &reqwest::Url, status: Option<u16>, message: String) -> ClientError {
    ClientError::Request {
        url: strip_credentials(url.as_str()),
        status,
        message,
    }
}

/// Sleeps until `deadline`; never resolves without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Ends `ex` as `outcome`, keeping what it measured.
fn fail(ex: &mut Exchange, outcome: Outcome, why: &str) {
    ex.outcome = outcome;
    ex.error = Some(trim(why));
    if ex.completed_at.is_none() {
        ex.completed_at = Some(Instant::now());
    }
}

/// The error and its sources, one line (reqwest's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(prompt: Prompt) -> RequestSpec {
        RequestSpec {
            request_id: "r1".into(),
            api: Api::Completions,
            model: "m".into(),
            prompt,
            max_tokens: 16,
            stream: true,
            force_output_len: false,
            extra_body: None,
            keep_reply: false,
        }
    }

    fn body(api: Api, s: &RequestSpec) -> Value {
        serde_json::from_slice(&build_body(&RequestSpec { api, ..s.clone() }).unwrap()).unwrap()
    }

    #[test]
    fn completions_body_with_text_and_usage_in_stream() {
        let v = body(Api::Completions, &spec(Prompt::Text(" a b".into())));
        assert_eq!(v["prompt"], " a b");
        assert_eq!(v["max_tokens"], 16);
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(v.get("ignore_eos").is_none());
    }

    #[test]
    fn token_prompts_and_forced_length() {
        let mut s = spec(Prompt::Tokens(vec![1, 2, 3]));
        s.force_output_len = true;
        s.stream = false;
        let v = body(Api::Completions, &s);
        assert_eq!(v["prompt"], json!([1, 2, 3]));
        assert_eq!(v["ignore_eos"], true);
        assert_eq!(v["min_tokens"], 16);
        assert!(v.get("stream_options").is_none());
        assert!(
            build_body(&RequestSpec {
                api: Api::Chat,
                ..s
            })
            .is_err()
        );
    }

    #[test]
    fn chat_body_is_one_user_message() {
        let v = body(Api::Chat, &spec(Prompt::Text("hi".into())));
        assert_eq!(v["messages"], json!([{"role": "user", "content": "hi"}]));
    }

    #[test]
    fn urls_normalise_and_hide_credentials() {
        let cfg = |url: &str| EndpointConfig {
            base_url: url.into(),
            api: Api::Chat,
            headers: vec![],
            api_key: Some("sk-secret".into()),
            http2: false,
            connect_timeout: Duration::from_secs(1),
            pool_max_idle_per_host: 1,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        };
        let e = Endpoint::new(cfg("http://127.0.0.1:8000/v1/")).unwrap();
        assert_eq!(e.display_url(), "http://127.0.0.1:8000");
        assert_eq!(e.request_url(Api::Chat).path(), "/v1/chat/completions");
        assert_eq!(e.request_url(Api::Embeddings).path(), "/v1/embeddings");
        assert_eq!(e.request_url(Api::Messages).path(), "/v1/messages");
        assert_eq!(
            e.messages_headers
                .get("x-api-key")
                .map(|v| v.is_sensitive()),
            Some(true)
        );
        assert!(!format!("{:?}", cfg("http://x")).contains("sk-secret"));
        assert!(Endpoint::new(cfg("ftp://x")).is_err());
        // Credentials in the URL are refused, and the message hides them.
        let err = Endpoint::new(cfg("http://user:pw@127.0.0.1:8000/v1/"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("credentials in the URL"), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }

    #[test]
    fn errors_are_trimmed() {
        let long = "x".repeat(2_000);
        assert_eq!(trim(&long).chars().count(), ERROR_CHARS + 1);
    }
}
