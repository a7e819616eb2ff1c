#!/usr/bin/env python3
"""llm-replay results in pandas: the views of analysis.sql, and plots.

    python scripts/analyze.py RESULTS [--trace TRACE] [--out DIR]
                              [--slo-ttft-ms MS] [--slo-tpot-ms MS] [--goodput 0.99]

RESULTS is a sweep directory (rate=4/results.parquet, ...), a folder
holding results*.parquet files, or one results file (what `replay`
writes). Writes step_summary.csv, timeline.csv, latency_by_input_length.csv
(and latency_by_turn.csv with --trace) and PNG plots into --out (default:
RESULTS/analysis, or beside a results file).

The goodput SLO is the one the run or sweep was given (--slo, kept in the
results metadata) unless --slo-ttft-ms/--slo-tpot-ms say otherwise, and
500/50 ms when neither has one; the SLO applied is printed first.

Every figure is computed as llm-replay computes it: percentiles by linear
interpolation (pandas' quantile), throughput per second of the steady
window (first to last scheduled send), knee and capacity from the achieved
rate (docs/results-format.md).
"""
import argparse
import json
import pathlib
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


DEFAULT_SLO_TTFT_MS = 500.0
DEFAULT_SLO_TPOT_MS = 50.0


def results_files(results):
    """The results files of a sweep directory, a folder, or one file."""
    path = pathlib.Path(results)
    if path.is_file():
        return [path]
    if not path.exists():
        raise SystemExit(f"{results}: no such file or directory")
    return sorted(p for p in path.glob("**/results*.parquet") if p.is_file())


def load_results(results):
    """Every results file of `results`, with its step (`rate=4`, or the
    file's name for a run of its own). Integer columns keep their type and
    nulls (pyarrow dtypes), as `pd.read_parquet(..., dtype_backend="pyarrow")`
    gives them."""
    frames = []
    for path in results_files(results):
        df = pd.read_parquet(path, engine="pyarrow", dtype_backend="pyarrow")
        m = re.search(r"(rate|speedup|concurrency)=([0-9.]+)", str(path))
        df["step"] = m.group(0) if m else path.stem
        frames.append(df)
    if not frames:
        raise SystemExit(f"{results}: no results*.parquet files")
    df = pd.concat(frames, ignore_index=True)
    df["ttft_sched_us"] = (df["send_lag_us"] + df["ttft_us"]).astype("float64")
    df["e2e_sched_us"] = (df["send_lag_us"] + df["e2e_us"]).astype("float64")
    tokens = df["usage_completion_tokens"].fillna(df["output_tokens"]).astype("float64")
    span = (df["e2e_us"] - df["ttft_us"]).astype("float64")
    df["tpot_us"] = (span / (tokens - 1)).where(tokens > 1)
    return df


def metadata_slo(results):
    """(ttft_ms, tpot_ms) of the SLO the run or sweep was given, if any:
    `_capacity.json` (or `capacity.json`) of a sweep, else the first
    results file's run config."""
    path = pathlib.Path(results)
    text = None
    if path.is_dir():
        for name in ("_capacity.json", "capacity.json"):
            if (path / name).exists():
                text = json.loads((path / name).read_text()).get("slo")
                break
    if text is None:
        import pyarrow.parquet as pq

        files = results_files(results)
        if files:
            meta = pq.read_metadata(files[0]).metadata or {}
            config = meta.get(b"llm_replay.config")
            if config:
                text = json.loads(config).get("slo")
    if not text:
        return None
    slo = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        m = re.fullmatch(r"([0-9.]+)\s*(us|µs|ms|s)", value.strip())
        if m:
            scale = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
            slo[key.strip()] = float(m.group(1)) * scale
    return slo.get("ttft"), slo.get("tpot")


def rate(times):
    times = times.dropna()
    if len(times) < 2:
        return np.nan
    span = (times.max() - times.min()).total_seconds()
    return (len(times) - 1) / span if span > 0 else np.nan


def epoch_us(times):
    """Microseconds since the epoch of a timestamp column (pyarrow dtypes,
    as `load_results` reads them), as exact integers in floats."""
    return times.astype("int64[pyarrow]").astype("float64")


