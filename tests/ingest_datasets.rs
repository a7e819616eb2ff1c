//! Ingest of the public trace formats (Azure, BurstGPT, Mooncake, Bailian):
//! fixtures round-trip with exact values, bad inputs get errors naming file,
//! line and field, and `--skip-invalid` counts what it skips.

use std::path::{Path, PathBuf};

use clap::Parser;
use llm_replay::cli::{Cli, Command};
use llm_replay::trace::{Trace, read_trace};

fn data(name: &str) -> String {
    format!("{}/datasets/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn ingest(format: &str, inputs: &[&str], out: &Path, extra: &[&str]) -> Result<Trace, String> {
    let mut argv = vec!["llm-replay".to_owned(), "ingest".into(), format.into()];
    argv.extend(inputs.iter().map(|i| data(i)));
    argv.extend(["-o".into(), out.display().to_string()]);
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let Command::Ingest(args) = Cli::try_parse_from(argv)
        .map_err(|e| e.to_string())?
        .command
    else {
        unreachable!()
    };
    llm_replay::ingest::run(&llm_replay::commands::ingest::config(&args))
        .map_err(|e| e.to_string())?;
    read_trace(out).map_err(|e| e.to_string())
}

fn out(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("t.parquet")
}

#[test]
fn azure_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let t = ingest("azure", &["azure_conv_small.csv"], &out(&dir), &[]).unwrap();
    assert_eq!(t.records.len(), 400);
    let first = &t.records[0];
    assert_eq!((first.input_tokens, first.output_tokens), (374, 44));
    assert_eq!(first.arrival_offset_us, Some(0));
    // The file is CRLF; its first data row is still line 2.
    assert_eq!((first.request_id.as_str(), first.source_row), ("line2", 2));
    // 18:15:50.9951690 - 18:15:46.6805900 = 4.3145790 s, truncated to µs.
    assert_eq!(t.records[1].arrival_offset_us, Some(4_314_579));
    assert_eq!(t.records[1].request_kind.as_deref(), Some("conv"));
    assert_eq!(
        t.metadata.t0.as_deref(),
        Some("2023-11-16T18:15:46.6805900Z")
    );
    assert_eq!(t.metadata.time_unit.as_deref(), Some("100ns"));
    assert!(t.metadata.counts_add_up());
    let again = ingest(
        "azure",
        &["azure_conv_small.csv"],
        &dir.path().join("u.parquet"),
        &[],
    )
    .unwrap();
    assert_eq!(again.records, t.records, "re-ingest is stable");
}

#[test]
fn azure_2024_form_with_zones_and_short_fractions() {
    let dir = tempfile::tempdir().unwrap();
    let t = ingest("azure", &["azure_2024_small.csv"], &out(&dir), &[]).unwrap();
    let offsets: Vec<i64> = t
        .records
        .iter()
        .filter_map(|r| r.arrival_offset_us)
        .collect();
    assert_eq!(offsets, vec![0, 8_185, 400_000, 1_250_000, 1_250_001]);
}

#[test]
fn burstgpt_v1_and_v2_columns_by_name_and_failures_kept() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = ingest("burstgpt", &["burstgpt_v1_small.csv"], &out(&dir), &[]).unwrap();
    assert_eq!(v1.records.len(), 6);
    let failed = &v1.records[2];
    assert_eq!(failed.output_tokens, 0);
    assert_eq!(
        failed.request_kind.as_deref(),
        Some("Conversation log:failed")
    );
    assert_eq!(failed.model.as_deref(), Some("GPT-4"));
    assert_eq!(v1.records[4].arrival_offset_us, Some(160_500_000));
    assert_eq!(
        v1.metadata
            .extra
            .get("burstgpt.failed_rows")
            .map(String::as_str),
        Some("1")
    );
    let v2 = ingest(
        "burstgpt",
        &["burstgpt_v2_small.csv"],
        &dir.path().join("v2.parquet"),
        &[],
    )
    .unwrap();
    assert_eq!(v2.records[0].session_id.as_deref(), Some("s-1"));
    assert_eq!(v2.records[3].session_id, None);
    assert_eq!(v2.records[2].arrival_offset_us, Some(7_250_000));
    // Dropping failures is a filter the user asks for, and is counted.
    let ok_only = ingest(
        "burstgpt",
        &["burstgpt_v1_small.csv"],
        &dir.path().join("ok.parquet"),
        &["--min-output", "1"],
    )
    .unwrap();
    assert_eq!(ok_only.records.len(), 5);
    assert_eq!(
        ok_only.metadata.rows_dropped.get("filter:min_output"),
        Some(&1)
    );
}

