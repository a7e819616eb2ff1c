//! BurstGPT CSV traces, columns found by name (v1: `Timestamp, Model,
//! Request tokens, Response tokens, Total tokens, Log Type`; v2 adds
//! `Session ID` and `Elapsed time` in the middle). `Timestamp` is seconds
//! from the trace start, parsed exactly as a decimal.
//!
//! Failed requests (`Response tokens` 0) are kept, and marked: their
//! `request_kind` is the `Log Type` with `:failed` appended (e.g.
//! `Conversation log:failed`), and metadata `burstgpt.failed_rows` counts
//! them. They are kept because they were offered load all the same; the
//! trace has no status column, and a suffix on the class label keeps them
//! one `GROUP BY request_kind` apart. `--min-output 1` drops them (counted
//! as `filter:min_output`) if you do not want them replayed.
//!
//! `Elapsed time` (v2) and `Total tokens` are not carried: the first is the
//! source's response time, an outcome rather than load, and the second is the
//! sum of the other two.

use super::Config;
use super::csvin::for_each_row;
use super::records::{OrderCheck, TraceStart, decimal_to_units, line_id};
use super::{Filters, IngestError, Input};
use crate::trace::{TraceMetadata, TraceRecord};

const TIMESTAMP: &str = "Timestamp";
const MODEL: &str = "Model";
const REQUEST: &str = "Request tokens";
const RESPONSE: &str = "Response tokens";
const LOG_TYPE: &str = "Log Type";
const SESSION: &str = "Session ID";
/// Appended to the `Log Type` of a failed request (`Response tokens` 0).
pub const FAILED_SUFFIX: &str = ":failed";

/// Reads `inputs` and writes the trace at `args.output`.
pub fn ingest(
    args: &Config,
    inputs: &[Input],
    filters: Filters,
) -> Result<TraceMetadata, IngestError> {
    let (mut sink, _) = TraceStart {
        format: "burstgpt",
        label: "BurstGPT",
        time_unit: "s",
        default_block: None,
    }
    .open(args, inputs, filters)?;
    let mut order = OrderCheck::new();
    let mut t0: Option<i64> = None;
    let mut failed = 0u64;
    for_each_row(
        inputs,
        &[TIMESTAMP, MODEL, REQUEST, RESPONSE, LOG_TYPE],
        &mut sink,
        |index, row, sink| {
            let ts =
                decimal_to_units(row.text(TIMESTAMP)?, 6).map_err(|m| row.error(TIMESTAMP, m))?;
            if ts < 0 {
                return Err(row
                    .error(
                        TIMESTAMP,
                        format!("must not be negative, found {}", row.text(TIMESTAMP)?),
                    )
                    .into());
            }
            let input_tokens = row.tokens(REQUEST)?;
            let output_tokens = row.tokens(RESPONSE)?;
            let model = row.text(MODEL)?.to_owned();
            let log_type = row.text(LOG_TYPE)?;
            // v1 has no sessions; in v2 an empty cell is a request outside
            // any session.
            let session = if row.has_column(SESSION) {
                Some(row.text(SESSION)?.to_owned()).filter(|s| !s.is_empty())
            } else {
                None
            };
            order.check(row.file(), row.line, TIMESTAMP, ts)?;
            let first = *t0.get_or_insert(ts);
            let kind = if output_tokens == 0 {
                failed += 1;
                format!("{log_type}{FAILED_SUFFIX}")
            } else {
                log_type.to_owned()
            };
            sink.offer(TraceRecord {
                request_id: line_id(index, inputs.len(), row.line),
                arrival_offset_us: Some(ts - first),
                input_tokens,
                output_tokens,
                session_id: session,
                model: Some(model).filter(|m| !m.is_empty()),
                request_kind: Some(kind),
                source_row: i64::try_from(row.line).unwrap_or(i64::MAX),
                ..TraceRecord::default()
            })
        },
    )?;
    sink.metadata_mut()
        .extra
        .insert("burstgpt.failed_rows".into(), failed.to_string());
    sink.finish()
}

#[cfg(test)]
mod tests {
    use crate::ingest::records::testing::ingest_bytes;

    const V1: &str = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n";

    #[test]
    fn bad_values_name_line_and_column() {
        let cases = [
            (
                "5,ChatGPT,10,2,12,API log\n4,ChatGPT,1,1,2,API log",
                "line 3: Timestamp: time goes backwards",
            ),
            (
                "-1.5,ChatGPT,10,2,12,API log",
                "line 2: Timestamp: must not be negative, found -1.5",
            ),
            (
                "5s,ChatGPT,10,2,12,API log",
                "line 2: Timestamp: not a plain decimal number: \"5s\"",
            ),
            (
                "5,ChatGPT,ten,2,12,API log",
                "line 2: Request tokens: expected an integer, found \"ten\"",
            ),
            (
                "5,ChatGPT,10,-2,8,API log",
                "line 2: Response tokens: must not be negative, found -2",
            ),
            (
                "5,ChatGPT,10\n6,ChatGPT,1,1,2,API log",
                "line 2: Response tokens: missing (the row has 3 fields, the header 6)",
            ),
        ];
        for (rows, want) in cases {
            let e = ingest_bytes("burstgpt", "b.csv", format!("{V1}{rows}").as_bytes(), &[])
                .unwrap_err();
            assert!(
                e.to_string().contains(&format!("b.csv: {want}")),
                "{rows}: {e}"
            );
        }
    }

    proptest::proptest! {
        /// Invariant: arbitrary rows under either header never panic the
        /// ingest; they give a trace or an error.
        #[test]
        fn arbitrary_lines_never_panic(v2 in proptest::bool::ANY, lines in proptest::collection::vec(
            proptest::prop_oneof![
                "\\PC{0,60}",
                "-?[0-9]{1,6}(\\.[0-9]{0,8})?,(s-[0-9],)?[A-Za-z4-]{0,7},-?[0-9]{1,10},[0-9]{1,4},[0-9]{1,4},(API|Conversation) log",
            ],
            0..8,
        )) {
            let header = if v2 {
                "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
            } else {
                V1
            };
            let csv = format!("{header}{}", lines.join("\n"));
            let _ = ingest_bytes("burstgpt", "b.csv", csv.as_bytes(), &[]);
            let _ = ingest_bytes("burstgpt", "b.csv", csv.as_bytes(), &["--skip-invalid"]);
        }
    }
}