def epoch_us_one(t):
    """Microseconds since the epoch of one timestamp."""
    return float(pd.Timestamp(t).value // 1000)


def step_summary(df, slo_ttft_ms, slo_tpot_ms):
    rows = []
    for step, g in df[df["phase"] == "steady"].groupby("step"):
        ok = g[g["outcome"] == "ok"]
        met = (
            (g["outcome"] == "ok")
            & (g["ttft_sched_us"].fillna(0) <= slo_ttft_ms * 1e3)
            & (g["tpot_us"].fillna(0) <= slo_tpot_ms * 1e3)
        ).astype(bool)
        q = lambda s, p: s.astype("float64").quantile(p) / 1e3  # noqa: E731
        # The steady window, first to last scheduled send shifted a median
        # E2E (from the send) later: successes completed inside it, per
        # second of it; when none did, every success per second of the
        # whole run.
        first, last = g["scheduled_at"].min(), g["scheduled_at"].max()
        span = (last - first).total_seconds()
        shift = ok["e2e_us"].astype("float64").quantile(0.5) if len(ok) else 0.0
        done_us = epoch_us(ok["completed_at"])
        inside = ok[(done_us >= epoch_us_one(first) + shift) & (done_us <= epoch_us_one(last) + shift)]
        if span > 0 and len(inside) > 0:
            window, done = span, inside
        else:
            end = max(g["completed_at"].max(), g["sent_at"].max())
            window, done = (end - first).total_seconds(), ok
        per_s = 1 / window if window > 0 else np.nan
        out_tokens = done["usage_completion_tokens"].fillna(done["output_tokens"]).astype("float64").sum()
        in_tokens = done["usage_prompt_tokens"].fillna(done["input_tokens"]).astype("float64").sum()
        done_met = met.loc[done.index]
        itl = ok["itl_us"].explode().dropna().astype("float64")
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
            "request_throughput": len(done) * per_s,
            "output_token_throughput": out_tokens * per_s,
            "input_token_throughput": in_tokens * per_s,
            "goodput_rate": done_met.sum() * per_s,
            "window_s": window,
            "ttft_p90_ms": q(ok["ttft_sched_us"], 0.9),
            "tpot_p90_ms": q(ok["tpot_us"], 0.9),
            "itl_p50_ms": q(itl, 0.5),
            "itl_p99_ms": q(itl, 0.99),
            "e2e_p50_ms": q(ok["e2e_sched_us"], 0.5),
            "e2e_p90_ms": q(ok["e2e_sched_us"], 0.9),
        })
    return pd.DataFrame(rows).sort_values("scheduled_rate").reset_index(drop=True)


def conclusions(summary, goodput_target, slo_text):
    """The knee and the SLO capacity by llm-replay's rule (report/capacity.rs):
    judged from the achieved rate; the knee is the highest step up to which
    each step's extra achieved load still turned into at least half as much
    extra throughput; the capacity is the highest step whose goodput met the
    target, `≥` when no higher step was run."""
    lines = []
    steps = summary.sort_values("achieved_rate").reset_index(drop=True)
    knee = None
    if (steps["ok"] > 0).any():
        for a, b in zip(steps.itertuples(), steps.iloc[1:].itertuples()):
            d_load = b.achieved_rate - a.achieved_rate
            if d_load > 0 and b.request_throughput - a.request_throughput < 0.5 * d_load:
                knee = a
                break
    if knee is not None:
        lines.append(f"knee          throughput stops following the load above {knee.achieved_rate:.2f} req/s achieved ({knee.step})")
    else:
        lines.append(
            f"knee          not reached: throughput kept up with every load, up to {steps['achieved_rate'].max():.2f} req/s achieved (the knee is above it)"
        )
    passing = summary[summary["goodput_fraction"] >= goodput_target]
    if passing.empty:
        lines.append(f"capacity      no step met {slo_text} for {goodput_target:.0%} of requests")
    else:
        best = passing.loc[passing["scheduled_rate"].idxmax()]
        ge = "≥ " if best["scheduled_rate"] >= summary["scheduled_rate"].max() else ""
        lines.append(
            f"capacity      {ge}{best['achieved_rate']:.2f} req/s achieved ({best['step']}) with {goodput_target:.0%} of requests meeting {slo_text}"
            + (": the highest step passed, higher loads were not tried" if ge else "")
        )
    return lines


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
    p.add_argument("results_dir", metavar="RESULTS",
                   help="a sweep directory, a folder of results*.parquet, or one results file")
    p.add_argument("--trace")
    p.add_argument("--out")
    p.add_argument("--slo-ttft-ms", type=float,
                   help="goodput objective on TTFT from the schedule (default: the run's --slo, else 500)")
    p.add_argument("--slo-tpot-ms", type=float,
                   help="goodput objective on TPOT (default: the run's --slo, else 50)")
    p.add_argument("--goodput", type=float, default=0.99,
                   help="share of requests that must meet the SLO for the capacity (default 0.99)")
    a = p.parse_args()
    target = pathlib.Path(a.results_dir)
    if not target.exists():
        raise SystemExit(f"{target}: no such file or directory")
    default_out = target.parent / (target.stem + "-analysis") if target.is_file() else target / "analysis"
    out = pathlib.Path(a.out or default_out)
    out.mkdir(parents=True, exist_ok=True)
    df = load_results(a.results_dir)
    given = metadata_slo(a.results_dir) or (None, None)
    ttft = a.slo_ttft_ms if a.slo_ttft_ms is not None else given[0]
    tpot = a.slo_tpot_ms if a.slo_tpot_ms is not None else given[1]
    source = "from the flags" if (a.slo_ttft_ms is not None or a.slo_tpot_ms is not None) else (
        "the run's own --slo" if given != (None, None) else "the default: pass --slo-ttft-ms/--slo-tpot-ms")
    # An objective the run did not set is no constraint.
    if given != (None, None) or a.slo_ttft_ms is not None or a.slo_tpot_ms is not None:
        ttft = ttft if ttft is not None else float("inf")
        tpot = tpot if tpot is not None else float("inf")
    else:
        ttft, tpot = DEFAULT_SLO_TTFT_MS, DEFAULT_SLO_TPOT_MS
    fmt = lambda v: "none" if v == float("inf") else f"{v:g} ms"  # noqa: E731
    slo_text = f"TTFT <= {fmt(ttft)}, TPOT <= {fmt(tpot)}"
    print(f"slo           {slo_text} ({source}); goodput counts failures as misses", file=sys.stdout)
    summary = step_summary(df, ttft, tpot)
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
    for line in conclusions(summary, a.goodput, slo_text):
        print(line)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
