//! ShareGPT and openai-messages ingest, end to end through the library:
//! fixtures under `datasets/` in, Parquet traces out and read back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use clap::Parser;
use llm_replay::cli::{Cli, Command, IngestArgs};
use llm_replay::commands::ingest::config;
use llm_replay::ingest::{self, IngestError};
use llm_replay::tokenize::{Tokenizer, TokenizerSpec};
use llm_replay::trace::{Trace, TraceRecord, read_trace};

fn dataset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("datasets")
        .join(name)
}

fn args(format: &str, input: &Path, output: &Path, extra: &[&str]) -> IngestArgs {
    let mut argv: Vec<String> = ["llm-replay", "ingest", format]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    argv.push(input.display().to_string());
    argv.push("-o".to_owned());
    argv.push(output.display().to_string());
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Command::Ingest(a),
        }) => a,
        other => panic!("not an ingest command line: {other:?}"),
    }
}

/// Ingests `input` with `extra` flags and reads the trace back.
fn ingest_ok(format: &str, input: &Path, extra: &[&str]) -> Trace {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trace.parquet");
    let summary = ingest::run(&config(&args(format, input, &out, extra)))
        .unwrap_or_else(|e| panic!("ingest of {} failed: {e}", input.display()));
    let trace = read_trace(&out).unwrap();
    assert_eq!(summary.metadata, trace.metadata);
    assert!(
        trace.metadata.counts_add_up(),
        "read {} != written {} + dropped {:?}",
        trace.metadata.rows_read,
        trace.metadata.rows_written,
        trace.metadata.rows_dropped
    );
    assert_eq!(trace.metadata.rows_written, trace.records.len() as u64);
    trace
}

/// Ingests `input` expecting an error; returns its message.
fn ingest_err(format: &str, input: &Path, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trace.parquet");
    match ingest::run(&config(&args(format, input, &out, extra))) {
        Ok(s) => panic!("ingest of {} succeeded: {:?}", input.display(), s.metadata),
        Err(e) => e.to_string(),
    }
}

fn dropped(trace: &Trace) -> Vec<(String, u64)> {
    trace
        .metadata
        .rows_dropped
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn row<'a>(trace: &'a Trace, request_id: &str) -> &'a TraceRecord {
    trace
        .records
        .iter()
        .find(|r| r.request_id == request_id)
        .unwrap_or_else(|| panic!("no row {request_id}"))
}

fn count(texts: &[&str]) -> i32 {
    let tok = Tokenizer::load(&TokenizerSpec::O200kBase).unwrap();
    texts.iter().map(|t| tok.count(t).unwrap() as i32).sum()
}

