//! Streaming results writer that keeps the file readable while the run goes.
//!
//! Parquet needs its footer at the end of the file, so a plain writer killed
//! mid-run leaves nothing readable. At every checkpoint this writer closes a
//! row group, writes a provisional footer describing every row group so far,
//! and moves its cursor back to the footer's start, so the next row group
//! overwrites it. A run killed at any moment after its first checkpoint
//! leaves a valid file with every row up to that checkpoint; `close` writes
//! the final footer (with the run's summary metadata) and trims the file.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, ListBuilder, StringBuilder, StringDictionaryBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Int32Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter, add_encoded_arrow_schema_to_metadata};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{FileMetaData, KeyValue, ParquetMetaData, ParquetMetaDataWriter};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::{ColumnPath, SchemaDescPtr};

use super::schema::{arrow_schema, col};
use super::{ResultRow, TokenSource};

/// Errors writing results.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct WriteError {
    /// The results file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

struct Builders {
    request_id: StringBuilder,
    repeat_index: Int32Builder,
    trace_row: Int64Builder,
    scheduled_at: TimestampMicrosecondBuilder,
    sent_at: TimestampMicrosecondBuilder,
    send_lag_us: Int64Builder,
    queue_wait_us: Int64Builder,
    first_token_at: TimestampMicrosecondBuilder,
    completed_at: TimestampMicrosecondBuilder,
    ttft_us: Int64Builder,
    e2e_us: Int64Builder,
    itl_us: ListBuilder<Int64Builder>,
    input_tokens: Int32Builder,
    output_tokens_expected: Int32Builder,
    output_tokens: Int32Builder,
    usage_prompt_tokens: Int32Builder,
    usage_completion_tokens: Int32Builder,
    status_code: Int32Builder,
    outcome: StringDictionaryBuilder<Int32Type>,
    error: StringBuilder,
    phase: StringDictionaryBuilder<Int32Type>,
    session_id: StringBuilder,
    turn_index: Int32Builder,
    think_time_us: Int64Builder,
    prompt_tokens_sent: Int32Builder,
    history_tokens: Int32Builder,
    recorded_at: TimestampMicrosecondBuilder,
    stage: Int32Builder,
    api: StringDictionaryBuilder<Int32Type>,
    model: StringDictionaryBuilder<Int32Type>,
    request_kind: StringDictionaryBuilder<Int32Type>,
    user_id: StringDictionaryBuilder<Int32Type>,
    output_chunks: Int32Builder,
    output_tokens_source: StringDictionaryBuilder<Int32Type>,
    len: usize,
}

fn ts() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

impl Builders {
    fn new() -> Self {
        Self {
            request_id: StringBuilder::new(),
            repeat_index: Int32Builder::new(),
            trace_row: Int64Builder::new(),
            scheduled_at: ts(),
            sent_at: ts(),
            send_lag_us: Int64Builder::new(),
            queue_wait_us: Int64Builder::new(),
            first_token_at: ts(),
            completed_at: ts(),
            ttft_us: Int64Builder::new(),
            e2e_us: Int64Builder::new(),
            itl_us: ListBuilder::new(Int64Builder::new()).with_field(Arc::new(Field::new(
                "item",
                DataType::Int64,
                false,
            ))),
            input_tokens: Int32Builder::new(),
            output_tokens_expected: Int32Builder::new(),
            output_tokens: Int32Builder::new(),
            usage_prompt_tokens: Int32Builder::new(),
            usage_completion_tokens: Int32Builder::new(),
            status_code: Int32Builder::new(),
            outcome: StringDictionaryBuilder::new(),
            error: StringBuilder::new(),
            phase: StringDictionaryBuilder::new(),
            session_id: StringBuilder::new(),
            turn_index: Int32Builder::new(),
            think_time_us: Int64Builder::new(),
            prompt_tokens_sent: Int32Builder::new(),
            history_tokens: Int32Builder::new(),
            recorded_at: ts(),
            stage: Int32Builder::new(),
            api: StringDictionaryBuilder::new(),
            model: StringDictionaryBuilder::new(),
            request_kind: StringDictionaryBuilder::new(),
            user_id: StringDictionaryBuilder::new(),
            output_chunks: Int32Builder::new(),
            output_tokens_source: StringDictionaryBuilder::new(),
            len: 0,
        }
    }

