//! Sessions inferred from Mooncake prefix chains (`ingest mooncake
//! --infer-sessions`) on 1,000 real rows: the trace read back agrees, row
//! by row, with the rule computed here by its plain O(n^2) definition over
//! the JSONL; without the flag nothing changes but the session columns.

use std::path::Path;

use clap::Parser;
use llm_replay::cli::{Cli, Command};
use llm_replay::ingest::mooncake::MIN_LINK_BLOCKS;
use llm_replay::trace::{Trace, read_trace};

const FIXTURE: &str = "mooncake_sessions_small.jsonl";

fn data(name: &str) -> String {
    format!("{}/datasets/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn ingest(out: &Path, extra: &[&str]) -> Trace {
    let mut argv = vec![
        "llm-replay".to_owned(),
        "ingest".into(),
        "mooncake".into(),
        data(FIXTURE),
    ];
    argv.extend(["-o".into(), out.display().to_string()]);
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let Command::Ingest(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    llm_replay::ingest::run(&llm_replay::commands::ingest::config(&args)).unwrap();
    read_trace(out).unwrap()
}

/// Each row's parent by the definition: the first earlier row whose full
/// blocks (all its ids but the last), at least MIN_LINK_BLOCKS of them, are
/// the longest strict prefix of the row's ids. Also the rows that had such
/// a candidate at all (linked or not).
fn parents_by_definition(rows: &[Vec<u64>]) -> (Vec<Option<usize>>, usize) {
    let mut parent = vec![None; rows.len()];
    let mut continued = vec![false; rows.len()];
    let mut candidates = 0;
    for (i, ids) in rows.iter().enumerate() {
        let mut best: Option<(usize, usize)> = None;
        for (j, earlier) in rows[..i].iter().enumerate() {
            let full = &earlier[..earlier.len() - 1];
            if full.len() >= MIN_LINK_BLOCKS
                && full.len() < ids.len()
                && ids.starts_with(full)
                && best.is_none_or(|(_, n)| full.len() > n)
            {
                best = Some((j, full.len()));
            }
        }
        if let Some((j, _)) = best {
            candidates += 1;
            // A parent already continued: the row is a branch, a root.
            if !continued[j] {
                continued[j] = true;
                parent[i] = Some(j);
            }
        }
    }
    (parent, candidates)
}

#[test]
fn mooncake_sessions_follow_prefix_chains() {
    let rows: Vec<Vec<u64>> = std::fs::read_to_string(data(FIXTURE))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::from_value(v["hash_ids"].clone()).unwrap()
        })
        .collect();
    assert_eq!(rows.len(), 1_000);
    let (parent, candidates) = parents_by_definition(&rows);
    let linked = parent.iter().flatten().count();

    let dir = tempfile::tempdir().unwrap();
    let t = ingest(&dir.path().join("s.parquet"), &["--infer-sessions"]);
    assert_eq!(t.records.len(), rows.len());
    let extra = &t.metadata.extra;
    assert_eq!(extra["mooncake.linked_turns"], linked.to_string());
    assert_eq!(
        extra["mooncake.branches"],
        (candidates - linked).to_string()
    );
    // The figures of this fixture (the module doc quotes 187 matches).
    assert_eq!((candidates, linked), (187, 164));

    let mut depth = vec![0i32; rows.len()];
    for (i, r) in t.records.iter().enumerate() {
        assert_eq!(r.request_id, format!("line{}", i + 1));
        match parent[i] {
            None => {
                assert_eq!(r.session_id.as_deref(), Some(r.request_id.as_str()));
                assert_eq!(r.turn_index, Some(0));
            }
            Some(p) => {
                depth[i] = depth[p] + 1;
                assert_eq!(r.session_id, t.records[p].session_id, "row {i}");
                assert_eq!(r.turn_index, Some(depth[i]), "row {i}");
            }
        }
        assert_eq!(r.think_time_us, None);
    }
    let max_depth = depth.iter().copied().max().unwrap();
    assert!(max_depth >= 3, "deepest turn {max_depth}");

    // `inspect` sees the sessions, and the trace keeps its invariants.
    let stats = llm_replay::trace::inspect::compute(&t);
    assert!(stats.violations.is_empty(), "{:?}", stats.violations);
    assert_eq!(stats.sessions, (rows.len() - linked) as u64);
    assert_eq!(stats.turns_per_session_max, Some(max_depth as u64 + 1));
    assert!(stats.to_string().contains("sessions"), "{stats}");

    // Without the flag: the same rows, no sessions.
    let plain = ingest(&dir.path().join("p.parquet"), &[]);
    assert!(
        plain
            .metadata
            .extra
            .keys()
            .all(|k| !k.starts_with("mooncake."))
    );
    for (p, r) in plain.records.iter().zip(&t.records) {
        assert_eq!((&p.session_id, p.turn_index), (&None, None));
        let mut r = r.clone();
        (r.session_id, r.turn_index) = (None, None);
        assert_eq!(*p, r);
    }
    assert_eq!(llm_replay::trace::inspect::compute(&plain).sessions, 0);
}

#[test]
fn infer_sessions_with_another_format_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-replay"))
        .args(["ingest", "azure", "--infer-sessions"])
        .arg(data("azure_conv_small.csv"))
        .arg("-o")
        .arg(dir.path().join("t.parquet"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("--infer-sessions") && err.contains("mooncake"),
        "{err}"
    );
    assert!(!dir.path().join("t.parquet").exists());
}
