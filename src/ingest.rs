//! Ingest: one file per input format, each turning its records into
//! [`TraceRecord`]s and handing them to a [`TraceSink`], which applies the
//! filters, sampling and id de-duplication, counts every dropped row by
//! reason, and writes the trace.
//!
//! Errors in input name the file, the line or record, and the field
//! ([`InputError`]); with `--skip-invalid` they are counted instead.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

pub mod azure;
pub mod bailian;
pub mod burstgpt;
pub mod chat;
pub mod config;
pub mod csvin;
pub mod mooncake;
pub mod openai_log;
pub mod openai_messages;
pub mod records;
pub mod sharegpt;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use thiserror::Error;

pub use config::{Config, FilterConfig, Format, LogConfig, TimeUnit};

use crate::trace::{InputFile, TraceError, TraceMetadata, TraceRecord, TraceWriter};

/// Where in an input a record sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// 1-based line of a line-oriented file (CSV, JSONL).
    Line(u64),
    /// 0-based record of a JSON array.
    Record(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(n) => write!(f, "line {n}"),
            Self::Record(n) => write!(f, "record {n}"),
        }
    }
}

/// One bad record: file, position, field and what is wrong. Its message never
/// quotes the record's content beyond the offending value of a public
/// dataset; production-log ingesters must not put content in `message`.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{file}: {position}: {field}: {message}")]
pub struct InputError {
    /// Input file name as the user gave it (`-` for stdin).
    pub file: String,
    /// Line or record.
    pub position: Position,
    /// The field at fault (`usage.prompt_tokens`), or `json` / `csv` for
    /// syntax errors.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Short stable reason used to count skipped rows (`invalid:<field>`).
    pub reason: String,
}

/// Most bytes of a message (and of a field name) an [`InputError`] keeps:
/// a huge bad value must not flood the terminal.
pub const MAX_MESSAGE_BYTES: usize = 400;

/// Most bytes of input a message quotes.
pub const MAX_QUOTE_BYTES: usize = 200;

/// `text` quoted for a message: at most [`MAX_QUOTE_BYTES`] of it, cut on
/// a character boundary, with `...` after a cut.
pub fn quote(text: &str) -> String {
    if text.len() <= MAX_QUOTE_BYTES {
        return format!("{text:?}");
    }
    format!("{:?}...", &text[..floor_boundary(text, MAX_QUOTE_BYTES)])
}

fn floor_boundary(s: &str, max: usize) -> usize {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        s.truncate(floor_boundary(&s, max));
        s.push_str("...");
    }
    s
}

impl InputError {
    /// An error at `position` of `file` in `field`. The message and field
    /// are kept to [`MAX_MESSAGE_BYTES`].
    pub fn new(
        file: impl Into<String>,
        position: Position,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let field = clip(field.into(), MAX_MESSAGE_BYTES);
        Self {
            file: file.into(),
            reason: format!("invalid:{field}"),
            position,
            field,
            message: clip(message.into(), MAX_MESSAGE_BYTES),
        }
    }
}

/// Errors that stop an ingest.
#[derive(Debug, Error)]
pub enum IngestError {
    /// A bad record (and `--skip-invalid` was not given).
    #[error("{0}\n(use --skip-invalid to skip and count such records)")]
    Input(InputError),
    /// A fault that `--skip-invalid` cannot step over (the structure of the
    /// file itself is broken, e.g. a JSON array missing a comma).
    #[error("{0}")]
    Malformed(InputError),
    /// The input ended in the middle of a record.
    #[error(
        "{file}: truncated at {position}: the input ends inside a record; {complete} complete records came before the cut"
    )]
    Truncated {
        /// Input file.
        file: String,
        /// Where the cut is.
        position: Position,
        /// Complete records before it.
        complete: u64,
    },
    /// An input file could not be read.
    // Not `source`: that would make it the error's source as well, and
    // `{:#}` would print it twice.
    #[error("{file}: {error}")]
    Io {
        /// Input file.
        file: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A flag combination or value that cannot work for this format.
    #[error("{0}")]
    Usage(String),
    /// The input had a header (or nothing) but no records.
    #[error("{file}: no records (the input has {what})")]
    Empty {
        /// Input file.
        file: String,
        /// What was there instead (`only a header`, `no bytes`).
        what: String,
    },
    /// Every row was dropped: there is no trace to write.
    #[error(
        "no row to write: {read} rows read, every one dropped (by reason: {dropped}); no trace was written"
    )]
    NoRows {
        /// Source rows read.
        read: u64,
        /// The commonest drop reasons with their counts.
        dropped: String,
    },
    /// The trace could not be written.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The tokenizer could not be loaded.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenize::TokenizeError),
}

