//! Server metrics of a run (`--scrape`): one row per Prometheus sample, in
//! `server_metrics.parquet` beside the results, with columns `ts`
//! (timestamp µs UTC), `metric`, `labels` and `value`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When it was scraped, µs since the epoch.
    pub ts_us: i64,
    /// Metric name.
    pub metric: String,
    /// The label set as written (`{model_name="x"}`), or empty.
    pub labels: String,
    /// Value.
    pub value: f64,
}

/// Where the samples of a run writing `results` go: `_server_metrics.parquet`
/// beside a sweep step's (or shard's) `results.parquet`, named so that
/// dataset readers of the directory skip it, else
/// `server_metrics-<results file name>`.
pub fn path_for(results: &Path) -> PathBuf {
    let name = results
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "results.parquet" {
        results.with_file_name("_server_metrics.parquet")
    } else {
        results.with_file_name(format!("server_metrics-{name}"))
    }
}

/// The samples file of `results` that exists: [`path_for`]'s, or the
/// `server_metrics.parquet` that steps of earlier versions wrote.
pub fn existing_for(results: &Path) -> Option<PathBuf> {
    let path = path_for(results);
    if path.exists() {
        return Some(path);
    }
    let old = results.with_file_name("server_metrics.parquet");
    (results.file_name().is_some_and(|n| n == "results.parquet") && old.exists()).then_some(old)
}

/// Writes samples as Parquet.
pub fn write(path: &Path, samples: &[Sample]) -> anyhow::Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("metric", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from(samples.iter().map(|s| s.ts_us).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(
            samples
                .iter()
                .map(|s| s.metric.as_str())
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            samples
                .iter()
                .map(|s| s.labels.as_str())
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            samples.iter().map(|s| s.value).collect::<Vec<_>>(),
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path)?, schema, Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

/// Reads a file written by [`write`].
pub fn read(path: &Path) -> anyhow::Result<Vec<Sample>> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, TimestampMicrosecondType};
    let file = std::fs::File::open(path)?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("{}: column {name} is missing", path.display()))
        };
        let (ts, metric, labels, value) =
            (col("ts")?, col("metric")?, col("labels")?, col("value")?);
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let (metric, labels) = (metric.as_string::<i32>(), labels.as_string::<i32>());
        let value = value.as_primitive::<Float64Type>();
        for i in 0..batch.num_rows() {
            out.push(Sample {
                ts_us: ts.value(i),
                metric: metric.value(i).to_owned(),
                labels: labels.value(i).to_owned(),
                value: value.value(i),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.parquet");
        let s = vec![
            Sample {
                ts_us: 1_700_000_000_000_000,
                metric: "a".into(),
                labels: "{x=\"1\"}".into(),
                value: 2.0,
            },
            Sample {
                ts_us: 1_700_000_000_000_000,
                metric: "b".into(),
                labels: String::new(),
                value: 3.5,
            },
        ];
        write(&path, &s).unwrap();
        assert_eq!(read(&path).unwrap(), s);
    }

    #[test]
    fn names_beside_the_results() {
        assert_eq!(
            path_for(Path::new("d/rate=4/results.parquet")),
            Path::new("d/rate=4/_server_metrics.parquet")
        );
        assert_eq!(
            path_for(Path::new("results-1.parquet")),
            Path::new("server_metrics-results-1.parquet")
        );
    }
}
