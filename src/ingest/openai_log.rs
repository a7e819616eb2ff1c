//! Ingest of `openai-log`: production request logs into a scrubbed trace.
//!
//! # Inputs
//!
//! JSON lines (plain or `.gz`, several files, or stdin), one request each,
//! in any of these shapes:
//! - a gateway's request/response pair: a start time, the request body
//!   under `request` (or `request_body`, `body`, `proxy_server_request.body`)
//!   and the response under `response` (or `response_body`): an object, a
//!   list of stream chunks, or the raw `data:` text of a stream;
//! - a LiteLLM spend log: `startTime`, `endTime`, `model`, `messages`,
//!   `response`, `usage` or top-level `prompt_tokens`/`completion_tokens`,
//!   `session_id`, `user`, `api_key`, `metadata` (values stored as JSON
//!   text are read as JSON);
//! - an OpenAI Batch API input file (`custom_id`, `body`), joined by
//!   `custom_id` to the output files given with `--batch-output`
//!   (`response.body.usage`). Batch requests have no arrival times.
//!
//! Chat Completions (`messages`), Completions (`prompt`, text or token ids),
//! Responses API (`input`, `instructions`) and Anthropic Messages API
//! (`system` beside `messages`, content blocks, cache-split `usage`) bodies
//! are read.
//!
//! # What a row holds
//!
//! - `request_id`: `line{N}` (or `f{K}:line{N}` over several files), never
//!   the log's own request id; `source_row` the line.
//! - `arrival_offset_us`: start time minus the first start time. Times are
//!   epoch seconds (with a fraction), milliseconds, microseconds or
//!   nanoseconds (by magnitude, or `--time-unit`), or RFC 3339 / ISO 8601
//!   with any zone (none: UTC). Rows are sorted by arrival, whatever order
//!   the log was written in (gateways write at completion).
//! - `input_tokens` / `output_tokens`: the server's `usage` where the log
//!   has it; otherwise the tokenizer's count of the rendered prompt and of
//!   the reply, and for a reply that was not logged, the request's
//!   `max_tokens`. Which source each count came from, and how often the
//!   server's count and the tokenizer's differ by more than 10%, is in the
//!   metadata (`openai_log.stats`).
//! - `prefix_block_ids`: the prompt (tools, then every message with its
//!   role, rendered to text) is tokenized and cut into `--block-size`-token
//!   blocks (default 512); each block gets a keyed hash chained over the
//!   blocks before it, renumbered to small integers in first-seen order.
//!   Two requests share a leading block id exactly when they share that
//!   many leading tokens. Where the server's prompt count and the
//!   tokenizer's disagree, the list is cut or padded with fresh ids to fit
//!   the `input_tokens` rule of the format.
//! - `session_id`: a keyed hash of the session or conversation id (from
//!   `--session-field` or the usual names); a request without one whose
//!   messages resend an earlier request's messages and reply joins that
//!   request's session; any other request starts a session of its own.
//!   `turn_index` counts the session's requests; `think_time_us` is the
//!   gap from the previous request's end to this start (null where the end
//!   is unknown or the two overlap).
//! - `user_id`: a keyed hash of the end user (`--user-field`).
//! - `model`: as logged, or with `--hash-model` a keyed hash. `request_kind`: `chat`, `completion` or
//!   `responses`, with `+tools` when tools were offered.
//!
//! # Scrubbing
//!
//! Not an option. No text, reply, tool definition, user, metadata, key,
//! address, user agent or request id is written; ids are keyed hashes
//! (`--salt`, or a random salt per run), never written in clear; absolute
//! time only with `--keep-t0`. Every string of 8 or more characters in the
//! log, outside a few label fields (`model`, `role`, `type`, times, ...),
//! is fingerprinted as it is read, and after writing, the trace's bytes,
//! its decoded string columns and its metadata are searched for them; a hit
//! deletes the trace and fails the ingest. The scrub report (printed, and
//! `scrub_report` in the metadata) says what happened to each field.
//!
//! Errors name the file, line and field, never the line's content. Failed
//! requests (an `error`, a status of 400 or more, or `status: failure`) are
//! dropped and counted as `failed_request`.

mod extract;
mod scrub;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use self::extract::{ApiKind, FieldError, Prompt, Reply, TimeForm, Usage};
use self::scrub::{Fingerprint, Keys, LeakCheck};
use super::chat;
use super::config::{Config, LogConfig};
use super::openai_messages::{RawLine, read_lines};
use super::records::line_id;
use super::{Filters, IngestError, Input, InputError, Position, TraceSink};
use crate::tokenize::Tokenizer;
use crate::trace::{TraceMetadata, TraceRecord};

pub use self::scrub::{ScrubReport, Treatment};

/// Default tokens per prefix block, as Mooncake.
const DEFAULT_BLOCK: u32 = 512;

/// Relative difference between the server's and the tokenizer's prompt
/// counts above which the two are counted as disagreeing.
const DISAGREE: f64 = 0.10;

/// A chain hash of a conversation so far (tools and messages).
type ConvHash = [u8; 16];

/// Where a request's counts came from, and other per-run facts, written as
/// `openai_log.stats`.
#[derive(Debug, Clone, Default, Serialize)]
struct Stats {
    input_from_usage: u64,
    input_tokenized: u64,
    output_from_usage: u64,
    output_tokenized: u64,
    output_from_max_tokens: u64,
    usage_compared: u64,
    usage_disagree_over_10pct: u64,
    /// Mean of (server's prompt count - tokenizer's count) over the rows
    /// compared: the chat template's tokens, when the tokenizer is the
    /// model's.
    usage_minus_tokenized_mean: Option<f64>,
    #[serde(skip)]
    usage_minus_tokenized_sum: i64,
    cached_prompt_tokens: u64,
    reasoning_tokens: u64,
    lines_not_utf8: u64,
    lone_surrogates: u64,
    blocks_cut: u64,
    blocks_padded: u64,
    sessions: u64,
    sessions_from_ids: u64,
    turns_linked_by_history: u64,
    think_time_overlaps: u64,
    time_forms: BTreeMap<&'static str, u64>,
    batch_outputs_unmatched: u64,
    batch_output_lines_invalid: u64,
}

