//! Trace provenance and row accounting, stored as Parquet key-value metadata
//! under `llm_replay.*` keys so that pyarrow and DuckDB
//! (`parquet_kv_metadata`) can read them without this tool.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::FORMAT_VERSION;
use super::scrub::ScrubReport;

/// Key prefix of every metadata entry this tool writes.
pub const KEY_PREFIX: &str = "llm_replay.";

/// One input file an ingest read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// File name (without its directory: local paths are not provenance), or
    /// `-` for standard input.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
}

impl InputFile {
    /// Hashes `path` (streamed, so memory stays flat).
    pub fn describe(path: &Path) -> std::io::Result<Self> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        Ok(Self {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
            size_bytes: size,
            sha256: hex::encode(hasher.finalize()),
        })
    }
}

/// Rows dropped, by reason (`"duplicate_id"`, `"invalid:input_tokens"`,
/// `"filter:max_input"`, ...).
pub type DropCounts = BTreeMap<String, u64>;

/// Everything a trace records about where it came from.
///
/// Invariant (checked by `inspect`): `rows_read == rows_written +
/// sum(rows_dropped)`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TraceMetadata {
    /// Trace format version.
    pub format_version: u32,
    /// Source format (`sharegpt`, `azure`, ...).
    pub source_format: String,
    /// The files read.
    pub input_files: Vec<InputFile>,
    /// Tokenizer used for counting, if any.
    pub tokenizer: Option<String>,
    /// Tokens per prefix block, where `prefix_block_ids` are set.
    pub prefix_block_size: Option<u32>,
    /// Time unit of the source (`ms`, `s`, `100ns`, ...).
    pub time_unit: Option<String>,
    /// Absolute start of the trace (RFC 3339 or as the source gives it),
    /// where known and allowed.
    pub t0: Option<String>,
    /// Every filter applied, as `name=value`.
    pub filters: Vec<String>,
    /// Source rows (records, user turns) read.
    pub rows_read: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Rows dropped, per reason.
    pub rows_dropped: DropCounts,
    /// What the scrub did, for traces from production logs.
    pub scrub: Option<ScrubReport>,
    /// Further facts a source adds (token count sources, stats).
    pub extra: BTreeMap<String, String>,
}

