//! Ingest of `openai-messages`: JSON lines, each one chat request
//! `{"messages": [{"role", "content"}, ...], ...}` as sent to
//! `/v1/chat/completions` (fine-tuning files and many dataset exports look
//! like this).
//!
//! # How a line becomes a row
//!
//! - Every non-blank line is one row (blank lines are skipped and not
//!   counted). `request_id` is the line's `id` (string or integer) or
//!   `line{N}` (1-based line, stable across re-ingest of the same file);
//!   `session_id` is its `session_id`, if any; `model` its `model`;
//!   `source_row` the line; `arrival_offset_us` null.
//! - `content` is a string, or a list of parts of which only text parts
//!   (`text`, `input_text`, `output_text`, `refusal`) can be counted; an image
//!   or audio part makes the line invalid rather than silently under-counted.
//!   An assistant message may have no content and `tool_calls` instead: their
//!   function names and arguments are counted as its text.
//! - Roles: `system` and `developer` (system prompt), `user`, `assistant`,
//!   and `tool`/`function` (tool results, counted as prompt).
//! - The reply: if the last message is the assistant's, it is the response
//!   (`output_tokens` its tokens; `input_tokens` every message before it).
//!   Otherwise every message is prompt and `output_tokens` is
//!   `max_completion_tokens`, else `max_tokens` (the cap the request set);
//!   with neither, the output length is unknown and the line is invalid
//!   (`invalid:no_output_length`). How many rows took their output from a cap
//!   is recorded in the metadata extra `openai_messages.output_from_max_tokens`.
//! - Tokens are counted per message and summed; chat-template tokens are not
//!   counted (see [`super::chat`]). With `--keep-text`, `prompt_text` is the
//!   last user message (its text parts joined by newlines).
//!
//! A last line cut mid-record is [`IngestError::Truncated`], or with
//! `--skip-invalid` counted as `truncated` while the complete lines before it
//! are kept. Any other bad line is an [`InputError`] at its line, which
//! `--skip-invalid` skips and counts.

use serde_json::error::Category;
use serde_json::{Map, Value};

use super::Config;
use super::chat::{self, Role, Tokens, count_parts, describe, field_error, syntax_error};
use super::{Filters, IngestError, Input, InputError, Position, TraceSink};
use crate::tokenize::Tokenizer;
use crate::trace::{TraceMetadata, TraceRecord};

/// One non-blank line of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawLine {
    /// 1-based line number.
    pub(super) line: u64,
    /// Non-blank lines before it.
    pub(super) rows_before: u64,
    /// Whether it ended with a newline (only the last line may not).
    pub(super) terminated: bool,
    /// Its bytes, without the line end.
    pub(super) bytes: Vec<u8>,
}

/// One message: role and the texts whose tokens it costs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChatMessage {
    role: Role,
    parts: Vec<String>,
}

/// A request as read from a line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    id: Option<String>,
    session: Option<String>,
    model: Option<String>,
    messages: Vec<ChatMessage>,
    /// `max_completion_tokens`, else `max_tokens`.
    max_output: Option<u64>,
    lone_surrogates: usize,
}

/// The role an OpenAI `role` names.
fn role_of(role: &str) -> Option<Role> {
    match role {
        "system" | "developer" => Some(Role::System),
        "user" => Some(Role::User),
        "assistant" => Some(Role::Assistant),
        "tool" | "function" => Some(Role::Tool),
        _ => None,
    }
}

/// A string or integer field as a key (`id`, `session_id`).
fn key_field(
    obj: &mut Map<String, Value>,
    name: &str,
    err: &dyn Fn(&str, &str, String) -> InputError,
) -> Result<Option<String>, InputError> {
    match obj.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
        Some(other) => Err(err(
            name,
            name,
            format!(
                "expected a non-empty string or an integer, found {}",
                describe(&other)
            ),
        )),
    }
}