// Not `#[from]`: that would make the input error the source as well, and
// `{:#}` would print it twice.
impl From<InputError> for IngestError {
    fn from(e: InputError) -> Self {
        Self::Input(e)
    }
}

/// Length filters and sampling, validated.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    args: FilterConfig,
}

impl Filters {
    /// Checks that each minimum is at most its maximum.
    pub fn new(args: FilterConfig) -> Result<Self, IngestError> {
        let pairs = [
            ("input", args.min_input, args.max_input),
            ("output", args.min_output, args.max_output),
            ("total", args.min_total, args.max_total),
        ];
        for (name, min, max) in pairs {
            if let (Some(lo), Some(hi)) = (min, max)
                && lo > hi
            {
                return Err(IngestError::Usage(format!(
                    "--min-{name} {lo} is above --max-{name} {hi}"
                )));
            }
        }
        Ok(Self { args })
    }

    /// Whether only first turns are kept.
    pub fn first_turn_only(&self) -> bool {
        self.args.first_turn_only
    }

    /// The reason a record is filtered out, if it is.
    pub fn reject(&self, r: &TraceRecord) -> Option<&'static str> {
        let a = &self.args;
        let input = i64::from(r.input_tokens);
        let output = i64::from(r.output_tokens);
        let total = input + output;
        let below = |v: i64, min: Option<u32>| min.is_some_and(|m| v < i64::from(m));
        let above = |v: i64, max: Option<u32>| max.is_some_and(|m| v > i64::from(m));
        if a.first_turn_only && r.turn_index.is_some_and(|t| t > 0) {
            return Some("filter:first_turn_only");
        }
        if below(input, a.min_input) {
            return Some("filter:min_input");
        }
        if above(input, a.max_input) {
            return Some("filter:max_input");
        }
        if below(output, a.min_output) {
            return Some("filter:min_output");
        }
        if above(output, a.max_output) {
            return Some("filter:max_output");
        }
        if below(total, a.min_total) {
            return Some("filter:min_total");
        }
        if above(total, a.max_total) {
            return Some("filter:max_total");
        }
        None
    }

    /// The filters as `name=value` strings for the metadata.
    pub fn describe(&self) -> Vec<String> {
        let a = &self.args;
        let mut out = Vec::new();
        if a.first_turn_only {
            out.push("first_turn_only=true".to_owned());
        }
        let opts = [
            ("min_input", a.min_input),
            ("max_input", a.max_input),
            ("min_output", a.min_output),
            ("max_output", a.max_output),
            ("min_total", a.min_total),
            ("max_total", a.max_total),
        ];
        for (name, v) in opts {
            if let Some(v) = v {
                out.push(format!("{name}={v}"));
            }
        }
        if let Some(n) = a.sample {
            out.push(format!("sample={n}"));
            out.push(format!("seed={}", a.seed));
        }
        out
    }
}

/// Reservoir sample of rows kept in input order (Algorithm R over the rows
/// that pass the filters; the kept rows are written sorted by position).
struct Reservoir {
    size: usize,
    seen: u64,
    rng: StdRng,
    rows: Vec<(u64, TraceRecord)>,
}

/// Receives records from a format reader: filters, samples, de-duplicates,
/// counts, and writes.
pub struct TraceSink {
    writer: TraceWriter,
    metadata: TraceMetadata,
    filters: Filters,
    skip_invalid: bool,
    ids: HashSet<String>,
    reservoir: Option<Reservoir>,
}

