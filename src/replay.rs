//! Open-loop replay: every scheduled request leaves at its time however slow
//! the server is, and becomes exactly one result row.
//!
//! Threads and tasks of a run:
//! - a *producer* thread builds request bodies (prompt synthesis and its
//!   re-tokenizing check) ahead of time, into a bounded channel;
//! - a *dispatcher* thread paces to each absolute deadline with the OS's
//!   high-resolution sleep ([`pacer::ThreadPacer`]) and spawns the request
//!   onto the main runtime; it never waits for a response;
//! - request tasks send, stream, time, and hand a plain row to
//! - the *recorder* thread, which owns the results file and the summary.
//!
//! One shutdown path: Ctrl-C (or the end of the schedule) stops dispatch;
//! requests not yet sent become `cancelled` rows; in-flight requests get
//! `--grace` to finish, then are cancelled; the recorder closes the file
//! last.

pub mod dispatch;
pub mod pacer;
pub mod recorder;
pub mod scrape;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{ArrivalsArg, ReplayArgs, ScheduleArgs, TargetArgs};
use crate::client::{Api, Endpoint, EndpointConfig, Prompt, RequestSpec, Timeouts};
use crate::prompt::{PromptMode, PromptSynth};
use crate::record::ResultsWriter;
use crate::report::summary::{FidelityLimits, Slo, SummaryBuilder};
use crate::schedule::{self, Arrivals, Limit, ScheduleSpec, ScheduledRequest};
use crate::tokenize::{Tokenizer, TokenizerSpec};
use crate::trace::{InputFile, Trace, TraceRecord};
use dispatch::{CapPolicy, Counters, Phases, Prepared, RunClock, Shared};
pub use recorder::Recorded;

/// Version of the results format written by this build.
pub const RESULTS_VERSION: u32 = 1;

/// Turns the schedule flags into a [`ScheduleSpec`]: `--rate` gives a rate
/// schedule; otherwise the recorded times (which the trace must have).
pub fn schedule_spec(args: &ScheduleArgs) -> anyhow::Result<ScheduleSpec> {
    let us = |d: Option<Duration>| d.map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let spec = match args.rate {
        Some(rate) => ScheduleSpec::Rate {
            rate,
            arrivals: match args.arrivals {
                ArrivalsArg::Poisson => Arrivals::Poisson,
                ArrivalsArg::Gamma => Arrivals::Gamma {
                    shape: args.burstiness,
                },
                ArrivalsArg::Constant => Arrivals::Constant,
            },
            order: args.order,
            limit: Limit {
                duration_ns: args
                    .duration
                    .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
                requests: args.requests,
            },
            seed: args.seed,
        },
        None => {
            if args.duration.is_some() {
                bail!(
                    "--duration applies to --rate schedules; for recorded times use --start/--end"
                );
            }
            ScheduleSpec::Recorded {
                speedup: args.speedup,
                start_us: us(args.start),
                end_us: us(args.end),
                spread_us: us(args.spread),
                requests: args.requests,
            }
        }
    };
    spec.validate()?;
    Ok(spec)
}

/// A connected target: the endpoint, the model, and how bodies are built.
pub struct Target {
    endpoint: Arc<Endpoint>,
    builder: Arc<RequestBuilder>,
    timeouts: Timeouts,
    cap: Option<(usize, CapPolicy)>,
    scrape: Option<String>,
    config_json: serde_json::Value,
    /// Keeps the embedded simulator alive while the target is.
    sim: Option<crate::sim::SimServer>,
}