/// One request, scrubbed: no text, no raw ids.
#[derive(Debug, Clone)]
struct Pending {
    input: usize,
    line: u64,
    start_us: Option<i64>,
    end_us: Option<i64>,
    input_tokens: i32,
    output_tokens: i32,
    /// Keyed block hashes (renumbered when written).
    blocks: Vec<u64>,
    model: Option<String>,
    kind: &'static str,
    /// Keyed hash of the log's session id.
    session: Option<u64>,
    /// Keyed hash of the user id.
    user: Option<u64>,
    /// Conversation hash up to the last assistant message of the prompt.
    resends: Option<ConvHash>,
    /// Conversation hash of the prompt plus the reply.
    conversation: Option<ConvHash>,
    /// Whether `input_tokens` is the server's count, and where
    /// `output_tokens` came from.
    counted: (bool, OutputSource),
}

/// Facts about one line besides its row.
#[derive(Debug, Default)]
struct LineFacts {
    fingerprints: Vec<Fingerprint>,
    fields: Vec<(String, Treatment)>,
    not_utf8: bool,
    lone_surrogates: usize,
    time_form: Option<TimeForm>,
    compared: Option<(u64, u64)>,
    cached: u64,
    reasoning: u64,
    batch_matched: bool,
}

/// Where a row's `output_tokens` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputSource {
    Usage,
    Tokenized,
    MaxTokens,
}

/// What the worker made of a line.
enum Outcome {
    Row(Box<Pending>, LineFacts),
    Drop(&'static str, LineFacts),
    Invalid(InputError),
}

/// The result of a Batch output line, by `custom_id`.
#[derive(Debug, Clone, Default)]
struct BatchResult {
    usage: Option<Usage>,
    /// Keyed hash of the rendered reply, for history links.
    reply: Option<[u8; 32]>,
    /// Tokens of the reply text, when there is no usage.
    reply_tokens: Option<u64>,
    failed: bool,
}

/// Everything a worker needs.
struct Options<'a> {
    tok: &'a Tokenizer,
    keys: &'a Keys,
    block: usize,
    file: &'a str,
    input: usize,
    log: &'a LogConfig,
    batch: &'a HashMap<String, BatchResult>,
    cache: &'a TokenCache,
}

/// Token ids of recent long messages by their keyed hash: a chat client
/// resends its whole history on every turn, so most of a log's prompt bytes
/// are messages already tokenized. Two generations bound the memory: when
/// the current one is full it becomes the old one, and the old one is
/// dropped; a hit in the old one moves the entry back.
struct TokenCache {
    inner: std::sync::Mutex<CacheGenerations>,
}

#[derive(Default)]
struct CacheGenerations {
    current: HashMap<[u8; 32], std::sync::Arc<[u32]>>,
    old: HashMap<[u8; 32], std::sync::Arc<[u32]>>,
    current_ids: usize,
}

/// Messages shorter than this are tokenized every time (cheaper than the
/// lookup's lock).
const CACHE_MIN_BYTES: usize = 512;
/// Token ids held per generation (4 bytes each: 16 MiB a generation).
const CACHE_IDS_PER_GENERATION: usize = 4 << 20;

impl TokenCache {
    fn new() -> Self {
        Self {
            inner: std::sync::Mutex::new(CacheGenerations::default()),
        }
    }

    /// Appends the token ids of `text` (whose hash is `key`) to `out`.
    fn encode(
        &self,
        tok: &Tokenizer,
        text: &str,
        key: &[u8; 32],
        out: &mut Vec<u32>,
    ) -> Result<(), crate::tokenize::TokenizeError> {
        if text.len() < CACHE_MIN_BYTES {
            out.extend(tok.encode(text)?);
            return Ok(());
        }
        if let Ok(mut g) = self.inner.lock() {
            if let Some(ids) = g.current.get(key) {
                out.extend_from_slice(ids);
                return Ok(());
            }
            if let Some(ids) = g.old.remove(key) {
                out.extend_from_slice(&ids);
                g.current_ids += ids.len();
                g.current.insert(*key, ids);
                return Ok(());
            }
        }
        let ids: std::sync::Arc<[u32]> = tok.encode(text)?.into();
        out.extend_from_slice(&ids);
        if let Ok(mut g) = self.inner.lock() {
            g.current_ids += ids.len();
            g.current.insert(*key, ids);
            if g.current_ids > CACHE_IDS_PER_GENERATION {
                g.old = std::mem::take(&mut g.current);
                g.current_ids = 0;
            }
        }
        Ok(())
    }
}

