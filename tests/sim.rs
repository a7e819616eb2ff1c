//! The embedded simulator over real loopback HTTP, driven by the real
//! client: API shapes, usage counts, every scripted fault's outcome, and a
//! whole replay whose every scheduled request becomes one row.

use std::sync::Arc;
use std::time::Duration;

use llm_replay::client::{
    Api, Endpoint, EndpointConfig, Outcome, Prompt, RequestSpec, Timeouts, build_body,
};
use llm_replay::replay::{Shutdown, TargetConfig};
use llm_replay::schedule::{Arrivals, Limit, Order, ScheduleSpec};
use llm_replay::sim::{self, SimConfig};
use llm_replay::trace::{TraceMetadata, TraceRecord, TraceWriter, read_trace};

fn fast_sim() -> SimConfig {
    SimConfig {
        prefill_us_per_token: 1.0,
        decode_base_us: 500.0,
        decode_per_seq_us: 10.0,
        stall_time: Duration::from_secs(5),
        record_request_ids: true,
        ..SimConfig::default()
    }
}

fn endpoint(url: &str, api: Api) -> Endpoint {
    Endpoint::new(EndpointConfig {
        base_url: url.into(),
        api,
        headers: vec![],
        api_key: None,
        http2: false,
        connect_timeout: Duration::from_secs(2),
        pool_max_idle_per_host: 16,
        max_response_bytes: llm_replay::client::DEFAULT_MAX_RESPONSE_BYTES,
    })
    .unwrap()
}

fn spec(id: &str, stream: bool) -> RequestSpec {
    RequestSpec {
        request_id: id.into(),
        api: Api::Completions,
        model: "llm-replay-sim".into(),
        prompt: Prompt::Text(" alpha beta gamma delta".into()),
        max_tokens: 12,
        stream,
        force_output_len: false,
        extra_body: None,
        keep_reply: false,
    }
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        ttft: Some(Duration::from_millis(500)),
        request: Some(Duration::from_secs(10)),
    }
}