impl Target {
    /// Connects to `args.url` (or starts the embedded simulator), picks the
    /// model, and loads the prompt tokenizer.
    pub async fn connect(args: &TargetArgs, trace: &Trace, seed: u64) -> anyhow::Result<Self> {
        if args.prompts == PromptMode::Tokens && args.api == Api::Chat {
            bail!("--prompts tokens needs --api completions (chat takes text only)");
        }
        if args.prompts == PromptMode::Original
            && let Some(r) = trace.records.iter().find(|r| r.prompt_text.is_none())
        {
            bail!(
                "--prompts original: trace row {:?} has no prompt_text; ingest with --keep-text, or use --prompts synthetic",
                r.request_id
            );
        }
        let (base_url, sim) = match &args.url {
            Some(url) => (url.clone(), None),
            None => {
                let bind = "127.0.0.1:0".parse().context("loopback address")?;
                let server = crate::sim::start(args.sim.clone(), bind)
                    .await
                    .context("starting the embedded simulated endpoint")?;
                (server.url(), Some(server))
            }
        };
        let mut headers = Vec::new();
        for h in &args.headers {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("--header {h:?}: expected `Name: value`"))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let api_key = std::env::var(&args.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        let endpoint = Endpoint::new(EndpointConfig {
            base_url,
            api: args.api,
            headers: headers.clone(),
            api_key,
            http2: args.http2,
            connect_timeout: args.connect_timeout,
            pool_max_idle_per_host: 4_096,
        })?;
        let model = match &args.model {
            Some(m) => m.clone(),
            None => endpoint
                .list_models()
                .await
                .with_context(|| {
                    format!(
                        "asking {} for its models (or pass --model)",
                        endpoint.display_url()
                    )
                })?
                .into_iter()
                .next()
                .with_context(|| {
                    format!("{} lists no models: pass --model", endpoint.display_url())
                })?,
        };
        let synth = match args.prompts {
            PromptMode::Original => None,
            PromptMode::Synthetic | PromptMode::Tokens => {
                let spec = prompt_tokenizer(args.tokenizer.as_ref(), trace);
                let tokenizer = Tokenizer::load(&spec)?;
                let block = trace.metadata.prefix_block_size.unwrap_or(512);
                Some(Arc::new(PromptSynth::new(tokenizer, block, seed)?))
            }
        };
        let config_json = json!({
            "url": endpoint.display_url(),
            "embedded_simulator": sim.is_some(),
            "api": args.api,
            "model": model,
            "headers": headers.iter().map(|(n, _)| format!("{n}: <redacted>")).collect::<Vec<_>>(),
            "api_key_env": args.api_key_env,
            "http2": args.http2,
            "connect_timeout": humantime::format_duration(args.connect_timeout).to_string(),
            "ttft_timeout": args.ttft_timeout.map(|d| humantime::format_duration(d).to_string()),
            "request_timeout": humantime::format_duration(args.request_timeout).to_string(),
            "stream": !args.no_stream,
            "force_output_len": args.force_output_len,
            "prompts": format!("{:?}", args.prompts).to_lowercase(),
            "tokenizer": synth.as_ref().map(|s: &Arc<PromptSynth>| s.tokenizer().name()),
            "max_in_flight": args.max_in_flight,
            "on_cap": args.on_cap,
            "sim": sim.is_some().then(|| format!("{:?}", args.sim)),
        });
        Ok(Self {
            endpoint: Arc::new(endpoint),
            builder: Arc::new(RequestBuilder {
                model,
                api: args.api,
                stream: !args.no_stream,
                force_output_len: args.force_output_len,
                prompts: args.prompts,
                synth,
            }),
            timeouts: Timeouts {
                connect: args.connect_timeout,
                ttft: args.ttft_timeout,
                request: Some(args.request_timeout),
            },
            cap: args.max_in_flight.map(|n| (n, args.on_cap)),
            scrape: args.scrape.clone(),
            config_json,
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

/// Builds request bodies; shared with the producer thread.
struct RequestBuilder {
    model: String,
    api: Api,
    stream: bool,
    force_output_len: bool,
    prompts: PromptMode,
    synth: Option<Arc<PromptSynth>>,
}

impl RequestBuilder {
    /// Builds the request for one scheduled trace row.
    fn prepare(&self, record: &TraceRecord, sched: ScheduledRequest) -> Prepared {
        let request = self.build(record, sched.repeat);
        Prepared {
            sched,
            request_id: record.request_id.clone(),
            input_tokens: record.input_tokens,
            output_tokens_expected: record.output_tokens,
            request,
        }
    }

    fn build(&self, record: &TraceRecord, repeat: u32) -> Result<(RequestSpec, Bytes), String> {
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
        let request_id = if repeat == 0 {
            record.request_id.clone()
        } else {
            format!("{}#{repeat}", record.request_id)
        };
        let spec = RequestSpec {
            request_id,
            model: self.model.clone(),
            prompt,
            // Servers refuse max_tokens 0; a trace row that recorded no
            // output (a failed request) still asks for one token, and
            // `output_tokens_expected` keeps the trace's value.
            max_tokens: u32::try_from(record.output_tokens.max(1)).unwrap_or(1),
            stream: self.stream,
            force_output_len: self.force_output_len,
            extra_body: None,
        };
        let body =
            crate::client::build_body(self.api, &spec).map_err(|e| format!("request body: {e}"))?;
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

/// One run's options beyond the target.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The schedule.
    pub schedule: ScheduleSpec,
    /// Results file (created new).
    pub output: PathBuf,
    /// Goodput objectives.
    pub slo: Option<Slo>,
    /// Grace for in-flight requests after a stop.
    pub grace: Duration,
    /// When the generator counts as the bottleneck.
    pub limits: FidelityLimits,
    /// Warm-up and cool-down boundaries.
    pub phases: Phases,
    /// Show a live progress line (on a terminal).
    pub progress: bool,
    /// Extra key-values for the results metadata (sweep step, ...).
    pub extra_metadata: Vec<(String, String)>,
}

/// Replays `trace` against `target` under `opts`. `stop` ends dispatch early
/// (Ctrl-C); the results are complete either way.
pub async fn run(
    trace: Arc<Trace>,
    target: &Target,
    opts: RunOptions,
    stop: CancellationToken,
) -> anyhow::Result<Recorded> {
    let sched = schedule::build(&opts.schedule, &trace.records)?;
    let target_rate = match opts.schedule {
        ScheduleSpec::Rate { rate, .. } => Some(rate),
        ScheduleSpec::Recorded { .. } => None,
    };
    let seed = match opts.schedule {
        ScheduleSpec::Rate { seed, .. } => seed,
        ScheduleSpec::Recorded { .. } => 0,
    };
    let trace_file = InputFile::describe(&trace.path)
        .with_context(|| format!("hashing {}", trace.path.display()))?;
    let started_at = chrono::Utc::now();
    let mut kv = vec![
        (
            "llm_replay.results_version".to_owned(),
            RESULTS_VERSION.to_string(),
        ),
        (
            "llm_replay.tool_version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
        ("llm_replay.seed".to_owned(), seed.to_string()),
        ("llm_replay.trace_file".to_owned(), trace_file.name.clone()),
        (
            "llm_replay.trace_sha256".to_owned(),
            trace_file.sha256.clone(),
        ),
        (
            "llm_replay.trace_rows".to_owned(),
            trace.records.len().to_string(),
        ),
        ("llm_replay.target_url".to_owned(), target.display_url()),
        ("llm_replay.started_at".to_owned(), started_at.to_rfc3339()),
        (
            "llm_replay.requests_scheduled".to_owned(),
            sched.len().to_string(),
        ),
        (
            "llm_replay.config".to_owned(),
            json!({
                "target": target.config_json,
                "schedule": opts.schedule,
                "slo": opts.slo.map(|s| s.to_string()),
                "grace": humantime::format_duration(opts.grace).to_string(),
            })
            .to_string(),
        ),
    ];
    kv.extend(opts.extra_metadata.iter().cloned());
    let writer = ResultsWriter::create(&opts.output, &kv)?;
    let (rows_tx, rows_rx) = mpsc::unbounded_channel();
    let summary = SummaryBuilder::new(opts.slo, opts.limits, target_rate, true);
    let recorder = recorder::Recorder::start(writer, opts.output.clone(), rows_rx, summary)?;

    // The producer runs ahead of the dispatcher by up to this many requests.
    let (prep_tx, prep_rx) = std::sync::mpsc::sync_channel::<Prepared>(4_096);
    let producer = {
        let trace = trace.clone();
        let stop = stop.clone();
        let builder = target.builder.clone();
        std::thread::Builder::new()
            .name("llm-replay-prompts".into())
            .spawn(move || {
                for s in sched {
                    let Some(record) = trace.records.get(s.trace_index as usize) else {
                        continue;
                    };
                    let prepared = if stop.is_cancelled() {
                        // Dispatch has stopped: these become cancelled rows;
                        // building their prompts would be wasted work.
                        Prepared {
                            sched: s,
                            request_id: record.request_id.clone(),
                            input_tokens: record.input_tokens,
                            output_tokens_expected: record.output_tokens,
                            request: Err("cancelled".into()),
                        }
                    } else {
                        builder.prepare(record, s)
                    };
                    if prep_tx.send(prepared).is_err() {
                        break;
                    }
                }
            })?
    };

    let scrape_stop = CancellationToken::new();
    let scraper = target
        .scrape
        .clone()
        .map(|url| tokio::spawn(scrape::run(url, scrape_stop.clone())));
    let cancel = CancellationToken::new();
    let shared = Arc::new(Shared {
        transport: EndpointRef(target.endpoint.clone()),
        timeouts: target.timeouts.clone(),
        cap: target
            .cap
            .map(|(n, policy)| (Arc::new(Semaphore::new(n)), policy)),
        rows: rows_tx,
        // A short lead lets the producer fill its queue before t=0.
        clock: RunClock::starting_in(Duration::from_millis(200)),
        cancel: cancel.clone(),
        counters: Counters::default(),
        phases: opts.phases,
    });
    let tasks = TaskTracker::new();
    let dispatcher = {
        let shared = shared.clone();
        let stop = stop.clone();
        let tasks = tasks.clone();
        let handle = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("llm-replay-dispatch".into())
            .spawn(move || -> anyhow::Result<u64> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                Ok(rt.block_on(dispatch::dispatch(
                    shared,
                    prep_rx,
                    pacer::ThreadPacer,
                    stop,
                    tasks,
                    handle,
                )))
            })?
    };

    let progress = (opts.progress && std::io::stderr().is_terminal())
        .then(|| tokio::spawn(progress_line(shared.clone())));

    let dispatched = tokio::task::spawn_blocking(move || dispatcher.join())
        .await
        .context("joining the dispatcher")?
        .map_err(|_| anyhow::anyhow!("the dispatcher thread panicked"))??;
    tracing::debug!(dispatched, "dispatch finished");
    tasks.close();
    if stop.is_cancelled() {
        if tokio::time::timeout(opts.grace, tasks.wait())
            .await
            .is_err()
        {
            cancel.cancel();
            tasks.wait().await;
        }
    } else {
        // The schedule ended: in-flight requests finish (each is bounded by
        // --request-timeout), unless the user stops the run meanwhile.
        tokio::select! {
            () = tasks.wait() => {}
            () = stop.cancelled() => {
                if tokio::time::timeout(opts.grace, tasks.wait()).await.is_err() {
                    cancel.cancel();
                    tasks.wait().await;
                }
            }
        }
    }
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    let _ = producer.join();
    drop(shared);
    let recorded = tokio::task::spawn_blocking(move || recorder.join())
        .await
        .context("joining the recorder")??;
    if let Some(task) = scraper {
        scrape_stop.cancel();
        let (samples, failures) = task.await.context("joining the metrics scraper")?;
        let path = scrape::path_for(&opts.output);
        scrape::write(&path, &samples).with_context(|| format!("writing {}", path.display()))?;
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

/// An endpoint shared by the run's tasks.
struct EndpointRef(Arc<Endpoint>);

impl dispatch::Transport for EndpointRef {
    fn send(
        &self,
        spec: &RequestSpec,
        body: Bytes,
        timeouts: &Timeouts,
    ) -> impl std::future::Future<Output = crate::client::Exchange> + Send {
        self.0.send(spec, body, timeouts)
    }
}

async fn progress_line<T: dispatch::Transport>(shared: Arc<Shared<T>>) {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_sent = 0u64;
    loop {
        tick.tick().await;
        let c = &shared.counters;
        let sent = c.sent.load(Ordering::Relaxed);
        eprint!(
            "\r[{:>6.1}s] sent {sent} | in flight {} | done {} | errors {} | {} req/s   ",
            start.elapsed().as_secs_f64(),
            c.in_flight.load(Ordering::Relaxed),
            c.done.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
            sent - last_sent,
        );
        last_sent = sent;
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

/// Runs `llm-replay replay`.
pub async fn command(args: ReplayArgs) -> anyhow::Result<std::process::ExitCode> {
    let trace = Arc::new(crate::trace::read_trace(&args.trace)?);
    let spec = schedule_spec(&args.schedule)?;
    let target = Target::connect(&args.target, &trace, args.schedule.seed).await?;
    let output = args.output.clone().unwrap_or_else(default_output);
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping: no new requests; in-flight requests get the grace period");
            on_signal.cancel();
        }
    });
    eprintln!(
        "replaying {} ({} rows) against {}{}, model {}",
        args.trace.display(),
        trace.records.len(),
        target.display_url(),
        if target.is_embedded() {
            " (embedded simulator)"
        } else {
            ""
        },
        target.model()
    );
    let opts = RunOptions {
        schedule: spec,
        output,
        slo: args.slo,
        grace: args.grace,
        limits: FidelityLimits {
            max_p99_lag_ms: args.max_send_lag.as_secs_f64() * 1e3,
            ..FidelityLimits::default()
        },
        phases: Phases::default(),
        progress: !args.quiet,
        extra_metadata: Vec::new(),
    };
    let recorded = run(trace, &target, opts, stop).await?;
    crate::stdout(format_args!("{}", recorded.summary));
    crate::stdout(format_args!(
        "results       {} ({} rows)\n",
        recorded.path.display(),
        recorded.rows
    ));
    if let Some(path) = &args.summary_json {
        write_json(path, &recorded.summary)?;
        crate::stdout(format_args!("summary json  {}\n", path.display()));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
