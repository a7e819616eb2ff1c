//! The edge as a user meets it: the real binary as a child process, stopped
//! by real signals, refusing to overwrite, and exiting with the documented
//! codes. These tests wait on the child's own output and exit, never on
//! wall-clock tolerances tighter than seconds.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use llm_replay::record::read_results;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llm-replay"));
    c.env_remove("OPENAI_API_KEY");
    c
}

fn trace() -> String {
    crate::support::azure_trace()
}

/// A running replay whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = bin()
            .arg("replay")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { child, stderr: rx }
    }

    /// Waits for the line announcing the run (t=0 is 200 ms later).
    fn wait_started(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stderr
                .recv_timeout(left)
                .expect("the run never started");
            if line.starts_with("replaying ") {
                return;
            }
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Waits for the exit; returns the code and how long it took.
    fn wait(mut self, limit: Duration) -> (Option<i32>, Duration, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut out = String::new();
                use std::io::Read;
                self.child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                return (status.code(), start.elapsed(), out);
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("the run did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[test]
fn sigterm_and_sighup_mid_run_keep_every_sent_request() {
    for (signal, code) in [("TERM", 143), ("HUP", 129)] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("r.parquet");
        let run = Running::start(&[
            &trace(),
            "--rate",
            "100",
            "--duration",
            "60s",
            "-o",
            out.to_str().unwrap(),
            "-q",
            "--grace",
            "2s",
        ]);
        run.wait_started();
        std::thread::sleep(Duration::from_secs(2));
        run.signal(signal);
        let (status, took, stdout) = run.wait(Duration::from_secs(30));
        assert_eq!(status, Some(code), "SIG{signal}: {stdout}");
        assert!(took < Duration::from_secs(10), "SIG{signal}: took {took:?}");
        let results = read_results(&out).unwrap();
        assert!(
            results.rows.len() >= 100,
            "SIG{signal}: {} rows",
            results.rows.len()
        );
        // Every row left (the rows are the requests that were due), and
        // none is left unfinished.
        assert!(results.rows.iter().all(|r| r.sent_at_us.is_some()));
        assert_eq!(
            results.metadata["llm_replay.stopped_by"],
            format!("SIG{signal}")
        );
        assert!(results.metadata.contains_key("llm_replay.summary"));
        let not_reached: u64 = results.metadata["llm_replay.requests_not_reached"]
            .parse()
            .unwrap();
        assert!(not_reached > 4_000, "SIG{signal}: {not_reached}");
        assert!(
            stdout.contains(&format!("stopped       by SIG{signal}")),
            "{stdout}"
        );
    }
}

#[test]
fn sigkill_loses_at_most_about_a_second_of_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.parquet");
    let run = Running::start(&[
        &trace(),
        "--rate",
        "100",
        "--duration",
        "60s",
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--sim-zero-delay",
    ]);
    run.wait_started();
    std::thread::sleep(Duration::from_secs(4));
    let killed_at = now_us();
    run.signal("KILL");
    let (status, _, _) = run.wait(Duration::from_secs(10));
    assert_eq!(status, None, "killed by a signal");
    let results = read_results(&out).unwrap();
    let last = results
        .rows
        .iter()
        .filter_map(|r| r.completed_at_us)
        .max()
        .unwrap();
    let lost_us = killed_at - last;
    // A checkpoint every second, plus a loaded machine's slack.
    assert!(lost_us < 2_500_000, "rows of the last {lost_us} µs lost");

    // The report says the run is incomplete, in text and JSON.
    let (code, text, err) = output(bin().arg("report").arg(&out));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("incomplete")),
        "{text}"
    );
    let (_, json, _) = output(bin().arg("report").arg(&out).args(["--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[0]["complete"], false, "{json}");
}

#[test]
fn ctrl_c_on_a_ten_hour_schedule_exits_within_the_grace_with_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.parquet");
    let run = Running::start(&[
        &trace(),
        "--rate",
        "200",
        "--duration",
        "10h",
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--grace",
        "1s",
        // Answers at once, so memory holds few requests in flight and
        // only a schedule built up front could make it grow.
        "--sim-zero-delay",
    ]);
    run.wait_started();
    // The allocator's per-thread heaps fill in the first seconds; from
    // then on memory must stay where it is.
    std::thread::sleep(Duration::from_secs(2));
    let early = run.rss_kib();
    std::thread::sleep(Duration::from_secs(2));
    let late = run.rss_kib();
    run.signal("INT");
    let (status, took, _) = run.wait(Duration::from_secs(30));
    assert_eq!(status, Some(130));
    assert!(
        took < Duration::from_secs(4),
        "took {took:?} with --grace 1s"
    );
    // The 7.2M-request schedule is never built: memory holds the requests
    // in flight, not the run's length.
    assert!(late < early + 64 * 1024, "RSS {early} -> {late} KiB");
    let results = read_results(&out).unwrap();
    assert!(results.rows.len() < 10_000, "{} rows", results.rows.len());
    let not_reached: u64 = results.metadata["llm_replay.requests_not_reached"]
        .parse()
        .unwrap();
    assert!(not_reached > 7_000_000, "{not_reached}");
}

fn output(cmd: &mut Command) -> (Option<i32>, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn replay_n(out: &Path, requests: u32) -> Command {
    let mut c = bin();
    c.args([
        "replay",
        &trace(),
        "-q",
        "--sim-zero-delay",
        "--rate",
        "200",
        "--requests",
    ])
    .arg(requests.to_string())
    .arg("-o")
    .arg(out);
    c
}

fn small_replay(out: &Path) -> Command {
    replay_n(out, 5)
}

#[test]
fn outputs_are_never_overwritten_and_never_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.parquet");
    let (code, _, err) = output(&mut small_replay(&out));
    assert_eq!(code, Some(0), "{err}");
    let before = std::fs::read(&out).unwrap();

    // An existing results file.
    let (code, _, err) = output(&mut small_replay(&out));
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), before, "left untouched");

    // The trace itself, even with --force.
    let copy = dir.path().join("trace.parquet");
    std::fs::copy(trace(), &copy).unwrap();
    let (code, _, err) = output(
        bin()
            .args(["replay", "--requests", "2", "-q", "--force", "-o"])
            .arg(&copy)
            .arg(&copy),
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("input of this run"), "{err}");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(trace()).unwrap()
    );

    // The summary JSON onto the same run's results.
    let other = dir.path().join("r2.parquet");
    let (code, _, err) = output(small_replay(&other).arg("--summary-json").arg(&other));
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("-o writes there already"), "{err}");

    // An unwritable --summary-json is found before the run.
    let (code, _, err) = output(
        small_replay(&other)
            .arg("--summary-json")
            .arg(dir.path().join("no/such/dir/s.json")),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!other.exists(), "nothing was run");

    // report -o onto its own input, and onto an existing file.
    let (code, _, err) = output(bin().args(["report"]).arg(&out).arg("-o").arg(&out));
    assert_eq!(code, Some(64), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), before);
    let existing = dir.path().join("report.txt");
    std::fs::write(&existing, "keep me").unwrap();
    let (code, _, err) = output(bin().args(["report"]).arg(&out).arg("-o").arg(&existing));
    assert_eq!(code, Some(64), "{err}");
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me");
    let (code, _, err) = output(
        bin()
            .args(["report", "--force"])
            .arg(&out)
            .arg("-o")
            .arg(&existing),
    );
    assert_eq!(code, Some(0), "{err}");
    assert_ne!(std::fs::read_to_string(&existing).unwrap(), "keep me");

    // --force replaces an existing results file.
    let (code, _, err) = output(small_replay(&out).arg("--force"));
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn sweep_resume_refuses_steps_of_another_trace() {
    let dir = tempfile::tempdir().unwrap();
    let sweep_dir = dir.path().join("s");
    let sweep = |trace: &Path, extra: &[&str]| {
        let mut c = bin();
        c.args(["sweep"])
            .arg(trace)
            .arg("--out-dir")
            .arg(&sweep_dir)
            .args(["--rates", "20", "--requests", "4", "-q", "--sim-zero-delay"])
            .args(extra);
        output(&mut c)
    };
    let (code, _, err) = sweep(Path::new(&trace()), &[]);
    assert_eq!(code, Some(0), "{err}");
    // The same directory without --resume or --force.
    let (code, _, err) = sweep(Path::new(&trace()), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--resume") && err.contains("--force"), "{err}");
    // Another trace: the same rows cut short, so another SHA-256.
    let copy = dir.path().join("other.parquet");
    let t = llm_replay::trace::read_trace(Path::new(&trace())).unwrap();
    let mut w = llm_replay::trace::TraceWriter::create(&copy).unwrap();
    for r in t.records.iter().take(50) {
        w.write(r).unwrap();
    }
    w.finish(t.metadata.clone()).unwrap();
    let (code, _, err) = sweep(&copy, &["--resume"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("another trace"), "{err}");
}

#[test]
fn a_run_where_every_request_fails_exits_3_with_the_servers_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.parquet");
    let (code, stdout, err) = output(small_replay(&out).args(["--sim-fail-500", "1"]));
    assert_eq!(code, Some(3), "{stdout}{err}");
    assert!(stdout.contains("every request failed"), "{stdout}");
    assert!(
        stdout.contains("error         http_error 500 x5"),
        "{stdout}"
    );
    assert!(err.contains("every request failed (5 of 5)"), "{err}");
    assert!(
        !stdout.contains("TTFT"),
        "no latencies of nothing: {stdout}"
    );
}

#[test]
fn max_error_rate_turns_partial_failure_into_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.parquet");
    let mut c = replay_n(&out, 40);
    c.args(["--sim-fail-429", "0.5", "--max-error-rate", "10%"]);
    let (code, _, err) = output(&mut c);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("above --max-error-rate 10.0%"), "{err}");
    let (code, _, err) =
        output(replay_n(&dir.path().join("r2.parquet"), 40).args(["--sim-fail-429", "0.5"]));
    assert_eq!(code, Some(0), "only total failure fails by default: {err}");
}

