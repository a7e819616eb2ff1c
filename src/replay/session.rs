//! Session replay: conversations sent the way their users sent them. Open
//! at the session level, closed inside it: a session's first turn leaves at
//! its scheduled time (recorded offset / speedup, or the arrival process of
//! `--rate`, which then counts sessions); turn k+1 becomes due only after
//! turn k's response ended, `think_time_us` (scaled) later, or at its own
//! recorded time, whichever `TurnTiming` says. Its prompt repeats turn k's
//! prompt and a stand-in of the reply the server gave (as many tokens as it
//! returned), then new tokens up to the trace's `input_tokens`, so the
//! server's prefix cache sees the reuse production saw.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::RequestBuilder;
use super::dispatch::{Continuation, Prepared, RunClock, Turn, TurnEnd};
use crate::client::{Message, Prompt};
use crate::prompt::{History, PromptMode, PromptSynth};
use crate::schedule::ScheduledRequest;
use crate::trace::{Trace, TraceRecord};

/// When a later turn of a session leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnTiming {
    /// Its think time after the previous turn's end.
    Think,
    /// Its recorded time (session start plus its recorded offset), but
    /// never before the previous turn ended.
    Recorded,
    /// The later of the two.
    #[default]
    Max,
}

impl TurnTiming {
    /// The name as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Think => "think",
            Self::Recorded => "recorded",
            Self::Max => "max",
        }
    }
}

/// What the rest of a session does when one of its turns fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnFailure {
    /// Send the remaining turns, with the recorded reply length standing in
    /// for the reply that never came.
    #[default]
    Continue,
    /// Send nothing more of the session: its remaining turns are rows with
    /// outcome `skipped`.
    Abort,
}

/// How sessions are replayed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SessionOptions {
    /// When later turns leave.
    pub timing: TurnTiming,
    /// What follows a failed turn.
    pub on_failure: TurnFailure,
    /// Think times are multiplied by this.
    pub think_time_scale: f64,
    /// Think time of turns the trace has none for; `None`: the median of the
    /// trace's think times (0 when it has none).
    pub default_think_time: Option<Duration>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            timing: TurnTiming::Max,
            on_failure: TurnFailure::Continue,
            think_time_scale: 1.0,
            default_think_time: None,
        }
    }
}

/// A trace grouped into sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPlan {
    /// Trace rows of each session, in turn order; sessions in the order of
    /// their first turn's arrival.
    pub sessions: Vec<Vec<u32>>,
    /// The first turn of each session: the rows the schedule is drawn over.
    pub firsts: Vec<TraceRecord>,
    /// Think time of turns the trace has none for, µs.
    pub default_think_us: i64,
}

impl SessionPlan {
    /// Whether `trace` has a session of more than one turn.
    pub fn has_sessions(trace: &Trace) -> bool {
        let mut turns: HashMap<&str, u32> = HashMap::new();
        trace.records.iter().any(|r| {
            r.session_id.as_deref().is_some_and(|id| {
                let n = turns.entry(id).or_insert(0);
                *n += 1;
                *n > 1
            })
        })
    }

