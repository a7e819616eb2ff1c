//! A sharded run: N processes with `--shard K/N` and one `--start-at`
//! together send exactly the schedule one process would, and `report`
//! reads their directory as one run.

use std::collections::BTreeSet;
use std::process::Command;

use llm_replay::record::read_results;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llm-replay"));
    c.env_remove("OPENAI_API_KEY");
    c
}

/// `(trace_row, repeat_index, scheduled_at)` of every row, and its t0.
fn schedule_of(path: &std::path::Path) -> (Vec<(i64, i32, i64)>, String) {
    let r = read_results(path).unwrap();
    let t0 = r.metadata["llm_replay.t0"].clone();
    (
        r.rows
            .iter()
            .map(|row| (row.trace_row, row.repeat_index, row.scheduled_at_us))
            .collect(),
        t0,
    )
}

#[test]
fn two_shards_send_exactly_the_single_process_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let trace = crate::support::azure_trace();
    // One start time for all three processes, far enough ahead that each
    // is set up before it.
    let start = (chrono::Utc::now() + chrono::Duration::seconds(4))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let common = |cmd: &mut Command| {
        cmd.arg("replay")
            .arg(&trace)
            .args(["--rate", "60", "--requests", "45", "--order", "shuffle"])
            .args(["--seed", "5", "--sim-zero-delay", "-q", "--start-at"])
            .arg(&start);
    };
    let single = dir.path().join("single.parquet");
    let sharded = dir.path().join("sharded");
    let mut children = Vec::new();
    let mut one = bin();
    common(&mut one);
    children.push(one.arg("-o").arg(&single).spawn().unwrap());
    for k in 0..2 {
        let mut cmd = bin();
        common(&mut cmd);
        cmd.args(["--shard", &format!("{k}/2"), "-o"]).arg(&sharded);
        children.push(cmd.spawn().unwrap());
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }

    let (whole, t0) = schedule_of(&single);
    assert_eq!(whole.len(), 45);
    let mut union = Vec::new();
    for k in 0..2 {
        let path = sharded.join(format!("shard={k}/results.parquet"));
        let r = read_results(&path).unwrap();
        assert_eq!(r.metadata["llm_replay.shard"], format!("{k}/2"));
        let (rows, shard_t0) = schedule_of(&path);
        assert_eq!(shard_t0, t0, "every process starts at --start-at");
        // Interleaved: 23 and 22 of the 45.
        assert_eq!(rows.len(), if k == 0 { 23 } else { 22 });
        union.extend(rows);
    }
    let whole: BTreeSet<_> = whole.into_iter().collect();
    let union_set: BTreeSet<_> = union.iter().copied().collect();
    assert_eq!(union.len(), union_set.len(), "no entry sent twice");
    assert_eq!(union_set, whole, "row for row the single schedule");

    let out = bin().arg("report").arg(&sharded).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("shard 0/2") && text.contains("shard 1/2"),
        "{text}"
    );
    assert!(text.contains("requests              45"), "{text}");

    // A start time already past is refused before anything is sent.
    let mut late = bin();
    late.arg("replay")
        .arg(&trace)
        .args(["--rate", "5", "--start-at", "2020-01-01T00:00:00Z", "-o"])
        .arg(dir.path().join("late.parquet"));
    let out = late.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has passed"));
    assert!(!dir.path().join("late.parquet").exists());
}

/// `(trace_row, repeat_index, session_id, turn_index)` of every row, and
/// whether each session's turns (in each repeat) left in order, each after the one before it ended.
type Turns = BTreeSet<(i64, i32, Option<String>, Option<i32>)>;

fn turns_of(path: &std::path::Path) -> (Turns, bool) {
    let r = read_results(path).unwrap();
    let mut by_session = std::collections::BTreeMap::new();
    for row in &r.rows {
        if let Some(s) = &row.session_id {
            let key = (s.clone(), row.repeat_index);
            by_session.entry(key).or_insert_with(Vec::new).push((
                row.turn_index,
                row.sent_at_us,
                row.completed_at_us,
            ));
        }
    }
    let ordered = by_session.values_mut().all(|turns| {
        turns.sort();
        turns.windows(2).all(|w| w[1].1 >= w[0].2)
    });
    let rows = r
        .rows
        .iter()
        .map(|row| {
            (
                row.trace_row,
                row.repeat_index,
                row.session_id.clone(),
                row.turn_index,
            )
        })
        .collect();
    (rows, ordered)
}

#[test]
fn engine_threads_share_the_schedule_and_keep_sessions_whole() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("conversations.parquet");
    let ingest = bin()
        .args(["ingest", "sharegpt"])
        .arg(format!(
            "{}/datasets/sharegpt_small.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg("-o")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(ingest.status.success());
    let run = |engines: &str, sessions: bool| {
        let out = dir.path().join(format!("e{engines}-{sessions}.parquet"));
        let mut cmd = bin();
        cmd.arg("replay")
            .arg(&trace)
            .args(["--rate", "200", "--seed", "3", "--sim-zero-delay", "-q"])
            .args(["--engine-threads", engines, "-o"])
            .arg(&out);
        // The trace four times over: 9 sessions of 15 turns, or 15 rows.
        if sessions {
            cmd.args(["--requests", "36"]);
        } else {
            cmd.args(["--requests", "60", "--sessions", "independent"]);
        }
        assert!(cmd.status().unwrap().success());
        out
    };
    for sessions in [true, false] {
        let (one, ordered_one) = turns_of(&run("1", sessions));
        let threaded = run("3", sessions);
        let (three, ordered_three) = turns_of(&threaded);
        assert_eq!(
            read_results(&threaded).unwrap().rows.len(),
            60,
            "sessions {sessions}"
        );
        assert_eq!(one, three, "the same requests, whatever the threads");
        if sessions {
            assert!(ordered_one && ordered_three, "turns waited for replies");
        }
    }
}
