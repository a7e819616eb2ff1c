//! Workloads without a dataset and reshaped traces, judged by the
//! statistics they are meant to keep or produce: `synth` reproduces its
//! asked distributions, `transform` keeps sessions whole and the trace's
//! own shape, and every output passes `inspect`'s invariants. All seeded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use llm_replay::record::read_results;
use llm_replay::schedule::Arrivals;
use llm_replay::trace::inspect::compute;
use llm_replay::trace::{Trace, TraceRecord, read_trace};
use llm_replay::workload::synth::{self, RateShape, SynthArrivals, SynthSpec};
use llm_replay::workload::transform::{self, Reweight, TransformSpec};

fn azure() -> Trace {
    read_trace(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/datasets/azure_conv_small.parquet"
    )))
    .unwrap()
}

/// A synthetic chat trace: Poisson session starts, 1 to 5 turns, shared
/// system prompts, written to `dir` so transforms can hash it.
fn chat_trace(dir: &Path, name: &str, sessions: u64, seed: u64) -> Trace {
    let mut spec = SynthSpec::new("normal:300,80".parse().unwrap(), "exp:120".parse().unwrap());
    spec.requests = Some(sessions);
    spec.arrivals = SynthArrivals::Process {
        process: Arrivals::Poisson,
        rate: RateShape::Constant(5.0),
        bursts: None,
    };
    spec.sessions.turns = "uniform:1,5".parse().unwrap();
    spec.sessions.think_time = "exp:4s".parse().unwrap();
    spec.sessions.system_prompt_tokens = 600;
    spec.sessions.system_prompts = 3;
    spec.seed = seed;
    let path = dir.join(name);
    synth::write(&spec, &path).unwrap();
    read_trace(&path).unwrap()
}

/// Writes transformed rows and reads them back, as `transform` does.
fn written(dir: &Path, name: &str, out: transform::Transformed) -> Trace {
    let path = dir.join(name);
    synth::write_records(&path, &out.records, out.metadata).unwrap();
    read_trace(&path).unwrap()
}

fn times(records: &[TraceRecord]) -> Vec<f64> {
    records
        .iter()
        .map(|r| r.arrival_offset_us.unwrap() as f64 / 1e6)
        .collect()
}

