//! End-to-end open-loop bench: `llm-replay replay` in its own process
//! against an independent server in another (pinned to separate cores with
//! `LLM_REPLAY_BENCH_PIN=1` where `taskset` exists), 100-token prompts and
//! 16-token streams, at 500 to 10,000 requests per second. Prints achieved
//! rate, send lag p50/p99/max, client CPU per request and peak memory per
//! rate; then, for memory flatness, the peak memory of a long run against
//! a short one.
//!
//! The server is the minimal responder of `responder.rs` (this bench
//! re-executed; it busy-polls on its own core), cheap enough for 10,000
//! requests a second; two more rows run against the embedded simulator
//! (`llm-replay sim --sim-zero-delay`), which costs ~120 µs a request and
//! so tops out near 8,500/s on one core. Each rate runs against a server
//! of its own that logs arrivals, and a second table judges the run from
//! that log: the rate, gap CV and Fano factor the server saw next to the
//! schedule's own, and how late each request arrived against its
//! `scheduled_at`.
//!
//! When `wrk` is installed (`apt-get install wrk`), the same rates are also
//! sent by wrk, paced by a Lua `delay()` per connection, against the same
//! responder, and the CPU per request of llm-replay is set against wrk's
//! from the same run (wrk reads each whole response; it parses no SSE
//! event, times no token and writes no row, so the ratio is an upper bound
//! of what llm-replay's extra work costs).
//!
//! `LLM_REPLAY_BENCH_PIN=1 cargo bench --bench open_loop`
//! (`LLM_REPLAY_BENCH_SECONDS=N` sets each step's length, default 10;
//! `LLM_REPLAY_BENCH_LONG=1` adds a 1,000,000-request run.)

// A bench that cannot set up has nothing to measure: failing loudly is right.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use llm_replay::trace::{TraceMetadata, TraceRecord, TraceWriter};

mod responder;

const BIN: &str = env!("CARGO_BIN_EXE_llm-replay");

/// With `LLM_REPLAY_BENCH_PIN=1`, client and simulator run on one core each
/// (the client then shares its core among its dispatcher, runtime and
/// recorder threads); by default the OS places them.
fn pinned(core: &str) -> Command {
    if std::env::var("LLM_REPLAY_BENCH_PIN").is_ok() && Path::new("/usr/bin/taskset").exists() {
        let mut c = Command::new("taskset");
        c.args(["-c", core, BIN]);
        c
    } else {
        Command::new(BIN)
    }
}

fn write_trace(path: &Path, rows: usize) {
    let mut w = TraceWriter::create(path).unwrap();
    for i in 0..rows {
        w.write(&TraceRecord {
            request_id: format!("b{i}"),
            input_tokens: 100,
            output_tokens: 16,
            source_row: i as i64,
            ..TraceRecord::default()
        })
        .unwrap();
    }
    let mut meta = TraceMetadata::new("bench");
    meta.rows_read = rows as u64;
    meta.tokenizer = Some("o200k_base".into());
    w.finish(meta).unwrap();
}

/// Sessions of four turns, no think time, prompts growing by 32 tokens a
/// turn (so each turn repeats the one before).
fn write_session_trace(path: &Path, sessions: usize) {
    let mut w = TraceWriter::create(path).unwrap();
    for s in 0..sessions {
        for t in 0..4 {
            let i = s * 4 + t;
            w.write(&TraceRecord {
                request_id: format!("s{s}t{t}"),
                input_tokens: 32 * (t as i32 + 1) + 16 * t as i32,
                output_tokens: 16,
                session_id: Some(format!("s{s}")),
                turn_index: Some(t as i32),
                think_time_us: (t > 0).then_some(0),
                source_row: i as i64,
                ..TraceRecord::default()
            })
            .unwrap();
        }
    }
    let mut meta = TraceMetadata::new("bench");
    meta.rows_read = (sessions * 4) as u64;
    meta.tokenizer = Some("o200k_base".into());
    w.finish(meta).unwrap();
}

