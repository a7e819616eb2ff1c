"""analysis.sql (real DuckDB) and analyze.py (real pandas) on a real sweep."""
import re
import subprocess
import sys

import duckdb
import pandas as pd
import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def sweep_dir(run, datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    run("sweep", datasets / "azure_conv_small.parquet", "--out-dir", out, "--rates", "5,10",
        "--requests", "30", "--arrivals", "constant", "--slo", "ttft=2s", "--search-steps", "0",
        "--sim-decode-base-us", "500", "-q")
    return out


def test_duckdb_reads_the_whole_sweep_hive_partitioned(sweep_dir):
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT rate, count(*) FROM read_parquet('{sweep_dir}/**/results.parquet', hive_partitioning = true) "
        "GROUP BY rate ORDER BY rate"
    ).fetchall()
    assert rows == [(5, 30), (10, 30)]
    steps = con.execute(f"SELECT count(*) FROM read_parquet('{sweep_dir}/_sweep.parquet')").fetchone()[0]
    assert steps == 2


def test_analysis_sql_views(sweep_dir, datasets):
    con = duckdb.connect()
    con.execute(f"SET VARIABLE results_dir = '{sweep_dir}'")
    con.execute(f"SET VARIABLE trace_path = '{datasets / 'azure_conv_small.parquet'}'")
    con.execute("SET VARIABLE slo_ttft_ms = 2000")
    con.execute("SET VARIABLE slo_tpot_ms = 1000")
    con.execute((ROOT / "scripts" / "analysis.sql").read_text())
    summary = con.execute("SELECT step, requests, ok, ttft_p50_ms, goodput_fraction FROM step_summary").df()
    assert list(summary["step"]) == ["rate=5", "rate=10"]
    assert list(summary["requests"]) == [30, 30]
    # Cross-check a percentile against pandas on the same file.
    df = pd.read_parquet(sweep_dir / "rate=5" / "results.parquet")
    ok = df[df["outcome"] == "ok"]
    expected = (ok["send_lag_us"] + ok["ttft_us"]).quantile(0.5) / 1e3
    assert summary.loc[0, "ttft_p50_ms"] == pytest.approx(expected, rel=1e-9)
    joined = con.execute("SELECT count(*), count(arrival_offset_us) FROM results_with_trace").fetchone()
    assert joined == (60, 60), "every result row joins to the trace"
    assert con.execute("SELECT sum(scheduled) FROM timeline").fetchone()[0] == 60
    assert con.execute("SELECT sum(requests) FROM latency_by_input_length").fetchone()[0] == summary["ok"].sum()


