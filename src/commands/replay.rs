//! `llm-replay replay`: flags -> [`TargetConfig`], [`ScheduleSpec`] and
//! [`RunOptions`] -> one [`replay::run`] -> summary, results path, exit code.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use super::{Output, UsageError, claim_outputs, run_exit_code, stdout, watch_signals};
use crate::cli::{ArrivalsArg, LiveArgs, ReplayArgs, ScheduleArgs, TargetArgs};
use crate::client::Timeouts;
use crate::record::summary::{FidelityLimits, FirstError};
use crate::replay::dispatch::{ClosedLoop, Phases};
use crate::replay::progress::{Exporter, Monitor};
use crate::replay::{self, RunOptions, Shutdown, TargetConfig};
use crate::schedule::{Arrivals, Limit, ScheduleSpec, StageLoad, Stages};

/// The target flags as a [`TargetConfig`].
pub fn target_config(args: &TargetArgs) -> anyhow::Result<TargetConfig> {
    if args.realtime {
        crate::replay::check_realtime()?;
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            bail!(UsageError(format!(
                "--header {:?}: expected `Name: value`",
                super::clip(h, 80)
            )));
        };
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            bail!(UsageError(format!(
                "--header {:?}: the name before ':' must be one word",
                super::clip(name, 80)
            )));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    if let Some(n) = args.check_tokens {
        if args.url.is_none() {
            bail!(UsageError(format!(
                "--check-tokens {n} asks a real server to count prompts: give --url (the embedded simulator counts with --tokenizer itself)"
            )));
        }
        if crate::prompt::PromptMode::from(args.prompts) == crate::prompt::PromptMode::Original {
            bail!(UsageError(format!(
                "--check-tokens {n} checks synthetic prompts: use --prompts synthetic or tokens"
            )));
        }
    }
    Ok(TargetConfig {
        url: args.url.clone(),
        api: args.api.into(),
        model: args.model.clone(),
        headers,
        api_key_env: args.api_key_env.clone(),
        http2: args.http2,
        timeouts: Timeouts {
            connect: args.connect_timeout,
            ttft: args.ttft_timeout,
            request: Some(args.request_timeout),
        },
        max_response_bytes: args.max_response_bytes,
        stream: !args.no_stream,
        force_output_len: args.force_output_len,
        prompts: args.prompts.into(),
        tokenizer: args.tokenizer.clone(),
        cap: args.max_in_flight.map(|n| (n, args.on_cap.into())),
        max_connections: args.max_connections,
        engine_threads: args.engine_threads,
        realtime: args.realtime,
        extra_body: extra_body(args)?.map(Arc::new),
        routing: crate::replay::Routing {
            api_map: args.api_map.clone().map(|m| m.0).unwrap_or_default(),
            model_map: args.model_map.clone().map(|m| m.0).unwrap_or_default(),
            models: args.models.clone().map(|m| m.0).unwrap_or_default(),
        },
        embedding_batch: args.embedding_batch,
        scrape: args.scrape.clone(),
        preflight: !args.no_preflight,
        check_tokens: args.check_tokens,
        sim: args.sim.clone().into(),
    })
}

/// The prompt salt of a run: none with `--same-prompts`, the value of
/// `--prompt-salt`, else a new one from the clock (never 0).
pub fn prompt_salt(args: &TargetArgs) -> u64 {
    if args.same_prompts {
        return 0;
    }
    args.prompt_salt.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        crate::prompt::derive_salt(nanos as u64, &std::process::id().to_le_bytes())
    })
}

/// Keys of the body that come from the trace and the other flags.
const OWN_KEYS: [&str; 5] = ["model", "prompt", "messages", "max_tokens", "stream"];

