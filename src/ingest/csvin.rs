//! CSV inputs with columns found by name (BurstGPT v1 and v2 differ in
//! order), exact positions, and errors that name the column.

use std::io::{BufRead, Read};

use super::{IngestError, Input, InputError, Position, TraceSink};

/// Turns CRLF line ends into LF before the CSV parser sees them: the csv
/// crate takes a record's line number before it consumes the LF of a CRLF,
/// so in a CRLF file (the Azure traces are CRLF) every line number would be
/// one short. A lone CR is left alone.
struct LfLines<R> {
    inner: R,
    line: Vec<u8>,
    pos: usize,
}

impl<R: BufRead> LfLines<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            line: Vec::new(),
            pos: 0,
        }
    }
}

impl<R: BufRead> Read for LfLines<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.line.len() {
            self.line.clear();
            self.pos = 0;
            if self.inner.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(0);
            }
            if self.line.ends_with(b"\r\n") {
                self.line.truncate(self.line.len() - 2);
                self.line.push(b'\n');
            }
        }
        let rest = self.line.get(self.pos..).unwrap_or_default();
        let n = out.len().min(rest.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// A CSV input whose header named every required column.
pub struct CsvInput {
    reader: csv::Reader<LfLines<Box<dyn BufRead + Send>>>,
    file: String,
    columns: Vec<String>,
    record: csv::ByteRecord,
}

/// One data row.
pub struct Row<'a> {
    file: &'a str,
    /// 1-based line of the row.
    pub line: u64,
    record: &'a csv::ByteRecord,
    columns: &'a [String],
}

impl CsvInput {
    /// Opens `input` and reads its header; `required` columns must all be
    /// there (compared case-insensitively).
    pub fn open(input: &Input, required: &[&str]) -> Result<Self, IngestError> {
        let file = input.name();
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(LfLines::new(input.open()?));
        let header = reader
            .byte_headers()
            .map_err(|e| csv_error(&file, &e))?
            .clone();
        if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
            return Err(IngestError::Empty {
                file,
                what: "no bytes".into(),
            });
        }
        let columns: Vec<String> = header
            .iter()
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim()
                    .trim_start_matches('\u{feff}')
                    .to_owned()
            })
            .collect();
        let missing: Vec<&str> = required
            .iter()
            .filter(|r| !columns.iter().any(|c| c.eq_ignore_ascii_case(r)))
            .copied()
            .collect();
        if !missing.is_empty() {
            let hint =
                if columns.len() == 1 && (columns[0].contains(';') || columns[0].contains('\t')) {
                    " (the file does not look comma-separated)"
                } else {
                    ""
                };
            return Err(IngestError::Malformed(InputError::new(
                &file,
                Position::Line(1),
                "header",
                format!(
                    "missing column(s) {}; found {}{hint}",
                    missing.join(", "),
                    columns
                        .iter()
                        .map(|c| format!("{c:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )));
        }
        Ok(Self {
            reader,
            file,
            columns,
            record: csv::ByteRecord::new(),
        })
    }

    /// The next row; `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<Row<'_>>, IngestError> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => Ok(None),
            Ok(true) => Ok(Some(Row {
                file: &self.file,
                line: self.record.position().map_or(0, csv::Position::line),
                record: &self.record,
                columns: &self.columns,
            })),
            Err(e) => Err(csv_error(&self.file, &e)),
        }
    }
}

fn csv_error(file: &str, e: &csv::Error) -> IngestError {
    let line = e.position().map_or(0, csv::Position::line);
    match e.kind() {
        csv::ErrorKind::Io(io) => IngestError::Io {
            file: file.to_owned(),
            error: std::io::Error::new(io.kind(), io.to_string()),
        },
        _ => InputError::new(file, Position::Line(line), "csv", e.to_string()).into(),
    }
}

impl Row<'_> {
    /// An error at this row in `field`.
    pub fn error(&self, field: &str, message: impl Into<String>) -> InputError {
        InputError::new(self.file, Position::Line(self.line), field, message)
    }

    /// The input's name, for messages.
    pub fn file(&self) -> &str {
        self.file
    }

    /// Whether the row has as many fields as the header.
    pub fn is_complete(&self) -> bool {
        self.record.len() >= self.columns.len()
    }

    /// Whether the header has `column`.
    pub fn has_column(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c.eq_ignore_ascii_case(column))
    }

    /// The error for a row with fewer fields than the header: it names the
    /// first column the row lacks.
    fn short(&self) -> InputError {
        let missing = self
            .columns
            .get(self.record.len())
            .map_or("csv", String::as_str);
        self.error(
            missing,
            format!(
                "missing (the row has {} fields, the header {})",
                self.record.len(),
                self.columns.len()
            ),
        )
    }

    /// The text of `column` (trimmed).
    pub fn text(&self, column: &str) -> Result<&str, InputError> {
        let i = self
            .columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(column))
            .ok_or_else(|| self.error(column, "no such column"))?;
        let raw = self
            .record
            .get(i)
            .ok_or_else(|| self.error(column, "missing (the row is short)"))?;
        std::str::from_utf8(raw).map(str::trim).map_err(|e| {
            self.error(
                column,
                format!("not UTF-8 (invalid byte at {})", e.valid_up_to() + 1),
            )
        })
    }

    /// A non-negative integer column.
    pub fn uint(&self, column: &str) -> Result<u64, InputError> {
        let t = self.text(column)?;
        if t.is_empty() {
            return Err(self.error(column, "empty"));
        }
        t.parse::<u64>().map_err(|_| match t.parse::<i64>() {
            Ok(n) => self.error(column, format!("must not be negative, found {n}")),
            Err(_) => self.error(column, format!("expected an integer, found {t:?}")),
        })
    }

    /// A token count that fits the trace's int32.
    pub fn tokens(&self, column: &str) -> Result<i32, InputError> {
        let v = self.uint(column)?;
        i32::try_from(v).map_err(|_| self.error(column, format!("{v} is too large")))
    }
}