impl TraceSink {
    /// A sink writing to `output`, with `metadata` filled in by the format.
    pub fn create(
        output: &Path,
        metadata: TraceMetadata,
        filters: Filters,
        skip_invalid: bool,
    ) -> Result<Self, IngestError> {
        let reservoir = filters.args.sample.map(|n| Reservoir {
            size: usize::try_from(n).unwrap_or(usize::MAX),
            seen: 0,
            rng: StdRng::seed_from_u64(filters.args.seed),
            rows: Vec::new(),
        });
        let mut metadata = metadata;
        metadata.filters = filters.describe();
        Ok(Self {
            writer: TraceWriter::create(output)?,
            metadata,
            filters,
            skip_invalid,
            ids: HashSet::new(),
            reservoir,
        })
    }

    /// The metadata being built (formats add tokenizer, t0, extras).
    pub fn metadata_mut(&mut self) -> &mut TraceMetadata {
        &mut self.metadata
    }

    /// Whether `--skip-invalid` was given.
    pub fn skip_invalid(&self) -> bool {
        self.skip_invalid
    }

    /// The filters in force (formats use `first_turn_only` early to save
    /// tokenizing).
    pub fn filters(&self) -> &Filters {
        &self.filters
    }

    /// Counts one source row read (call once per source row: a record, a
    /// line, or a ShareGPT user turn, before deciding to keep it).
    pub fn read_row(&mut self) {
        self.metadata.rows_read += 1;
    }

    /// A bad source row: an error, or, with `--skip-invalid`, counted under
    /// its reason. The row must have been counted with [`Self::read_row`].
    pub fn invalid(&mut self, err: InputError) -> Result<(), IngestError> {
        if self.skip_invalid {
            self.metadata.drop_row(err.reason.clone());
            Ok(())
        } else {
            Err(IngestError::Input(err))
        }
    }

    /// Counts a row dropped for a reason of the format's own
    /// (`"failed_response"`, `"no_assistant_reply"`, ...).
    pub fn drop_row(&mut self, reason: &str) {
        self.metadata.drop_row(reason);
    }

    /// Offers a good row: duplicate ids and filtered rows are counted as
    /// dropped, the rest written (or sampled). Rows must come sorted by
    /// `arrival_offset_us`; formats whose input may be unsorted check that
    /// themselves and report it as an [`InputError`].
    pub fn offer(&mut self, record: TraceRecord) -> Result<(), IngestError> {
        if let Some(reason) = self.filters.reject(&record) {
            self.metadata.drop_row(reason);
            return Ok(());
        }
        if !self.ids.insert(record.request_id.clone()) {
            self.metadata.drop_row("duplicate_id");
            return Ok(());
        }
        match &mut self.reservoir {
            None => self.writer.write(&record)?,
            Some(res) => {
                let pos = res.seen;
                res.seen += 1;
                if res.rows.len() < res.size {
                    res.rows.push((pos, record));
                } else {
                    let j = res.rng.random_range(0..res.seen);
                    if let Ok(j) = usize::try_from(j)
                        && j < res.size
                    {
                        res.rows[j] = (pos, record);
                    }
                    self.metadata.drop_row("sample");
                }
            }
        }
        Ok(())
    }

    /// Writes what is held, the metadata and the footer. Returns the
    /// metadata as written. A trace with no row is an error (and no file).
    pub fn finish(mut self) -> Result<TraceMetadata, IngestError> {
        let held = self.reservoir.as_ref().map_or(0, |r| r.rows.len());
        if self.writer.rows_written() == 0 && held == 0 {
            let mut reasons: Vec<(&String, &u64)> = self.metadata.rows_dropped.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let listed: Vec<String> = reasons
                .iter()
                .take(5)
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            return Err(IngestError::NoRows {
                read: self.metadata.rows_read,
                dropped: if listed.is_empty() {
                    "none".to_owned()
                } else {
                    listed.join(", ")
                },
            });
        }
        if let Some(mut res) = self.reservoir.take() {
            res.rows.sort_by_key(|(pos, _)| *pos);
            for (_, r) in &res.rows {
                self.writer.write(r)?;
            }
        }
        Ok(self.writer.finish(self.metadata)?)
    }
}

/// One input: a file or standard input.
#[derive(Debug, Clone)]
pub enum Input {
    /// A file.
    File(PathBuf),
    /// Standard input.
    Stdin,
}

