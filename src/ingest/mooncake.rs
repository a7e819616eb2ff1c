//! Mooncake JSONL traces: `{timestamp, input_length, output_length,
//! hash_ids}`, `timestamp` in integer milliseconds from the trace start,
//! `hash_ids` the ids of 512-token prefix blocks (`--block-size` changes
//! it), with `len(hash_ids) == ceil(input_length / block)` checked (the
//! Mooncake release states it; a mismatch means the wrong block size or a
//! damaged row, and replaying it would misstate prefix reuse).
//!
//! Rows have no ids of their own: they get `line{N}` (see
//! [`line_id`]). Times are relative to the trace's start, so no `t0`.
//!
//! # Inferred sessions (`--infer-sessions`)
//!
//! The trace records no session ids, but its conversations show in the
//! blocks: a later turn's prompt is the earlier prompt, its reply and a new
//! message, so its `hash_ids` start with the earlier request's *full*
//! blocks, all its ids but the last. (That last block is partial, or may
//! be: the next turn fills it with more tokens, so its id differs there.)
//! With the flag, a row's parent is the earlier row, in file order, whose
//! full blocks are the longest strict prefix of the row's `hash_ids`, with
//! at least [`MIN_LINK_BLOCKS`] of them; of earlier rows with the same full
//! blocks, the first. `session_id` is the root row's `request_id` and
//! `turn_index` its depth, 0 for a root, as for Bailian. Links are made over
//! every valid row read, before filters and sampling, so a kept turn may
//! name a root that was filtered out (as Bailian's parents do).
//!
//! A prefix match is evidence of a conversation, not a recorded session id.
//! Two users who send the same system prompt and the same long opening
//! message are linked; a client that trims or rewrites its history breaks
//! the chain, and the next turn starts a session. In the first 1,000 rows
//! of the conversation trace, 163 of the 187 rows that extend an earlier
//! row's full blocks have an input at least the earlier row's input plus
//! output, as a resent history would; the rest are linked all the same.
//!
//! Branches: a row whose parent already has a continuation (a regenerated
//! reply, an edited message, or two requests built on one long prefix)
//! starts a session of its own, since a session replays as one chain of
//! turns. The metadata counts `mooncake.linked_turns` (rows given a parent)
//! and `mooncake.branches` (rows whose parent was taken, made roots).
//!
//! `think_time_us` stays null, for Bailian's reason: the trace has each
//! request's arrival but not when the previous reply ended, so the gap
//! between two arrivals would count the reply's generation as think time.
//! `replay` keeps the recorded arrivals, which contain both.
//!
//! Memory: one map entry (about 32 bytes, plus the map's slack) per row
//! with at least [`MIN_LINK_BLOCKS`] full blocks, keyed by a 64-bit hash of
//! those blocks; the rows themselves go to the trace as they are read.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};

use super::Config;
use super::records::{OrderCheck, TraceStart, for_each_line, line_id, parse_object};
use super::{Filters, IngestError, Input, InputError, Position};
use crate::trace::{TraceMetadata, TraceRecord};

/// Mooncake's block size.
pub const DEFAULT_BLOCK: u32 = 512;

/// Fewest full blocks a row must share with an earlier one to become its
/// next turn. Block 0 of the Mooncake traces is a system prompt that
/// unrelated requests share, so a one-block match says nothing about a
/// conversation; two blocks are the system prompt and at least 512 tokens
/// of the conversation's own.
pub const MIN_LINK_BLOCKS: usize = 2;

