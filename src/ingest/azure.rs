//! The Azure LLM inference trace CSV: `TIMESTAMP,ContextTokens,
//! GeneratedTokens`. Times are wall clock, `2023-11-16 18:15:46.6805900`
//! (seven fractional digits, no zone) in the 2023 files, and
//! `2024-05-10 00:00:00.008185+00:00` (zone, fewer or no fractional digits)
//! in the 2024 ones. They are parsed exactly, as integers of 100 ns, and
//! written as whole microseconds since the first row (the 7th digit is
//! truncated); `t0` keeps the first time to the full precision.

use chrono::{NaiveDate, NaiveTime};

use super::Config;
use super::csvin::for_each_row;
use super::records::{OrderCheck, TraceStart, line_id};
use super::{Filters, IngestError, Input};
use crate::trace::{TraceMetadata, TraceRecord};

const TIMESTAMP: &str = "TIMESTAMP";
const CONTEXT: &str = "ContextTokens";
const GENERATED: &str = "GeneratedTokens";

/// 100 ns ticks since the Unix epoch (UTC) of an Azure timestamp: the date,
/// a space or `T`, `HH:MM:SS`, up to nine fractional digits (the 8th and 9th
/// are truncated) and an optional zone (`Z`, `+hh:mm`, `-hh:mm`; none means
/// UTC). Integer arithmetic only, so equal texts give equal ticks and
/// differences are exact.
pub fn parse_ticks(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "not a timestamp like 2023-11-16 18:15:46.6805900: {}",
            super::quote(text)
        )
    };
    let t = text.trim();
    let (date, rest) = t.split_once([' ', 'T']).ok_or_else(bad)?;
    let (time, offset_s) = if let Some(time) = rest.strip_suffix('Z') {
        (time, 0i64)
    } else if let Some(i) = rest.rfind(['+', '-']).filter(|&i| i >= 8) {
        let (time, zone) = rest.split_at(i);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let zone = zone.get(1..).ok_or_else(bad)?;
        let (h, m) = zone.split_once(':').unwrap_or((zone, "0"));
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        // Real zones are within a day; the bound also keeps the sum below
        // far from overflow.
        if !(0..24).contains(&h) || !(0..60).contains(&m) {
            return Err(bad());
        }
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
    let secs = d
        .and_time(hms)
        .and_utc()
        .timestamp()
        .checked_sub(offset_s)
        .ok_or_else(bad)?;
    let mut ticks = 0i64;
    for (i, b) in frac.bytes().take(7).enumerate() {
        ticks += i64::from(b - b'0') * 10i64.pow(6 - i as u32);
    }
    secs.checked_mul(10_000_000)
        .and_then(|s| s.checked_add(ticks))
        .ok_or_else(bad)
}