/// Session starts (first turns and lone requests), in seconds.
fn starts(t: &Trace) -> Vec<f64> {
    let mut v: Vec<f64> = t
        .records
        .iter()
        .filter(|r| r.turn_index.unwrap_or(0) == 0)
        .map(|r| r.arrival_offset_us.unwrap() as f64 / 1e6)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

fn gap_cv(sorted: &[f64]) -> f64 {
    let gaps: Vec<f64> = sorted.windows(2).map(|w| w[1] - w[0]).collect();
    let (m, sd) = mean_sd(&gaps);
    sd / m
}

/// Fano factor (variance / mean) of arrivals counted in `bin`-second bins.
fn fano(sorted: &[f64], bin: f64) -> f64 {
    let end = sorted.last().copied().unwrap_or(0.0);
    let n = (end / bin).floor() as usize;
    let mut counts = vec![0.0f64; n.max(1)];
    for t in sorted {
        let i = (t / bin) as usize;
        if i < n {
            counts[i] += 1.0;
        }
    }
    let (m, sd) = mean_sd(&counts);
    sd * sd / m
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Sessions as (id, rows by turn).
fn sessions(t: &Trace) -> BTreeMap<String, Vec<&TraceRecord>> {
    let mut out: BTreeMap<String, Vec<&TraceRecord>> = BTreeMap::new();
    for r in &t.records {
        if let Some(s) = &r.session_id {
            out.entry(s.clone()).or_default().push(r);
        }
    }
    for rows in out.values_mut() {
        rows.sort_by_key(|r| r.turn_index);
    }
    out
}

/// How many sessions have each number of turns.
fn turn_histogram(t: &Trace) -> BTreeMap<usize, usize> {
    let mut h = BTreeMap::new();
    for rows in sessions(t).values() {
        *h.entry(rows.len()).or_insert(0) += 1;
    }
    h
}

fn assert_invariants(t: &Trace) {
    let stats = compute(t);
    assert!(
        stats.violations.is_empty(),
        "{}: {:?}",
        t.path.display(),
        stats.violations
    );
}

#[test]
fn scale_load_two_doubles_the_rate_and_keeps_the_arrival_shape() {
    let dir = tempfile::tempdir().unwrap();
    let input = azure();
    let spec = TransformSpec {
        scale_load: Some(2.0),
        jitter: Duration::from_secs(20),
        seed: 7,
        ..TransformSpec::default()
    };
    let out = written(
        dir.path(),
        "x2.parquet",
        transform::apply(std::slice::from_ref(&input), &spec).unwrap(),
    );
    assert_invariants(&out);
    assert_eq!(out.records.len(), 2 * input.records.len());
    let (a, b) = (starts(&input), starts(&out));
    let rate = |v: &[f64]| v.len() as f64 / v.last().unwrap();
    let ratio = rate(&b) / rate(&a);
    assert!((1.9..=2.1).contains(&ratio), "rate ratio {ratio}");
    // Counting burstiness, as a server sees it, is kept: each copy is the
    // trace's own process shifted, so variance and mean both double, plus
    // the trace's slow swings, which the copies share (here 1.62 -> 2.03).
    let (fa, fb) = (fano(&a, 1.0), fano(&b, 1.0));
    assert!(
        (fb / fa - 1.0).abs() < 0.3,
        "Fano factor in 1 s bins: {fa:.2} -> {fb:.2}"
    );
    // The gap CV stays near the trace's: a superposition of two copies
    // drifts toward 1 (here 1.34 -> 1.15; a stationary gamma trace of CV
    // 1.43 gives 1.36), which the bound allows and a per-row reshuffle of
    // times (CV -> 1.0) does not.
    let (ca, cb) = (gap_cv(&a), gap_cv(&b));
    assert!(ca > 1.2, "the fixture is bursty: CV {ca}");
    assert!((cb - ca).abs() < 0.2, "gap CV {ca:.2} -> {cb:.2}");
    // Per-unit shifts would have smoothed it toward Poisson; a thinning
    // keeps it too.
    let half = transform::apply(
        std::slice::from_ref(&input),
        &TransformSpec {
            scale_load: Some(0.5),
            seed: 7,
            ..TransformSpec::default()
        },
    )
    .unwrap();
    let n = half.records.len() as f64;
    let expect = input.records.len() as f64 / 2.0;
    assert!((n - expect).abs() < 3.0 * expect.sqrt(), "{n} rows kept");
}

#[test]
fn scale_load_keeps_sessions_whole_with_fresh_ids_and_shared_system_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let input = chat_trace(dir.path(), "chat.parquet", 600, 1);
    let out = written(
        dir.path(),
        "x2.parquet",
        transform::apply(
            std::slice::from_ref(&input),
            &TransformSpec {
                scale_load: Some(2.0),
                seed: 3,
                ..TransformSpec::default()
            },
        )
        .unwrap(),
    );
    assert_invariants(&out);
    // Every session copied whole: the turns-per-session histogram doubles.
    let before = turn_histogram(&input);
    let after = turn_histogram(&out);
    let doubled: BTreeMap<usize, usize> = before.iter().map(|(k, v)| (*k, 2 * v)).collect();
    assert_eq!(after, doubled);
    let rate = |t: &Trace| {
        let s = starts(t);
        s.len() as f64 / s.last().unwrap()
    };
    let ratio = rate(&out) / rate(&input);
    assert!((1.9..=2.1).contains(&ratio), "session rate ratio {ratio}");
    // Think times and turn order inside each copy are the original's.
    let orig = sessions(&input);
    let copies = sessions(&out);
    for (id, rows) in &copies {
        let base = id.split('#').next().unwrap();
        let o = &orig[base];
        assert_eq!(rows.len(), o.len(), "{id}");
        for (r, s) in rows.iter().zip(o) {
            assert_eq!(
                (r.input_tokens, r.output_tokens),
                (s.input_tokens, s.output_tokens)
            );
            assert_eq!(r.think_time_us, s.think_time_us);
        }
    }
    // A copy's own history blocks are fresh; its system prompt blocks are
    // shared with the original's.
    let first_block = |rows: &Vec<&TraceRecord>| rows[0].prefix_block_ids.as_ref().unwrap()[0];
    let last_block = |rows: &Vec<&TraceRecord>| {
        *rows
            .last()
            .unwrap()
            .prefix_block_ids
            .as_ref()
            .unwrap()
            .last()
            .unwrap()
    };
    let mut fresh = 0;
    for (id, rows) in copies.iter().filter(|(id, _)| id.contains('#')) {
        let o = &orig[id.split('#').next().unwrap()];
        assert_eq!(
            first_block(rows),
            first_block(o),
            "{id}: system prompt shared"
        );
        fresh += usize::from(last_block(rows) != last_block(o));
    }
    assert_eq!(fresh, orig.len(), "every copy has its own history blocks");
}

#[test]
fn sample_sessions_never_splits_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let input = chat_trace(dir.path(), "chat.parquet", 800, 2);
    for (fraction, seed) in [(0.3, 1), (0.5, 2), (0.9, 3)] {
        let out = written(
            dir.path(),
            &format!("s{seed}.parquet"),
            transform::apply(
                std::slice::from_ref(&input),
                &TransformSpec {
                    sample_sessions: Some(fraction),
                    seed,
                    ..TransformSpec::default()
                },
            )
            .unwrap(),
        );
        assert_invariants(&out);
        let orig = sessions(&input);
        let kept = sessions(&out);
        let n = kept.len() as f64;
        let expect = orig.len() as f64 * fraction;
        let sd = (orig.len() as f64 * fraction * (1.0 - fraction)).sqrt();
        assert!((n - expect).abs() < 4.0 * sd, "{n} of {expect} sessions");
        for (id, rows) in &kept {
            let o = &orig[id];
            assert_eq!(rows.len(), o.len(), "session {id} split");
            for (r, s) in rows.iter().zip(o) {
                assert_eq!(r.request_id, s.request_id);
                assert_eq!(r.turn_index, s.turn_index);
                assert_eq!(r.prefix_block_ids, s.prefix_block_ids);
            }
        }
    }
}

