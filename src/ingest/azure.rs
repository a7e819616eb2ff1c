//! The Azure LLM inference trace CSV: `TIMESTAMP,ContextTokens,
//! GeneratedTokens`. Times are wall clock, `2023-11-16 18:15:46.6805900`
//! (seven fractional digits, no zone) in the 2023 files, and
//! `2024-05-10 00:00:00.008185+00:00` (zone, fewer or no fractional digits)
//! in the 2024 ones. They are parsed exactly, as integers of 100 ns, and
//! written as whole microseconds since the first row (the 7th digit is
//! truncated); `t0` keeps the first time to the full precision.

use chrono::{NaiveDate, NaiveTime};

use super::csvin::CsvInput;
use super::records::OrderCheck;
use super::{Filters, IngestError, Input, InputError, Position, TraceSink};
use crate::cli::IngestArgs;
use crate::trace::{TraceMetadata, TraceRecord};

const TIMESTAMP: &str = "TIMESTAMP";
const CONTEXT: &str = "ContextTokens";
const GENERATED: &str = "GeneratedTokens";

/// 100 ns ticks since the Unix epoch (UTC) of an Azure timestamp.
pub fn parse_ticks(text: &str) -> Result<i64, String> {
    let bad = || format!("not a timestamp like 2023-11-16 18:15:46.6805900: {text:?}");
    let t = text.trim();
    let (date, rest) = t.split_once([' ', 'T']).ok_or_else(bad)?;
    // Zone: Z, +hh:mm or -hh:mm after the time.
    let (time, offset_s) = if let Some(time) = rest.strip_suffix('Z') {
        (time, 0i64)
    } else if let Some(i) = rest.rfind(['+', '-']).filter(|&i| i >= 8) {
        let (time, zone) = rest.split_at(i);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':').unwrap_or((&zone[1..], "0"));
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        (time, sign * (h * 3600 + m * 60))
    } else {
        (rest, 0)
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| bad())?;
    let hms = NaiveTime::parse_from_str(hms, "%H:%M:%S").map_err(|_| bad())?;
    let secs = d.and_time(hms).and_utc().timestamp() - offset_s;
    let mut ticks = 0i64;
    for (i, b) in frac.bytes().take(7).enumerate() {
        ticks += i64::from(b - b'0') * 10i64.pow(6 - i as u32);
    }
    secs.checked_mul(10_000_000)
        .and_then(|s| s.checked_add(ticks))
        .ok_or_else(bad)
}

fn ticks_to_rfc3339(ticks: i64) -> String {
    let secs = ticks.div_euclid(10_000_000);
    let sub = ticks.rem_euclid(10_000_000);
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(dt) => format!("{}.{sub:07}Z", dt.format("%Y-%m-%dT%H:%M:%S")),
        None => ticks.to_string(),
    }
}

/// Reads `inputs` and writes the trace at `args.output`.
pub fn ingest(
    args: &IngestArgs,
    inputs: &[Input],
    filters: Filters,
) -> Result<TraceMetadata, IngestError> {
    if args.keep_text {
        return Err(IngestError::Usage(
            "--keep-text: Azure traces carry no text".into(),
        ));
    }
    let mut meta = TraceMetadata::new("azure");
    for input in inputs {
        meta.input_files.push(input.describe()?);
    }
    meta.time_unit = Some("100ns".into());
    // The file names say which service (code or conversation).
    let kind = inputs.iter().find_map(|i| {
        let n = i.name().to_ascii_lowercase();
        if n.contains("code") {
            Some("code")
        } else if n.contains("conv") {
            Some("conv")
        } else {
            None
        }
    });
    let mut sink = TraceSink::create(&args.output, meta, filters, args.skip_invalid)?;
    let mut order = OrderCheck::new();
    let mut t0: Option<i64> = None;
    for input in inputs {
        let mut csv = CsvInput::open(input, &[TIMESTAMP, CONTEXT, GENERATED])?;
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
                let ts = row.text(TIMESTAMP)?;
                let ticks = parse_ticks(ts)
                    .map_err(|m| InputError::new(&file, Position::Line(line), TIMESTAMP, m))?;
                let input_tokens = row.tokens(CONTEXT)?;
                let output_tokens = row.tokens(GENERATED)?;
                order.check(&file, line, TIMESTAMP, ticks)?;
                let first = *t0.get_or_insert(ticks);
                Ok(TraceRecord {
                    request_id: format!("line{line}"),
                    arrival_offset_us: Some((ticks - first) / 10),
                    input_tokens,
                    output_tokens,
                    request_kind: kind.map(str::to_owned),
                    source_row: i64::try_from(line).unwrap_or(i64::MAX),
                    ..TraceRecord::default()
                })
            })();
            match parsed {
                Ok(r) => {
                    complete += 1;
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
    if let Some(t) = t0 {
        sink.metadata_mut().t0 = Some(ticks_to_rfc3339(t));
    }
    sink.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_timestamp_forms_parse_exactly() {
        let a = parse_ticks("2023-11-16 18:15:46.6805900").unwrap();
        let b = parse_ticks("2023-11-16 18:15:50.9951690").unwrap();
        assert_eq!(b - a, 43_145_790);
        assert_eq!(ticks_to_rfc3339(a), "2023-11-16T18:15:46.6805900Z");
        let z = parse_ticks("2024-05-10 00:00:00+00:00").unwrap();
        let f = parse_ticks("2024-05-10 00:00:00.008185+00:00").unwrap();
        assert_eq!(f - z, 81_850);
        let east = parse_ticks("2024-05-10 02:00:00+02:00").unwrap();
        assert_eq!(east, z);
        assert!(parse_ticks("16/11/2023 18:15").is_err());
        assert!(parse_ticks("2023-11-16 25:15:46").is_err());
    }
}
