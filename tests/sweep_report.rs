//! Sweeps against the embedded simulator: the hive-partitioned directory,
//! the step table in Parquet and CSV, the SLO capacity, and resuming.

use clap::Parser;
use llm_replay::cli::{Cli, Command};
use llm_replay::record::read_results;
use llm_replay::replay::Shutdown;

async fn sweep(argv: &[&str]) {
    let mut full = vec!["llm-replay", "sweep"];
    full.extend_from_slice(argv);
    let Command::Sweep(args) = Cli::try_parse_from(full).unwrap().command else {
        unreachable!()
    };
    let plan = llm_replay::commands::sweep::plan(&args).unwrap();
    llm_replay::sweep::run(&plan, &Shutdown::new())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_writes_steps_tables_and_capacity_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let trace = crate::support::azure_trace();
    let common = [
        trace.as_str(),
        "--out-dir",
        out.to_str().unwrap(),
        "--requests",
        "12",
        "--arrivals",
        "constant",
        "--slo",
        "ttft=2s",
        "--goodput",
        "0.9",
        "--search-steps",
        "0",
        "--sim-decode-base-us",
        "300",
        "-q",
    ];
    let mut argv = common.to_vec();
    argv.extend(["--rates", "10,20"]);
    sweep(&argv).await;
    for step in ["rate=10", "rate=20"] {
        let r = read_results(&out.join(step).join("results.parquet")).unwrap();
        assert_eq!(r.rows.len(), 12, "{step}");
        assert_eq!(r.metadata["llm_replay.sweep_mode"], "rate");
    }
    let csv = std::fs::read_to_string(out.join("_sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with(
        "step,mode,offered,offered_rate,achieved_rate,requests,ok,errors,goodput_fraction"
    ));
    let capacity: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("_capacity.json")).unwrap())
            .unwrap();
    assert_eq!(capacity["slo_capacity_rate"], 20.0);
    let first_written = std::fs::metadata(out.join("rate=10/results.parquet"))
        .unwrap()
        .modified()
        .unwrap();

    // Without --resume, finished steps are never overwritten.
    let Command::Sweep(args) = Cli::try_parse_from(
        ["llm-replay", "sweep"]
            .into_iter()
            .chain(argv.iter().copied()),
    )
    .unwrap()
    .command
    else {
        unreachable!()
    };
    let plan = llm_replay::commands::sweep::plan(&args).unwrap();
    let err = llm_replay::sweep::run(&plan, &Shutdown::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--resume") && err.contains("--force"), "{err}");

    // With it, they are kept and only the new step runs.
    let mut argv = common.to_vec();
    argv.extend(["--rates", "10,20,40", "--resume"]);
    sweep(&argv).await;
    let again = std::fs::metadata(out.join("rate=10/results.parquet"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(first_written, again);
    assert_eq!(
        read_results(&out.join("rate=40/results.parquet"))
            .unwrap()
            .rows
            .len(),
        12
    );
    let csv = std::fs::read_to_string(out.join("_sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
}

#[test]
fn sweep_refuses_per_run_load_flags() {
    let Command::Sweep(args) = Cli::try_parse_from([
        "llm-replay",
        "sweep",
        "t.parquet",
        "--out-dir",
        "d",
        "--rates",
        "1,2",
        "--rate",
        "5",
    ])
    .unwrap()
    .command
    else {
        unreachable!()
    };
    let err = llm_replay::commands::sweep::plan(&args)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not --rate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_sweep_runs_a_closed_loop_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let trace = crate::support::azure_trace();
    sweep(&[
        trace.as_str(),
        "--out-dir",
        out.to_str().unwrap(),
        "--concurrency",
        "1,3",
        "--requests",
        "12",
        "--slo",
        "ttft=10s",
        "--search-steps",
        "0",
        "--sim-decode-base-us",
        "300",
        "-q",
    ])
    .await;
    for (step, users) in [("concurrency=1", 1), ("concurrency=3", 3)] {
        let r = read_results(&out.join(step).join("results.parquet")).unwrap();
        assert_eq!(r.rows.len(), 12, "{step}");
        assert_eq!(r.metadata["llm_replay.sweep_mode"], "concurrency");
        let config: serde_json::Value =
            serde_json::from_str(&r.metadata["llm_replay.config"]).unwrap();
        assert_eq!(config["closed_loop"]["users"], users, "{step}");
        // Never more in flight than the step's users.
        let mut edges: Vec<(i64, i32)> = r
            .rows
            .iter()
            .flat_map(|row| {
                [
                    (row.sent_at_us.unwrap(), 1),
                    (row.completed_at_us.unwrap(), -1),
                ]
            })
            .collect();
        edges.sort();
        let most = edges
            .iter()
            .scan(0, |n, &(_, d)| {
                *n += d;
                Some(*n)
            })
            .max()
            .unwrap();
        assert_eq!(most, users, "{step}");
    }
    let capacity: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("_capacity.json")).unwrap())
            .unwrap();
    assert_eq!(capacity["slo_capacity_concurrency"], 3.0);
    assert!(capacity["slo_capacity_rate"].is_null());
    // The report recomputes the same conclusion from the files.
    let report = llm_replay::report::load_sweep(&out, None).unwrap();
    assert_eq!(report.capacity.slo_capacity_concurrency, Some(3.0));
    assert_eq!(
        report.capacity.knee_concurrency,
        capacity["knee_concurrency"].as_f64()
    );
    let csv = std::fs::read_to_string(out.join("_sweep.csv")).unwrap();
    assert!(csv.contains(",concurrency,3.0,"), "{csv}");
}

/// The simulator prefills at `--sim-prefill-us` per token, so embeddings
/// of 200 tokens at 100 µs/token cost 20 ms each: the server tops out near
/// 50 req/s, and a sweep across it finds the knee. (A batch of at most 8
/// per engine step keeps completions from arriving in clumps longer than
/// a step's window.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_finds_the_embeddings_knee_of_the_prefill_cost_model() {
    use llm_replay::trace::{TraceMetadata, TraceRecord, TraceWriter};
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("embed.parquet");
    let mut w = TraceWriter::create(&trace).unwrap();
    for i in 0..60i64 {
        w.write(&TraceRecord {
            request_id: format!("e{i}"),
            input_tokens: 200,
            output_tokens: 1,
            source_row: i,
            request_kind: Some("embed".into()),
            ..TraceRecord::default()
        })
        .unwrap();
    }
    let mut meta = TraceMetadata::new("test");
    meta.rows_read = 60;
    w.finish(meta).unwrap();
    let out = dir.path().join("sweep");
    sweep(&[
        trace.to_str().unwrap(),
        "--api",
        "embeddings",
        "--out-dir",
        out.to_str().unwrap(),
        "--rates",
        "20,40,80",
        "--step-duration",
        "3s",
        "--sim-max-batch",
        "8",
        "--arrivals",
        "constant",
        "--search-steps",
        "0",
        "--sim-prefill-us",
        "100",
        "-q",
    ])
    .await;
    let report = llm_replay::report::load_sweep(&out, None).unwrap();
    assert_eq!(report.steps.len(), 3);
    for s in &report.steps {
        assert!(s.requests >= 50, "step {}: {}", s.offered, s.requests);
        assert_eq!(s.ok, s.requests, "step {}", s.offered);
    }
    let top = report.steps.iter().map(|s| s.request_throughput);
    let top = top.fold(0.0, f64::max);
    assert!(
        (35.0..=55.0).contains(&top),
        "throughput tops out near the cost model's 50 req/s: {top}"
    );
    assert_eq!(
        report.capacity.knee_offered_rate,
        Some(40.0),
        "{:?}",
        report
            .steps
            .iter()
            .map(|s| (s.offered, s.request_throughput))
            .collect::<Vec<_>>()
    );
}
