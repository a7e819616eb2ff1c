//! Qwen/Bailian JSONL traces: `chat_id`, `parent_chat_id` (-1 for a
//! session's first request), `timestamp` (float seconds), `input_length`,
//! `output_length`, `turn`, `type`, and `hash_ids` of 16-token blocks.
//!
//! Sessions come from the parent chain: `session_id` is the chain's root
//! `chat_id` and `turn_index` its depth. A parent that never appears (the
//! trace was cut from a longer one) starts the session at that parent: the
//! request gets `session_id` = the parent's id and `turn_index` from its
//! `turn` field (1-based in the source) when present; such rows are counted
//! in metadata `bailian.orphan_parents`.
//!
//! `think_time_us` stays null: the trace gives each request's arrival but not
//! when its parent's response ended, and the gap between two arrivals would
//! count the parent's generation time as think time. `replay` then keeps the
//! recorded arrivals, which already contain both.
//!
//! `hash_ids` must have one id per full block and may have one for a last
//! partial block: `floor(input_length / 16) <= len <= ceil(input_length /
//! 16)`.

use std::collections::HashMap;

use super::Config;
use super::records::{OrderCheck, TraceStart, for_each_line, parse_object};
use super::{Filters, IngestError, Input, InputError, Position};
use crate::trace::{TraceMetadata, TraceRecord};

/// Bailian's block size.
pub const DEFAULT_BLOCK: u32 = 16;

