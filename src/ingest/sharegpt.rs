//! Ingest of ShareGPT: one JSON array `[{"id", "conversations": [{"from",
//! "value"}, ...]}, ...]`, read as a stream (the public file is ~670 MB, and
//! memory must not grow with it).
//!
//! # How a conversation becomes rows
//!
//! - Roles: `human`/`user` are the user; `gpt`/`chatgpt`/`bing`/`bard`/
//!   `assistant` the assistant; `system` a system prompt (any case). Any other
//!   role makes the record invalid: its share of the prompt is unknown.
//! - Empty (or whitespace-only) messages are removed first — real records
//!   carry empty replies where the generation failed — then consecutive
//!   messages of one role are merged (the user sent two messages before the
//!   reply, or a long reply was split). Both are counted in the metadata
//!   extras (`sharegpt.messages_empty`, `sharegpt.messages_merged`).
//! - Each user message is a turn (`turn_index` counts them from 0). A turn
//!   whose next message is the assistant's is a row: `input_tokens` is every
//!   message up to and including the turn (system prompt, earlier turns and
//!   replies), `output_tokens` the reply. Each message is tokenized once and
//!   the counts summed; chat-template tokens are not counted (see
//!   [`super::chat`]).
//! - About a third of real records start with the assistant: a long chat was
//!   split into parts and this part begins mid-conversation. Those leading
//!   assistant messages stay in the history of the later turns (the server
//!   saw them as context) and are not rows; such records are counted in
//!   `sharegpt.records_starting_with_assistant`.
//! - `request_id` is `{id}:{turn_index}`, `session_id` the record's `id`,
//!   `source_row` the 0-based record index in its file, `arrival_offset_us`
//!   null. With `--keep-text`, `prompt_text` is the turn's own user message
//!   (merged), not the history: the history is the earlier rows of the
//!   session.
//!
//! # Counting (`rows_read = rows_written + dropped`)
//!
//! A row is read for every user turn of a record. A record that yields no
//! turn counts as one row read, dropped under its reason: `invalid:<field>`
//! (with `--skip-invalid`), `duplicate_id` (a conversation id seen before in
//! any input; the first wins), or `no_user_turn`. A user turn without a reply
//! is dropped as `no_assistant_reply`; with `--first-turn-only` later turns
//! are dropped as `filter:first_turn_only` without being tokenized.
//!
//! # Errors
//!
//! A field of the wrong type, a missing field, an unknown role or a JSON
//! syntax error inside one record is that record's error, which
//! `--skip-invalid` skips: records are cut out of the array by a byte scanner
//! that only follows strings and brackets, so a bad record does not lose the
//! rest. A broken array (not an array, a missing `,`, text after the `]`) and
//! a cut file stop the ingest whatever the flags. Unpaired UTF-16 surrogate
//! escapes (emoji cut in half, which Python's `json` writes) are read as
//! U+FFFD and counted in `sharegpt.lone_surrogates`.

use std::collections::HashSet;
use std::io::BufRead;

use serde_json::Value;

use super::Config;
use super::chat::{
    self, MAX_RECORD_BYTES, Role, Tokens, count_parts, describe, field_error, syntax_error,
};
use super::{Filters, IngestError, Input, InputError, Position, TraceSink};
use crate::tokenize::Tokenizer;
use crate::trace::{TraceMetadata, TraceRecord};

/// One element of the top-level array, cut out by [`scan_array`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawRecord {
    /// 0-based index in the array.
    index: u64,
    /// 1-based line of its first byte.
    line: u64,
    /// 1-based column (in bytes) of its first byte.
    column: u64,
    /// Its JSON text.
    bytes: Vec<u8>,
}

/// Byte offset and line of a scan, for error positions.
struct Cursor {
    line: u64,
    /// Offset of the first byte of `line`.
    line_start: u64,
}

impl Cursor {
    fn newline_at(&mut self, offset: u64) {
        self.line += 1;
        self.line_start = offset + 1;
    }

    fn column(&self, offset: u64) -> u64 {
        offset.saturating_sub(self.line_start) + 1
    }
}

/// How a stray byte is shown in a message.
fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("`{}`", char::from(b))
    } else {
        format!("the byte 0x{b:02x}")
    }
}

/// The reason bytes after a complete array are counted under.
const TRAILING: &str = "trailing_garbage";

