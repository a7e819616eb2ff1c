//! Live progress as a user meets it: the plain lines on a stderr that is
//! not a terminal (the real binary, stderr piped), the sweep's step labels,
//! and `--metrics-port` scraped during and after runs against the embedded
//! simulator, its counters checked against the results file.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use llm_replay::cli::{Cli, Command as Cmd};
use llm_replay::record::read_results;
use llm_replay::replay::progress::{Exporter, Monitor, ProgressMode};
use llm_replay::replay::{Shutdown, TargetConfig};
use llm_replay::schedule::{Arrivals, Limit, Order, ScheduleSpec};
use llm_replay::sim::SimConfig;
use llm_replay::trace::read_trace;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llm-replay"));
    c.env_remove("OPENAI_API_KEY");
    c
}

fn trace() -> String {
    crate::support::azure_trace()
}

/// Runs the binary; returns its stderr (checked to have succeeded).
fn run(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{args:?} failed:\n{stderr}");
    stderr
}

fn outcome_count(rows: &[llm_replay::record::ResultRow], name: &str) -> usize {
    rows.iter().filter(|r| r.outcome.as_str() == name).count()
}

#[test]
fn a_piped_stderr_gets_a_final_plain_line_with_the_run_totals() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.parquet");
    let stderr = run(&[
        "replay",
        &trace(),
        "--rate",
        "100",
        "--requests",
        "30",
        "--sim-fail-500",
        "0.3",
        "--sim-decode-base-us",
        "200",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    let rows = read_results(&out).unwrap().rows;
    assert_eq!(rows.len(), 30);
    let errors = outcome_count(&rows, "http_error");
    assert!(
        errors > 0 && errors < 30,
        "the seeded faults give some errors"
    );
    let last = stderr
        .lines()
        .find(|l| l.contains("| finished |"))
        .unwrap_or_else(|| panic!("no final progress line in:\n{stderr}"));
    assert!(last.starts_with('['), "{last}");
    assert!(
        last.contains("s] 30/30 done (100.0%) | finished |"),
        "{last}"
    );
    assert!(last.ends_with("| sent 30"), "{last}");
    assert!(
        last.contains(&format!("| errors {errors} (http_error {errors})")),
        "{last}"
    );
    assert!(
        last.contains("TTFT p50 ") && last.contains(" tok/s"),
        "{last}"
    );
}

#[test]
fn progress_off_and_quiet_print_no_progress() {
    let dir = tempfile::tempdir().unwrap();
    for (i, flag) in [["--progress", "off"], ["--quiet", "--progress=lines"]]
        .iter()
        .enumerate()
    {
        let out = dir.path().join(format!("r{i}.parquet"));
        let stderr = run(&[
            "replay",
            &trace(),
            "--rate",
            "100",
            "--requests",
            "5",
            "--sim-zero-delay",
            flag[0],
            flag[1],
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(!stderr.contains("done ("), "{flag:?}: {stderr}");
    }
}

#[test]
fn a_sweep_labels_each_step_i_of_n() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = run(&[
        "sweep",
        &trace(),
        "--out-dir",
        dir.path().join("sw").to_str().unwrap(),
        "--rates",
        "50,100",
        "--requests",
        "8",
        "--sim-zero-delay",
        "--progress",
        "lines",
    ]);
    for step in ["step 1/2 rate=50", "step 2/2 rate=100"] {
        let line = stderr
            .lines()
            .find(|l| l.contains(step) && l.contains("| finished |"))
            .unwrap_or_else(|| panic!("no final line of {step} in:\n{stderr}"));
        assert!(line.contains("| 8/8 done (100.0%) |"), "{line}");
    }
}

/// A parsed exposition: `name{labels}` to value; panics on a malformed
/// line, a sample without a TYPE, or a wrong Content-Type.
async fn scrape(addr: std::net::SocketAddr) -> BTreeMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    let (head, text) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.lines()
            .any(|l| l
                .eq_ignore_ascii_case("content-type: text/plain; version=0.0.4; charset=utf-8")),
        "{head}"
    );
    let mut typed = Vec::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            typed.push(parts.next().unwrap().to_owned());
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "summary"].contains(&kind), "{line}");
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap();
        let name = key.split('{').next().unwrap();
        let family = ["_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| typed.iter().any(|t| t == f))
            .unwrap_or(name);
        assert!(typed.iter().any(|t| t == family), "untyped: {line}");
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        samples.insert(key.to_owned(), v);
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_serves_counters_that_match_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.parquet");
    let (exporter, addr) = Exporter::serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let target_cfg = TargetConfig {
        sim: SimConfig {
            decode_base_us: 500.0,
            fail_500: 0.25,
            ..SimConfig::default()
        },
        ..TargetConfig::default()
    };
    let trace = Arc::new(read_trace(std::path::Path::new(&trace())).unwrap());
    let target = llm_replay::replay::Target::connect(&target_cfg, &trace, 7)
        .await
        .unwrap();
    let opts = llm_replay::replay::RunOptions {
        by: Vec::new(),
        schedule: ScheduleSpec::Rate {
            rate: 80.0,
            arrivals: Arrivals::Constant,
            order: Order::Sequential,
            limit: Limit {
                duration_ns: None,
                requests: Some(60),
            },
            seed: 7,
        },
        output: out.clone(),
        slo: None,
        grace: Duration::from_secs(5),
        limits: Default::default(),
        phases: Default::default(),
        progress: false,
        monitor: Monitor {
            exporter: Some(exporter.clone()),
            ..Monitor::new(ProgressMode::Off)
        },
        extra_metadata: vec![],
        sessions: None,
        closed_loop: None,
        shard: None,
        start_at_us: None,
        prompt_salt: 0,
    };
    // Scraped while the run goes: always parseable, counters never fall.
    let stop = tokio_util::sync::CancellationToken::new();
    let during = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut scrapes = 0;
            let mut last_sent = 0.0;
            while !stop.is_cancelled() {
                let m = scrape(addr).await;
                let sent = m["llm_replay_requests_sent_total"];
                assert!(sent >= last_sent);
                assert!(m["llm_replay_requests_completed_total"] <= sent);
                last_sent = sent;
                scrapes += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            scrapes
        }
    });
    let recorded = llm_replay::replay::run(trace, &target, opts, &Shutdown::new())
        .await
        .unwrap();
    stop.cancel();
    assert!(during.await.unwrap() > 0);

    let rows = read_results(&out).unwrap().rows;
    assert_eq!(rows.len(), 60);
    let m = scrape(addr).await;
    let sent = rows.iter().filter(|r| r.sent_at_us.is_some()).count() as f64;
    assert_eq!(m["llm_replay_requests_scheduled_total"], 60.0);
    assert_eq!(m["llm_replay_requests_sent_total"], sent);
    assert_eq!(
        m["llm_replay_requests_completed_total"],
        recorded.rows as f64
    );
    let http_errors = outcome_count(&rows, "http_error");
    assert!(http_errors > 0, "the seeded faults give some errors");
    assert_eq!(
        m["llm_replay_requests_errors_total{kind=\"http_error\"}"],
        http_errors as f64
    );
    assert_eq!(
        m["llm_replay_requests_errors_total{kind=\"timeout\"}"],
        outcome_count(&rows, "timeout") as f64
    );
    assert_eq!(m["llm_replay_requests_in_flight"], 0.0);
    assert_eq!(m["llm_replay_draining"], 1.0);
    let ok_ttfts: Vec<i64> = rows
        .iter()
        .filter(|r| r.outcome.as_str() == "ok")
        .filter_map(|r| r.ttft_us)
        .collect();
    assert_eq!(m["llm_replay_ttft_seconds_count"], ok_ttfts.len() as f64);
    let sum = ok_ttfts.iter().sum::<i64>() as f64 / 1e6;
    assert!((m["llm_replay_ttft_seconds_sum"] - sum).abs() < 1e-6);
    let tokens: i64 = rows.iter().map(|r| i64::from(r.output_tokens)).sum();
    assert_eq!(m["llm_replay_output_tokens_total"], tokens as f64);
    // The run took well under 10 s: every ok TTFT is in the window.
    let p50 = m["llm_replay_ttft_seconds{quantile=\"0.5\"}"];
    let (lo, hi) = (
        *ok_ttfts.iter().min().unwrap() as f64 / 1e6,
        *ok_ttfts.iter().max().unwrap() as f64 / 1e6,
    );
    assert!(lo <= p50 && p50 <= hi, "{lo} <= {p50} <= {hi}");
    assert!(m["llm_replay_send_lag_seconds{quantile=\"0.99\"}"].is_finite());
    assert!(!m.contains_key("llm_replay_step"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_counters_add_up_over_steps_and_the_step_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sw");
    let argv = [
        "llm-replay",
        "sweep",
        &trace(),
        "--out-dir",
        out.to_str().unwrap(),
        "--rates",
        "50,100",
        "--requests",
        "10",
        "--sim-zero-delay",
        "-q",
    ];
    let Cmd::Sweep(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    let mut plan = llm_replay::commands::sweep::plan(&args).unwrap();
    assert_eq!(plan.monitor.steps_planned, Some(2));
    let (exporter, addr) = Exporter::serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    plan.monitor.exporter = Some(exporter);
    llm_replay::sweep::run(&plan, &Shutdown::new())
        .await
        .unwrap();
    let m = scrape(addr).await;
    let rows: usize = ["rate=50", "rate=100"]
        .iter()
        .map(|s| {
            read_results(&out.join(s).join("results.parquet"))
                .unwrap()
                .rows
                .len()
        })
        .sum();
    assert_eq!(rows, 20);
    assert_eq!(m["llm_replay_requests_completed_total"], 20.0);
    assert_eq!(m["llm_replay_requests_scheduled_total"], 20.0);
    assert_eq!(m["llm_replay_step"], 2.0);
}

#[test]
fn a_stopped_run_ends_with_a_line_that_says_why() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.parquet");
    let mut child = bin()
        .args([
            "replay",
            &trace(),
            "--rate",
            "20",
            "--duration",
            "60s",
            "--grace",
            "2s",
            "--sim-decode-base-us",
            "200",
            "-o",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // The run is announced just before t=0.
    for line in lines.by_ref() {
        if line.unwrap().starts_with("replaying ") {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    let rows = read_results(&out).unwrap().rows.len();
    let last = rest
        .iter()
        .find(|l| l.contains("| stopped (SIGINT) |"))
        .unwrap_or_else(|| panic!("no stopped line in {rest:?}"));
    // The schedule's estimated total stays; what was done is the rows.
    assert!(last.contains(&format!("] {rows}/~")), "{last}");
}