fn reasons(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn sharegpt_fixture_rows_and_counts() {
    let t = ingest_ok("sharegpt", &dataset("sharegpt_small.json"), &[]);
    let m = &t.metadata;
    assert_eq!(m.source_format, "sharegpt");
    assert_eq!(m.tokenizer.as_deref(), Some("o200k_base"));
    assert_eq!(m.input_files.len(), 1);
    assert_eq!(m.input_files[0].name, "sharegpt_small.json");
    assert_eq!(m.input_files[0].sha256.len(), 64);
    // 12 records: 15 turns with replies, one without, two records with no
    // user turn, one repeated id.
    assert_eq!((m.rows_read, m.rows_written), (19, 15));
    assert_eq!(
        dropped(&t),
        reasons(&[
            ("duplicate_id", 1),
            ("no_assistant_reply", 1),
            ("no_user_turn", 2)
        ])
    );
    let extra = |k: &str| m.extra.get(k).map(String::as_str);
    assert_eq!(extra("sharegpt.records"), Some("12"));
    assert_eq!(extra("sharegpt.records_starting_with_assistant"), Some("3"));
    assert_eq!(extra("sharegpt.messages_empty"), Some("1"));
    assert_eq!(extra("sharegpt.messages_merged"), Some("3"));
    assert_eq!(extra("sharegpt.lone_surrogates"), Some("1"));

    let ids: Vec<&str> = t.records.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "r7Kx2aQ_0:0",
            "r7Kx2aQ_0:1",
            "r7Kx2aQ_0:2",
            "r7Kx2aQ_1:0",
            "r7Kx2aQ_1:1",
            "mT3pLq9_0:0",
            "Zx81bNw_0:0",
            "Zx81bNw_0:1",
            "Qe4vBn2_0:0",
            "kP0sY7d_0:0",
            "kP0sY7d_0:1",
            "Lw6tQa1_0:0",
            "Lw6tQa1_0:1",
            "Nn5rMe8_0:0",
            "4411:0"
        ]
    );
    for r in &t.records {
        assert_eq!(r.arrival_offset_us, None);
        assert_eq!(r.prompt_text, None);
        assert_eq!(r.prefix_block_ids, None);
        let (session, turn) = r.request_id.rsplit_once(':').unwrap();
        assert_eq!(r.session_id.as_deref(), Some(session));
        assert_eq!(r.turn_index, Some(turn.parse().unwrap()));
    }

    // Input = system prompt + every earlier message + this turn; output =
    // the reply; each message tokenized on its own.
    let sys = "You are a helpful assistant that answers in at most three sentences.";
    let q1 = "Why is the sky blue?";
    let a1 = "Sunlight is scattered by the molecules of the air, and shorter wavelengths such as blue are scattered much more than red ones (Rayleigh scattering). So wherever you look away from the sun, you see this scattered blue light.";
    let q2 = "And why are sunsets red then?";
    let a2 = "At sunset the light crosses far more air before it reaches you, so most of the blue has been scattered out of the beam. What is left is mainly orange and red.";
    let r = row(&t, "Zx81bNw_0:1");
    assert_eq!(r.input_tokens, count(&[sys, q1, a1, q2]));
    assert_eq!(r.output_tokens, count(&[a2]));
    assert_eq!(r.source_row, 3);
    let r = row(&t, "Zx81bNw_0:0");
    assert_eq!(
        (r.input_tokens, r.output_tokens),
        (count(&[sys, q1]), count(&[a1]))
    );

    // A part that starts with the assistant keeps that message as history.
    let lead = "...continued: reheat gently over a low heat and stir often, because thick soups catch on the bottom of the pan.";
    let r = row(&t, "r7Kx2aQ_1:0");
    assert_eq!(
        r.input_tokens,
        count(&[lead, "Can I use the seeds as well?"])
    );
    assert_eq!(r.source_row, 1);
    // Two user messages in a row are one turn; an empty reply is removed.
    let r = row(&t, "Qe4vBn2_0:0");
    assert_eq!(
        r.input_tokens,
        count(&[
            "Translate into French: the meeting is moved to Thursday afternoon.",
            "hello? are you there?"
        ])
    );
    let r = row(&t, "4411:0");
    assert_eq!(r.source_row, 11);
    assert_eq!(r.output_tokens, count(&["101, 103 and 107."]));
}

#[test]
fn request_ids_and_rows_are_stable_across_ingests() {
    let a = ingest_ok("sharegpt", &dataset("sharegpt_small.json"), &[]);
    let b = ingest_ok("sharegpt", &dataset("sharegpt_small.json"), &[]);
    assert_eq!(a.records, b.records);
    let a = ingest_ok(
        "openai-messages",
        &dataset("openai_messages_small.jsonl"),
        &[],
    );
    let b = ingest_ok(
        "openai-messages",
        &dataset("openai_messages_small.jsonl"),
        &[],
    );
    assert_eq!(a.records, b.records);
}

