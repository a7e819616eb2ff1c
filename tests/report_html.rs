//! The HTML report of real runs and sweeps against the embedded simulator:
//! self-contained, every chart present, the metadata header, SLO lines, and
//! two inputs overlaid in one chart with a delta table.

use clap::Parser;
use llm_replay::cli::{Cli, Command};
use llm_replay::record::read_results;
use llm_replay::replay::Shutdown;
use llm_replay::report::{load, render_html};

fn parse(argv: &[&str]) -> Command {
    Cli::try_parse_from(argv).unwrap().command
}

async fn replay(out: &std::path::Path, seed: &str) {
    let Command::Replay(args) = parse(&[
        "llm-replay",
        "replay",
        "--synthetic",
        "input=40,output=6",
        "--rate",
        "40",
        "--requests",
        "16",
        "--seed",
        seed,
        "--slo",
        "ttft=500ms,tpot=50ms",
        "--sim-decode-base-us",
        "300",
        "-q",
        "-o",
        out.to_str().unwrap(),
    ]) else {
        unreachable!()
    };
    llm_replay::commands::replay::run(args).await.unwrap();
}

async fn sweep(out: &std::path::Path) {
    let trace = crate::support::azure_trace();
    let Command::Sweep(args) = parse(&[
        "llm-replay",
        "sweep",
        &trace,
        "--out-dir",
        out.to_str().unwrap(),
        "--rates",
        "20,40",
        "--requests",
        "10",
        "--search-steps",
        "0",
        "--slo",
        "ttft=500ms,tpot=50ms",
        "--sim-decode-base-us",
        "300",
        "-q",
    ]) else {
        unreachable!()
    };
    let plan = llm_replay::commands::sweep::plan(&args).unwrap();
    llm_replay::sweep::run(&plan, &Shutdown::new())
        .await
        .unwrap();
}

/// Nothing in the page is loaded from elsewhere.
fn assert_self_contained(html: &str) {
    for attr in ["src=", "href="] {
        for (i, _) in html.match_indices(attr) {
            let value = &html[i + attr.len()..(i + attr.len() + 12).min(html.len())];
            assert!(
                !value.contains("http") && !value.contains("//"),
                "{attr}{value}"
            );
        }
    }
    for remote in ["<script", "<link", "url(", "@import", "<img"] {
        assert!(!html.contains(remote), "{remote}");
    }
}

/// The `<figure>` of the chart titled `title`.
fn figure<'a>(html: &'a str, title: &str) -> &'a str {
    let at = html
        .find(&format!("<figcaption>{title}"))
        .unwrap_or_else(|| panic!("no chart {title:?}"));
    let start = html[..at].rfind("<figure").unwrap();
    let end = at + html[at..].find("</figure>").unwrap();
    &html[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_report_has_every_chart_the_header_and_slo_lines() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    sweep(&out).await;
    let meta = read_results(&out.join("rate=20/results.parquet"))
        .unwrap()
        .metadata;
    let html = render_html(&[load(&out, None, &[]).unwrap()]);
    assert_self_contained(&html);
    for title in [
        "TTFT from the schedule vs achieved throughput",
        "TPOT vs achieved throughput",
        "TTFT from the schedule vs offered load",
        "TPOT vs offered load",
        "ITL (inter-token latency) vs offered load",
        "E2E from the schedule vs offered load",
        "Throughput vs offered load",
        "Output tokens / s vs offered load",
        "Error rate vs offered load",
        "Goodput: share of requests meeting the SLO",
        "TTFT from the schedule, per step",
        "E2E from the schedule, per step",
    ] {
        let f = figure(&html, title);
        assert!(f.contains("<svg") && f.contains("<polyline"), "{title}");
    }
    // The SLO lines sit on the latency charts, the goodput target on the
    // share chart, which has an axis of its own (0-100%).
    assert!(figure(&html, "TTFT from the schedule vs offered load").contains("SLO ttft 500 ms"));
    assert!(figure(&html, "TPOT vs achieved throughput").contains("SLO tpot 50 ms"));
    let goodput = figure(&html, "Goodput: share of requests meeting the SLO");
    assert!(goodput.contains("goodput target 99%") && goodput.contains("100%"));
    // The header: the trace's hash and the seed, as the results file has them.
    let sha = &meta["llm_replay.trace_sha256"];
    assert_eq!(sha.len(), 64);
    assert!(html.contains(sha.as_str()));
    assert!(html.contains(&format!(
        "<th>seed</th><td>{}</td>",
        meta["llm_replay.seed"]
    )));
    assert!(html.contains("embedded simulator") && html.contains("rate sweep: 20, 40"));
}

