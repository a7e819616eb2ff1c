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

use clap::Parser;
use llm_replay::cli::{Cli, Command};
use llm_replay::tokenize::{Tokenizer, TokenizerSpec};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Common English words, roughly by frequency (earlier = more frequent).
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "you",
    "that",
    "it",
    "for",
    "on",
    "with",
    "as",
    "are",
    "this",
    "be",
    "can",
    "or",
    "by",
    "your",
    "an",
    "from",
    "at",
    "if",
    "use",
    "will",
    "not",
    "have",
    "which",
    "more",
    "data",
    "code",
    "function",
    "example",
    "time",
    "also",
    "some",
    "other",
    "these",
    "how",
    "when",
    "would",
    "there",
    "each",
    "they",
    "their",
    "what",
    "help",
    "should",
    "user",
    "value",
    "new",
    "one",
    "like",
    "file",
    "make",
    "different",
    "important",
    "information",
    "system",
    "way",
    "need",
    "following",
    "based",
    "first",
    "such",
    "may",
    "into",
    "all",
    "about",
    "process",
    "create",
    "could",
    "work",
    "while",
    "model",
    "provide",
    "specific",
    "business",
    "include",
    "using",
    "write",
    "list",
    "string",
    "return",
    "people",
    "however",
    "approach",
    "customer",
    "product",
    "design",
    "market",
    "question",
    "answer",
    "number",
    "result",
    "error",
    "because",
    "through",
    "between",
    "service",
    "team",
    "experience",
    "strategy",
    "story",
    "character",
    "marketing",
    "content",
    "website",
    "article",
    "students",
    "learning",
    "research",
    "health",
    "energy",
    "environment",
    "community",
    "development",
    "management",
    "performance",
    "quality",
    "security",
    "network",
    "database",
    "application",
    "server",
    "request",
    "response",
    "variable",
    "parameter",
    "algorithm",
    "implementation",
    "understand",
    "consider",
    "ensure",
    "improve",
    "additionally",
    "overall",
    "several",
    "potential",
    "relevant",
    "effective",
    "essential",
    "particular",
    "various",
    "significant",
    "opportunity",
    "challenge",
    "solution",
    "feature",
    "benefit",
    "support",
    "document",
    "section",
    "paragraph",
    "sentence",
    "language",
    "translate",
    "summary",
    "explain",
    "describe",
    "compare",
    "analysis",
    "recommend",
    "café",
    "naïve",
    "résumé",
];

/// Picks a word with a Zipf-like bias towards the front of [`WORDS`].
fn word(rng: &mut StdRng) -> &'static str {
    let u: f64 = rng.random();
    let i = ((WORDS.len() as f64).powf(u) - 1.0) as usize;
    WORDS[i.min(WORDS.len() - 1)]
}

/// English-like text of about `words` words: sentences, paragraphs, now and
/// then a list or a code block, as chat replies have.
fn text(rng: &mut StdRng, words: usize) -> String {
    let mut out = String::with_capacity(words * 7);
    let mut left = words;
    while left > 0 {
        match rng.random_range(0..10) {
            0 => {
                for i in 1..=rng.random_range(2..6) {
                    out.push_str(&format!("{i}. "));
                    for _ in 0..rng.random_range(3..10) {
                        out.push_str(word(rng));
                        out.push(' ');
                        left = left.saturating_sub(1);
                    }
                    out.push('\n');
                }
            }
            1 => {
                out.push_str("```python\ndef ");
                out.push_str(word(rng));
                out.push_str("(items):\n");
                for _ in 0..rng.random_range(2..8) {
                    out.push_str(&format!(
                        "    {} = {}.get(\"{}\", {})\n",
                        word(rng),
                        word(rng),
                        word(rng),
                        rng.random_range(0..1000)
                    ));
                    left = left.saturating_sub(4);
                }
                out.push_str("    return items\n```\n");
            }
            _ => {
                for _ in 0..rng.random_range(2..6) {
                    let n = rng.random_range(6..22);
                    for k in 0..n {
                        let w = word(rng);
                        if k == 0 {
                            let mut c = w.chars();
                            if let Some(f) = c.next() {
                                out.extend(f.to_uppercase());
                                out.push_str(c.as_str());
                            }
                        } else {
                            out.push(' ');
                            out.push_str(w);
                        }
                        if k + 1 < n && rng.random_range(0..12) == 0 {
                            out.push(',');
                        }
                    }
                    out.push_str(if rng.random_range(0..8) == 0 {
                        "? "
                    } else {
                        ". "
                    });
                    left = left.saturating_sub(n);
                }
            }
        }
        out.push_str("\n\n");
    }
    out
}

/// Turn length in words: log-normal-ish, clamped, with medians near real
/// ShareGPT (users short, replies a few hundred tokens).
fn length(rng: &mut StdRng, median: f64) -> usize {
    let z: f64 = (0..4).map(|_| rng.random::<f64>()).sum::<f64>() - 2.0;
    (median * (z * 1.2).exp()).clamp(2.0, 3000.0) as usize
}

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

/// A `kB` line of /proc/self/status (`VmHWM`, `VmRSS`) in MiB.
fn status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` 5), so each ingest's
/// peak is its own.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn show(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |m| format!("{m:.0} MiB"))
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
        let cli = Cli::try_parse_from([
            "llm-replay".as_ref(),
            "ingest".as_ref(),
            "sharegpt".as_ref(),
            input.as_os_str(),
            "-o".as_ref(),
            output.as_os_str(),
        ])?;
        let Command::Ingest(args) = cli.command else {
            return Err("not an ingest command".into());
        };
        let peak_reset = reset_peak();
        let before = status_mib("VmRSS:");
        let t = Instant::now();
        let summary = llm_replay::ingest::run(&args)?;
        let secs = t.elapsed().as_secs_f64();
        let peak = if peak_reset {
            status_mib("VmHWM:")
        } else {
            None
        };
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