/// Reads `inputs` and writes the scrubbed trace at `args.output`.
pub fn ingest(
    args: &Config,
    inputs: &[Input],
    filters: Filters,
) -> Result<TraceMetadata, IngestError> {
    if args.keep_text {
        return Err(IngestError::Usage(
            "--keep-text: production logs are always scrubbed; no text is ever written".into(),
        ));
    }
    let block = args.block_or(DEFAULT_BLOCK);
    let tok = Tokenizer::load(&args.tokenizer)?;
    let keys = Keys::new(args.log.salt.as_deref());
    let mut stats = Stats::default();
    let mut report = ScrubReport {
        salt: if args.log.salt.is_some() {
            "given (--salt or LLM_REPLAY_SALT): ids match other ingests with the same salt"
        } else {
            "random, not kept: ids match nothing outside this trace"
        }
        .to_owned(),
        t0_written: args.log.keep_t0,
        ..ScrubReport::default()
    };
    let mut leaks = LeakCheck::default();

    let mut meta = TraceMetadata::new("openai-log");
    for input in inputs {
        meta.input_files.push(input.describe()?);
    }
    let batch_inputs: Vec<Input> = args
        .log
        .batch_output
        .iter()
        .map(|p| Input::File(p.clone()))
        .collect();
    for input in &batch_inputs {
        meta.input_files.push(input.describe()?);
    }
    meta.tokenizer = Some(tok.name());
    meta.prefix_block_size = Some(block);
    meta.time_unit = Some("us".to_owned());
    let mut sink = TraceSink::create(&args.output, meta, filters, args.skip_invalid)?;

    let mut batch = HashMap::new();
    for input in &batch_inputs {
        read_batch_output(
            input,
            &tok,
            &keys,
            args.skip_invalid,
            &mut batch,
            &mut leaks,
            &mut stats,
        )?;
    }
    let batch_total = batch.len();
    let mut matched = 0usize;

    let mut pending: Vec<Pending> = Vec::new();
    let cache = TokenCache::new();
    for (index, input) in inputs.iter().enumerate() {
        let file = input.name();
        let opts = Options {
            tok: &tok,
            keys: &keys,
            block: block as usize,
            file: &file,
            input: index,
            log: &args.log,
            batch: &batch,
            cache: &cache,
        };
        chat::run_ordered(
            |hand| read_lines(input, hand),
            |raw| process(raw, &opts),
            |outcome| {
                sink.read_row();
                let facts = match outcome {
                    Outcome::Invalid(e) => return sink.invalid(e),
                    Outcome::Drop(reason, facts) => {
                        sink.drop_row(reason);
                        facts
                    }
                    Outcome::Row(p, facts) => {
                        pending.push(*p);
                        facts
                    }
                };
                report.records += 1;
                for (name, t) in &facts.fields {
                    report.saw(name, *t);
                }
                leaks.add(facts.fingerprints.iter().copied());
                stats.lines_not_utf8 += u64::from(facts.not_utf8);
                stats.lone_surrogates += facts.lone_surrogates as u64;
                if let Some(f) = facts.time_form {
                    *stats.time_forms.entry(f.name()).or_insert(0) += 1;
                }
                matched += usize::from(facts.batch_matched);
                stats.cached_prompt_tokens += facts.cached;
                stats.reasoning_tokens += facts.reasoning;
                if let Some((server, ours)) = facts.compared {
                    stats.usage_compared += 1;
                    stats.usage_minus_tokenized_sum = stats
                        .usage_minus_tokenized_sum
                        .saturating_add(i64::try_from(server).unwrap_or(i64::MAX))
                        .saturating_sub(i64::try_from(ours).unwrap_or(i64::MAX));
                    let diff = server.abs_diff(ours) as f64;
                    if diff > DISAGREE * server.max(1) as f64 {
                        stats.usage_disagree_over_10pct += 1;
                    }
                }
                Ok(())
            },
        )?;
    }
    stats.batch_outputs_unmatched = batch_total.saturating_sub(matched) as u64;
    stats.usage_minus_tokenized_mean = (stats.usage_compared > 0)
        .then(|| stats.usage_minus_tokenized_sum as f64 / stats.usage_compared as f64);

    let timed = pending.iter().filter(|p| p.start_us.is_some()).count();
    if timed != 0 && timed != pending.len() {
        let first = pending.iter().find(|p| p.start_us.is_none());
        let at = first.map_or(String::new(), |p| {
            format!(
                " (first: {} line {})",
                inputs.get(p.input).map_or("-".to_owned(), Input::name),
                p.line
            )
        });
        return Err(IngestError::Usage(format!(
            "{} of {} requests have no start time{at}: a trace is either timed or not; ingest Batch files on their own",
            pending.len() - timed,
            pending.len()
        )));
    }
    pending.sort_by_key(|p| (p.start_us, p.input, p.line));
    let t0 = pending.first().and_then(|p| p.start_us);

    let records = assemble(pending, block, t0, &keys, &mut stats, inputs.len());
    // Written labels, which the leak check excuses.
    let mut labels = std::collections::BTreeSet::new();
    for (record, counted) in records {
        labels.extend(record.model.iter().chain(&record.request_kind).cloned());
        stats.input_from_usage += u64::from(counted.0);
        stats.input_tokenized += u64::from(!counted.0);
        match counted.1 {
            OutputSource::Usage => stats.output_from_usage += 1,
            OutputSource::Tokenized => stats.output_tokenized += 1,
            OutputSource::MaxTokens => stats.output_from_max_tokens += 1,
        }
        sink.offer(record)?;
    }

    if args.log.keep_t0
        && let Some(t) = t0
    {
        sink.metadata_mut().t0 = chrono::DateTime::from_timestamp_micros(t)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    }
    report.strings_checked = leaks.distinct() as u64;
    report.searched = vec![
        "the file's bytes".to_owned(),
        "its decoded columns and metadata".to_owned(),
    ];
    let field_names: String = report
        .fields
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\n");
    let meta = sink.metadata_mut();
    meta.extra.insert(
        "openai_log.stats".to_owned(),
        serde_json::to_string(&stats).unwrap_or_default(),
    );
    meta.scrub = Some(report.clone());
    meta.extra.insert(
        "token_counts".to_owned(),
        "the server's usage where logged; else the tokenizer's count of the rendered prompt (roles, tools and messages) and reply".to_owned(),
    );
    let written = sink.finish()?;

    // Texts written on purpose, in which a content string may appear by
    // coincidence (a message that reads `gpt-4o-mini`, or `with the`, which
    // the salt's description has): values that come from no content field.
    let labels: Vec<String> = labels.into_iter().collect();
    let mut allowed: Vec<String> = vec![field_names, labels.join("\n")];
    for key in ["openai_log.stats", "token_counts"] {
        allowed.extend(written.extra.get(key).cloned());
    }
    allowed.push(report.salt.clone());
    allowed.extend(report.searched.iter().cloned());
    allowed.push(serde_json::to_string(&written.rows_dropped).unwrap_or_default());
    allowed.push(written.filters.join("\n"));
    allowed.push(written.source_format.clone());
    allowed.extend(written.tokenizer.iter().cloned());
    allowed.extend(written.input_files.iter().map(|f| f.name.clone()));
    allowed.extend(written.input_files.iter().map(|f| f.sha256.clone()));
    allowed.push(
        crate::trace::schema::COLUMNS
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let allowed: Vec<&[u8]> = allowed.iter().map(|s| s.as_bytes()).collect();
    let found = leaks
        .search_trace(&args.output, &allowed)
        .map_err(|e| IngestError::Usage(format!("leak check could not read the trace: {e}")))?;
    if !found.is_empty() {
        let _ = std::fs::remove_file(&args.output);
        let shown: Vec<&str> = found.iter().take(5).map(String::as_str).collect();
        return Err(IngestError::Usage(format!(
            "leak check: {} strings from the log's content or id fields were found in the trace, which was deleted ({}); please report this as a bug (the content is not shown here)",
            found.len(),
            shown.join("; ")
        )));
    }
    Ok(written)
}

/// Sessions, turns, think times, block renumbering and offsets, in arrival
/// order. Returns each record with where its counts came from.
fn assemble(
    pending: Vec<Pending>,
    block: u32,
    t0: Option<i64>,
    keys: &Keys,
    stats: &mut Stats,
    inputs: usize,
) -> Vec<(TraceRecord, (bool, OutputSource))> {
    struct Session {
        turns: i32,
        last_end: Option<i64>,
    }
    let mut sessions: HashMap<u64, Session> = HashMap::new();
    let mut conversations: HashMap<ConvHash, u64> = HashMap::new();
    let mut block_ids: HashMap<u64, u64> = HashMap::new();
    let mut next_block = 0u64;
    let b = i64::from(block);
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        let request_id = line_id(p.input, inputs, p.line);
        let linked = p
            .session
            .is_none()
            .then(|| p.resends.and_then(|h| conversations.get(&h).copied()))
            .flatten();
        let session = match (p.session, linked) {
            (Some(s), _) => {
                if !sessions.contains_key(&s) {
                    stats.sessions_from_ids += 1;
                }
                s
            }
            (None, Some(s)) => {
                stats.turns_linked_by_history += 1;
                s
            }
            (None, None) => keys.id64(
                "derived-session",
                &format!("{}:{}", p.start_us.unwrap_or(0), request_id),
            ),
        };
        let state = sessions.entry(session).or_insert_with(|| {
            stats.sessions += 1;
            Session {
                turns: 0,
                last_end: None,
            }
        });
        let turn = state.turns;
        let think = match (state.last_end, p.start_us) {
            (Some(end), Some(start)) if start >= end => Some(start - end),
            (Some(_), Some(_)) => {
                stats.think_time_overlaps += 1;
                None
            }
            _ => None,
        };
        state.turns = state.turns.saturating_add(1);
        state.last_end = p.end_us.or(state.last_end);
        if let Some(h) = p.conversation {
            conversations.insert(h, session);
        }

        // One id per full block of the row's input_tokens (floor), or one
        // more for a last partial block (ceil): cut or pad to fit.
        let input = i64::from(p.input_tokens);
        let lo = usize::try_from(input / b).unwrap_or(0);
        let hi = usize::try_from((input + b - 1) / b).unwrap_or(0);
        let mut blocks: Vec<u64> = p
            .blocks
            .iter()
            .map(|h| {
                *block_ids.entry(*h).or_insert_with(|| {
                    next_block += 1;
                    next_block - 1
                })
            })
            .collect();
        if blocks.len() > hi {
            stats.blocks_cut += 1;
            blocks.truncate(lo);
        } else if blocks.len() < lo {
            stats.blocks_padded += 1;
            while blocks.len() < lo {
                blocks.push(next_block);
                next_block += 1;
            }
        }
        let record = TraceRecord {
            request_id,
            arrival_offset_us: p.start_us.zip(t0).map(|(s, t)| s - t),
            input_tokens: p.input_tokens,
            output_tokens: p.output_tokens,
            session_id: Some(Keys::hex(session)),
            turn_index: Some(turn),
            think_time_us: think,
            prefix_block_ids: Some(blocks),
            model: p.model,
            request_kind: Some(p.kind.to_owned()),
            prompt_text: None,
            source_row: i64::try_from(p.line).unwrap_or(i64::MAX),
            user_id: p.user.map(Keys::hex),
        };
        out.push((record, p.counted));
    }
    out
}

