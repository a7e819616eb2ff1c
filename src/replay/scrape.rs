//! `--scrape URL`: reads a Prometheus endpoint (vLLM, SGLang and llama.cpp
//! expose queue length and KV-cache use) every second during a run, into
//! [`crate::record::server_metrics`] beside the results.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use crate::record::server_metrics::Sample;

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
}
