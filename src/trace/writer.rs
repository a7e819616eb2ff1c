//! Streaming trace writer: rows are buffered into Arrow builders and flushed
//! as record batches, so memory stays flat in input size. The file is written
//! under a `.partial` name and renamed on [`TraceWriter::finish`], so an
//! interrupted ingest never leaves a trace that looks complete.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, LargeStringBuilder, ListBuilder, StringBuilder,
    StringDictionaryBuilder, UInt64Builder,
};
use arrow::datatypes::{Field, Int32Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::schema::{self, arrow_schema};
use super::{TraceError, TraceMetadata, TraceRecord};

/// Rows per record batch handed to the Parquet writer.
const BATCH_ROWS: usize = 8_192;
/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 65_536;

/// Column builders for one batch.
struct Builders {
    request_id: StringBuilder,
    arrival_offset_us: Int64Builder,
    input_tokens: Int32Builder,
    output_tokens: Int32Builder,
    session_id: StringBuilder,
    turn_index: Int32Builder,
    think_time_us: Int64Builder,
    prefix_block_ids: ListBuilder<UInt64Builder>,
    model: StringDictionaryBuilder<Int32Type>,
    request_kind: StringDictionaryBuilder<Int32Type>,
    prompt_text: LargeStringBuilder,
    source_row: Int64Builder,
    user_id: StringDictionaryBuilder<Int32Type>,
    len: usize,
}

impl Builders {
    fn new() -> Self {
        Self {
            request_id: StringBuilder::new(),
            arrival_offset_us: Int64Builder::new(),
            input_tokens: Int32Builder::new(),
            output_tokens: Int32Builder::new(),
            session_id: StringBuilder::new(),
            turn_index: Int32Builder::new(),
            think_time_us: Int64Builder::new(),
            prefix_block_ids: ListBuilder::new(UInt64Builder::new()).with_field(Arc::new(
                Field::new("item", arrow::datatypes::DataType::UInt64, false),
            )),
            model: StringDictionaryBuilder::new(),
            request_kind: StringDictionaryBuilder::new(),
            prompt_text: LargeStringBuilder::new(),
            source_row: Int64Builder::new(),
            user_id: StringDictionaryBuilder::new(),
            len: 0,
        }
    }

    fn push(&mut self, r: &TraceRecord) {
        self.request_id.append_value(&r.request_id);
        self.arrival_offset_us.append_option(r.arrival_offset_us);
        self.input_tokens.append_value(r.input_tokens);
        self.output_tokens.append_value(r.output_tokens);
        self.session_id.append_option(r.session_id.as_deref());
        self.turn_index.append_option(r.turn_index);
        self.think_time_us.append_option(r.think_time_us);
        match &r.prefix_block_ids {
            Some(ids) => {
                self.prefix_block_ids.values().append_slice(ids);
                self.prefix_block_ids.append(true);
            }
            None => self.prefix_block_ids.append_null(),
        }
        self.model.append_option(r.model.as_deref());
        self.request_kind.append_option(r.request_kind.as_deref());
        self.prompt_text.append_option(r.prompt_text.as_deref());
        self.source_row.append_value(r.source_row);
        self.user_id.append_option(r.user_id.as_deref());
        self.len += 1;
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        self.len = 0;
        vec![
            Arc::new(self.request_id.finish()),
            Arc::new(self.arrival_offset_us.finish()),
            Arc::new(self.input_tokens.finish()),
            Arc::new(self.output_tokens.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.turn_index.finish()),
            Arc::new(self.think_time_us.finish()),
            Arc::new(self.prefix_block_ids.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.request_kind.finish()),
            Arc::new(self.prompt_text.finish()),
            Arc::new(self.source_row.finish()),
            Arc::new(self.user_id.finish()),
        ]
    }
}

/// Writes a trace file row by row. Call [`TraceWriter::finish`] to write the
/// metadata and footer; a writer dropped without it (an error, a panic)
/// removes its `.partial` file and leaves nothing behind.
pub struct TraceWriter {
    path: PathBuf,
    partial: Unfinished,
    writer: ArrowWriter<File>,
    builders: Builders,
    rows: u64,
    last_offset: Option<i64>,
}

impl TraceWriter {
    /// Starts a trace at `path` (written as `path.partial` until finished).
    pub fn create(path: &Path) -> Result<Self, TraceError> {
        let partial = partial_path(path);
        let file = File::create(&partial).map_err(|source| TraceError::Io {
            path: partial.display().to_string(),
            error: source,
        })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled(ColumnPath::from(schema::MODEL), true)
            .set_column_dictionary_enabled(ColumnPath::from(schema::REQUEST_KIND), true)
            .set_column_dictionary_enabled(ColumnPath::from(schema::SESSION_ID), true)
            .set_column_dictionary_enabled(ColumnPath::from(schema::USER_ID), true)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_created_by(format!("llm-replay {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = match ArrowWriter::try_new(file, arrow_schema(), Some(props)) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(TraceError::Parquet {
                    path: path.display().to_string(),
                    message: e.to_string(),
                });
            }
        };
        Ok(Self {
            path: path.to_owned(),
            partial: Unfinished(Some(partial)),
            writer,
            builders: Builders::new(),
            rows: 0,
            last_offset: None,
        })
    }

    /// Appends one row. Rows must come in arrival order: a row whose
    /// `arrival_offset_us` is below the previous one's is refused, as is a
    /// negative offset or token count.
    pub fn write(&mut self, record: &TraceRecord) -> Result<(), TraceError> {
        let invalid = |field, message: String| TraceError::Invalid {
            path: self.path.display().to_string(),
            row: self.rows,
            request_id: record.request_id.clone(),
            field,
            message,
        };
        if let Some(offset) = record.arrival_offset_us {
            if offset < 0 {
                return Err(invalid(
                    schema::ARRIVAL_OFFSET_US,
                    format!("negative offset {offset}"),
                ));
            }
            if let Some(last) = self.last_offset
                && offset < last
            {
                return Err(invalid(
                    schema::ARRIVAL_OFFSET_US,
                    format!(
                        "offset {offset} is before the previous row's {last}: rows must be sorted by arrival"
                    ),
                ));
            }
            self.last_offset = Some(offset);
        }
        if record.input_tokens < 0 {
            return Err(invalid(
                schema::INPUT_TOKENS,
                format!("negative ({})", record.input_tokens),
            ));
        }
        if record.output_tokens < 0 {
            return Err(invalid(
                schema::OUTPUT_TOKENS,
                format!("negative ({})", record.output_tokens),
            ));
        }
        self.builders.push(record);
        self.rows += 1;
        if self.builders.len >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Rows written so far.
    pub fn rows_written(&self) -> u64 {
        self.rows
    }

    fn flush(&mut self) -> Result<(), TraceError> {
        if self.builders.len == 0 {
            return Ok(());
        }
        let columns = self.builders.finish();
        let batch = RecordBatch::try_new(arrow_schema(), columns).map_err(|e| self.parquet(e))?;
        self.writer.write(&batch).map_err(|e| self.parquet(e))
    }

    fn parquet(&self, e: impl ToString) -> TraceError {
        TraceError::Parquet {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Writes the remaining rows, `metadata` (with `rows_written` set from
    /// this writer's count) and the footer, then moves the file into place.
    /// Returns the metadata as written.
    pub fn finish(mut self, mut metadata: TraceMetadata) -> Result<TraceMetadata, TraceError> {
        self.flush()?;
        metadata.rows_written = self.rows;
        for (key, value) in metadata.to_key_values() {
            self.writer
                .append_key_value_metadata(KeyValue::new(key, Some(value)));
        }
        let shown = self.path.display().to_string();
        self.writer.close().map_err(|e| TraceError::Parquet {
            path: shown,
            message: e.to_string(),
        })?;
        let partial = self.partial.0.take().unwrap_or_default();
        if let Err(source) = std::fs::rename(&partial, &self.path) {
            let _ = std::fs::remove_file(&partial);
            return Err(TraceError::Io {
                path: self.path.display().to_string(),
                error: source,
            });
        }
        Ok(metadata)
    }
}

/// The `.partial` file of a writer not yet finished: removed when dropped.
struct Unfinished(Option<PathBuf>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}