async fn send(e: &Endpoint, api: Api, s: &RequestSpec) -> llm_replay::client::Exchange {
    let s = &RequestSpec { api, ..s.clone() };
    e.send(
        s,
        build_body(s).unwrap(),
        &timeouts(),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
}

#[tokio::test]
async fn streaming_and_plain_responses_with_usage() {
    let server = sim::start(fast_sim(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for api in [Api::Completions, Api::Chat] {
        let e = endpoint(&server.url(), api);
        assert_eq!(
            e.list_models().await.unwrap(),
            vec!["llm-replay-sim".to_owned()]
        );
        let ex = send(&e, api, &spec("s", true)).await;
        assert_eq!(ex.outcome, Outcome::Ok, "{api:?}: {:?}", ex.error);
        assert_eq!(
            ex.output_tokens, 12,
            "{api:?}: the chat role chunk is not a token"
        );
        assert_eq!(ex.chunk_times.len(), 12);
        assert_eq!(ex.usage_prompt_tokens, Some(4));
        assert_eq!(ex.usage_completion_tokens, Some(12));
        assert!(ex.first_token_at.unwrap() <= ex.completed_at.unwrap());
        let plain = send(&e, api, &spec("p", false)).await;
        assert_eq!(plain.outcome, Outcome::Ok);
        assert_eq!(plain.usage_completion_tokens, Some(12));
    }
    let stats = server.stats();
    assert_eq!(stats.requests, 4);
    assert_eq!(stats.request_ids, vec!["s", "p", "s", "p"]);
    server.shutdown().await;
}

#[tokio::test]
async fn responses_messages_and_embeddings_have_the_same_row_contract() {
    let server = sim::start(fast_sim(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for api in [Api::Responses, Api::Messages] {
        let e = endpoint(&server.url(), api);
        let mut streamed = spec("s", true);
        streamed.keep_reply = true;
        let ex = send(&e, api, &streamed).await;
        assert_eq!(ex.outcome, Outcome::Ok, "{api:?}: {:?}", ex.error);
        assert_eq!(ex.output_tokens, 12, "{api:?}");
        assert_eq!(ex.chunk_times.len(), 12);
        assert_eq!(ex.usage_prompt_tokens, Some(4), "{api:?}");
        assert_eq!(ex.usage_completion_tokens, Some(12), "{api:?}");
        assert!(!ex.reply_text.unwrap_or_default().is_empty(), "{api:?}");
        let plain = send(&e, api, &spec("p", false)).await;
        assert_eq!(plain.outcome, Outcome::Ok, "{api:?}: {:?}", plain.error);
        assert_eq!(plain.usage_prompt_tokens, Some(4), "{api:?}");
        assert_eq!(plain.output_tokens, 12, "{api:?}");
        // A stream cut mid-way is a stream_error, as for chat.
        let cut = send(&e, api, &spec("x-fault=disconnect", true)).await;
        assert_eq!(cut.outcome, Outcome::StreamError, "{api:?}");
        let garbled = send(&e, api, &spec("x-fault=garble", true)).await;
        assert_eq!(garbled.outcome, Outcome::StreamError, "{api:?}");
    }
    let e = endpoint(&server.url(), Api::Embeddings);
    let mut one = spec("e1", false);
    one.api = Api::Embeddings;
    let ex = send(&e, Api::Embeddings, &one).await;
    assert_eq!(ex.outcome, Outcome::Ok, "{:?}", ex.error);
    assert_eq!(ex.usage_prompt_tokens, Some(4));
    assert_eq!((ex.output_tokens, ex.first_token_at), (0, None));
    let batch = RequestSpec {
        prompt: Prompt::Texts(vec![" a b".into(), " c d e".into(), " f".into()]),
        ..one.clone()
    };
    let ex = send(&e, Api::Embeddings, &batch).await;
    assert_eq!(ex.outcome, Outcome::Ok, "{:?}", ex.error);
    assert_eq!(ex.usage_prompt_tokens, Some(6));
    let failed = send(&e, Api::Embeddings, &spec("x-fault=500", false)).await;
    assert_eq!(failed.outcome, Outcome::HttpError);
    server.shutdown().await;
}

#[test]
fn each_api_gets_its_own_body() {
    let extra: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"temperature": 0.5, "stop": "END", "dimensions": 8}"#).unwrap();
    let s = RequestSpec {
        extra_body: Some(Arc::new(extra)),
        ..spec("b", true)
    };
    let body = |api: Api| -> serde_json::Value {
        serde_json::from_slice(&build_body(&RequestSpec { api, ..s.clone() }).unwrap()).unwrap()
    };
    let r = body(Api::Responses);
    assert_eq!(
        (r["input"].as_str(), r["max_output_tokens"].as_u64()),
        (Some(" alpha beta gamma delta"), Some(12))
    );
    assert_eq!(r["temperature"], 0.5);
    let m = body(Api::Messages);
    assert_eq!(m["messages"][0]["role"], "user");
    assert_eq!(m["max_tokens"], 12);
    assert_eq!(m["stop_sequences"], serde_json::json!(["END"]));
    assert!(m.get("stop").is_none() && m.get("stream_options").is_none());
    let e = body(Api::Embeddings);
    assert_eq!(e["input"], " alpha beta gamma delta");
    // Generation keys are left out of an embeddings body; others stay.
    assert!(e.get("temperature").is_none() && e.get("stop").is_none());
    assert!(e.get("max_tokens").is_none() && e.get("stream").is_none());
    assert_eq!(e["dimensions"], 8);
    let tokens = RequestSpec {
        api: Api::Messages,
        prompt: Prompt::Tokens(vec![1, 2]),
        ..s.clone()
    };
    assert!(build_body(&tokens).is_err());
}

#[tokio::test]
async fn every_scripted_fault_has_its_outcome() {
    let server = sim::start(fast_sim(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let e = endpoint(&server.url(), Api::Completions);
    let cases = [
        ("r fault=429", Outcome::HttpError, Some(429)),
        ("r fault=500", Outcome::HttpError, Some(500)),
        ("r fault=stall", Outcome::Timeout, None),
        ("r fault=disconnect", Outcome::StreamError, Some(200)),
        ("r fault=garble", Outcome::StreamError, Some(200)),
    ];
    for (id, outcome, status) in cases {
        let ex = send(&e, Api::Completions, &spec(id, true)).await;
        assert_eq!(ex.outcome, outcome, "{id}: {:?}", ex.error);
        assert_eq!(ex.status_code, status, "{id}");
        assert!(ex.error.is_some(), "{id}");
    }
    // The partial stream before a disconnect is kept.
    let ex = send(&e, Api::Completions, &spec("fault=disconnect", true)).await;
    assert_eq!(ex.output_tokens, 6);
    assert_eq!(server.stats().faults.get("stall"), Some(&1));
    server.shutdown().await;
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let e = endpoint(&format!("http://{addr}"), Api::Completions);
    let ex = send(&e, Api::Completions, &spec("x", true)).await;
    assert_eq!(ex.outcome, Outcome::ConnectError, "{:?}", ex.error);
}

#[tokio::test]
async fn ttft_grows_with_load() {
    let server = sim::start(
        SimConfig {
            prefill_us_per_token: 2_000.0,
            decode_base_us: 2_000.0,
            decode_per_seq_us: 200.0,
            max_batch: 4,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let e = Arc::new(endpoint(&server.url(), Api::Completions));
    let ttft_one = {
        let start = tokio::time::Instant::now();
        let ex = send(&e, Api::Completions, &spec("solo", true)).await;
        ex.first_token_at.unwrap() - start
    };
    let mut tasks = Vec::new();
    for i in 0..16 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let ex = send(&e, Api::Completions, &spec(&format!("c{i}"), true)).await;
            ex.first_token_at.unwrap() - start
        }));
    }
    let mut worst = Duration::ZERO;
    for t in tasks {
        worst = worst.max(t.await.unwrap());
    }
    // Batch of 4: the last of 16 waits for three batches to finish first.
    assert!(
        worst > ttft_one * 3,
        "solo {ttft_one:?}, worst under load {worst:?}"
    );
    server.shutdown().await;
}

fn write_trace(path: &std::path::Path, ids: &[&str]) {
    let mut w = TraceWriter::create(path).unwrap();
    for (i, id) in ids.iter().enumerate() {
        w.write(&TraceRecord {
            request_id: (*id).into(),
            arrival_offset_us: Some(i as i64 * 20_000),
            input_tokens: 20,
            output_tokens: 8,
            source_row: i as i64,
            ..TraceRecord::default()
        })
        .unwrap();
    }
    let mut meta = TraceMetadata::new("test");
    meta.rows_read = ids.len() as u64;
    meta.tokenizer = Some("o200k_base".into());
    w.finish(meta).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_with_faults_has_one_right_row_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("t.parquet");
    let ids = [
        "ok-1",
        "fault=429",
        "ok-2",
        "fault=500",
        "fault=stall",
        "fault=disconnect",
        "fault=garble",
        "ok-3",
    ];
    write_trace(&trace_path, &ids);
    let out = dir.path().join("r.parquet");
    let target_cfg = TargetConfig {
        timeouts: Timeouts {
            connect: Duration::from_secs(10),
            ttft: Some(Duration::from_secs(1)),
            request: Some(Duration::from_secs(600)),
        },
        sim: SimConfig {
            stall_time: Duration::from_secs(5),
            decode_base_us: 500.0,
            ..SimConfig::default()
        },
        ..TargetConfig::default()
    };
    let trace = Arc::new(read_trace(&trace_path).unwrap());
    let target = llm_replay::replay::Target::connect(&target_cfg, &trace, 0)
        .await
        .unwrap();
    assert!(target.is_embedded());
    let opts = llm_replay::replay::RunOptions {
        by: Vec::new(),
        schedule: ScheduleSpec::Recorded {
            speedup: 1.0,
            start_us: None,
            end_us: None,
            spread_us: None,
            requests: Some(8),
        },
        output: out.clone(),
        slo: Some("ttft=1s".parse().unwrap()),
        grace: Duration::from_secs(5),
        limits: Default::default(),
        phases: Default::default(),
        progress: false,
        monitor: Default::default(),
        extra_metadata: vec![],
        sessions: None,
        closed_loop: None,
        shard: None,
        start_at_us: None,
        prompt_salt: 0,
    };
    let recorded = llm_replay::replay::run(trace, &target, opts, &Shutdown::new())
        .await
        .unwrap();
    assert_eq!(recorded.rows, 8);
    let results = llm_replay::record::read_results(&out).unwrap();
    assert_eq!(results.rows.len(), 8);
    let outcome = |id: &str| {
        results
            .rows
            .iter()
            .find(|r| r.request_id == id)
            .unwrap()
            .outcome
            .as_str()
    };
    for id in ["ok-1", "ok-2", "ok-3"] {
        assert_eq!(outcome(id), "ok");
    }
    assert_eq!(outcome("fault=429"), "http_error");
    assert_eq!(outcome("fault=500"), "http_error");
    assert_eq!(outcome("fault=stall"), "timeout");
    assert_eq!(outcome("fault=disconnect"), "stream_error");
    assert_eq!(outcome("fault=garble"), "stream_error");
    let ok = results
        .rows
        .iter()
        .find(|r| r.request_id == "ok-1")
        .unwrap();
    assert_eq!(
        ok.usage_prompt_tokens,
        Some(20),
        "synthetic prompt has exactly input_tokens words"
    );
    assert_eq!(ok.output_tokens, 8);
    let s = &recorded.summary;
    assert_eq!(
        s.goodput.as_ref().unwrap().total,
        8,
        "failures are in the goodput denominator"
    );
    assert_eq!(s.goodput.as_ref().unwrap().met, 3);
    assert!(results.metadata.contains_key("llm_replay.summary"));
    assert!(results.metadata["llm_replay.config"].contains("\"embedded_simulator\":true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_server_metrics_land_beside_the_results() {
    let server = sim::start(fast_sim(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("t.parquet");
    let ids: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    write_trace(
        &trace_path,
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let out = dir.path().join("results.parquet");
    let metrics_url = format!("{}/metrics", server.url());
    let target_cfg = TargetConfig {
        url: Some(server.url()),
        scrape: Some(metrics_url),
        ..TargetConfig::default()
    };
    let trace = Arc::new(read_trace(&trace_path).unwrap());
    let target = llm_replay::replay::Target::connect(&target_cfg, &trace, 0)
        .await
        .unwrap();
    let opts = llm_replay::replay::RunOptions {
        by: Vec::new(),
        schedule: ScheduleSpec::Rate {
            rate: 8.0,
            arrivals: Arrivals::Constant,
            order: Order::Sequential,
            limit: Limit::default(),
            seed: 0,
        },
        output: out.clone(),
        slo: None,
        grace: Duration::from_secs(5),
        limits: Default::default(),
        phases: Default::default(),
        progress: false,
        monitor: Default::default(),
        extra_metadata: vec![],
        sessions: None,
        closed_loop: None,
        shard: None,
        start_at_us: None,
        prompt_salt: 0,
    };
    llm_replay::replay::run(trace, &target, opts, &Shutdown::new())
        .await
        .unwrap();
    let samples =
        llm_replay::record::server_metrics::read(&dir.path().join("_server_metrics.parquet"))
            .unwrap();
    assert!(
        samples
            .iter()
            .any(|s| s.metric == "sim:num_requests_running")
    );
    let requests = samples
        .iter()
        .filter(|s| s.metric == "sim:requests_total")
        .map(|s| s.value)
        .fold(0.0, f64::max);
    assert!(requests >= 8.0, "{requests}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_arrival_log_has_one_row_per_request_with_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("arrivals.csv");
    let server = sim::start_logging(fast_sim(), "127.0.0.1:0".parse().unwrap(), Some(&log))
        .await
        .unwrap();
    let e = endpoint(&server.url(), Api::Completions);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    for id in ["a1", "b,2", "c3"] {
        assert_eq!(
            send(&e, Api::Completions, &spec(id, true)).await.outcome,
            Outcome::Ok
        );
    }
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    server.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "arrival_us,request_id");
    let rows: Vec<(i64, &str)> = lines[1..]
        .iter()
        .map(|l| {
            let (t, id) = l.split_once(',').unwrap();
            (t.parse().unwrap(), id)
        })
        .collect();
    let ids: Vec<&str> = rows.iter().map(|r| r.1).collect();
    assert_eq!(ids, ["a1", "\"b,2\"", "c3"]);
    assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(rows.iter().all(|r| (before..=after).contains(&r.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_run_routes_rows_by_kind_and_model_and_breaks_them_down() {
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("t.parquet");
    let mut w = TraceWriter::create(&trace_path).unwrap();
    for i in 0..40i64 {
        let (kind, model) = match i % 4 {
            0 => ("embed", None),
            1 => ("chat", Some("big")),
            2 => ("chat", Some("small")),
            _ => ("chat", None),
        };
        w.write(&TraceRecord {
            request_id: format!("r{i}"),
            arrival_offset_us: Some(i * 5_000),
            input_tokens: 20,
            output_tokens: 6,
            source_row: i,
            request_kind: Some(kind.into()),
            model: model.map(str::to_owned),
            user_id: Some(format!("tenant-{}", i % 2)),
            ..TraceRecord::default()
        })
        .unwrap();
    }
    let mut meta = TraceMetadata::new("test");
    meta.rows_read = 40;
    meta.tokenizer = Some("o200k_base".into());
    w.finish(meta).unwrap();
    let target_cfg = TargetConfig {
        api: Api::Chat,
        routing: llm_replay::replay::Routing {
            api_map: vec![("embed".into(), Api::Embeddings)],
            model_map: vec![("big".into(), "served-big".into())],
            models: vec![("w1".into(), 0.5), ("w2".into(), 0.5)],
        },
        embedding_batch: 2,
        preflight: false,
        sim: fast_sim(),
        ..TargetConfig::default()
    };
    let trace = Arc::new(read_trace(&trace_path).unwrap());
    let target = llm_replay::replay::Target::connect(&target_cfg, &trace, 7)
        .await
        .unwrap();
    let out = dir.path().join("r.parquet");
    let opts = llm_replay::replay::RunOptions {
        by: vec!["status_code".parse().unwrap()],
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
        sessions: None,
        closed_loop: None,
        shard: None,
        start_at_us: None,
        prompt_salt: 0,
    };
    let recorded = llm_replay::replay::run(trace, &target, opts, &Shutdown::new())
        .await
        .unwrap();
    let rows = llm_replay::record::read_results(&out).unwrap().rows;
    assert_eq!(rows.len(), 40);
    for r in &rows {
        assert_eq!(r.outcome, Outcome::Ok, "{}: {:?}", r.request_id, r.error);
        let i: i64 = r.request_id[1..].parse().unwrap();
        let api = r.api.as_deref().unwrap();
        let model = r.model.as_deref().unwrap();
        match i % 4 {
            0 => {
                assert_eq!(api, "embeddings");
                assert!(r.ttft_us.is_none());
                // Two inputs of 20 tokens each.
                assert_eq!(r.usage_prompt_tokens, Some(40));
                assert_eq!(r.prompt_tokens_sent, Some(40));
            }
            1 => assert_eq!((api, model), ("chat", "served-big")),
            // A trace model the map does not name keeps the run's model.
            2 => assert_eq!((api, model), ("chat", "llm-replay-sim")),
            _ => {
                assert_eq!(api, "chat");
                assert!(model == "w1" || model == "w2", "{model}");
            }
        }
        assert_eq!(
            r.request_kind.as_deref(),
            Some(if i % 4 == 0 { "embed" } else { "chat" })
        );
        assert_eq!(r.user_id, Some(format!("tenant-{}", i % 2)));
    }
    // The seeded weights give both models some rows, the same each run.
    let w1 = rows
        .iter()
        .filter(|r| r.model.as_deref() == Some("w1"))
        .count();
    assert!(w1 > 0 && w1 < 20, "{w1}");
    let classes = &recorded.summary.classes;
    let of = |column: &str, value: &str| {
        classes
            .iter()
            .find(|c| c.column == column && c.value == value)
            .unwrap_or_else(|| panic!("no {column}={value} in {classes:?}"))
    };
    assert_eq!(of("api", "embeddings").requests, 10);
    assert_eq!(of("api", "embeddings").ttft_from_schedule.count, 0);
    assert_eq!(of("api", "chat").ttft_from_schedule.count, 30);
    assert_eq!(of("request_kind", "embed").requests, 10);
    assert_eq!(of("user_id", "tenant-1").requests, 20);
    assert_eq!(of("model", "served-big").requests, 10);
    // --by shows a column even with one value.
    assert_eq!(of("status_code", "200").requests, 40);
    let text = recorded.summary.to_string();
    assert!(
        text.contains("by api") && text.contains("by model"),
        "{text}"
    );
    // `report` recomputes the same breakdown from the file, in each format.
    let inputs = vec![llm_replay::report::load(&out, None, &[]).unwrap()];
    let json = serde_json::to_value(&inputs).unwrap();
    let has = |column: &str, value: &str| {
        json[0]["summary"]["classes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["column"] == column && c["value"] == value)
    };
    assert!(has("request_kind", "embed") && has("model", "served-big"));
    let html = llm_replay::report::render_html(&inputs);
    assert!(html.contains("by request_kind") && html.contains("by user_id"));
    assert!(llm_replay::report::render_text(&inputs).contains("by api"));
}

/// The summary's client CPU leaves out the embedded simulator's threads,
/// and says how much they used; against a server of its own there is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_cpu_leaves_out_the_embedded_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let trace = crate::support::azure_trace();
    let server = sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = server.url();
    for (name, extra) in [("embedded", vec![]), ("own", vec!["--url", url.as_str()])] {
        let summary = dir.path().join(format!("{name}.json"));
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_llm-replay"))
            .args(["replay", &trace, "--requests", "20", "--rate", "50", "-q"])
            .arg("-o")
            .arg(dir.path().join(format!("{name}.parquet")))
            .arg("--summary-json")
            .arg(&summary)
            .args(&extra)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        let client = &s["client"];
        assert!(client["cpu_s"].as_f64().unwrap() >= 0.0);
        if name == "embedded" {
            assert!(client["simulator_cpu_s"].as_f64().is_some(), "{client}");
        } else {
            assert!(client.get("simulator_cpu_s").is_none(), "{client}");
        }
    }
}
