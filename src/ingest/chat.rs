//! What the chat formats (`sharegpt`, `openai-messages`) share: roles,
//! token counting of a message history, prefix block ids, JSON error
//! wording, and the ordered parallel pipeline that keeps both cores busy
//! tokenizing while memory stays flat.
//!
//! Token counts are per message: each message's text is tokenized once, on
//! its own, and a prompt's `input_tokens` is the sum over its messages. The
//! tokens a chat template adds around each message (role headers, separators,
//! the generation prompt) are *not* counted: they depend on the serving
//! model's template, which a dataset does not name, and are a few tokens per
//! message.

use std::sync::mpsc::sync_channel;

use rayon::prelude::*;
use serde_json::Value;

use super::{IngestError, InputError, Position};
use crate::tokenize::{TokenizeError, Tokenizer};

/// Source records handed to the tokenizing pool at once: large enough to
/// amortise the hand-off, small enough that a batch of long chats stays a
/// few megabytes.
pub const BATCH_RECORDS: usize = 256;

/// Batches queued between pipeline stages. Together with
/// [`BATCH_RECORDS`] this bounds the memory of an ingest, whatever the input
/// size.
const BATCHES_IN_FLIGHT: usize = 2;

/// Longest line or record read into memory. Real ShareGPT records are below
/// a megabyte; a longer one means a broken file (an unclosed string swallows
/// the rest of the input), which must fail instead of buffering the file.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A system (or developer) prompt: part of every later prompt.
    System,
    /// The user: each user turn with a reply is one request.
    User,
    /// The model: a reply, and history for later turns.
    Assistant,
    /// A tool result: prompt context, like a system message.
    Tool,
}

/// Token count and, when prefix blocks are wanted, the token ids of a text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Number of tokens.
    pub count: usize,
    /// The ids, kept only for prefix block ids.
    pub ids: Vec<u32>,
}

/// Counts the tokens of one message made of `parts` (each tokenized on its
/// own and summed, so that merged or multi-part messages cost what their
/// pieces cost); keeps the ids when `keep_ids`.
pub fn count_parts<S: AsRef<str>>(
    tok: &Tokenizer,
    parts: &[S],
    keep_ids: bool,
) -> Result<Tokens, TokenizeError> {
    let mut out = Tokens::default();
    for part in parts {
        if keep_ids {
            let ids = tok.encode(part.as_ref())?;
            out.count += ids.len();
            out.ids.extend_from_slice(&ids);
        } else {
            out.count += tok.count(part.as_ref())?;
        }
    }
    Ok(out)
}

/// Ids of the full `block`-token blocks of `ids`: block `i`'s id hashes
/// block `i` together with the id of block `i - 1`, so equal ids mean equal
/// content from the start of the prompt up to the end of that block (what a
/// prefix cache can reuse). A trailing partial block gets no id.
pub fn prefix_block_ids(ids: &[u32], block: usize) -> Vec<u64> {
    chained_block_ids(ids, block, blake3::Hasher::new)
}

/// [`prefix_block_ids`] with the hasher each block starts from made by
/// `hasher` (production logs use a keyed one).
pub fn chained_block_ids(
    ids: &[u32],
    block: usize,
    hasher: impl Fn() -> blake3::Hasher,
) -> Vec<u64> {
    if block == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(ids.len() / block);
    let mut prev = [0u8; 8];
    for chunk in ids.chunks_exact(block) {
        let mut h = hasher();
        h.update(&prev);
        for id in chunk {
            h.update(&id.to_le_bytes());
        }
        prev.copy_from_slice(&h.finalize().as_bytes()[..8]);
        out.push(u64::from_le_bytes(prev));
    }
    out
}

/// A token count as the `int32` column stores it.
pub fn to_i32(n: usize) -> Option<i32> {
    i32::try_from(n).ok()
}

/// How a JSON value is named in an error message: its type, and for
/// scalars a short rendering (public dataset values may be quoted; strings
/// are cut at 40 characters).
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => {
            let short: String = s.chars().take(40).collect();
            if short.len() < s.len() {
                format!("the string {short:?}...")
            } else {
                format!("the string {short:?}")
            }
        }
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// An [`InputError`] whose drop reason is `invalid:<reason_field>`: fields
/// with indices (`conversations[3].value`) are counted under one reason
/// (`conversations.value`), not one per index.
pub fn field_error(
    file: &str,
    position: Position,
    field: impl Into<String>,
    reason_field: &str,
    message: impl Into<String>,
) -> InputError {
    let mut err = InputError::new(file, position, field, message);
    err.reason = format!("invalid:{reason_field}");
    err
}