/// The keyed hash of one rendered message.
fn message_hash(keys: &Keys, rendered: &str) -> [u8; 32] {
    keys.hash("message", rendered.as_bytes())
}

/// The conversation hash after one more message.
fn chain(keys: &Keys, prev: &ConvHash, message: &[u8; 32]) -> ConvHash {
    let mut buf = [0u8; 48];
    buf[..16].copy_from_slice(prev);
    buf[16..].copy_from_slice(message);
    let h = keys.hash("conversation", &buf);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h[..16]);
    out
}

/// Decodes a line: UTF-8 (bytes that are not are replaced, and counted),
/// lone surrogate escapes repaired, then JSON.
fn parse_json(raw: RawLine, file: &str, facts: &mut LineFacts) -> Result<Value, Outcome> {
    let mut bytes = raw.bytes;
    facts.lone_surrogates = chat::repair_lone_surrogates(&mut bytes);
    let text = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            facts.not_utf8 = true;
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(other) => Err(Outcome::Invalid(InputError::new(
            file,
            Position::Line(raw.line),
            "json",
            format!("expected a JSON object, found {}", extract::kind(&other)),
        ))),
        Err(e) if e.is_eof() && !raw.terminated => Err(Outcome::Invalid(InputError {
            reason: "truncated".to_owned(),
            ..InputError::new(
                file,
                Position::Line(raw.line),
                "json",
                format!(
                    "truncated: the last line ends inside a record ({} complete records came before it)",
                    raw.rows_before
                ),
            )
        })),
        // serde_json's messages name the syntax and the column, never the
        // input's text.
        Err(e) => Err(Outcome::Invalid(chat::syntax_error(
            file, raw.line, 1, &e, "",
        ))),
    }
}

