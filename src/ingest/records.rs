//! What the trace formats (Azure, BurstGPT, Mooncake, Bailian) share:
//! JSONL line reading with exact positions and truncation detection, typed
//! field access with errors that name the field, exact decimal time parsing,
//! and arrival-order checking.

use std::io::BufRead;

use serde_json::{Map, Value};

use super::{IngestError, Input, InputError, Position, TraceSink};

/// One line of a line-oriented input.
pub struct Line {
    /// 1-based line number.
    pub number: u64,
    /// The line's text, without its end of line.
    pub text: String,
    /// Whether this is the input's last line and has no newline after it.
    pub unterminated: bool,
}

/// Reads lines, naming non-UTF-8 bytes by line and byte.
pub struct Lines {
    reader: Box<dyn BufRead + Send>,
    file: String,
    number: u64,
    buf: Vec<u8>,
}

impl Lines {
    /// Lines of `input`.
    pub fn open(input: &Input) -> Result<Self, IngestError> {
        Ok(Self {
            reader: input.open()?,
            file: input.name(),
            number: 0,
            buf: Vec::new(),
        })
    }

    /// The next line; `Ok(None)` at the end. A line that is not UTF-8 is an
    /// [`InputError`] (field `line`), after which reading can go on.
    pub fn next_line(&mut self) -> Result<Option<Result<Line, InputError>>, IngestError> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| IngestError::Io {
                file: self.file.clone(),
                error: source,
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        // A byte-order mark (Windows tools write one) is not part of the data.
        if self.number == 1 && self.buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
            self.buf.drain(..3);
        }
        let unterminated = self.buf.last() != Some(&b'\n');
        while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
            self.buf.pop();
        }
        Ok(Some(match std::str::from_utf8(&self.buf) {
            Ok(s) => Ok(Line {
                number: self.number,
                text: s.to_owned(),
                unterminated,
            }),
            Err(e) => Err(InputError::new(
                &self.file,
                Position::Line(self.number),
                "line",
                format!("not UTF-8 (invalid byte at column {})", e.valid_up_to() + 1),
            )),
        }))
    }
}

/// A JSON object from one JSONL line, with typed getters whose errors name
/// the field.
pub struct Fields<'a> {
    file: &'a str,
    line: u64,
    map: Map<String, Value>,
}

/// The JSON type of a value, for error messages (never the value itself).
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a JSONL line into an object. A syntax error on an unterminated
/// last line is a truncation.
pub fn parse_object<'a>(
    file: &'a str,
    line: &Line,
    complete_before: u64,
) -> Result<Fields<'a>, IngestError> {
    match serde_json::from_str::<Value>(&line.text) {
        Ok(Value::Object(map)) => Ok(Fields {
            file,
            line: line.number,
            map,
        }),
        Ok(other) => Err(InputError::new(
            file,
            Position::Line(line.number),
            "json",
            format!("expected a JSON object, found {}", kind(&other)),
        )
        .into()),
        Err(e) if e.is_eof() && line.unterminated => Err(IngestError::Truncated {
            file: file.to_owned(),
            position: Position::Line(line.number),
            complete: complete_before,
        }),
        Err(e) => Err(InputError::new(
            file,
            Position::Line(line.number),
            "json",
            format!("invalid JSON at column {}: {}", e.column(), e),
        )
        .into()),
    }
}

