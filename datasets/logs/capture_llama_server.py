#!/usr/bin/env python3
"""Captures `llama_server_capture.jsonl`: a gateway-style log of real
exchanges with a llama.cpp server (the tiny random-weight Llama 3 model, so
replies are noise, but usage counts, streaming chunks, the chat template's
token overhead and errors are the server's own).

    python3 datasets/logs/capture_llama_server.py http://127.0.0.1:8080

Three chats resend their history (two streamed turns, one with usage in the
stream and one without), a completions request, and a prompt too long for
the slot's context (HTTP 400).
"""
import datetime as dt
import json
import random
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
OUT = Path(__file__).resolve().parent / "llama_server_capture.jsonl"
rng = random.Random(7)
WORDS = ("order refund invoice account delivery address payment schedule meeting report summary "
         "draft review code function error retry timeout metric dashboard alert deploy").split()


def text(n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def now():
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def post(path, body):
    req = urllib.request.Request(BASE + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    start = now()
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            raw = resp.read().decode()
            status = resp.status
    except urllib.error.HTTPError as e:
        raw, status = e.read().decode(), e.code
    end = now()
    if body.get("stream"):
        chunks = [json.loads(line[5:]) for line in raw.splitlines()
                  if line.startswith("data:") and line[5:].strip() != "[DONE]"]
        response = chunks
    else:
        response = json.loads(raw)
    return start, end, status, response


def reply_text(response):
    if isinstance(response, list):
        return "".join((c.get("choices") or [{}])[0].get("delta", {}).get("content") or ""
                       for c in response if c.get("choices"))
    return response["choices"][0]["message"]["content"]


records = []
system = "You are the support assistant of Example Shop. " + text(700)
for chat in range(3):
    history = [{"role": "system", "content": system}]
    for turn in range(3):
        history.append({"role": "user", "content": f"Customer {chat}: " + text(40 + 20 * turn)})
        body = {"model": "tiny-llama3", "messages": list(history), "max_tokens": 24 + 8 * turn,
                "user": f"customer-{chat}@example.org"}
        if turn == 1:
            body["stream"] = True
            if chat != 2:
                body["stream_options"] = {"include_usage": True}
        start, end, status, response = post("/v1/chat/completions", body)
        records.append({"timestamp": start, "end_time": end, "status_code": status,
                        "request": body, "response": response})
        history.append({"role": "assistant", "content": reply_text(response)})
        time.sleep(rng.uniform(0.2, 0.6))
body = {"model": "tiny-llama3", "prompt": text(120), "max_tokens": 16}
start, end, status, response = post("/v1/completions", body)
records.append({"timestamp": start, "end_time": end, "status_code": status, "request": body,
                "response": response})
# The over-long prompt is logged as a placeholder (the request fails anyway).
start, end, status, response = post("/v1/chat/completions", {
    "model": "tiny-llama3", "max_tokens": 8,
    "messages": [{"role": "user", "content": text(20000)}]})
records.append({"timestamp": start, "end_time": end, "status_code": status,
                "request": {"model": "tiny-llama3", "max_tokens": 8,
                            "messages": [{"role": "user", "content": "(a prompt of 20,000 words)"}]},
                "response": response})
OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
print(f"wrote {OUT} ({len(records)} lines)")