/// A string or number id at the first of `paths` in the record or the
/// request body; `Err` for another type.
fn find_id(
    root: &Value,
    body: Option<(&str, &Value)>,
    custom: Option<&str>,
    defaults: &[&'static str],
) -> Result<Option<(String, String)>, FieldError> {
    let custom_paths;
    let paths: &[&str] = match custom {
        Some(p) => {
            custom_paths = [p];
            &custom_paths
        }
        None => defaults,
    };
    let bases = [Some(("", root)), body];
    for (prefix, base) in bases.into_iter().flatten() {
        for path in paths {
            let Some(v) = extract::lookup(base, path) else {
                continue;
            };
            let name = if prefix.is_empty() {
                (*path).to_owned()
            } else {
                format!("{prefix}.{path}")
            };
            return match v.as_ref() {
                Value::String(s) if s.is_empty() => Ok(None),
                Value::String(s) => Ok(Some((name, s.clone()))),
                Value::Number(n) => Ok(Some((name, n.to_string()))),
                other => Err(FieldError::new(
                    name,
                    format!(
                        "expected a string or number id, found {}",
                        extract::kind(other)
                    ),
                )),
            };
        }
    }
    Ok(None)
}

/// A time at `custom` or the first of `defaults`.
fn find_time(
    root: &Value,
    custom: Option<&str>,
    defaults: &[&'static str],
    unit: crate::ingest::config::TimeUnit,
) -> Result<Option<(String, i64, TimeForm)>, FieldError> {
    let found = match custom {
        Some(p) => extract::lookup(root, p).map(|v| (p.to_owned(), v)),
        None => extract::first_of(root, defaults).map(|(p, v)| (p.to_owned(), v)),
    };
    let Some((path, v)) = found else {
        return Ok(None);
    };
    let (us, form) = extract::parse_time(&v, unit).map_err(|m| FieldError::new(&path, m))?;
    Ok(Some((path, us, form)))
}

/// The worker's job: read, tokenize, hash and fingerprint one line.
fn process(raw: RawLine, opts: &Options<'_>) -> Result<Outcome, IngestError> {
    let line = raw.line;
    let mut facts = LineFacts::default();
    let root = match parse_json(raw, opts.file, &mut facts) {
        Ok(v) => v,
        Err(outcome) => return Ok(outcome),
    };
    match read_request(&root, line, opts, &mut facts) {
        Ok(outcome) => Ok(match outcome {
            Read::Row(p) => Outcome::Row(p, facts),
            Read::Drop(reason) => Outcome::Drop(reason, facts),
        }),
        Err(Fault::Field(e)) => {
            let mut err = InputError::new(opts.file, Position::Line(line), e.field, e.message);
            err.reason = format!("invalid:{}", e.reason_field);
            Ok(Outcome::Invalid(err))
        }
        Err(Fault::Fatal(e)) => Err(e),
    }
}

enum Read {
    Row(Box<Pending>),
    Drop(&'static str),
}

enum Fault {
    Field(FieldError),
    Fatal(IngestError),
}

impl From<FieldError> for Fault {
    fn from(e: FieldError) -> Self {
        Self::Field(e)
    }
}

impl From<crate::tokenize::TokenizeError> for Fault {
    fn from(e: crate::tokenize::TokenizeError) -> Self {
        Self::Fatal(e.into())
    }
}

/// Labels and fields whose treatment is fixed, for the scrub report.
fn treatment_of(key: &str) -> Treatment {
    match key {
        "model" => Treatment::Kept,
        "usage"
        | "prompt_tokens"
        | "completion_tokens"
        | "total_tokens"
        | "max_tokens"
        | "max_completion_tokens"
        | "max_output_tokens" => Treatment::Counted,
        "messages"
        | "prompt"
        | "input"
        | "instructions"
        | "tools"
        | "functions"
        | "response"
        | "response_body"
        | "body"
        | "request"
        | "request_body"
        | "proxy_server_request" => Treatment::Tokenized,
        _ => Treatment::Dropped,
    }
}

fn read_request(
    root: &Value,
    line: u64,
    opts: &Options<'_>,
    facts: &mut LineFacts,
) -> Result<Read, Fault> {
    let log = opts.log;
    let Value::Object(top) = root else {
        return Err(FieldError::new("json", "expected a JSON object").into());
    };
    let batch_line = top.contains_key("custom_id");
    if batch_line && !top.contains_key("body") && top.contains_key("response") {
        return Err(FieldError::new(
            "custom_id",
            "this is a Batch API output line: give the Batch input file as LOG and this file with --batch-output",
        )
        .into());
    }

    // The request body.
    let (body_path, body_value): (String, Cow<'_, Value>) = if batch_line {
        match extract::lookup(root, "body").and_then(extract::structured) {
            Some(b) => ("body".to_owned(), b),
            None => return Err(FieldError::new("body", "missing").into()),
        }
    } else if let Some(p) = &log.request_field {
        match extract::lookup(root, p).and_then(extract::structured) {
            Some(b) => (p.clone(), b),
            None => return Err(FieldError::new(p.as_str(), "missing").into()),
        }
    } else if extract::is_body(root) {
        (String::new(), Cow::Borrowed(root))
    } else {
        let found = extract::REQUEST_FIELDS.iter().find_map(|p| {
            extract::lookup(root, p)
                .and_then(extract::structured)
                .filter(|v| extract::is_body(v))
                .map(|v| ((*p).to_owned(), v))
        });
        match found {
            Some(f) => f,
            None => {
                return Err(FieldError::new(
                    "request",
                    "no request body: none of messages, prompt or input at the top level or under request, request_body, body or proxy_server_request.body (set --request-field)",
                )
                .into());
            }
        }
    };
    // LiteLLM keeps `messages` at the top and the tools only in the proxied
    // request.
    let proxied_tools = if body_path.is_empty() {
        [
            "proxy_server_request.body.tools",
            "proxy_server_request.tools",
        ]
        .iter()
        .find_map(|p| extract::lookup(root, p))
    } else {
        None
    };
    let body = extract::body(&body_value, &body_path, proxied_tools.as_deref())?;
    let nested_body = (!body_path.is_empty()).then_some((body_path.as_str(), body_value.as_ref()));

    // Times.
    let start = if batch_line && log.time_field.is_none() {
        None
    } else {
        match find_time(
            root,
            log.time_field.as_deref(),
            extract::START_FIELDS,
            log.time_unit,
        )? {
            Some(t) => Some(t),
            None => {
                let name = log.time_field.as_deref().unwrap_or("startTime");
                return Err(FieldError::new(
                    name,
                    "missing: no start time (looked for startTime, start_time, request_time, timestamp, created_at, time, ts; set --time-field)",
                )
                .into());
            }
        }
    };
    let end = find_time(
        root,
        log.end_time_field.as_deref(),
        extract::END_FIELDS,
        log.time_unit,
    )?;
    let latency_end = match (&start, &end) {
        (Some((_, s, _)), None) => ["latency_ms", "duration_ms", "response_ms"]
            .iter()
            .find_map(|k| {
                top.get(*k)
                    .and_then(|v| v.as_f64())
                    .filter(|ms| *ms >= 0.0 && ms.is_finite())
                    .map(|ms| (*k, s.saturating_add((ms * 1000.0) as i64)))
            }),
        _ => None,
    };
    facts.time_form = start.as_ref().map(|t| t.2);

    // Ids.
    let session = find_id(
        root,
        nested_body,
        log.session_field.as_deref(),
        extract::SESSION_FIELDS,
    )?;
    let user = find_id(
        root,
        nested_body,
        log.user_field.as_deref(),
        extract::USER_FIELDS,
    )?;

    // The response and usage.
    let response = match &log.response_field {
        Some(p) => extract::lookup(root, p).map(|v| (p.clone(), v)),
        None => extract::first_of(root, extract::RESPONSE_FIELDS).map(|(p, v)| (p.to_owned(), v)),
    };
    let mut reply = match &response {
        Some((path, v)) => extract::reply(v, path)?,
        None => Reply::default(),
    };
    if reply.usage.is_none()
        && let Some(u) = extract::lookup(root, "usage").and_then(extract::structured)
    {
        reply.usage = Some(extract::usage(&u, "usage")?);
    }
    if reply.usage.is_none() && top.contains_key("prompt_tokens") {
        let n = |k: &str| -> Result<Option<u64>, FieldError> {
            match top.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => extract::count(v)
                    .map(Some)
                    .map_err(|m| FieldError::new(k, m)),
            }
        };
        reply.usage = Some(Usage {
            prompt: n("prompt_tokens")?,
            completion: n("completion_tokens")?,
            ..Usage::default()
        });
    }
    let mut reply_hash = None;
    let mut reply_tokens = None;
    let mut unanswered = false;
    if batch_line {
        let id = match top.get("custom_id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(FieldError::new("custom_id", "expected a string").into());
            }
        };
        if let Some(r) = opts.batch.get(&id) {
            facts.batch_matched = true;
            reply.usage = r.usage.or(reply.usage);
            reply.failed |= r.failed;
            reply_hash = r.reply;
            reply_tokens = r.reply_tokens;
        } else {
            unanswered = !opts.batch.is_empty();
        }
    }
    let status_failed = match top.get("status") {
        Some(Value::String(s)) => matches!(s.as_str(), "failure" | "failed" | "error"),
        _ => false,
    } || top
        .get("status_code")
        .and_then(Value::as_u64)
        .is_some_and(|c| c >= 400)
        || top.get("error").is_some_and(|e| !e.is_null() && e != "");

    let model_path = match (&body.model, body_path.is_empty()) {
        (Some(_), false) => format!("{body_path}.model"),
        _ => "model".to_owned(),
    };
    let model = body.model.clone().or_else(|| match top.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
        _ => None,
    });
    let model = match model {
        Some(m) if log.hash_model => {
            scrub::fingerprints(&m, &mut facts.fingerprints);
            Some(format!("model-{}", Keys::hex(opts.keys.id64("model", &m))))
        }
        other => other,
    };
    let used: Vec<(&str, Treatment)> = [
        log.hash_model
            .then_some((model_path.as_str(), Treatment::Hashed)),
        session.as_ref().map(|s| (s.0.as_str(), Treatment::Hashed)),
        user.as_ref().map(|u| (u.0.as_str(), Treatment::Hashed)),
        start.as_ref().map(|t| (t.0.as_str(), Treatment::Offset)),
        end.as_ref().map(|t| (t.0.as_str(), Treatment::Offset)),
        latency_end.map(|(k, _)| (k, Treatment::Offset)),
    ]
    .into_iter()
    .flatten()
    .collect();
    note_fields(top, nested_body, &used, facts);
    collect_fingerprints(root, &start, &end, facts);
    if unanswered {
        return Ok(Read::Drop("no_batch_output"));
    }
    if reply.failed || status_failed {
        return Ok(Read::Drop("failed_request"));
    }

    // Tokenize the prompt; hash the conversation.
    let keys = opts.keys;
    let mut ids: Vec<u32> = Vec::new();
    let mut resends = None;
    let mut conversation = None;
    match &body.prompt {
        Prompt::Messages {
            rendered,
            last_assistant,
        } => {
            let mut h: ConvHash = [0; 16];
            for (i, text) in rendered.iter().enumerate() {
                let m = message_hash(keys, text);
                opts.cache.encode(opts.tok, text, &m, &mut ids)?;
                h = chain(keys, &h, &m);
                if Some(i) == *last_assistant {
                    resends = Some(h);
                }
            }
            let reply_msg = reply
                .rendered
                .as_deref()
                .map(|r| message_hash(keys, r))
                .or(reply_hash);
            conversation = reply_msg.map(|m| chain(keys, &h, &m));
        }
        Prompt::Text(t) => ids = opts.tok.encode(t)?,
        Prompt::TokenIds(t) => ids.clone_from(t),
    }
    let tokenized = ids.len() as u64;
    let usage = reply
        .usage
        .filter(|u| u.prompt.unwrap_or(0) > 0 || u.completion.unwrap_or(0) > 0);
    let (input, from_usage) = match usage.and_then(|u| u.prompt).filter(|n| *n > 0) {
        Some(n) => {
            facts.compared = Some((n, tokenized));
            (n, true)
        }
        None => (tokenized, false),
    };
    if let Some(u) = usage {
        facts.cached = u.cached.unwrap_or(0);
        facts.reasoning = u.reasoning.unwrap_or(0);
    }
    let (output, source) = match usage.and_then(|u| u.completion) {
        Some(n) => (Some(n), OutputSource::Usage),
        None => match (&reply.rendered, reply_tokens) {
            (Some(r), _) => (
                Some(opts.tok.count(extract::reply_text(r))? as u64),
                OutputSource::Tokenized,
            ),
            (None, Some(n)) => (Some(n), OutputSource::Tokenized),
            (None, None) => (body.max_tokens, OutputSource::MaxTokens),
        },
    };
    let Some(output) = output else {
        return Ok(Read::Drop("no_output_length"));
    };
    let (Ok(input_tokens), Ok(output_tokens)) = (i32::try_from(input), i32::try_from(output))
    else {
        return Err(FieldError::new("usage", format!("more than {} tokens", i32::MAX)).into());
    };
    let kind = match (body.api, body.tools) {
        (ApiKind::Chat, false) => "chat",
        (ApiKind::Chat, true) => "chat+tools",
        (ApiKind::Completion, _) => "completion",
        (ApiKind::Responses, false) => "responses",
        (ApiKind::Responses, true) => "responses+tools",
    };
    Ok(Read::Row(Box::new(Pending {
        input: opts.input,
        line,
        start_us: start.map(|t| t.1),
        end_us: end.map(|t| t.1).or(latency_end.map(|t| t.1)),
        input_tokens,
        output_tokens,
        blocks: keys.blocks(&ids, opts.block),
        model,
        kind,
        session: session.map(|(_, s)| keys.id64("session", &s)),
        user: user.map(|(_, u)| keys.id64("user", &u)),
        resends,
        conversation,
        counted: (from_usage, source),
    })))
}

