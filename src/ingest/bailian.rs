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

use std::collections::HashMap;

use super::records::{OrderCheck, for_each_line, parse_object};
use super::{Filters, IngestError, Input, InputError, Position, TraceSink};
use crate::cli::IngestArgs;
use crate::trace::{TraceMetadata, TraceRecord};

/// Bailian's block size.
pub const DEFAULT_BLOCK: u32 = 16;

/// Reads `inputs` and writes the trace at `args.output`.
pub fn ingest(
    args: &IngestArgs,
    inputs: &[Input],
    filters: Filters,
) -> Result<TraceMetadata, IngestError> {
    if args.keep_text {
        return Err(IngestError::Usage(
            "--keep-text: Bailian traces carry no text".into(),
        ));
    }
    let block = args.block_size.unwrap_or(DEFAULT_BLOCK);
    if block == 0 {
        return Err(IngestError::Usage("--block-size must be positive".into()));
    }
    let mut meta = TraceMetadata::new("bailian");
    for input in inputs {
        meta.input_files.push(input.describe()?);
    }
    meta.prefix_block_size = Some(block);
    meta.time_unit = Some("s".into());
    let mut sink = TraceSink::create(&args.output, meta, filters, args.skip_invalid)?;
    let mut order = OrderCheck::new();
    let mut first_us: Option<i64> = None;
    // chat_id -> (session root, depth)
    let mut chains: HashMap<String, (String, i32)> = HashMap::new();
    let mut orphans = 0u64;
    for_each_line(inputs, &mut sink, |file, line, sink, complete| {
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
            let want = u64::try_from(input_tokens)
                .unwrap_or(0)
                .div_ceil(u64::from(block));
            if ids.len() as u64 > want {
                return Err(InputError::new(
                    file,
                    pos,
                    "hash_ids",
                    format!("{} block ids for input_length {input_tokens}: more than ceil({input_tokens}/{block}) = {want}", ids.len()),
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
        chains.insert(chat_id.clone(), (session.clone(), depth));
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