#[test]
fn merged_traces_keep_every_invariant_and_their_shares() {
    let dir = tempfile::tempdir().unwrap();
    let chat = chat_trace(dir.path(), "chat.parquet", 500, 4);
    let inputs = [azure(), chat];
    let out = transform::apply(
        &inputs,
        &TransformSpec {
            merge_shares: vec![0.6, 0.4],
            seed: 5,
            ..TransformSpec::default()
        },
    )
    .unwrap();
    let merged = written(dir.path(), "merged.parquet", out);
    assert_invariants(&merged);
    assert_eq!(merged.metadata.source_format, "merge");
    // Ids stay distinct and say where each row came from.
    let from_azure = merged
        .records
        .iter()
        .filter(|r| r.request_id.starts_with("azure_conv_small"))
        .count() as f64;
    let units = (from_azure + sessions(&merged).len() as f64).max(1.0);
    let share = from_azure / units;
    assert!(
        (share - 0.6).abs() < 0.06,
        "share of the first trace {share}"
    );
    // The transforms list names both inputs by hash.
    let list: serde_json::Value =
        serde_json::from_str(&merged.metadata.extra["transforms"]).unwrap();
    let inputs = list[0]["inputs"].as_array().unwrap();
    assert_eq!(list[0]["op"], "merge");
    assert_eq!(inputs.len(), 2);
    for i in inputs {
        assert_eq!(i["sha256"].as_str().unwrap().len(), 64);
    }
    // Composed with the other operations, still valid.
    let composed = transform::apply(
        std::slice::from_ref(&merged),
        &TransformSpec {
            window: Some((Duration::from_secs(10), Duration::from_secs(80))),
            scale_load: Some(3.0),
            scale_lengths: Some((1.7, 0.5)),
            cap: (Some(1500), None),
            compress_day: Some((Duration::from_secs(70), Duration::from_secs(35))),
            reweight: Some("request_kind:(none)=1".parse::<Reweight>().unwrap()),
            seed: 6,
            ..TransformSpec::default()
        },
    )
    .unwrap();
    assert_eq!(composed.applied.len(), 6);
    let composed = written(dir.path(), "composed.parquet", composed);
    assert_invariants(&composed);
    assert!(composed.records.iter().all(|r| r.input_tokens <= 1500));
    let list: serde_json::Value =
        serde_json::from_str(&composed.metadata.extra["transforms"]).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        7,
        "the merge and the six after it"
    );
}

