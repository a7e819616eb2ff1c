//! Reading results back, for `report` and `sweep`. Columns are found by name
//! and cast, so files rewritten by pandas or DuckDB still read.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::schema::col;
use super::{Phase, ResultRow, TokenSource};

/// A results file in memory.
#[derive(Debug, Clone)]
pub struct Results {
    /// The rows, in file order.
    pub rows: Vec<ResultRow>,
    /// The file's key-value metadata.
    pub metadata: BTreeMap<String, String>,
}

/// Reads a whole results file; the error names the file and the column.
pub fn read_results(path: &Path) -> anyhow::Result<Results> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| anyhow::anyhow!("{shown}: not a readable Parquet file: {e}"))?;
    let metadata = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter(|e| e.key.starts_with("llm_replay."))
                .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let reader = builder
        .with_batch_size(8_192)
        .build()
        .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        append(&batch, &mut rows).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    }
    Ok(Results { rows, metadata })
}

fn column(
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
) -> Result<Option<Arc<dyn Array>>, String> {
    let Some(c) = batch.column_by_name(name) else {
        return Ok(None);
    };
    if c.data_type() == to {
        return Ok(Some(c.clone()));
    }
    cast(c, to).map(Some).map_err(|e| {
        format!(
            "column {name}: {} cannot be read as {to}: {e}",
            c.data_type()
        )
    })
}

