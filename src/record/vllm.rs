//! `replay --summary-format vllm`: the run as vLLM's `benchmark_serving.py
//! --save-result` JSON (the same keys, per-request lists included), so
//! dashboards and scripts built on that file read llm-replay runs.
//!
//! Values follow vLLM's definitions where they differ from the summary's:
//! latencies from the actual send (not the schedule), durations and
//! throughputs over the whole run (first send to last completion), lists
//! in seconds. Percentiles are by linear interpolation (numpy's default,
//! which vLLM uses too), `p99` and every `--percentiles` value.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::record::ResultRow;
use crate::record::run_meta::{RunConfig, key};
use crate::record::summary::{Quantiles, Slo};
use crate::schedule::{Arrivals, ScheduleSpec};

/// The vLLM result of `rows` (a results file's), run as `metadata` says;
/// `slo` gives `request_goodput` (null without one, as vLLM without
/// `--goodput`).
pub fn result(
    rows: &[ResultRow],
    metadata: &BTreeMap<String, String>,
    slo: Option<Slo>,
    quantiles: &Quantiles,
) -> Value {
    let config = RunConfig::from_metadata(metadata);
    let target = config.as_ref().map(|c| &c.target);
    let text = |v: Option<&Value>, k: &str| {
        v.and_then(|t| t.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let model = metadata
        .get(key::MODEL)
        .cloned()
        .or_else(|| text(target, "model"))
        .unwrap_or_default();
    let api = text(target, "api").unwrap_or_else(|| "chat".into());
    let backend = match api.as_str() {
        "chat" => "openai-chat".to_owned(),
        "completions" => "openai".to_owned(),
        other => format!("openai-{other}"),
    };
    let date = metadata
        .get(key::STARTED_AT)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.format("%Y%m%d-%H%M%S").to_string())
        .unwrap_or_default();
    let (request_rate, burstiness) = match config.as_ref().map(|c| &c.schedule) {
        Some(ScheduleSpec::Rate { rate, arrivals, .. })
            if config.as_ref().is_some_and(|c| c.closed_loop.is_none()) =>
        {
            (
                json!(rate),
                match arrivals {
                    Arrivals::Poisson => json!(1.0),
                    Arrivals::Gamma { shape } => json!(shape),
                    Arrivals::Constant => Value::Null,
                },
            )
        }
        // A closed loop sends as fast as its users allow: vLLM's "inf".
        Some(ScheduleSpec::Rate { .. }) => (json!("inf"), json!(1.0)),
        _ => (Value::Null, Value::Null),
    };
    let max_concurrency = config
        .as_ref()
        .and_then(|c| c.closed_loop.as_ref())
        .and_then(|c| c.get("users"))
        .cloned()
        .or_else(|| target.and_then(|t| t.get("max_in_flight")).cloned())
        .unwrap_or(Value::Null);

    let ok: Vec<&ResultRow> = rows.iter().filter(|r| r.is_ok()).collect();
    let tokens = |r: &ResultRow| -> (i64, i64) {
        (
            i64::from(r.usage_prompt_tokens.unwrap_or(r.input_tokens)),
            i64::from(r.usage_completion_tokens.unwrap_or(r.output_tokens)),
        )
    };
    let first_sent = rows.iter().filter_map(|r| r.sent_at_us).min();
    let last_done = rows.iter().filter_map(|r| r.completed_at_us).max();
    let duration = match (first_sent, last_done) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
        _ => 0.0,
    };
    let per_s = |n: f64| if duration > 0.0 { n / duration } else { 0.0 };
    let total_input: i64 = ok.iter().map(|r| tokens(r).0).sum();
    let total_output: i64 = ok.iter().map(|r| tokens(r).1).sum();
    let secs = |us: i64| us as f64 / 1e6;
    let ttft: Vec<f64> = ok.iter().filter_map(|r| r.ttft_us).map(secs).collect();
    let tpot: Vec<f64> = ok
        .iter()
        .filter_map(|r| r.tpot_us())
        .map(|us| us / 1e6)
        .collect();
    let itl: Vec<f64> = ok
        .iter()
        .flat_map(|r| r.itl_us.iter().map(|&us| secs(us)))
        .collect();
    let e2el: Vec<f64> = ok.iter().filter_map(|r| r.e2e_us).map(secs).collect();

    let mut out = Map::new();
    let mut put = |k: &str, v: Value| {
        out.insert(k.to_owned(), v);
    };
    put("date", json!(date));
    put("backend", json!(backend));
    put("model_id", json!(model));
    put(
        "tokenizer_id",
        json!(text(target, "tokenizer").unwrap_or_else(|| model.clone())),
    );
    put("num_prompts", json!(rows.len()));
    put("request_rate", request_rate);
    put("burstiness", burstiness);
    put("max_concurrency", max_concurrency);
    put("duration", json!(duration));
    put("completed", json!(ok.len()));
    put("failed", json!(rows.len() - ok.len()));
    put("total_input_tokens", json!(total_input));
    put("total_output_tokens", json!(total_output));
    put("request_throughput", json!(per_s(ok.len() as f64)));
    put(
        "request_goodput",
        match slo {
            Some(slo) => json!(per_s(rows.iter().filter(|r| slo.met_by(r)).count() as f64)),
            None => Value::Null,
        },
    );
    put("output_throughput", json!(per_s(total_output as f64)));
    put(
        "total_token_throughput",
        json!(per_s((total_input + total_output) as f64)),
    );
    // Per request, in the results' order, failures included (as vLLM lists
    // every output, failed ones with zeros and their error).
    put(
        "input_lens",
        json!(rows.iter().map(|r| tokens(r).0).collect::<Vec<_>>()),
    );
    put(
        "output_lens",
        json!(
            rows.iter()
                .map(|r| if r.is_ok() { tokens(r).1 } else { 0 })
                .collect::<Vec<_>>()
        ),
    );
    put(
        "ttfts",
        json!(
            rows.iter()
                .map(|r| if r.is_ok() {
                    r.ttft_us.map_or(0.0, secs)
                } else {
                    0.0
                })
                .collect::<Vec<_>>()
        ),
    );
    put(
        "itls",
        json!(
            rows.iter()
                .map(|r| r.itl_us.iter().map(|&us| secs(us)).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        ),
    );
    // Text is not kept by the recorder: empty, as vLLM has for failures.
    put("generated_texts", json!(vec![""; rows.len()]));
    put(
        "errors",
        json!(
            rows.iter()
                .map(|r| if r.is_ok() {
                    String::new()
                } else {
                    r.error
                        .clone()
                        .unwrap_or_else(|| r.outcome.as_str().to_owned())
                })
                .collect::<Vec<_>>()
        ),
    );
    let mut percents: Vec<f64> = vec![99.0];
    for &p in quantiles.as_slice() {
        if !percents.contains(&p) {
            percents.push(p);
        }
    }
    for (name, values) in [
        ("ttft", &ttft),
        ("tpot", &tpot),
        ("itl", &itl),
        ("e2el", &e2el),
    ] {
        let ms: Vec<f64> = values.iter().map(|s| s * 1e3).collect();
        let stats = Stats::of(&ms);
        put(&format!("mean_{name}_ms"), json!(stats.mean));
        put(&format!("median_{name}_ms"), json!(stats.at(50.0)));
        put(&format!("std_{name}_ms"), json!(stats.std));
        for &p in &percents {
            let label = Quantiles::key(p);
            put(&format!("{label}_{name}_ms"), json!(stats.at(p)));
        }
    }
    Value::Object(out)
}

/// Mean, population standard deviation and linearly interpolated
/// percentiles of values (numpy's `mean`, `std`, `percentile`); zeros
/// when there are none, as vLLM reports.
struct Stats {
    sorted: Vec<f64>,
    mean: f64,
    std: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let mean = if sorted.is_empty() {
            0.0
        } else {
            sorted.iter().sum::<f64>() / n
        };
        let std = if sorted.is_empty() {
            0.0
        } else {
            (sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt()
        };
        Self { sorted, mean, std }
    }

    fn at(&self, percent: f64) -> f64 {
        let Some(last) = self.sorted.len().checked_sub(1) else {
            return 0.0;
        };
        let h = last as f64 * percent / 100.0;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(last);
        self.sorted[lo] + (h - h.floor()) * (self.sorted[hi] - self.sorted[lo])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_numpys() {
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(s.at(50.0), 2.5);
        assert!((s.at(99.0) - 3.97).abs() < 1e-12);
        assert_eq!(s.mean, 2.5);
        assert!((s.std - 1.25f64.sqrt()).abs() < 1e-12);
        assert_eq!(Stats::of(&[]).at(99.0), 0.0);
    }
}
