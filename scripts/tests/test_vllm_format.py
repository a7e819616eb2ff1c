"""replay --summary-format vllm writes the keys of vLLM's
benchmark_serving.py --save-result JSON, with values by vLLM's definitions
(latency from the send, lists in seconds, numpy percentiles)."""
import json

import numpy as np
import pandas as pd
import pytest

VLLM_KEYS = {
    "date", "backend", "model_id", "tokenizer_id", "num_prompts", "request_rate", "burstiness",
    "max_concurrency", "duration", "completed", "total_input_tokens", "total_output_tokens",
    "request_throughput", "request_goodput", "output_throughput", "total_token_throughput", "input_lens",
    "output_lens", "ttfts", "itls", "generated_texts", "errors",
} | {f"{stat}_{m}_ms" for stat in ("mean", "median", "std", "p99") for m in ("ttft", "tpot", "itl", "e2el")}


def test_vllm_result_keys_and_values(run, datasets, tmp_path):
    out, js = tmp_path / "r.parquet", tmp_path / "vllm.json"
    run("replay", datasets / "azure_conv_small.parquet", "--rate", "15", "--requests", "50", "--api", "chat",
        "--slo", "ttft=40ms,tpot=8ms", "--percentiles", "90,99.9", "--sim-fail-500", "0.1",
        "-o", out, "--summary-json", js, "--summary-format", "vllm", "-q", check=False)
    r = json.loads(js.read_text())
    missing = VLLM_KEYS - set(r)
    assert not missing, missing
    assert {"p90_ttft_ms", "p99.9_e2el_ms"} <= set(r)
    df = pd.read_parquet(out)
    ok = df[df["outcome"] == "ok"]
    assert 0 < len(ok) < 50, "some requests failed"
    assert r["num_prompts"] == 50 and r["completed"] == len(ok)
    assert r["backend"] == "openai-chat" and r["model_id"] == "llm-replay-sim"
    assert r["request_rate"] == 15 and r["burstiness"] == 1.0 and r["max_concurrency"] is None
    assert len(r["ttfts"]) == len(r["itls"]) == len(r["errors"]) == len(r["input_lens"]) == 50
    assert sum(1 for e in r["errors"] if e) == 50 - len(ok)
    assert r["total_output_tokens"] == int(ok["usage_completion_tokens"].fillna(ok["output_tokens"]).sum())
    ttft_ms = ok["ttft_us"].to_numpy(float) / 1e3
    assert r["median_ttft_ms"] == pytest.approx(np.median(ttft_ms), rel=1e-9)
    assert r["p99_ttft_ms"] == pytest.approx(np.percentile(ttft_ms, 99), rel=1e-9)
    assert r["std_ttft_ms"] == pytest.approx(np.std(ttft_ms), rel=1e-9)
    e2e_ms = ok["e2e_us"].to_numpy(float) / 1e3
    assert r["p99.9_e2el_ms"] == pytest.approx(np.percentile(e2e_ms, 99.9), rel=1e-9)
    itl_ms = np.concatenate([np.asarray(x, float) for x in ok["itl_us"]]) / 1e3
    assert r["mean_itl_ms"] == pytest.approx(itl_ms.mean(), rel=1e-9)
    assert sorted(r["ttfts"])[-1] == pytest.approx(ttft_ms.max() / 1e3)
    span = (df["completed_at"].max() - df["sent_at"].min()).total_seconds()
    assert r["duration"] == pytest.approx(span, rel=1e-6)
    assert r["request_throughput"] == pytest.approx(len(ok) / span, rel=1e-6)
    assert r["request_goodput"] is not None and 0 <= r["request_goodput"] <= r["request_throughput"]


def test_vllm_format_needs_summary_json(run, datasets, tmp_path):
    proc = run("replay", datasets / "azure_conv_small.parquet", "--rate", "10", "--requests", "2",
               "-o", tmp_path / "r.parquet", "--summary-format", "vllm", "-q", check=False)
    assert proc.returncode == 64, "a usage error"
    assert "--summary-json" in proc.stderr
