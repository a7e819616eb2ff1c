//! Reading one log record: where its fields are (dotted paths, with the
//! common gateway layouts found by default), its times, the request's
//! messages rendered to text, the response's reply and `usage`.
//!
//! Nothing here keeps content past the call that tokenizes and hashes it;
//! errors name fields and JSON types, never values.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::ingest::config::TimeUnit;

/// Default paths of the request's start time.
pub const START_FIELDS: &[&str] = &[
    "startTime",
    "start_time",
    "request_time",
    "timestamp",
    "created_at",
    "time",
    "ts",
    "@timestamp",
];
/// Default paths of the response's end time.
pub const END_FIELDS: &[&str] = &[
    "endTime",
    "end_time",
    "completion_time",
    "response_time",
    "finished_at",
];
/// Default paths of a session or conversation id.
pub const SESSION_FIELDS: &[&str] = &[
    "session_id",
    "conversation_id",
    "litellm_session_id",
    "thread_id",
    "metadata.session_id",
    "metadata.conversation_id",
    "metadata.litellm_session_id",
];
/// Default paths of the end user's id.
pub const USER_FIELDS: &[&str] = &[
    "user",
    "end_user",
    "user_id",
    "metadata.user_api_key_user_id",
];
/// Default paths of the request body.
pub const REQUEST_FIELDS: &[&str] = &[
    "request",
    "request_body",
    "body",
    "proxy_server_request.body",
    "proxy_server_request",
];
/// Default paths of the response.
pub const RESPONSE_FIELDS: &[&str] = &["response", "response_body", "response.body"];

/// Keys whose string values are labels, not content: they may appear in the
/// output (`model`) or are dropped but are not private (`role`).
pub const LABEL_KEYS: &[&str] = &[
    "model",
    "role",
    "object",
    "type",
    "finish_reason",
    "status",
    "call_type",
    "method",
    "url",
    "stop_reason",
];

pub use crate::ingest::records::kind;

/// A field error: the field's path and what is wrong (no content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field (`request.messages[2].content`).
    pub field: String,
    /// Path without indices, for counting (`request.messages.content`).
    pub reason_field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// An error in `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let mut reason_field = String::with_capacity(field.len());
        let mut depth = 0;
        for c in field.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ if depth == 0 => reason_field.push(c),
                _ => {}
            }
        }
        Self {
            field,
            reason_field,
            message: message.into(),
        }
    }
}

/// A JSON value found at a path, decoded from a JSON string when the log
/// stored an object as text (LiteLLM does for `messages`, `response` and
/// `metadata`).
pub fn lookup<'a>(root: &'a Value, path: &str) -> Option<Cow<'a, Value>> {
    let mut cur: Cow<'a, Value> = Cow::Borrowed(root);
    for key in path.split('.') {
        cur = match cur {
            Cow::Borrowed(v) => step(v, key)?,
            Cow::Owned(v) => Cow::Owned(step(&v, key)?.into_owned()),
        };
    }
    match cur {
        Cow::Borrowed(Value::Null) => None,
        Cow::Owned(Value::Null) => None,
        other => Some(other),
    }
}

fn step<'a>(v: &'a Value, key: &str) -> Option<Cow<'a, Value>> {
    match v {
        Value::Object(map) => map.get(key).map(Cow::Borrowed),
        Value::String(s) => match decode_embedded(s) {
            Some(Value::Object(map)) => map.get(key).cloned().map(Cow::Owned),
            _ => None,
        },
        _ => None,
    }
}

/// The object or array a string holds as JSON text, if it does.
pub fn decode_embedded(s: &str) -> Option<Value> {
    let t = s.trim_start();
    if !(t.starts_with('{') || t.starts_with('[')) {
        return None;
    }
    serde_json::from_str::<Value>(t)
        .ok()
        .filter(|v| v.is_object() || v.is_array())
}

/// A value as an object or array: itself, or decoded from JSON text.
pub fn structured(v: Cow<'_, Value>) -> Option<Cow<'_, Value>> {
    if let Value::String(s) = v.as_ref() {
        return decode_embedded(s).map(Cow::Owned);
    }
    Some(v)
}

/// The first of `paths` present in `root`, with its path.
pub fn first_of<'a>(root: &'a Value, paths: &[&'a str]) -> Option<(&'a str, Cow<'a, Value>)> {
    paths.iter().find_map(|p| lookup(root, p).map(|v| (*p, v)))
}

/// How a time was written, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeForm {
    /// A number (or numeric string) of seconds since the epoch.
    EpochS,
    /// Milliseconds since the epoch.
    EpochMs,
    /// Microseconds since the epoch.
    EpochUs,
    /// Nanoseconds since the epoch.
    EpochNs,
    /// RFC 3339 (or ISO 8601 with a space) with a zone.
    Rfc3339,
    /// A date and time without a zone, read as UTC.
    NaiveUtc,
}

