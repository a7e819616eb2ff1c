//! Reading a trace back. Columns are found by name and cast to the canonical
//! types, so a trace that pandas or DuckDB rewrote (plain strings instead of
//! dictionaries, large strings, int64 counts) still reads.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::schema::{self, COLUMNS};
use super::{TraceError, TraceMetadata, TraceRecord};

/// A trace in memory.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Where it was read from.
    pub path: PathBuf,
    /// Provenance and counts.
    pub metadata: TraceMetadata,
    /// The rows, in file order.
    pub records: Vec<TraceRecord>,
}

/// Reads a whole trace file.
pub fn read_trace(path: &Path) -> Result<Trace, TraceError> {
    let shown = path.display().to_string();
    let parquet_err = |e: &dyn std::fmt::Display| TraceError::Parquet {
        path: shown.clone(),
        message: e.to_string(),
    };
    let schema_err = |message: String| TraceError::Schema {
        path: shown.clone(),
        message,
    };
    let file = File::open(path).map_err(|source| TraceError::Io {
        path: shown.clone(),
        error: source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
        // The usual cause: a raw dataset or log given where a trace goes.
        parquet_err(&format!(
            "{e}; not a Parquet trace (turn datasets and logs into one with `llm-replay ingest FORMAT INPUT -o TRACE`)"
        ))
    })?;
    let kv: Vec<(String, String)> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let metadata = TraceMetadata::from_key_values(kv.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(schema_err)?;
    if metadata.format_version != super::FORMAT_VERSION {
        return Err(schema_err(format!(
            "format version {} (this build reads {})",
            metadata.format_version,
            super::FORMAT_VERSION
        )));
    }
    let file_schema = builder.schema().clone();
    for c in COLUMNS {
        if c.nullable {
            continue;
        }
        if file_schema.field_with_name(c.name).is_err() {
            return Err(schema_err(format!("required column {} is missing", c.name)));
        }
    }
    let reader = builder
        .with_batch_size(8_192)
        .build()
        .map_err(|e| parquet_err(&e))?;
    let mut records = Vec::with_capacity(usize::try_from(metadata.rows_written).unwrap_or(0));
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err(&e))?;
        append_batch(&batch, &mut records).map_err(schema_err)?;
    }
    Ok(Trace {
        path: path.to_owned(),
        metadata,
        records,
    })
}

/// A column cast to `to`, or `None` when the file lacks that (nullable)
/// column.
fn column(
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
) -> Result<Option<Arc<dyn Array>>, String> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    if col.data_type() == to {
        return Ok(Some(col.clone()));
    }
    cast(col, to).map(Some).map_err(|e| {
        format!(
            "column {name}: type {} cannot be read as {to}: {e}",
            col.data_type()
        )
    })
}

fn append_batch(batch: &RecordBatch, out: &mut Vec<TraceRecord>) -> Result<(), String> {
    let n = batch.num_rows();
    let utf8 = DataType::LargeUtf8;
    let i64t = DataType::Int64;
    let i32t = DataType::Int32;
    let list = DataType::List(Arc::new(Field::new("item", DataType::UInt64, true)));

    let req = |name: &str, t: &DataType| -> Result<Arc<dyn Array>, String> {
        column(batch, name, t)?.ok_or_else(|| format!("required column {name} is missing"))
    };
    let request_id = req(schema::REQUEST_ID, &utf8)?;
    let request_id = request_id.as_string::<i64>();
    let input_tokens = req(schema::INPUT_TOKENS, &i32t)?;
    let input_tokens = input_tokens.as_primitive::<Int32Type>();
    let output_tokens = req(schema::OUTPUT_TOKENS, &i32t)?;
    let output_tokens = output_tokens.as_primitive::<Int32Type>();
    let source_row = req(schema::SOURCE_ROW, &i64t)?;
    let source_row = source_row.as_primitive::<Int64Type>();

    let arrival = column(batch, schema::ARRIVAL_OFFSET_US, &i64t)?;
    let arrival = arrival.as_ref().map(|a| a.as_primitive::<Int64Type>());
    let session = column(batch, schema::SESSION_ID, &utf8)?;
    let session = session.as_ref().map(|a| a.as_string::<i64>());
    let turn = column(batch, schema::TURN_INDEX, &i32t)?;
    let turn = turn.as_ref().map(|a| a.as_primitive::<Int32Type>());
    let think = column(batch, schema::THINK_TIME_US, &i64t)?;
    let think = think.as_ref().map(|a| a.as_primitive::<Int64Type>());
    let blocks = column(batch, schema::PREFIX_BLOCK_IDS, &list)?;
    let blocks = blocks.as_ref().map(|a| a.as_list::<i32>());
    let model = column(batch, schema::MODEL, &utf8)?;
    let model = model.as_ref().map(|a| a.as_string::<i64>());
    let kind = column(batch, schema::REQUEST_KIND, &utf8)?;
    let kind = kind.as_ref().map(|a| a.as_string::<i64>());
    let text = column(batch, schema::PROMPT_TEXT, &utf8)?;
    let text = text.as_ref().map(|a| a.as_string::<i64>());
    let user = column(batch, schema::USER_ID, &utf8)?;
    let user = user.as_ref().map(|a| a.as_string::<i64>());

    for i in 0..n {
        let non_null = |a: &dyn Array, name: &str| -> Result<(), String> {
            if a.is_null(i) {
                Err(format!("row {}: {name} is null", out.len()))
            } else {
                Ok(())
            }
        };
        non_null(request_id, schema::REQUEST_ID)?;
        non_null(input_tokens, schema::INPUT_TOKENS)?;
        non_null(output_tokens, schema::OUTPUT_TOKENS)?;
        non_null(source_row, schema::SOURCE_ROW)?;
        let opt_str = |a: Option<&arrow::array::LargeStringArray>| {
            a.and_then(|a| (!a.is_null(i)).then(|| a.value(i).to_owned()))
        };
        out.push(TraceRecord {
            request_id: request_id.value(i).to_owned(),
            arrival_offset_us: arrival.and_then(|a| (!a.is_null(i)).then(|| a.value(i))),
            input_tokens: input_tokens.value(i),
            output_tokens: output_tokens.value(i),
            session_id: opt_str(session),
            turn_index: turn.and_then(|a| (!a.is_null(i)).then(|| a.value(i))),
            think_time_us: think.and_then(|a| (!a.is_null(i)).then(|| a.value(i))),
            prefix_block_ids: blocks.and_then(|a| {
                (!a.is_null(i)).then(|| {
                    let v = a.value(i);
                    v.as_primitive::<UInt64Type>().values().to_vec()
                })
            }),
            model: opt_str(model),
            request_kind: opt_str(kind),
            prompt_text: opt_str(text),
            source_row: source_row.value(i),
            user_id: opt_str(user),
        });
    }
    Ok(())
}