#[test]
fn mooncake_blocks_and_quantized_times() {
    let dir = tempfile::tempdir().unwrap();
    let t = ingest("mooncake", &["mooncake_conv_small.jsonl"], &out(&dir), &[]).unwrap();
    assert_eq!(t.records.len(), 300);
    assert_eq!(t.metadata.prefix_block_size, Some(512));
    let r = &t.records[0];
    assert_eq!((r.input_tokens, r.output_tokens), (6758, 500));
    assert_eq!(r.prefix_block_ids.as_ref().unwrap().len(), 14);
    assert_eq!(
        t.records[1].prefix_block_ids.as_ref().unwrap()[0],
        0,
        "shared first block"
    );
    let stats = llm_replay::trace::inspect::compute(&t);
    assert!(stats.violations.is_empty(), "{:?}", stats.violations);
    assert!(stats.repeated_prefix_share.unwrap() > 0.0);
}

#[test]
fn bailian_sessions_from_the_parent_chain() {
    let dir = tempfile::tempdir().unwrap();
    let t = ingest("bailian", &["bailian_small.jsonl"], &out(&dir), &[]).unwrap();
    let by_id = |id: &str| t.records.iter().find(|r| r.request_id == id).unwrap();
    assert_eq!(by_id("104").session_id.as_deref(), Some("101"));
    assert_eq!(by_id("104").turn_index, Some(2));
    assert_eq!(by_id("102").turn_index, Some(0));
    // Parent 99 never appears: the session starts at it, turn from `turn`.
    assert_eq!(by_id("105").session_id.as_deref(), Some("99"));
    assert_eq!(by_id("105").turn_index, Some(3));
    assert_eq!(by_id("104").arrival_offset_us, Some(4_125_000));
    assert_eq!(
        t.metadata
            .extra
            .get("bailian.orphan_parents")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(t.metadata.prefix_block_size, Some(16));
}

#[test]
fn bad_inputs_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "azure",
            "bad/azure_semicolon.csv",
            "azure_semicolon.csv: line 1: header: missing column(s) TIMESTAMP",
        ),
        (
            "azure",
            "bad/azure_header_only.csv",
            "azure_header_only.csv: no records (the input has only a header)",
        ),
        (
            "azure",
            "bad/azure_truncated.csv",
            "azure_truncated.csv: truncated at line 3: the input ends inside a record; 1 complete records came before the cut",
        ),
        (
            "azure",
            "bad/azure_unsorted.csv",
            "azure_unsorted.csv: line 3: TIMESTAMP: time goes backwards",
        ),
        (
            "azure",
            "bad/azure_bad_values.csv",
            "azure_bad_values.csv: line 3: ContextTokens: must not be negative, found -3",
        ),
        (
            "azure",
            "bad/azure_non_utf8.csv",
            "azure_non_utf8.csv: line 3: TIMESTAMP: not UTF-8",
        ),
        (
            "azure",
            "bad/azure_missing_field.csv",
            "azure_missing_field.csv: line 3: GeneratedTokens: missing (the row has 2 fields, the header 3)",
        ),
        (
            "azure",
            "bad/azure_wrong_type.csv",
            "azure_wrong_type.csv: line 3: TIMESTAMP: not a timestamp like 2023-11-16 18:15:46.6805900: \"1700000000\"",
        ),
        (
            "burstgpt",
            "bad/burstgpt_missing_column.csv",
            "burstgpt_missing_column.csv: line 1: header: missing column(s) Log Type",
        ),
        (
            "burstgpt",
            "bad/burstgpt_semicolon.csv",
            "burstgpt_semicolon.csv: line 1: header: missing column(s) Timestamp, Model, Request tokens, Response tokens, Log Type; found \"Timestamp;Model;Request tokens;Response tokens;Total tokens;Log Type\" (the file does not look comma-separated)",
        ),
        (
            "burstgpt",
            "bad/burstgpt_header_only.csv",
            "burstgpt_header_only.csv: no records (the input has only a header)",
        ),
        (
            "burstgpt",
            "bad/burstgpt_unsorted.csv",
            "burstgpt_unsorted.csv: line 3: Timestamp: time goes backwards (4000000 after 5000000)",
        ),
        (
            "burstgpt",
            "bad/burstgpt_negative.csv",
            "burstgpt_negative.csv: line 3: Timestamp: must not be negative, found -6",
        ),
        (
            "burstgpt",
            "bad/burstgpt_wrong_type.csv",
            "burstgpt_wrong_type.csv: line 3: Response tokens: expected an integer, found \"1.5\"",
        ),
        (
            "burstgpt",
            "bad/burstgpt_non_utf8.csv",
            "burstgpt_non_utf8.csv: line 3: Model: not UTF-8",
        ),
        (
            "burstgpt",
            "bad/burstgpt_truncated.csv",
            "burstgpt_truncated.csv: truncated at line 3: the input ends inside a record; 1 complete records came before the cut",
        ),
        (
            "mooncake",
            "bad/mooncake_block_count.jsonl",
            "mooncake_block_count.jsonl: line 1: hash_ids: 1 block ids for input_length 600: expected ceil(600/512) = 2",
        ),
        (
            "mooncake",
            "bad/mooncake_wrong_type.jsonl",
            "mooncake_wrong_type.jsonl: line 2: timestamp: expected an integer, found a string",
        ),
        (
            "mooncake",
            "bad/mooncake_truncated.jsonl",
            "mooncake_truncated.jsonl: truncated at line 2",
        ),
        (
            "mooncake",
            "bad/mooncake_missing_field.jsonl",
            "mooncake_missing_field.jsonl: line 2: input_length: missing",
        ),
        (
            "mooncake",
            "bad/mooncake_empty.jsonl",
            "mooncake_empty.jsonl: no records",
        ),
        (
            "mooncake",
            "bad/mooncake_unsorted.jsonl",
            "mooncake_unsorted.jsonl: line 2: timestamp: time goes backwards (4 after 10)",
        ),
        (
            "mooncake",
            "bad/mooncake_negative.jsonl",
            "mooncake_negative.jsonl: line 2: output_length: must not be negative, found -10",
        ),
        (
            "mooncake",
            "bad/mooncake_non_utf8.jsonl",
            "mooncake_non_utf8.jsonl: line 2: line: not UTF-8",
        ),
        (
            "bailian",
            "bad/bailian_unsorted.jsonl",
            "bailian_unsorted.jsonl: line 2: timestamp: time goes backwards",
        ),
        (
            "bailian",
            "bad/bailian_truncated.jsonl",
            "bailian_truncated.jsonl: truncated at line 2: the input ends inside a record; 1 complete records came before the cut",
        ),
        (
            "bailian",
            "bad/bailian_missing_field.jsonl",
            "bailian_missing_field.jsonl: line 2: input_length: missing",
        ),
        (
            "bailian",
            "bad/bailian_wrong_type.jsonl",
            "bailian_wrong_type.jsonl: line 2: timestamp: expected a number of seconds, found a string",
        ),
        (
            "bailian",
            "bad/bailian_negative.jsonl",
            "bailian_negative.jsonl: line 2: timestamp: must not be negative",
        ),
        (
            "bailian",
            "bad/bailian_non_utf8.jsonl",
            "bailian_non_utf8.jsonl: line 2: line: not UTF-8",
        ),
        (
            "bailian",
            "bad/bailian_empty.jsonl",
            "bailian_empty.jsonl: no records",
        ),
        (
            "bailian",
            "bad/bailian_block_count.jsonl",
            "bailian_block_count.jsonl: line 2: hash_ids: 2 block ids for input_length 70: expected 4 or 5 (blocks of 16 tokens)",
        ),
    ];
    for (format, file, expected) in cases {
        let err = ingest(format, &[file], &out(&dir), &[]).unwrap_err();
        assert!(err.contains(expected), "{file}: {err}");
    }
}

