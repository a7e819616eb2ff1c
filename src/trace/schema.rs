//! The trace schema, defined once: column names (a contract that users' SQL
//! relies on), Arrow types, nullability and meaning. `docs/trace-format.md`
//! renders [`COLUMNS`]; a test checks that the two agree.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// `request_id`: utf8, unique in the file.
pub const REQUEST_ID: &str = "request_id";
/// `arrival_offset_us`: int64, nullable.
pub const ARRIVAL_OFFSET_US: &str = "arrival_offset_us";
/// `input_tokens`: int32.
pub const INPUT_TOKENS: &str = "input_tokens";
/// `output_tokens`: int32.
pub const OUTPUT_TOKENS: &str = "output_tokens";
/// `session_id`: utf8, nullable.
pub const SESSION_ID: &str = "session_id";
/// `turn_index`: int32, nullable.
pub const TURN_INDEX: &str = "turn_index";
/// `think_time_us`: int64, nullable.
pub const THINK_TIME_US: &str = "think_time_us";
/// `prefix_block_ids`: list<uint64>, nullable.
pub const PREFIX_BLOCK_IDS: &str = "prefix_block_ids";
/// `model`: utf8 dictionary, nullable.
pub const MODEL: &str = "model";
/// `request_kind`: utf8 dictionary, nullable.
pub const REQUEST_KIND: &str = "request_kind";
/// `prompt_text`: large utf8, nullable.
pub const PROMPT_TEXT: &str = "prompt_text";
/// `source_row`: int64.
pub const SOURCE_ROW: &str = "source_row";
/// `user_id`: utf8 dictionary, nullable.
pub const USER_ID: &str = "user_id";

/// One documented column.
#[derive(Debug, Clone, Copy)]
pub struct ColumnDoc {
    /// Column name.
    pub name: &'static str,
    /// Type as written in the documentation table.
    pub type_name: &'static str,
    /// Whether the column may hold nulls.
    pub nullable: bool,
    /// What the column means.
    pub meaning: &'static str,
}

/// The trace columns in file order, with their documentation.
pub const COLUMNS: &[ColumnDoc] = &[
    ColumnDoc {
        name: REQUEST_ID,
        type_name: "utf8",
        nullable: false,
        meaning: "unique in the file, stable across re-ingest of the same input",
    },
    ColumnDoc {
        name: ARRIVAL_OFFSET_US,
        type_name: "int64",
        nullable: true,
        meaning: "microseconds since the trace's first arrival; null where the source has no times (ShareGPT)",
    },
    ColumnDoc {
        name: INPUT_TOKENS,
        type_name: "int32",
        nullable: false,
        meaning: "prompt tokens, all of them (history and cached included)",
    },
    ColumnDoc {
        name: OUTPUT_TOKENS,
        type_name: "int32",
        nullable: false,
        meaning: "tokens the response had (or should have)",
    },
    ColumnDoc {
        name: SESSION_ID,
        type_name: "utf8",
        nullable: true,
        meaning: "conversation or session key",
    },
    ColumnDoc {
        name: TURN_INDEX,
        type_name: "int32",
        nullable: true,
        meaning: "0-based position in the session",
    },
    ColumnDoc {
        name: THINK_TIME_US,
        type_name: "int64",
        nullable: true,
        meaning: "gap between the previous turn's end and this arrival, where known",
    },
    ColumnDoc {
        name: PREFIX_BLOCK_IDS,
        type_name: "list<uint64>",
        nullable: true,
        meaning: "ids of fixed-size prefix blocks; equal ids mean equal prefix content",
    },
    ColumnDoc {
        name: MODEL,
        type_name: "utf8 dictionary",
        nullable: true,
        meaning: "model name in the source",
    },
    ColumnDoc {
        name: REQUEST_KIND,
        type_name: "utf8 dictionary",
        nullable: true,
        meaning: "the source's class label (e.g. BurstGPT `Log Type`, Azure code/conv)",
    },
    ColumnDoc {
        name: PROMPT_TEXT,
        type_name: "large utf8",
        nullable: true,
        meaning: "only for public datasets, and only when asked for (`--keep-text`)",
    },
    ColumnDoc {
        name: SOURCE_ROW,
        type_name: "int64",
        nullable: false,
        meaning: "line (1-based) or record (0-based) index in the input, for tracing an error back",
    },
    ColumnDoc {
        name: USER_ID,
        type_name: "utf8 dictionary",
        nullable: true,
        meaning: "salted keyed hash of the end user or tenant (production logs only); the same salt gives the same hash",
    },
];

fn data_type(name: &str) -> DataType {
    match name {
        REQUEST_ID | SESSION_ID => DataType::Utf8,
        ARRIVAL_OFFSET_US | THINK_TIME_US | SOURCE_ROW => DataType::Int64,
        INPUT_TOKENS | OUTPUT_TOKENS | TURN_INDEX => DataType::Int32,
        PREFIX_BLOCK_IDS => DataType::List(Arc::new(Field::new("item", DataType::UInt64, false))),
        MODEL | REQUEST_KIND | USER_ID => {
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
        }
        _ => DataType::LargeUtf8,
    }
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(
        COLUMNS
            .iter()
            .map(|c| Field::new(c.name, data_type(c.name), c.nullable))
            .collect::<Vec<_>>(),
    ))
});

/// The Arrow schema of a v1 trace.
pub fn arrow_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// The documentation table (Markdown) of the trace columns, as it stands in
/// `docs/trace-format.md`.
pub fn markdown_table() -> String {
    let mut out = String::from("| column | type | nullable | meaning |\n|---|---|---|---|\n");
    for c in COLUMNS {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            c.name,
            c.type_name,
            if c.nullable { "yes" } else { "no" },
            c.meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_types_match_arrow_types() {
        for c in COLUMNS {
            let expected = match data_type(c.name) {
                DataType::Utf8 => "utf8",
                DataType::LargeUtf8 => "large utf8",
                DataType::Int64 => "int64",
                DataType::Int32 => "int32",
                DataType::List(_) => "list<uint64>",
                DataType::Dictionary(_, _) => "utf8 dictionary",
                other => panic!("undocumented type {other}"),
            };
            assert_eq!(c.type_name, expected, "column {}", c.name);
        }
    }
}