/// A serde_json syntax error in a piece of input that starts at `line`,
/// `column` (1-based) of `file`, as an [`InputError`] on the absolute line,
/// field `json`. `what` names the piece (`record 3`), or is empty.
pub fn syntax_error(
    file: &str,
    line: u64,
    column: u64,
    err: &serde_json::Error,
    what: &str,
) -> InputError {
    let (rel_line, rel_col) = (err.line() as u64, err.column() as u64);
    let abs_line = line + rel_line.saturating_sub(1);
    let abs_col = if rel_line <= 1 {
        column + rel_col.saturating_sub(1)
    } else {
        rel_col
    };
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let code = full.strip_suffix(&suffix).unwrap_or(&full);
    // serde_json's word for bytes that are not UTF-8 says nothing about the
    // encoding, which is what the user must fix.
    let code = if code == "invalid unicode code point" {
        "invalid UTF-8 in a string (the input must be UTF-8)"
    } else {
        code
    };
    let within = if what.is_empty() {
        String::new()
    } else {
        format!(" ({what})")
    };
    InputError::new(
        file,
        Position::Line(abs_line),
        "json",
        format!("{code} at column {abs_col}{within}"),
    )
}

/// Whether `err` is serde_json refusing an unpaired UTF-16 surrogate escape
/// (`"\ud83d"` alone), which text cut in the middle of an emoji carries and
/// which Python's `json` (how ShareGPT was written) accepts.
pub fn is_lone_surrogate(err: &serde_json::Error) -> bool {
    let msg = err.to_string();
    msg.starts_with("lone leading surrogate in hex escape")
        || msg.starts_with("unexpected end of hex escape")
}

/// Rewrites every unpaired surrogate escape `\uD800`..`\uDFFF` in the JSON
/// strings of `json` to `\uFFFD` (the replacement character) in place. The
/// escape keeps its six bytes, so error columns stay right. Returns how many
/// were rewritten.
pub fn repair_lone_surrogates(json: &mut [u8]) -> usize {
    fn hex4(b: &[u8]) -> Option<u16> {
        let s = std::str::from_utf8(b.get(..4)?).ok()?;
        u16::from_str_radix(s, 16).ok()
    }
    let is_high = |u: u16| (0xD800..=0xDBFF).contains(&u);
    let is_low = |u: u16| (0xDC00..=0xDFFF).contains(&u);
    let mut fixed = 0;
    let mut in_str = false;
    let mut i = 0;
    while i < json.len() {
        let b = json[i];
        if !in_str {
            in_str = b == b'"';
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_str = false;
                i += 1;
            }
            b'\\' if json.get(i + 1) == Some(&b'u') => {
                let Some(u) = json.get(i + 2..).and_then(hex4) else {
                    i += 2;
                    continue;
                };
                let paired_low = json.get(i + 6) == Some(&b'\\')
                    && json.get(i + 7) == Some(&b'u')
                    && json.get(i + 8..).and_then(hex4).is_some_and(is_low);
                if is_high(u) && paired_low {
                    i += 12;
                } else if is_high(u) || is_low(u) {
                    json[i + 2..i + 6].copy_from_slice(b"FFFD");
                    fixed += 1;
                    i += 6;
                } else {
                    i += 6;
                }
            }
            // Any other escape is two bytes; skipping both keeps `\\u` from
            // being read as a `\u` escape.
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    fixed
}

/// Reads one line (without its `\n`, and without a `\r` before it) into
/// `buf`. Returns `None` at the end of input, else whether the line ended in
/// a newline (a last line without one may be cut). A line longer than
/// [`MAX_RECORD_BYTES`] is an `InvalidData` error.
pub fn read_line(
    reader: &mut dyn std::io::BufRead,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(if buf.is_empty() { None } else { Some(false) });
        }
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        buf.extend_from_slice(&chunk[..take]);
        reader.consume(take);
        if buf.len() > MAX_RECORD_BYTES + 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a line longer than {} MiB: is this a JSONL file?",
                    MAX_RECORD_BYTES >> 20
                ),
            ));
        }
        if done {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(true));
        }
    }
}