/// Runs `per_row(input_index, row, sink)` over the data rows of every input,
/// each opened with its header checked for `required`. Each row is counted
/// as read; an [`IngestError::Input`] from `per_row` goes through the sink
/// (an error, or counted with `--skip-invalid`). A short row is a missing
/// field, except the very last row of an input, which is a truncation (the
/// file was cut; `--skip-invalid` counts it as `truncated`). An input with
/// only a header is [`IngestError::Empty`].
pub fn for_each_row(
    inputs: &[Input],
    required: &[&str],
    sink: &mut TraceSink,
    mut per_row: impl FnMut(usize, &Row<'_>, &mut TraceSink) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    for (index, input) in inputs.iter().enumerate() {
        let mut csv = CsvInput::open(input, required)?;
        let file = input.name();
        let mut rows = 0u64;
        let mut complete = 0u64;
        // A short row is only known to be the cut when no row follows it.
        let mut pending_short: Option<(u64, InputError)> = None;
        while let Some(row) = csv.next_row()? {
            rows += 1;
            sink.read_row();
            if let Some((_, e)) = pending_short.take() {
                sink.invalid(e)?;
            }
            if !row.is_complete() {
                pending_short = Some((row.line, row.short()));
                continue;
            }
            match per_row(index, &row, sink) {
                Ok(()) => complete += 1,
                Err(IngestError::Input(e)) => sink.invalid(e)?,
                Err(other) => return Err(other),
            }
        }
        if let Some((line, _)) = pending_short {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::LfLines;
    use crate::ingest::records::testing::ingest_bytes;

    #[test]
    fn crlf_becomes_lf_and_lone_cr_stays() {
        let mut out = String::new();
        LfLines::new(&b"a,b\r\nc\rd\r\n\r\ne"[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "a,b\nc\rd\n\ne");
    }

    #[test]
    fn crlf_files_get_the_same_line_numbers_as_lf_files() {
        let lf = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
                  2023-11-16 18:15:46.6805900,374,44\n\
                  2023-11-16 18:15:40.0000000,10,4\n";
        for text in [lf.to_owned(), lf.replace('\n', "\r\n")] {
            let e = ingest_bytes("azure", "a.csv", text.as_bytes(), &[]).unwrap_err();
            assert!(e.to_string().contains("a.csv: line 3: TIMESTAMP"), "{e}");
        }
    }
}