impl TraceMetadata {
    /// Metadata for a new trace of `source_format`.
    pub fn new(source_format: &str) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            source_format: source_format.to_owned(),
            ..Self::default()
        }
    }

    /// Counts one dropped row under `reason`.
    pub fn drop_row(&mut self, reason: impl Into<String>) {
        *self.rows_dropped.entry(reason.into()).or_insert(0) += 1;
    }

    /// Total rows dropped.
    pub fn dropped_total(&self) -> u64 {
        self.rows_dropped.values().sum()
    }

    /// Whether read = written + dropped.
    pub fn counts_add_up(&self) -> bool {
        self.rows_read == self.rows_written + self.dropped_total()
    }

    /// As Parquet key-value pairs.
    pub fn to_key_values(&self) -> Vec<(String, String)> {
        let mut kv = vec![
            ("format_version", self.format_version.to_string()),
            ("source_format", self.source_format.clone()),
            ("input_files", to_json(&self.input_files)),
            ("filters", to_json(&self.filters)),
            ("rows_read", self.rows_read.to_string()),
            ("rows_written", self.rows_written.to_string()),
            ("rows_dropped", to_json(&self.rows_dropped)),
        ];
        if let Some(t) = &self.tokenizer {
            kv.push(("tokenizer", t.clone()));
        }
        if let Some(b) = self.prefix_block_size {
            kv.push(("prefix_block_size", b.to_string()));
        }
        if let Some(u) = &self.time_unit {
            kv.push(("time_unit", u.clone()));
        }
        if let Some(t0) = &self.t0 {
            kv.push(("t0", t0.clone()));
        }
        if let Some(scrub) = &self.scrub {
            kv.push(("scrub_report", to_json(scrub)));
        }
        let mut out: Vec<(String, String)> = kv
            .into_iter()
            .map(|(k, v)| (format!("{KEY_PREFIX}{k}"), v))
            .collect();
        for (k, v) in &self.extra {
            out.push((format!("{KEY_PREFIX}{k}"), v.clone()));
        }
        out
    }

    /// From Parquet key-value pairs; `Err` names the key that is missing or
    /// malformed.
    pub fn from_key_values<'a>(
        kv: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut map: BTreeMap<&str, &str> = kv
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(KEY_PREFIX).map(|k| (k, v)))
            .collect();
        let mut take = |key: &str| map.remove(key);
        let required = |key: &str, v: Option<&str>| -> Result<String, String> {
            v.map(str::to_owned)
                .ok_or_else(|| format!("metadata key {KEY_PREFIX}{key} is missing"))
        };
        let number = |key: &str, v: String| -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("metadata key {KEY_PREFIX}{key}: not a number: {v:?}"))
        };
        fn parse_json<T: for<'de> Deserialize<'de>>(key: &str, v: String) -> Result<T, String> {
            serde_json::from_str(&v).map_err(|e| format!("metadata key {KEY_PREFIX}{key}: {e}"))
        }
        let format_version = number(
            "format_version",
            required("format_version", take("format_version"))?,
        )?;
        let meta = Self {
            format_version: u32::try_from(format_version)
                .map_err(|_| "metadata key format_version out of range".to_owned())?,
            source_format: required("source_format", take("source_format"))?,
            input_files: parse_json("input_files", required("input_files", take("input_files"))?)?,
            filters: parse_json("filters", required("filters", take("filters"))?)?,
            rows_read: number("rows_read", required("rows_read", take("rows_read"))?)?,
            rows_written: number(
                "rows_written",
                required("rows_written", take("rows_written"))?,
            )?,
            rows_dropped: parse_json(
                "rows_dropped",
                required("rows_dropped", take("rows_dropped"))?,
            )?,
            tokenizer: take("tokenizer").map(str::to_owned),
            prefix_block_size: take("prefix_block_size")
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("metadata key prefix_block_size: {v:?}"))
                })
                .transpose()?,
            time_unit: take("time_unit").map(str::to_owned),
            t0: take("t0").map(str::to_owned),
            scrub: take("scrub_report")
                .map(|v| parse_json("scrub_report", v.to_owned()))
                .transpose()?,
            extra: map
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        Ok(meta)
    }
}

/// JSON of a metadata value. These shapes (strings, numbers, maps with
/// string keys) always serialise; the fallback only keeps this infallible.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("\"unserialisable: {e}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_round_trip() {
        let mut meta = TraceMetadata::new("azure");
        meta.input_files.push(InputFile {
            name: "a.csv".into(),
            size_bytes: 10,
            sha256: "ab".into(),
        });
        meta.tokenizer = Some("o200k_base".into());
        meta.prefix_block_size = Some(512);
        meta.time_unit = Some("100ns".into());
        meta.t0 = Some("2023-11-16T18:15:46.68059Z".into());
        meta.filters.push("max_input=4096".into());
        meta.rows_read = 5;
        meta.rows_written = 3;
        meta.drop_row("duplicate_id");
        meta.drop_row("filter:max_input");
        let mut scrub = ScrubReport::default();
        scrub.saw("messages", super::super::scrub::Treatment::Tokenized);
        meta.scrub = Some(scrub);
        meta.extra.insert("token_counts".into(), "usage".into());
        let kv = meta.to_key_values();
        let back = TraceMetadata::from_key_values(kv.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap();
        assert_eq!(back, meta);
        assert!(back.counts_add_up());
    }

    #[test]
    fn missing_key_is_named() {
        let err = TraceMetadata::from_key_values([("llm_replay.format_version", "1")]).unwrap_err();
        assert!(err.contains("source_format"), "{err}");
    }
}
