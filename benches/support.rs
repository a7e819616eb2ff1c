//! What the ingest benches share: English-like text of realistic lengths,
//! and peak memory from /proc.

use rand::RngExt;
use rand::rngs::StdRng;

/// Common English words, roughly by frequency (earlier = more frequent).
pub const WORDS: &[&str] = &[
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
pub fn word(rng: &mut StdRng) -> &'static str {
    let u: f64 = rng.random();
    let i = ((WORDS.len() as f64).powf(u) - 1.0) as usize;
    WORDS[i.min(WORDS.len() - 1)]
}

/// English-like text of about `words` words: sentences, paragraphs, now and
/// then a list or a code block, as chat replies have.
pub fn text(rng: &mut StdRng, words: usize) -> String {
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
pub fn length(rng: &mut StdRng, median: f64) -> usize {
    let z: f64 = (0..4).map(|_| rng.random::<f64>()).sum::<f64>() - 2.0;
    (median * (z * 1.2).exp()).clamp(2.0, 3000.0) as usize
}

/// A `kB` line of /proc/self/status (`VmHWM`, `VmRSS`) in MiB.
pub fn status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` 5), so each ingest's
/// peak is its own.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub fn show(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |m| format!("{m:.0} MiB"))
}

/// One ingest run with the wall time and memory it took.
pub struct Measured {
    /// What the ingest reports.
    pub summary: llm_replay::ingest::IngestSummary,
    /// Wall seconds.
    pub secs: f64,
    /// RSS before the run.
    pub before: Option<f64>,
    /// Peak RSS during the run (`None` where it cannot be reset).
    pub peak: Option<f64>,
}

/// Runs one ingest in-process, timing it and resetting the peak-RSS mark
/// first so that the peak is this run's own.
pub fn run_ingest(
    cfg: &llm_replay::ingest::Config,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let peak_reset = reset_peak();
    let before = status_mib("VmRSS:");
    let t = std::time::Instant::now();
    let summary = llm_replay::ingest::run(cfg)?;
    let secs = t.elapsed().as_secs_f64();
    let peak = if peak_reset {
        status_mib("VmHWM:")
    } else {
        None
    };
    Ok(Measured {
        summary,
        secs,
        before,
        peak,
    })
}