impl TimeForm {
    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::EpochS => "epoch_s",
            Self::EpochMs => "epoch_ms",
            Self::EpochUs => "epoch_us",
            Self::EpochNs => "epoch_ns",
            Self::Rfc3339 => "rfc3339",
            Self::NaiveUtc => "no_zone_read_as_utc",
        }
    }
}

/// Microseconds since the Unix epoch from a log time: a number or numeric
/// string (unit from `unit`, or from the magnitude), or an RFC 3339 / ISO
/// 8601 date-time with any zone (none: UTC).
pub fn parse_time(v: &Value, unit: TimeUnit) -> Result<(i64, TimeForm), String> {
    match v {
        Value::Number(n) => numeric_time(&n.to_string(), unit),
        Value::String(s) => {
            let t = s.trim();
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                numeric_time(t, unit)
            } else {
                text_time(t).ok_or_else(|| {
                    format!(
                        "not a time (a string of {} characters; expected epoch seconds or milliseconds, or RFC 3339)",
                        s.chars().count()
                    )
                })
            }
        }
        other => Err(format!(
            "expected a time (number or RFC 3339 string), found {}",
            kind(other)
        )),
    }
}

fn numeric_time(text: &str, unit: TimeUnit) -> Result<(i64, TimeForm), String> {
    use super::super::records::decimal_to_units;
    let int_digits = text
        .trim_start_matches('-')
        .split(['.', 'e', 'E'])
        .next()
        .map_or(0, str::len);
    let unit = match unit {
        TimeUnit::Auto => {
            // Seconds since 1970 have 10 digits until 2286; milliseconds 13,
            // microseconds 16, nanoseconds 19.
            let exp_form = text.contains(['e', 'E']);
            if exp_form {
                let v: f64 = text.parse().map_err(|_| "not a number".to_owned())?;
                match v.abs() {
                    x if x < 1e11 => TimeUnit::S,
                    x if x < 1e14 => TimeUnit::Ms,
                    x if x < 1e17 => TimeUnit::Us,
                    _ => TimeUnit::Ns,
                }
            } else {
                match int_digits {
                    0..=11 => TimeUnit::S,
                    12..=14 => TimeUnit::Ms,
                    15..=17 => TimeUnit::Us,
                    _ => TimeUnit::Ns,
                }
            }
        }
        u => u,
    };
    let (us, form) = match unit {
        TimeUnit::S | TimeUnit::Auto => (decimal_to_units(text, 6)?, TimeForm::EpochS),
        TimeUnit::Ms => (decimal_to_units(text, 3)?, TimeForm::EpochMs),
        TimeUnit::Us => (decimal_to_units(text, 0)?, TimeForm::EpochUs),
        TimeUnit::Ns => (decimal_to_units(text, 0)? / 1000, TimeForm::EpochNs),
    };
    if us < 0 {
        return Err("a time before 1970".to_owned());
    }
    Ok((us, form))
}

fn text_time(t: &str) -> Option<(i64, TimeForm)> {
    use chrono::{DateTime, NaiveDateTime};
    let iso = t.replacen(' ', "T", 1);
    if let Ok(dt) = DateTime::parse_from_rfc3339(&iso) {
        return Some((dt.timestamp_micros(), TimeForm::Rfc3339));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.f %z"] {
        if let Ok(dt) = DateTime::parse_from_str(&iso, fmt) {
            return Some((dt.timestamp_micros(), TimeForm::Rfc3339));
        }
    }
    let naive = NaiveDateTime::parse_from_str(&iso, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    Some((naive.and_utc().timestamp_micros(), TimeForm::NaiveUtc))
}

/// A non-negative integer count (`usage.prompt_tokens`), accepting integral
/// floats (`12.0`) as some loggers write them.
pub fn count(v: &Value) -> Result<u64, String> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    match v.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => Ok(f as u64),
        Some(f) if f < 0.0 => Err("must not be negative".to_owned()),
        Some(_) => Err("expected a whole number".to_owned()),
        None => Err(format!("expected a number, found {}", kind(v))),
    }
}

/// Token counts a server reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt: Option<u64>,
    /// Completion tokens (reasoning included).
    pub completion: Option<u64>,
    /// Prompt tokens served from the server's prefix cache.
    pub cached: Option<u64>,
    /// Reasoning tokens within the completion.
    pub reasoning: Option<u64>,
}

