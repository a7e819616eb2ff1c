//! The trace: one documented Parquet format (v1) that every stage reads or
//! writes. One row per request, sorted by arrival, ZSTD-compressed, written in
//! row groups as input streams in.
//!
//! - [`schema`]: the column names, types and the Arrow schema (one definition);
//! - [`TraceRecord`]: one row in memory;
//! - [`TraceWriter`] / [`read_trace`]: streaming writer and reader;
//! - [`TraceMetadata`]: provenance and row accounting in key-value metadata;
//! - [`inspect`]: invariants and the summary a user wants before replaying.

pub mod inspect;
pub mod metadata;
pub mod reader;
pub mod schema;
pub mod scrub;
pub mod writer;

pub use metadata::{DropCounts, InputFile, TraceMetadata};
pub use reader::{Trace, read_trace};
pub use writer::TraceWriter;

use thiserror::Error;

/// Version of the trace format written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// One request of a trace, as one row of the Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceRecord {
    /// Unique in the file, stable across re-ingest of the same input.
    pub request_id: String,
    /// Microseconds since the trace's first arrival; `None` where the source
    /// has no times (ShareGPT).
    pub arrival_offset_us: Option<i64>,
    /// Prompt tokens, all of them (history and cached included).
    pub input_tokens: i32,
    /// Tokens the response had (or should have).
    pub output_tokens: i32,
    /// Conversation or session key.
    pub session_id: Option<String>,
    /// 0-based position in the session.
    pub turn_index: Option<i32>,
    /// Gap between the previous turn's end and this arrival, where known.
    pub think_time_us: Option<i64>,
    /// Ids of fixed-size prefix blocks; equal ids mean equal prefix content.
    pub prefix_block_ids: Option<Vec<u64>>,
    /// Model name in the source.
    pub model: Option<String>,
    /// The source's class label (BurstGPT `Log Type`, Azure code/conv, ...).
    pub request_kind: Option<String>,
    /// Prompt text: only for public datasets, and only when asked for.
    pub prompt_text: Option<String>,
    /// Line or record index in the input (1-based lines for line formats,
    /// 0-based record index for JSON arrays), for tracing an error back.
    pub source_row: i64,
    /// Salted keyed hash of the end user or tenant (production logs only).
    pub user_id: Option<String>,
}

/// Errors reading, writing or validating a trace file.
#[derive(Debug, Error)]
pub enum TraceError {
    /// The file could not be opened, read or written.
    // Not `source`: `{:#}` would print the I/O error twice.
    #[error("{path}: {error}")]
    Io {
        /// The trace file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Parquet or Arrow refused the file.
    #[error("{path}: {message}")]
    Parquet {
        /// The trace file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The file is Parquet but not a trace of a format version we read.
    #[error("{path}: not an llm-replay trace: {message}")]
    Schema {
        /// The trace file.
        path: String,
        /// What is missing or of the wrong type.
        message: String,
    },
    /// A row breaks an invariant of the format.
    #[error("{path}: row {row} (request_id {request_id:?}): {field}: {message}")]
    Invalid {
        /// The trace file.
        path: String,
        /// 0-based row in the file.
        row: u64,
        /// The row's request id.
        request_id: String,
        /// The column at fault.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}
