//! Mooncake JSONL traces: `{timestamp, input_length, output_length,
//! hash_ids}`, `timestamp` in integer milliseconds from the trace start,
//! `hash_ids` the ids of 512-token prefix blocks (`--block-size` changes
//! it), with `len(hash_ids) == ceil(input_length / block)` checked (the
//! Mooncake release states it; a mismatch means the wrong block size or a
//! damaged row, and replaying it would misstate prefix reuse).
//!
//! Rows have no ids of their own: they get `line{N}` (see
//! [`line_id`]). Times are relative to the trace's start, so no `t0`.

use super::Config;
use super::records::{OrderCheck, TraceStart, for_each_line, line_id, parse_object};
use super::{Filters, IngestError, Input, InputError, Position};
use crate::trace::{TraceMetadata, TraceRecord};

/// Mooncake's block size.
pub const DEFAULT_BLOCK: u32 = 512;

/// Reads `inputs` and writes the trace at `args.output`.
pub fn ingest(
    args: &Config,
    inputs: &[Input],
    filters: Filters,
) -> Result<TraceMetadata, IngestError> {
    let (mut sink, block) = TraceStart {
        format: "mooncake",
        label: "Mooncake",
        time_unit: "ms",
        default_block: Some(DEFAULT_BLOCK),
    }
    .open(args, inputs, filters)?;
    let block = block.unwrap_or(DEFAULT_BLOCK);
    let mut order = OrderCheck::new();
    let mut first_ms: Option<i64> = None;
    for_each_line(inputs, &mut sink, |index, file, line, sink, complete| {
        let f = parse_object(file, line, complete)?;
        let ts = f.int("timestamp")?;
        if ts < 0 {
            return Err(InputError::new(
                file,
                Position::Line(line.number),
                "timestamp",
                format!("must not be negative, found {ts}"),
            )
            .into());
        }
        let input = f.uint("input_length")?;
        let output = f.uint("output_length")?;
        let ids = f.uint_list("hash_ids")?;
        let want = input.div_ceil(u64::from(block));
        if ids.len() as u64 != want {
            return Err(InputError::new(
                file,
                Position::Line(line.number),
                "hash_ids",
                format!(
                    "{} block ids for input_length {input}: expected ceil({input}/{block}) = {want}",
                    ids.len()
                ),
            )
            .into());
        }
        let as_i32 = |field: &str, v: u64| {
            i32::try_from(v).map_err(|_| {
                InputError::new(
                    file,
                    Position::Line(line.number),
                    field,
                    format!("{v} is too large"),
                )
            })
        };
        let input_tokens = as_i32("input_length", input)?;
        let output_tokens = as_i32("output_length", output)?;
        order.check(file, line.number, "timestamp", ts)?;
        let t0 = *first_ms.get_or_insert(ts);
        sink.offer(TraceRecord {
            request_id: line_id(index, inputs.len(), line.number),
            arrival_offset_us: Some((ts - t0) * 1_000),
            input_tokens,
            output_tokens,
            prefix_block_ids: Some(ids),
            source_row: i64::try_from(line.number).unwrap_or(i64::MAX),
            ..TraceRecord::default()
        })
    })?;
    sink.finish()
}

#[cfg(test)]
mod tests {
    use crate::ingest::records::testing::ingest_bytes;

    #[test]
    fn bad_rows_name_line_and_field() {
        let ok = r#"{"timestamp": 5, "input_length": 600, "output_length": 3, "hash_ids": [1, 2]}"#;
        let cases = [
            (
                r#"{"timestamp": 4, "input_length": 1, "output_length": 1, "hash_ids": [3]}"#,
                "line 2: timestamp: time goes backwards",
            ),
            (
                r#"{"timestamp": -7, "input_length": 1, "output_length": 1, "hash_ids": [3]}"#,
                "line 2: timestamp: must not be negative, found -7",
            ),
            (
                r#"{"timestamp": 9, "input_length": -1, "output_length": 1, "hash_ids": []}"#,
                "line 2: input_length: must not be negative, found -1",
            ),
            (
                r#"{"timestamp": 9, "input_length": 1, "output_length": 1, "hash_ids": ["a"]}"#,
                "line 2: hash_ids[0]: expected a non-negative integer, found a string",
            ),
            (
                r#"{"timestamp": 9, "input_length": 1, "output_length": 1}"#,
                "line 2: hash_ids: missing",
            ),
            (
                r#"[9, 1, 1]"#,
                "line 2: json: expected a JSON object, found an array",
            ),
            ("{\"timestamp\": 9,}\n", "line 2: json: invalid JSON"),
        ];
        for (row, want) in cases {
            let e = ingest_bytes(
                "mooncake",
                "m.jsonl",
                format!("{ok}\n{row}").as_bytes(),
                &[],
            )
            .unwrap_err();
            assert!(
                e.to_string().contains(&format!("m.jsonl: {want}")),
                "{row}: {e}"
            );
        }
        let mut bytes = format!("{ok}\n").into_bytes();
        bytes.extend(b"{\"timestamp\": \xff}\n");
        let e = ingest_bytes("mooncake", "m.jsonl", &bytes, &[]).unwrap_err();
        assert!(
            e.to_string().contains("m.jsonl: line 2: line: not UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn block_size_flag_changes_the_check() {
        let row =
            br#"{"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [1, 2, 3]}"#;
        assert!(ingest_bytes("mooncake", "m.jsonl", row, &[]).is_err());
        let m = ingest_bytes("mooncake", "m.jsonl", row, &["--block-size", "256"]).unwrap();
        assert_eq!(m.prefix_block_size, Some(256));
    }

    proptest::proptest! {
        /// Invariant: arbitrary lines never panic the ingest; they give a
        /// trace or an error.
        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec(
            proptest::prop_oneof![
                "\\PC{0,60}",
                r#"\{"timestamp": -?[0-9]{1,4}, "input_length": [0-9]{1,4}, "output_length": -?[0-9]{1,3}, "hash_ids": \[([0-9]{1,3}, ){0,3}[0-9]\]\}"#,
                r#"\{"timestamp": [0-9]{1,3}(\.5)?, "input_length": "?[0-9]{1,3}"?, "hash_ids": (null|\[\]|\[-1\])"#,
            ],
            0..8,
        )) {
            let text = lines.join("\n");
            let _ = ingest_bytes("mooncake", "m.jsonl", text.as_bytes(), &[]);
            let _ = ingest_bytes("mooncake", "m.jsonl", text.as_bytes(), &["--skip-invalid"]);
        }
    }
}
