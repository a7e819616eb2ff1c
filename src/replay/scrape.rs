//! `--scrape URL`: reads a Prometheus endpoint (vLLM, SGLang and llama.cpp
//! expose queue length and KV-cache use) every second during a run, into
//! `server_metrics.parquet` beside the results: one row per sample, with
//! columns `ts` (timestamp µs UTC), `metric`, `labels` and `value`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tokio_util::sync::CancellationToken;

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

/// Parses the Prometheus text format (comments skipped, malformed lines
/// ignored: a scrape is best effort and must not stop a run).
pub fn parse(text: &str, ts_us: i64) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_labels, rest) = match line.find('}') {
            Some(i) if line[..i].contains('{') => (&line[..=i], line[i + 1..].trim()),
            _ => match line.split_once(char::is_whitespace) {
                Some((n, r)) => (n, r.trim()),
                None => continue,
            },
        };
        let (metric, labels) = match name_labels.find('{') {
            Some(i) => (&name_labels[..i], &name_labels[i..]),
            None => (name_labels, ""),
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        out.push(Sample {
            ts_us,
            metric: metric.to_owned(),
            labels: labels.to_owned(),
            value,
        });
    }
    out
}

/// Where the samples of a run writing `results` go: `server_metrics.parquet`
/// beside a sweep step's `results.parquet`, else
/// `server_metrics-<results file name>`.
pub fn path_for(results: &Path) -> PathBuf {
    let name = results
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "results.parquet" {
        results.with_file_name("server_metrics.parquet")
    } else {
        results.with_file_name(format!("server_metrics-{name}"))
    }
}

/// Scrapes `url` every second until `stop`; returns the samples and how
/// many scrapes failed.
pub async fn run(url: String, stop: CancellationToken) -> (Vec<Sample>, u64) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(_) => return (Vec::new(), 1),
    };
    let mut samples = Vec::new();
    let mut failures = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let ts_us = chrono::Utc::now().timestamp_micros();
        match client.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => match resp.text().await {
                Ok(text) => samples.extend(parse(&text, ts_us)),
                Err(_) => failures += 1,
            },
            _ => failures += 1,
        }
    }
    (samples, failures)
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
    fn parses_prometheus_text() {
        let text = "# HELP x y\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"m\",x=\"a b\"} 3\nllamacpp:requests_deferred 0\nbad line\nnan_metric{a=\"1\"} NaN 1700000000\n";
        let s = parse(text, 7);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].metric, "vllm:num_requests_running");
        assert_eq!(s[0].labels, "{model_name=\"m\",x=\"a b\"}");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(
            (s[1].metric.as_str(), s[1].labels.as_str()),
            ("llamacpp:requests_deferred", "")
        );
        assert!(s[2].value.is_nan());
    }

    #[test]
    fn samples_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.parquet");
        let s = parse("a{x=\"1\"} 2\nb 3.5\n", 1_700_000_000_000_000);
        write(&path, &s).unwrap();
        assert_eq!(read(&path).unwrap(), s);
    }

    #[test]
    fn names_beside_the_results() {
        assert_eq!(
            path_for(Path::new("d/rate=4/results.parquet")),
            Path::new("d/rate=4/server_metrics.parquet")
        );
        assert_eq!(
            path_for(Path::new("results-1.parquet")),
            Path::new("server_metrics-results-1.parquet")
        );
    }
}
