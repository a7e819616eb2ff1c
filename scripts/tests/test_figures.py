"""One definition of every figure: a run and a sweep, each figure computed
through every path a user has — the summary JSON, the sweep table, `report
--format json`, analysis.sql in DuckDB and analyze.py in pandas — must agree
to float rounding."""
import csv
import json
import subprocess
import sys

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import ROOT

SLO = "ttft=60ms,tpot=9ms"
SLO_MS = (60, 9)
REL = 1e-6

# Flat figure name -> where it is in a Summary (summary JSON, report JSON).
FIGURES = {
    "requests": ("requests",),
    "scheduled_rate": ("fidelity", "scheduled_rate"),
    "achieved_rate": ("fidelity", "achieved_rate"),
    "request_throughput": ("request_throughput",),
    "output_token_throughput": ("output_token_throughput",),
    "input_token_throughput": ("input_token_throughput",),
    "window_s": ("window_s",),
    "goodput_fraction": ("goodput", "fraction"),
    "goodput_rate": ("goodput", "rate"),
    "send_lag_p99_ms": ("fidelity", "send_lag", "p99_ms"),
}
for name, key in [("ttft", "ttft_from_schedule"), ("tpot", "tpot"), ("e2e", "e2e_from_schedule"), ("itl", "itl")]:
    for p in ("p50", "p90", "p99"):
        FIGURES[f"{name}_{p}_ms"] = (key, f"{p}_ms")


def from_summary(s):
    out = {}
    for name, path in FIGURES.items():
        v = s
        for k in path:
            v = v[k]
        out[name] = v
    out["ok"] = s["outcomes"].get("ok", 0)
    out["errors"] = s["requests"] - out["ok"]
    return out


def sql_summary(results):
    con = duckdb.connect()
    con.execute(f"SET VARIABLE results_dir = '{results}'")
    con.execute(f"SET VARIABLE trace_path = '{ROOT / 'datasets' / 'azure_conv_small.parquet'}'")
    con.execute(f"SET VARIABLE slo_ttft_ms = {SLO_MS[0]}")
    con.execute(f"SET VARIABLE slo_tpot_ms = {SLO_MS[1]}")
    con.execute((ROOT / "scripts" / "analysis.sql").read_text())
    return con.execute("SELECT * FROM step_summary").df()