impl Fields<'_> {
    fn err(&self, field: &str, message: String) -> InputError {
        InputError::new(self.file, Position::Line(self.line), field, message)
    }

    fn get(&self, field: &str) -> Result<&Value, InputError> {
        match self.map.get(field) {
            Some(Value::Null) | None => Err(self.err(field, "missing".into())),
            Some(v) => Ok(v),
        }
    }

    /// Whether the field is present and not null.
    pub fn has(&self, field: &str) -> bool {
        !matches!(self.map.get(field), None | Some(Value::Null))
    }

    /// A non-negative integer.
    pub fn uint(&self, field: &str) -> Result<u64, InputError> {
        let v = self.get(field)?;
        v.as_u64().ok_or_else(|| match v.as_i64() {
            Some(n) => self.err(field, format!("must not be negative, found {n}")),
            None => self.err(field, format!("expected an integer, found {}", kind(v))),
        })
    }

    /// An integer (may be negative).
    pub fn int(&self, field: &str) -> Result<i64, InputError> {
        let v = self.get(field)?;
        v.as_i64()
            .ok_or_else(|| self.err(field, format!("expected an integer, found {}", kind(v))))
    }

    /// A number of seconds as microseconds, from the number's shortest
    /// decimal text (exact for any value that round-trips through a double,
    /// which covers timestamps with up to 15 significant digits).
    pub fn seconds_us(&self, field: &str) -> Result<i64, InputError> {
        let v = self.get(field)?;
        match v {
            Value::Number(n) => decimal_to_units(&n.to_string(), 6).map_err(|m| self.err(field, m)),
            other => Err(self.err(
                field,
                format!("expected a number of seconds, found {}", kind(other)),
            )),
        }
    }

    /// A list of non-negative integers.
    pub fn uint_list(&self, field: &str) -> Result<Vec<u64>, InputError> {
        let v = self.get(field)?;
        let Value::Array(items) = v else {
            return Err(self.err(
                field,
                format!("expected a list of integers, found {}", kind(v)),
            ));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_u64().ok_or_else(|| {
                    self.err(
                        &format!("{field}[{i}]"),
                        format!("expected a non-negative integer, found {}", kind(item)),
                    )
                })
            })
            .collect()
    }

    /// A string, or a number written as its text (ids often come as either).
    pub fn id(&self, field: &str) -> Result<String, InputError> {
        match self.get(field)? {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(self.err(
                field,
                format!("expected a string or number, found {}", kind(other)),
            )),
        }
    }

    /// An optional string.
    pub fn opt_str(&self, field: &str) -> Result<Option<String>, InputError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => {
                Err(self.err(field, format!("expected a string, found {}", kind(other))))
            }
        }
    }
}

/// Parses a decimal (`12`, `-2.5`, `1.5e3`; the exponent form is what
/// serde_json prints for very large or small doubles) into integer units of
/// 10^-`digits`, truncating toward zero what is finer. Exact: no floating
/// point, and overflow is an error, never a wrap.
pub fn decimal_to_units(text: &str, digits: u32) -> Result<i64, String> {
    let bad = || format!("not a plain decimal number: {}", super::quote(text));
    let out_of_range = || format!("out of range: {}", super::quote(text));
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (mantissa, exp) = match t.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().map_err(|_| bad())?),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // value = D * 10^(exp - frac.len()) where D is all the digits; in units
    // of 10^-digits that is D * 10^shift.
    let all = int.bytes().chain(frac.bytes());
    let n_digits = int.len() + frac.len();
    let shift = i64::from(digits)
        .checked_add(exp)
        .and_then(|s| s.checked_sub(i64::try_from(frac.len()).ok()?))
        .ok_or_else(out_of_range)?;
    // Digits past the unit are dropped (truncation), not rounded.
    let keep = if shift < 0 {
        n_digits.saturating_sub(usize::try_from(shift.unsigned_abs()).unwrap_or(usize::MAX))
    } else {
        n_digits
    };
    let mut v = 0i64;
    for b in all.take(keep) {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(out_of_range)?;
    }
    if shift > 0 && v != 0 {
        let scale = u32::try_from(shift)
            .ok()
            .and_then(|s| 10i64.checked_pow(s))
            .ok_or_else(out_of_range)?;
        v = v.checked_mul(scale).ok_or_else(out_of_range)?;
    }
    Ok(if neg { -v } else { v })
}

/// The request id of a row known only by its position: `line{N}` for a
/// single input, `f{K}:line{N}` (K the 0-based input index) when several
/// inputs are read, so that equal line numbers in two files stay distinct
/// and an id is stable across re-ingest of the same files in the same order.
pub fn line_id(input_index: usize, inputs: usize, line: u64) -> String {
    if inputs > 1 {
        format!("f{input_index}:line{line}")
    } else {
        format!("line{line}")
    }
}

/// Checks arrival order: each time must be at or after the previous. The
/// error names the line and both times.
pub struct OrderCheck {
    last: Option<i64>,
}

impl OrderCheck {
    /// A check with no rows yet.
    pub fn new() -> Self {
        Self { last: None }
    }

    /// `Err` when `t` is before the previous accepted time.
    pub fn check(&mut self, file: &str, line: u64, field: &str, t: i64) -> Result<(), InputError> {
        if let Some(last) = self.last
            && t < last
        {
            return Err(InputError::new(
                file,
                Position::Line(line),
                field,
                format!(
                    "time goes backwards ({t} after {last}): the input must be sorted by arrival"
                ),
            ));
        }
        self.last = Some(t);
        Ok(())
    }
}