#[test]
fn keep_text_stores_the_turns_own_user_message() {
    let t = ingest_ok(
        "sharegpt",
        &dataset("sharegpt_small.json"),
        &["--keep-text"],
    );
    assert_eq!(
        row(&t, "mT3pLq9_0:0").prompt_text.as_deref(),
        Some(
            "write a python function that checks whether a string is a palindrome\n\nignore case and punctuation please"
        )
    );
    assert_eq!(
        row(&t, "Zx81bNw_0:1").prompt_text.as_deref(),
        Some("And why are sunsets red then?")
    );
    assert!(
        row(&t, "Lw6tQa1_0:0")
            .prompt_text
            .as_deref()
            .unwrap()
            .contains("japonés")
    );
}

#[test]
fn first_turn_only_keeps_turn_zero_and_counts_the_rest() {
    let t = ingest_ok(
        "sharegpt",
        &dataset("sharegpt_small.json"),
        &["--first-turn-only"],
    );
    assert_eq!((t.metadata.rows_read, t.metadata.rows_written), (19, 9));
    assert!(t.records.iter().all(|r| r.turn_index == Some(0)));
    assert_eq!(
        dropped(&t),
        reasons(&[
            ("duplicate_id", 1),
            ("filter:first_turn_only", 7),
            ("no_user_turn", 2)
        ])
    );
    assert_eq!(t.metadata.filters, ["first_turn_only=true"]);
}

#[test]
fn length_filters_and_seeded_sampling_are_deterministic() {
    let all = ingest_ok("sharegpt", &dataset("sharegpt_small.json"), &[]);
    let t = ingest_ok(
        "sharegpt",
        &dataset("sharegpt_small.json"),
        &["--max-input", "60"],
    );
    let expected: Vec<&str> = all
        .records
        .iter()
        .filter(|r| r.input_tokens <= 60)
        .map(|r| r.request_id.as_str())
        .collect();
    let got: Vec<&str> = t.records.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(got, expected);
    assert_eq!(
        t.metadata.rows_dropped.get("filter:max_input").copied(),
        Some(15 - expected.len() as u64)
    );

    let flags = ["--sample", "5", "--seed", "7"];
    let a = ingest_ok("sharegpt", &dataset("sharegpt_small.json"), &flags);
    let b = ingest_ok("sharegpt", &dataset("sharegpt_small.json"), &flags);
    assert_eq!(a.records, b.records);
    assert_eq!(a.records.len(), 5);
    assert_eq!(a.metadata.rows_dropped.get("sample").copied(), Some(10));
    // Sampled rows keep their input order.
    let pos = |id: &str| all.records.iter().position(|r| r.request_id == id).unwrap();
    let positions: Vec<usize> = a.records.iter().map(|r| pos(&r.request_id)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
}

#[test]
fn block_size_gives_shared_prefix_blocks_within_a_session() {
    let t = ingest_ok(
        "sharegpt",
        &dataset("sharegpt_small.json"),
        &["--block-size", "16"],
    );
    assert_eq!(t.metadata.prefix_block_size, Some(16));
    let first = row(&t, "r7Kx2aQ_0:0").prefix_block_ids.clone().unwrap();
    let third = row(&t, "r7Kx2aQ_0:2").prefix_block_ids.clone().unwrap();
    assert_eq!(
        first.len(),
        row(&t, "r7Kx2aQ_0:0").input_tokens as usize / 16
    );
    assert_eq!(
        third.len(),
        row(&t, "r7Kx2aQ_0:2").input_tokens as usize / 16
    );
    assert_eq!(first[..], third[..first.len()]);
    let o = ingest_ok(
        "openai-messages",
        &dataset("openai_messages_small.jsonl"),
        &["--block-size", "4"],
    );
    // Lines 3 and 4 share a developer prompt and the first user message.
    let l3 = row(&o, "chatcmpl-3").prefix_block_ids.clone().unwrap();
    let l4 = row(&o, "chatcmpl-4").prefix_block_ids.clone().unwrap();
    assert!(!l3.is_empty());
    assert_eq!(l3[..], l4[..l3.len()]);
}

#[test]
fn openai_messages_fixture_rows_and_counts() {
    let t = ingest_ok(
        "openai-messages",
        &dataset("openai_messages_small.jsonl"),
        &[],
    );
    let m = &t.metadata;
    assert_eq!(m.source_format, "openai-messages");
    // 9 lines, one blank (not a row), one repeated id.
    assert_eq!((m.rows_read, m.rows_written), (8, 7));
    assert_eq!(dropped(&t), reasons(&[("duplicate_id", 1)]));
    assert_eq!(
        m.extra
            .get("openai_messages.output_from_max_tokens")
            .map(String::as_str),
        Some("2")
    );
    let ids: Vec<&str> = t.records.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "chatcmpl-1",
            "line2",
            "chatcmpl-3",
            "chatcmpl-4",
            "chatcmpl-5",
            "6",
            "line9"
        ]
    );
    let r = row(&t, "chatcmpl-1");
    assert_eq!(
        (r.input_tokens, r.output_tokens),
        (
            count(&[
                "You are a concise assistant.",
                "What is the capital of Australia?"
            ]),
            count(&["Canberra."])
        )
    );
    assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(
        (r.source_row, r.session_id.as_deref(), r.turn_index),
        (1, None, None)
    );
    let r = row(&t, "line2");
    assert_eq!(
        (r.input_tokens, r.output_tokens),
        (count(&["Write a haiku about autumn rain."]), 60)
    );
    // max_completion_tokens wins over max_tokens; parts are summed.
    let r = row(&t, "chatcmpl-3");
    assert_eq!(r.output_tokens, 40);
    assert_eq!(
        r.input_tokens,
        count(&[
            "Answer with JSON only.",
            "Give me two colours",
            "as a list under the key colours."
        ])
    );
    assert_eq!(r.session_id.as_deref(), Some("sess-42"));
    // Tool calls count as the assistant's text, tool results as prompt.
    let r = row(&t, "chatcmpl-5");
    assert_eq!(
        r.input_tokens,
        count(&[
            "What's the weather in Oslo?",
            "get_weather",
            "{\"city\": \"Oslo\"}",
            "{\"temp_c\": 4, \"sky\": \"overcast\"}"
        ])
    );
    assert_eq!(r.output_tokens, count(&["It is 4°C and overcast in Oslo."]));
    assert_eq!(row(&t, "6").source_row, 7);
    assert_eq!(row(&t, "line9").source_row, 9);
}