/// The text parts of one message's `content` (and, for an assistant
/// message without content, of its `tool_calls`).
fn message_parts(
    i: usize,
    role: Role,
    m: &mut Map<String, Value>,
    err: &dyn Fn(&str, &str, String) -> InputError,
) -> Result<Vec<String>, InputError> {
    let field = |name: &str| format!("messages[{i}].{name}");
    match m.remove("content") {
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.into_iter().enumerate() {
                let pfield = |name: &str| format!("messages[{i}].content[{j}]{name}");
                let mut p = match part {
                    Value::Object(p) => p,
                    other => {
                        return Err(err(
                            &pfield(""),
                            "messages.content",
                            format!(
                                "expected a part {{\"type\": \"text\", \"text\": ...}}, found {}",
                                describe(&other)
                            ),
                        ));
                    }
                };
                let key = match p.get("type") {
                    Some(Value::String(t)) => match t.as_str() {
                        "text" | "input_text" | "output_text" => "text",
                        "refusal" => "refusal",
                        other => {
                            return Err(err(
                                &pfield(".type"),
                                "messages.content.type",
                                format!(
                                    "cannot count the tokens of a {other:?} part: only text parts are counted"
                                ),
                            ));
                        }
                    },
                    Some(other) => {
                        return Err(err(
                            &pfield(".type"),
                            "messages.content.type",
                            format!("expected a string, found {}", describe(other)),
                        ));
                    }
                    None => {
                        return Err(err(
                            &pfield(".type"),
                            "messages.content.type",
                            "missing".to_owned(),
                        ));
                    }
                };
                match p.remove(key) {
                    Some(Value::String(s)) => out.push(s),
                    Some(other) => {
                        return Err(err(
                            &pfield(&format!(".{key}")),
                            "messages.content.text",
                            format!("expected a string, found {}", describe(&other)),
                        ));
                    }
                    None => {
                        return Err(err(
                            &pfield(&format!(".{key}")),
                            "messages.content.text",
                            "missing".to_owned(),
                        ));
                    }
                }
            }
            Ok(out)
        }
        None | Some(Value::Null) if role == Role::Assistant => tool_call_parts(i, m, err),
        None => Err(err(
            &field("content"),
            "messages.content",
            "missing".to_owned(),
        )),
        Some(other) => Err(err(
            &field("content"),
            "messages.content",
            format!(
                "expected a string or a list of text parts, found {}",
                describe(&other)
            ),
        )),
    }
}

/// The function names and arguments of an assistant message's
/// `tool_calls`: the text the model wrote instead of content.
fn tool_call_parts(
    i: usize,
    m: &mut Map<String, Value>,
    err: &dyn Fn(&str, &str, String) -> InputError,
) -> Result<Vec<String>, InputError> {
    let calls = match m.remove("tool_calls") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(calls)) => calls,
        Some(other) => {
            return Err(err(
                &format!("messages[{i}].tool_calls"),
                "messages.tool_calls",
                format!("expected an array, found {}", describe(&other)),
            ));
        }
    };
    let mut out = Vec::new();
    for (k, call) in calls.iter().enumerate() {
        for key in ["name", "arguments"] {
            match call.get("function").and_then(|f| f.get(key)) {
                Some(Value::String(s)) => out.push(s.clone()),
                None | Some(Value::Null) => {}
                Some(other) => {
                    return Err(err(
                        &format!("messages[{i}].tool_calls[{k}].function.{key}"),
                        "messages.tool_calls",
                        format!("expected a string, found {}", describe(other)),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Parses and checks one line. `Err(Ok(..))` is a bad line; `Err(Err(..))`
/// a cut last line.
fn parse_line(raw: RawLine, file: &str) -> Result<Request, Result<InputError, IngestError>> {
    let RawLine {
        line,
        rows_before,
        terminated,
        mut bytes,
    } = raw;
    let mut lone_surrogates = 0;
    let parsed = match serde_json::from_slice::<Value>(&bytes) {
        Err(e) if chat::is_lone_surrogate(&e) => {
            lone_surrogates = chat::repair_lone_surrogates(&mut bytes);
            serde_json::from_slice::<Value>(&bytes)
        }
        other => other,
    };
    let value = match parsed {
        Ok(v) => v,
        Err(e) if !terminated && e.classify() == Category::Eof => {
            return Err(Err(IngestError::Truncated {
                file: file.to_owned(),
                position: Position::Line(line),
                complete: rows_before,
            }));
        }
        Err(e) => return Err(Ok(syntax_error(file, line, 1, &e, ""))),
    };
    let at = Position::Line(line);
    let err = |field: &str, reason: &str, message: String| {
        field_error(file, at.clone(), field, reason, message)
    };
    let mut obj = match value {
        Value::Object(o) => o,
        other => {
            return Err(Ok(err(
                "json",
                "json",
                format!(
                    "expected an object {{\"messages\": [...]}} on each line, found {}",
                    describe(&other)
                ),
            )));
        }
    };
    let id = key_field(&mut obj, "id", &err).map_err(Ok)?;
    let session = key_field(&mut obj, "session_id", &err).map_err(Ok)?;
    let model = match obj.remove("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(Ok(err(
                "model",
                "model",
                format!("expected a string, found {}", describe(&other)),
            )));
        }
    };
    let mut max_output = None;
    // The newer name wins: it is what current clients send.
    for name in ["max_tokens", "max_completion_tokens"] {
        match obj.remove(name) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.is_u64() => max_output = n.as_u64(),
            Some(other) => {
                return Err(Ok(err(
                    name,
                    name,
                    format!(
                        "expected a non-negative integer, found {}",
                        describe(&other)
                    ),
                )));
            }
        }
    }
    let list = match obj.remove("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(Ok(err("messages", "messages", "empty".to_owned()))),
        Some(other) => {
            return Err(Ok(err(
                "messages",
                "messages",
                format!(
                    "expected an array of {{\"role\", \"content\"}} messages, found {}",
                    describe(&other)
                ),
            )));
        }
        None => return Err(Ok(err("messages", "messages", "missing".to_owned()))),
    };
    let mut messages = Vec::with_capacity(list.len());
    for (i, m) in list.into_iter().enumerate() {
        let mut m = match m {
            Value::Object(m) => m,
            other => {
                return Err(Ok(err(
                    &format!("messages[{i}]"),
                    "messages",
                    format!(
                        "expected an object {{\"role\", \"content\"}}, found {}",
                        describe(&other)
                    ),
                )));
            }
        };
        let role_field = format!("messages[{i}].role");
        let role = match m.remove("role") {
            Some(Value::String(r)) => role_of(&r).ok_or_else(|| {
                err(
                    &role_field,
                    "messages.role",
                    format!(
                        "unknown role {r:?}: expected system, developer, user, assistant, tool or function"
                    ),
                )
            }),
            Some(other) => Err(err(
                &role_field,
                "messages.role",
                format!("expected a string, found {}", describe(&other)),
            )),
            None => Err(err(&role_field, "messages.role", "missing".to_owned())),
        }
        .map_err(Ok)?;
        let parts = message_parts(i, role, &mut m, &err).map_err(Ok)?;
        messages.push(ChatMessage { role, parts });
    }
    let has_reply = messages.last().is_some_and(|m| m.role == Role::Assistant);
    if !has_reply && max_output.is_none() {
        return Err(Ok(err(
            "messages",
            "no_output_length",
            "the last message is not an assistant reply and neither max_completion_tokens nor max_tokens is given: the output length is unknown".to_owned(),
        )));
    }
    Ok(Request {
        id,
        session,
        model,
        messages,
        max_output,
        lone_surrogates,
    })
}

/// Settings a worker needs.
struct Options<'a> {
    tok: &'a Tokenizer,
    file: &'a str,
    keep_text: bool,
    block: Option<usize>,
    /// A cut last line is counted as `truncated` instead of stopping.
    skip_invalid: bool,
}

