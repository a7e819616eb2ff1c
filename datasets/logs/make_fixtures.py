#!/usr/bin/env python3
"""Writes the production-log fixtures of datasets/logs/ (deterministic).

Every name, e-mail, key, address and message here is made up. The files are
small on purpose; each holds the awkward cases real gateway logs have.

    python3 datasets/logs/make_fixtures.py
"""
import gzip
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
rng = random.Random(20261125)

WORDS = (
    "the a service request latency cache token prompt model reply user server "
    "queue batch stream session policy refund order invoice ticket account "
    "shipping delivery address payment schedule meeting report summary draft "
    "review code function error retry timeout metric dashboard alert deploy"
).split()


def text(n_words, seed=None):
    r = random.Random(seed) if seed is not None else rng
    return " ".join(r.choice(WORDS) for _ in range(n_words)).capitalize() + "."


# A long system prompt shared by every user of the support bot (well over two
# 512-token blocks), and a shorter one of a coding assistant.
SUPPORT_SYSTEM = "You are the support assistant of Example Shop. " + text(1400, seed=1)
CODE_SYSTEM = "You are a careful coding assistant. " + text(300, seed=2)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order by its number. " + text(40, seed=3),
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]
USERS = [
    ("user-7f3a", "maria.lopez@example.org"),
    ("user-19bc", "chen.wei@example.net"),
    ("user-4410", "olusegun.a@example.com"),
]
T0 = 1_733_050_000.0  # 2024-12-01T10:46:40Z


def iso(t, offset_h=0):
    import datetime as dt

    tz = dt.timezone(dt.timedelta(hours=offset_h))
    return dt.datetime.fromtimestamp(t, tz).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def naive(t):
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def approx_tokens(messages):
    """About what a server would count for these messages (a word is about
    one token of these texts, plus a few template tokens per message)."""
    words = 0
    for m in messages:
        c = m.get("content") or ""
        if isinstance(c, list):
            c = " ".join(p.get("text", "") for p in c)
        words += len(c.split())
    return int(words * 1.1) + 5 * len(messages)


def usage(p, c, cached=None, reasoning=None):
    u = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    if cached is not None:
        u["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning is not None:
        u["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return u


def completion(content, u=None, tool_calls=None):
    msg = {"role": "assistant", "content": content}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    out = {
        "id": "chatcmpl-" + "".join(rng.choice("abcdef0123456789") for _ in range(20)),
        "object": "chat.completion",
        "model": "llama-3.1-8b-instruct",
        "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
    }
    if u:
        out["usage"] = u
    return out


def chunks(content, u=None):
    """A streamed reply as the list of chunks a gateway keeps."""
    parts = [content[i : i + 17] for i in range(0, len(content), 17)]
    out = [{"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    out += [{"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}}]} for p in parts]
    if u:
        out.append({"object": "chat.completion.chunk", "choices": [], "usage": u})
    return out


def sse(content):
    """A streamed reply kept as raw SSE text, without usage."""
    parts = [content[i : i + 23] for i in range(0, len(content), 23)]
    lines = ["data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": p}}]}) for p in parts]
    return "\n\n".join(lines) + "\n\ndata: [DONE]\n\n"