def test_analyze_py(sweep_dir, datasets, tmp_path):
    proc = subprocess.run(
        [sys.executable, ROOT / "scripts" / "analyze.py", sweep_dir, "--trace", datasets / "azure_conv_small.parquet",
         "--out", tmp_path, "--slo-ttft-ms", "2000", "--slo-tpot-ms", "1000"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = pd.read_csv(tmp_path / "step_summary.csv")
    assert list(summary["requests"]) == [30, 30]
    con = duckdb.connect()
    con.execute(f"SET VARIABLE results_dir = '{sweep_dir}'")
    con.execute(f"SET VARIABLE trace_path = '{datasets / 'azure_conv_small.parquet'}'")
    con.execute("SET VARIABLE slo_ttft_ms = 2000")
    con.execute("SET VARIABLE slo_tpot_ms = 1000")
    con.execute((ROOT / "scripts" / "analysis.sql").read_text())
    sql = con.execute("SELECT ttft_p99_ms, goodput_fraction FROM step_summary").df()
    assert list(summary["ttft_p99_ms"]) == pytest.approx(list(sql["ttft_p99_ms"]), rel=1e-9)
    assert list(summary["goodput_fraction"]) == pytest.approx(list(sql["goodput_fraction"]))
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    assert (tmp_path / "latency_by_turn.csv").exists()


def test_report_html_is_self_contained(run, sweep_dir, tmp_path):
    html = tmp_path / "r.html"
    run("report", sweep_dir, "--format", "html", "-o", html)
    text = html.read_text()
    assert text.count("<svg") >= 5
    # Nothing is loaded from elsewhere: no src, href, url() or @import to
    # a remote address (the target URL is printed in the header as text).
    assert re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', text) is None
    assert "url(" not in text and "@import" not in text and "<script" not in text
    assert "<link" not in text
    js = run("report", sweep_dir, "--format", "json").stdout
    assert '"kind": "sweep"' in js


def test_session_turns_view(run, datasets, tmp_path):
    trace = tmp_path / "chats.parquet"
    run("ingest", "sharegpt", datasets / "sharegpt_small.json", "-o", trace)
    out = tmp_path / "runs"
    out.mkdir()
    run("replay", trace, "--rate", "20", "--think-time-scale", "0", "--sim-zero-delay", "-q",
        "-o", out / "results.parquet")
    con = duckdb.connect()
    _views(con, out, trace)
    turns = con.execute("SELECT turn_index, turns, ok, history_share FROM session_turns").df()
    df = pd.read_parquet(out / "results.parquet")
    assert turns["turns"].sum() == len(df)
    assert list(turns["turn_index"]) == sorted(df["turn_index"].unique())
    # First turns repeat nothing; later turns repeat the conversation.
    assert turns.loc[0, "history_share"] == 0
    assert (turns.loc[1:, "history_share"] > 0.3).all()
    later = df[df["turn_index"] == 1]
    expected = (later["history_tokens"] / later["prompt_tokens_sent"]).mean()
    assert turns.loc[1, "history_share"] == pytest.approx(expected)


def _views(con, results_dir, trace):
    con.execute(f"SET VARIABLE results_dir = '{results_dir}'")
    con.execute(f"SET VARIABLE trace_path = '{trace}'")
    con.execute("SET VARIABLE slo_ttft_ms = 2000")
    con.execute("SET VARIABLE slo_tpot_ms = 1000")
    con.execute((ROOT / "scripts" / "analysis.sql").read_text())


def test_stages_view_and_summary(run, datasets, tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    trace = datasets / "azure_conv_small.parquet"
    proc = run("replay", trace, "--stages", "20/s:1s,60/s:1s,0/s:500ms,20/s:1s", "--arrivals", "constant",
               "--sim-zero-delay", "-q", "-o", out / "results.parquet", "--summary-json", tmp_path / "s.json")
    assert "stage" in proc.stdout and "60/s" in proc.stdout
    con = duckdb.connect()
    _views(con, out, trace)
    st = con.execute("SELECT stage, requests, sent, ok FROM stages").df()
    assert list(st["stage"]) == [0, 1, 3], "the idle stage has no row"
    assert list(st["requests"]) == [20, 60, 20]
    assert (st["ok"] == st["requests"]).all()
    import json
    summary = json.loads((tmp_path / "s.json").read_text())
    assert [s["requests"] for s in summary["stages"]] == [20, 60, 0, 20]
    assert [s["load"] for s in summary["stages"]] == ["20/s", "60/s", "0/s", "20/s"]


def test_ttft_by_history_share_view(run, datasets, tmp_path):
    trace = tmp_path / "chats.parquet"
    run("ingest", "sharegpt", datasets / "sharegpt_small.json", "-o", trace)
    out = tmp_path / "runs"
    out.mkdir()
    run("replay", trace, "--rate", "20", "--think-time-scale", "0", "--sim-zero-delay", "-q",
        "-o", out / "results.parquet")
    con = duckdb.connect()
    _views(con, out, trace)
    share = con.execute("SELECT history_share_from_pct, turns FROM ttft_by_history_share").df()
    df = pd.read_parquet(out / "results.parquet")
    later = df[(df["turn_index"] > 0) & (df["outcome"] == "ok")]
    assert share["turns"].sum() == len(later)
    assert set(share["history_share_from_pct"]) <= {0, 25, 50, 75}


def test_by_class_view_matches_the_summary(run, tmp_path):
    chat = tmp_path / "chat.parquet"
    embed = tmp_path / "embed.parquet"
    mixed = tmp_path / "mixed.parquet"
    run("synth", "-o", chat, "--requests", "30", "--rate", "40", "--input-tokens", "40", "--output-tokens", "8",
        "--request-kind", "chat", "--model", "big", "--seed", "1")
    run("synth", "-o", embed, "--requests", "30", "--rate", "40", "--input-tokens", "40", "--output-tokens", "1",
        "--request-kind", "embed", "--seed", "2")
    run("transform", "--merge", f"{chat}:0.5,{embed}:0.5", "-o", mixed)
    out = tmp_path / "runs"
    out.mkdir()
    summary_path = tmp_path / "s.json"
    run("replay", mixed, "--api", "chat", "--api-map", "embed=embeddings", "--model-map", "big=served-big",
        "--sim-zero-delay", "--slo", "ttft=2s,tpot=1s", "-q", "-o", out / "results.parquet",
        "--summary-json", summary_path)
    con = duckdb.connect()
    _views(con, out, mixed)
    view = con.execute("SELECT class_column, class_value, requests, ok, errors, goodput_fraction FROM by_class").df()
    assert set(view["class_column"]) == {"api", "model", "request_kind"}, "one-valued columns are left out"
    import json
    classes = json.loads(summary_path.read_text())["classes"]
    expected = {(c["column"], c["value"]): c for c in classes}
    got = {(r.class_column, r.class_value): r for r in view.itertuples()}
    assert set(got) == set(expected)
    assert ("api", "embeddings") in got and ("model", "served-big") in got
    for key, c in expected.items():
        r = got[key]
        assert (r.requests, r.ok, r.errors) == (c["requests"], c["ok"], c["errors"]), key
        assert r.goodput_fraction == pytest.approx(c["goodput"], rel=1e-9), key