#[test]
fn synth_reproduces_its_asked_means_and_percentiles() {
    let mut spec = SynthSpec::new(
        "normal:512,128".parse().unwrap(),
        "lognormal:200,100".parse().unwrap(),
    );
    spec.requests = Some(20_000);
    spec.arrivals = SynthArrivals::Process {
        process: Arrivals::Poisson,
        rate: RateShape::Constant(50.0),
        bursts: None,
    };
    spec.seed = 11;
    let t = synth::generate(&spec).unwrap();
    let mut input: Vec<f64> = t
        .records
        .iter()
        .map(|r| f64::from(r.input_tokens))
        .collect();
    let mut output: Vec<f64> = t
        .records
        .iter()
        .map(|r| f64::from(r.output_tokens))
        .collect();
    input.sort_by(f64::total_cmp);
    output.sort_by(f64::total_cmp);
    let n = input.len() as f64;
    let (m, sd) = mean_sd(&input);
    assert!((m - 512.0).abs() < 4.0 * 128.0 / n.sqrt(), "input mean {m}");
    assert!((sd - 128.0).abs() < 4.0, "input sd {sd}");
    // Normal quantiles: p50 = mean, p90 = mean + 1.2816 sd.
    assert!((quantile(&input, 0.5) - 512.0).abs() < 4.0);
    assert!((quantile(&input, 0.9) - (512.0 + 1.2816 * 128.0)).abs() < 6.0);
    // Lognormal with mean 200 and sd 100: median 200 / sqrt(1.25).
    let (m, sd) = mean_sd(&output);
    assert!(
        (m - 200.0).abs() < 4.0 * 100.0 / n.sqrt(),
        "output mean {m}"
    );
    assert!((sd - 100.0).abs() < 5.0, "output sd {sd}");
    let median = 200.0 / 1.25f64.sqrt();
    assert!((quantile(&output, 0.5) - median).abs() < 3.0);
    // Poisson arrivals at 50/s: the rate, and gaps with CV 1.
    let ts = times(&t.records);
    let rate = ts.len() as f64 / ts.last().unwrap();
    assert!((rate - 50.0).abs() < 50.0 * 4.0 / n.sqrt(), "rate {rate}");
    let cv = gap_cv(&ts);
    assert!((cv - 1.0).abs() < 0.03, "gap CV {cv}");
    assert!((fano(&ts, 1.0) - 1.0).abs() < 0.1);
}

