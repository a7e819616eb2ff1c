//! Criterion benches of the hot paths: schedule generation, results writing,
//! SSE parsing and prompt synthesis. Seeded, so runs compare.
//!
//! `cargo bench --bench hot_paths`

// A bench that cannot set up has nothing to measure: failing loudly is right.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llm_replay::record::{ResultRow, ResultsWriter};
use llm_replay::schedule::{self, Arrivals, Limit, Order, ScheduleSpec};
use llm_replay::trace::TraceRecord;

fn trace(n: usize) -> Vec<TraceRecord> {
    (0..n)
        .map(|i| TraceRecord {
            request_id: format!("r{i}"),
            arrival_offset_us: Some(i as i64 * 1_000),
            input_tokens: 100 + (i % 900) as i32,
            output_tokens: 16,
            source_row: i as i64,
            ..TraceRecord::default()
        })
        .collect()
}

fn schedules(c: &mut Criterion) {
    let t = trace(10_000);
    let mut g = c.benchmark_group("schedule");
    g.throughput(Throughput::Elements(1_000_000));
    g.sample_size(10);
    for (name, arrivals) in [
        ("poisson_1M", Arrivals::Poisson),
        ("gamma_1M", Arrivals::Gamma { shape: 0.5 }),
    ] {
        let spec = ScheduleSpec::Rate {
            rate: 5_000.0,
            arrivals,
            order: Order::Shuffle,
            limit: Limit {
                duration_ns: None,
                requests: Some(1_000_000),
            },
            seed: 1,
        };
        g.bench_function(name, |b| b.iter(|| black_box(schedule::build(&spec, &t))));
    }
    g.finish();
}

fn row(i: i64) -> ResultRow {
    ResultRow {
        request_id: format!("r{i}"),
        trace_row: i,
        scheduled_at_us: 1_700_000_000_000_000 + i * 200,
        sent_at_us: Some(1_700_000_000_000_000 + i * 200 + 35),
        send_lag_us: Some(35),
        first_token_at_us: Some(1_700_000_000_000_000 + i * 200 + 2_000),
        completed_at_us: Some(1_700_000_000_000_000 + i * 200 + 9_000),
        ttft_us: Some(1_965),
        e2e_us: Some(8_965),
        itl_us: vec![450; 15],
        input_tokens: 128,
        output_tokens_expected: 16,
        output_tokens: 16,
        usage_prompt_tokens: Some(128),
        usage_completion_tokens: Some(16),
        status_code: Some(200),
        outcome: llm_replay::record::Outcome::Ok,
        ..ResultRow::default()
    }
}

fn results_writing(c: &mut Criterion) {
    let rows: Vec<ResultRow> = (0..100_000).map(row).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut g = c.benchmark_group("results");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.sample_size(10);
    let mut n = 0;
    g.bench_function("write_100k_rows", |b| {
        b.iter(|| {
            n += 1;
            let path = dir.path().join(format!("r{n}.parquet"));
            let mut w = ResultsWriter::create(&path, &[]).expect("create");
            for (i, r) in rows.iter().enumerate() {
                w.write(r).expect("write");
                if i % 65_536 == 65_535 {
                    w.checkpoint().expect("checkpoint");
                }
            }
            w.close(&[]).expect("close");
            std::fs::remove_file(&path).expect("remove");
        })
    });
    g.finish();
}

criterion_group!(benches, schedules, results_writing);
criterion_main!(benches);