/// `--extra-body` (inline or `@FILE`) with the sampling flags merged over
/// it; `None` when none was given.
pub fn extra_body(
    args: &TargetArgs,
) -> anyhow::Result<Option<serde_json::Map<String, serde_json::Value>>> {
    use serde_json::{Value, json};
    let mut body = match &args.extra_body {
        None => serde_json::Map::new(),
        Some(text) => {
            let (what, json_text) = match text.strip_prefix('@') {
                Some(path) => (
                    format!("--extra-body @{path}"),
                    std::fs::read_to_string(path).map_err(|e| {
                        UsageError(format!("--extra-body @{path}: cannot read it: {e}"))
                    })?,
                ),
                None => ("--extra-body".to_owned(), text.clone()),
            };
            match serde_json::from_str::<Value>(&json_text) {
                Ok(Value::Object(map)) => map,
                Ok(other) => bail!(UsageError(format!(
                    "{what}: expected a JSON object, got {}",
                    super::clip(&other.to_string(), 80)
                ))),
                Err(e) => bail!(UsageError(format!("{what}: not JSON: {e}"))),
            }
        }
    };
    if let Some(key) = OWN_KEYS.iter().find(|k| body.contains_key(**k)) {
        bail!(UsageError(format!(
            "--extra-body sets {key:?}, which llm-replay sets from the trace and its flags (--model, --no-stream, the trace's output_tokens)"
        )));
    }
    let finite = |flag: &str, v: f64| -> anyhow::Result<Value> {
        if v.is_finite() {
            Ok(json!(v))
        } else {
            bail!(UsageError(format!(
                "{flag} must be a finite number, got {v}"
            )))
        }
    };
    if let Some(t) = args.temperature {
        body.insert("temperature".into(), finite("--temperature", t)?);
    }
    if let Some(p) = args.top_p {
        body.insert("top_p".into(), finite("--top-p", p)?);
    }
    if let Some(k) = args.top_k {
        body.insert("top_k".into(), json!(k));
    }
    if let Some(s) = args.sampling_seed {
        body.insert("seed".into(), json!(s));
    }
    if !args.stop.is_empty() {
        body.insert("stop".into(), json!(args.stop));
    }
    Ok((!body.is_empty()).then_some(body))
}