#[test]
fn synth_sessions_come_out_with_the_asked_turns_and_think_times() {
    let mut spec = SynthSpec::new("200".parse().unwrap(), "50".parse().unwrap());
    spec.requests = Some(4_000);
    spec.sessions.turns = "uniform:1,5".parse().unwrap();
    spec.sessions.think_time = "exp:4s".parse().unwrap();
    spec.seed = 12;
    let t = synth::generate(&spec).unwrap();
    let mut by: HashMap<&str, Vec<&TraceRecord>> = HashMap::new();
    for r in &t.records {
        by.entry(r.session_id.as_deref().unwrap())
            .or_default()
            .push(r);
    }
    assert_eq!(by.len(), 4_000);
    let turns: Vec<f64> = by.values().map(|v| v.len() as f64).collect();
    let (m, _) = mean_sd(&turns);
    assert!((m - 3.0).abs() < 0.06, "turns per session {m}");
    assert!(turns.iter().all(|t| (1.0..=5.0).contains(t)));
    let think: Vec<f64> = t
        .records
        .iter()
        .filter(|r| r.turn_index.unwrap_or(0) > 0)
        .map(|r| r.think_time_us.unwrap() as f64 / 1e6)
        .collect();
    let (m, _) = mean_sd(&think);
    let se = 4.0 / (think.len() as f64).sqrt();
    assert!((m - 4.0).abs() < 4.0 * se, "think time mean {m}");
    // Each turn's prompt is the history plus its own 200 tokens.
    for rows in by.values_mut() {
        rows.sort_by_key(|r| r.turn_index);
        for (k, r) in rows.iter().enumerate() {
            assert_eq!(r.input_tokens, 200 + k as i32 * 250, "{}", r.request_id);
        }
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llm-replay"));
    c.env_remove("OPENAI_API_KEY");
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn synth_and_transform_feed_replay_on_the_embedded_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| -> PathBuf { dir.path().join(n) };
    let (code, out, err) = run(bin()
        .args(["synth", "--input-tokens", "100", "--output-tokens", "16"])
        .args([
            "--arrivals",
            "poisson:100",
            "--requests",
            "60",
            "--seed",
            "1",
        ])
        .arg("-o")
        .arg(p("t.parquet")));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("synth         input=100 output=16"), "{out}");
    assert!(out.contains("invariants    all hold"), "{out}");
    let (code, out, err) = run(bin()
        .arg("transform")
        .arg(p("t.parquet"))
        .args(["--scale-load", "2", "--jitter", "100ms", "--seed", "2"])
        .arg("-o")
        .arg(p("t2.parquet")));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("transform     scale_load"), "{out}");
    assert!(out.contains("rows          120"), "{out}");
    let (code, _, err) = run(bin()
        .arg("replay")
        .arg(p("t2.parquet"))
        .args(["-q", "--sim-zero-delay"])
        .arg("-o")
        .arg(p("r.parquet")));
    assert_eq!(code, 0, "{err}");
    let results = read_results(&p("r.parquet")).unwrap();
    assert_eq!(results.rows.len(), 120);
    assert!(results.rows.iter().all(|r| r.input_tokens == 100));
    // A one-liner: the spec inline, the trace written beside the results.
    let (code, _, err) = run(bin()
        .args([
            "replay",
            "--synthetic",
            "input=normal:100,20,output=8,requests=30,seed=4",
        ])
        .args(["--rate", "200", "-q", "--sim-zero-delay", "-o"])
        .arg(p("s.parquet")));
    assert_eq!(code, 0, "{err}");
    let generated = read_trace(&p("s.trace.parquet")).unwrap();
    assert_eq!(generated.records.len(), 30);
    assert!(generated.metadata.extra["synth"].starts_with("input=normal:100,20 output=8"));
    let results = read_results(&p("s.parquet")).unwrap();
    assert_eq!(results.rows.len(), 30);
    // Rows come in completion order; they join back by request id.
    let by_id: HashMap<&str, &TraceRecord> = generated
        .records
        .iter()
        .map(|r| (r.request_id.as_str(), r))
        .collect();
    for row in &results.rows {
        assert_eq!(
            row.input_tokens,
            by_id[row.request_id.as_str()].input_tokens
        );
    }
    let (code, _, err) = run(bin()
        .args([
            "replay",
            "--synthetic",
            "input=100,outptu=8",
            "--rate",
            "5",
            "-o",
        ])
        .arg(p("s2.parquet")));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--synthetic"), "{err}");
    // A sweep of a generated trace keeps it in its directory, where a
    // resume finds the same rows.
    let sweep = |extra: &[&str]| {
        run(bin()
            .args([
                "sweep",
                "--synthetic",
                "input=50,output=4,requests=40",
                "--rates",
                "40",
            ])
            .args([
                "--step-duration",
                "1s",
                "--warmup",
                "0s",
                "--cooldown",
                "0s",
            ])
            .args(["--sim-zero-delay", "-q", "--out-dir"])
            .arg(p("sw"))
            .args(extra))
    };
    let (code, _, err) = sweep(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        read_trace(&p("sw/_trace.parquet")).unwrap().records.len(),
        40
    );
    let (code, out, err) = sweep(&["--resume"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("r=40"), "{out}");
    // Bad input names the flag and exits 64; the output is never an input.
    let (code, _, err) = run(bin()
        .args(["synth", "--input-tokens", "gamma:3", "-o"])
        .arg(p("x.parquet")));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--input-tokens"), "{err}");
    let (code, _, err) = run(bin()
        .args(["synth", "--rate", "5", "--arrivals", "none", "-o"])
        .arg(p("x.parquet")));
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = run(bin()
        .arg("transform")
        .arg(p("t.parquet"))
        .args(["--sample-sessions", "0.5", "-o"])
        .arg(p("t.parquet")));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("input of this run"), "{err}");
    let (code, _, err) = run(bin()
        .arg("transform")
        .arg(p("t.parquet"))
        .args(["--reweight", "model:gpt=1", "-o"])
        .arg(p("y.parquet")));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no sessions of class"), "{err}");
}