    fn push(&mut self, r: &ResultRow) {
        self.request_id.append_value(&r.request_id);
        self.repeat_index.append_value(r.repeat_index);
        self.trace_row.append_value(r.trace_row);
        self.scheduled_at.append_value(r.scheduled_at_us);
        self.sent_at.append_option(r.sent_at_us);
        self.send_lag_us.append_option(r.send_lag_us);
        self.queue_wait_us.append_option(r.queue_wait_us);
        self.first_token_at.append_option(r.first_token_at_us);
        self.completed_at.append_option(r.completed_at_us);
        self.ttft_us.append_option(r.ttft_us);
        self.e2e_us.append_option(r.e2e_us);
        self.itl_us.values().append_slice(&r.itl_us);
        self.itl_us.append(true);
        self.input_tokens.append_value(r.input_tokens);
        self.output_tokens_expected
            .append_value(r.output_tokens_expected);
        self.output_tokens.append_value(r.output_tokens);
        self.usage_prompt_tokens
            .append_option(r.usage_prompt_tokens);
        self.usage_completion_tokens
            .append_option(r.usage_completion_tokens);
        self.status_code.append_option(r.status_code);
        self.outcome.append_value(r.outcome.as_str());
        self.error.append_option(r.error.as_deref());
        self.phase.append_value(r.phase.as_str());
        self.session_id.append_option(r.session_id.as_deref());
        self.turn_index.append_option(r.turn_index);
        self.think_time_us.append_option(r.think_time_us);
        self.prompt_tokens_sent.append_option(r.prompt_tokens_sent);
        self.history_tokens.append_option(r.history_tokens);
        self.recorded_at.append_option(r.recorded_at_us);
        self.stage.append_option(r.stage);
        self.api.append_option(r.api.as_deref());
        self.model.append_option(r.model.as_deref());
        self.request_kind.append_option(r.request_kind.as_deref());
        self.user_id.append_option(r.user_id.as_deref());
        self.output_chunks.append_option(r.output_chunks);
        self.output_tokens_source
            .append_option(r.output_tokens_source.map(TokenSource::as_str));
        self.len += 1;
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        self.len = 0;
        vec![
            Arc::new(self.request_id.finish()),
            Arc::new(self.repeat_index.finish()),
            Arc::new(self.trace_row.finish()),
            Arc::new(self.scheduled_at.finish()),
            Arc::new(self.sent_at.finish()),
            Arc::new(self.send_lag_us.finish()),
            Arc::new(self.queue_wait_us.finish()),
            Arc::new(self.first_token_at.finish()),
            Arc::new(self.completed_at.finish()),
            Arc::new(self.ttft_us.finish()),
            Arc::new(self.e2e_us.finish()),
            Arc::new(self.itl_us.finish()),
            Arc::new(self.input_tokens.finish()),
            Arc::new(self.output_tokens_expected.finish()),
            Arc::new(self.output_tokens.finish()),
            Arc::new(self.usage_prompt_tokens.finish()),
            Arc::new(self.usage_completion_tokens.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.outcome.finish()),
            Arc::new(self.error.finish()),
            Arc::new(self.phase.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.turn_index.finish()),
            Arc::new(self.think_time_us.finish()),
            Arc::new(self.prompt_tokens_sent.finish()),
            Arc::new(self.history_tokens.finish()),
            Arc::new(self.recorded_at.finish()),
            Arc::new(self.stage.finish()),
            Arc::new(self.api.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.request_kind.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.output_chunks.finish()),
            Arc::new(self.output_tokens_source.finish()),
        ]
    }
}

/// Rows per record batch handed to the Parquet encoder.
const BATCH_ROWS: usize = 4_096;

