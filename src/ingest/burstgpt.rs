//! BurstGPT CSV traces, columns found by name (v1: `Timestamp, Model,
//! Request tokens, Response tokens, Total tokens, Log Type`; v2 adds
//! `Session ID` and `Elapsed time` in the middle). `Timestamp` is seconds
//! from the trace start, parsed exactly as a decimal.
//!
//! Failed requests (`Response tokens` 0) are kept, and marked: their
//! `request_kind` is the `Log Type` with `:failed` appended (e.g.
//! `Conversation log:failed`), and metadata `burstgpt.failed_rows` counts
//! them. `--min-output 1` drops them if you do not want them replayed.

use super::csvin::CsvInput;
use super::records::{OrderCheck, decimal_to_units};
use super::{Filters, IngestError, Input, InputError, Position, TraceSink};
use crate::cli::IngestArgs;
use crate::trace::{TraceMetadata, TraceRecord};

const TIMESTAMP: &str = "Timestamp";
const MODEL: &str = "Model";
const REQUEST: &str = "Request tokens";
const RESPONSE: &str = "Response tokens";
const LOG_TYPE: &str = "Log Type";
const SESSION: &str = "Session ID";

/// Reads `inputs` and writes the trace at `args.output`.
pub fn ingest(
    args: &IngestArgs,
    inputs: &[Input],
    filters: Filters,
) -> Result<TraceMetadata, IngestError> {
    if args.keep_text {
        return Err(IngestError::Usage(
            "--keep-text: BurstGPT traces carry no text".into(),
        ));
    }
    let mut meta = TraceMetadata::new("burstgpt");
    for input in inputs {
        meta.input_files.push(input.describe()?);
    }
    meta.time_unit = Some("s".into());
    let mut sink = TraceSink::create(&args.output, meta, filters, args.skip_invalid)?;
    let mut order = OrderCheck::new();
    let mut t0: Option<i64> = None;
    let mut failed = 0u64;
    for input in inputs {
        let mut csv = CsvInput::open(input, &[TIMESTAMP, MODEL, REQUEST, RESPONSE, LOG_TYPE])?;
        let has_session = csv.has_column(SESSION);
        let file = input.name();
        let mut rows = 0u64;
        let mut complete = 0u64;
        let mut short_line: Option<(u64, usize, usize)> = None;
        while let Some(row) = csv.next_row()? {
            rows += 1;
            sink.read_row();
            if let Some((line, got, want)) = short_line.take() {
                sink.invalid(InputError::new(
                    &file,
                    Position::Line(line),
                    "csv",
                    format!("{got} fields, the header has {want}"),
                ))?;
            }
            if !row.is_complete() {
                let (got, want) = row.field_counts();
                short_line = Some((row.line, got, want));
                continue;
            }
            let line = row.line;
            let parsed = (|| -> Result<TraceRecord, InputError> {
                let ts = decimal_to_units(row.text(TIMESTAMP)?, 6)
                    .map_err(|m| InputError::new(&file, Position::Line(line), TIMESTAMP, m))?;
                if ts < 0 {
                    return Err(InputError::new(
                        &file,
                        Position::Line(line),
                        TIMESTAMP,
                        "must not be negative",
                    ));
                }
                let input_tokens = row.tokens(REQUEST)?;
                let output_tokens = row.tokens(RESPONSE)?;
                let model = row.text(MODEL)?.to_owned();
                let log_type = row.text(LOG_TYPE)?;
                let session = if has_session {
                    Some(row.text(SESSION)?.to_owned()).filter(|s| !s.is_empty())
                } else {
                    None
                };
                order.check(&file, line, TIMESTAMP, ts)?;
                let first = *t0.get_or_insert(ts);
                let kind = if output_tokens == 0 {
                    format!("{log_type}:failed")
                } else {
                    log_type.to_owned()
                };
                Ok(TraceRecord {
                    request_id: format!("line{line}"),
                    arrival_offset_us: Some(ts - first),
                    input_tokens,
                    output_tokens,
                    session_id: session,
                    model: Some(model).filter(|m| !m.is_empty()),
                    request_kind: Some(kind),
                    source_row: i64::try_from(line).unwrap_or(i64::MAX),
                    ..TraceRecord::default()
                })
            })();
            match parsed {
                Ok(r) => {
                    complete += 1;
                    if r.output_tokens == 0 {
                        failed += 1;
                    }
                    sink.offer(r)?;
                }
                Err(e) => sink.invalid(e)?,
            }
        }
        if let Some((line, _, _)) = short_line {
            if sink.skip_invalid() {
                sink.drop_row("truncated");
            } else {
                return Err(IngestError::Truncated {
                    file,
                    position: Position::Line(line),
                    complete,
                });
            }
        }
        if rows == 0 {
            return Err(IngestError::Empty {
                file,
                what: "only a header".into(),
            });
        }
    }
    sink.metadata_mut()
        .extra
        .insert("burstgpt.failed_rows".into(), failed.to_string());
    sink.finish()
}
