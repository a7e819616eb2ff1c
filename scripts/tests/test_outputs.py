"""Traces and results read with the real pyarrow, pandas and DuckDB."""
import csv
import json

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def test_trace_types_values_and_metadata(run, datasets, tmp_path):
    out = tmp_path / "azure.parquet"
    run("ingest", "azure", datasets / "azure_conv_small.csv", "-o", out)
    schema = pq.read_schema(out)
    assert schema.field("request_id").type == pa.string()
    assert schema.field("arrival_offset_us").type == pa.int64()
    assert schema.field("input_tokens").type == pa.int32()
    assert schema.field("prefix_block_ids").type == pa.list_(pa.field("item", pa.uint64(), nullable=False))
    assert pa.types.is_dictionary(schema.field("request_kind").type)
    meta = {k.decode(): v.decode() for k, v in pq.read_metadata(out).metadata.items()}
    assert meta["llm_replay.format_version"] == "1"
    assert meta["llm_replay.source_format"] == "azure"
    assert meta["llm_replay.t0"] == "2023-11-16T18:15:46.6805900Z"
    files = json.loads(meta["llm_replay.input_files"])
    assert files[0]["name"] == "azure_conv_small.csv" and len(files[0]["sha256"]) == 64

    df = pd.read_parquet(out)
    with open(datasets / "azure_conv_small.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(df) == len(rows) == 400
    assert df["input_tokens"].tolist() == [int(r["ContextTokens"]) for r in rows]
    assert df["output_tokens"].tolist() == [int(r["GeneratedTokens"]) for r in rows]
    assert df["arrival_offset_us"].is_monotonic_increasing
    assert df["arrival_offset_us"].iloc[1] == 4_314_579

    con = duckdb.connect()
    n, rate = con.execute(
        "SELECT count(*), (count(*) - 1) / (max(arrival_offset_us) / 1e6) FROM read_parquet(?)", [str(out)]
    ).fetchone()
    assert n == 400 and 3.0 < rate < 4.5
    kv = dict(con.execute(
        "SELECT decode(key), decode(value) FROM parquet_kv_metadata(?)", [str(out)]
    ).fetchall())
    assert kv["llm_replay.rows_written"] == "400"


def test_mooncake_blocks_in_duckdb(run, datasets, tmp_path):
    out = tmp_path / "m.parquet"
    run("ingest", "mooncake", datasets / "mooncake_conv_small.jsonl", "-o", out)
    con = duckdb.connect()
    ok = con.execute(
        "SELECT bool_and(len(prefix_block_ids) = ceil(input_tokens / 512)) FROM read_parquet(?)", [str(out)]
    ).fetchone()[0]
    assert ok


def test_results_join_back_to_the_trace(run, datasets, tmp_path):
    trace = datasets / "azure_conv_small.parquet"
    out = tmp_path / "r.parquet"
    summary = tmp_path / "s.json"
    proc = run("replay", trace, "--rate", "20", "--requests", "60", "--arrivals", "constant",
               "--sim-decode-base-us", "500", "-o", out, "--summary-json", summary, "--slo", "ttft=2s", "-q")
    assert str(out) in proc.stdout
    t = pq.read_schema(out)
    assert t.field("scheduled_at").type == pa.timestamp("us", tz="UTC")
    assert t.field("itl_us").type == pa.list_(pa.field("item", pa.int64(), nullable=False))
    df = pd.read_parquet(out)
    assert len(df) == 60
    assert set(df["outcome"]) == {"ok"}
    assert (df["send_lag_us"] < 50_000).all()
    assert (df["usage_prompt_tokens"] == df["input_tokens"]).all(), "prompts have exactly input_tokens tokens"
    s = json.loads(summary.read_text())
    assert s["requests"] == 60
    p50 = df["ttft_us"].median() / 1e3
    assert abs(s["ttft"]["p50_ms"] - p50) <= max(1.0, 0.01 * p50)

    con = duckdb.connect()
    joined, mismatched = con.execute(
        """SELECT count(*), count(*) FILTER (WHERE r.input_tokens <> t.input_tokens)
           FROM read_parquet(?) r JOIN read_parquet(?) t USING (request_id)""",
        [str(out), str(trace)],
    ).fetchone()
    assert joined == 60 and mismatched == 0
    meta = {k.decode(): v.decode() for k, v in pq.read_metadata(out).metadata.items()}
    assert json.loads(meta["llm_replay.summary"])["requests"] == 60
    assert "OPENAI_API_KEY" in meta["llm_replay.config"] and "sk-" not in meta["llm_replay.config"]


def test_bad_input_exits_nonzero_with_a_clear_error(run, datasets, tmp_path):
    proc = run("ingest", "azure", datasets / "bad" / "azure_semicolon.csv", "-o", tmp_path / "x.parquet", check=False)
    assert proc.returncode == 1
    assert "azure_semicolon.csv: line 1: header: missing column(s)" in proc.stderr
    assert "panicked" not in proc.stderr
    bad = run("inspect", datasets / "azure_conv_small.csv", check=False)
    assert bad.returncode == 1 and "azure_conv_small.csv" in bad.stderr