/// Writes a results file; see the module docs for how it stays readable.
pub struct ResultsWriter {
    path: PathBuf,
    writer: ArrowWriter<File>,
    builders: Builders,
    rows: u64,
    rows_at_checkpoint: u64,
    /// Size of the last provisional footer.
    footer_bytes: u64,
    /// Key-value metadata of provisional footers (run configuration and the
    /// Arrow schema hint, so pyarrow restores the column types).
    footer_kv: Vec<KeyValue>,
    schema_descr: SchemaDescPtr,
    writer_version: i32,
}

impl ResultsWriter {
    /// Creates `path` (refusing to overwrite an existing file) with the
    /// run's key-value metadata (configuration, seed, versions).
    pub fn create(path: &Path, run_metadata: &[(String, String)]) -> Result<Self, WriteError> {
        let err = |message: String| WriteError {
            path: path.display().to_string(),
            message,
        };
        let file = File::options()
            .write(true)
            .read(true)
            .create_new(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    err("already exists; results are never overwritten: choose another -o".into())
                }
                _ => err(e.to_string()),
            })?;
        let kv: Vec<KeyValue> = run_metadata
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), Some(v.clone())))
            .collect();
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled(ColumnPath::from(col::OUTCOME), true)
            .set_column_dictionary_enabled(ColumnPath::from(col::PHASE), true)
            .set_column_dictionary_enabled(ColumnPath::from(col::REQUEST_ID), true)
            .set_column_dictionary_enabled(ColumnPath::from(col::ERROR), true)
            .set_key_value_metadata(Some(kv))
            .set_created_by(format!("llm-replay {}", env!("CARGO_PKG_VERSION")))
            .build();
        let schema = arrow_schema();
        add_encoded_arrow_schema_to_metadata(&schema, &mut props);
        let footer_kv = props.key_value_metadata().cloned().unwrap_or_default();
        let writer_version = props.writer_version().as_num();
        let schema_descr = Arc::new(
            ArrowSchemaConverter::new()
                .with_coerce_types(props.coerce_types())
                .convert(&schema)
                .map_err(|e| err(e.to_string()))?,
        );
        let writer =
            ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| err(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            writer,
            builders: Builders::new(),
            rows: 0,
            rows_at_checkpoint: 0,
            footer_bytes: 0,
            footer_kv,
            schema_descr,
            writer_version,
        })
    }

    fn err(&self, e: impl ToString) -> WriteError {
        WriteError {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Appends one row (buffered until the next batch or checkpoint).
    pub fn write(&mut self, row: &ResultRow) -> Result<(), WriteError> {
        self.builders.push(row);
        self.rows += 1;
        if self.builders.len >= BATCH_ROWS {
            self.write_batch()?;
        }
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn write_batch(&mut self) -> Result<(), WriteError> {
        if self.builders.len == 0 {
            return Ok(());
        }
        let batch = RecordBatch::try_new(arrow_schema(), self.builders.finish())
            .map_err(|e| self.err(e))?;
        self.writer.write(&batch).map_err(|e| self.err(e))
    }

    /// Makes every row written so far durable in a readable file: closes a
    /// row group and writes a provisional footer. Returns the footer's size
    /// in bytes (it grows with the row groups); a no-op returning the last
    /// size when nothing new was written.
    pub fn checkpoint(&mut self) -> Result<u64, WriteError> {
        if self.rows == self.rows_at_checkpoint {
            return Ok(self.footer_bytes);
        }
        self.write_batch()?;
        self.writer.flush().map_err(|e| self.err(e))?;
        self.writer.sync().map_err(|e| self.err(e))?;
        let row_groups = self.writer.flushed_row_groups().to_vec();
        let num_rows = row_groups.iter().map(|rg| rg.num_rows()).sum();
        let file_meta = FileMetaData::new(
            self.writer_version,
            num_rows,
            Some(format!("llm-replay {}", env!("CARGO_PKG_VERSION"))),
            Some(self.footer_kv.clone()),
            self.schema_descr.clone(),
            None,
        );
        let metadata = ParquetMetaData::new(file_meta, row_groups);
        let path = self.path.display().to_string();
        let file = self.writer.inner_mut();
        let io = |e: &dyn std::fmt::Display| WriteError {
            path: path.clone(),
            message: e.to_string(),
        };
        let data_end = file.stream_position().map_err(|e| io(&e))?;
        ParquetMetaDataWriter::new(&mut *file, &metadata)
            .finish()
            .map_err(|e| io(&e))?;
        let footer_end = file.stream_position().map_err(|e| io(&e))?;
        // The next row group starts where this footer does.
        file.seek(SeekFrom::Start(data_end)).map_err(|e| io(&e))?;
        self.rows_at_checkpoint = self.rows;
        self.footer_bytes = footer_end - data_end;
        Ok(self.footer_bytes)
    }

    /// Writes the remaining rows, `final_metadata` (e.g. the summary) and
    /// the final footer, and trims what provisional footers left behind.
    pub fn close(mut self, final_metadata: &[(String, String)]) -> Result<u64, WriteError> {
        self.write_batch()?;
        for (k, v) in final_metadata {
            self.writer
                .append_key_value_metadata(KeyValue::new(k.clone(), Some(v.clone())));
        }
        self.writer.finish().map_err(|e| self.err(e))?;
        self.writer.sync().map_err(|e| self.err(e))?;
        let rows = self.rows;
        let path = self.path.display().to_string();
        let file = self.writer.inner_mut();
        let io = |e: std::io::Error| WriteError {
            path: path.clone(),
            message: e.to_string(),
        };
        let end = file.stream_position().map_err(io)?;
        file.set_len(end).map_err(io)?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Outcome, Phase, read_results};

    fn row(i: i64) -> ResultRow {
        ResultRow {
            request_id: format!("r{i}"),
            repeat_index: (i % 3) as i32,
            trace_row: i,
            scheduled_at_us: 1_700_000_000_000_000 + i * 1_000,
            sent_at_us: (i % 5 != 0).then_some(1_700_000_000_000_000 + i * 1_000 + 40),
            send_lag_us: (i % 5 != 0).then_some(40),
            ttft_us: Some(100 + i),
            e2e_us: Some(1_000 + i),
            itl_us: vec![i, i + 1],
            input_tokens: 10,
            output_tokens_expected: 3,
            output_tokens: 3,
            status_code: Some(200),
            outcome: if i % 5 == 0 {
                Outcome::Dropped
            } else {
                Outcome::Ok
            },
            error: (i % 5 == 0).then(|| "over cap".to_owned()),
            phase: if i == 0 { Phase::Warmup } else { Phase::Steady },
            ..ResultRow::default()
        }
    }

    #[test]
    fn rows_round_trip_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.parquet");
        let mut w =
            ResultsWriter::create(&path, &[("llm_replay.seed".into(), "7".into())]).unwrap();
        let rows: Vec<ResultRow> = (0..10_000).map(row).collect();
        for r in &rows {
            w.write(r).unwrap();
        }
        w.checkpoint().unwrap();
        assert_eq!(
            w.close(&[("llm_replay.summary".into(), "{}".into())])
                .unwrap(),
            10_000
        );
        let back = read_results(&path).unwrap();
        assert_eq!(back.rows, rows);
        assert_eq!(
            back.metadata.get("llm_replay.seed").map(String::as_str),
            Some("7")
        );
        assert!(back.metadata.contains_key("llm_replay.summary"));
    }

    #[test]
    fn a_writer_killed_after_a_checkpoint_leaves_a_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("killed.parquet");
        let mut w = ResultsWriter::create(&path, &[]).unwrap();
        for i in 0..5_000 {
            w.write(&row(i)).unwrap();
            if i == 1_999 || i == 3_999 {
                w.checkpoint().unwrap();
            }
        }
        // Dropped without close, as a killed process would leave it: the
        // rows after the last checkpoint are lost, the rest read.
        drop(w);
        let back = read_results(&path).unwrap();
        assert_eq!(back.rows.len(), 4_000);
        assert_eq!(back.rows[3_999], row(3_999));
        assert!(!back.metadata.contains_key("llm_replay.summary"));
    }

    #[test]
    fn existing_results_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.parquet");
        std::fs::write(&path, b"precious").unwrap();
        let err = ResultsWriter::create(&path, &[]).err().unwrap();
        assert!(err.to_string().contains("never overwritten"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }
}