/// Reads a `usage` object (Chat Completions or Responses API names).
pub fn usage(v: &Value, path: &str) -> Result<Usage, FieldError> {
    let Value::Object(map) = v else {
        return Err(FieldError::new(
            path,
            format!("expected an object, found {}", kind(v)),
        ));
    };
    let get = |names: &[&str]| -> Result<Option<u64>, FieldError> {
        for name in names {
            let mut cur = Some(v);
            for key in name.split('.') {
                cur = cur.and_then(|c| c.get(key));
            }
            match cur {
                None | Some(Value::Null) => continue,
                Some(x) => {
                    return count(x)
                        .map(Some)
                        .map_err(|m| FieldError::new(format!("{path}.{name}"), m));
                }
            }
        }
        Ok(None)
    };
    // Anthropic's `input_tokens` leaves out the prompt tokens read from or
    // written to its cache; the prompt is all three.
    let anthropic = map.contains_key("cache_read_input_tokens")
        || map.contains_key("cache_creation_input_tokens");
    let prompt = if anthropic {
        let parts = [
            get(&["input_tokens"])?,
            get(&["cache_read_input_tokens"])?,
            get(&["cache_creation_input_tokens"])?,
        ];
        parts.iter().any(Option::is_some).then(|| {
            parts
                .iter()
                .flatten()
                .fold(0u64, |a, b| a.saturating_add(*b))
        })
    } else {
        get(&["prompt_tokens", "input_tokens"])?
    };
    Ok(Usage {
        prompt,
        completion: get(&["completion_tokens", "output_tokens"])?,
        cached: get(&[
            "prompt_tokens_details.cached_tokens",
            "input_tokens_details.cached_tokens",
            "cache_read_input_tokens",
        ])?,
        reasoning: get(&[
            "completion_tokens_details.reasoning_tokens",
            "output_tokens_details.reasoning_tokens",
        ])?,
    })
}

/// Roles as rendered; anything else is `other`.
fn role_name(role: &str) -> &'static str {
    match role {
        "system" => "system",
        "developer" => "developer",
        "user" => "user",
        "assistant" => "assistant",
        "tool" => "tool",
        "function" => "function",
        _ => "other",
    }
}

/// Renders one message to the text that is tokenized and hashed: a role
/// line, the text parts, then any tool calls as `name(arguments)`. Images,
/// audio and files become fixed placeholders (their bytes are not prompt
/// tokens a tokenizer could count, and URLs may be private).
pub fn render_message(msg: &Value, path: &str) -> Result<(String, bool), FieldError> {
    let Value::Object(m) = msg else {
        return Err(FieldError::new(
            path,
            format!("expected a message object, found {}", kind(msg)),
        ));
    };
    let role = match m.get("role") {
        Some(Value::String(r)) => role_name(r),
        None | Some(Value::Null) => "user",
        Some(other) => {
            return Err(FieldError::new(
                format!("{path}.role"),
                format!("expected a string, found {}", kind(other)),
            ));
        }
    };
    let mut out = String::with_capacity(64);
    out.push_str("<|");
    out.push_str(role);
    out.push_str("|>\n");
    render_content(m.get("content"), &format!("{path}.content"), &mut out)?;
    render_tool_calls(m, path, &mut out)?;
    out.push('\n');
    Ok((out, role == "assistant"))
}

fn render_content(v: Option<&Value>, path: &str, out: &mut String) -> Result<(), FieldError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) => {
            out.push_str(s);
            Ok(())
        }
        Some(Value::Array(parts)) => {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                match part {
                    Value::String(s) => out.push_str(s),
                    Value::Object(p) => {
                        let ty = p.get("type").and_then(Value::as_str).unwrap_or("text");
                        match ty {
                            "text" | "input_text" | "output_text" => {
                                match p.get("text") {
                                    Some(Value::String(s)) => out.push_str(s),
                                    // Responses API and some SDKs nest it.
                                    Some(Value::Object(t)) => {
                                        if let Some(Value::String(s)) = t.get("value") {
                                            out.push_str(s);
                                        }
                                    }
                                    None | Some(Value::Null) => {}
                                    Some(other) => {
                                        return Err(FieldError::new(
                                            format!("{path}[{i}].text"),
                                            format!("expected a string, found {}", kind(other)),
                                        ));
                                    }
                                }
                            }
                            "refusal" => {
                                if let Some(Value::String(s)) = p.get("refusal") {
                                    out.push_str(s);
                                }
                            }
                            // Anthropic: a tool call in an assistant
                            // message, and its result in a user message.
                            "tool_use" => {
                                let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                                out.push_str(name);
                                out.push('(');
                                if let Some(input) = p.get("input") {
                                    out.push_str(&input.to_string());
                                }
                                out.push(')');
                            }
                            "tool_result" => render_content(
                                p.get("content"),
                                &format!("{path}[{i}].content"),
                                out,
                            )?,
                            "image_url" | "input_image" | "image" => out.push_str("<image>"),
                            "input_audio" | "audio" => out.push_str("<audio>"),
                            "file" | "input_file" => out.push_str("<file>"),
                            _ => out.push_str("<part>"),
                        }
                    }
                    other => {
                        return Err(FieldError::new(
                            format!("{path}[{i}]"),
                            format!("expected a content part object, found {}", kind(other)),
                        ));
                    }
                }
            }
            Ok(())
        }
        Some(other) => Err(FieldError::new(
            path,
            format!(
                "expected a string or a list of parts, found {}",
                kind(other)
            ),
        )),
    }
}