def gateway():
    """Request/response pairs, written in completion order (not start order)."""
    recs = []
    t = T0
    # Three support chats that resend their history, sharing the system prompt.
    for uid, email in USERS:
        history = [{"role": "system", "content": SUPPORT_SYSTEM}]
        for turn in range(3):
            question = f"Hi, I am {email.split('@')[0]}. " + text(30 + 10 * turn)
            history.append({"role": "user", "content": question})
            answer = text(40 + 5 * turn)
            start = t + rng.uniform(0.05, 0.9)
            t = start
            dur = rng.uniform(0.8, 4.0)
            form = (len(recs)) % 5
            start_field = [
                start,  # epoch seconds, float
                int(start * 1000),  # epoch milliseconds
                iso(start),  # RFC 3339, Z
                iso(start, 2),  # RFC 3339, +02:00
                iso(start, -7),  # RFC 3339, -07:00
            ][form]
            body = {"model": "llama-3.1-8b-instruct", "messages": list(history), "max_tokens": 512,
                    "stream": turn == 1, "user": email}
            if turn == 1:
                response = chunks(answer)  # streamed, no usage
            elif turn == 2 and uid == "user-4410":
                response = sse(answer)  # raw SSE text, no usage
            else:
                response = completion(answer, usage(approx_tokens(history), len(answer.split()) + 2,
                                                    cached=1024 if turn else 0))
            recs.append((start + dur, {
                "timestamp": start_field,
                "end_time": iso(start + dur),
                "client_ip": f"203.0.113.{rng.randint(2, 250)}",
                "user_agent": "ExampleShopApp/4.2 (iPhone; iOS 17.5)",
                "request_id": f"req_{uid}_{turn}_" + "".join(rng.choice("0123456789abcdef") for _ in range(12)),
                "authorization": "Bearer sk-live-" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(32)),
                "request": body,
                "response": response,
            }))
            history.append({"role": "assistant", "content": answer})
            t += dur + rng.uniform(3, 20)  # think time
    # A tool-calling exchange: the tool call, then the request with its result.
    start = t + 1.0
    call = [{"id": "call_Q1w2E3r4", "type": "function",
             "function": {"name": "lookup_order", "arguments": json.dumps({"order_id": "SO-99812-XK"})}}]
    msgs = [{"role": "system", "content": SUPPORT_SYSTEM},
            {"role": "user", "content": "Where is my order SO-99812-XK? My phone is +1 555 0100 2233."}]
    recs.append((start + 1.2, {
        "timestamp": start, "latency_ms": 1200.5,
        "request": {"model": "llama-3.1-8b-instruct", "messages": msgs, "tools": TOOLS, "tool_choice": "auto"},
        "response": completion(None, usage(approx_tokens(msgs) + 180, 22), tool_calls=call),
    }))
    msgs2 = msgs + [{"role": "assistant", "content": None, "tool_calls": call},
                    {"role": "tool", "tool_call_id": "call_Q1w2E3r4",
                     "content": json.dumps({"status": "in transit", "eta": "2024-12-03", "carrier_ref": "ZX-4471-0093"})}]
    start2 = start + 1.5
    recs.append((start2 + 2.0, {
        "timestamp": start2, "latency_ms": 2000,
        "request": {"model": "llama-3.1-8b-instruct", "messages": msgs2, "tools": TOOLS},
        "response": completion("Your order is in transit and should arrive on 3 December.",
                               usage(approx_tokens(msgs2) + 200, 16)),
    }))
    # Coding assistant with multi-part content and an image, no usage at all.
    start3 = start2 + 0.3
    recs.append((start3 + 5, {
        "timestamp": iso(start3),
        "request": {"model": "qwen2.5-coder-32b", "messages": [
            {"role": "system", "content": CODE_SYSTEM},
            {"role": "user", "content": [
                {"type": "text", "text": "Why does this fail? " + text(60)},
                {"type": "image_url", "image_url": {"url": "https://files.example.com/private/screenshot-8812.png"}},
            ]}]},
        "response": completion("The loop never ends because " + text(80)),
    }))
    # A completions request with token ids, and one with text and a reasoning model.
    start4 = start3 + 0.01
    recs.append((start4 + 0.4, {
        "timestamp": start4, "request": {"model": "llama-3.1-8b", "prompt": [rng.randint(100, 20000) for _ in range(700)], "max_tokens": 64},
        "response": {"object": "text_completion", "choices": [{"text": text(30)}], "usage": usage(700, 64)},
    }))
    recs.append((start4 + 9, {
        "timestamp": start4 + 0.02, "request": {"model": "o-mini-reasoner", "messages": [{"role": "user", "content": text(50)}], "max_completion_tokens": 4096},
        "response": completion(text(20), usage(61, 1450, reasoning=1400)),
    }))
    # A rate-limited request: dropped as failed_request.
    recs.append((start4 + 0.05, {
        "timestamp": start4 + 0.04, "status_code": 429,
        "request": {"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "Please summarise the attached contract for Jane Roe"}]},
        "response": {"error": {"message": "Rate limit reached for org-Abc123XyZ", "type": "rate_limit"}},
    }))
    # A huge message (about 120 kB of text).
    start5 = start4 + 0.5
    recs.append((start5 + 30, {
        "timestamp": start5,
        "request": {"model": "llama-3.1-8b-instruct", "messages": [
            {"role": "user", "content": "Summarise this log dump:\n" + "\n".join(text(20) for _ in range(900))}]},
        "response": completion(text(100), usage(19000, 130)),
    }))
    # No response logged at all: the output is the request's cap.
    recs.append((start5 + 1, {
        "timestamp": start5 + 0.7,
        "request": {"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": text(25)}], "max_tokens": 300},
    }))
    recs.sort(key=lambda r: r[0])  # logged at completion
    lines = [json.dumps(r[1], ensure_ascii=False).encode() for r in recs]
    # A line with bytes that are not UTF-8 inside a message (a client that
    # sent Latin-1): kept, with the bytes replaced.
    bad = {"timestamp": start5 + 0.9, "request": {"model": "llama-3.1-8b-instruct",
           "messages": [{"role": "user", "content": "Caf\u00e9 menu for Ren\u00e9e, please " + text(10)}]},
           "response": completion(text(12), usage(40, 14))}
    raw = json.dumps(bad, ensure_ascii=False).encode().replace("Caf\u00e9".encode(), b"Caf\xe9")
    lines.insert(len(lines) // 2, raw)
    (HERE / "gateway.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with gzip.GzipFile(HERE / "gateway.jsonl.gz", "wb", mtime=0) as f:
        f.write(b"\n".join(lines) + b"\n")
    # The same log cut while being written: the last line ends mid-record.
    cut = b"\n".join(lines[:5]) + b"\n" + lines[5][: len(lines[5]) // 2]
    (HERE / "gateway_cut.jsonl").write_bytes(cut)


def litellm():
    """LiteLLM spend-log rows (as exported from LiteLLM_SpendLogs)."""
    rows = []
    t = T0 + 3600
    for i in range(8):
        uid, email = USERS[i % 3]
        start = t + i * 2.5
        dur = 1.0 + (i % 4) * 0.7
        msgs = [{"role": "system", "content": CODE_SYSTEM}, {"role": "user", "content": text(20 + i)}]
        answer = text(30)
        row = {
            "request_id": f"chatcmpl-{i:04d}-" + "".join(rng.choice("abcdef0123456789") for _ in range(16)),
            "call_type": "acompletion",
            "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
            "spend": 0.00042 * (i + 1),
            "total_tokens": 0, "prompt_tokens": 0, "completion_tokens": 0,
            "startTime": naive(start) if i % 2 == 0 else iso(start),
            "endTime": naive(start + dur) if i % 2 == 0 else iso(start + dur),
            "completionStartTime": iso(start + 0.2),
            "model": "claude-3-5-sonnet" if i % 3 == 0 else "gpt-4o-mini",
            "model_group": "default",
            "api_base": "https://llm-gateway.internal.example.com/v1",
            "user": email,
            "end_user": uid,
            "team_id": "team-payments",
            "metadata": json.dumps({"user_api_key_alias": f"{uid}-laptop", "user_api_key_user_id": uid,
                                    "tags": ["prod", "eu-west-1"], "requester_ip_address": f"198.51.100.{10 + i}"}),
            "cache_hit": "False",
            "requester_ip_address": f"198.51.100.{10 + i}",
            "session_id": f"sess-{uid}-{'a' if i < 6 else 'b'}",
            "status": "success",
            # LiteLLM stores messages and response as JSON text in some exports.
            "messages": json.dumps(msgs) if i % 2 else msgs,
            "response": json.dumps(completion(answer, usage(approx_tokens(msgs), 41))) if i % 2
            else completion(answer, usage(approx_tokens(msgs), 41)),
        }
        if i == 5:
            row["status"] = "failure"
            row["response"] = {}
        if i == 6:
            # No usage anywhere: counted by the tokenizer.
            row["response"] = completion(answer)
        rows.append(row)
    (HERE / "litellm_spend.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def batch():
    """An OpenAI Batch API input file and its output file (in another order)."""
    inputs, outputs = [], []
    for i in range(6):
        body = {"model": "gpt-4o-mini", "max_tokens": 200,
                "messages": [{"role": "system", "content": SUPPORT_SYSTEM},
                             {"role": "user", "content": f"Classify ticket #{4000 + i}: " + text(25)}]}
        cid = f"ticket-{4000 + i}-maria.lopez@example.org"
        inputs.append({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body})
        if i == 4:
            continue  # never answered: dropped as no_batch_output
        resp_body = completion(text(8), usage(approx_tokens(body["messages"]), 9 + i, cached=1024))
        out = {"id": f"batch_req_{i:03d}", "custom_id": cid,
               "response": {"status_code": 200, "request_id": f"req-{i:06d}", "body": resp_body}, "error": None}
        if i == 2:
            out["response"] = {"status_code": 500, "request_id": "req-x", "body": {"error": {"message": "server error"}}}
        outputs.append(out)
    rng.shuffle(outputs)
    (HERE / "batch_input.jsonl").write_text("".join(json.dumps(r) + "\n" for r in inputs))
    (HERE / "batch_output.jsonl").write_text("".join(json.dumps(r) + "\n" for r in outputs))


if __name__ == "__main__":
    gateway()
    litellm()
    batch()