/// The service a file's name says it records (`AzureLLMInferenceTrace_code`
/// or `_conv`), the trace's only class label.
fn kind_of(input: &Input) -> Option<&'static str> {
    let n = input.name().to_ascii_lowercase();
    let n = n.rsplit(['/', '\\']).next().unwrap_or(&n);
    if n.contains("code") {
        Some("code")
    } else if n.contains("conv") {
        Some("conv")
    } else {
        None
    }
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
    args: &Config,
    inputs: &[Input],
    filters: Filters,
) -> Result<TraceMetadata, IngestError> {
    let kinds: Vec<Option<&str>> = inputs.iter().map(kind_of).collect();
    let (mut sink, _) = TraceStart {
        format: "azure",
        label: "Azure",
        time_unit: "100ns",
        default_block: None,
    }
    .open(args, inputs, filters)?;
    let mut order = OrderCheck::new();
    let mut t0: Option<i64> = None;
    for_each_row(
        inputs,
        &[TIMESTAMP, CONTEXT, GENERATED],
        &mut sink,
        |index, row, sink| {
            let ticks = parse_ticks(row.text(TIMESTAMP)?).map_err(|m| row.error(TIMESTAMP, m))?;
            let input_tokens = row.tokens(CONTEXT)?;
            let output_tokens = row.tokens(GENERATED)?;
            order.check(row.file(), row.line, TIMESTAMP, ticks)?;
            let first = *t0.get_or_insert(ticks);
            sink.offer(TraceRecord {
                request_id: line_id(index, inputs.len(), row.line),
                // Sorted, so the difference is non-negative and `/ 10`
                // rounds down to the microsecond.
                arrival_offset_us: Some((ticks - first) / 10),
                input_tokens,
                output_tokens,
                request_kind: kinds.get(index).copied().flatten().map(str::to_owned),
                source_row: i64::try_from(row.line).unwrap_or(i64::MAX),
                ..TraceRecord::default()
            })
        },
    )?;
    if let Some(t) = t0 {
        sink.metadata_mut().t0 = Some(ticks_to_rfc3339(t));
    }
    sink.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::records::testing::ingest_bytes;

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
        assert!(parse_ticks("2024-05-10 00:00:00+99999999999999:00").is_err());
        assert!(parse_ticks("2023-11-16 25:15:46").is_err());
    }

    #[test]
    fn kind_comes_from_each_file_name() {
        let k = |p: &str| kind_of(&Input::File(p.into()));
        assert_eq!(k("data/AzureLLMInferenceTrace_code.csv"), Some("code"));
        assert_eq!(k("AzureLLMInferenceTrace_conv_1week.csv.gz"), Some("conv"));
        assert_eq!(
            k("conversations/trace.csv"),
            None,
            "directories do not count"
        );
        assert_eq!(k("trace.csv"), None);
    }

    #[test]
    fn a_short_row_in_the_middle_names_the_missing_column() {
        let csv = b"TIMESTAMP,ContextTokens,GeneratedTokens\n\
            2023-11-16 18:15:46.6805900,374,44\n\
            2023-11-16 18:15:47.0000000,12\n\
            2023-11-16 18:15:48.0000000,5,6";
        let e = ingest_bytes("azure", "x_conv.csv", csv, &[]).unwrap_err();
        assert!(
            e.to_string().contains(
                "x_conv.csv: line 3: GeneratedTokens: missing (the row has 2 fields, the header 3)"
            ),
            "{e}"
        );
    }

    proptest::proptest! {
        /// Invariant: any text is a timestamp or an error, never a panic.
        #[test]
        fn timestamps_never_panic(text in "\\PC{0,40}") {
            let _ = parse_ticks(&text);
        }

        /// Invariant: the difference of two timestamps of one day is exact
        /// to the 100 ns tick, whatever the fraction's length.
        #[test]
        fn differences_are_exact(s in 0u32..86_400, ticks in 0u32..10_000_000, digits in 0usize..8) {
            let frac = format!("{ticks:07}");
            let kept = &frac[..digits];
            let text = format!(
                "2023-11-16 {:02}:{:02}:{:02}{}{kept}",
                s / 3600, s / 60 % 60, s % 60,
                if digits > 0 { "." } else { "" },
            );
            let base = parse_ticks("2023-11-16 00:00:00").unwrap();
            let want = i64::from(s) * 10_000_000
                + if digits > 0 { format!("{kept:0<7}").parse::<i64>().unwrap() } else { 0 };
            proptest::prop_assert_eq!(parse_ticks(&text).unwrap() - base, want);
        }

        /// Invariant: arbitrary lines after the header never panic the
        /// ingest; they give a trace or an error.
        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec(
            proptest::prop_oneof![
                "\\PC{0,60}",
                "2023-11-1[0-9] [0-2][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{0,9})?(\\+0[0-9]:00)?,-?[0-9]{1,11},[0-9x]{0,11}",
            ],
            0..8,
        )) {
            let mut csv = String::from("TIMESTAMP,ContextTokens,GeneratedTokens\n");
            csv.push_str(&lines.join("\n"));
            let _ = ingest_bytes("azure", "conv.csv", csv.as_bytes(), &[]);
            let _ = ingest_bytes("azure", "conv.csv", csv.as_bytes(), &["--skip-invalid"]);
        }

        /// Invariant: arbitrary bytes never panic the ingest.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut csv = b"TIMESTAMP,ContextTokens,GeneratedTokens\n".to_vec();
            csv.extend(bytes);
            let _ = ingest_bytes("azure", "conv.csv", &csv, &["--skip-invalid"]);
        }
    }
}