/// Reads `inputs` and writes the trace at `args.output`.
pub fn ingest(
    args: &Config,
    inputs: &[Input],
    filters: Filters,
) -> Result<TraceMetadata, IngestError> {
    let (mut sink, block) = TraceStart {
        format: "mooncake",
        label: "Mooncake",
        time_unit: "ms",
        default_block: Some(DEFAULT_BLOCK),
    }
    .open(args, inputs, filters)?;
    let block = block.unwrap_or(DEFAULT_BLOCK);
    let mut order = OrderCheck::new();
    let mut first_ms: Option<i64> = None;
    let mut linker = args.infer_sessions.then(SessionLinker::new);
    for_each_line(inputs, &mut sink, |index, file, line, sink, complete| {
        let f = parse_object(file, line, complete)?;
        let ts = f.int("timestamp")?;
        if ts < 0 {
            return Err(InputError::new(
                file,
                Position::Line(line.number),
                "timestamp",
                format!("must not be negative, found {ts}"),
            )
            .into());
        }
        let input = f.uint("input_length")?;
        let output = f.uint("output_length")?;
        let ids = f.uint_list("hash_ids")?;
        let want = input.div_ceil(u64::from(block));
        if ids.len() as u64 != want {
            return Err(InputError::new(
                file,
                Position::Line(line.number),
                "hash_ids",
                format!(
                    "{} block ids for input_length {input}: expected ceil({input}/{block}) = {want}",
                    ids.len()
                ),
            )
            .into());
        }
        let as_i32 = |field: &str, v: u64| {
            i32::try_from(v).map_err(|_| {
                InputError::new(
                    file,
                    Position::Line(line.number),
                    field,
                    format!("{v} is too large"),
                )
            })
        };
        let input_tokens = as_i32("input_length", input)?;
        let output_tokens = as_i32("output_length", output)?;
        order.check(file, line.number, "timestamp", ts)?;
        let t0 = *first_ms.get_or_insert(ts);
        // Only a valid row may become a parent: this is its last check.
        let placed = linker.as_mut().map(|l| l.link((index, line.number), &ids));
        sink.offer(TraceRecord {
            request_id: line_id(index, inputs.len(), line.number),
            arrival_offset_us: Some((ts - t0) * 1_000),
            input_tokens,
            output_tokens,
            session_id: placed.map(|p| line_id(p.root.0, inputs.len(), p.root.1)),
            turn_index: placed.map(|p| i32::try_from(p.depth).unwrap_or(i32::MAX)),
            prefix_block_ids: Some(ids),
            source_row: i64::try_from(line.number).unwrap_or(i64::MAX),
            ..TraceRecord::default()
        })
    })?;
    if let Some(l) = linker {
        let extra = &mut sink.metadata_mut().extra;
        extra.insert(
            "mooncake.sessions".into(),
            format!(
                "inferred (--infer-sessions): a row's parent is the first earlier row whose full blocks, at least {MIN_LINK_BLOCKS}, are the longest strict prefix of its hash_ids; a parent already continued makes the row a new session (mooncake.branches)"
            ),
        );
        extra.insert("mooncake.linked_turns".into(), l.linked.to_string());
        extra.insert("mooncake.branches".into(), l.branches.to_string());
    }
    sink.finish()
}

/// Where [`SessionLinker::link`] put a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement<R> {
    /// The session's first row.
    root: R,
    /// Turns before this one in the session: 0 for a root.
    depth: u32,
}

/// What the linker keeps of a row that can be a parent.
#[derive(Debug, Clone, Copy)]
struct Parent<R> {
    root: R,
    depth: u32,
    /// Whether a later row already continues it.
    continued: bool,
}

/// Links rows into sessions by prefix chains, one row at a time in file
/// order (the rules are in the module doc). Rows are named by `R`, which the
/// caller turns into the session id; `(input index, line)` here.
#[derive(Debug)]
struct SessionLinker<R> {
    /// Key of a row's full blocks -> that row, for the first row with them.
    /// A 64-bit key can make two different prefixes meet: with ten million
    /// rows of 30 blocks, the odds of one false link in the whole trace are
    /// about (10^7 rows * 30 look-ups) * 10^7 keys / 2^64, under 1 in 5,000,
    /// far below the false links the inference itself makes, so the blocks
    /// are not kept to check against.
    parents: HashMap<u64, Parent<R>>,
    /// Scratch: the key of each prefix of the current row.
    keys: Vec<u64>,
    /// Rows given a parent.
    linked: u64,
    /// Rows whose parent already had a continuation (made roots).
    branches: u64,
}