/// Reads `inputs` and writes the trace at `args.output`.
pub fn ingest(
    args: &Config,
    inputs: &[Input],
    filters: Filters,
) -> Result<TraceMetadata, IngestError> {
    let (mut sink, block) = TraceStart {
        format: "bailian",
        label: "Bailian",
        time_unit: "s",
        default_block: Some(DEFAULT_BLOCK),
    }
    .open(args, inputs, filters)?;
    let block = block.unwrap_or(DEFAULT_BLOCK);
    let mut order = OrderCheck::new();
    let mut first_us: Option<i64> = None;
    // chat_id -> (session root, depth)
    let mut chains: HashMap<String, (String, i32)> = HashMap::new();
    let mut orphans = 0u64;
    for_each_line(inputs, &mut sink, |_, file, line, sink, complete| {
        let f = parse_object(file, line, complete)?;
        let pos = Position::Line(line.number);
        let chat_id = f.id("chat_id")?;
        let parent = f.id("parent_chat_id")?;
        let ts = f.seconds_us("timestamp")?;
        if ts < 0 {
            return Err(InputError::new(file, pos, "timestamp", "must not be negative").into());
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
        let input_tokens = as_i32("input_length", f.uint("input_length")?)?;
        let output_tokens = as_i32("output_length", f.uint("output_length")?)?;
        let ids = if f.has("hash_ids") {
            Some(f.uint_list("hash_ids")?)
        } else {
            None
        };
        if let Some(ids) = &ids {
            // One id per 16-token block; the last, partial block may or may
            // not have one. Anything else is the wrong block size or a
            // damaged row.
            let input = u64::try_from(input_tokens).unwrap_or(0);
            let (lo, hi) = (input / u64::from(block), input.div_ceil(u64::from(block)));
            let n = ids.len() as u64;
            if n < lo || n > hi {
                return Err(InputError::new(
                    file,
                    pos,
                    "hash_ids",
                    format!(
                        "{n} block ids for input_length {input}: expected {} (blocks of {block} tokens)",
                        if lo == hi { lo.to_string() } else { format!("{lo} or {hi}") }
                    ),
                )
                .into());
            }
        }
        let kind = f.opt_str("type")?;
        let turn_field = if f.has("turn") {
            Some(f.int("turn")?)
        } else {
            None
        };
        order.check(file, line.number, "timestamp", ts)?;
        let (session, depth) = if parent == "-1" {
            (chat_id.clone(), 0)
        } else if let Some((root, d)) = chains.get(&parent) {
            (root.clone(), d + 1)
        } else {
            orphans += 1;
            let depth = turn_field.map_or(1, |t| i32::try_from(t.max(1) - 1).unwrap_or(1));
            (parent.clone(), depth)
        };
        // A repeated chat_id is dropped by the sink as `duplicate_id`; the
        // chain keeps the first.
        chains
            .entry(chat_id.clone())
            .or_insert_with(|| (session.clone(), depth));
        let t0 = *first_us.get_or_insert(ts);
        sink.offer(TraceRecord {
            request_id: chat_id,
            arrival_offset_us: Some(ts - t0),
            input_tokens,
            output_tokens,
            session_id: Some(session),
            turn_index: Some(depth),
            prefix_block_ids: ids,
            request_kind: kind,
            source_row: i64::try_from(line.number).unwrap_or(i64::MAX),
            ..TraceRecord::default()
        })
    })?;
    sink.metadata_mut()
        .extra
        .insert("bailian.orphan_parents".into(), orphans.to_string());
    sink.finish()
}

#[cfg(test)]
mod tests {
    use crate::ingest::records::testing::ingest_bytes;

    const ROOT: &str = r#"{"chat_id": 1, "parent_chat_id": -1, "timestamp": 1.5, "input_length": 40, "output_length": 3, "turn": 1, "type": "text", "hash_ids": [1, 2, 3]}"#;

    #[test]
    fn bad_rows_name_line_and_field() {
        let cases = [
            (
                r#"{"chat_id": 2, "parent_chat_id": 1, "timestamp": 1.0, "input_length": 1, "output_length": 1}"#,
                "line 2: timestamp: time goes backwards",
            ),
            (
                r#"{"chat_id": 2, "parent_chat_id": 1, "timestamp": "2.0", "input_length": 1, "output_length": 1}"#,
                "line 2: timestamp: expected a number of seconds, found a string",
            ),
            (
                r#"{"chat_id": 2, "parent_chat_id": 1, "timestamp": 2.0, "output_length": 1}"#,
                "line 2: input_length: missing",
            ),
            (
                r#"{"chat_id": 2, "timestamp": 2.0, "input_length": 1, "output_length": 1}"#,
                "line 2: parent_chat_id: missing",
            ),
            (
                r#"{"chat_id": 2, "parent_chat_id": 1, "timestamp": 2.0, "input_length": 1, "output_length": -4}"#,
                "line 2: output_length: must not be negative, found -4",
            ),
            (
                r#"{"chat_id": 2, "parent_chat_id": 1, "timestamp": 2.0, "input_length": 64, "output_length": 1, "hash_ids": [1]}"#,
                "line 2: hash_ids: 1 block ids for input_length 64: expected 4 (blocks of 16 tokens)",
            ),
            (
                r#"{"chat_id": 2, "parent_chat_id": 1, "timestamp": 2.0, "input_length": 40, "output_length": 1, "hash_ids": [1, 2, 3, 4]}"#,
                "line 2: hash_ids: 4 block ids for input_length 40: expected 2 or 3",
            ),
            (
                r#"{"chat_id": [2], "parent_chat_id": 1, "timestamp": 2.0, "input_length": 1, "output_length": 1}"#,
                "line 2: chat_id: expected a string or number, found an array",
            ),
        ];
        for (row, want) in cases {
            let e = ingest_bytes(
                "bailian",
                "q.jsonl",
                format!("{ROOT}\n{row}\n").as_bytes(),
                &[],
            )
            .unwrap_err();
            assert!(
                e.to_string().contains(&format!("q.jsonl: {want}")),
                "{row}: {e}"
            );
        }
    }

    #[test]
    fn a_line_cut_mid_object_is_a_truncation() {
        let text = format!("{ROOT}\n{}", &ROOT[..50]);
        let e = ingest_bytes("bailian", "q.jsonl", text.as_bytes(), &[]).unwrap_err();
        assert!(
            e.to_string().contains("q.jsonl: truncated at line 2: the input ends inside a record; 1 complete records came before the cut"),
            "{e}"
        );
        let m = ingest_bytes("bailian", "q.jsonl", text.as_bytes(), &["--skip-invalid"]).unwrap();
        assert_eq!(
            (m.rows_written, m.rows_dropped.get("truncated")),
            (1, Some(&1))
        );
    }

    #[test]
    fn partial_last_block_may_have_an_id_or_not() {
        for ids in ["[1, 2]", "[1, 2, 3]"] {
            let row = format!(
                r#"{{"chat_id": 1, "parent_chat_id": -1, "timestamp": 0, "input_length": 40, "output_length": 3, "hash_ids": {ids}}}"#
            );
            assert!(
                ingest_bytes("bailian", "q.jsonl", row.as_bytes(), &[]).is_ok(),
                "{ids}"
            );
        }
    }

    proptest::proptest! {
        /// Invariant: arbitrary lines never panic the ingest; they give a
        /// trace or an error.
        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec(
            proptest::prop_oneof![
                "\\PC{0,60}",
                r#"\{"chat_id": [0-9]{1,2}, "parent_chat_id": -?[0-9]{1,2}, "timestamp": -?[0-9]{1,3}(\.[0-9]{1,7})?(e-?[0-9])?, "input_length": [0-9]{1,3}, "output_length": [0-9]{1,3}, "turn": -?[0-9], "type": "[a-z]{0,5}", "hash_ids": \[([0-9]{1,3}, ){0,3}[0-9]\]\}"#,
            ],
            0..8,
        )) {
            let text = lines.join("\n");
            let _ = ingest_bytes("bailian", "q.jsonl", text.as_bytes(), &[]);
            let _ = ingest_bytes("bailian", "q.jsonl", text.as_bytes(), &["--skip-invalid"]);
        }
    }
}