/// One bad fixture: its error without `--skip-invalid` and, where the
/// format can skip it, the drop counts with it.
/// Rows read, rows written, and the drops by reason.
type Skipped = (u64, u64, &'static [(&'static str, u64)]);

struct Bad {
    format: &'static str,
    file: &'static str,
    message: &'static str,
    /// With --skip-invalid: rows read, rows written, drops by reason.
    skipped: Option<Skipped>,
}

const BAD: &[Bad] = &[
    Bad {
        format: "sharegpt",
        file: "sharegpt_bad_json.json",
        message: "line 4: json: expected `:` at column 13 (record 1)",
        skipped: Some((2, 1, &[("invalid:json", 1)])),
    },
    Bad {
        format: "sharegpt",
        file: "sharegpt_wrong_type.json",
        message: "record 1: conversations[1].value: expected a string, found the number 8",
        skipped: Some((3, 2, &[("invalid:conversations.value", 1)])),
    },
    Bad {
        format: "sharegpt",
        file: "sharegpt_missing_field.json",
        message: "record 1: conversations: missing",
        skipped: Some((3, 2, &[("invalid:conversations", 1)])),
    },
    Bad {
        format: "sharegpt",
        file: "sharegpt_unknown_role.json",
        message: "record 0: conversations[1].from: unknown role \"tool\": expected human, user, gpt, chatgpt, bing, bard, assistant or system",
        skipped: Some((1, 0, &[("invalid:conversations.from", 1)])),
    },
    Bad {
        format: "sharegpt",
        file: "sharegpt_non_utf8.json",
        message: "line 2: json: invalid UTF-8 in a string (the input must be UTF-8) at column",
        skipped: Some((2, 1, &[("invalid:json", 1)])),
    },
    Bad {
        format: "openai-messages",
        file: "openai_messages_bad_json.jsonl",
        message: "line 2: json: expected `,` or `}` at column 71",
        skipped: Some((3, 2, &[("invalid:json", 1)])),
    },
    Bad {
        format: "openai-messages",
        file: "openai_messages_wrong_type.jsonl",
        message: "line 3: messages[0].content: expected a string or a list of text parts, found the number 42",
        skipped: Some((3, 2, &[("invalid:messages.content", 1)])),
    },
    Bad {
        format: "openai-messages",
        file: "openai_messages_missing_field.jsonl",
        message: "line 2: messages: missing",
        skipped: Some((2, 1, &[("invalid:messages", 1)])),
    },
    Bad {
        format: "openai-messages",
        file: "openai_messages_no_output.jsonl",
        message: "line 2: messages: the last message is not an assistant reply and neither max_completion_tokens nor max_tokens is given",
        skipped: Some((2, 1, &[("invalid:no_output_length", 1)])),
    },
    Bad {
        format: "openai-messages",
        file: "openai_messages_non_utf8.jsonl",
        message: "line 2: json: invalid UTF-8 in a string (the input must be UTF-8) at column",
        skipped: Some((2, 1, &[("invalid:json", 1)])),
    },
    Bad {
        format: "openai-messages",
        file: "openai_messages_not_object.jsonl",
        message: "line 2: json: expected an object {\"messages\": [...]} on each line, found an array",
        skipped: Some((2, 1, &[("invalid:json", 1)])),
    },
    // A cut file: an error, or its complete records with --skip-invalid.
    // Fatal whatever the flags: nothing to read, a broken array.
    Bad {
        format: "sharegpt",
        file: "sharegpt_not_array.json",
        message: "line 1: json: expected a JSON array of conversations `[{\"id\": ..., \"conversations\": [...]}, ...]`, found `{` at column 1 (an object:",
        skipped: None,
    },
    Bad {
        format: "sharegpt",
        file: "sharegpt_truncated.json",
        message: "truncated at line 86: the input ends inside a record; 3 complete records came before the cut",
        skipped: Some((8, 6, &[("no_assistant_reply", 1), ("truncated", 1)])),
    },
    Bad {
        format: "sharegpt",
        file: "sharegpt_empty.json",
        message: "no records (the input has no bytes)",
        skipped: None,
    },
    Bad {
        format: "sharegpt",
        file: "sharegpt_empty_array.json",
        message: "no records (the input has an empty array `[]`)",
        skipped: None,
    },
    Bad {
        format: "sharegpt",
        file: "sharegpt_whitespace.json",
        message: "no records (the input has only whitespace)",
        skipped: None,
    },
    Bad {
        format: "openai-messages",
        file: "openai_messages_truncated.jsonl",
        message: "truncated at line 3: the input ends inside a record; 2 complete records came before the cut",
        skipped: Some((3, 2, &[("truncated", 1)])),
    },
    Bad {
        format: "openai-messages",
        file: "openai_messages_empty.jsonl",
        message: "no records (the input has no bytes)",
        skipped: None,
    },
    Bad {
        format: "openai-messages",
        file: "openai_messages_blank.jsonl",
        message: "no records (the input has only blank lines)",
        skipped: None,
    },
];