fn render_tool_calls(
    m: &Map<String, Value>,
    path: &str,
    out: &mut String,
) -> Result<(), FieldError> {
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => match m.get("function_call") {
            None | Some(Value::Null) => return Ok(()),
            Some(single) => std::slice::from_ref(single),
        },
        Some(Value::Array(calls)) => calls.as_slice(),
        Some(other) => {
            return Err(FieldError::new(
                format!("{path}.tool_calls"),
                format!("expected a list, found {}", kind(other)),
            ));
        }
    };
    for (i, call) in calls.iter().enumerate() {
        let f = call.get("function").unwrap_or(call);
        let name = f.get("name").and_then(Value::as_str).unwrap_or("");
        let args = match f.get("arguments") {
            Some(Value::String(s)) => Cow::Borrowed(s.as_str()),
            None | Some(Value::Null) => Cow::Borrowed(""),
            Some(other @ Value::Object(_)) => Cow::Owned(other.to_string()),
            Some(other) => {
                return Err(FieldError::new(
                    format!("{path}.tool_calls[{i}].function.arguments"),
                    format!("expected a string, found {}", kind(other)),
                ));
            }
        };
        out.push('\n');
        out.push_str(name);
        out.push('(');
        out.push_str(&args);
        out.push(')');
    }
    Ok(())
}

/// The prompt of a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Rendered messages (tools as a message of their own after the
    /// system messages), and the
    /// index of the last assistant message, if any.
    Messages {
        /// Rendered texts.
        rendered: Vec<String>,
        /// Index in `rendered` of the last assistant message.
        last_assistant: Option<usize>,
    },
    /// A completions prompt as text.
    Text(String),
    /// A completions prompt as token ids.
    TokenIds(Vec<u32>),
}

/// What kind of API the request used, for `request_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
    /// `/v1/responses`.
    Responses,
}

/// A request body, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The prompt.
    pub prompt: Prompt,
    /// Which API.
    pub api: ApiKind,
    /// Whether tools were offered.
    pub tools: bool,
    /// `model`, if present.
    pub model: Option<String>,
    /// `max_completion_tokens`, `max_tokens` or `max_output_tokens`.
    pub max_tokens: Option<u64>,
    /// `stream`.
    pub stream: bool,
}

