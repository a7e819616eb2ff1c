//! `openai-log` ingest throughput and memory on a generated gateway log:
//! multi-turn chats that resend their history (most of a real log's bytes),
//! a few shared system prompts, usage on most replies and streamed chunks
//! without usage on some, and the ids, keys and addresses a gateway logs.
//! Ingested with o200k_base: every prompt is tokenized (for prefix blocks),
//! fingerprinted (for the leak check) and hashed.
//!
//! Prints MiB/s and peak RSS for a quarter-size log and the full one; the
//! memory that grows with the log is the scrubbed rows held for sorting by
//! start time (ids, counts and block hashes: no text) and the leak check's
//! fingerprints.
//!
//! `cargo bench --bench ingest_log`; `LLM_REPLAY_BENCH_MB=256` for a
//! smaller log (default 1024).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

mod support;

use llm_replay::ingest::{Config, Format, Input};
use support::{Measured, length, run_ingest, show, text};

fn msg(role: &str, content: &str) -> String {
    format!(
        "{{\"role\":\"{role}\",\"content\":{}}}",
        serde_json::to_string(content).unwrap_or_default()
    )
}

/// Writes a gateway log of at least `bytes` bytes; returns bytes and lines.
fn generate(path: &Path, bytes: u64, seed: u64) -> std::io::Result<(u64, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let systems: Vec<String> = (0..6)
        .map(|i| {
            msg(
                "system",
                &format!("You are assistant {i}. {}", text(&mut rng, 300 + 400 * i)),
            )
        })
        .collect();
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let (mut written, mut lines) = (0u64, 0u64);
    let mut t = 1_733_050_000.0f64;
    let mut chat = 0u64;
    while written < bytes {
        chat += 1;
        let user = format!("user-{:05}@example.com", rng.random_range(0..20_000));
        let session = format!("sess-{chat:08x}-{:016x}", rng.random::<u64>());
        let mut history = vec![systems[rng.random_range(0..systems.len())].clone()];
        let turns = rng.random_range(1..7);
        let mut start = t;
        for _ in 0..turns {
            let asked = length(&mut rng, 60.0);
            history.push(msg("user", &text(&mut rng, asked)));
            let answered = length(&mut rng, 200.0);
            let reply = text(&mut rng, answered);
            let streamed = rng.random_range(0..5) == 0;
            let response = if streamed {
                // Chunks of about 16 characters, no usage.
                let mut chunks = Vec::new();
                let mut rest = reply.as_str();
                while !rest.is_empty() {
                    let mut cut = rest.len().min(16);
                    while !rest.is_char_boundary(cut) {
                        cut += 1;
                    }
                    chunks.push(format!(
                        "{{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}}}}]}}",
                        serde_json::to_string(&rest[..cut]).unwrap_or_default()
                    ));
                    rest = &rest[cut..];
                }
                format!("[{}]", chunks.join(","))
            } else {
                let words = reply.split_whitespace().count();
                format!(
                    "{{\"id\":\"chatcmpl-{:016x}\",\"object\":\"chat.completion\",\"choices\":[{{\"index\":0,\"message\":{},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{}}}}}",
                    rng.random::<u64>(),
                    msg("assistant", &reply),
                    history.iter().map(|m| m.len() / 5).sum::<usize>(),
                    words + words / 8
                )
            };
            let dur = rng.random_range(0.5..20.0);
            let line = format!(
                "{{\"timestamp\":{start:.6},\"end_time\":{:.6},\"request_id\":\"req_{:016x}\",\"client_ip\":\"10.{}.{}.{}\",\"user_agent\":\"bench-client/1.0\",\"authorization\":\"Bearer sk-{:032x}\",\"session_id\":\"{session}\",\"request\":{{\"model\":\"llama-3.1-8b-instruct\",\"stream\":{streamed},\"user\":\"{user}\",\"max_tokens\":1024,\"messages\":[{}]}},\"response\":{response}}}\n",
                start + dur,
                rng.random::<u64>(),
                rng.random_range(0..256),
                rng.random_range(0..256),
                rng.random_range(0..256),
                rng.random::<u128>(),
                history.join(","),
            );
            w.write_all(line.as_bytes())?;
            written += line.len() as u64;
            lines += 1;
            history.push(msg("assistant", &reply));
            start += dur + rng.random_range(2.0..60.0);
        }
        t += rng.random_range(0.0..0.4);
    }
    w.flush()?;
    Ok((written, lines))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let big_mb: u64 = std::env::var("LLM_REPLAY_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir()?;
    println!(
        "openai-log ingest, o200k_base, 512-token blocks, {} rayon threads",
        rayon::current_num_threads()
    );
    for (i, mb) in [big_mb / 4, big_mb].into_iter().enumerate() {
        let input = dir.path().join(format!("gateway_{mb}mb.jsonl"));
        let t = Instant::now();
        let (bytes, lines) = generate(&input, mb << 20, 7 + i as u64)?;
        let gen_secs = t.elapsed().as_secs_f64();
        let output = dir.path().join(format!("trace_{mb}mb.parquet"));
        let Measured {
            summary,
            secs,
            before,
            peak,
        } = run_ingest(&{
            let mut cfg = Config::new(Format::OpenaiLog, vec![Input::File(input.clone())], &output);
            cfg.log.salt = Some("bench".to_owned());
            cfg
        })?;
        let m = &summary.metadata;
        let mib = bytes as f64 / f64::from(1 << 20);
        let trace_mib = std::fs::metadata(&output)?.len() as f64 / f64::from(1 << 20);
        println!(
            "{mib:7.1} MiB ({lines} lines, generated in {gen_secs:.0} s) ingested in {secs:6.1} s = {:5.1} MiB/s | {} rows, trace {trace_mib:.1} MiB | RSS before {} peak {}",
            mib / secs,
            m.rows_written,
            show(before),
            show(peak),
        );
        std::fs::remove_file(&input)?;
    }
    Ok(())
}