fn append(batch: &RecordBatch, out: &mut Vec<ResultRow>) -> Result<(), String> {
    let utf8 = DataType::Utf8;
    let i64t = DataType::Int64;
    let i32t = DataType::Int32;
    let tst = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
    let need = |name: &str, t: &DataType| {
        column(batch, name, t)?.ok_or_else(|| format!("required column {name} is missing"))
    };

    let request_id = need(col::REQUEST_ID, &utf8)?;
    let request_id = request_id.as_string::<i32>();
    let scheduled = need(col::SCHEDULED_AT, &tst)?;
    let scheduled = scheduled.as_primitive::<TimestampMicrosecondType>();
    let outcome = need(col::OUTCOME, &utf8)?;
    let outcome = outcome.as_string::<i32>();

    let repeat = column(batch, col::REPEAT_INDEX, &i32t)?;
    let trace_row = column(batch, col::TRACE_ROW, &i64t)?;
    let sent = column(batch, col::SENT_AT, &tst)?;
    let lag = column(batch, col::SEND_LAG_US, &i64t)?;
    let queue = column(batch, col::QUEUE_WAIT_US, &i64t)?;
    let first = column(batch, col::FIRST_TOKEN_AT, &tst)?;
    let done = column(batch, col::COMPLETED_AT, &tst)?;
    let ttft = column(batch, col::TTFT_US, &i64t)?;
    let e2e = column(batch, col::E2E_US, &i64t)?;
    let itl = column(batch, col::ITL_US, &list)?;
    let input = column(batch, col::INPUT_TOKENS, &i32t)?;
    let expected = column(batch, col::OUTPUT_TOKENS_EXPECTED, &i32t)?;
    let output = column(batch, col::OUTPUT_TOKENS, &i32t)?;
    let up = column(batch, col::USAGE_PROMPT_TOKENS, &i32t)?;
    let uc = column(batch, col::USAGE_COMPLETION_TOKENS, &i32t)?;
    let status = column(batch, col::STATUS_CODE, &i32t)?;
    let error = column(batch, col::ERROR, &utf8)?;
    let phase = column(batch, col::PHASE, &utf8)?;
    // Columns added after version 1's first release: absent in older files.
    let session = column(batch, col::SESSION_ID, &utf8)?;
    let turn = column(batch, col::TURN_INDEX, &i32t)?;
    let think = column(batch, col::THINK_TIME_US, &i64t)?;
    let sent_tokens = column(batch, col::PROMPT_TOKENS_SENT, &i32t)?;
    let history = column(batch, col::HISTORY_TOKENS, &i32t)?;
    let recorded = column(batch, col::RECORDED_AT, &tst)?;
    let stage = column(batch, col::STAGE, &i32t)?;
    let api = column(batch, col::API, &utf8)?;
    let model = column(batch, col::MODEL, &utf8)?;
    let kind = column(batch, col::REQUEST_KIND, &utf8)?;
    let user = column(batch, col::USER_ID, &utf8)?;
    let chunks = column(batch, col::OUTPUT_CHUNKS, &i32t)?;
    let token_source = column(batch, col::OUTPUT_TOKENS_SOURCE, &utf8)?;

    let i64_at = |a: &Option<Arc<dyn Array>>, i: usize| -> Option<i64> {
        a.as_ref().and_then(|a| {
            if a.is_null(i) {
                return None;
            }
            match a.data_type() {
                DataType::Timestamp(..) => {
                    Some(a.as_primitive::<TimestampMicrosecondType>().value(i))
                }
                _ => Some(a.as_primitive::<Int64Type>().value(i)),
            }
        })
    };
    let i32_at = |a: &Option<Arc<dyn Array>>, i: usize| -> Option<i32> {
        a.as_ref()
            .and_then(|a| (!a.is_null(i)).then(|| a.as_primitive::<Int32Type>().value(i)))
    };
    let str_at = |a: &Option<Arc<dyn Array>>, i: usize| -> Option<String> {
        a.as_ref()
            .and_then(|a| (!a.is_null(i)).then(|| a.as_string::<i32>().value(i).to_owned()))
    };
    for i in 0..batch.num_rows() {
        if request_id.is_null(i) || scheduled.is_null(i) || outcome.is_null(i) {
            return Err(format!(
                "row {}: request_id, scheduled_at and outcome must not be null",
                out.len()
            ));
        }
        let phase_value = str_at(&phase, i);
        out.push(ResultRow {
            request_id: request_id.value(i).to_owned(),
            repeat_index: i32_at(&repeat, i).unwrap_or(0),
            trace_row: i64_at(&trace_row, i).unwrap_or(-1),
            scheduled_at_us: scheduled.value(i),
            sent_at_us: i64_at(&sent, i),
            send_lag_us: i64_at(&lag, i),
            queue_wait_us: i64_at(&queue, i),
            first_token_at_us: i64_at(&first, i),
            completed_at_us: i64_at(&done, i),
            ttft_us: i64_at(&ttft, i),
            e2e_us: i64_at(&e2e, i),
            itl_us: itl
                .as_ref()
                .filter(|a| !a.is_null(i))
                .map(|a| {
                    a.as_list::<i32>()
                        .value(i)
                        .as_primitive::<Int64Type>()
                        .values()
                        .to_vec()
                })
                .unwrap_or_default(),
            input_tokens: i32_at(&input, i).unwrap_or(0),
            output_tokens_expected: i32_at(&expected, i).unwrap_or(0),
            output_tokens: i32_at(&output, i).unwrap_or(0),
            usage_prompt_tokens: i32_at(&up, i),
            usage_completion_tokens: i32_at(&uc, i),
            status_code: i32_at(&status, i),
            outcome: super::parse_outcome(outcome.value(i)).ok_or_else(|| {
                format!("row {}: outcome {:?} is not one of ok, http_error, timeout, connect_error, stream_error, cancelled, dropped", out.len(), outcome.value(i))
            })?,
            error: str_at(&error, i),
            phase: phase_value
                .as_deref()
                .and_then(Phase::parse)
                .unwrap_or_default(),
            session_id: str_at(&session, i),
            turn_index: i32_at(&turn, i),
            think_time_us: i64_at(&think, i),
            prompt_tokens_sent: i32_at(&sent_tokens, i),
            history_tokens: i32_at(&history, i),
            recorded_at_us: i64_at(&recorded, i),
            stage: i32_at(&stage, i),
            api: str_at(&api, i),
            model: str_at(&model, i),
            request_kind: str_at(&kind, i),
            user_id: str_at(&user, i),
            output_chunks: i32_at(&chunks, i),
            output_tokens_source: match str_at(&token_source, i) {
                None => None,
                Some(s) => Some(TokenSource::parse(&s).ok_or_else(|| {
                    format!(
                        "row {}: output_tokens_source {s:?} is not usage or chunks",
                        out.len()
                    )
                })?),
            },
        });
    }
    Ok(())
}