/// Runs an ingest in three stages so that both cores tokenize while memory
/// stays flat: `produce` runs on the calling thread and hands source items
/// to its callback (which returns `false` once the later stages have
/// stopped); batches of [`BATCH_RECORDS`] items are mapped by `process` on
/// the rayon pool; `consume` receives the results one by one, in input
/// order, on a third thread (it owns the sink, so filtering, sampling and
/// the first error are exactly as a sequential run would have them).
///
/// The first error in input order wins: an error of `produce` (a cut or
/// broken file) is returned only once everything before it was consumed
/// without error.
pub fn run_ordered<I, O, P, C>(
    produce: impl FnOnce(&mut dyn FnMut(I) -> bool) -> Result<(), IngestError>,
    process: P,
    mut consume: C,
) -> Result<(), IngestError>
where
    I: Send,
    O: Send,
    P: Fn(I) -> Result<O, IngestError> + Sync + Send,
    C: FnMut(O) -> Result<(), IngestError> + Send,
{
    std::thread::scope(|scope| {
        let (batch_tx, batch_rx) = sync_channel::<Vec<I>>(BATCHES_IN_FLIGHT);
        let (out_tx, out_rx) = sync_channel::<Vec<Result<O, IngestError>>>(BATCHES_IN_FLIGHT);
        let process = &process;
        let mapper = scope.spawn(move || {
            for batch in batch_rx {
                let outs: Vec<_> = batch.into_par_iter().map(process).collect();
                if out_tx.send(outs).is_err() {
                    break;
                }
            }
        });
        let consumer = scope.spawn(move || -> Result<(), IngestError> {
            for outs in out_rx {
                for out in outs {
                    consume(out?)?;
                }
            }
            Ok(())
        });

        let mut batch = Vec::with_capacity(BATCH_RECORDS);
        let mut open = true;
        let mut hand = |item: I| -> bool {
            batch.push(item);
            if batch.len() >= BATCH_RECORDS {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_RECORDS));
                open = batch_tx.send(full).is_ok();
            }
            open
        };
        let produced = produce(&mut hand);
        // Flush what is pending even after a produce error: an invalid
        // record before the cut must be reported first.
        if open && !batch.is_empty() {
            let _ = batch_tx.send(batch);
        }
        drop(batch_tx);
        if let Err(payload) = mapper.join() {
            std::panic::resume_unwind(payload);
        }
        match consumer.join() {
            Ok(consumed) => consumed?,
            Err(payload) => std::panic::resume_unwind(payload),
        }
        produced
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_chain_and_ignore_partial_blocks() {
        let a = prefix_block_ids(&[1, 2, 3, 4, 5], 2);
        assert_eq!(a.len(), 2);
        let b = prefix_block_ids(&[1, 2, 3, 4, 9, 9, 9], 2);
        assert_eq!(a[..], b[..2]);
        // Same second block after a different first block: different id.
        let c = prefix_block_ids(&[7, 7, 3, 4], 2);
        assert_ne!(a[1], c[1]);
        assert!(prefix_block_ids(&[1, 2], 0).is_empty());
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let mut s = br#"{"a":"x\ud83d y","b":"\ud83d\ude00","c":"\\ud83d","d":"\udc00"}"#.to_vec();
        assert_eq!(repair_lone_surrogates(&mut s), 2);
        let v: Value = serde_json::from_slice(&s).unwrap();
        assert_eq!(v["a"], "x\u{FFFD} y");
        assert_eq!(v["b"], "\u{1F600}");
        assert_eq!(v["c"], "\\ud83d");
        assert_eq!(v["d"], "\u{FFFD}");
    }

    #[test]
    fn syntax_errors_point_at_the_absolute_line_and_column() {
        let err = serde_json::from_slice::<Value>(b"{\"a\": 1,\n  \"b\" 2}").unwrap_err();
        let e = syntax_error("f.json", 10, 3, &err, "record 4");
        assert_eq!(e.position, Position::Line(11));
        assert_eq!(e.field, "json");
        assert_eq!(e.message, "expected `:` at column 7 (record 4)");
        let err = serde_json::from_slice::<Value>(b"{\"a\" 1}").unwrap_err();
        let e = syntax_error("f.json", 10, 3, &err, "");
        assert_eq!(e.message, "expected `:` at column 8");
    }

    #[test]
    fn non_utf8_is_named_as_such() {
        let err = serde_json::from_slice::<Value>(b"{\"a\": \"\xff\"}").unwrap_err();
        let e = syntax_error("f.json", 1, 1, &err, "");
        assert!(e.message.starts_with("invalid UTF-8"), "{}", e.message);
    }

    #[test]
    fn lines_lose_their_line_ends_and_report_a_missing_last_newline() {
        let mut input: &[u8] = b"a\r\nb\n\nc";
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Some(nl) = read_line(&mut input, &mut buf).unwrap() {
            got.push((String::from_utf8(buf.clone()).unwrap(), nl));
        }
        let want = [("a", true), ("b", true), ("", true), ("c", false)];
        assert_eq!(
            got,
            want.map(|(s, n)| (s.to_owned(), n)).to_vec(),
            "lines and newline flags"
        );
    }

    #[test]
    fn pipeline_keeps_input_order_and_reports_the_first_error() {
        let mut seen = Vec::new();
        let r = run_ordered(
            |hand| {
                for i in 0..1000u32 {
                    if !hand(i) {
                        break;
                    }
                }
                Ok(())
            },
            |i| Ok(i * 2),
            |o| {
                seen.push(o);
                Ok(())
            },
        );
        assert!(r.is_ok());
        assert_eq!(seen, (0..1000).map(|i| i * 2).collect::<Vec<_>>());

        let r = run_ordered(
            |hand| {
                for i in 0..5000u32 {
                    if !hand(i) {
                        return Ok(());
                    }
                }
                Err(IngestError::Usage("produce".into()))
            },
            |i| {
                if i == 300 || i == 301 {
                    Err(IngestError::Usage(format!("item {i}")))
                } else {
                    Ok(i)
                }
            },
            |_| Ok(()),
        );
        assert_eq!(r.map_err(|e| e.to_string()), Err("item 300".to_owned()));
    }
}