/// The embedded simulator serves every model a run names, so this runs
/// against one on its own (as `llm-replay sim` is), serving its one model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_model_is_caught_before_the_run() {
    let server = llm_replay::sim::start(
        llm_replay::sim::SimConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.parquet");
    let url = server.url();
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        output(small_replay(&out).args(["--url", &url, "--model", "no-such-model"]))
    })
    .await
    .unwrap();
    let out = dir.path().join("r.parquet");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("does not serve model \"no-such-model\""),
        "{err}"
    );
    assert!(
        err.contains("llm-replay-sim"),
        "lists the served models: {err}"
    );
    assert!(!out.exists(), "nothing was sent");
}

#[test]
fn usage_errors_exit_64_and_name_the_flag() {
    let (code, _, err) = output(bin().args(["replay", "t.parquet", "--rate", "-1"]));
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--rate") && err.contains("positive"), "{err}");
    for (args, says) in [
        (&["--stages", "10/s:1s", "--rate", "5"][..], "--rate"),
        (&["--stages", "10/s:1s,2u:1s"][..], "all rates"),
        (&["--stages", "10/s"][..], "LOAD:DURATION"),
        (&["--ramp", "5s"][..], "--stages"),
    ] {
        let (code, _, err) = output(bin().args(["replay", "t.parquet"]).args(args));
        assert_eq!(code, Some(64), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, out, _) = output(bin().args(["--help"]));
    assert_eq!(code, Some(0));
    assert!(out.contains("replay"));
}

#[test]
fn ingest_never_replaces_its_input_or_an_existing_trace() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("b.jsonl");
    let fixture = format!(
        "{}/datasets/bailian_small.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::copy(&fixture, &input).unwrap();
    let before = std::fs::read(&input).unwrap();

    // Its own input, even with --force.
    for force in [false, true] {
        let mut cmd = bin();
        cmd.args(["ingest", "bailian"])
            .arg(&input)
            .arg("-o")
            .arg(&input);
        if force {
            cmd.arg("--force");
        }
        let (code, _, err) = output(&mut cmd);
        assert_eq!(code, Some(64), "{err}");
        assert!(err.contains("input of this run"), "{err}");
        assert_eq!(std::fs::read(&input).unwrap(), before);
    }

    // An existing trace: refused, then replaced with --force.
    let out = dir.path().join("t.parquet");
    std::fs::write(&out, "keep me").unwrap();
    let ingest = |force: bool| {
        let mut cmd = bin();
        cmd.args(["ingest", "bailian"])
            .arg(&input)
            .arg("-o")
            .arg(&out);
        if force {
            cmd.arg("--force");
        }
        output(&mut cmd)
    };
    let (code, _, err) = ingest(false);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
    let (code, stdout, err) = ingest(true);
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.contains("wrote"), "{stdout}");
    assert!(llm_replay::trace::read_trace(&out).is_ok());

    // A failed ingest leaves nothing behind.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"chat_id\": 1}\n").unwrap();
    let failed = dir.path().join("f.parquet");
    let (code, _, err) = output(
        bin()
            .args(["ingest", "bailian"])
            .arg(&bad)
            .arg("-o")
            .arg(&failed),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(!failed.exists());
    assert!(!dir.path().join("f.parquet.partial").exists());

    // --block-size 0 is refused at the edge, naming the flag.
    let (code, _, err) = output(
        bin()
            .args(["ingest", "bailian", "--block-size", "0"])
            .arg(&input)
            .arg("-o")
            .arg(dir.path().join("z.parquet")),
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--block-size"), "{err}");
}

#[test]
fn a_bad_extra_body_names_the_flag_the_file_and_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, "{\n  \"ignore_eos\": @\n}\n").unwrap();
    let at = format!("@{}", file.display());
    for (value, says) in [
        (at.as_str(), "line 2"),
        ("[1, 2]", "expected a JSON object"),
        (r#"{"max_tokens": 5}"#, "\"max_tokens\""),
        ("@/no/such/file.json", "cannot read it"),
    ] {
        let (code, _, err) = output(bin().args(["replay", &trace(), "--extra-body", value]));
        assert_eq!(code, Some(64), "{value}: {err}");
        assert!(
            err.contains("--extra-body") && err.contains(says),
            "{value}: {err}"
        );
    }
}

/// The `llm_replay.config` JSON of a results file.
fn run_config(path: &Path) -> serde_json::Value {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap();
    let config = kv.iter().find(|k| k.key == "llm_replay.config").unwrap();
    serde_json::from_str(config.value.as_deref().unwrap()).unwrap()
}

/// `--realtime` either runs the engines under SCHED_FIFO and says so in
/// the run config, or, where the process may not, fails before any
/// results file exists, naming what it needs. Which of the two happens
/// depends on the machine's privileges; as root with `setpriv`, the
/// refusal is also provoked by dropping CAP_SYS_NICE.
#[test]
fn realtime_engines_are_granted_or_refused_before_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |out: &Path, code: Option<i32>, stderr: &str| {
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("--realtime") && stderr.contains("CAP_SYS_NICE"),
            "{stderr}"
        );
        assert!(!out.exists(), "a refused --realtime left {}", out.display());
    };
    let out = dir.path().join("rt.parquet");
    let (code, _, stderr) = output(replay_n(&out, 20).arg("--realtime"));
    if code == Some(0) {
        assert_eq!(
            run_config(&out)["target"]["realtime"],
            serde_json::json!(true)
        );
        let rows = read_results(&out).unwrap().rows;
        assert_eq!(rows.len(), 20);
    } else {
        refused(&out, code, &stderr);
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let setpriv = std::path::Path::new("/usr/bin/setpriv").exists();
    if root && setpriv {
        let out = dir.path().join("rt-refused.parquet");
        let mut cmd = Command::new("/usr/bin/setpriv");
        cmd.args(["--bounding-set=-sys_nice", "--inh-caps=-sys_nice"])
            .arg(env!("CARGO_BIN_EXE_llm-replay"))
            .args(replay_n(&out, 20).get_args())
            .arg("--realtime");
        let (code, _, stderr) = output(&mut cmd);
        refused(&out, code, &stderr);
        // Refused before --synthetic writes its trace beside the results.
        let out = dir.path().join("rt-synthetic.parquet");
        let mut cmd = Command::new("/usr/bin/setpriv");
        cmd.args(["--bounding-set=-sys_nice", "--inh-caps=-sys_nice"])
            .arg(env!("CARGO_BIN_EXE_llm-replay"))
            .args(["replay", "--synthetic", "input=8,output=2,requests=3"])
            .args(["--rate", "10", "--realtime", "-q", "-o"])
            .arg(&out);
        let (code, _, stderr) = output(&mut cmd);
        refused(&out, code, &stderr);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("rt-synthetic"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