/// What a worker made of one line.
#[derive(Debug)]
enum Outcome {
    Row {
        record: TraceRecord,
        from_max_tokens: bool,
        lone_surrogates: usize,
    },
    Invalid(InputError),
}

/// The worker's job: parse and tokenize one line.
fn process(raw: RawLine, opts: &Options<'_>) -> Result<Outcome, IngestError> {
    let line = raw.line;
    let req = match parse_line(raw, opts.file) {
        Ok(r) => r,
        Err(Ok(e)) => return Ok(Outcome::Invalid(e)),
        // The complete lines before a cut stand; the cut is counted.
        Err(Err(IngestError::Truncated { file, position, .. })) if opts.skip_invalid => {
            let mut e =
                InputError::new(file, position, "json", "the input ends inside this record");
            e.reason = "truncated".to_owned();
            return Ok(Outcome::Invalid(e));
        }
        Err(Err(fatal)) => return Err(fatal),
    };
    let reply_at = match req.messages.last() {
        Some(m) if m.role == Role::Assistant => Some(req.messages.len() - 1),
        _ => None,
    };
    let prompt = &req.messages[..reply_at.unwrap_or(req.messages.len())];
    let keep_ids = opts.block.is_some();
    let mut input = 0usize;
    let mut ids = Vec::new();
    for m in prompt {
        let Tokens { count, ids: mids } = count_parts(opts.tok, &m.parts, keep_ids)?;
        input += count;
        ids.extend_from_slice(&mids);
    }
    let output = match reply_at {
        Some(r) => Some(count_parts(opts.tok, &req.messages[r].parts, false)?.count),
        None => req.max_output.and_then(|n| usize::try_from(n).ok()),
    };
    let at = Position::Line(line);
    let (Some(input_tokens), Some(output_tokens)) =
        (chat::to_i32(input), output.and_then(chat::to_i32))
    else {
        return Ok(Outcome::Invalid(field_error(
            opts.file,
            at,
            "messages",
            "messages",
            format!("more than {} tokens", i32::MAX),
        )));
    };
    let prompt_text = opts.keep_text.then(|| {
        prompt
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.parts.join("\n"))
    });
    let record = TraceRecord {
        request_id: req.id.unwrap_or_else(|| format!("line{line}")),
        arrival_offset_us: None,
        input_tokens,
        output_tokens,
        session_id: req.session,
        turn_index: None,
        think_time_us: None,
        prefix_block_ids: opts.block.map(|b| chat::prefix_block_ids(&ids, b)),
        model: req.model,
        request_kind: None,
        prompt_text: prompt_text.flatten(),
        source_row: i64::try_from(line).unwrap_or(i64::MAX),
        user_id: None,
    };
    Ok(Outcome::Row {
        record,
        from_max_tokens: reply_at.is_none(),
        lone_surrogates: req.lone_surrogates,
    })
}

