//! `llm-replay inspect`: checks a trace's invariants and prints what a user
//! wants to know before replaying it.
//!
//! Exit codes: 0 when every invariant holds, 2 when any is broken (each
//! violation is listed, up to 50 in text and all counted), 1 when the file
//! cannot be read at all.
//!
//! The invariants are those of `docs/trace-format.md`: unique request ids;
//! arrival offsets non-negative and non-decreasing; token counts, turn
//! indexes and think times non-negative; `floor(input / block) <=
//! len(prefix_block_ids) <= ceil(input / block)` (a last partial block may
//! or may not have an id); block ids only with a block size in the metadata;
//! `rows_read == rows_written + sum(rows_dropped)` and `rows_written` equal
//! to the rows in the file.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Serialize;

use super::{Trace, TraceMetadata};

/// Percentiles of a token length.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LengthStats {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: i64,
    /// 90th percentile.
    pub p90: i64,
    /// 99th percentile.
    pub p99: i64,
    /// Maximum.
    pub max: i64,
}

fn length_stats(mut v: Vec<i64>) -> LengthStats {
    if v.is_empty() {
        return LengthStats::default();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    LengthStats {
        mean: v.iter().sum::<i64>() as f64 / v.len() as f64,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: v[v.len() - 1],
    }
}

/// What `inspect` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TraceStats {
    /// Rows.
    pub rows: u64,
    /// Rows with an arrival time.
    pub timed_rows: u64,
    /// Last arrival offset, seconds.
    pub duration_s: f64,
    /// Mean arrival rate, requests per second.
    pub mean_rate: f64,
    /// Coefficient of variation of inter-arrival gaps (1 for Poisson).
    pub burstiness_cv: Option<f64>,
    /// Share of gaps that are zero (quantized timestamps).
    pub zero_gap_share: Option<f64>,
    /// Prompt lengths.
    pub input_tokens: LengthStats,
    /// Output lengths.
    pub output_tokens: LengthStats,
    /// Distinct sessions.
    pub sessions: u64,
    /// Mean rows per session.
    pub turns_per_session_mean: Option<f64>,
    /// Most rows in one session.
    pub turns_per_session_max: Option<u64>,
    /// Sessions with more than one row.
    pub multi_turn_sessions: u64,
    /// Median think time (previous turn's end to this arrival), seconds,
    /// over the rows that have one.
    pub think_time_p50_s: Option<f64>,
    /// 90th percentile think time, seconds.
    pub think_time_p90_s: Option<f64>,
    /// Rows with prefix block ids.
    pub rows_with_blocks: u64,
    /// Rows whose first prefix block appeared in an earlier row (they
    /// start with a prefix the server may have cached).
    pub rows_reusing_prefix: u64,
    /// Rows in the largest group that starts with one same block (a system
    /// prompt shared by many users).
    pub largest_shared_prefix_group: u64,
    /// Share of all prompt tokens that are in prefix blocks whose id
    /// appeared earlier in the trace (what an unbounded prefix cache could
    /// reuse); rows without block ids count as no reuse. `None` when no row
    /// has block ids.
    pub repeated_prefix_share: Option<f64>,
    /// Source, files, tokenizer, drops.
    pub metadata: TraceMetadata,
    /// Broken invariants, each with its row (the first 50, then a line
    /// saying how many more).
    pub violations: Vec<String>,
    /// How many invariants are broken in all.
    pub violation_count: u64,
}

/// Violations listed before the rest are summarised.
const MAX_LISTED: usize = 50;

