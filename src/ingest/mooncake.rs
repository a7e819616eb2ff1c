//! Mooncake JSONL traces: `{timestamp, input_length, output_length,
//! hash_ids}`, `timestamp` in integer milliseconds from the trace start,
//! `hash_ids` the ids of 512-token prefix blocks (`--block-size` changes
//! it), with `len(hash_ids) == ceil(input_length / block)` checked.

use super::records::{OrderCheck, for_each_line, parse_object};
use super::{Filters, IngestError, Input, InputError, Position, TraceSink};
use crate::cli::IngestArgs;
use crate::trace::{TraceMetadata, TraceRecord};

/// Mooncake's block size.
pub const DEFAULT_BLOCK: u32 = 512;

/// Reads `inputs` and writes the trace at `args.output`.
pub fn ingest(
    args: &IngestArgs,
    inputs: &[Input],
    filters: Filters,
) -> Result<TraceMetadata, IngestError> {
    if args.keep_text {
        return Err(IngestError::Usage(
            "--keep-text: Mooncake traces carry no text".into(),
        ));
    }
    let block = args.block_size.unwrap_or(DEFAULT_BLOCK);
    if block == 0 {
        return Err(IngestError::Usage("--block-size must be positive".into()));
    }
    let mut meta = TraceMetadata::new("mooncake");
    for input in inputs {
        meta.input_files.push(input.describe()?);
    }
    meta.prefix_block_size = Some(block);
    meta.time_unit = Some("ms".into());
    let mut sink = TraceSink::create(&args.output, meta, filters, args.skip_invalid)?;
    let mut order = OrderCheck::new();
    let mut first_ms: Option<i64> = None;
    for_each_line(inputs, &mut sink, |file, line, sink, complete| {
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
            request_id: format!("line{}", line.number),
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
