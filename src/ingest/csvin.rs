//! CSV inputs with columns found by name (BurstGPT v1 and v2 differ in
//! order), exact positions, and errors that name the column.

use super::{IngestError, Input, InputError, Position};

/// A CSV input whose header named every required column.
pub struct CsvInput {
    reader: csv::Reader<Box<dyn std::io::BufRead + Send>>,
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
            .from_reader(input.open()?);
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

    /// Whether the header has `column`.
    pub fn has_column(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c.eq_ignore_ascii_case(column))
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
            source: std::io::Error::new(io.kind(), io.to_string()),
        },
        _ => InputError::new(file, Position::Line(line), "csv", e.to_string()).into(),
    }
}

impl Row<'_> {
    fn err(&self, field: &str, message: String) -> InputError {
        InputError::new(self.file, Position::Line(self.line), field, message)
    }

    /// Whether the row has as many fields as the header.
    pub fn is_complete(&self) -> bool {
        self.record.len() >= self.columns.len()
    }

    /// Fields in this row and in the header.
    pub fn field_counts(&self) -> (usize, usize) {
        (self.record.len(), self.columns.len())
    }

    /// The text of `column` (trimmed).
    pub fn text(&self, column: &str) -> Result<&str, InputError> {
        let i = self
            .columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(column))
            .ok_or_else(|| self.err(column, "no such column".into()))?;
        let raw = self
            .record
            .get(i)
            .ok_or_else(|| self.err(column, "missing (the row is short)".into()))?;
        std::str::from_utf8(raw).map(str::trim).map_err(|e| {
            self.err(
                column,
                format!("not UTF-8 (invalid byte at {})", e.valid_up_to() + 1),
            )
        })
    }

    /// A non-negative integer column.
    pub fn uint(&self, column: &str) -> Result<u64, InputError> {
        let t = self.text(column)?;
        if t.is_empty() {
            return Err(self.err(column, "empty".into()));
        }
        t.parse::<u64>().map_err(|_| match t.parse::<i64>() {
            Ok(n) => self.err(column, format!("must not be negative, found {n}")),
            Err(_) => self.err(column, format!("expected an integer, found {t:?}")),
        })
    }

    /// A token count that fits the trace's int32.
    pub fn tokens(&self, column: &str) -> Result<i32, InputError> {
        let v = self.uint(column)?;
        i32::try_from(v).map_err(|_| self.err(column, format!("{v} is too large")))
    }
}