#[test]
fn bad_inputs_fail_naming_file_position_and_field() {
    for bad in BAD {
        let path = dataset(&format!("bad/{}", bad.file));
        let err = ingest_err(bad.format, &path, &[]);
        let want = format!("{}: {}", path.display(), bad.message);
        assert!(
            err.starts_with(&want),
            "{}:\n  got  {err}\n  want {want}",
            bad.file
        );
    }
}

#[test]
fn skip_invalid_skips_bad_records_and_counts_them_by_reason() {
    for bad in BAD {
        let path = dataset(&format!("bad/{}", bad.file));
        match bad.skipped {
            // Nothing left to write: an error that counts what was dropped.
            Some((read, 0, &[(reason, n)])) => {
                let err = ingest_err(bad.format, &path, &["--skip-invalid"]);
                let want = format!(
                    "no row to write: {read} rows read, every one dropped (by reason: {n} {reason})"
                );
                assert!(err.contains(&want), "{}: {err}", bad.file);
            }
            Some((read, written, reason)) => {
                let t = ingest_ok(bad.format, &path, &["--skip-invalid"]);
                assert_eq!(
                    (t.metadata.rows_read, t.metadata.rows_written),
                    (read, written),
                    "{}",
                    bad.file
                );
                assert_eq!(dropped(&t), reasons(reason), "{}", bad.file);
                assert_eq!(t.metadata.dropped_total(), read - written);
            }
            None => {
                let err = ingest_err(bad.format, &path, &["--skip-invalid"]);
                assert!(err.contains(bad.message), "{}: {err}", bad.file);
            }
        }
    }
}