/// Microseconds of an optional duration.
pub fn us(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The arrival process of `--arrivals` and `--burstiness`.
pub fn arrivals(args: &ScheduleArgs) -> Arrivals {
    match args.arrivals {
        ArrivalsArg::Poisson => Arrivals::Poisson,
        ArrivalsArg::Gamma => Arrivals::Gamma {
            shape: args.burstiness,
        },
        ArrivalsArg::Constant => Arrivals::Constant,
    }
}

/// The schedule flags as a [`ScheduleSpec`]: `--rate` gives a rate
/// schedule; otherwise the recorded times (which the trace must have).
pub fn schedule_spec(args: &ScheduleArgs) -> anyhow::Result<ScheduleSpec> {
    let spec = match args.rate {
        Some(rate) => {
            if args.speedup != 1.0
                || args.start.is_some()
                || args.end.is_some()
                || args.spread.is_some()
            {
                bail!(UsageError(
                    "--speedup, --start, --end and --spread apply to recorded times; with --rate the trace's times are not used".into()
                ));
            }
            ScheduleSpec::Rate {
                rate,
                arrivals: arrivals(args),
                order: args.order.into(),
                limit: Limit {
                    duration_ns: args
                        .duration
                        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
                    requests: args.requests,
                },
                seed: args.seed,
            }
        }
        None => {
            if args.duration.is_some() {
                bail!(UsageError(
                    "--duration applies to --rate schedules; for recorded times use --start/--end"
                        .into()
                ));
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
    spec.validate().map_err(|e| UsageError(e.to_string()))?;
    Ok(spec)
}

/// The schedule of a closed-loop run (`--concurrency`): only the order and
/// number of requests count. `--requests N` loops the trace to N requests,
/// `--duration` loops it until the time is up, neither makes one pass.
pub fn closed_loop(
    args: &ScheduleArgs,
    users: usize,
) -> anyhow::Result<(ScheduleSpec, ClosedLoop)> {
    if args.rate.is_some()
        || args.speedup != 1.0
        || args.start.is_some()
        || args.end.is_some()
        || args.spread.is_some()
    {
        bail!(UsageError(
            "--concurrency runs a closed loop, which uses no times: drop --rate, --speedup, --start, --end and --spread (or drop --concurrency for open-loop load)".into()
        ));
    }
    let requests = match (args.requests, args.duration) {
        (None, Some(_)) => Some(u64::MAX),
        (n, _) => n,
    };
    Ok((
        ScheduleSpec::closed_loop(args.order.into(), requests, args.seed),
        ClosedLoop {
            users,
            duration: args.duration,
            stages: None,
        },
    ))
}

/// The schedule of `--stages`: rate stages make a staged open-loop
/// schedule; user stages a closed loop whose users follow the stages.
pub fn staged(
    args: &ScheduleArgs,
    stages: &Stages,
    ramp: Option<Duration>,
) -> anyhow::Result<(ScheduleSpec, Option<ClosedLoop>)> {
    let mut stages = stages.clone();
    stages.ramp_ns = ramp.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let total = Duration::from_nanos(stages.total_ns());
    if stages.are_users() {
        let users = stages
            .stages
            .iter()
            .filter_map(|s| match s.load {
                StageLoad::Users(u) => Some(u),
                StageLoad::Rate(_) => None,
            })
            .max()
            .unwrap_or(1);
        return Ok((
            ScheduleSpec::closed_loop(
                args.order.into(),
                Some(args.requests.unwrap_or(u64::MAX)),
                args.seed,
            ),
            Some(ClosedLoop {
                users,
                duration: Some(total),
                stages: Some(stages),
            }),
        ));
    }
    let spec = ScheduleSpec::Stages {
        stages,
        arrivals: arrivals(args),
        order: args.order.into(),
        requests: args.requests,
        seed: args.seed,
    };
    spec.validate().map_err(|e| UsageError(e.to_string()))?;
    Ok((spec, None))
}

/// Runs `llm-replay replay`.
pub async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let (schedule, closed) = match (&args.stages, args.concurrency) {
        (Some(stages), _) => staged(&args.schedule, stages, args.ramp)?,
        (None, Some(users)) => {
            let (spec, closed) = closed_loop(&args.schedule, users)?;
            (spec, Some(closed))
        }
        (None, None) => (schedule_spec(&args.schedule)?, None),
    };
    let target_cfg = target_config(&args.target)?;
    if args.shard.is_some() && closed.is_some() {
        bail!(UsageError(
            "--shard splits an open-loop schedule; a closed loop's users are per process (run each host with its own --concurrency)".into()
        ));
    }
    let output = match (args.shard, &args.output) {
        (Some(shard), Some(dir)) => {
            let dir = dir.join(format!("shard={}", shard.index));
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
            dir.join("results.parquet")
        }
        (Some(_), None) => bail!(UsageError(
            "--shard needs -o DIR, the same directory (or path on shared storage) for every shard"
                .into()
        )),
        (None, Some(path)) => path.clone(),
        (None, None) => replay::default_output(),
    };
    let metrics = crate::record::server_metrics::path_for(&output);
    let mut outputs = vec![Output {
        path: &output,
        flag: "-o",
    }];
    if let Some(p) = &args.summary_json {
        outputs.push(Output {
            path: p,
            flag: "--summary-json",
        });
    }
    if target_cfg.scrape.is_some() {
        outputs.push(Output {
            path: &metrics,
            flag: "--scrape (server metrics)",
        });
    }
    let trace_path = match (&args.trace, &args.synthetic) {
        (Some(p), _) => p.clone(),
        (None, Some(_)) => crate::workload::synth::beside(&output),
        (None, None) => bail!(UsageError(
            "replay needs a trace: TRACE, or --synthetic input=100,output=16".into()
        )),
    };
    if args.synthetic.is_some() && args.shard.is_some() {
        bail!(UsageError(
            "--synthetic with --shard: write the trace once with `llm-replay synth` and give every shard that file".into()
        ));
    }
    if args.synthetic.is_some() {
        outputs.push(Output {
            path: &trace_path,
            flag: "--synthetic (the generated trace)",
        });
    }
    let inputs: Vec<&Path> = args
        .trace
        .as_deref()
        .into_iter()
        .chain(
            target_cfg
                .tokenizer
                .as_ref()
                .and_then(crate::tokenize::TokenizerSpec::json_path),
        )
        .collect();
    // Before anything slow, so a port in use is said at once.
    let monitor = monitor(&args.live, None).await?;
    claim_outputs(&outputs, &inputs, args.end.force)?;

    if let Some(spec) = &args.synthetic {
        crate::workload::synth::write(spec, &trace_path)?;
    }
    let trace = Arc::new(crate::trace::read_trace(&trace_path)?);
    let target = replay::Target::connect(&target_cfg, &trace, args.schedule.seed).await?;
    let mut planned = crate::schedule::plan(&schedule, &trace.records)?;
    if let Some(shard) = args.shard {
        planned = planned.sharded(shard);
    }
    let remaining = planned.remaining();
    let load = match &closed {
        Some(ClosedLoop {
            stages: Some(st), ..
        }) => format!(
            "closed loop, users by stage {}, for {}",
            st.stages
                .iter()
                .map(|s| s.load.level().to_string())
                .collect::<Vec<_>>()
                .join(" → "),
            humantime::format_duration(Duration::from_nanos(st.total_ns()))
        ),
        Some(c) => format!(
            "closed loop, {} users, {}",
            c.users,
            match c.duration {
                Some(d) => format!("for {}", humantime::format_duration(d)),
                None => format!("{} requests", remaining.requests),
            }
        ),
        None => format!(
            "{}{} requests over {}",
            if remaining.exact { "" } else { "about " },
            remaining.requests,
            humantime::format_duration(Duration::from_secs(planned.span_hint_ns() / 1_000_000_000)),
        ),
    };
    let load = match args.shard {
        Some(shard) => format!("{load}, shard {shard}"),
        None => load,
    };
    eprintln!(
        "replaying {} ({} rows) against {}{}, model {}: {load}",
        trace_path.display(),
        trace.records.len(),
        target.display_url(),
        if target.is_embedded() {
            " (embedded simulator)"
        } else {
            ""
        },
        target.model(),
    );
    drop(planned);
    let shutdown = Shutdown::new();
    watch_signals(shutdown.clone(), args.end.grace);
    let opts = RunOptions {
        schedule,
        output,
        slo: args.slo,
        by: args.by.clone(),
        grace: args.end.grace,
        limits: FidelityLimits {
            max_p99_lag_ms: args.max_send_lag.as_secs_f64() * 1e3,
            quantiles: args.percentiles.unwrap_or_default(),
            ..FidelityLimits::default()
        },
        phases: Phases::default(),
        progress: !args.quiet,
        monitor,
        extra_metadata: Vec::new(),
        sessions: args.session.options(),
        closed_loop: closed,
        shard: args.shard,
        start_at_us: args.start_at,
        prompt_salt: prompt_salt(&args.target),
    };
    let recorded = replay::run(trace, &target, opts, &shutdown).await?;
    stdout(format_args!("{}", recorded.summary));
    for hint in error_hints(&recorded.summary.first_errors, &target_cfg, target.model()) {
        eprintln!("{hint}");
    }
    stdout(format_args!(
        "results       {} ({} rows)\n",
        recorded.path.display(),
        recorded.rows
    ));
    if let Some(path) = &args.summary_json {
        let text = match args.summary_format {
            crate::cli::SummaryFormat::LlmReplay => {
                serde_json::to_string_pretty(&recorded.summary)?
            }
            // vLLM's keys need the rows: read back from the results file.
            crate::cli::SummaryFormat::Vllm => {
                let results = crate::record::read_results(&recorded.path)?;
                serde_json::to_string_pretty(&crate::record::vllm::result(
                    &results.rows,
                    &results.metadata,
                    args.slo,
                    &args.percentiles.unwrap_or_default(),
                ))?
            }
        };
        std::fs::write(path, text + "\n")
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        stdout(format_args!("summary json  {}\n", path.display()));
    }
    Ok(run_exit_code(
        recorded.summary.requests,
        recorded.summary.failed(),
        args.end.max_error_rate,
        recorded.summary.stopped_by.as_deref(),
    ))
}

/// The live progress of `args`, with its metrics endpoint serving (its
/// address printed) when `--metrics-port` is given; `steps` is how many
/// steps a sweep plans.
pub async fn monitor(args: &LiveArgs, steps: Option<u32>) -> anyhow::Result<Monitor> {
    let mut monitor = Monitor {
        steps_planned: steps,
        ..Monitor::new(args.progress.into())
    };
    if let Some(port) = args.metrics_port {
        let addr = std::net::SocketAddr::new(args.metrics_addr, port);
        let (exporter, bound) = Exporter::serve(addr)
            .await
            .map_err(|e| anyhow::anyhow!("--metrics-port {port}: listening on {addr}: {e}"))?;
        eprintln!("metrics       http://{bound}/metrics");
        monitor.exporter = Some(exporter);
    }
    Ok(monitor)
}

/// What to try for the errors a misconfigured run meets first: refused
/// credentials (which key went out) and an unknown model or path.
pub fn error_hints(errors: &[FirstError], cfg: &TargetConfig, model: &str) -> Vec<String> {
    let mut hints = Vec::new();
    if errors
        .iter()
        .any(|e| matches!(e.status_code, Some(401 | 403)))
    {
        hints.push(replay::credentials_hint(cfg));
    }
    if errors.iter().any(|e| e.status_code == Some(404)) {
        hints.push(format!(
            "hint: 404 for model {model:?}: check --model against the server's GET /v1/models, and that --url is the server's base (requests go to {})",
            cfg.api.path()
        ));
    }
    hints
}