impl<R: Copy> SessionLinker<R> {
    fn new() -> Self {
        Self {
            parents: HashMap::new(),
            keys: Vec::new(),
            linked: 0,
            branches: 0,
        }
    }

    /// Places `row`, whose block ids are `ids`, after every row passed
    /// before it, and remembers it as a parent for the rows after.
    fn link(&mut self, row: R, ids: &[u64]) -> Placement<R> {
        let full = &ids[..ids.len().saturating_sub(1)];
        prefix_keys(full, &mut self.keys);
        // The longest prefix first. The row's own full blocks are the
        // longest candidate: a strict prefix of its ids, all but the last.
        let hit = self
            .keys
            .iter()
            .skip(MIN_LINK_BLOCKS - 1)
            .rev()
            .find(|k| self.parents.contains_key(k))
            .copied();
        let placed = match hit.and_then(|k| self.parents.get_mut(&k)) {
            Some(parent) if !parent.continued => {
                parent.continued = true;
                self.linked += 1;
                Placement {
                    root: parent.root,
                    depth: parent.depth.saturating_add(1),
                }
            }
            found => {
                self.branches += u64::from(found.is_some());
                Placement {
                    root: row,
                    depth: 0,
                }
            }
        };
        if full.len() >= MIN_LINK_BLOCKS
            && let Some(&own) = self.keys.last()
        {
            self.parents.entry(own).or_insert(Parent {
                root: placed.root,
                depth: placed.depth,
                continued: false,
            });
        }
        placed
    }
}

/// Sets `out[k - 1]` to the key of `ids[..k]`, for every `k`: SipHash of
/// the ids so far (a hasher's `finish` does not end it, so one pass does).
fn prefix_keys(ids: &[u64], out: &mut Vec<u64>) {
    out.clear();
    let mut h = DefaultHasher::new();
    for id in ids {
        h.write_u64(*id);
        out.push(h.finish());
    }
}

#[cfg(test)]
mod tests {
    use super::{MIN_LINK_BLOCKS, Placement, SessionLinker};
    use crate::ingest::records::testing::ingest_bytes;
    use crate::ingest::{Config, Format, Input};

    /// Rows of hand-made block ids (block 0 shared by all, as Mooncake's
    /// system prompt) and where each must land: (root row, depth).
    const CHAINS: [(&[u64], (usize, u32)); 9] = [
        (&[0, 1, 2, 3], (0, 0)),
        // Row 0's full blocks, then ids of its own: row 0's last, partial
        // block (3) is filled with more tokens here, so it has a new id.
        (&[0, 1, 2, 4, 5], (0, 1)),
        // A chain of 3: row 1's full blocks are longer than row 0's.
        (&[0, 1, 2, 4, 6, 7], (0, 2)),
        // Row 0's full blocks again, but row 1 continues row 0 already: a
        // branch, a new session.
        (&[0, 1, 2, 8, 9], (3, 0)),
        // The branch's next turn stays in the branch's session.
        (&[0, 1, 2, 8, 9, 10], (3, 1)),
        (&[0, 20], (5, 0)),
        // Row 5's only full block is the shared one: not a link.
        (&[0, 20, 21], (6, 0)),
        (&[0, 30, 31], (7, 0)),
        // Exactly MIN_LINK_BLOCKS full blocks of row 7: a link.
        (&[0, 30, 32, 33], (7, 1)),
    ];

    #[test]
    fn chains_link_branches_start_sessions_one_block_does_not_link() {
        assert_eq!(MIN_LINK_BLOCKS, 2, "the cases below are built for 2");
        let mut linker = SessionLinker::new();
        for (row, (ids, (root, depth))) in CHAINS.iter().enumerate() {
            assert_eq!(
                linker.link(row, ids),
                Placement {
                    root: *root,
                    depth: *depth
                },
                "row {row} {ids:?}"
            );
        }
        assert_eq!((linker.linked, linker.branches), (4, 1));
        // One entry per row with enough full blocks (row 5 has one).
        assert_eq!(linker.parents.len(), 8);
    }