/// Cuts the top-level JSON array of `reader` into its elements, handing each
/// to `emit` (which returns `false` to stop early). Only strings and
/// brackets are followed, so memory holds one element at a time, and a
/// syntax error inside an element is left for the element's parser to
/// report (and `--skip-invalid` to skip). Returns the number of elements.
///
/// Errors: an input that is not an array, a broken array (elements not
/// separated by `,`, a trailing `,`, text after the `]`), an element longer
/// than [`MAX_RECORD_BYTES`], a cut ([`IngestError::Truncated`]), and no
/// elements ([`IngestError::Empty`]).
fn scan_array(
    reader: &mut dyn BufRead,
    file: &str,
    emit: &mut dyn FnMut(RawRecord) -> bool,
) -> Result<u64, IngestError> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum State {
        /// Before the `[`.
        Start,
        /// After the `[`: an element or `]`.
        First,
        /// Inside an element.
        Record,
        /// After an element: `,` or `]`.
        After,
        /// After a `,`: an element.
        Next,
        /// After the `]`: only whitespace.
        Done,
    }
    let fatal = |line: u64, message: String| {
        IngestError::Malformed(InputError::new(file, Position::Line(line), "json", message))
    };
    // Bytes after the last record: the records stand, the rest is noise.
    let trailing = |line: u64, message: String| {
        let mut e = InputError::new(file, Position::Line(line), "json", message);
        e.reason = TRAILING.to_owned();
        IngestError::Malformed(e)
    };
    let mut state = State::Start;
    let mut at = Cursor {
        line: 1,
        line_start: 0,
    };
    let mut base: u64 = 0;
    let mut count: u64 = 0;
    let mut first_chunk = true;
    // The element being cut: its bytes, bracket depth, string state, start.
    let mut bytes: Vec<u8> = Vec::new();
    let (mut depth, mut in_str, mut escaped) = (0u64, false, false);
    let (mut start_line, mut start_col) = (0u64, 0u64);

    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(IngestError::Io {
                    file: file.to_owned(),
                    error: source,
                });
            }
        };
        if chunk.is_empty() {
            break;
        }
        let len = chunk.len();
        let mut i = 0;
        if first_chunk {
            first_chunk = false;
            if chunk.starts_with(&[0xEF, 0xBB, 0xBF]) {
                i = 3;
            }
        }
        while i < len {
            if state == State::Record {
                let start = i;
                let mut done = false;
                while i < len {
                    let b = chunk[i];
                    if in_str {
                        if escaped {
                            escaped = false;
                        } else if b == b'\\' {
                            escaped = true;
                        } else if b == b'"' {
                            in_str = false;
                            if depth == 0 {
                                i += 1;
                                done = true;
                                break;
                            }
                        } else if b != b'\n' {
                            // Jump over plain string text: most of the input.
                            let rest = &chunk[i..];
                            let skip =
                                memchr::memchr3(b'"', b'\\', b'\n', rest).unwrap_or(rest.len());
                            i += skip.max(1);
                            continue;
                        }
                    } else {
                        match b {
                            b'"' => in_str = true,
                            b'{' | b'[' => depth += 1,
                            b'}' | b']' => {
                                if depth == 0 {
                                    // A scalar element ends at the array's `]`.
                                    done = true;
                                    break;
                                }
                                depth -= 1;
                                if depth == 0 {
                                    i += 1;
                                    done = true;
                                    break;
                                }
                            }
                            b',' | b' ' | b'\t' | b'\r' | b'\n' if depth == 0 => {
                                done = true;
                                break;
                            }
                            _ => {}
                        }
                    }
                    if b == b'\n' {
                        at.newline_at(base + i as u64);
                    }
                    i += 1;
                }
                bytes.extend_from_slice(&chunk[start..i]);
                if bytes.len() > MAX_RECORD_BYTES {
                    return Err(IngestError::Malformed(InputError::new(
                        file,
                        Position::Record(count),
                        "json",
                        format!(
                            "longer than {} MiB (it starts on line {start_line}): an unclosed string or bracket?",
                            MAX_RECORD_BYTES >> 20
                        ),
                    )));
                }
                if done {
                    state = State::After;
                    let raw = RawRecord {
                        index: count,
                        line: start_line,
                        column: start_col,
                        bytes: std::mem::take(&mut bytes),
                    };
                    count += 1;
                    if !emit(raw) {
                        return Ok(count);
                    }
                }
                continue;
            }

            let b = chunk[i];
            let offset = base + i as u64;
            match b {
                b'\n' => {
                    at.newline_at(offset);
                    i += 1;
                    continue;
                }
                b' ' | b'\t' | b'\r' => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let col = at.column(offset);
            match state {
                State::Start if b == b'[' => {
                    state = State::First;
                    i += 1;
                }
                State::Start => {
                    let hint = if b == b'{' {
                        " (an object: ShareGPT is one array of records; for one JSON object per line use the openai-messages format)"
                    } else {
                        ""
                    };
                    return Err(fatal(
                        at.line,
                        format!(
                            "expected a JSON array of conversations `[{{\"id\": ..., \"conversations\": [...]}}, ...]`, found {} at column {col}{hint}",
                            show_byte(b)
                        ),
                    ));
                }
                State::First if b == b']' => {
                    state = State::Done;
                    i += 1;
                }
                State::First | State::Next if !(state == State::Next && b == b']') => {
                    state = State::Record;
                    (start_line, start_col) = (at.line, col);
                    (depth, in_str, escaped) = (0, false, false);
                }
                State::Next => {
                    return Err(trailing(
                        at.line,
                        format!(
                            "a `,` after the last record (record {}) before the `]` at column {col} (byte {offset}): JSON allows no trailing comma (--skip-invalid keeps the records and counts this as `{TRAILING}`)",
                            count.saturating_sub(1),
                        ),
                    ));
                }
                State::After if b == b',' => {
                    state = State::Next;
                    i += 1;
                }
                State::After if b == b']' => {
                    state = State::Done;
                    i += 1;
                }
                State::After => {
                    return Err(fatal(
                        at.line,
                        format!(
                            "expected `,` or `]` after record {}, found {} at column {col}; the array cannot be read on",
                            count.saturating_sub(1),
                            show_byte(b)
                        ),
                    ));
                }
                State::Done => {
                    return Err(trailing(
                        at.line,
                        format!(
                            "unexpected {} at column {col} (byte {offset}) after the array's closing `]` (--skip-invalid keeps the records and counts this as `{TRAILING}`)",
                            show_byte(b),
                        ),
                    ));
                }
                // Handled above the match.
                State::Record | State::First => {}
            }
        }
        base += len as u64;
        reader.consume(len);
    }

    match state {
        State::Start => Err(IngestError::Empty {
            file: file.to_owned(),
            what: if base == 0 {
                "no bytes"
            } else {
                "only whitespace"
            }
            .to_owned(),
        }),
        State::Done if count == 0 => Err(IngestError::Empty {
            file: file.to_owned(),
            what: "an empty array `[]`".to_owned(),
        }),
        State::Done => Ok(count),
        State::First | State::Record | State::After | State::Next => Err(IngestError::Truncated {
            file: file.to_owned(),
            position: Position::Line(at.line),
            complete: count,
        }),
    }
}