impl Default for OrderCheck {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `per_line(input_index, file, line, sink, complete_before)` over
/// every non-blank line of every input, routing bad lines through the sink (error, or counted with `--skip-invalid`). A
/// truncated last line is an error even with `--skip-invalid`, unless the
/// user asked to skip (then it is counted as `truncated`). Returns the lines
/// read; an input with no records is [`IngestError::Empty`].
pub fn for_each_line(
    inputs: &[Input],
    sink: &mut TraceSink,
    mut per_line: impl FnMut(usize, &str, &Line, &mut TraceSink, u64) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    for (index, input) in inputs.iter().enumerate() {
        let name = input.name();
        let mut lines = Lines::open(input)?;
        let mut records = 0u64;
        let mut complete = 0u64;
        while let Some(line) = lines.next_line()? {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    sink.read_row();
                    records += 1;
                    sink.invalid(e)?;
                    continue;
                }
            };
            if line.text.trim().is_empty() {
                continue;
            }
            records += 1;
            sink.read_row();
            match per_line(index, &name, &line, sink, complete) {
                Ok(()) => complete += 1,
                Err(IngestError::Input(e)) => sink.invalid(e)?,
                Err(IngestError::Truncated { .. }) if sink.skip_invalid() => {
                    sink.drop_row("truncated");
                }
                Err(other) => return Err(other),
            }
        }
        if records == 0 {
            return Err(IngestError::Empty {
                file: name,
                what: "no records".into(),
            });
        }
    }
    Ok(())
}

/// How a text-free trace format (Azure, BurstGPT, Mooncake, Bailian) starts
/// its trace.
pub struct TraceStart<'a> {
    /// Format name in the metadata (`azure`).
    pub format: &'a str,
    /// Name for messages (`Azure`).
    pub label: &'a str,
    /// Time unit of the source.
    pub time_unit: &'a str,
    /// Prefix block size of the format, when it has blocks.
    pub default_block: Option<u32>,
}