/// The scrub report's view of one record: its top-level fields and its
/// request body's (at its path), each with what was done with it; `used`
/// names the fields read as ids and times.
fn note_fields(
    top: &serde_json::Map<String, Value>,
    body: Option<(&str, &Value)>,
    used: &[(&str, Treatment)],
    facts: &mut LineFacts,
) {
    let treat = |name: &str, leaf: &str| {
        used.iter()
            .find(|(u, _)| *u == name)
            .map_or_else(|| treatment_of(leaf), |(_, t)| *t)
    };
    for k in top.keys() {
        facts.fields.push((k.clone(), treat(k, k)));
    }
    if let Some((path, Value::Object(b))) = body {
        for k in b.keys() {
            let name = format!("{path}.{k}");
            let t = treat(&name, k);
            facts.fields.push((name, t));
        }
    }
    // Nested fields that were used (`metadata.session_id`) are listed on
    // their own; their parent is dropped.
    for (name, t) in used {
        if !facts.fields.iter().any(|(n, _)| n == name) {
            facts.fields.push(((*name).to_owned(), *t));
        }
    }
}

/// Fingerprints every content string of the record (not the labels, and
/// not the times that were read).
fn collect_fingerprints(
    root: &Value,
    start: &Option<(String, i64, TimeForm)>,
    end: &Option<(String, i64, TimeForm)>,
    facts: &mut LineFacts,
) {
    let leaf = |t: &Option<(String, i64, TimeForm)>| {
        t.as_ref()
            .map(|t| t.0.rsplit('.').next().unwrap_or(&t.0).to_owned())
    };
    let skip: Vec<String> = [leaf(start), leaf(end)].into_iter().flatten().collect();
    let skip: Vec<&str> = skip.iter().map(String::as_str).collect();
    let mut strings = Vec::new();
    extract::content_strings(root, &skip, &mut strings);
    for s in &strings {
        scrub::fingerprints(s, &mut facts.fingerprints);
    }
}