def py_summary(results, out):
    proc = subprocess.run(
        [sys.executable, ROOT / "scripts" / "analyze.py", results, "--out", out],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # No --slo-* flags: the run's own SLO, announced.
    assert "slo           TTFT <= 60 ms, TPOT <= 9 ms (the run's own --slo)" in proc.stdout, proc.stdout
    return pd.read_csv(out / "step_summary.csv"), proc.stdout


def assert_same(expected, got, what, names):
    for name in names:
        if name not in got:
            continue
        e, g = float(expected[name]), float(got[name])
        assert g == pytest.approx(e, rel=REL, abs=1e-9), f"{what}: {name}: {g} != {e} (summary)"


@pytest.fixture(scope="module")
def run_dir(run, datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run("replay", datasets / "azure_conv_small.parquet", "--rate", "12", "--requests", "80", "--seed", "7",
        "--slo", SLO, "--percentiles", "95,99.9", "-o", out / "results.parquet",
        "--summary-json", out / "summary.json", "-q")
    return out


def test_a_runs_figures_agree_through_every_path(run, run_dir, tmp_path):
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = from_summary(summary)
    assert expected["requests"] == 80 and expected["ok"] == 80
    # The SLO splits the run: goodput is neither 0 nor 1, so it is tested.
    assert 0.0 < expected["goodput_fraction"] < 1.0, expected["goodput_fraction"]
    names = list(expected)

    report = json.loads(run("report", run_dir / "results.parquet", "--format", "json", "--percentiles", "95,99.9").stdout)
    got = from_summary(report[0]["summary"])
    assert_same(expected, got, "report --format json", names)
    assert report[0]["summary"]["ttft_from_schedule"]["percentiles"] == pytest.approx(
        summary["ttft_from_schedule"]["percentiles"], rel=REL)

    sql = sql_summary(run_dir / "results.parquet")
    assert len(sql) == 1
    assert_same(expected, sql.iloc[0].to_dict(), "analysis.sql", names)

    py, _ = py_summary(run_dir / "results.parquet", tmp_path / "a")
    assert_same(expected, py.iloc[0].to_dict(), "analyze.py", names)

    # The extra percentiles against numpy's default method on the rows.
    df = pd.read_parquet(run_dir / "results.parquet")
    ok = df[df["outcome"] == "ok"]
    ttft = (ok["send_lag_us"] + ok["ttft_us"]).to_numpy(dtype=float)
    for p in (95, 99.9):
        key = "p99.9" if p == 99.9 else "p95"
        assert summary["ttft_from_schedule"]["percentiles"][key] == pytest.approx(np.percentile(ttft, p) / 1e3, rel=REL)
    # And in DuckDB, read straight from the file.
    p999 = duckdb.connect().execute(
        f"SELECT quantile_cont(send_lag_us + ttft_us, 0.999) / 1e3 FROM read_parquet('{run_dir / 'results.parquet'}') "
        "WHERE outcome = 'ok'").fetchone()[0]
    assert summary["ttft_from_schedule"]["percentiles"]["p99.9"] == pytest.approx(p999, rel=REL)


@pytest.fixture(scope="module")
def sweep_dir(run, datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    run("sweep", datasets / "azure_conv_small.parquet", "--out-dir", out, "--rates", "6,12",
        "--requests", "40", "--seed", "3", "--slo", SLO, "--goodput", "0.5", "--search-steps", "0",
        "--percentiles", "95", "-q")
    return out


def test_a_sweeps_figures_agree_through_every_path(run, sweep_dir, tmp_path):
    # Each step's own summary, as the run stored it in its results file.
    stored = []
    for rate in (6, 12):
        meta = pq.read_metadata(sweep_dir / f"rate={rate}" / "results.parquet").metadata
        s = json.loads(meta[b"llm_replay.summary"])
        assert "p95" in s["ttft_from_schedule"]["percentiles"]
        stored.append(from_summary(s))
    names = list(stored[0])

    with open(sweep_dir / "_sweep.csv") as f:
        table = sorted(csv.DictReader(f), key=lambda r: float(r["offered"]))
    assert len(table) == 2
    report = json.loads(run("report", sweep_dir, "--format", "json").stdout)[0]
    steps = sorted(report["steps"], key=lambda r: r["offered"])
    sql = sql_summary(sweep_dir)
    py, stdout = py_summary(sweep_dir, tmp_path / "a")
    assert list(sql["step"]) == list(py["step"]) == ["rate=6", "rate=12"]
    for i, expected in enumerate(stored):
        for what, got in [("_sweep.csv", table[i]), ("report --format json", steps[i]),
                          ("analysis.sql", sql.iloc[i].to_dict()), ("analyze.py", py.iloc[i].to_dict())]:
            assert_same(expected, got, f"step {i}: {what}", names)
    # The sweep table has every flat figure but ITL p90 (and the counters).
    assert set(names) - set(table[0]) == {"itl_p90_ms"}, set(names) - set(table[0])
    # --percentiles 95: a column per metric, in the CSV and the Parquet.
    parquet = pd.read_parquet(sweep_dir / "_sweep.parquet", dtype_backend="pyarrow").sort_values("offered")
    for i, rate in enumerate((6, 12)):
        meta = pq.read_metadata(sweep_dir / f"rate={rate}" / "results.parquet").metadata
        s = json.loads(meta[b"llm_replay.summary"])
        for col, key in [("ttft", "ttft_from_schedule"), ("tpot", "tpot"), ("itl", "itl"), ("e2e", "e2e_from_schedule")]:
            want = s[key]["percentiles"]["p95"]
            assert float(table[i][f"{col}_p95_ms"]) == pytest.approx(want, rel=REL)
            assert float(parquet[f"{col}_p95_ms"].iloc[i]) == pytest.approx(want, rel=REL)

    # The conclusions agree too: _capacity.json, report and analyze.py.
    capacity = json.loads((sweep_dir / "_capacity.json").read_text())
    assert report["capacity"]["slo_capacity_rate"] == capacity["slo_capacity_rate"]
    assert report["capacity"]["knee_offered_rate"] == capacity["knee_offered_rate"]
    if capacity.get("knee_achieved_rate") is not None:
        assert f"above {capacity['knee_achieved_rate']:.2f} req/s achieved" in stdout
    else:
        assert "knee          not reached" in stdout


def test_the_issues_sweep_reports_no_false_knee_and_a_lower_bound(run, datasets, tmp_path):
    """sweep --rates 4,8 --step-duration 5s on the simulator: 8 req/s (Poisson,
    sending less than 8) passes, so there is no knee above 4, and a capacity
    every step met is a lower bound."""
    out = tmp_path / "s"
    proc = run("sweep", datasets / "azure_conv_small.parquet", "--out-dir", out, "--rates", "4,8",
               "--step-duration", "5s", "--slo", "ttft=500ms", "--search-steps", "0", "-q")
    text = proc.stdout
    assert "knee          not reached" in text, text
    assert "above 4" not in text, text
    assert "capacity      ≥ " in text and "every step passed" in text, text
    capacity = json.loads((out / "_capacity.json").read_text())
    assert capacity["knee_offered_rate"] is None and capacity["slo_capacity_lower_bound"] is True
    assert capacity["slo_capacity_rate"] == 8
    steps = pd.read_csv(out / "_sweep.csv")
    # Every request succeeded; throughput counts those completed in the
    # steady window, so the drain tail does not dilute it: it is the rate
    # sent but for the requests still in flight at the last send.
    assert (steps["ok"] == steps["requests"]).all()
    for s in steps.itertuples():
        in_flight_share = 1 - s.request_throughput / s.achieved_rate
        assert 0 <= in_flight_share < 0.35, (s.offered, s.request_throughput, s.achieved_rate)
    # analyze.py on the same sweep finds the same.
    proc = subprocess.run([sys.executable, ROOT / "scripts" / "analyze.py", out, "--out", tmp_path / "a"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "knee          not reached" in proc.stdout and "capacity      ≥ " in proc.stdout, proc.stdout
    assert "TTFT <= 500 ms" in proc.stdout


def test_analyze_py_reads_one_results_file_and_says_its_slo(run, datasets, tmp_path):
    out = tmp_path / "results-20261204T180000.parquet"
    run("replay", datasets / "azure_conv_small.parquet", "--rate", "10", "--requests", "20", "-o", out, "-q")
    script = [sys.executable, ROOT / "scripts" / "analyze.py", out]
    proc = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "NotADirectoryError" not in proc.stderr
    # No --slo on the run, no flags: the default, said so.
    assert "slo           TTFT <= 500 ms, TPOT <= 50 ms (the default" in proc.stdout, proc.stdout
    summary = pd.read_csv(tmp_path / "results-20261204T180000-analysis" / "step_summary.csv")
    assert summary["requests"].tolist() == [20]
    # Flags win, and are said.
    proc = subprocess.run(script + ["--slo-ttft-ms", "1", "--out", tmp_path / "b"], capture_output=True, text=True,
                          timeout=120)
    assert "slo           TTFT <= 1 ms, TPOT <= none (from the flags)" in proc.stdout, proc.stdout
    assert pd.read_csv(tmp_path / "b" / "step_summary.csv")["goodput_fraction"].tolist() == [0.0]
    missing = subprocess.run([sys.executable, ROOT / "scripts" / "analyze.py", tmp_path / "nope.parquet"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "no such file" in missing.stderr


def test_a_runs_own_cap_is_named_not_the_load_generator(run, datasets, tmp_path):
    out, js = tmp_path / "r.parquet", tmp_path / "s.json"
    proc = run("replay", datasets / "azure_conv_small.parquet", "--rate", "20", "--requests", "40",
               "--arrivals", "constant", "--max-in-flight", "2", "-o", out, "--summary-json", js, "-q")
    s = json.loads(js.read_text())
    verdict = s["fidelity"]["verdict"]
    assert s["fidelity"]["generator_bottleneck"] is False, verdict
    assert "own --max-in-flight or --max-connections cap" in verdict, verdict
    assert "load generator, not the server" not in proc.stdout