#[test]
fn errors_are_typed_for_callers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.parquet");
    let cut = dataset("bad/sharegpt_truncated.json");
    match ingest::run(&config(&args("sharegpt", &cut, &out, &[]))) {
        Err(IngestError::Truncated { complete, .. }) => assert_eq!(complete, 3),
        other => panic!("{other:?}"),
    }
    let wrong = dataset("bad/sharegpt_wrong_type.json");
    match ingest::run(&config(&args("sharegpt", &wrong, &out, &[]))) {
        Err(IngestError::Input(e)) => {
            assert_eq!(e.field, "conversations[1].value");
            assert_eq!(e.position, ingest::Position::Record(1));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_inputs_share_ids_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.parquet");
    let small = dataset("sharegpt_small.json");
    let mut a = args("sharegpt", &small, &out, &[]);
    a.inputs.push(small.clone());
    let summary = ingest::run(&config(&a)).unwrap();
    let m = summary.metadata;
    // The second copy is all duplicate conversation ids, one row each.
    assert_eq!((m.rows_read, m.rows_written), (19 + 12, 15));
    assert_eq!(m.rows_dropped.get("duplicate_id").copied(), Some(1 + 12));
    assert_eq!(m.input_files.len(), 2);
    assert!(m.counts_add_up());
}

/// Writes `bytes` to `name` in `dir`.
fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn a_cut_sharegpt_keeps_every_complete_record_with_skip_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(dataset("sharegpt_small.json")).unwrap();
    // Cut in the middle of the file, as the ShareGPT V3 download is.
    let cut = write(&dir, "cut.json", &full[..full.len() * 2 / 3]);
    let complete = match ingest::run(&config(&args(
        "sharegpt",
        &cut,
        &dir.path().join("a.parquet"),
        &[],
    ))) {
        Err(IngestError::Truncated { complete, .. }) => complete,
        other => panic!("{other:?}"),
    };
    assert!(complete > 0);
    assert!(!dir.path().join("a.parquet").exists());
    assert!(!dir.path().join("a.parquet.partial").exists());
    let t = ingest_ok("sharegpt", &cut, &["--skip-invalid"]);
    let m = &t.metadata;
    assert_eq!(
        m.extra.get("sharegpt.records").map(String::as_str),
        Some(complete.to_string().as_str())
    );
    assert_eq!(m.rows_dropped.get("truncated").copied(), Some(1));
    // The kept rows are exactly those of the same records in the whole file.
    let whole = ingest_ok("sharegpt", &dataset("sharegpt_small.json"), &[]);
    assert_eq!(t.records[..], whole.records[..t.records.len()]);
    assert!(!t.records.is_empty());
}