    #[test]
    fn the_first_of_equal_prefixes_stays_the_parent() {
        let mut linker = SessionLinker::new();
        linker.link(0, &[0, 1, 2, 3]);
        // Row 0's full blocks and a partial block of its own: row 0's next
        // turn, with the same full blocks as row 0.
        assert_eq!(
            linker.link(1, &[0, 1, 2, 9]),
            Placement { root: 0, depth: 1 }
        );
        // Its best match is those blocks, which stay row 0's (continued):
        // a branch, not row 1's next turn.
        assert_eq!(
            linker.link(2, &[0, 1, 2, 5, 6]),
            Placement { root: 2, depth: 0 }
        );
        assert_eq!((linker.linked, linker.branches), (1, 1));
        assert_eq!(linker.parents.len(), 2);
    }

    /// The rules by their plain O(n^2) definition: each row's parent is
    /// the first earlier row with the most full blocks (at least
    /// MIN_LINK_BLOCKS) that are a strict prefix of its ids; a parent
    /// already continued makes the row a root.
    fn by_definition(rows: &[Vec<u64>]) -> Vec<Placement<usize>> {
        let mut placed: Vec<Placement<usize>> = Vec::new();
        let mut continued = vec![false; rows.len()];
        for (i, ids) in rows.iter().enumerate() {
            let mut best: Option<(usize, usize)> = None;
            for (j, earlier) in rows[..i].iter().enumerate() {
                let full = &earlier[..earlier.len().saturating_sub(1)];
                let fits = full.len() >= MIN_LINK_BLOCKS
                    && full.len() < ids.len()
                    && ids.starts_with(full);
                if fits && best.is_none_or(|(_, n)| full.len() > n) {
                    best = Some((j, full.len()));
                }
            }
            placed.push(match best {
                Some((j, _)) if !continued[j] => {
                    continued[j] = true;
                    Placement {
                        root: placed[j].root,
                        depth: placed[j].depth + 1,
                    }
                }
                _ => Placement { root: i, depth: 0 },
            });
        }
        placed
    }

    proptest::proptest! {
        /// Invariant: the linker places every row as the plain definition
        /// does (ids from a tiny alphabet, so prefixes meet often).
        #[test]
        fn linker_agrees_with_the_definition(rows in proptest::collection::vec(
            proptest::collection::vec(0u64..3, 0..7),
            0..40,
        )) {
            let mut linker = SessionLinker::new();
            let got: Vec<_> = rows.iter().enumerate().map(|(i, ids)| linker.link(i, ids)).collect();
            proptest::prop_assert_eq!(got, by_definition(&rows));
        }
    }

    fn row(ts: u64, ids: &[u64]) -> String {
        // Full blocks of 512 and a partial last one of 100 tokens.
        let input = 512 * (ids.len() as u64 - 1) + 100;
        format!(
            r#"{{"timestamp": {ts}, "input_length": {input}, "output_length": 7, "hash_ids": {ids:?}}}"#
        )
    }

    #[test]
    fn ingest_writes_inferred_sessions_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("m.jsonl");
        let lines: Vec<String> = CHAINS
            .iter()
            .enumerate()
            .map(|(i, (ids, _))| row(i as u64 * 10, ids))
            .collect();
        std::fs::write(&input, lines.join("\n")).unwrap();
        let run = |infer: bool| {
            let out = dir.path().join(format!("t{infer}.parquet"));
            let mut cfg = Config::new(Format::Mooncake, vec![Input::File(input.clone())], &out);
            cfg.infer_sessions = infer;
            crate::ingest::run(&cfg).unwrap();
            crate::trace::read_trace(&out).unwrap()
        };
        let t = run(true);
        for (r, (_, (root, depth))) in t.records.iter().zip(CHAINS) {
            let root = format!("line{}", root + 1);
            assert_eq!(
                r.session_id.as_deref(),
                Some(root.as_str()),
                "{}",
                r.request_id
            );
            assert_eq!(r.turn_index, Some(i32::try_from(depth).unwrap()));
            assert_eq!(r.think_time_us, None);
        }
        let extra = &t.metadata.extra;
        assert_eq!(extra["mooncake.linked_turns"], "4");
        assert_eq!(extra["mooncake.branches"], "1");
        assert!(extra["mooncake.sessions"].starts_with("inferred"));