/// Reads a Batch API output file into `out` (by `custom_id`), fingerprinting
/// its content. Bad lines stop the ingest, or with `--skip-invalid` are
/// counted in the stats.
fn read_batch_output(
    input: &Input,
    tok: &Tokenizer,
    keys: &Keys,
    skip_invalid: bool,
    out: &mut HashMap<String, BatchResult>,
    leaks: &mut LeakCheck,
    stats: &mut Stats,
) -> Result<(), IngestError> {
    let file = input.name();
    let mut failure = None;
    read_lines(input, &mut |raw| {
        let line = raw.line;
        let mut facts = LineFacts::default();
        let parsed = parse_json(raw, &file, &mut facts).map_err(|o| match o {
            Outcome::Invalid(e) => e,
            _ => InputError::new(&file, Position::Line(line), "json", "unreadable"),
        });
        let result = parsed.and_then(|v| {
            batch_result(&v, tok, keys).map(|r| (v, r)).map_err(|e| {
                let mut err = InputError::new(&file, Position::Line(line), e.field, e.message);
                err.reason = format!("invalid:{}", e.reason_field);
                err
            })
        });
        match result {
            Ok((v, (id, r))) => {
                collect_fingerprints(&v, &None, &None, &mut facts);
                leaks.add(facts.fingerprints);
                out.insert(id, r);
                true
            }
            Err(_) if skip_invalid => {
                stats.batch_output_lines_invalid += 1;
                true
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    match failure {
        Some(e) => Err(IngestError::Input(e)),
        None => Ok(()),
    }
}

fn batch_result(
    v: &Value,
    tok: &Tokenizer,
    keys: &Keys,
) -> Result<(String, BatchResult), FieldError> {
    let id = match v.get("custom_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(FieldError::new(
                "custom_id",
                format!("expected a string, found {}", extract::kind(other)),
            ));
        }
        None => return Err(FieldError::new("custom_id", "missing")),
    };
    if v.get("body").is_some() && v.get("response").is_none() {
        return Err(FieldError::new(
            "response",
            "missing: this looks like a Batch input line; --batch-output takes the output file",
        ));
    }
    let mut r = BatchResult {
        failed: v.get("error").is_some_and(|e| !e.is_null()),
        ..BatchResult::default()
    };
    if let Some(resp) = v.get("response").filter(|x| !x.is_null()) {
        let reply = extract::reply(resp, "response")?;
        r.failed |= reply.failed;
        r.usage = reply.usage;
        if let Some(text) = &reply.rendered {
            r.reply = Some(message_hash(keys, text));
            if reply.usage.and_then(|u| u.completion).is_none() {
                r.reply_tokens = tok.count(extract::reply_text(text)).ok().map(|n| n as u64);
            }
        }
    } else {
        r.failed = true;
    }
    Ok((id, r))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    static TOKENIZER: std::sync::LazyLock<Tokenizer> = std::sync::LazyLock::new(|| {
        Tokenizer::load(&crate::tokenize::TokenizerSpec::O200kBase).unwrap()
    });

    fn with_opts<T>(f: impl FnOnce(&Options<'_>) -> T) -> T {
        let tok = &*TOKENIZER;
        let keys = Keys::new(Some("test"));
        let log = LogConfig::default();
        let batch = HashMap::new();
        let cache = TokenCache::new();
        let opts = Options {
            tok,
            keys: &keys,
            block: 4,
            file: "log.jsonl",
            input: 0,
            log: &log,
            batch: &batch,
            cache: &cache,
        };
        f(&opts)
    }

    fn raw(bytes: &[u8], terminated: bool) -> RawLine {
        RawLine {
            line: 3,
            rows_before: 2,
            terminated,
            bytes: bytes.to_vec(),
        }
    }

    const GOOD: &str = r#"{"startTime": "2024-06-01T10:00:00Z", "endTime": 1717236001.5, "session_id": "s-1", "user": "u@example.com", "request": {"model": "m", "tools": [{"type": "function", "function": {"name": "f"}}], "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": [{"type": "text", "text": "Hello there, how are you today?"}]}]}, "response": {"choices": [{"message": {"role": "assistant", "content": "Fine, thanks for asking."}}], "usage": {"prompt_tokens": 30, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 16}}}}"#;

    #[test]
    fn a_good_line_becomes_a_scrubbed_row() {
        let out = with_opts(|o| process(raw(GOOD.as_bytes(), true), o)).unwrap();
        let Outcome::Row(p, facts) = out else {
            panic!("a row")
        };
        assert_eq!((p.input_tokens, p.output_tokens), (30, 7));
        assert_eq!(p.start_us, Some(1_717_236_000_000_000));
        assert_eq!(p.end_us, Some(1_717_236_001_500_000));
        assert_eq!(p.kind, "chat+tools");
        assert_eq!(p.model.as_deref(), Some("m"));
        assert_eq!(
            p.session,
            Some(Keys::new(Some("test")).id64("session", "s-1"))
        );
        assert!(p.conversation.is_some() && p.resends.is_none());
        assert_eq!(facts.cached, 16);
        let (server, ours) = facts.compared.unwrap();
        assert_eq!(server, 30);
        assert_eq!(p.blocks.len() as u64, ours / 4);
        assert!(
            facts.fingerprints.len() >= 4,
            "content strings fingerprinted"
        );
    }

    #[test]
    fn litellm_rows_take_their_tools_from_the_proxied_request() {
        let line = r#"{"startTime": "2024-06-01 10:00:00", "model": "m", "messages": "[{\"role\": \"user\", \"content\": \"hi\"}]", "proxy_server_request": {"body": {"tools": [{"type": "function", "function": {"name": "lookup"}}]}}, "response": {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}}"#;
        let Outcome::Row(p, facts) = with_opts(|o| process(raw(line.as_bytes(), true), o)).unwrap()
        else {
            panic!("a row")
        };
        assert_eq!(p.kind, "chat+tools");
        assert_eq!(facts.time_form, Some(TimeForm::NaiveUtc));
        assert_eq!(p.output_tokens, 1);
    }

    #[test]
    fn a_cut_last_line_is_a_truncation() {
        let cut = &GOOD.as_bytes()[..GOOD.len() / 2];
        let Outcome::Invalid(e) = with_opts(|o| process(raw(cut, false), o)).unwrap() else {
            panic!("invalid")
        };
        assert_eq!(e.reason, "truncated");
        assert!(e.to_string().contains("2 complete records"), "{e}");
        let Outcome::Invalid(e) = with_opts(|o| process(raw(cut, true), o)).unwrap() else {
            panic!("invalid")
        };
        assert_eq!(e.reason, "invalid:json");
    }

    proptest! {
        /// Invariant: any bytes give a row, a drop or a named error; never a
        /// panic, and never an error that quotes the line.
        #[test]
        fn arbitrary_lines_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), terminated in any::<bool>()) {
            let _ = with_opts(|o| process(raw(&bytes, terminated), o));
        }

        /// Invariant: a valid line with junk spliced in anywhere never
        /// panics, and its errors do not quote the line.
        #[test]
        fn mutated_lines_never_panic(at in 0usize..600, junk in "[\\[\\]{}\",:\\\\a-z0-9 .-]{0,10}") {
            let mut s = GOOD.to_owned();
            let mut at = at.min(s.len());
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            s.insert_str(at, &junk);
            if let Ok(Outcome::Invalid(e)) = with_opts(|o| process(raw(s.as_bytes(), true), o)) {
                let msg = e.to_string();
                prop_assert!(!msg.contains("Hello there"), "{}", msg);
                prop_assert!(!msg.contains("u@example.com"), "{}", msg);
            }
        }
    }
}