    /// Groups `trace` by `session_id` (a row without one is a session of
    /// its own), turns ordered by `turn_index`, then arrival, then row.
    pub fn group(trace: &Trace, opts: &SessionOptions) -> Self {
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        let mut sessions: Vec<Vec<u32>> = Vec::new();
        for (i, r) in trace.records.iter().enumerate() {
            let row = u32::try_from(i).unwrap_or(u32::MAX);
            match r.session_id.as_deref() {
                Some(id) => {
                    let at = *by_id.entry(id).or_insert_with(|| {
                        sessions.push(Vec::new());
                        sessions.len() - 1
                    });
                    if let Some(s) = sessions.get_mut(at) {
                        s.push(row);
                    }
                }
                None => sessions.push(vec![row]),
            }
        }
        let rec = |i: u32| &trace.records[i as usize];
        for s in &mut sessions {
            s.sort_by_key(|&i| {
                let r = rec(i);
                (r.turn_index.unwrap_or(i32::MAX), r.arrival_offset_us, i)
            });
        }
        sessions.sort_by_key(|s| {
            let first = s[0];
            (rec(first).arrival_offset_us.unwrap_or(i64::MAX), first)
        });
        let firsts = sessions.iter().map(|s| rec(s[0]).clone()).collect();
        let default_think_us = match opts.default_think_time {
            Some(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            None => {
                let mut known: Vec<i64> = trace
                    .records
                    .iter()
                    .filter_map(|r| r.think_time_us)
                    .filter(|&t| t >= 0)
                    .collect();
                known.sort_unstable();
                known.get(known.len() / 2).copied().unwrap_or(0)
            }
        };
        Self {
            sessions,
            firsts,
            default_think_us,
        }
    }

    /// Rows in all sessions.
    pub fn turns(&self) -> u64 {
        self.sessions.iter().map(|s| s.len() as u64).sum()
    }
}

/// What every turn of a run's sessions shares.
pub(super) struct SessionRun {
    pub trace: Arc<Trace>,
    pub plan: SessionPlan,
    pub builder: Arc<RequestBuilder>,
    pub opts: SessionOptions,
    /// Recorded offsets within a session are divided by this.
    pub speedup: f64,
    pub clock: RunClock,
}

/// A chat session's conversation so far, as sent: the messages and their
/// tokens (summed per message, chat-template tokens not counted, as ingest
/// counts them).
#[derive(Debug, Clone, Default)]
struct Chat {
    messages: Vec<Message>,
    tokens: usize,
}

/// Where a session stands after a turn.
struct Cursor {
    run: Arc<SessionRun>,
    session: usize,
    /// Position of the next turn in the session.
    pos: usize,
    history: History,
    /// The message list, when the session speaks the chat API.
    chat: Option<Chat>,
    /// The transcript so far, replaying the trace's own text
    /// (`--prompts original`) with the completions API.
    transcript: Option<String>,
    /// The first turn's scheduled instant.
    start: Instant,
    repeat: u32,
}

impl SessionRun {
    /// The first turn of the session the schedule entry `s` names, with
    /// what follows it.
    pub(super) fn first(self: &Arc<Self>, s: ScheduledRequest) -> Option<Prepared> {
        let session = s.trace_index as usize;
        let turns = self.plan.sessions.get(session)?;
        let idx = *turns.first()?;
        let record = self.trace.records.get(idx as usize)?;
        let chat_mode = self.chat_mode(record);
        let mut chat = None;
        let mut transcript = None;
        let (request, history, sent) = match (self.builder.prompts, &self.builder.synth) {
            (PromptMode::Synthetic | PromptMode::Tokens, Some(synth)) => {
                match synth.first_turn(record, s.repeat) {
                    Ok((prompt, history)) if chat_mode => {
                        let sent = prompt.ids.len();
                        let conversation = Chat {
                            messages: vec![Message {
                                role: "user",
                                content: prompt.text,
                            }],
                            tokens: sent,
                        };
                        let p = Prompt::Messages(conversation.messages.clone());
                        chat = Some(conversation);
                        let body = self.builder.body_keeping(record, s.repeat, p, true);
                        (body, history, Some(sent))
                    }
                    Ok((prompt, history)) => {
                        let sent = prompt.ids.len();
                        let p = self.builder.prompt_of(prompt);
                        (self.builder.body(record, s.repeat, p), history, Some(sent))
                    }
                    Err(e) => (Err(format!("prompt: {e}")), History::default(), None),
                }
            }
            // The trace's own text: later turns resend it with the replies.
            (PromptMode::Original, _) if turns.len() > 1 => {
                let text = record.prompt_text.clone().unwrap_or_default();
                let p = if self.builder.api_of(record).takes_messages() {
                    let conversation = Chat {
                        messages: vec![Message {
                            role: "user",
                            content: text,
                        }],
                        tokens: 0,
                    };
                    let p = Prompt::Messages(conversation.messages.clone());
                    chat = Some(conversation);
                    p
                } else {
                    transcript = Some(text.clone());
                    Prompt::Text(text)
                };
                (
                    self.builder.body_keeping(record, s.repeat, p, true),
                    History::default(),
                    None,
                )
            }
            _ => (
                self.builder.build(record, s.repeat),
                History::default(),
                None,
            ),
        };
        let start = self.clock.deadline(s.offset_ns);
        let mut p = Prepared {
            sched: ScheduledRequest {
                offset_ns: s.offset_ns,
                trace_index: idx,
                repeat: s.repeat,
            },
            request_id: record.request_id.clone(),
            input_tokens: record.input_tokens,
            output_tokens_expected: record.output_tokens,
            request,
            turn: Some(Turn {
                session_id: session_key(record, idx),
                turn_index: 0,
                think_time_us: None,
                prompt_tokens_sent: sent.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                history_tokens: sent.map(|_| 0),
                recorded_at: Some(start),
            }),
            then: None,
            turns_after: turns.len() as u64 - 1,
            skip: None,
            class: self.builder.class_of(record),
        };
        if turns.len() > 1 {
            p.then = Some(continuation(Cursor {
                run: self.clone(),
                session,
                pos: 1,
                history,
                chat,
                transcript,
                start,
                repeat: s.repeat,
            }));
        }
        Some(p)
    }