impl TraceStart<'_> {
    /// Refuses `--keep-text` (there is no text), settles the block size,
    /// fills the metadata (input files, time unit, block size) and opens the
    /// sink. Returns the sink and the block size.
    pub fn open(
        &self,
        args: &super::Config,
        inputs: &[Input],
        filters: super::Filters,
    ) -> Result<(TraceSink, Option<u32>), IngestError> {
        if args.keep_text {
            return Err(IngestError::Usage(format!(
                "--keep-text: {} traces carry no text",
                self.label
            )));
        }
        let block = self.default_block.map(|d| args.block_or(d));
        let mut meta = crate::trace::TraceMetadata::new(self.format);
        for input in inputs {
            meta.input_files.push(input.describe()?);
        }
        meta.prefix_block_size = block;
        meta.time_unit = Some(self.time_unit.to_owned());
        let sink = TraceSink::create(&args.output, meta, filters, args.skip_invalid)?;
        Ok((sink, block))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// No input line panics the JSONL path or the field getters.
        #[test]
        fn arbitrary_lines_never_panic(text in ".{0,200}", unterminated in any::<bool>()) {
            let line = Line { number: 1, text, unterminated };
            if let Ok(f) = parse_object("f", &line, 0) {
                for field in ["timestamp", "input_length", "hash_ids", "chat_id"] {
                    let _ = (f.uint(field), f.int(field), f.seconds_us(field), f.uint_list(field), f.id(field), f.opt_str(field));
                }
            }
        }

        /// Decimal and timestamp parsing never panic, and agree with
        /// integer parsing on integers.
        #[test]
        fn decimals_never_panic(s in "[-0-9.eE ]{0,30}", n in 0u32..1_000_000) {
            let _ = decimal_to_units(&s, 6);
            let _ = crate::ingest::azure::parse_ticks(&s);
            prop_assert_eq!(decimal_to_units(&n.to_string(), 6), Ok(i64::from(n) * 1_000_000));
        }

        /// Well-formed Mooncake-like objects with wrong types give field
        /// errors, never panics.
        #[test]
        fn typed_fields_report_errors(v in prop_oneof![Just("1"), Just("-1"), Just("\"x\""), Just("[1,\"a\"]"), Just("null"), Just("1.5"), Just("{}")]) {
            let line = Line { number: 3, text: format!("{{\"timestamp\": {v}, \"hash_ids\": {v}}}"), unterminated: false };
            let f = parse_object("f", &line, 0).unwrap();
            if let Err(e) = f.uint("timestamp") {
                prop_assert!(e.to_string().starts_with("f: line 3: timestamp: "));
            }
            if let Err(e) = f.uint_list("hash_ids") {
                prop_assert!(e.to_string().starts_with("f: line 3: hash_ids"));
            }
        }
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(decimal_to_units("12", 6), Ok(12_000_000));
        assert_eq!(decimal_to_units("0.1", 6), Ok(100_000));
        assert_eq!(decimal_to_units("1.2345678", 6), Ok(1_234_567));
        assert_eq!(decimal_to_units("6805900", 0), Ok(6_805_900));
        assert_eq!(decimal_to_units("-2.5", 6), Ok(-2_500_000));
        assert_eq!(decimal_to_units("1.5e3", 6), Ok(1_500_000_000));
        assert_eq!(decimal_to_units("5e-7", 6), Ok(0));
        assert_eq!(decimal_to_units("1.25E-1", 6), Ok(125_000));
        assert!(decimal_to_units("", 6).is_err());
        assert!(decimal_to_units("abc", 6).is_err());
        assert!(decimal_to_units(".5", 6).is_err());
        assert!(decimal_to_units("1e", 6).is_err());
        assert!(decimal_to_units("9223372036854.9", 6).is_err());
        assert!(decimal_to_units("1e400", 6).is_err());
        assert_eq!(decimal_to_units("0e400", 6), Ok(0));
    }

    #[test]
    fn line_ids_are_distinct_across_inputs() {
        assert_eq!(line_id(0, 1, 7), "line7");
        assert_eq!(line_id(1, 2, 7), "f1:line7");
        assert_ne!(line_id(0, 2, 7), line_id(1, 2, 7));
    }

    proptest::proptest! {
        /// Invariant: any text parses or is refused, never panics.
        #[test]
        fn decimal_never_panics(text in "\\PC{0,40}", digits in 0u32..20) {
            let _ = decimal_to_units(&text, digits);
        }

        /// Invariant: `int.frac` seconds are exactly `int * 10^6` plus the
        /// first six fractional digits, whatever follows.
        #[test]
        fn decimal_is_exact(int in 0u32..4_000_000_000, frac in "[0-9]{0,12}") {
            let text = if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") };
            let six: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
            let want = i64::from(int) * 1_000_000 + six.parse::<i64>().unwrap();
            proptest::prop_assert_eq!(decimal_to_units(&text, 6), Ok(want));
        }
    }

    #[test]
    fn order_check_names_the_line() {
        let mut c = OrderCheck::new();
        c.check("f", 1, "timestamp", 5).unwrap();
        c.check("f", 2, "timestamp", 5).unwrap();
        let e = c.check("f", 3, "timestamp", 4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f: line 3: timestamp: time goes backwards (4 after 5): the input must be sorted by arrival"
        );
    }
}

/// Helpers for the parsers' tests: run an ingest over bytes in a temporary
/// file with a [`Config`](crate::ingest::Config) built directly.
#[cfg(test)]
pub(crate) mod testing {
    use std::num::NonZeroU32;

    use crate::ingest::{Config, Format, IngestError, Input};
    use crate::trace::TraceMetadata;

    /// Ingests `content` (written to a file named `name`) as `format`, with
    /// `extra` flags (`--skip-invalid`, `--block-size N`).
    pub(crate) fn ingest_bytes(
        format: &str,
        name: &str,
        content: &[u8],
        extra: &[&str],
    ) -> Result<TraceMetadata, IngestError> {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join(name);
        std::fs::write(&input, content).unwrap();
        let format = match format {
            "azure" => Format::Azure,
            "burstgpt" => Format::Burstgpt,
            "mooncake" => Format::Mooncake,
            "bailian" => Format::Bailian,
            other => panic!("no test format {other}"),
        };
        let mut cfg = Config::new(
            format,
            vec![Input::File(input)],
            dir.path().join("t.parquet"),
        );
        let mut flags = extra.iter();
        while let Some(flag) = flags.next() {
            match *flag {
                "--skip-invalid" => cfg.skip_invalid = true,
                "--block-size" => {
                    let n = flags.next().and_then(|n| n.parse().ok());
                    cfg.block_size = n.and_then(NonZeroU32::new);
                }
                other => panic!("no test flag {other}"),
            }
        }
        crate::ingest::run(&cfg).map(|s| s.metadata)
    }
}