/// Reads a request body at `path` (`""` for the record itself).
/// `tools_elsewhere` are tool definitions the log keeps outside the body
/// (LiteLLM's `proxy_server_request`), used when the body has none.
pub fn body(v: &Value, path: &str, tools_elsewhere: Option<&Value>) -> Result<Body, FieldError> {
    let at = |f: &str| {
        if path.is_empty() {
            f.to_owned()
        } else {
            format!("{path}.{f}")
        }
    };
    let Value::Object(b) = v else {
        return Err(FieldError::new(
            if path.is_empty() { "json" } else { path },
            format!("expected an object, found {}", kind(v)),
        ));
    };
    let get = |k: &str| -> Option<Cow<'_, Value>> {
        match b.get(k) {
            None | Some(Value::Null) => None,
            Some(x) => structured(Cow::Borrowed(x)),
        }
    };
    let model = match b.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
        _ => None,
    };
    let max_tokens = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| b.get(*k).and_then(|x| count(x).ok()));
    let stream = b.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut rendered = Vec::new();
    let tool_text = get("tools")
        .or_else(|| get("functions"))
        .or_else(|| tools_elsewhere.map(Cow::Borrowed))
        .map(|t| format!("<|tools|>\n{}\n", t.as_ref()));
    // Anthropic's Messages API keeps the system prompt beside the messages.
    if let Some(system) = b.get("system").filter(|x| !x.is_null()) {
        let mut text = String::from("<|system|>\n");
        render_content(Some(system), &at("system"), &mut text)?;
        text.push('\n');
        rendered.push(text);
    }
    let tools = tool_text.is_some();
    let mut last_assistant = None;
    let mut push_messages = |list: &Value, field: &str, rendered: &mut Vec<String>| {
        let Value::Array(msgs) = list else {
            return Err(FieldError::new(
                at(field),
                format!("expected a list of messages, found {}", kind(list)),
            ));
        };
        for (i, m) in msgs.iter().enumerate() {
            let (text, is_assistant) = render_message(m, &format!("{}[{i}]", at(field)))?;
            if is_assistant {
                last_assistant = Some(rendered.len());
            }
            rendered.push(text);
        }
        Ok(())
    };
    if let Some(msgs) = get("messages") {
        push_messages(&msgs, "messages", &mut rendered)?;
        place_tools(&mut rendered, &mut last_assistant, tool_text);
        return Ok(Body {
            prompt: Prompt::Messages {
                rendered,
                last_assistant,
            },
            api: ApiKind::Chat,
            tools,
            model,
            max_tokens,
            stream,
        });
    }
    if let Some(input) = b.get("input").filter(|x| !x.is_null()) {
        // Responses API: `instructions` is the system prompt; `input` a
        // string or a list of message items.
        if let Some(Value::String(ins)) = b.get("instructions") {
            rendered.push(format!("<|system|>\n{ins}\n"));
        }
        match input {
            Value::String(s) => rendered.push(format!("<|user|>\n{s}\n")),
            list => push_messages(list, "input", &mut rendered)?,
        }
        place_tools(&mut rendered, &mut last_assistant, tool_text);
        return Ok(Body {
            prompt: Prompt::Messages {
                rendered,
                last_assistant,
            },
            api: ApiKind::Responses,
            tools,
            model,
            max_tokens,
            stream,
        });
    }
    let prompt = match b.get("prompt") {
        Some(Value::String(s)) => Prompt::Text(s.clone()),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => Prompt::Text(s.clone()),
            [] => Prompt::Text(String::new()),
            [first, ..] if first.is_number() => {
                let mut ids = Vec::with_capacity(items.len());
                for (i, x) in items.iter().enumerate() {
                    let id = x
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            FieldError::new(
                                format!("{}[{i}]", at("prompt")),
                                format!("expected a token id, found {}", kind(x)),
                            )
                        })?;
                    ids.push(id);
                }
                Prompt::TokenIds(ids)
            }
            _ => {
                return Err(FieldError::new(
                    at("prompt"),
                    format!(
                        "a list of {} prompts (a batched completion) is not one request",
                        items.len()
                    ),
                ));
            }
        },
        Some(other) if !other.is_null() => {
            return Err(FieldError::new(
                at("prompt"),
                format!("expected a string or token ids, found {}", kind(other)),
            ));
        }
        _ => {
            return Err(FieldError::new(
                at("messages"),
                "missing: the request has none of messages, prompt or input",
            ));
        }
    };
    Ok(Body {
        prompt,
        api: ApiKind::Completion,
        tools,
        model,
        max_tokens,
        stream,
    })
}

/// Puts the tool definitions after the leading system (or developer)
/// messages, where most chat templates render them, so requests with one
/// system prompt share it whether or not they offer tools.
fn place_tools(
    rendered: &mut Vec<String>,
    last_assistant: &mut Option<usize>,
    tools: Option<String>,
) {
    let Some(tools) = tools else { return };
    let at = rendered
        .iter()
        .take_while(|m| m.starts_with("<|system|>") || m.starts_with("<|developer|>"))
        .count();
    rendered.insert(at, tools);
    if let Some(i) = last_assistant.as_mut()
        && *i >= at
    {
        *i += 1;
    }
}

/// Whether an object looks like a request body.
pub fn is_body(v: &Value) -> bool {
    let Value::Object(m) = v else { return false };
    ["messages", "prompt", "input"]
        .iter()
        .any(|k| m.get(*k).is_some_and(|x| !x.is_null()))
}

/// The text of a reply rendered by [`reply`] (without its role line), whose
/// tokens are the output when the log has no usage.
pub fn reply_text(rendered: &str) -> &str {
    let body = rendered.strip_prefix("<|assistant|>\n").unwrap_or(rendered);
    body.strip_suffix('\n').unwrap_or(body)
}

/// What a response says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// The reply rendered as an assistant message (text and tool calls),
    /// when the response has one.
    pub rendered: Option<String>,
    /// `usage`, if the response has it.
    pub usage: Option<Usage>,
    /// Whether the response is an error.
    pub failed: bool,
}

/// Reads a response: a Chat Completions or Completions object, a Responses
/// API object, a list of stream chunks, or the raw SSE text of a stream.
pub fn reply(v: &Value, path: &str) -> Result<Reply, FieldError> {
    match v {
        Value::Object(_) => {
            let mut r = Reply::default();
            let mut acc = StreamAcc::default();
            one_object(v, path, &mut r, &mut acc)?;
            acc.finish(&mut r);
            Ok(r)
        }
        Value::Array(chunks) => {
            let mut r = Reply::default();
            let mut acc = StreamAcc::default();
            for (i, c) in chunks.iter().enumerate() {
                one_object(c, &format!("{path}[{i}]"), &mut r, &mut acc)?;
            }
            acc.finish(&mut r);
            Ok(r)
        }
        Value::String(s) if s.trim_start().starts_with("data:") => {
            let mut r = Reply::default();
            let mut acc = StreamAcc::default();
            for (i, line) in s.lines().enumerate() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" || data.is_empty() {
                    continue;
                }
                // A chunk that is not JSON is skipped: streams carry keep-alive
                // comments and cut chunks; the usage chunk is what counts.
                if let Ok(c) = serde_json::from_str::<Value>(data) {
                    one_object(&c, &format!("{path}[chunk {i}]"), &mut r, &mut acc)?;
                }
            }
            acc.finish(&mut r);
            Ok(r)
        }
        Value::String(s) => match decode_embedded(s) {
            Some(inner) => reply(&inner, path),
            // Some gateways log only the reply's text.
            None => Ok(Reply {
                rendered: Some(format!("<|assistant|>\n{s}\n")),
                ..Reply::default()
            }),
        },
        other => Err(FieldError::new(
            path,
            format!("expected a response object, found {}", kind(other)),
        )),
    }
}