/// A record as read, before normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Conversation {
    id: String,
    messages: Vec<(Role, String)>,
    /// Unpaired surrogate escapes replaced while reading it.
    lone_surrogates: usize,
}

/// The role a ShareGPT `from` names.
fn role_of(from: &str) -> Option<Role> {
    const USER: [&str; 2] = ["human", "user"];
    const ASSISTANT: [&str; 5] = ["gpt", "chatgpt", "bing", "bard", "assistant"];
    let is = |names: &[&str]| names.iter().any(|n| from.eq_ignore_ascii_case(n));
    if is(&USER) {
        Some(Role::User)
    } else if is(&ASSISTANT) {
        Some(Role::Assistant)
    } else if from.eq_ignore_ascii_case("system") {
        Some(Role::System)
    } else {
        None
    }
}

/// Parses and checks one record's JSON.
fn parse_record(raw: RawRecord, file: &str) -> Result<Conversation, InputError> {
    let RawRecord {
        index,
        line,
        column,
        mut bytes,
    } = raw;
    let what = || format!("record {index}");
    let mut lone_surrogates = 0;
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) if chat::is_lone_surrogate(&e) => {
            lone_surrogates = chat::repair_lone_surrogates(&mut bytes);
            serde_json::from_slice(&bytes)
                .map_err(|e| syntax_error(file, line, column, &e, &what()))?
        }
        Err(e) => return Err(syntax_error(file, line, column, &e, &what())),
    };
    let at = || Position::Record(index);
    let mut obj = match value {
        Value::Object(o) => o,
        other => {
            return Err(field_error(
                file,
                at(),
                "record",
                "record",
                format!(
                    "expected an object {{\"id\", \"conversations\"}}, found {}",
                    describe(&other)
                ),
            ));
        }
    };
    let id = match obj.remove("id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        // Some derived datasets number their records; the number is as
        // stable a key as a string.
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(Value::String(_)) => {
            return Err(field_error(file, at(), "id", "id", "empty"));
        }
        Some(other) => {
            return Err(field_error(
                file,
                at(),
                "id",
                "id",
                format!("expected a string, found {}", describe(&other)),
            ));
        }
        None => return Err(field_error(file, at(), "id", "id", "missing")),
    };
    let conversations = match obj.remove("conversations") {
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(field_error(
                file,
                at(),
                "conversations",
                "conversations",
                format!(
                    "expected an array of {{\"from\", \"value\"}} messages, found {}",
                    describe(&other)
                ),
            ));
        }
        None => {
            return Err(field_error(
                file,
                at(),
                "conversations",
                "conversations",
                "missing",
            ));
        }
    };
    let mut messages = Vec::with_capacity(conversations.len());
    for (i, message) in conversations.into_iter().enumerate() {
        let err = |name: &str, message: String| {
            let field = format!("conversations[{i}]{name}");
            let reason = format!("conversations{name}");
            field_error(file, at(), field, &reason, message)
        };
        let mut m = match message {
            Value::Object(m) => m,
            other => {
                return Err(err(
                    "",
                    format!(
                        "expected an object {{\"from\", \"value\"}}, found {}",
                        describe(&other)
                    ),
                ));
            }
        };
        let role = match m.remove("from") {
            Some(Value::String(s)) => role_of(&s).ok_or_else(|| {
                err(
                    ".from",
                    format!(
                        "unknown role {:?}: expected human, user, gpt, chatgpt, bing, bard, assistant or system",
                        s.chars().take(40).collect::<String>()
                    ),
                )
            })?,
            Some(other) => {
                return Err(err(
                    ".from",
                    format!("expected a string, found {}", describe(&other)),
                ));
            }
            None => return Err(err(".from", "missing".to_owned())),
        };
        let text = match m.remove("value") {
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(err(
                    ".value",
                    format!("expected a string, found {}", describe(&other)),
                ));
            }
            None => return Err(err(".value", "missing".to_owned())),
        };
        messages.push((role, text));
    }
    Ok(Conversation {
        id,
        messages,
        lone_surrogates,
    })
}