        let plain = run(false);
        assert!(
            plain
                .metadata
                .extra
                .keys()
                .all(|k| !k.starts_with("mooncake."))
        );
        for (p, r) in plain.records.iter().zip(&t.records) {
            assert_eq!((&p.session_id, p.turn_index), (&None, None));
            let mut r = r.clone();
            (r.session_id, r.turn_index) = (None, None);
            assert_eq!(*p, r, "the flag changes the session columns only");
        }
    }

    #[test]
    fn bad_rows_name_line_and_field() {
        let ok = r#"{"timestamp": 5, "input_length": 600, "output_length": 3, "hash_ids": [1, 2]}"#;
        let cases = [
            (
                r#"{"timestamp": 4, "input_length": 1, "output_length": 1, "hash_ids": [3]}"#,
                "line 2: timestamp: time goes backwards",
            ),
            (
                r#"{"timestamp": -7, "input_length": 1, "output_length": 1, "hash_ids": [3]}"#,
                "line 2: timestamp: must not be negative, found -7",
            ),
            (
                r#"{"timestamp": 9, "input_length": -1, "output_length": 1, "hash_ids": []}"#,
                "line 2: input_length: must not be negative, found -1",
            ),
            (
                r#"{"timestamp": 9, "input_length": 1, "output_length": 1, "hash_ids": ["a"]}"#,
                "line 2: hash_ids[0]: expected a non-negative integer, found a string",
            ),
            (
                r#"{"timestamp": 9, "input_length": 1, "output_length": 1}"#,
                "line 2: hash_ids: missing",
            ),
            (
                r#"[9, 1, 1]"#,
                "line 2: json: expected a JSON object, found an array",
            ),
            ("{\"timestamp\": 9,}\n", "line 2: json: invalid JSON"),
        ];
        for (row, want) in cases {
            let e = ingest_bytes(
                "mooncake",
                "m.jsonl",
                format!("{ok}\n{row}").as_bytes(),
                &[],
            )
            .unwrap_err();
            assert!(
                e.to_string().contains(&format!("m.jsonl: {want}")),
                "{row}: {e}"
            );
        }
        let mut bytes = format!("{ok}\n").into_bytes();
        bytes.extend(b"{\"timestamp\": \xff}\n");
        let e = ingest_bytes("mooncake", "m.jsonl", &bytes, &[]).unwrap_err();
        assert!(
            e.to_string().contains("m.jsonl: line 2: line: not UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn block_size_flag_changes_the_check() {
        let row =
            br#"{"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [1, 2, 3]}"#;
        assert!(ingest_bytes("mooncake", "m.jsonl", row, &[]).is_err());
        let m = ingest_bytes("mooncake", "m.jsonl", row, &["--block-size", "256"]).unwrap();
        assert_eq!(m.prefix_block_size, Some(256));
    }

    proptest::proptest! {
        /// Invariant: arbitrary lines never panic the ingest; they give a
        /// trace or an error.
        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec(
            proptest::prop_oneof![
                "\\PC{0,60}",
                r#"\{"timestamp": -?[0-9]{1,4}, "input_length": [0-9]{1,4}, "output_length": -?[0-9]{1,3}, "hash_ids": \[([0-9]{1,3}, ){0,3}[0-9]\]\}"#,
                r#"\{"timestamp": [0-9]{1,3}(\.5)?, "input_length": "?[0-9]{1,3}"?, "hash_ids": (null|\[\]|\[-1\])"#,
            ],
            0..8,
        )) {
            let text = lines.join("\n");
            let _ = ingest_bytes("mooncake", "m.jsonl", text.as_bytes(), &[]);
            let _ = ingest_bytes("mooncake", "m.jsonl", text.as_bytes(), &["--skip-invalid"]);
        }
    }
}