#[test]
fn bytes_after_the_array_are_an_error_at_their_offset_or_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(dataset("sharegpt_small.json")).unwrap();
    let end = bytes.len();
    bytes.extend_from_slice(b",\n{\"id\": \"x\"}\n");
    let noisy = write(&dir, "noisy.json", &bytes);
    let err = ingest_err("sharegpt", &noisy, &[]);
    assert!(err.contains(&format!("(byte {end})")), "{err}");
    assert!(err.contains("after the array's closing `]`"), "{err}");
    let t = ingest_ok("sharegpt", &noisy, &["--skip-invalid"]);
    let whole = ingest_ok("sharegpt", &dataset("sharegpt_small.json"), &[]);
    assert_eq!(t.records, whole.records);
    assert_eq!(
        t.metadata.rows_dropped.get("trailing_garbage").copied(),
        Some(1)
    );

    // A trailing comma before the `]`, the same way.
    let text = String::from_utf8(std::fs::read(dataset("sharegpt_small.json")).unwrap()).unwrap();
    let at = text.rfind(']').unwrap();
    let comma = format!("{},\n]\n", &text[..at].trim_end());
    let comma = write(&dir, "comma.json", comma.as_bytes());
    assert!(ingest_err("sharegpt", &comma, &[]).contains("no trailing comma"));
    let t = ingest_ok("sharegpt", &comma, &["--skip-invalid"]);
    assert_eq!(t.records, whole.records);
}

#[test]
fn no_valid_row_is_an_error_with_or_without_skip_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        &dir,
        "bad.json",
        br#"[{"id": "a", "conversations": 3}, {"id": "b"}]"#,
    );
    let out = dir.path().join("t.parquet");
    let err = ingest::run(&config(&args("sharegpt", &bad, &out, &["--skip-invalid"])))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no row to write: 2 rows read"), "{err}");
    assert!(err.contains("invalid:conversations"), "{err}");
    assert!(!out.exists());
    assert!(!dir.path().join("t.parquet.partial").exists());
    // Rows all filtered out: the same.
    let err = ingest_err(
        "sharegpt",
        &dataset("sharegpt_small.json"),
        &["--min-input", "4000000"],
    );
    assert!(err.contains("filter:min_input"), "{err}");
}

#[test]
fn a_huge_bad_value_is_quoted_short() {
    let dir = tempfile::tempdir().unwrap();
    let role = "r".repeat(5 << 20);
    let json = format!(r#"[{{"id": "a", "conversations": [{{"from": "{role}", "value": "x"}}]}}]"#);
    let err = ingest_err("sharegpt", &write(&dir, "big.json", json.as_bytes()), &[]);
    assert!(err.contains("unknown role"), "{}", &err[..200]);
    assert!(err.len() < 1_000, "{} bytes of error", err.len());
    let csv = format!(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n{},1,1\n",
        "9".repeat(5 << 20)
    );
    let err = ingest_err("azure", &write(&dir, "big_conv.csv", csv.as_bytes()), &[]);
    assert!(err.contains("TIMESTAMP"), "{}", &err[..200]);
    assert!(err.len() < 1_000, "{} bytes of error", err.len());
}

#[test]
fn a_byte_order_mark_is_accepted_by_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = [
        ("sharegpt", "sharegpt_small.json"),
        ("openai-messages", "openai_messages_small.jsonl"),
        ("azure", "azure_conv_small.csv"),
        ("burstgpt", "burstgpt_v1_small.csv"),
        ("mooncake", "mooncake_conv_small.jsonl"),
        ("bailian", "bailian_small.jsonl"),
        ("openai-log", "logs/gateway.jsonl"),
    ];
    for (format, name) in fixtures {
        let mut bytes = vec![0xEF, 0xBB, 0xBF];
        bytes.extend(std::fs::read(dataset(name)).unwrap());
        let file = name.rsplit('/').next().unwrap();
        let bom = write(&dir, file, &bytes);
        let salt: &[&str] = if format == "openai-log" {
            &["--salt", "s"]
        } else {
            &[]
        };
        let with = ingest_ok(format, &bom, salt);
        let without = ingest_ok(format, &dataset(name), salt);
        assert_eq!(with.records, without.records, "{format}");
    }
}