/// Computes the statistics and checks the invariants (see the module
/// documentation); `report` reuses it for a trace's summary.
pub fn compute(trace: &Trace) -> TraceStats {
    let m = &trace.metadata;
    let mut v = Vec::new();
    let mut violation_count = 0u64;
    let mut violation = |s: String| {
        violation_count += 1;
        if v.len() < MAX_LISTED {
            v.push(s);
        }
    };
    let mut ids = HashSet::with_capacity(trace.records.len());
    let mut last: Option<i64> = None;
    let mut offsets = Vec::new();
    let mut sessions: HashMap<&str, u64> = HashMap::new();
    let mut seen_blocks: HashSet<u64> = HashSet::new();
    let mut block_tokens_repeated = 0u64;
    let mut rows_with_blocks = 0;
    let mut rows_reusing_prefix = 0;
    let mut first_blocks: HashMap<u64, u64> = HashMap::new();
    let mut think_times: Vec<i64> = Vec::new();
    let block = m.prefix_block_size.map(u64::from);
    for (i, r) in trace.records.iter().enumerate() {
        if !ids.insert(r.request_id.as_str()) {
            violation(format!(
                "row {i}: request_id {:?} is not unique",
                r.request_id
            ));
        }
        if r.input_tokens < 0 {
            violation(format!(
                "row {i}: input_tokens is negative ({})",
                r.input_tokens
            ));
        }
        if r.output_tokens < 0 {
            violation(format!(
                "row {i}: output_tokens is negative ({})",
                r.output_tokens
            ));
        }
        if let Some(t) = r.arrival_offset_us {
            if t < 0 {
                violation(format!("row {i}: arrival_offset_us is negative ({t})"));
            }
            if let Some(l) = last
                && t < l
            {
                violation(format!(
                    "row {i}: arrival_offset_us {t} is before the previous row's {l}"
                ));
            }
            last = Some(t);
            offsets.push(t);
        }
        if let Some(t) = r.turn_index.filter(|t| *t < 0) {
            violation(format!("row {i}: turn_index is negative ({t})"));
        }
        if let Some(t) = r.think_time_us.filter(|t| *t < 0) {
            violation(format!("row {i}: think_time_us is negative ({t})"));
        }
        think_times.extend(r.think_time_us.filter(|t| *t >= 0));
        if let Some(s) = &r.session_id {
            *sessions.entry(s.as_str()).or_insert(0) += 1;
        }
        if let Some(blocks) = &r.prefix_block_ids {
            rows_with_blocks += 1;
            if let Some(first) = blocks.first() {
                rows_reusing_prefix += u64::from(seen_blocks.contains(first));
                *first_blocks.entry(*first).or_insert(0) += 1;
            }
            let input = u64::try_from(r.input_tokens).unwrap_or(0);
            match block {
                None => violation(format!(
                    "row {i}: prefix_block_ids without llm_replay.prefix_block_size metadata"
                )),
                Some(0) => violation(format!(
                    "row {i}: prefix_block_ids with llm_replay.prefix_block_size 0"
                )),
                Some(b) => {
                    let n = blocks.len() as u64;
                    let (lo, hi) = (input / b, input.div_ceil(b));
                    if n > hi {
                        violation(format!(
                            "row {i}: {n} prefix blocks of {b} tokens for only {input} input tokens (at most {hi})"
                        ));
                    } else if n < lo {
                        violation(format!(
                            "row {i}: {n} prefix blocks of {b} tokens for {input} input tokens (at least {lo})"
                        ));
                    }
                    for (k, id) in blocks.iter().enumerate() {
                        // The last block may be partial.
                        let size = b.min(input.saturating_sub(k as u64 * b));
                        if !seen_blocks.insert(*id) {
                            block_tokens_repeated += size;
                        }
                    }
                }
            }
        }
    }
    if m.rows_written != trace.records.len() as u64 {
        violation(format!(
            "metadata rows_written is {} but the file has {} rows",
            m.rows_written,
            trace.records.len()
        ));
    }
    if !m.counts_add_up() {
        violation(format!(
            "metadata counts do not add up: rows_read {} != rows_written {} + dropped {}",
            m.rows_read,
            m.rows_written,
            m.dropped_total()
        ));
    }
    let listed = v.len() as u64;
    if violation_count > listed {
        v.push(format!("... and {} more", violation_count - listed));
    }
    let gaps: Vec<f64> = offsets.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    let (cv, zero_share) = if gaps.len() >= 2 {
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        let zeros = gaps.iter().filter(|g| **g == 0.0).count() as f64 / gaps.len() as f64;
        ((mean > 0.0).then(|| var.sqrt() / mean), Some(zeros))
    } else {
        (None, None)
    };
    // Replay starts at offset 0, so the duration is the last offset; the
    // rate is over the span between the first and last arrivals (they
    // differ when a filter removed the first rows).
    let duration_s = offsets.last().map_or(0.0, |&t| t as f64 / 1e6);
    let span_s = match (offsets.first(), offsets.last()) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e6,
        _ => 0.0,
    };
    let total_input: u64 = trace
        .records
        .iter()
        .map(|r| u64::try_from(r.input_tokens).unwrap_or(0))
        .sum();
    let max_turns = sessions.values().copied().max();
    think_times.sort_unstable();
    let think_q = |q: f64| {
        (!think_times.is_empty()).then(|| {
            let k = ((think_times.len() - 1) as f64 * q).round() as usize;
            think_times[k.min(think_times.len() - 1)] as f64 / 1e6
        })
    };
    TraceStats {
        rows: trace.records.len() as u64,
        timed_rows: offsets.len() as u64,
        duration_s,
        mean_rate: if span_s > 0.0 {
            (offsets.len().saturating_sub(1)) as f64 / span_s
        } else {
            0.0
        },
        burstiness_cv: cv,
        zero_gap_share: zero_share,
        input_tokens: length_stats(
            trace
                .records
                .iter()
                .map(|r| i64::from(r.input_tokens))
                .collect(),
        ),
        output_tokens: length_stats(
            trace
                .records
                .iter()
                .map(|r| i64::from(r.output_tokens))
                .collect(),
        ),
        sessions: sessions.len() as u64,
        turns_per_session_mean: (!sessions.is_empty())
            .then(|| sessions.values().sum::<u64>() as f64 / sessions.len() as f64),
        turns_per_session_max: max_turns,
        multi_turn_sessions: sessions.values().filter(|n| **n > 1).count() as u64,
        think_time_p50_s: think_q(0.5),
        think_time_p90_s: think_q(0.9),
        rows_with_blocks,
        rows_reusing_prefix,
        largest_shared_prefix_group: first_blocks.values().copied().max().unwrap_or(0),
        repeated_prefix_share: (rows_with_blocks > 0 && total_input > 0)
            .then(|| block_tokens_repeated as f64 / total_input as f64),
        metadata: m.clone(),
        violations: v,
        violation_count,
    }
}