/// Facts about the records kept, for the metadata extras.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stats {
    records_starting_with_assistant: u64,
    messages_empty: u64,
    messages_merged: u64,
    lone_surrogates: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.records_starting_with_assistant += o.records_starting_with_assistant;
        self.messages_empty += o.messages_empty;
        self.messages_merged += o.messages_merged;
        self.lone_surrogates += o.lone_surrogates;
    }
}

/// A message after normalisation: one role, one or more merged texts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    role: Role,
    parts: Vec<String>,
}

/// Removes empty messages and merges consecutive messages of one role.
fn normalize(raw: Vec<(Role, String)>, stats: &mut Stats) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(raw.len());
    for (role, text) in raw {
        if text.trim().is_empty() {
            stats.messages_empty += 1;
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == role => {
                last.parts.push(text);
                stats.messages_merged += 1;
            }
            _ => out.push(Message {
                role,
                parts: vec![text],
            }),
        }
    }
    if out
        .iter()
        .find(|m| m.role != Role::System)
        .is_some_and(|m| m.role == Role::Assistant)
    {
        stats.records_starting_with_assistant += 1;
    }
    out
}

/// A user turn: its message, its reply (the next message, if the
/// assistant's), and its 0-based index among the user turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Turn {
    user: usize,
    reply: Option<usize>,
    index: usize,
}

/// The user turns of normalised messages.
fn user_turns(msgs: &[Message]) -> Vec<Turn> {
    let mut turns = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if m.role == Role::User {
            let reply = msgs
                .get(i + 1)
                .filter(|r| r.role == Role::Assistant)
                .map(|_| i + 1);
            turns.push(Turn {
                user: i,
                reply,
                index: turns.len(),
            });
        }
    }
    turns
}

/// What ingest settings a worker needs.
struct Options<'a> {
    tok: &'a Tokenizer,
    file: &'a str,
    keep_text: bool,
    first_turn_only: bool,
    block: Option<usize>,
}

