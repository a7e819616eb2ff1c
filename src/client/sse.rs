//! Incremental Server-Sent Events parsing, and the OpenAI streaming chunk
//! fields llm-replay reads.
//!
//! Invariant (property-tested): feeding a stream in any split into pieces
//! yields exactly the events that feeding it whole yields.

use serde::Deserialize;

/// One SSE event's `data` (multi-line data joined with `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The data field.
    pub data: String,
}

/// An incremental SSE parser: push bytes as they arrive, take events.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of an incomplete line.
    line: Vec<u8>,
    /// Data lines of the event being read.
    data: Vec<String>,
    /// Bytes in `data`.
    data_bytes: usize,
    /// Whether the event has any data field.
    has_data: bool,
    /// The last byte pushed was `\r` (a `\n` right after it ends nothing).
    after_cr: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `chunk`; complete events are appended to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match memchr::memchr2(b'\n', b'\r', rest) {
                None => {
                    self.line.extend_from_slice(rest);
                    return;
                }
                Some(i) => {
                    self.line.extend_from_slice(&rest[..i]);
                    self.after_cr = rest[i] == b'\r';
                    rest = &rest[i + 1..];
                    self.end_line(out);
                }
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            // A blank line dispatches the event.
            if self.has_data {
                out.push(SseEvent {
                    data: self.data.join("\n"),
                });
            }
            self.data.clear();
            self.data_bytes = 0;
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return; // comment
        }
        let (field, value) = match memchr::memchr(b':', &line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &b""[..]),
        };
        if field == b"data" {
            self.data_bytes += value.len();
            self.data.push(String::from_utf8_lossy(value).into_owned());
            self.has_data = true;
        }
        // event, id and retry carry nothing llm-replay uses.
    }

    /// Bytes held for the event being read: its data lines so far and the
    /// unfinished line.
    pub fn pending_bytes(&self) -> usize {
        self.line.len() + self.data_bytes
    }

    /// Whether bytes of an unfinished event remain (a stream that ends here
    /// was cut).
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }
}

/// What one streamed JSON chunk says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkInfo {
    /// The chunk carries generated content (text, content or reasoning).
    pub has_content: bool,
    /// `usage.prompt_tokens`.
    pub prompt_tokens: Option<u32>,
    /// `usage.completion_tokens`.
    pub completion_tokens: Option<u32>,
    /// A `finish_reason` was set.
    pub finished: bool,
    /// The server sent an error object.
    pub error: Option<String>,
    /// The event ends the stream (Responses `response.completed` or
    /// `response.incomplete`, Messages `message_stop`); chat and
    /// completions end with `[DONE]` instead.
    pub done: bool,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    finish_reason: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<std::borrow::Cow<'a, str>>,
}

/// Token counts of an OpenAI `usage` object.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: Option<u32>,
    /// Completion tokens.
    #[serde(default)]
    pub completion_tokens: Option<u32>,
}

/// Parses one chunk's JSON (completions or chat); `Err` carries the JSON
/// error for a garbled chunk.
pub fn parse_chunk(data: &str) -> Result<ChunkInfo, String> {
    parse_chunk_into(data, None)
}

/// [`parse_chunk`], appending the chunk's reply text (completions `text`,
/// chat `delta.content`; not reasoning) to `reply` when one is given.
pub fn parse_chunk_into(data: &str, reply: Option<&mut String>) -> Result<ChunkInfo, String> {
    let chunk: Chunk<'_> = serde_json::from_str(data).map_err(|e| e.to_string())?;
    let mut info = ChunkInfo::default();
    if let Some(reply) = reply {
        for c in chunk.choices.iter().take(1) {
            if let Some(t) = &c.text {
                reply.push_str(t);
            }
            if let Some(t) = c.delta.as_ref().and_then(|d| d.content.as_ref()) {
                reply.push_str(t);
            }
        }
    }
    for c in &chunk.choices {
        let non_empty =
            |s: &Option<std::borrow::Cow<'_, str>>| s.as_ref().is_some_and(|s| !s.is_empty());
        if non_empty(&c.text) {
            info.has_content = true;
        }
        if let Some(d) = &c.delta
            && (non_empty(&d.content) || non_empty(&d.reasoning_content) || non_empty(&d.reasoning))
        {
            info.has_content = true;
        }
        if c.finish_reason.as_ref().is_some_and(|f| !f.is_null()) {
            info.finished = true;
        }
    }
    if let Some(u) = chunk.usage {
        info.prompt_tokens = u.prompt_tokens;
        info.completion_tokens = u.completion_tokens;
    }
    if let Some(e) = chunk.error {
        info.error = Some(
            e.get("message")
                .and_then(|m| m.as_str())
                .map_or_else(|| e.to_string(), str::to_owned),
        );
    }
    Ok(info)
}