/// The charts of a run.
const RUN_CHARTS: [&str; 7] = [
    "Offered vs achieved rate",
    "Requests in flight",
    "TTFT from the schedule, by scheduled second",
    "TTFT from the schedule: distribution",
    "E2E from the schedule: distribution",
    "TPOT and ITL: distribution",
    "Send lag (actual minus scheduled send): distribution",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_are_overlaid_in_each_chart_with_a_delta_table() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    replay(&a, "11").await;
    replay(&b, "12").await;
    let inputs = [load(&a, None, &[]).unwrap(), load(&b, None, &[]).unwrap()];
    let html = render_html(&inputs);
    assert_self_contained(&html);
    let one = render_html(&inputs[..1]);
    assert_self_contained(&one);
    assert!(!one.contains("class=\"delta\"") && !one.contains("data-input=\"1\""));
    for title in RUN_CHARTS {
        let f = figure(&one, title);
        assert!(f.contains("<svg") && f.contains("<polyline"), "{title}");
    }
    for title in RUN_CHARTS {
        let f = figure(&html, title);
        // One chart holds both inputs' series, each in its input's colour.
        assert!(
            f.contains("data-input=\"0\"") && f.contains("data-input=\"1\""),
            "{title}"
        );
        assert!(f.contains("#1f77b4") && f.contains("#ff7f0e"), "{title}");
    }
    let ttft = figure(&html, "TTFT from the schedule: distribution");
    assert!(ttft.contains("A TTFT") && ttft.contains("B TTFT"));
    // Both run under one SLO: its line is drawn once, for both.
    assert_eq!(ttft.matches("SLO ttft 500 ms").count(), 1);
    // The delta table: A, B, B/A and B-A of the key figures.
    let table = &html[html.find("<table class=\"delta\">").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    for row in [
        "TTFT p99 ms",
        "TPOT p99 ms",
        "ITL p99 ms",
        "throughput (ok req/s)",
    ] {
        assert!(table.contains(&format!("<th>{row}</th>")), "{row}");
    }
    assert!(table.contains("B / A") && table.contains("×"));
    let ratio = inputs.iter().map(|i| match i {
        llm_replay::report::Input::Run(r) => r.summary.ttft_from_schedule.p99_ms,
        llm_replay::report::Input::Sweep(_) => unreachable!(),
    });
    let [pa, pb]: [f64; 2] = ratio.collect::<Vec<_>>().try_into().unwrap();
    assert!(table.contains(&format!("{:.2}×", pb / pa)), "{table}");
    // Each input's seed in its column of the header, highlighted as a
    // difference; the model they share is not.
    assert!(
        html.contains("<tr class=\"differs\"><th>seed</th><td>11</td><td>12</td>"),
        "seeds"
    );
    assert!(html.contains("<tr><th>model</th>"));
    // And among the recorded options, only what tells them apart.
    let options = &html[html.find("<th>options that differ</th>").unwrap()..];
    let options = &options[..options.find("</tr>").unwrap()];
    assert!(options.contains("<div>seed=11</div>") && options.contains("<div>seed=12</div>"));
    assert!(!options.contains("model"), "{options}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sweeps_share_charts_and_compare_step_by_step() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    sweep(&a).await;
    sweep(&b).await;
    let html = render_html(&[load(&a, None, &[]).unwrap(), load(&b, None, &[]).unwrap()]);
    let f = figure(&html, "TTFT from the schedule vs achieved throughput");
    assert!(f.contains("A p99") && f.contains("B p99"));
    assert!(
        html.contains("<th>rate=20: TTFT p99 ms</th>")
            && html.contains("<th>SLO capacity (req/s)</th>")
    );
}