/// Reads the non-blank lines of one input, handing each to `hand`.
pub(super) fn read_lines(
    input: &Input,
    hand: &mut dyn FnMut(RawLine) -> bool,
) -> Result<(), IngestError> {
    let file = input.name();
    let mut reader = input.open()?;
    let io = |source| IngestError::Io {
        file: file.clone(),
        error: source,
    };
    let (mut line, mut rows, mut any_bytes) = (0u64, 0u64, false);
    let mut buf = Vec::new();
    while let Some(terminated) = chat::read_line(&mut *reader, &mut buf).map_err(io)? {
        line += 1;
        any_bytes = true;
        // A UTF-8 byte order mark is not JSON; editors on Windows add one.
        let start = if line == 1 && buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
            3
        } else {
            0
        };
        if buf[start..].iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let raw = RawLine {
            line,
            rows_before: rows,
            terminated,
            bytes: buf[start..].to_vec(),
        };
        rows += 1;
        if !hand(raw) {
            return Ok(());
        }
    }
    if rows == 0 {
        return Err(IngestError::Empty {
            file,
            what: if any_bytes {
                "only blank lines"
            } else {
                "no bytes"
            }
            .to_owned(),
        });
    }
    Ok(())
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

    let (mut from_max_tokens, mut lone_surrogates) = (0u64, 0u64);
    for input in inputs {
        let file = input.name();
        let opts = Options {
            tok: &tok,
            file: &file,
            keep_text: args.keep_text,
            block,
            skip_invalid: args.skip_invalid,
        };
        chat::run_ordered(
            |hand| read_lines(input, hand),
            |raw| process(raw, &opts),
            |outcome| {
                sink.read_row();
                match outcome {
                    Outcome::Row {
                        record,
                        from_max_tokens: capped,
                        lone_surrogates: s,
                    } => {
                        from_max_tokens += u64::from(capped);
                        lone_surrogates += s as u64;
                        sink.offer(record)
                    }
                    Outcome::Invalid(e) => sink.invalid(e),
                }
            },
        )?;
    }
    let extra = &mut sink.metadata_mut().extra;
    extra.insert(
        "openai_messages.output_from_max_tokens".to_owned(),
        from_max_tokens.to_string(),
    );
    extra.insert(
        "openai_messages.lone_surrogates".to_owned(),
        lone_surrogates.to_string(),
    );
    extra.insert(
        "token_counts".to_owned(),
        "per message, summed over the prompt; chat-template tokens not counted".to_owned(),
    );
    sink.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(json: &str, terminated: bool) -> RawLine {
        RawLine {
            line: 7,
            rows_before: 5,
            terminated,
            bytes: json.as_bytes().to_vec(),
        }
    }

    fn bad(json: &str) -> (String, String) {
        match parse_line(raw(json, true), "m.jsonl") {
            Err(Ok(e)) => (e.to_string(), e.reason),
            other => (format!("{other:?}"), String::new()),
        }
    }

    #[test]
    fn lines_parse_with_parts_roles_and_caps() {
        let r = parse_line(
            raw(
                r#"{"id": 3, "model": "m", "max_tokens": 9, "max_completion_tokens": 12, "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "input_text", "text": "b"}]}, {"role": "assistant", "content": null, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "content": "42"}]}"#,
                true,
            ),
            "m.jsonl",
        )
        .unwrap();
        assert_eq!(r.id.as_deref(), Some("3"));
        assert_eq!(r.max_output, Some(12));
        let roles: Vec<_> = r.messages.iter().map(|m| (m.role, m.parts.len())).collect();
        assert_eq!(
            roles,
            [
                (Role::System, 1),
                (Role::User, 2),
                (Role::Assistant, 2),
                (Role::Tool, 1)
            ]
        );
    }

    #[test]
    fn bad_lines_name_line_and_field() {
        assert_eq!(
            bad(r#"{"messages": [{"role": "user", "content": 5}], "max_tokens": 3}"#),
            (
                "m.jsonl: line 7: messages[0].content: expected a string or a list of text parts, found the number 5".to_owned(),
                "invalid:messages.content".to_owned()
            )
        );
        assert_eq!(
            bad(r#"{"messages": [{"role": "user", "content": "hi"}]}"#).1,
            "invalid:no_output_length"
        );
        assert!(
            bad(r#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "max_tokens": 3}"#)
                .0
                .starts_with("m.jsonl: line 7: messages[0].content[0].type: cannot count the tokens of a \"image_url\" part")
        );
        assert_eq!(
            bad(r#"{"messages": []}"#).0,
            "m.jsonl: line 7: messages: empty"
        );
        assert_eq!(bad(r#"{}"#).0, "m.jsonl: line 7: messages: missing");
        assert_eq!(
            bad(r#"{"messages": [{"role": "bot", "content": "x"}]}"#).0,
            "m.jsonl: line 7: messages[0].role: unknown role \"bot\": expected system, developer, user, assistant, tool or function"
        );
        assert_eq!(
            bad(r#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}"#).0,
            "m.jsonl: line 7: max_tokens: expected a non-negative integer, found the number -1"
        );
        assert_eq!(
            bad(r#"{"messages": [] x}"#).0,
            "m.jsonl: line 7: json: expected `,` or `}` at column 17"
        );
        assert_eq!(
            bad("[1]").0,
            "m.jsonl: line 7: json: expected an object {\"messages\": [...]} on each line, found an array"
        );
    }

    #[test]
    fn a_cut_last_line_is_truncation() {
        match parse_line(raw(r#"{"messages": [{"role": "us"#, false), "m.jsonl") {
            Err(Err(IngestError::Truncated {
                position, complete, ..
            })) => assert_eq!((position, complete), (Position::Line(7), 5)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reply_or_cap_sets_the_output() {
        let tok = Tokenizer::load(&crate::tokenize::TokenizerSpec::O200kBase).unwrap();
        let opts = Options {
            tok: &tok,
            file: "m.jsonl",
            keep_text: true,
            block: None,
            skip_invalid: false,
        };
        let n = |s: &str| tok.count(s).unwrap() as i32;
        let row = |json: &str| match process(raw(json, true), &opts).unwrap() {
            Outcome::Row { record, .. } => record,
            Outcome::Invalid(e) => panic!("{e}"),
        };
        let r = row(
            r#"{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "General Kenobi"}], "max_tokens": 999}"#,
        );
        assert_eq!(
            (r.input_tokens, r.output_tokens),
            (n("S") + n("Hello there"), n("General Kenobi"))
        );
        assert_eq!(r.request_id, "line7");
        assert_eq!(r.source_row, 7);
        assert_eq!(r.prompt_text.as_deref(), Some("Hello there"));
        let r = row(
            r#"{"id": "q", "session_id": "s1", "messages": [{"role": "user", "content": "Hello there"}], "max_completion_tokens": 64}"#,
        );
        assert_eq!((r.input_tokens, r.output_tokens), (n("Hello there"), 64));
        assert_eq!(
            (r.request_id.as_str(), r.session_id.as_deref()),
            ("q", Some("s1"))
        );
    }

    proptest! {
        /// Invariant: no line makes the parser panic.
        #[test]
        fn arbitrary_lines_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), terminated in any::<bool>()) {
            let _ = parse_line(RawLine { line: 1, rows_before: 0, terminated, bytes }, "p.jsonl");
        }

        /// Invariant: junk spliced into a valid line never panics either.
        #[test]
        fn mutated_lines_never_panic(at in 0usize..140, junk in "[\\[\\]{}\",:\\\\a-z0-9 ]{0,8}") {
            let base = r#"{"id": "a", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}, {"role": "assistant", "content": "y"}]}"#;
            let at = at.min(base.len());
            let line = format!("{}{}{}", &base[..at], junk, &base[at..]);
            let _ = parse_line(RawLine { line: 1, rows_before: 0, terminated: true, bytes: line.into_bytes() }, "p.jsonl");
        }
    }
}
