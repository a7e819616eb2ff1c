//! ShareGPT ingest throughput and memory: generates seeded ShareGPT-like
//! files (multi-turn, English-like text, realistic turn lengths), ingests
//! each with o200k_base, and prints MB/s and peak RSS. Peak RSS of a 25 MB
//! and a 100 MB file side by side shows that memory does not grow with the
//! input.
//!
//! A one-shot measurement, not a criterion statistic: one ingest of 100 MB
//! takes seconds, and the figure wanted is throughput and the memory
//! high-water mark, which criterion does not report.
//!
//! `cargo bench --bench ingest`; `LLM_REPLAY_BENCH_MB=400` for a larger file.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use llm_replay::tokenize::{Tokenizer, TokenizerSpec};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

mod support;

use llm_replay::ingest::{Config, Format, Input};
use support::{Measured, length, run_ingest, show, text};

/// Writes a ShareGPT file of at least `bytes` bytes, pretty-printed as the
/// public file is.
fn generate(path: &Path, bytes: u64, seed: u64) -> std::io::Result<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0u64;
    let put = |w: &mut BufWriter<std::fs::File>, written: &mut u64, s: &str| {
        *written += s.len() as u64;
        w.write_all(s.as_bytes())
    };
    put(&mut w, &mut written, "[")?;
    let mut n = 0u64;
    while written < bytes {
        let mut rec = String::new();
        if n > 0 {
            rec.push(',');
        }
        rec.push_str(&format!(
            "\n  {{\n    \"id\": \"bench{n:08}_{}\",\n    \"conversations\": [",
            rng.random_range(0..3)
        ));
        let pairs = rng.random_range(1..8);
        // A third of real records are later parts that open with the model.
        let leading = rng.random_range(0..3) == 0;
        let mut msgs = Vec::new();
        if leading {
            msgs.push(("gpt", length(&mut rng, 150.0)));
        }
        for _ in 0..pairs {
            msgs.push(("human", length(&mut rng, 40.0)));
            msgs.push(("gpt", length(&mut rng, 180.0)));
        }
        for (i, (from, words)) in msgs.iter().enumerate() {
            let value = text(&mut rng, *words);
            let value = serde_json::to_string(&value).map_err(std::io::Error::other)?;
            if i > 0 {
                rec.push(',');
            }
            rec.push_str(&format!(
                "\n      {{\n        \"from\": \"{from}\",\n        \"value\": {value}\n      }}"
            ));
        }
        rec.push_str("\n    ]\n  }");
        put(&mut w, &mut written, &rec)?;
        n += 1;
    }
    put(&mut w, &mut written, "\n]\n")?;
    w.flush()?;
    Ok(written)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let big_mb: u64 = std::env::var("LLM_REPLAY_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir()?;
    let threads = rayon::current_num_threads();
    let t = Instant::now();
    Tokenizer::load(&TokenizerSpec::O200kBase)?;
    println!(
        "sharegpt ingest, o200k_base, {threads} rayon threads (tokenizer load {:.2} s)",
        t.elapsed().as_secs_f64()
    );
    for (i, mb) in [big_mb / 4, big_mb].into_iter().enumerate() {
        let input = dir.path().join(format!("sharegpt_{mb}mb.json"));
        let bytes = generate(&input, mb << 20, 42 + i as u64)?;
        let output = dir.path().join(format!("trace_{mb}mb.parquet"));
        let Measured {
            summary,
            secs,
            before,
            peak,
        } = run_ingest(&Config::new(
            Format::Sharegpt,
            vec![Input::File(input.clone())],
            &output,
        ))?;
        let m = &summary.metadata;
        let mib = bytes as f64 / f64::from(1 << 20);
        println!(
            "{mib:7.1} MiB in {secs:6.2} s = {:6.1} MiB/s | {} records, {} rows written of {} read | RSS before {} peak {}",
            mib / secs,
            m.extra.get("sharegpt.records").map_or("?", String::as_str),
            m.rows_written,
            m.rows_read,
            show(before),
            show(peak),
        );
        std::fs::remove_file(&input)?;
    }
    Ok(())
}