fn run(dir: &Path, trace: &Path, url: &str, rate: u32, extra: &[&str]) -> serde_json::Value {
    run_keeping(dir, trace, url, rate, extra, false).0
}

/// [`run`], keeping the results file when `keep` (its path is returned).
fn run_keeping(
    dir: &Path,
    trace: &Path,
    url: &str,
    rate: u32,
    extra: &[&str],
    keep: bool,
) -> (serde_json::Value, std::path::PathBuf) {
    // Outputs are never overwritten: every run gets its own names.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = dir.join(format!("r{rate}-{n}.parquet"));
    let summary = dir.join(format!("s{rate}-{n}.json"));
    let status = pinned("0")
        .args([
            "replay",
            trace.to_str().unwrap(),
            "--url",
            url,
            "--model",
            "llm-replay-sim",
        ])
        .args(["--rate", &rate.to_string(), "--order", "shuffle", "-q"])
        .args([
            "-o",
            out.to_str().unwrap(),
            "--summary-json",
            summary.to_str().unwrap(),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    if !keep {
        std::fs::remove_file(&out).unwrap();
    }
    (s, out)
}

/// A loopback port nothing listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A simulator on its own core, logging arrivals to `log`.
fn logging_sim(port: u16, log: &Path) -> std::process::Child {
    let sim = pinned("1")
        .args([
            "sim",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--sim-zero-delay",
            "--sim-max-batch",
            "100000",
            "--log-arrivals",
            log.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    sim
}

/// The minimal responder (`responder.rs`: this bench re-executed) on its
/// own core, logging arrivals to `log`.
fn logging_responder(port: u16, log: &Path) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    // Pinned, it has its core to itself and busy-polls; unpinned it would
    // take CPU from the client, so it sleeps between events.
    let pin =
        std::env::var("LLM_REPLAY_BENCH_PIN").is_ok() && Path::new("/usr/bin/taskset").exists();
    let mut c = if pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg("1").arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let child = c
        .env(
            "LLM_REPLAY_BENCH_RESPOND",
            format!("{port},{}{}", log.display(), if pin { ",spin" } else { "" }),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    child
}

/// Stops the responder by closing its standard input; it writes its
/// arrival log and exits.
fn stop_responder(mut child: std::process::Child) {
    drop(child.stdin.take());
    let _ = child.wait();
}

/// A server of the bench, logging arrivals.
#[derive(Clone, Copy, PartialEq)]
enum Server {
    /// The minimal responder: cheap enough for 10,000 requests a second
    /// on one core.
    Responder,
    /// `llm-replay sim --sim-zero-delay`: the embedded simulator.
    Sim,
}

impl Server {
    fn start(self, port: u16, log: &Path) -> std::process::Child {
        match self {
            Self::Responder => logging_responder(port, log),
            Self::Sim => logging_sim(port, log),
        }
    }

    fn stop(self, child: std::process::Child) {
        match self {
            Self::Responder => stop_responder(child),
            Self::Sim => stop(child),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Responder => "minimal responder",
            Self::Sim => "embedded simulator",
        }
    }
}

/// Whether this machine lets `--realtime` put the engines under SCHED_FIFO
/// (a one-request run on the embedded simulator says).
fn realtime_allowed(dir: &Path) -> bool {
    Command::new(BIN)
        .args([
            "replay",
            "--synthetic",
            "input=8,output=2,requests=1",
            "--rate",
            "10",
            "--realtime",
            "-q",
        ])
        .arg("-o")
        .arg(dir.join("realtime-probe.parquet"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops a simulator with SIGINT, so that it writes its arrival log.
fn stop(mut sim: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-INT", &sim.id().to_string()])
        .status();
    let _ = sim.wait();
}

/// The server's view of one run: its arrivals' spread, the schedule's own
/// spread for reference, and each arrival's lateness against its schedule.
fn server_side(results: &Path, log: &Path) -> String {
    use llm_replay::sim::arrivals::{read_log, spread};
    let rows = llm_replay::record::read_results(results).unwrap().rows;
    let scheduled: std::collections::HashMap<String, i64> = rows
        .iter()
        .map(|r| {
            let id = if r.repeat_index == 0 {
                r.request_id.clone()
            } else {
                format!("{}#{}", r.request_id, r.repeat_index)
            };
            (id, r.scheduled_at_us)
        })
        .collect();
    let arrivals = read_log(log).unwrap();
    let mut at: Vec<i64> = arrivals.iter().map(|a| a.0).collect();
    let server = spread(&mut at);
    let mut sched: Vec<i64> = rows.iter().map(|r| r.scheduled_at_us).collect();
    let planned = spread(&mut sched);
    let mut jitter: Vec<i64> = arrivals
        .iter()
        .filter_map(|(t, id)| scheduled.get(id).map(|s| t - s))
        .collect();
    jitter.sort_unstable();
    let q = |p: f64| {
        jitter
            .get(((jitter.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |&v| v as f64 / 1e3)
    };
    format!(
        "{:>9} {:>10.1} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>9.3}ms {:>9.3}ms {:>9.3}ms",
        server.count,
        server.rate,
        server.gap_cv,
        planned.gap_cv,
        server.fano,
        planned.fano,
        q(0.5),
        q(0.99),
        q(1.0),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Ok(spec) = std::env::var("LLM_REPLAY_BENCH_RESPOND") {
        let mut parts = spec.split(',');
        let port = parts.next().unwrap().parse().unwrap();
        let log = parts.next().unwrap();
        responder::run(port, log, parts.next() == Some("spin"));
        return;
    }
    let seconds: u64 = std::env::var("LLM_REPLAY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("short.parquet");
    write_trace(&trace, 10_000);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let sim = pinned("1")
        .args([
            "sim",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--sim-zero-delay",
            "--sim-max-batch",
            "100000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The simulator goes with the bench, even when a step fails.
    let _sim = KillOnDrop(sim);
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "open-loop replay, {seconds} s per rate, 100-token prompts, 16-token streams, zero model delay"
    );
    println!(
        "{:>7} {:>10} {:>9} {:>10} {:>10} {:>10} {:>8} {:>12} {:>9}",
        "rate",
        "achieved",
        "error",
        "lag p50",
        "lag p99",
        "lag max",
        "ok",
        "CPU/request",
        "peak MiB"
    );
    let mut judged = Vec::new();
    // (rate, achieved, CPU µs per request) of our runs, for the wrk table.
    let mut ours: Vec<(u32, f64, f64)> = Vec::new();
    // The rates against the minimal responder, then two against the
    // embedded simulator for reference (it tops out near 8,500/s on one
    // core, so 10,000/s there measures the simulator).
    // Where the engines may run under SCHED_FIFO, 10,000/s once more with
    // `--realtime`.
    let mut steps = vec![
        (Server::Responder, 500u32, false),
        (Server::Responder, 1_000, false),
        (Server::Responder, 2_000, false),
        (Server::Responder, 5_000, false),
        (Server::Responder, 10_000, false),
    ];
    if realtime_allowed(dir.path()) {
        steps.push((Server::Responder, 10_000, true));
    }
    steps.extend([(Server::Sim, 1_000, false), (Server::Sim, 5_000, false)]);
    for (server, rate, realtime) in steps {
        // Each rate gets a server of its own, whose arrival log judges
        // the run from the server's side.
        let port = free_port();
        let log = dir
            .path()
            .join(format!("arrivals-{rate}-{}-{realtime}.csv", server as u8));
        let child = server.start(port, &log);
        let duration = format!("{seconds}s");
        let mut extra = vec!["--duration", duration.as_str()];
        if realtime {
            extra.push("--realtime");
        }
        let (s, results) = run_keeping(
            dir.path(),
            &trace,
            &format!("http://127.0.0.1:{port}"),
            rate,
            &extra,
            true,
        );
        server.stop(child);
        let label = if realtime {
            format!("{}, --realtime", server.name())
        } else {
            server.name().to_owned()
        };
        judged.push((rate, label.clone(), server_side(&results, &log)));
        std::fs::remove_file(&results).unwrap();
        let f = &s["fidelity"];
        if server == Server::Responder && !realtime && [1_000, 5_000, 10_000].contains(&rate) {
            ours.push((
                rate,
                f["achieved_rate"].as_f64().unwrap_or(0.0),
                s["client"]["cpu_us_per_request"].as_f64().unwrap_or(0.0),
            ));
        }
        println!(
            "{rate:>7} {:>10.1} {:>8.2}% {:>8.3}ms {:>8.3}ms {:>8.3}ms {:>8} {:>10.1}µs {:>9.0}  {}",
            f["achieved_rate"].as_f64().unwrap_or(0.0),
            f["rate_error"].as_f64().unwrap_or(0.0) * 100.0,
            f["send_lag"]["p50_ms"].as_f64().unwrap_or(0.0),
            f["send_lag"]["p99_ms"].as_f64().unwrap_or(0.0),
            f["send_lag"]["max_ms"].as_f64().unwrap_or(0.0),
            s["outcomes"]["ok"].as_u64().unwrap_or(0),
            s["client"]["cpu_us_per_request"].as_f64().unwrap_or(0.0),
            s["client"]["peak_rss_mib"].as_f64().unwrap_or(0.0),
            label,
        );
    }
    println!(
        "at the server (Poisson schedule; gap CV and Fano factor of 10 ms counts are 1 for Poisson; lateness = arrival - scheduled_at):"
    );
    println!(
        "{:>7} {:>9} {:>10} {:>7} {:>7} {:>7} {:>7} {:>11} {:>11} {:>11}",
        "rate",
        "arrivals",
        "rate",
        "CV",
        "CV plan",
        "Fano",
        "F plan",
        "late p50",
        "late p99",
        "late max"
    );
    for (rate, label, line) in judged {
        println!("{rate:>7} {line}  {label}");
    }
    if wrk_available() {
        println!(
            "llm-replay against wrk (paced, one thread, 64 connections), {seconds} s per rate, same minimal responder:"
        );
        println!(
            "{:>7} {:>12} {:>12} {:>12} {:>12} {:>7}",
            "rate", "ours req/s", "ours CPU/req", "wrk req/s", "wrk CPU/req", "ratio"
        );
        for (rate, ours_rate, ours_cpu) in &ours {
            let port = free_port();
            let log = dir.path().join(format!("wrk-arrivals-{rate}.csv"));
            let child = Server::Responder.start(port, &log);
            let (wrk_rate, wrk_cpu) = wrk_run(dir.path(), port, *rate, seconds);
            Server::Responder.stop(child);
            println!(
                "{rate:>7} {ours_rate:>12.1} {ours_cpu:>10.1}µs {wrk_rate:>12.1} {wrk_cpu:>10.1}µs {:>6.1}x",
                ours_cpu / wrk_cpu.max(1e-9)
            );
        }
    } else {
        println!("wrk is not installed (apt-get install wrk): no comparison run");
    }
    // Memory over run length at the target rate, against the responder.
    let mut lengths = vec![100_000u64, 300_000];
    if std::env::var("LLM_REPLAY_BENCH_LONG").is_ok() {
        lengths.push(1_000_000);
    }
    println!("memory over run length at 10,000 requests/s (minimal responder):");
    for n in lengths {
        let port = free_port();
        let log = dir.path().join(format!("memory-{n}.csv"));
        let child = Server::Responder.start(port, &log);
        let s = run(
            dir.path(),
            &trace,
            &format!("http://127.0.0.1:{port}"),
            10_000,
            &["--requests", &n.to_string()],
        );
        Server::Responder.stop(child);
        println!(
            "  {n:>9} requests: peak {:.0} MiB, achieved {:.1} req/s, lag p99 {:.3} ms, CPU/request {:.1}µs",
            s["client"]["peak_rss_mib"].as_f64().unwrap_or(0.0),
            s["fidelity"]["achieved_rate"].as_f64().unwrap_or(0.0),
            s["fidelity"]["send_lag"]["p99_ms"].as_f64().unwrap_or(0.0),
            s["client"]["cpu_us_per_request"].as_f64().unwrap_or(0.0),
        );
    }
    // Session replay overhead: 250 sessions/s of four turns is about 1,000
    // turns/s (each later turn leaves when the reply before it ended), the
    // same trace as independent rows at 1,000 requests/s for comparison.
    let sessions = dir.path().join("sessions.parquet");
    write_session_trace(&sessions, 5_000);
    println!("session replay, 4-turn sessions, no think time, {seconds} s:");
    for (label, rate, extra) in [
        ("sessions 250/s", 250u32, "auto"),
        ("independent 1000/s", 1_000, "independent"),
    ] {
        let s = run(
            dir.path(),
            &sessions,
            &url,
            rate,
            &["--duration", &format!("{seconds}s"), "--sessions", extra],
        );
        let turns = s["requests"].as_f64().unwrap_or(0.0);
        let secs = s["duration_s"].as_f64().unwrap_or(1.0).max(1e-9);
        println!(
            "  {label:<20} {:>8.1} requests/s, ok {:>6}, CPU/request {:>6.1}µs, peak {:>4.0} MiB, first-turn lag p99 {:.3} ms",
            turns / secs,
            s["outcomes"]["ok"].as_u64().unwrap_or(0),
            s["client"]["cpu_us_per_request"].as_f64().unwrap_or(0.0),
            s["client"]["peak_rss_mib"].as_f64().unwrap_or(0.0),
            s["fidelity"]["send_lag"]["p99_ms"].as_f64().unwrap_or(0.0),
        );
    }
}

fn wrk_available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// wrk at `rate` for `seconds` against the simulator on `port`: 64
/// connections, each waiting 64/rate seconds before its next request (Lua
/// `delay()`, whole milliseconds), the same 16-token streamed completion
/// as ours. Returns the achieved rate and wrk's CPU per request, µs (user
/// and system time from the shell's `times`).
fn wrk_run(dir: &Path, port: u16, rate: u32, seconds: u64) -> (f64, f64) {
    const CONNECTIONS: u32 = 64;
    let script = dir.join(format!("wrk-{rate}.lua"));
    let prompt = vec!["word"; 100].join(" ");
    let body = serde_json::json!({
        "model": "llm-replay-sim",
        "prompt": prompt,
        "max_tokens": 16,
        "stream": true,
    });
    let delay_ms = (f64::from(CONNECTIONS) * 1000.0 / f64::from(rate))
        .round()
        .max(1.0);
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = [[{body}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\nfunction delay() return {delay_ms} end\n"
        ),
    )
    .unwrap();
    let pin = if std::env::var("LLM_REPLAY_BENCH_PIN").is_ok()
        && Path::new("/usr/bin/taskset").exists()
    {
        "taskset -c 0 "
    } else {
        ""
    };
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{pin}wrk -t1 -c{CONNECTIONS} -d{seconds}s -s {} http://127.0.0.1:{port}/v1/completions; times",
            script.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let requests: f64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().parse().unwrap_or(0.0))
        })
        .unwrap_or(0.0);
    // `times` prints the shell's own times, then its children's.
    let child = text.lines().last().unwrap_or("");
    let secs = |t: &str| -> f64 {
        let (m, s) = t
            .trim_end_matches('s')
            .split_once('m')
            .unwrap_or(("0", "0"));
        m.parse::<f64>().unwrap_or(0.0) * 60.0 + s.parse::<f64>().unwrap_or(0.0)
    };
    let cpu: f64 = child.split_whitespace().map(secs).sum();
    let per_request = if requests > 0.0 {
        cpu * 1e6 / requests
    } else {
        0.0
    };
    (requests / seconds as f64, per_request)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