/// Folds a usage object into the reply's: stream chunks before the last
/// carry `usage: null` or zeros on some servers, and Anthropic streams send
/// the prompt count first and the output count last. A field's latest
/// non-zero value wins.
fn merge_usage(r: &mut Reply, new: Usage) {
    let Some(old) = r.usage.as_mut() else {
        r.usage = Some(new);
        return;
    };
    let pick = |old: &mut Option<u64>, new: Option<u64>| {
        if new.is_some_and(|n| n > 0) || old.is_none() {
            *old = new.or(*old);
        }
    };
    pick(&mut old.prompt, new.prompt);
    pick(&mut old.completion, new.completion);
    pick(&mut old.cached, new.cached);
    pick(&mut old.reasoning, new.reasoning);
}

/// Stream deltas gathered over the chunks of one response.
#[derive(Default)]
struct StreamAcc {
    any: bool,
    text: String,
    /// Tool calls by their `index`: name and arguments so far.
    calls: Vec<(String, String)>,
}

impl StreamAcc {
    /// Renders the gathered reply the way [`render_message`] renders the
    /// same reply when a client sends it back as history.
    fn finish(self, r: &mut Reply) {
        if !self.any || r.rendered.is_some() {
            return;
        }
        let mut out = format!("<|assistant|>\n{}", self.text);
        for (name, args) in &self.calls {
            out.push('\n');
            out.push_str(name);
            out.push('(');
            out.push_str(args);
            out.push(')');
        }
        out.push('\n');
        r.rendered = Some(out);
    }
}

/// Longest run of tool calls a stream may announce (`index` beyond it is
/// refused rather than allocated).
const MAX_STREAM_CALLS: usize = 1024;

/// Folds one response object or stream chunk into `r`; stream deltas go to
/// `acc`.
fn one_object(v: &Value, path: &str, r: &mut Reply, acc: &mut StreamAcc) -> Result<(), FieldError> {
    let Value::Object(m) = v else {
        return Err(FieldError::new(
            path,
            format!("expected an object, found {}", kind(v)),
        ));
    };
    if m.get("error").is_some_and(|e| !e.is_null()) {
        r.failed = true;
    }
    if let Some(code) = m.get("status_code").and_then(Value::as_u64)
        && code >= 400
    {
        r.failed = true;
    }
    // A Batch output line nests the response body.
    if let Some(body) = m.get("body").filter(|b| b.is_object()) {
        return one_object(body, &format!("{path}.body"), r, acc);
    }
    if let Some(u) = m.get("usage").filter(|u| !u.is_null()) {
        merge_usage(r, usage(u, &format!("{path}.usage"))?);
    }
    if let Some(Value::Array(choices)) = m.get("choices") {
        // The first choice is the reply that a resent history carries.
        if let Some(c) = choices.first() {
            let cpath = format!("{path}.choices[0]");
            if let Some(msg) = c.get("message").filter(|x| x.is_object()) {
                let (rendered, _) = render_message(msg, &format!("{cpath}.message"))?;
                let rendered = rendered.replacen("<|user|>", "<|assistant|>", 1);
                r.rendered = Some(rendered);
            } else if let Some(delta) = c.get("delta").filter(|x| x.is_object()) {
                acc.any = true;
                if let Some(Value::String(s)) = delta.get("content") {
                    acc.text.push_str(s);
                }
                if let Some(Value::Array(calls)) = delta.get("tool_calls") {
                    for (k, call) in calls.iter().enumerate() {
                        let index = call
                            .get("index")
                            .and_then(Value::as_u64)
                            .and_then(|i| usize::try_from(i).ok())
                            .unwrap_or(k);
                        if index >= MAX_STREAM_CALLS {
                            return Err(FieldError::new(
                                format!("{cpath}.delta.tool_calls[{k}].index"),
                                format!("above {MAX_STREAM_CALLS}"),
                            ));
                        }
                        if acc.calls.len() <= index {
                            acc.calls.resize(index + 1, (String::new(), String::new()));
                        }
                        if let Some(f) = call.get("function") {
                            if let Some(Value::String(n)) = f.get("name") {
                                acc.calls[index].0.push_str(n);
                            }
                            if let Some(Value::String(a)) = f.get("arguments") {
                                acc.calls[index].1.push_str(a);
                            }
                        }
                    }
                }
            } else if let Some(Value::String(s)) = c.get("text") {
                acc.any = true;
                acc.text.push_str(s);
            }
        }
    }
    // Anthropic: the reply is the message itself, its content a list of
    // blocks; streamed, `content_block_delta` events carry the text.
    if m.get("type").and_then(Value::as_str) == Some("message") && m.contains_key("content") {
        let (rendered, _) = render_message(v, path)?;
        r.rendered = Some(rendered);
    }
    match m.get("type").and_then(Value::as_str) {
        Some("message_start") => {
            if let Some(u) = m.get("message").and_then(|x| x.get("usage")) {
                merge_usage(r, usage(u, &format!("{path}.message.usage"))?);
            }
        }
        Some("content_block_delta") => {
            acc.any = true;
            if let Some(Value::String(t)) = m.get("delta").and_then(|d| d.get("text")) {
                acc.text.push_str(t);
            }
        }
        _ => {}
    }
    // Responses API: `output` items of type message with output_text parts.
    if let Some(Value::Array(items)) = m.get("output") {
        let mut out = String::from("<|assistant|>\n");
        for item in items {
            if let Some(Value::Array(parts)) = item.get("content") {
                for p in parts {
                    if let Some(Value::String(s)) = p.get("text") {
                        out.push_str(s);
                    }
                }
            }
            if item.get("type").and_then(Value::as_str) == Some("function_call") {
                let name = item.get("name").and_then(Value::as_str).unwrap_or("");
                let args = item.get("arguments").and_then(Value::as_str).unwrap_or("");
                out.push('\n');
                out.push_str(name);
                out.push('(');
                out.push_str(args);
                out.push(')');
            }
        }
        out.push('\n');
        r.rendered = Some(out);
    }
    Ok(())
}