/// What happens to one read row.
#[derive(Debug)]
enum Event {
    /// A row for the sink (which may still filter or sample it).
    Row(TraceRecord),
    /// Dropped for a reason of this format's.
    Drop(&'static str),
    /// Invalid.
    Invalid(InputError),
}

/// What a worker made of one record.
#[derive(Debug)]
enum Outcome {
    /// The record is invalid: one row read, dropped or fatal.
    Invalid(InputError),
    /// A conversation: its events, unless its id turns out to be a
    /// duplicate (known only in input order, by the consumer).
    Conversation {
        id: String,
        events: Vec<Event>,
        stats: Stats,
    },
}

/// The rows of one conversation (tokenizing only what some row needs).
fn conversation_events(
    conv: Conversation,
    index: u64,
    opts: &Options<'_>,
    stats: &mut Stats,
) -> Result<Vec<Event>, IngestError> {
    let msgs = normalize(conv.messages, stats);
    let turns = user_turns(&msgs);
    if turns.is_empty() {
        return Ok(vec![Event::Drop("no_user_turn")]);
    }
    let wanted = |t: &Turn| !(opts.first_turn_only && t.index > 0);
    let needed = turns
        .iter()
        .filter(|t| wanted(t))
        .filter_map(|t| t.reply)
        .max()
        .map_or(0, |last| last + 1);
    let counts = msgs[..needed]
        .iter()
        .map(|m| count_parts(opts.tok, &m.parts, opts.block.is_some()))
        .collect::<Result<Vec<Tokens>, _>>()?;
    // cumulative[k] = tokens of the first k messages.
    let mut cumulative = Vec::with_capacity(counts.len() + 1);
    cumulative.push(0usize);
    for c in &counts {
        cumulative.push(cumulative.last().copied().unwrap_or(0) + c.count);
    }
    let blocks = opts.block.map(|b| {
        let ids: Vec<u32> = counts.iter().flat_map(|c| c.ids.iter().copied()).collect();
        (b, chat::prefix_block_ids(&ids, b))
    });

    let mut events = Vec::with_capacity(turns.len());
    for t in &turns {
        if !wanted(t) {
            events.push(Event::Drop("filter:first_turn_only"));
            continue;
        }
        let Some(reply) = t.reply else {
            events.push(Event::Drop("no_assistant_reply"));
            continue;
        };
        let input = cumulative.get(t.user + 1).copied().unwrap_or(0);
        let output = counts.get(reply).map_or(0, |c| c.count);
        let (Some(input_tokens), Some(output_tokens)) = (chat::to_i32(input), chat::to_i32(output))
        else {
            events.push(Event::Invalid(field_error(
                opts.file,
                Position::Record(index),
                "conversations",
                "conversations",
                format!("turn {}: more than {} tokens", t.index, i32::MAX),
            )));
            continue;
        };
        events.push(Event::Row(TraceRecord {
            request_id: format!("{}:{}", conv.id, t.index),
            arrival_offset_us: None,
            input_tokens,
            output_tokens,
            session_id: Some(conv.id.clone()),
            // Records are capped at 64 MiB, far below 2^31 turns.
            turn_index: i32::try_from(t.index).ok(),
            think_time_us: None,
            prefix_block_ids: blocks
                .as_ref()
                .map(|(b, ids)| ids[..(input / b).min(ids.len())].to_vec()),
            model: None,
            request_kind: None,
            prompt_text: opts
                .keep_text
                .then(|| msgs.get(t.user).map(|m| m.parts.join("\n\n")))
                .flatten(),
            source_row: i64::try_from(index).unwrap_or(i64::MAX),
            user_id: None,
        }));
    }
    Ok(events)
}

/// The worker's job: parse, normalise and tokenize one record.
fn process(raw: RawRecord, opts: &Options<'_>) -> Result<Outcome, IngestError> {
    let index = raw.index;
    let conv = match parse_record(raw, opts.file) {
        Ok(c) => c,
        Err(e) => return Ok(Outcome::Invalid(e)),
    };
    let mut stats = Stats {
        lone_surrogates: conv.lone_surrogates as u64,
        ..Stats::default()
    };
    let id = conv.id.clone();
    let events = conversation_events(conv, index, opts, &mut stats)?;
    Ok(Outcome::Conversation { id, events, stats })
}

/// A conversation id as kept for duplicate detection: 64 bits of its hash
/// rather than the string, so the set costs 8 bytes per record (the public
/// file has ~94k records; a false duplicate among them has odds near
/// 10^-10).
fn id_key(id: &str) -> u64 {
    let digest = blake3::hash(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The consumer's job: count, de-duplicate and hand rows to the sink, in
/// input order.
fn apply(
    outcome: Outcome,
    sink: &mut TraceSink,
    ids: &mut HashSet<u64>,
    stats: &mut Stats,
) -> Result<(), IngestError> {
    match outcome {
        Outcome::Invalid(e) => {
            sink.read_row();
            sink.invalid(e)
        }
        Outcome::Conversation {
            id,
            events,
            stats: s,
        } => {
            if !ids.insert(id_key(&id)) {
                sink.read_row();
                sink.drop_row("duplicate_id");
                return Ok(());
            }
            stats.add(&s);
            for event in events {
                sink.read_row();
                match event {
                    Event::Row(r) => sink.offer(r)?,
                    Event::Drop(reason) => sink.drop_row(reason),
                    Event::Invalid(e) => sink.invalid(e)?,
                }
            }
            Ok(())
        }
    }
}

/// Reads `inputs` and writes the trace at `args.output`.
pub fn ingest(
    args: &Config,
    inputs: &[Input],
    filters: Filters,
) -> Result<TraceMetadata, IngestError> {
    let block = args.block_size.map(|b| b.get() as usize);
    let tok = Tokenizer::load(&args.tokenizer)?;
    let mut metadata = TraceMetadata::new(args.format.name());
    for input in inputs {
        metadata.input_files.push(input.describe()?);
    }
    metadata.tokenizer = Some(tok.name());
    metadata.prefix_block_size = args.block_size.map(std::num::NonZeroU32::get);
    let mut sink = TraceSink::create(&args.output, metadata, filters, args.skip_invalid)?;
    let first_turn_only = sink.filters().first_turn_only();

    let mut ids = HashSet::new();
    let mut stats = Stats::default();
    let mut records = 0u64;
    for input in inputs {
        let file = input.name();
        let mut reader = input.open()?;
        let opts = Options {
            tok: &tok,
            file: &file,
            keep_text: args.keep_text,
            first_turn_only,
            block,
        };
        let skip_invalid = sink.skip_invalid();
        let mut cut = None;
        chat::run_ordered(
            |hand| {
                let scanned = scan_array(&mut *reader, &file, &mut |raw| {
                    records += 1;
                    hand(raw)
                });
                match scanned {
                    Ok(_) => {}
                    // With --skip-invalid a cut file keeps every complete
                    // record before the cut, and bytes after the array are
                    // counted, not fatal.
                    Err(IngestError::Truncated { .. }) if skip_invalid => cut = Some("truncated"),
                    Err(IngestError::Malformed(e)) if skip_invalid && e.reason == TRAILING => {
                        cut = Some(TRAILING);
                    }
                    Err(e) => return Err(e),
                }
                Ok(())
            },
            |raw| process(raw, &opts),
            |outcome| apply(outcome, &mut sink, &mut ids, &mut stats),
        )?;
        if let Some(reason) = cut {
            sink.read_row();
            sink.drop_row(reason);
        }
    }

    let extra = &mut sink.metadata_mut().extra;
    let facts = [
        ("sharegpt.records", records),
        (
            "sharegpt.records_starting_with_assistant",
            stats.records_starting_with_assistant,
        ),
        ("sharegpt.messages_empty", stats.messages_empty),
        ("sharegpt.messages_merged", stats.messages_merged),
        ("sharegpt.lone_surrogates", stats.lone_surrogates),
    ];
    for (key, n) in facts {
        extra.insert(key.to_owned(), n.to_string());
    }
    extra.insert(
        "token_counts".to_owned(),
        "per message, summed over the history; chat-template tokens not counted".to_owned(),
    );
    sink.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scan(input: &[u8]) -> Result<Vec<RawRecord>, IngestError> {
        let mut out = Vec::new();
        let mut reader = input;
        scan_array(&mut reader, "t.json", &mut |r| {
            out.push(r);
            true
        })?;
        Ok(out)
    }

    fn texts(records: &[RawRecord]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.bytes).into_owned())
            .collect()
    }

    #[test]
    fn scanner_cuts_elements_with_their_positions() {
        let input = b"\xEF\xBB\xBF[\n  {\"id\": \"a]\\\"\", \"x\": [1, {\"y\": 2}]},\n  7 , \"s,]\" ,null\n]\n";
        let recs = scan(input).unwrap();
        assert_eq!(
            texts(&recs),
            [
                "{\"id\": \"a]\\\"\", \"x\": [1, {\"y\": 2}]}",
                "7",
                "\"s,]\"",
                "null"
            ]
        );
        assert_eq!((recs[0].index, recs[0].line, recs[0].column), (0, 2, 3));
        assert_eq!((recs[1].line, recs[1].column), (3, 3));
        assert_eq!((recs[3].index, recs[3].line, recs[3].column), (3, 3, 14));
    }

    #[test]
    fn scanner_reports_empty_inputs_by_kind() {
        let what = |input: &[u8]| match scan(input) {
            Err(IngestError::Empty { what, .. }) => what,
            other => format!("{other:?}"),
        };
        assert_eq!(what(b""), "no bytes");
        assert_eq!(what(b" \n\t\n"), "only whitespace");
        assert_eq!(what(b"[ ]\n"), "an empty array `[]`");
    }

    #[test]
    fn scanner_reports_cuts_with_complete_records_and_line() {
        for (input, line, complete) in [
            (&b"["[..], 1, 0),
            (b"[{\"id\": 1},\n{\"id\": 2},\n{\"id\": \"th", 3, 2),
            (b"[{\"id\": 1}\n", 2, 1),
            (b"[{\"id\": 1},", 1, 1),
        ] {
            match scan(input) {
                Err(IngestError::Truncated {
                    position,
                    complete: c,
                    ..
                }) => {
                    assert_eq!((position, c), (Position::Line(line), complete));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn scanner_rejects_broken_arrays_with_line_and_column() {
        let msg = |input: &[u8]| match scan(input) {
            Err(IngestError::Malformed(e)) => e.to_string(),
            other => format!("{other:?}"),
        };
        assert!(
            msg(b"\n  {\"id\": 1}").starts_with("t.json: line 2: json: expected a JSON array"),
            "{}",
            msg(b"\n  {\"id\": 1}")
        );
        assert!(msg(b"\n  {\"id\": 1}").contains("at column 3"));
        assert_eq!(
            msg(b"[{}\n {}]"),
            "t.json: line 2: json: expected `,` or `]` after record 0, found `{` at column 2; the array cannot be read on"
        );
        assert!(
            msg(b"[{}, {},\n]")
                .starts_with("t.json: line 2: json: a `,` after the last record (record 1)")
        );
        assert_eq!(
            msg(b"[{}]\n x"),
            "t.json: line 2: json: unexpected `x` at column 2 (byte 6) after the array's closing `]` (--skip-invalid keeps the records and counts this as `trailing_garbage`)"
        );
    }

    fn raw(json: &str) -> RawRecord {
        RawRecord {
            index: 4,
            line: 10,
            column: 3,
            bytes: json.as_bytes().to_vec(),
        }
    }

    fn parse_err(json: &str) -> (String, String) {
        let e = parse_record(raw(json), "t.json").unwrap_err();
        (e.to_string(), e.reason)
    }

    #[test]
    fn records_parse_with_roles_and_numeric_ids() {
        let c = parse_record(
            raw(r#"{"id": 12, "conversations": [{"from": "Human", "value": "hi", "markdown": null}, {"from": "bard", "value": "yo"}], "lang": "en"}"#),
            "t.json",
        )
        .unwrap();
        assert_eq!(c.id, "12");
        assert_eq!(
            c.messages,
            [
                (Role::User, "hi".to_owned()),
                (Role::Assistant, "yo".to_owned())
            ]
        );
    }

    #[test]
    fn record_errors_name_the_record_and_field() {
        assert_eq!(
            parse_err(
                r#"{"id": "a", "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": 42}]}"#
            ),
            (
                "t.json: record 4: conversations[1].value: expected a string, found the number 42"
                    .to_owned(),
                "invalid:conversations.value".to_owned()
            )
        );
        assert_eq!(
            parse_err(r#"{"conversations": []}"#).0,
            "t.json: record 4: id: missing"
        );
        assert_eq!(
            parse_err(r#"{"id": "a"}"#).0,
            "t.json: record 4: conversations: missing"
        );
        assert_eq!(
            parse_err(r#"{"id": "a", "conversations": [{"value": "x"}]}"#).0,
            "t.json: record 4: conversations[0].from: missing"
        );
        assert!(
            parse_err(r#"{"id": "a", "conversations": [{"from": "tool", "value": "x"}]}"#)
                .0
                .starts_with(
                    "t.json: record 4: conversations[0].from: unknown role \"tool\": expected"
                )
        );
        assert_eq!(
            parse_err("[1]").0,
            "t.json: record 4: record: expected an object {\"id\", \"conversations\"}, found an array"
        );
        assert_eq!(
            parse_err("{\"id\": \"a\",\n \"conversations\" []}"),
            (
                "t.json: line 11: json: expected `:` at column 18 (record 4)".to_owned(),
                "invalid:json".to_owned()
            )
        );
    }

    #[test]
    fn lone_surrogates_are_replaced_and_counted() {
        let c = parse_record(
            raw(r#"{"id": "a", "conversations": [{"from": "human", "value": "cut \ud83d"}]}"#),
            "t.json",
        )
        .unwrap();
        assert_eq!(c.messages[0].1, "cut \u{FFFD}");
        assert_eq!(c.lone_surrogates, 1);
    }

    fn msgs(spec: &[(Role, &str)]) -> Vec<(Role, String)> {
        spec.iter().map(|(r, t)| (*r, (*t).to_owned())).collect()
    }

    #[test]
    fn normalize_drops_empty_merges_repeats_and_notes_assistant_starts() {
        use Role::*;
        let mut stats = Stats::default();
        let out = normalize(
            msgs(&[
                (System, "sys"),
                (Assistant, "tail of part 1"),
                (User, "a"),
                (Assistant, " "),
                (User, "b"),
                (Assistant, "c"),
                (Assistant, "d"),
                (User, ""),
            ]),
            &mut stats,
        );
        let roles: Vec<_> = out.iter().map(|m| (m.role, m.parts.len())).collect();
        assert_eq!(
            roles,
            [(System, 1), (Assistant, 1), (User, 2), (Assistant, 2)]
        );
        assert_eq!(
            stats,
            Stats {
                records_starting_with_assistant: 1,
                messages_empty: 2,
                messages_merged: 2,
                lone_surrogates: 0
            }
        );
        let turns = user_turns(&out);
        assert_eq!(
            turns,
            [Turn {
                user: 2,
                reply: Some(3),
                index: 0
            }]
        );
    }

    #[test]
    fn turns_without_reply_keep_their_index() {
        use Role::*;
        let out = normalize(
            msgs(&[
                (User, "a"),
                (System, "s"),
                (User, "b"),
                (Assistant, "c"),
                (User, "d"),
            ]),
            &mut Stats::default(),
        );
        let t: Vec<_> = user_turns(&out)
            .iter()
            .map(|t| (t.index, t.reply))
            .collect();
        assert_eq!(t, [(0, None), (1, Some(3)), (2, None)]);
    }

    #[test]
    fn rows_sum_the_history_and_count_the_reply() {
        let tok = Tokenizer::load(&crate::tokenize::TokenizerSpec::O200kBase).unwrap();
        let opts = Options {
            tok: &tok,
            file: "t.json",
            keep_text: true,
            first_turn_only: false,
            block: Some(2),
        };
        let conv = parse_record(
            raw(r#"{"id": "c1", "conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "What is Rust?"}, {"from": "gpt", "value": "A systems language."}, {"from": "human", "value": "Why?"}, {"from": "human", "value": "Really, why?"}, {"from": "gpt", "value": "Memory safety without a garbage collector."}, {"from": "human", "value": "Thanks"}]}"#),
            "t.json",
        )
        .unwrap();
        let events = conversation_events(conv, 4, &opts, &mut Stats::default()).unwrap();
        let n = |s: &str| tok.count(s).unwrap() as i32;
        let rows: Vec<&TraceRecord> = events
            .iter()
            .filter_map(|e| match e {
                Event::Row(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(rows.len(), 2);
        assert!(matches!(events[2], Event::Drop("no_assistant_reply")));
        let first_in = n("Be brief.") + n("What is Rust?");
        assert_eq!(
            (rows[0].input_tokens, rows[0].output_tokens),
            (first_in, n("A systems language."))
        );
        let second_in = first_in + n("A systems language.") + n("Why?") + n("Really, why?");
        assert_eq!(rows[1].input_tokens, second_in);
        assert_eq!(rows[1].request_id, "c1:1");
        assert_eq!(rows[1].turn_index, Some(1));
        assert_eq!(rows[1].session_id.as_deref(), Some("c1"));
        assert_eq!(rows[1].source_row, 4);
        assert_eq!(rows[1].prompt_text.as_deref(), Some("Why?\n\nReally, why?"));
        let b0 = rows[0].prefix_block_ids.as_ref().unwrap();
        let b1 = rows[1].prefix_block_ids.as_ref().unwrap();
        assert_eq!(b0.len(), first_in as usize / 2);
        assert_eq!(
            b0[..],
            b1[..b0.len()],
            "later turns share the earlier prefix"
        );
    }

    proptest! {
        /// Invariant: no input makes the scanner or the record parser panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut reader = &bytes[..];
            let mut recs = Vec::new();
            let _ = scan_array(&mut reader, "p.json", &mut |r| { recs.push(r); true });
            for r in recs {
                if let Ok(c) = parse_record(r, "p.json") {
                    let m = normalize(c.messages, &mut Stats::default());
                    let _ = user_turns(&m);
                }
            }
        }

        /// Invariant: arbitrary bytes spliced into a valid array never panic
        /// either (exercises the record paths more than pure noise does).
        #[test]
        fn mutated_arrays_never_panic(at in 0usize..120, junk in "[\\[\\]{}\",:\\\\a-z0-9 \n]{0,8}") {
            let base = r#"[{"id": "a", "conversations": [{"from": "human", "value": "x\"y"}, {"from": "gpt", "value": "z"}]}, {"id": 2}]"#;
            let at = at.min(base.len());
            let input = format!("{}{}{}", &base[..at], junk, &base[at..]);
            let mut reader = input.as_bytes();
            let mut recs = Vec::new();
            let _ = scan_array(&mut reader, "p.json", &mut |r| { recs.push(r); true });
            for r in recs {
                let _ = parse_record(r, "p.json");
            }
        }

        /// Invariant: the scanner cuts any JSON array, compact or pretty,
        /// into exactly its elements.
        #[test]
        fn scanner_recovers_the_elements_of_any_array(
            values in proptest::collection::vec(json_value(), 1..8),
            pretty in any::<bool>(),
        ) {
            let array = Value::Array(values.clone());
            let text = if pretty { serde_json::to_string_pretty(&array) } else { serde_json::to_string(&array) };
            let text = text.unwrap();
            let recs = scan(text.as_bytes()).unwrap();
            let got: Vec<Value> = recs.iter().map(|r| serde_json::from_slice(&r.bytes).unwrap()).collect();
            prop_assert_eq!(got, values);
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[ -~\\n\"\\\\é😀]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z\"]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