impl Input {
    /// The inputs of a command line (none, or `-`, is stdin).
    pub fn from_args(paths: &[PathBuf]) -> Vec<Input> {
        if paths.is_empty() {
            return vec![Input::Stdin];
        }
        paths
            .iter()
            .map(|p| {
                if p.as_os_str() == "-" {
                    Input::Stdin
                } else {
                    Input::File(p.clone())
                }
            })
            .collect()
    }

    /// Name for messages and metadata.
    pub fn name(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::Stdin => "-".to_owned(),
        }
    }

    /// Opens a buffered reader, gzip-decoded when the bytes start with the
    /// gzip magic number (a `.gz` file, or `zcat`-less stdin).
    pub fn open(&self) -> Result<Box<dyn std::io::BufRead + Send>, IngestError> {
        const BUF: usize = 1 << 20;
        let io = |source| IngestError::Io {
            file: self.name(),
            error: source,
        };
        let raw: Box<dyn std::io::Read + Send> = match self {
            Input::Stdin => Box::new(std::io::stdin()),
            Input::File(p) => Box::new(std::fs::File::open(p).map_err(io)?),
        };
        let mut reader = std::io::BufReader::with_capacity(BUF, raw);
        let gzip = std::io::BufRead::fill_buf(&mut reader)
            .map_err(io)?
            .starts_with(&[0x1f, 0x8b]);
        if gzip {
            Ok(Box::new(std::io::BufReader::with_capacity(
                BUF,
                flate2::read::MultiGzDecoder::new(reader),
            )))
        } else {
            Ok(Box::new(reader))
        }
    }

    /// Size and SHA-256 for the metadata (stdin: name `-`, size and hash
    /// unknown, left empty).
    pub fn describe(&self) -> Result<InputFile, IngestError> {
        match self {
            Input::Stdin => Ok(InputFile {
                name: "-".to_owned(),
                size_bytes: 0,
                sha256: String::new(),
            }),
            Input::File(p) => InputFile::describe(p).map_err(|source| IngestError::Io {
                file: self.name(),
                error: source,
            }),
        }
    }
}

/// What an ingest did, for the printed summary.
#[derive(Debug, Clone)]
pub struct IngestSummary {
    /// The trace written.
    pub output: PathBuf,
    /// Its metadata (counts by reason included).
    pub metadata: TraceMetadata,
}

impl fmt::Display for IngestSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.metadata;
        writeln!(
            f,
            "wrote {} ({} rows) from {} {}",
            self.output.display(),
            m.rows_written,
            m.source_format,
            m.input_files
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            f,
            "rows read {}, written {}, dropped {}",
            m.rows_read,
            m.rows_written,
            m.dropped_total()
        )?;
        for (reason, n) in &m.rows_dropped {
            writeln!(f, "  dropped {n:>8}  {reason}")?;
        }
        // The format's own counts (`mooncake.linked_turns`,
        // `bailian.orphan_parents`, ...), as the metadata holds them.
        let own = format!("{}.", m.source_format);
        for (key, value) in m.extra.iter().filter(|(k, _)| k.starts_with(&own)) {
            if value.len() <= 120 {
                writeln!(f, "{key} {value}")?;
            }
        }
        if let Some(t) = &m.tokenizer {
            writeln!(f, "tokenizer {t}")?;
        }
        if let Some(report) = &m.scrub {
            write!(f, "{}", report.render())?;
        }
        Ok(())
    }
}

/// Reads `cfg.inputs` in `cfg.format` and writes the trace at `cfg.output`.
pub fn run(cfg: &Config) -> Result<IngestSummary, IngestError> {
    let filters = Filters::new(cfg.filters.clone())?;
    let ingest = match cfg.format {
        Format::Sharegpt => sharegpt::ingest,
        Format::OpenaiMessages => openai_messages::ingest,
        Format::Azure => azure::ingest,
        Format::Burstgpt => burstgpt::ingest,
        Format::Mooncake => mooncake::ingest,
        Format::Bailian => bailian::ingest,
        Format::OpenaiLog => openai_log::ingest,
    };
    let metadata = ingest(cfg, &cfg.inputs, filters)?;
    Ok(IngestSummary {
        output: cfg.output.clone(),
        metadata,
    })
}