/// Every string value of 8 or more characters in `v` outside label keys
/// ([`LABEL_KEYS`] and `skip`): what must not appear in the output.
/// Strings that hold JSON are looked into as well.
pub fn content_strings<'a>(v: &'a Value, skip: &[&str], out: &mut Vec<Cow<'a, str>>) {
    match v {
        Value::String(s) if s.chars().nth(7).is_some() => {
            out.push(Cow::Borrowed(s.as_str()));
            if let Some(inner) = decode_embedded(s) {
                let mut nested = Vec::new();
                content_strings(&inner, skip, &mut nested);
                out.extend(nested.into_iter().map(|c| Cow::Owned(c.into_owned())));
            }
        }
        Value::Array(items) => {
            for x in items {
                content_strings(x, skip, out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                if x.is_string() && (LABEL_KEYS.contains(&k.as_str()) || skip.contains(&k.as_str()))
                {
                    continue;
                }
                content_strings(x, skip, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn times_in_every_form() {
        let a = TimeUnit::Auto;
        let want = 1_717_000_000_250_000;
        assert_eq!(parse_time(&json!(1_717_000_000.25), a).unwrap().0, want);
        assert_eq!(parse_time(&json!(1_717_000_000_250u64), a).unwrap().0, want);
        assert_eq!(parse_time(&json!("1717000000.25"), a).unwrap().0, want);
        assert_eq!(
            parse_time(&json!("2024-05-29T16:26:40.25Z"), a).unwrap(),
            (want, TimeForm::Rfc3339)
        );
        assert_eq!(
            parse_time(&json!("2024-05-29T18:26:40.250+02:00"), a)
                .unwrap()
                .0,
            want
        );
        assert_eq!(
            parse_time(&json!("2024-05-29 16:26:40.250000"), a).unwrap(),
            (want, TimeForm::NaiveUtc)
        );
        assert_eq!(
            parse_time(&json!("2024-05-29T09:26:40.25-0700"), a)
                .unwrap()
                .0,
            want
        );
        assert_eq!(
            parse_time(&json!(1_717_000_000_250_000_000u64), a).unwrap(),
            (want, TimeForm::EpochNs)
        );
        assert_eq!(
            parse_time(&json!(1_717_000_000_250u64), TimeUnit::Ms)
                .unwrap()
                .0,
            want
        );
        let e = parse_time(&json!("hello@example.com"), a).unwrap_err();
        assert!(!e.contains("hello"), "{e}");
        assert!(parse_time(&json!([1]), a).is_err());
        assert!(parse_time(&json!(-5), a).is_err());
    }

    #[test]
    fn paths_look_into_json_strings() {
        let v = json!({"metadata": "{\"session_id\": \"abc\"}", "a": {"b": 3}});
        assert_eq!(
            lookup(&v, "metadata.session_id").unwrap().as_ref(),
            &json!("abc")
        );
        assert_eq!(lookup(&v, "a.b").unwrap().as_ref(), &json!(3));
        assert!(lookup(&v, "a.c").is_none());
        assert!(lookup(&v, "a.b.c").is_none());
    }

    #[test]
    fn bodies_render_tools_messages_and_parts() {
        let b = json!({
            "model": "m", "max_tokens": 7, "stream": true,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:..."}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{\"x\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ]
        });
        let body = body(&b, "request", None).unwrap();
        assert_eq!(body.max_tokens, Some(7));
        assert!(body.tools && body.stream);
        let Prompt::Messages {
            rendered,
            last_assistant,
        } = body.prompt
        else {
            panic!("messages")
        };
        assert_eq!(rendered.len(), 5);
        assert_eq!(last_assistant, Some(3));
        assert!(
            rendered[1].starts_with("<|tools|>\n"),
            "tools after the system prompt"
        );
        assert_eq!(rendered[2], "<|user|>\nhi\n<image>\n");
        assert_eq!(rendered[3], "<|assistant|>\n\nget({\"x\":1})\n");
        let e = super::body(
            &json!({"messages": [{"role": "user", "content": 5}]}),
            "request",
            None,
        )
        .unwrap_err();
        assert_eq!(e.field, "request.messages[0].content");
        assert_eq!(e.reason_field, "request.messages.content");
    }

    #[test]
    fn replies_from_objects_chunks_and_sse_text_render_alike() {
        let whole = json!({"choices": [{"message": {"role": "assistant", "content": "Hello there"}}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 2,
                                     "prompt_tokens_details": {"cached_tokens": 3}}});
        let r = reply(&whole, "response").unwrap();
        assert_eq!(r.rendered.as_deref(), Some("<|assistant|>\nHello there\n"));
        assert_eq!(r.usage.unwrap().cached, Some(3));
        let chunks = json!([
            {"choices": [{"delta": {"role": "assistant", "content": "Hello"}}], "usage": null},
            {"choices": [{"delta": {"content": " there"}}]},
            {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
        ]);
        let c = reply(&chunks, "response").unwrap();
        assert_eq!(c.rendered, r.rendered);
        assert_eq!(c.usage.unwrap().completion, Some(2));
        let sse = json!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\" there\"}}]}\n\ndata: [DONE]\n"
        );
        let s = reply(&sse, "response").unwrap();
        assert_eq!(s.rendered, r.rendered);
        assert!(s.usage.is_none());
        let err = reply(&json!({"error": {"message": "rate limited"}}), "response").unwrap();
        assert!(err.failed);
    }

    #[test]
    fn anthropic_bodies_replies_and_usage() {
        let b = json!({"model": "claude", "max_tokens": 100, "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": "Weather?"},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "4 C"}]}]});
        let body = body(&b, "", None).unwrap();
        let Prompt::Messages {
            rendered,
            last_assistant,
        } = body.prompt
        else {
            panic!("messages")
        };
        assert_eq!(rendered[0], "<|system|>\nBe brief.\n");
        assert_eq!(rendered[2], "<|assistant|>\nweather({\"city\":\"Oslo\"})\n");
        assert_eq!(rendered[3], "<|user|>\n4 C\n");
        assert_eq!(last_assistant, Some(2));
        let resp = json!({"id": "msg_1", "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": "Cold."}],
            "usage": {"input_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 3}});
        let r = reply(&resp, "response").unwrap();
        assert_eq!(r.rendered.as_deref(), Some("<|assistant|>\nCold.\n"));
        let u = r.usage.unwrap();
        assert_eq!(
            (u.prompt, u.completion, u.cached),
            (Some(125), Some(3), Some(100))
        );
        let events = json!([
            {"type": "message_start", "message": {"usage": {"input_tokens": 20, "cache_read_input_tokens": 0, "output_tokens": 1}}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Co"}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ld."}},
            {"type": "message_delta", "usage": {"output_tokens": 3}}
        ]);
        let s = reply(&events, "response").unwrap();
        assert_eq!(s.rendered, r.rendered);
        assert_eq!(
            s.usage.map(|u| (u.prompt, u.completion)),
            Some((Some(20), Some(3)))
        );
    }

    #[test]
    fn content_strings_skip_labels_and_look_into_json_text() {
        let v = json!({"model": "long-model-name", "role": "assistant",
                       "metadata": "{\"secret\": \"sk-12345678\"}", "n": 12345678,
                       "short": "1234567"});
        let mut out = Vec::new();
        content_strings(&v, &[], &mut out);
        let got: Vec<&str> = out.iter().map(|c| c.as_ref()).collect();
        assert_eq!(got, ["{\"secret\": \"sk-12345678\"}", "sk-12345678"]);
    }
}