#[test]
fn skip_invalid_turns_every_bad_row_into_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("burstgpt", "bad/burstgpt_unsorted.csv", "invalid:Timestamp"),
        ("burstgpt", "bad/burstgpt_non_utf8.csv", "invalid:Model"),
        ("burstgpt", "bad/burstgpt_truncated.csv", "truncated"),
        (
            "azure",
            "bad/azure_missing_field.csv",
            "invalid:GeneratedTokens",
        ),
        ("mooncake", "bad/mooncake_non_utf8.jsonl", "invalid:line"),
        (
            "bailian",
            "bad/bailian_block_count.jsonl",
            "invalid:hash_ids",
        ),
        ("bailian", "bad/bailian_truncated.jsonl", "truncated"),
    ];
    for (format, file, reason) in cases {
        let t = ingest(format, &[file], &out(&dir), &["--skip-invalid"]).unwrap();
        assert_eq!(t.metadata.rows_dropped.get(*reason), Some(&1), "{file}");
        assert!(t.metadata.counts_add_up(), "{file}");
        assert_eq!(t.metadata.rows_written, t.records.len() as u64, "{file}");
    }
}

#[test]
fn several_inputs_keep_distinct_ids_and_their_own_kind() {
    let dir = tempfile::tempdir().unwrap();
    // The 2024 fixture's times come after the 2023 one's, so the two
    // together are sorted.
    let t = ingest(
        "azure",
        &["azure_conv_small.csv", "azure_2024_small.csv"],
        &out(&dir),
        &[],
    )
    .unwrap();
    assert_eq!(t.records.len(), 405);
    assert_eq!(t.records[0].request_id, "f0:line2");
    assert_eq!(t.records[400].request_id, "f1:line2");
    assert_eq!(t.records[0].request_kind.as_deref(), Some("conv"));
    assert_eq!(t.records[400].request_kind, None);
    assert_eq!(t.metadata.input_files.len(), 2);
    assert_eq!(t.metadata.rows_dropped.get("duplicate_id"), None);
}

