//! Ingest of production logs (`openai-log`): nothing private reaches the
//! trace (canaries planted in every content and id field), prefix sharing
//! and sessions survive the scrub, the fixtures of each log shape ingest,
//! and bad lines are named by file, line and field without their content.

use std::path::{Path, PathBuf};

use clap::Parser;
use llm_replay::cli::{Cli, Command};
use llm_replay::tokenize::{Tokenizer, TokenizerSpec};
use llm_replay::trace::{Trace, read_trace};
use serde_json::{Value, json};

fn data(name: &str) -> String {
    format!("{}/datasets/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn ingest_paths(inputs: &[String], out: &Path, extra: &[&str]) -> Result<Trace, String> {
    let mut argv = vec![
        "llm-replay".to_owned(),
        "ingest".into(),
        "openai-log".into(),
    ];
    argv.extend(inputs.iter().cloned());
    argv.extend(["-o".into(), out.display().to_string()]);
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let Command::Ingest(args) = Cli::try_parse_from(argv)
        .map_err(|e| e.to_string())?
        .command
    else {
        unreachable!()
    };
    llm_replay::ingest::run(&llm_replay::commands::ingest::config(&args))
        .map_err(|e| format!("{e:#}"))?;
    read_trace(out).map_err(|e| e.to_string())
}

fn ingest(inputs: &[&str], out: &Path, extra: &[&str]) -> Result<Trace, String> {
    let inputs: Vec<String> = inputs.iter().map(|i| data(i)).collect();
    ingest_paths(&inputs, out, extra)
}

fn out(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

fn stat(t: &Trace, key: &str) -> u64 {
    let stats: Value = serde_json::from_str(&t.metadata.extra["openai_log.stats"]).unwrap();
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("stat {key} in {stats}"))
}

/// Words that are one o200k token each after a space.
const WORDS: &[&str] = &[
    "river", "stone", "cloud", "paper", "green", "table", "water", "light", "house", "train",
    "music", "field", "glass", "bread", "chair", "night",
];

/// Text of about `n` tokens, different for each `seed` from its first word.
fn words(n: usize, seed: usize) -> String {
    let mut out = format!("Topic{seed}:");
    for i in 0..n {
        out.push(' ');
        out.push_str(WORDS[(i * 7 + seed * 3 + i / 5) % WORDS.len()]);
    }
    out
}

const CANARIES: &[&str] = &[
    "Zelda Quistgaard",
    "zelda.quistgaard@canary-mail.example",
    "sk-canary-9f8e7d6c5b4a3928",
    "203.0.113.77",
    "CanaryBrowser/7.7",
    "req-canary-00042",
    "sess-canary-life",
    "tenant-canary-blue",
    "CANARY-TOOL-DESCRIPTION",
    "canary_lookup_fn",
    "CANARY-ARGUMENT-VALUE",
    "CANARY-REPLY-TEXT",
    "chatcmpl-canary-0001",
    "canary-metadata-value",
];

/// A log where every content and id field holds a canary, built with a
/// known prefix structure: two system prompts (each over two 512-token
/// blocks and under three with what follows them) shared by several
/// users, and one conversation that resends its history. Returns the log
/// and, per line, the system prompt's group and the conversation turn.
fn canary_log() -> (String, Vec<(usize, Option<usize>)>) {
    let tok = Tokenizer::load(&TokenizerSpec::O200kBase).unwrap();
    let systems = [words(1150, 1), words(1150, 2)];
    for s in &systems {
        let n = tok.count(s).unwrap();
        assert!((1060..1400).contains(&n), "system prompt of {n} tokens");
    }
    let mut lines = Vec::new();
    let mut layout = Vec::new();
    let tools = json!([{"type": "function", "function": {
        "name": "canary_lookup_fn", "description": "CANARY-TOOL-DESCRIPTION",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
    let mut t = 1_700_000_000.0f64;
    // Independent requests: group = which system prompt.
    for i in 0..6 {
        let group = i % 2;
        let user = format!(
            "{} {} asks from {}: {}",
            CANARIES[0],
            CANARIES[1],
            CANARIES[3],
            words(700, 10 + i)
        );
        t += 0.5;
        lines.push(json!({
            "timestamp": t,
            "request_id": CANARIES[5],
            "client_ip": CANARIES[3],
            "user_agent": CANARIES[4],
            "authorization": format!("Bearer {}", CANARIES[2]),
            "metadata": {"note": CANARIES[13], "tenant": CANARIES[7]},
            "request": {
                "model": "test-model",
                "user": CANARIES[1],
                "tools": tools,
                "messages": [
                    {"role": "system", "content": systems[group]},
                    {"role": "user", "content": user},
                ],
            },
            "response": {
                "id": CANARIES[12],
                "choices": [{"message": {"role": "assistant", "content": CANARIES[11],
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {
                        "name": "canary_lookup_fn", "arguments": format!("{{\"q\": \"{}\"}}", CANARIES[10])}}]}}],
            },
        }));
        layout.push((group, None));
    }
    // One conversation resending its history, with a session id as well on
    // its first turn only (the later turns are linked by their history).
    let mut history = vec![
        json!({"role": "system", "content": systems[0]}),
        json!({"role": "user", "content": format!("{} {}", CANARIES[0], words(600, 40))}),
    ];
    for turn in 0..3 {
        let reply = format!("{} {}", CANARIES[11], words(300, 50 + turn));
        t += 5.0;
        let mut rec = json!({
            "timestamp": t,
            "end_time": t + 1.0,
            "request": {"model": "test-model", "tools": tools, "messages": history.clone()},
            "response": {"choices": [{"message": {"role": "assistant", "content": reply}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 30}},
        });
        if turn == 0 {
            rec["session_id"] = json!(CANARIES[6]);
        }
        rec["response"]["usage"] = Value::Null;
        lines.push(rec);
        layout.push((0, Some(turn)));
        history.push(json!({"role": "assistant", "content": reply}));
        history.push(json!({"role": "user", "content": format!("{} {}", CANARIES[1], words(200, 60 + turn))}));
    }
    let text = lines
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    (text + "\n", layout)
}

fn shared_blocks(a: &[u64], b: &[u64]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[test]
fn canaries_never_reach_the_trace_and_prefix_sharing_survives() {
    let dir = tempfile::tempdir().unwrap();
    let (log, layout) = canary_log();
    for c in CANARIES {
        assert!(log.contains(c), "the fixture plants {c}");
    }
    let input = dir.path().join("canary.jsonl");
    std::fs::write(&input, &log).unwrap();
    let path = out(&dir, "t.parquet");
    let t = ingest_paths(
        &[input.display().to_string()],
        &path,
        &["--salt", "a canary salt value"],
    )
    .unwrap();
    assert_eq!(t.records.len(), layout.len());

    // Nothing private in the bytes, the decoded columns or the metadata.
    let bytes = std::fs::read(&path).unwrap();
    let mut decoded = String::new();
    for r in &t.records {
        for s in [
            Some(&r.request_id),
            r.session_id.as_ref(),
            r.model.as_ref(),
            r.request_kind.as_ref(),
            r.prompt_text.as_ref(),
            r.user_id.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            decoded.push_str(s);
            decoded.push('\n');
        }
    }
    for (k, v) in t.metadata.to_key_values() {
        decoded.push_str(&k);
        decoded.push_str(&v);
    }
    for c in CANARIES.iter().chain(["a canary salt value"].iter()) {
        assert!(
            memchr::memmem::find(&bytes, c.as_bytes()).is_none(),
            "{c} in the file's bytes"
        );
        assert!(!decoded.contains(c), "{c} in a decoded value");
    }
    let report: Value = serde_json::to_value(t.metadata.scrub.as_ref().unwrap()).unwrap();
    assert_eq!(report["strings_found"], 0);
    assert!(report["strings_checked"].as_u64().unwrap() >= CANARIES.len() as u64);
    assert_eq!(report["fields"]["request.messages"][1], "tokenized");
    assert_eq!(report["fields"]["authorization"][1], "dropped");
    assert_eq!(report["fields"]["request.user"][1], "hashed");

    // Rows are in log order here (times increase); match them to the layout.
    let blocks: Vec<&Vec<u64>> = t
        .records
        .iter()
        .map(|r| r.prefix_block_ids.as_ref().unwrap())
        .collect();
    for i in 0..layout.len() {
        for j in 0..i {
            let got = shared_blocks(blocks[i], blocks[j]);
            let want = match (layout[i], layout[j]) {
                // Later turns share all of an earlier turn's full blocks.
                ((_, Some(a)), (_, Some(b))) if a > b => blocks[j].len(),
                // Same system prompt: its two full blocks (tools first).
                ((gi, _), (gj, _)) if gi == gj => 2,
                _ => 0,
            };
            assert_eq!(got, want, "rows {j} and {i} share {got} blocks");
        }
    }
    // Ids are small integers in first-seen order.
    assert_eq!(blocks[0][..2], [0, 1]);
    // The conversation is one session, its turns linked by history.
    let conv: Vec<_> = t.records[6..].iter().collect();
    assert!(conv.iter().all(|r| r.session_id == conv[0].session_id));
    assert_eq!(
        conv.iter().map(|r| r.turn_index).collect::<Vec<_>>(),
        [Some(0), Some(1), Some(2)]
    );
    assert_eq!(conv[1].think_time_us, Some(4_000_000));
    assert_eq!(stat(&t, "turns_linked_by_history"), 2);
    // The other requests are sessions of their own; the user is hashed.
    assert_ne!(t.records[0].session_id, t.records[1].session_id);
    assert_eq!(t.records[0].user_id, t.records[1].user_id);
    assert_eq!(t.records[0].user_id.as_ref().unwrap().len(), 16);

    // The same salt gives the same ids; another salt other ids.
    let again = ingest_paths(
        &[input.display().to_string()],
        &out(&dir, "u.parquet"),
        &["--salt", "a canary salt value"],
    )
    .unwrap();
    assert_eq!(again.records, t.records);
    let other = ingest_paths(
        &[input.display().to_string()],
        &out(&dir, "v.parquet"),
        &["--salt", "another salt"],
    )
    .unwrap();
    assert_ne!(other.records[6].session_id, t.records[6].session_id);
    assert_eq!(
        other.records[3].prefix_block_ids, t.records[3].prefix_block_ids,
        "block numbering does not depend on the salt"
    );
}

#[test]
fn gateway_fixture_orders_times_links_turns_and_counts_sources() {
    let dir = tempfile::tempdir().unwrap();
    let t = ingest(&["logs/gateway.jsonl"], &out(&dir, "t.parquet"), &[]).unwrap();
    assert_eq!(t.records.len(), 17);
    assert_eq!(t.metadata.rows_dropped["failed_request"], 1);
    assert!(t.metadata.counts_add_up());
    assert_eq!(t.metadata.t0, None, "no absolute time without --keep-t0");
    // Logged at completion, written sorted by start.
    let offsets: Vec<i64> = t
        .records
        .iter()
        .map(|r| r.arrival_offset_us.unwrap())
        .collect();
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    assert_ne!(
        t.records[8].request_id, "line9",
        "log order is not arrival order"
    );
    // Three support chats of three turns each, linked by resent history
    // (one with streamed chunks, one with raw SSE text as its reply).
    assert_eq!(stat(&t, "turns_linked_by_history"), 7);
    let stats = llm_replay::trace::inspect::compute(&t);
    assert_eq!(stats.turns_per_session_max, Some(3));
    assert!(stats.repeated_prefix_share.unwrap() > 0.2);
    assert!(stats.violations.is_empty(), "{:?}", stats.violations);
    // Mixed time forms, the non-UTF-8 line kept, reasoning counted.
    let forms: Value = serde_json::from_str::<Value>(&t.metadata.extra["openai_log.stats"])
        .unwrap()["time_forms"]
        .clone();
    assert_eq!(forms, json!({"epoch_ms": 2, "epoch_s": 10, "rfc3339": 6}));
    assert_eq!(stat(&t, "lines_not_utf8"), 1);
    assert_eq!(stat(&t, "reasoning_tokens"), 1400);
    assert_eq!(stat(&t, "output_from_max_tokens"), 1);
    assert_eq!(
        stat(&t, "input_from_usage") + stat(&t, "input_tokenized"),
        17
    );
    let reasoning = t
        .records
        .iter()
        .find(|r| r.model.as_deref() == Some("o-mini-reasoner"));
    assert_eq!(reasoning.map(|r| r.output_tokens), Some(1450));
    let tools = t
        .records
        .iter()
        .filter(|r| r.request_kind.as_deref() == Some("chat+tools"));
    assert_eq!(tools.count(), 2);
    let ids = t
        .records
        .iter()
        .find(|r| r.request_kind.as_deref() == Some("completion"));
    assert_eq!(ids.map(|r| r.input_tokens), Some(700));
    // The tool-call follow-up is linked to the call (think time from the
    // logged latency).
    let linked: Vec<_> = t
        .records
        .iter()
        .filter(|r| r.request_kind.as_deref() == Some("chat+tools"))
        .collect();
    assert_eq!(linked[0].session_id, linked[1].session_id);
    assert_eq!(linked[1].think_time_us, Some(299_500));

    // The gzip copy gives the same rows.
    let gz = ingest(
        &["logs/gateway.jsonl.gz"],
        &out(&dir, "gz.parquet"),
        &["--salt", "s"],
    )
    .unwrap();
    let plain = ingest(
        &["logs/gateway.jsonl"],
        &out(&dir, "p.parquet"),
        &["--salt", "s"],
    )
    .unwrap();
    assert_eq!(gz.records, plain.records);
}

#[test]
fn litellm_fixture_has_sessions_users_and_zoneless_times() {
    let dir = tempfile::tempdir().unwrap();
    let t = ingest(
        &["logs/litellm_spend.jsonl"],
        &out(&dir, "t.parquet"),
        &["--keep-t0"],
    )
    .unwrap();
    assert_eq!(t.records.len(), 7);
    assert_eq!(t.metadata.rows_dropped["failed_request"], 1);
    assert_eq!(
        t.metadata.t0.as_deref(),
        Some("2024-12-01T11:46:40.000000Z")
    );
    assert_eq!(stat(&t, "sessions_from_ids"), 5);
    let stats = llm_replay::trace::inspect::compute(&t);
    assert_eq!(stats.sessions, 5);
    assert_eq!(stats.turns_per_session_max, Some(2));
    // Rows 0 and 3 are the same user and session: turn 1 follows turn 0.
    assert_eq!(t.records[0].session_id, t.records[3].session_id);
    assert_eq!(t.records[3].turn_index, Some(1));
    assert_eq!(t.records[0].user_id, t.records[3].user_id);
    assert_ne!(t.records[0].user_id, t.records[1].user_id);
    // Spend logs keep zeros in prompt_tokens when the count is in `usage`;
    // row 6 had no usage at all and was tokenized.
    assert_eq!(stat(&t, "input_tokenized"), 1);
    let models: Vec<_> = t.records.iter().filter_map(|r| r.model.clone()).collect();
    assert!(models.contains(&"gpt-4o-mini".to_owned()));
    let report: Value = serde_json::to_value(t.metadata.scrub.as_ref().unwrap()).unwrap();
    for dropped in [
        "api_key",
        "metadata",
        "requester_ip_address",
        "request_id",
        "team_id",
    ] {
        assert_eq!(report["fields"][dropped][1], "dropped", "{dropped}");
    }
    assert_eq!(report["fields"]["session_id"][1], "hashed");
}

#[test]
fn batch_pair_joins_by_custom_id() {
    let dir = tempfile::tempdir().unwrap();
    let t = ingest(
        &["logs/batch_input.jsonl"],
        &out(&dir, "t.parquet"),
        &["--batch-output", &data("logs/batch_output.jsonl")],
    )
    .unwrap();
    assert_eq!(t.records.len(), 4);
    assert_eq!(t.metadata.rows_dropped["failed_request"], 1);
    assert_eq!(t.metadata.rows_dropped["no_batch_output"], 1);
    assert!(t.records.iter().all(|r| r.arrival_offset_us.is_none()));
    assert_eq!(
        t.records
            .iter()
            .map(|r| r.output_tokens)
            .collect::<Vec<_>>(),
        [9, 10, 12, 14]
    );
    assert_eq!(t.metadata.input_files.len(), 2);
    // Every request shares the long system prompt's leading blocks.
    let first = t.records[0].prefix_block_ids.clone().unwrap();
    assert!(first.len() >= 2);
    for r in &t.records {
        assert_eq!(r.prefix_block_ids.as_ref().unwrap()[..2], first[..2]);
    }

    // Without the output file, the cap is the output length.
    let capped = ingest(&["logs/batch_input.jsonl"], &out(&dir, "c.parquet"), &[]).unwrap();
    assert_eq!(capped.records.len(), 6);
    assert!(capped.records.iter().all(|r| r.output_tokens == 200));

    // The output file given as the log is named for what it is.
    let e = ingest(&["logs/batch_output.jsonl"], &out(&dir, "e.parquet"), &[]).unwrap_err();
    assert!(
        e.contains("line 1: custom_id: this is a Batch API output line"),
        "{e}"
    );
}

#[test]
fn several_inputs_and_stdin_style_names_keep_ids_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let t = ingest(
        &["logs/gateway.jsonl", "logs/litellm_spend.jsonl"],
        &out(&dir, "t.parquet"),
        &[],
    )
    .unwrap();
    assert_eq!(t.records.len(), 24);
    assert!(t.records.iter().any(|r| r.request_id == "f0:line1"));
    assert!(t.records.iter().any(|r| r.request_id == "f1:line1"));
}

#[test]
fn a_cut_last_line_stops_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let e = ingest(&["logs/gateway_cut.jsonl"], &out(&dir, "t.parquet"), &[]).unwrap_err();
    assert!(
        e.contains("gateway_cut.jsonl: line 6: json: truncated"),
        "{e}"
    );
    assert!(e.contains("5 complete records"), "{e}");
    let t = ingest(
        &["logs/gateway_cut.jsonl"],
        &out(&dir, "t.parquet"),
        &["--skip-invalid"],
    )
    .unwrap();
    assert_eq!(t.records.len(), 5);
    assert_eq!(t.metadata.rows_dropped["truncated"], 1);
}

#[test]
fn bad_lines_are_named_without_their_content() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "PRIVATE-Jane-Doe-555-0199";
    let good = json!({"timestamp": 1.0, "request": {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}});
    let lines = [
        good.to_string(),
        // Content of the wrong type.
        json!({"timestamp": 2.0, "request": {"messages": [{"role": "user", "content": {"x": secret}}]}}).to_string(),
        // A time that is not one (the value is private too).
        json!({"timestamp": secret, "request": {"messages": [{"role": "user", "content": "x"}]}}).to_string(),
        // No request body at all.
        json!({"timestamp": 3.0, "note": secret}).to_string(),
        // Not JSON.
        format!("{{\"timestamp\": 4.0, \"request\": {secret}}}"),
        // No time.
        json!({"request": {"messages": [{"role": "user", "content": secret}]}}).to_string(),
        // Usage of the wrong type.
        json!({"timestamp": 5.0, "request": {"prompt": secret}, "response": {"usage": {"prompt_tokens": secret}}}).to_string(),
        good.to_string(),
    ];
    let input = dir.path().join("bad.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let name = input.display().to_string();
    let want = [
        (
            2,
            "request.messages[0].content: expected a string or a list of parts, found an object",
        ),
        (3, "timestamp: not a time (a string of 25 characters"),
        (4, "request: no request body"),
        (5, "json: "),
        (6, "startTime: missing: no start time"),
        (
            7,
            "response.usage.prompt_tokens: expected a number, found a string",
        ),
    ];
    let mut text = lines.to_vec();
    for (line, msg) in want {
        let e =
            ingest_paths(std::slice::from_ref(&name), &out(&dir, "t.parquet"), &[]).unwrap_err();
        assert!(e.contains(&format!("bad.jsonl: line {line}: {msg}")), "{e}");
        assert!(!e.contains(secret), "the error echoes content: {e}");
        // Fix this line and go on to the next error.
        text[line - 1] = good.to_string();
        std::fs::write(&input, text.join("\n") + "\n").unwrap();
    }
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let t = ingest_paths(&[name], &out(&dir, "t.parquet"), &["--skip-invalid"]).unwrap();
    assert_eq!(t.records.len(), 2);
    let dropped = &t.metadata.rows_dropped;
    assert_eq!(dropped["invalid:request.messages.content"], 1);
    assert_eq!(dropped["invalid:timestamp"], 1);
    assert_eq!(dropped["invalid:request"], 1);
    assert_eq!(dropped["invalid:json"], 1);
    assert_eq!(dropped["invalid:startTime"], 1);
    assert_eq!(dropped["invalid:response.usage.prompt_tokens"], 1);
    assert!(t.metadata.counts_add_up());
}

#[test]
fn keep_text_is_refused_and_fields_can_be_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = ingest(
        &["logs/gateway.jsonl"],
        &out(&dir, "t.parquet"),
        &["--keep-text"],
    )
    .unwrap_err();
    assert!(e.contains("--keep-text"), "{e}");
    // A log with its own field names.
    let input = dir.path().join("custom.jsonl");
    let lines = [
        json!({"at": "2025-01-01T00:00:00+01:00", "done": "2025-01-01T00:00:02+01:00", "conv": {"id": 7}, "payload": {"messages": [{"role": "user", "content": "a"}]}, "result": {"usage": {"prompt_tokens": 12, "completion_tokens": 3}}}),
        json!({"at": "2025-01-01T00:00:05+01:00", "done": "2025-01-01T00:00:06+01:00", "conv": {"id": 7}, "payload": {"messages": [{"role": "user", "content": "b"}]}, "result": {"usage": {"prompt_tokens": 20, "completion_tokens": 4}}}),
    ];
    std::fs::write(
        &input,
        lines
            .iter()
            .map(|l| l.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let t = ingest_paths(
        &[input.display().to_string()],
        &out(&dir, "c.parquet"),
        &[
            "--time-field",
            "at",
            "--end-time-field",
            "done",
            "--session-field",
            "conv.id",
            "--request-field",
            "payload",
            "--response-field",
            "result",
            "--keep-t0",
        ],
    )
    .unwrap();
    assert_eq!(
        t.metadata.t0.as_deref(),
        Some("2024-12-31T23:00:00.000000Z")
    );
    assert_eq!(
        t.records
            .iter()
            .map(|r| (
                r.input_tokens,
                r.output_tokens,
                r.turn_index,
                r.think_time_us
            ))
            .collect::<Vec<_>>(),
        [(12, 3, Some(0), None), (20, 4, Some(1), Some(3_000_000))]
    );
}

#[test]
fn a_real_server_capture_links_streamed_turns() {
    // Captured from llama.cpp (datasets/logs/capture_llama_server.py): the
    // replies are the server's own bytes, resent as history, streamed or not.
    let dir = tempfile::tempdir().unwrap();
    let t = ingest(
        &["logs/llama_server_capture.jsonl"],
        &out(&dir, "t.parquet"),
        &[],
    )
    .unwrap();
    assert_eq!(t.records.len(), 10);
    assert_eq!(t.metadata.rows_dropped["failed_request"], 1);
    assert_eq!(stat(&t, "turns_linked_by_history"), 6);
    assert_eq!(stat(&t, "usage_compared"), 9);
    let stats = llm_replay::trace::inspect::compute(&t);
    assert_eq!(stats.sessions, 4);
    assert_eq!(stats.multi_turn_sessions, 3);
    // Input counts are the server's own (BOS and chat template included).
    assert_eq!(t.records[0].input_tokens, 770);
}

#[test]
fn model_names_can_be_hashed_and_anthropic_logs_read() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("anthropic.jsonl");
    let system = words(1200, 3);
    let lines: Vec<Value> = (0..3)
        .map(|i| {
            json!({
                "timestamp": 1_700_000_000 + i,
                "request": {
                    "model": "ft:gpt-4o:acme-secret-org::abc123",
                    "max_tokens": 50,
                    "system": [{"type": "text", "text": system}],
                    "messages": [{"role": "user", "content": words(100, 20 + i as usize)}],
                },
                "response": {"type": "message", "role": "assistant",
                    "content": [{"type": "text", "text": "A reply."}],
                    "usage": {"input_tokens": 120, "cache_read_input_tokens": 1100, "output_tokens": 4}},
            })
        })
        .collect();
    std::fs::write(
        &input,
        lines
            .iter()
            .map(|l| l.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let path = out(&dir, "t.parquet");
    let t = ingest_paths(&[input.display().to_string()], &path, &["--hash-model"]).unwrap();
    // The prompt is the uncached input plus the cache reads.
    assert!(
        t.records
            .iter()
            .all(|r| r.input_tokens == 1220 && r.output_tokens == 4)
    );
    // The system prompt beside the messages is part of the prompt: the
    // three requests share its leading blocks.
    let first = t.records[0].prefix_block_ids.clone().unwrap();
    assert!(
        t.records
            .iter()
            .all(|r| r.prefix_block_ids.as_ref().unwrap()[..2] == first[..2])
    );
    let model = t.records[0].model.clone().unwrap();
    assert!(
        model.starts_with("model-") && !model.contains("acme"),
        "{model}"
    );
    assert!(memchr::memmem::find(&std::fs::read(&path).unwrap(), b"acme-secret-org").is_none());
    let report: Value = serde_json::to_value(t.metadata.scrub.as_ref().unwrap()).unwrap();
    assert_eq!(report["fields"]["request.model"][1], "hashed");
}

#[test]
fn a_missing_log_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = ingest(&["logs/no_such_log.jsonl"], &out(&dir, "t.parquet"), &[]).unwrap_err();
    assert!(
        e.ends_with("no_such_log.jsonl: No such file or directory (os error 2)"),
        "{e}"
    );
}