    /// Whether sessions speak the chat API with synthetic text: then each
    /// turn sends the whole message list, the server's own replies in it.
    fn chat_mode(&self, record: &TraceRecord) -> bool {
        self.builder.api_of(record).takes_messages()
            && self.builder.prompts == PromptMode::Synthetic
            && self.builder.synth.is_some()
    }
}

/// The session id written in results: the trace's, or the row's own id
/// for a row without one.
fn session_key(record: &TraceRecord, idx: u32) -> String {
    record
        .session_id
        .clone()
        .unwrap_or_else(|| format!("row-{idx}"))
}

/// The turn at `c.pos` (trace row `idx`), due at `at`, with `request` and
/// its `turn` figures; the continuation is the caller's.
fn turn_at(
    c: &Cursor,
    record: &TraceRecord,
    idx: u32,
    turns: &[u32],
    at: Instant,
    request: Result<(crate::client::RequestSpec, bytes::Bytes), String>,
    turn: Turn,
) -> Prepared {
    let offset_ns = u64::try_from(at.saturating_duration_since(c.run.clock.start).as_nanos())
        .unwrap_or(u64::MAX);
    Prepared {
        sched: ScheduledRequest {
            offset_ns,
            trace_index: idx,
            repeat: c.repeat,
        },
        request_id: record.request_id.clone(),
        input_tokens: record.input_tokens,
        output_tokens_expected: record.output_tokens,
        request,
        turn: Some(turn),
        then: None,
        turns_after: (turns.len() - c.pos - 1) as u64,
        skip: None,
        class: c.run.builder.class_of(record),
    }
}

/// The turn at `c.pos` recorded as `skipped` at `now`, with the rest of its
/// session after it.
fn skipped_turn(
    c: Cursor,
    record: &TraceRecord,
    idx: u32,
    first: &TraceRecord,
    turns: &[u32],
    now: Instant,
) -> Prepared {
    let turn = Turn {
        session_id: session_key(first, turns[0]),
        turn_index: i32::try_from(c.pos).unwrap_or(i32::MAX),
        ..Turn::default()
    };
    let mut p = turn_at(&c, record, idx, turns, now, Err("skipped".to_owned()), turn);
    p.skip = Some(
        "not sent: an earlier turn of its session failed (--on-turn-failure abort)".to_owned(),
    );
    if c.pos + 1 < turns.len() {
        p.then = Some(continuation(Cursor {
            pos: c.pos + 1,
            history: History::default(),
            chat: None,
            ..c
        }));
    }
    p
}

fn continuation(c: Cursor) -> Continuation {
    Continuation(Box::new(move |end: TurnEnd| next_turn(c, end)))
}

/// The turn at `c.pos`, built after the previous one ended as `end`.
fn next_turn(mut c: Cursor, end: TurnEnd) -> Option<(Prepared, Instant)> {
    let run = Arc::clone(&c.run);
    let turns = run.plan.sessions.get(c.session)?;
    let idx = *turns.get(c.pos)?;
    let prev_idx = *turns.get(c.pos - 1)?;
    let record = run.trace.records.get(idx as usize)?;
    let prev = run.trace.records.get(prev_idx as usize)?;
    let first = run.trace.records.get(*turns.first()? as usize)?;
    // A failed turn gave no reply: the conversation goes on with the
    // recorded reply length in its place (`--on-turn-failure continue`), or
    // ends, its remaining turns recorded as skipped (`abort`).
    // A skipped turn is not ok either, so one failure skips every turn
    // after it, each recorded at once.
    if !end.ok && run.opts.on_failure == TurnFailure::Abort {
        return Some((
            skipped_turn(c, record, idx, first, turns, end.ended),
            end.ended,
        ));
    }
    let reply = if end.ok {
        end.reply_tokens as usize
    } else {
        usize::try_from(prev.output_tokens).unwrap_or(0)
    };
    let think_us = (record
        .think_time_us
        .unwrap_or(run.plan.default_think_us)
        .max(0) as f64
        * run.opts.think_time_scale)
        .round() as i64;
    let after_think = end.ended + Duration::from_micros(u64::try_from(think_us).unwrap_or(0));
    let recorded_at = match (record.arrival_offset_us, first.arrival_offset_us) {
        (Some(t), Some(t0)) if t >= t0 => {
            Some(c.start + Duration::from_secs_f64((t - t0) as f64 / 1e6 / run.speedup))
        }
        _ => None,
    };
    let due = match (run.opts.timing, recorded_at) {
        (TurnTiming::Think, _) | (_, None) => after_think,
        (TurnTiming::Recorded, Some(r)) => r.max(end.ended),
        (TurnTiming::Max, Some(r)) => r.max(after_think),
    };
    let mut chat = None;
    let mut transcript = None;
    let (request, history, sent, repeated) = match (run.builder.prompts, &run.builder.synth) {
        (PromptMode::Original, _) => {
            let text = record.prompt_text.clone().unwrap_or_default();
            let reply = end.reply_text.filter(|r| end.ok && !r.is_empty());
            let p = if let Some(mut so_far) = c.chat.take() {
                so_far.messages.extend(reply.map(|r| Message {
                    role: "assistant",
                    content: r,
                }));
                so_far.messages.push(Message {
                    role: "user",
                    content: text,
                });
                let p = Prompt::Messages(so_far.messages.clone());
                chat = Some(so_far);
                p
            } else {
                let mut so_far = c.transcript.take().unwrap_or_default();
                if let Some(r) = reply {
                    so_far.push_str(&r);
                }
                so_far.push_str(TURN_SEPARATOR);
                so_far.push_str(&text);
                transcript = Some(so_far.clone());
                Prompt::Text(so_far)
            };
            (
                run.builder.body_keeping(record, c.repeat, p, true),
                History::default(),
                None,
                None,
            )
        }
        (PromptMode::Synthetic, Some(synth)) if c.chat.is_some() => {
            // The conversation moves on to the next cursor, not copied.
            let so_far = c.chat.take().unwrap_or_default();
            let reply = end.ok.then(|| end.reply_text.unwrap_or_default());
            match chat_turn(synth, so_far, reply, prev, record, c.repeat) {
                Ok((conversation, repeated)) => {
                    let sent = conversation.tokens;
                    let p = Prompt::Messages(conversation.messages.clone());
                    chat = Some(conversation);
                    (
                        run.builder.body_keeping(record, c.repeat, p, true),
                        History::default(),
                        Some(sent),
                        Some(repeated),
                    )
                }
                Err(e) => (Err(format!("prompt: {e}")), History::default(), None, None),
            }
        }
        (PromptMode::Synthetic | PromptMode::Tokens, Some(synth)) => {
            match synth.next_turn(&c.history, reply, record, c.repeat) {
                Ok((prompt, history, repeated)) => {
                    let sent = prompt.ids.len();
                    let p = run.builder.prompt_of(prompt);
                    (
                        run.builder.body(record, c.repeat, p),
                        history,
                        Some(sent),
                        Some(repeated),
                    )
                }
                Err(e) => (Err(format!("prompt: {e}")), c.history.clone(), None, None),
            }
        }
        _ => (
            run.builder.build(record, c.repeat),
            History::default(),
            None,
            None,
        ),
    };
    let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let turn = Turn {
        session_id: session_key(first, turns[0]),
        turn_index: i32::try_from(c.pos).unwrap_or(i32::MAX),
        think_time_us: Some(think_us),
        prompt_tokens_sent: sent.map(as_i32),
        history_tokens: repeated.map(as_i32),
        recorded_at,
    };
    let mut p = turn_at(&c, record, idx, turns, due, request, turn);
    if c.pos + 1 < turns.len() {
        p.then = Some(continuation(Cursor {
            pos: c.pos + 1,
            history,
            chat,
            transcript,
            ..c
        }));
    }
    Some((p, due))
}

/// Between a reply and the next user turn in a completions transcript
/// (`--prompts original`).
const TURN_SEPARATOR: &str = "\n\n";

/// The next chat turn: the conversation so far, the assistant's reply (the
/// server's text; for a failed turn, synthetic text of the recorded reply
/// length), then a new user message sized so the whole has the trace's
/// `input_tokens`. Returns the conversation and how many of its tokens
/// repeat the session so far.
fn chat_turn(
    synth: &PromptSynth,
    mut chat: Chat,
    reply: Option<String>,
    prev: &TraceRecord,
    record: &TraceRecord,
    repeat: u32,
) -> Result<(Chat, usize), crate::prompt::PromptError> {
    let reply = match reply {
        Some(text) => text,
        None => {
            let n = usize::try_from(prev.output_tokens.max(1)).unwrap_or(1);
            synth.message(&prev.request_id, repeat, n, true)?.text
        }
    };
    let repeated = chat.tokens + synth.count(&reply)?;
    let want = usize::try_from(record.input_tokens).unwrap_or(0);
    let fresh = synth.message(
        &record.request_id,
        repeat,
        want.saturating_sub(repeated),
        false,
    )?;
    chat.messages.push(Message {
        role: "assistant",
        content: reply,
    });
    chat.tokens = repeated + fresh.ids.len();
    chat.messages.push(Message {
        role: "user",
        content: fresh.text,
    });
    Ok((chat, repeated))
}