/// The text of an error object: its `message`, else the whole object.
fn error_text(e: &serde_json::Value) -> String {
    e.get("message")
        .and_then(|m| m.as_str())
        .map_or_else(|| e.to_string(), str::to_owned)
}

/// A count in a usage object.
fn count(usage: Option<&serde_json::Value>, key: &str) -> Option<u32> {
    usage
        .and_then(|u| u.get(key))
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

/// Parses one OpenAI Responses streaming event (`type` in its data):
/// `response.output_text.delta` is content (and reply text), reasoning
/// deltas are content, `response.completed` and `response.incomplete`
/// (stopped at `max_output_tokens`) end the stream with usage,
/// `response.failed` and `error` are errors; other events carry nothing
/// llm-replay uses.
pub fn parse_responses_event(data: &str, reply: Option<&mut String>) -> Result<ChunkInfo, String> {
    let v: serde_json::Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
    let mut info = ChunkInfo::default();
    let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or_default();
    let delta = || v.get("delta").and_then(|d| d.as_str()).unwrap_or_default();
    match kind {
        "response.output_text.delta" => {
            let d = delta();
            info.has_content = !d.is_empty();
            if let Some(reply) = reply {
                reply.push_str(d);
            }
        }
        "response.reasoning_text.delta" | "response.reasoning_summary_text.delta" => {
            info.has_content = !delta().is_empty();
        }
        "response.completed" | "response.incomplete" => {
            let usage = v.get("response").and_then(|r| r.get("usage"));
            info.prompt_tokens = count(usage, "input_tokens");
            info.completion_tokens = count(usage, "output_tokens");
            info.finished = true;
            info.done = true;
        }
        "response.failed" => {
            let err = v.get("response").and_then(|r| r.get("error"));
            info.error = Some(err.map_or_else(|| "response.failed".to_owned(), error_text));
        }
        "error" => {
            info.error = Some(v.get("error").map_or_else(|| error_text(&v), error_text));
        }
        _ => {}
    }
    Ok(info)
}

/// Parses one Anthropic Messages streaming event (`type` in its data):
/// `message_start` carries the input tokens, `content_block_delta` text
/// or thinking is content, `message_delta` the stop reason and output
/// tokens, `message_stop` ends the stream, `error` is an error; `ping`
/// and block starts and stops carry nothing llm-replay uses.
pub fn parse_messages_event(data: &str, reply: Option<&mut String>) -> Result<ChunkInfo, String> {
    let v: serde_json::Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
    let mut info = ChunkInfo::default();
    match v.get("type").and_then(|t| t.as_str()).unwrap_or_default() {
        "message_start" => {
            let usage = v.get("message").and_then(|m| m.get("usage"));
            info.prompt_tokens = count(usage, "input_tokens");
        }
        "content_block_delta" => {
            let d = v.get("delta");
            let field = |k: &str| d.and_then(|d| d.get(k)).and_then(|t| t.as_str());
            if let Some(text) = field("text") {
                info.has_content = !text.is_empty();
                if let Some(reply) = reply {
                    reply.push_str(text);
                }
            } else if let Some(thinking) = field("thinking") {
                info.has_content = !thinking.is_empty();
            }
        }
        "message_delta" => {
            info.completion_tokens = count(v.get("usage"), "output_tokens");
            info.finished = v
                .get("delta")
                .and_then(|d| d.get("stop_reason"))
                .is_some_and(|r| !r.is_null());
        }
        "message_stop" => info.done = true,
        "error" => {
            info.error = Some(v.get("error").map_or_else(|| error_text(&v), error_text));
        }
        _ => {}
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse_all(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for piece in pieces {
            p.push(piece, &mut out);
        }
        out
    }

    const STREAM: &str = ": keep-alive\r\n\r\ndata: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: line1\ndata: line2\r\n\r\nevent: x\nid: 3\ndata:nospace\n\ndata: [DONE]\n\n";

    #[test]
    fn parses_events_comments_crlf_and_multiline_data() {
        let events = parse_all(&[STREAM.as_bytes()]);
        let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(
            data,
            vec![
                "{\"choices\":[{\"text\":\"a\"}]}",
                "line1\nline2",
                "nospace",
                "[DONE]"
            ]
        );
    }

    #[test]
    fn a_cut_event_is_reported_partial() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(b"data: {\"choi", &mut out);
        assert!(out.is_empty());
        assert!(p.has_partial_event());
    }

    proptest! {
        /// Any split of a valid stream gives the same events as the whole.
        #[test]
        fn any_split_gives_the_same_events(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..12)) {
            let bytes = STREAM.as_bytes();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts {
                pieces.push(&bytes[last..c]);
                last = c;
            }
            pieces.push(&bytes[last..]);
            prop_assert_eq!(parse_all(&pieces), parse_all(&[bytes]));
        }

        /// Arbitrary bytes never panic the parser.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let events = parse_all(&[&bytes]);
            for e in events {
                let _ = parse_chunk(&e.data);
            }
        }
    }

    #[test]
    fn chunk_fields_of_completions_and_chat() {
        let c = parse_chunk(r#"{"choices":[{"text":"hi","finish_reason":null}]}"#).unwrap();
        assert!(c.has_content && !c.finished);
        let role_only =
            parse_chunk(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#).unwrap();
        assert!(!role_only.has_content);
        let chat = parse_chunk(r#"{"choices":[{"delta":{"content":"x"}}]}"#).unwrap();
        assert!(chat.has_content);
        let reasoning =
            parse_chunk(r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#).unwrap();
        assert!(reasoning.has_content);
        let usage = parse_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
        )
        .unwrap();
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (Some(12), Some(3))
        );
        let fin = parse_chunk(r#"{"choices":[{"text":"","finish_reason":"length"}]}"#).unwrap();
        assert!(fin.finished && !fin.has_content);
        let err = parse_chunk(r#"{"error":{"message":"overloaded","code":503}}"#).unwrap();
        assert_eq!(err.error.as_deref(), Some("overloaded"));
        assert!(parse_chunk("{not json").is_err());
    }

    #[test]
    fn responses_events() {
        let mut reply = String::new();
        let d = parse_responses_event(
            r#"{"type":"response.output_text.delta","item_id":"m","output_index":0,"content_index":0,"delta":"Hi"}"#,
            Some(&mut reply),
        )
        .unwrap();
        assert!(d.has_content && !d.done);
        let created = parse_responses_event(
            r#"{"type":"response.created","response":{"id":"r","status":"in_progress"}}"#,
            None,
        )
        .unwrap();
        assert_eq!(created, ChunkInfo::default());
        let end = parse_responses_event(
            r#"{"type":"response.incomplete","response":{"status":"incomplete","usage":{"input_tokens":9,"output_tokens":4,"total_tokens":13}}}"#,
            None,
        )
        .unwrap();
        assert!(end.done && end.finished);
        assert_eq!(
            (end.prompt_tokens, end.completion_tokens),
            (Some(9), Some(4))
        );
        let failed = parse_responses_event(
            r#"{"type":"response.failed","response":{"error":{"code":"server_error","message":"boom"}}}"#,
            None,
        )
        .unwrap();
        assert_eq!(failed.error.as_deref(), Some("boom"));
        let err =
            parse_responses_event(r#"{"type":"error","code":"x","message":"bad"}"#, None).unwrap();
        assert_eq!(err.error.as_deref(), Some("bad"));
        assert_eq!(reply, "Hi");
        assert!(parse_responses_event("{", None).is_err());
    }

    #[test]
    fn messages_events() {
        let mut reply = String::new();
        let start = parse_messages_event(
            r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":25,"output_tokens":1}}}"#,
            None,
        )
        .unwrap();
        assert_eq!(start.prompt_tokens, Some(25));
        let text = parse_messages_event(
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
            Some(&mut reply),
        )
        .unwrap();
        assert!(text.has_content);
        let thinking = parse_messages_event(
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            Some(&mut reply),
        )
        .unwrap();
        assert!(thinking.has_content);
        let delta = parse_messages_event(
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":15}}"#,
            None,
        )
        .unwrap();
        assert!(delta.finished && !delta.done);
        assert_eq!(delta.completion_tokens, Some(15));
        assert!(
            parse_messages_event(r#"{"type":"message_stop"}"#, None)
                .unwrap()
                .done
        );
        assert_eq!(
            parse_messages_event(r#"{"type":"ping"}"#, None).unwrap(),
            ChunkInfo::default()
        );
        let err = parse_messages_event(
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            None,
        )
        .unwrap();
        assert_eq!(err.error.as_deref(), Some("Overloaded"));
        assert_eq!(reply, "Hello");
    }

    #[test]
    fn reply_text_is_content_not_reasoning() {
        let mut reply = String::new();
        for data in [
            r#"{"choices":[{"delta":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#,
            r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"text":"lo"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
        ] {
            parse_chunk_into(data, Some(&mut reply)).unwrap();
        }
        assert_eq!(reply, "Hello");
    }
}