#[test]
fn skip_invalid_counts_by_reason_and_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let t = ingest(
        "azure",
        &["bad/azure_bad_values.csv"],
        &out(&dir),
        &["--skip-invalid"],
    )
    .unwrap();
    assert_eq!(t.records.len(), 1);
    assert_eq!(
        t.metadata.rows_dropped.get("invalid:ContextTokens"),
        Some(&2)
    );
    assert!(t.metadata.counts_add_up());
    let t = ingest(
        "mooncake",
        &["bad/mooncake_truncated.jsonl"],
        &dir.path().join("m.parquet"),
        &["--skip-invalid"],
    )
    .unwrap();
    assert_eq!(t.records.len(), 1);
    assert_eq!(t.metadata.rows_dropped.get("truncated"), Some(&1));
    let t = ingest(
        "azure",
        &["bad/azure_unsorted.csv"],
        &dir.path().join("u.parquet"),
        &["--skip-invalid"],
    )
    .unwrap();
    assert_eq!(t.records.len(), 2);
    assert_eq!(t.metadata.rows_dropped.get("invalid:TIMESTAMP"), Some(&1));
}

#[test]
fn the_bundled_trace_is_the_fixture_ingested() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = ingest("azure", &["azure_conv_small.csv"], &out(&dir), &[]).unwrap();
    let bundled = read_trace(Path::new(&data("azure_conv_small.parquet"))).unwrap();
    assert_eq!(bundled.records, fresh.records);
}

#[test]
fn inspect_lists_every_violation() {
    use llm_replay::trace::{TraceMetadata, TraceRecord, TraceWriter};
    let dir = tempfile::tempdir().unwrap();
    let path = out(&dir);
    let mut w = TraceWriter::create(&path).unwrap();
    for id in ["a", "a", "b"] {
        w.write(&TraceRecord {
            request_id: id.into(),
            input_tokens: 10,
            prefix_block_ids: Some(vec![1, 2, 3, 4]),
            ..TraceRecord::default()
        })
        .unwrap();
    }
    let mut meta = TraceMetadata::new("test");
    meta.prefix_block_size = Some(4);
    meta.rows_read = 7; // 3 written, nothing dropped: does not add up
    w.finish(meta).unwrap();
    let stats = llm_replay::trace::inspect::compute(&read_trace(&path).unwrap());
    let all = stats.violations.join("\n");
    assert!(
        all.contains("row 1: request_id \"a\" is not unique"),
        "{all}"
    );
    assert!(
        all.contains("4 prefix blocks of 4 tokens for only 10 input tokens"),
        "{all}"
    );
    assert!(all.contains("counts do not add up"), "{all}");
    let code = llm_replay::commands::inspect::run(&llm_replay::cli::InspectArgs {
        trace: path.clone(),
        json: true,
    })
    .unwrap();
    assert_eq!(code, std::process::ExitCode::from(2));
    let fresh = dir.path().join("fresh.parquet");
    ingest("bailian", &["bailian_small.jsonl"], &fresh, &[]).unwrap();
    let code = llm_replay::commands::inspect::run(&llm_replay::cli::InspectArgs {
        trace: fresh,
        json: false,
    })
    .unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
}
