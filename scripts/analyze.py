#!/usr/bin/env python3
"""llm-replay results in pandas: the views of analysis.sql, and plots.

    python scripts/analyze.py RESULTS_DIR [--trace TRACE] [--out DIR]
                              [--slo-ttft-ms 500] [--slo-tpot-ms 50]

RESULTS_DIR is a sweep directory (rate=4/results.parquet, ...) or a folder
holding results*.parquet files. Writes step_summary.csv, timeline.csv,
latency_by_input_length.csv (and latency_by_turn.csv with --trace) and
PNG plots into --out (default: RESULTS_DIR/analysis).
"""
import argparse
import pathlib
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def load_results(results_dir):
    """Every results file below results_dir, with its step (`rate=4`)."""
    frames = []
    for path in sorted(pathlib.Path(results_dir).glob("**/results*.parquet")):
        df = pd.read_parquet(path, engine="pyarrow")
        m = re.search(r"(rate|speedup|concurrency)=([0-9.]+)", str(path))
        df["step"] = m.group(0) if m else path.stem
        frames.append(df)
    if not frames:
        raise SystemExit(f"{results_dir}: no results*.parquet files")
    df = pd.concat(frames, ignore_index=True)
    df["ttft_sched_us"] = df["send_lag_us"] + df["ttft_us"]
    df["e2e_sched_us"] = df["send_lag_us"] + df["e2e_us"]
    tokens = df["usage_completion_tokens"].fillna(df["output_tokens"])
    df["tpot_us"] = np.where(tokens > 1, (df["e2e_us"] - df["ttft_us"]) / (tokens - 1), np.nan)
    return df


def rate(times):
    times = times.dropna()
    if len(times) < 2:
        return np.nan
    span = (times.max() - times.min()).total_seconds()
    return (len(times) - 1) / span if span > 0 else np.nan


def step_summary(df, slo_ttft_ms, slo_tpot_ms):
    rows = []
    for step, g in df[df["phase"] == "steady"].groupby("step"):
        ok = g[g["outcome"] == "ok"]
        met = (
            (g["outcome"] == "ok")
            & (g["ttft_sched_us"] <= slo_ttft_ms * 1e3)
            & (g["tpot_us"].fillna(0) <= slo_tpot_ms * 1e3)
        )
        q = lambda s, p: s.quantile(p) / 1e3  # noqa: E731
        rows.append({
            "step": step,
            "requests": len(g),
            "ok": len(ok),
            "errors": int((g["outcome"] != "ok").sum()),
            "scheduled_rate": rate(g["scheduled_at"]),
            "achieved_rate": rate(g["sent_at"]),
            "ttft_p50_ms": q(ok["ttft_sched_us"], 0.5),
            "ttft_p99_ms": q(ok["ttft_sched_us"], 0.99),
            "tpot_p50_ms": q(ok["tpot_us"], 0.5),
            "tpot_p99_ms": q(ok["tpot_us"], 0.99),
            "e2e_p99_ms": q(ok["e2e_sched_us"], 0.99),
            "send_lag_p99_ms": q(g["send_lag_us"], 0.99),
            "goodput_fraction": met.mean(),
        })
    return pd.DataFrame(rows).sort_values("scheduled_rate").reset_index(drop=True)


def timeline(df):
    t0 = df.groupby("step")["scheduled_at"].transform("min")
    df = df.assign(second=((df["scheduled_at"] - t0).dt.total_seconds() // 1).astype(int))
    return (
        df.groupby(["step", "second"])
        .agg(
            scheduled=("request_id", "size"),
            sent=("sent_at", "count"),
            errors=("outcome", lambda s: int((s != "ok").sum())),
            ttft_p50_ms=("ttft_sched_us", lambda s: s.quantile(0.5) / 1e3),
            ttft_p99_ms=("ttft_sched_us", lambda s: s.quantile(0.99) / 1e3),
        )
        .reset_index()
    )


def latency_by_input_length(df):
    ok = df[df["outcome"] == "ok"].copy()
    ok["input_tokens_up_to"] = (2 ** np.ceil(np.log2(ok["input_tokens"].clip(lower=1)))).astype(int)
    return (
        ok.groupby(["step", "input_tokens_up_to"])
        .agg(
            requests=("request_id", "size"),
            ttft_p50_ms=("ttft_sched_us", lambda s: s.quantile(0.5) / 1e3),
            ttft_p99_ms=("ttft_sched_us", lambda s: s.quantile(0.99) / 1e3),
            e2e_p99_ms=("e2e_sched_us", lambda s: s.quantile(0.99) / 1e3),
        )
        .reset_index()
    )


def with_trace(df, trace_path):
    trace = pd.read_parquet(trace_path, columns=["request_id", "session_id", "turn_index", "arrival_offset_us"])
    # Results of a session replay carry session_id and turn_index
    # themselves; the trace's fill them in for rows replayed independently.
    out = df.merge(trace, on="request_id", how="left", validate="many_to_one", suffixes=("", "_trace"))
    for c in ("session_id", "turn_index"):
        if c + "_trace" in out:
            out[c] = out[c].fillna(out.pop(c + "_trace")) if c in df else out.pop(c + "_trace")
    return out


def plot(summary, out):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    x = summary["scheduled_rate"]
    for col, label in [("ttft_p50_ms", "TTFT p50"), ("ttft_p99_ms", "TTFT p99")]:
        axes[0].plot(x, summary[col], marker="o", label=label)
    axes[0].set(title="TTFT from the schedule", xlabel="offered req/s", ylabel="ms")
    for col, label in [("tpot_p50_ms", "TPOT p50"), ("tpot_p99_ms", "TPOT p99")]:
        axes[1].plot(x, summary[col], marker="o", label=label)
    axes[1].set(title="Time per output token", xlabel="offered req/s", ylabel="ms")
    axes[2].plot(x, x, linestyle="--", color="grey", label="offered")
    axes[2].plot(x, summary["achieved_rate"], marker="o", label="sent")
    axes[2].plot(x, summary["goodput_fraction"] * x, marker="o", label="meeting the SLO")
    axes[2].set(title="Throughput", xlabel="offered req/s", ylabel="req/s")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=90)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results_dir")
    p.add_argument("--trace")
    p.add_argument("--out")
    p.add_argument("--slo-ttft-ms", type=float, default=500.0)
    p.add_argument("--slo-tpot-ms", type=float, default=50.0)
    a = p.parse_args()
    out = pathlib.Path(a.out or pathlib.Path(a.results_dir) / "analysis")
    out.mkdir(parents=True, exist_ok=True)
    df = load_results(a.results_dir)
    summary = step_summary(df, a.slo_ttft_ms, a.slo_tpot_ms)
    summary.to_csv(out / "step_summary.csv", index=False)
    timeline(df).to_csv(out / "timeline.csv", index=False)
    latency_by_input_length(df).to_csv(out / "latency_by_input_length.csv", index=False)
    if a.trace:
        joined = with_trace(df, a.trace)
        by_turn = (
            joined[joined["outcome"] == "ok"]
            .groupby(["step", "turn_index"], dropna=False)["ttft_sched_us"]
            .quantile(0.99)
            .div(1e3)
            .rename("ttft_p99_ms")
            .reset_index()
        )
        by_turn.to_csv(out / "latency_by_turn.csv", index=False)
    plot(summary, out)
    print(summary.to_string(index=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
