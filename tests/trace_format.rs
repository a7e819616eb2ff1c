//! The trace format: the documented table is the code's schema, and rows
//! round-trip through the writer and reader unchanged.

use llm_replay::trace::{TraceMetadata, TraceRecord, TraceWriter, read_trace, schema};

#[test]
fn documented_columns_are_the_schema() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/trace-format.md"))
        .unwrap();
    let begin = doc.find("<!-- columns:begin -->\n").unwrap() + "<!-- columns:begin -->\n".len();
    let end = doc.find("<!-- columns:end -->").unwrap();
    assert_eq!(&doc[begin..end], schema::markdown_table());
}

#[test]
fn rows_round_trip_with_nulls_unicode_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let rows = vec![
        TraceRecord {
            request_id: "a".into(),
            arrival_offset_us: Some(0),
            input_tokens: 10,
            output_tokens: 2,
            source_row: 1,
            ..TraceRecord::default()
        },
        TraceRecord {
            request_id: "b:1 ✓ 日本".into(),
            arrival_offset_us: Some(5),
            input_tokens: 1_000,
            output_tokens: 0,
            session_id: Some("s1".into()),
            turn_index: Some(1),
            think_time_us: Some(2_500_000),
            prefix_block_ids: Some(vec![0, u64::MAX, 7]),
            model: Some("gpt-4".into()),
            request_kind: Some("conv".into()),
            prompt_text: Some("héllo\n\"quoted\"".into()),
            source_row: 2,
            user_id: Some("9f1e9ae503196330".into()),
        },
        TraceRecord {
            request_id: "c".into(),
            arrival_offset_us: Some(5),
            prefix_block_ids: Some(vec![]),
            source_row: 3,
            ..TraceRecord::default()
        },
    ];
    let mut w = TraceWriter::create(&path).unwrap();
    for r in &rows {
        w.write(r).unwrap();
    }
    let mut meta = TraceMetadata::new("test");
    meta.rows_read = 3;
    let written = w.finish(meta).unwrap();
    assert_eq!(written.rows_written, 3);
    let back = read_trace(&path).unwrap();
    assert_eq!(back.records, rows);
    assert_eq!(back.metadata, written);
    assert!(!dir.path().join("t.parquet.partial").exists());
}

#[test]
fn the_writer_refuses_unsorted_and_negative_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TraceWriter::create(&dir.path().join("t.parquet")).unwrap();
    let row = |id: &str, t: i64, n: i32| TraceRecord {
        request_id: id.into(),
        arrival_offset_us: Some(t),
        input_tokens: n,
        ..TraceRecord::default()
    };
    w.write(&row("a", 10, 1)).unwrap();
    let e = w.write(&row("b", 5, 1)).unwrap_err().to_string();
    assert!(
        e.contains("arrival_offset_us") && e.contains("sorted"),
        "{e}"
    );
    let e = w.write(&row("c", 20, -1)).unwrap_err().to_string();
    assert!(e.contains("input_tokens"), "{e}");
}

#[test]
fn a_parquet_file_that_is_not_a_trace_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.parquet");
    let w = llm_replay::record::ResultsWriter::create(&path, &[]).unwrap();
    w.close(&[]).unwrap();
    let e = read_trace(&path).unwrap_err().to_string();
    assert!(
        e.contains("r.parquet") && e.contains("not an llm-replay trace"),
        "{e}"
    );
}