impl fmt::Display for TraceStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.metadata;
        let files: Vec<&str> = m.input_files.iter().map(|i| i.name.as_str()).collect();
        if files.is_empty() {
            writeln!(f, "source        {}", m.source_format)?;
        } else {
            writeln!(
                f,
                "source        {} ({})",
                m.source_format,
                files.join(", ")
            )?;
        }
        if let Some(spec) = m.extra.get("synth") {
            writeln!(f, "synth         {spec}")?;
        }
        if let Some(list) = m.extra.get("transforms") {
            let applied: Vec<serde_json::Value> = serde_json::from_str(list).unwrap_or_default();
            for a in applied {
                let field = |k: &str| match a.get(k) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                };
                writeln!(
                    f,
                    "transform     {:<15} {} ({} -> {} rows)",
                    field("op"),
                    field("params"),
                    field("rows_in"),
                    field("rows_out")
                )?;
            }
        }
        if let Some(t) = &m.tokenizer {
            writeln!(f, "tokenizer     {t}")?;
        }
        writeln!(
            f,
            "rows          {} ({} with arrival times)",
            self.rows, self.timed_rows
        )?;
        if self.timed_rows > 0 {
            writeln!(
                f,
                "duration      {:.1} s, mean rate {:.2} req/s",
                self.duration_s, self.mean_rate
            )?;
            if let Some(cv) = self.burstiness_cv {
                writeln!(
                    f,
                    "burstiness    CV of gaps {cv:.2} (1 = Poisson){}",
                    self.zero_gap_share
                        .filter(|z| *z > 0.05)
                        .map(|z| format!(
                            ", {:.0}% of gaps are zero: quantized times, consider replay --spread",
                            z * 100.0
                        ))
                        .unwrap_or_default()
                )?;
            }
        }
        writeln!(
            f,
            "{:<14}{:>10}{:>8}{:>8}{:>8}{:>8}",
            "tokens", "mean", "p50", "p90", "p99", "max"
        )?;
        for (name, s) in [
            ("input", &self.input_tokens),
            ("output", &self.output_tokens),
        ] {
            writeln!(
                f,
                "{name:<14}{:>10.1}{:>8}{:>8}{:>8}{:>8}",
                s.mean, s.p50, s.p90, s.p99, s.max
            )?;
        }
        if self.sessions > 0 {
            writeln!(
                f,
                "sessions      {} ({} with several turns; turns per session: mean {:.2}, max {})",
                self.sessions,
                self.multi_turn_sessions,
                self.turns_per_session_mean.unwrap_or(0.0),
                self.turns_per_session_max.unwrap_or(0)
            )?;
        }
        if let (Some(p50), Some(p90)) = (self.think_time_p50_s, self.think_time_p90_s) {
            writeln!(f, "think time    p50 {p50:.1} s, p90 {p90:.1} s")?;
        }
        if let Some(share) = self.repeated_prefix_share {
            writeln!(
                f,
                "prefix reuse  {:.1}% of prompt tokens are in blocks seen earlier ({} rows with blocks of {} tokens)",
                share * 100.0,
                self.rows_with_blocks,
                m.prefix_block_size.unwrap_or(0)
            )?;
            writeln!(
                f,
                "              {} rows start with a block seen earlier; the largest group sharing a first block has {} rows",
                self.rows_reusing_prefix, self.largest_shared_prefix_group
            )?;
        }
        if let Some(scrub) = &m.scrub {
            let by = scrub.by_treatment();
            let n = |t| by.get(&t).map_or(0, Vec::len);
            use super::scrub::Treatment;
            writeln!(
                f,
                "scrubbed      {} fields dropped, {} hashed, {} tokenized then dropped; leak check: {} strings, {} found",
                n(Treatment::Dropped),
                n(Treatment::Hashed),
                n(Treatment::Tokenized),
                scrub.strings_checked,
                scrub.strings_found
            )?;
        }
        writeln!(
            f,
            "ingest        read {}, written {}, dropped {}",
            m.rows_read,
            m.rows_written,
            m.dropped_total()
        )?;
        for (reason, n) in &m.rows_dropped {
            writeln!(f, "  dropped {n:>8}  {reason}")?;
        }
        if self.violations.is_empty() {
            writeln!(f, "invariants    all hold")
        } else {
            writeln!(f, "invariants    {} BROKEN:", self.violation_count)?;
            for v in &self.violations {
                writeln!(f, "  {v}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::trace::TraceRecord;

    fn row(id: &str, t: i64, input: i32, blocks: Option<Vec<u64>>) -> TraceRecord {
        TraceRecord {
            request_id: id.into(),
            arrival_offset_us: Some(t),
            input_tokens: input,
            output_tokens: 1,
            prefix_block_ids: blocks,
            ..TraceRecord::default()
        }
    }

    fn trace(records: Vec<TraceRecord>, block: Option<u32>) -> Trace {
        let mut metadata = TraceMetadata::new("test");
        metadata.prefix_block_size = block;
        metadata.rows_read = records.len() as u64;
        metadata.rows_written = records.len() as u64;
        Trace {
            path: PathBuf::from("t.parquet"),
            metadata,
            records,
        }
    }

    #[test]
    fn a_good_trace_has_no_violations_and_its_numbers() {
        let t = trace(
            vec![
                row("a", 0, 10, Some(vec![1, 2, 3])),
                row("b", 1_000_000, 8, Some(vec![1, 2])),
                row("c", 2_000_000, 6, Some(vec![1])),
            ],
            Some(4),
        );
        let s = compute(&t);
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        assert_eq!(s.violation_count, 0);
        assert_eq!((s.duration_s, s.mean_rate), (2.0, 1.0));
        assert_eq!(s.burstiness_cv, Some(0.0), "even gaps");
        // Repeated: b's blocks 1, 2 (8 tokens) and c's block 1 (4 tokens)
        // over 24 prompt tokens.
        assert_eq!(s.repeated_prefix_share, Some(12.0 / 24.0));
        assert_eq!(s.input_tokens.max, 10);
        assert_eq!(s.input_tokens.p50, 8);
    }

    #[test]
    fn every_violation_is_listed() {
        let mut bad = vec![
            row("a", 5, 10, Some(vec![1])),   // too few blocks
            row("a", 3, -1, None),            // duplicate, backwards, negative
            row("c", 4, 4, Some(vec![1, 2])), // too many blocks
        ];
        bad[2].turn_index = Some(-1);
        bad[2].think_time_us = Some(-5);
        let mut t = trace(bad, Some(4));
        t.metadata.rows_written = 4;
        let s = compute(&t);
        let all = s.violations.join("\n");
        for want in [
            "row 0: 1 prefix blocks of 4 tokens for 10 input tokens (at least 2)",
            "row 1: request_id \"a\" is not unique",
            "row 1: input_tokens is negative (-1)",
            "row 1: arrival_offset_us 3 is before the previous row's 5",
            "row 2: 2 prefix blocks of 4 tokens for only 4 input tokens (at most 1)",
            "row 2: turn_index is negative (-1)",
            "row 2: think_time_us is negative (-5)",
            "metadata rows_written is 4 but the file has 3 rows",
            "metadata counts do not add up: rows_read 3 != rows_written 4 + dropped 0",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        assert_eq!(s.violation_count, 9);
    }

    #[test]
    fn blocks_without_a_block_size_are_a_violation() {
        let s = compute(&trace(vec![row("a", 0, 4, Some(vec![1]))], None));
        assert_eq!(s.violation_count, 1);
        assert!(s.violations[0].contains("without llm_replay.prefix_block_size"));
    }

    #[test]
    fn long_lists_are_cut_but_counted() {
        let rows = (0..60).map(|i| row("same", i, 1, None)).collect();
        let s = compute(&trace(rows, None));
        assert_eq!(s.violation_count, 59);
        assert_eq!(s.violations.len(), MAX_LISTED + 1);
        assert_eq!(s.violations[MAX_LISTED], "... and 9 more");
    }

    #[test]
    fn stats_serialise_to_json() {
        let s = compute(&trace(vec![row("a", 0, 4, None)], None));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["rows"], 1);
        assert_eq!(v["metadata"]["source_format"], "test");
        assert!(v["repeated_prefix_share"].is_null());
    }
}
