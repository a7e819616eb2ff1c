"""Traces written by `llm-replay ingest`, read back with the real pyarrow,
pandas and DuckDB: the documented types, the metadata keys, and values equal
to the source files' integers."""
import csv
import datetime as dt
import json
import os

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# The documented column types (docs/trace-format.md), as pyarrow names them.
COLUMN_TYPES = {
    "request_id": pa.string(),
    "arrival_offset_us": pa.int64(),
    "input_tokens": pa.int32(),
    "output_tokens": pa.int32(),
    "session_id": pa.string(),
    "turn_index": pa.int32(),
    "think_time_us": pa.int64(),
    "prefix_block_ids": pa.list_(pa.field("item", pa.uint64(), nullable=False)),
    "model": pa.dictionary(pa.int32(), pa.string()),
    "request_kind": pa.dictionary(pa.int32(), pa.string()),
    "prompt_text": pa.large_string(),
    "source_row": pa.int64(),
    "user_id": pa.dictionary(pa.int32(), pa.string()),
}
NOT_NULL = {"request_id", "input_tokens", "output_tokens", "source_row"}


def ingest(run, fmt, source, out, *flags):
    run("ingest", fmt, source, "-o", out, *flags)
    return out


def kv_metadata(path):
    raw = pq.read_metadata(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"llm_replay.")}


def azure_ticks(text):
    """100 ns ticks of an Azure timestamp, by integer arithmetic only."""
    whole, _, frac = text.partition(".")
    t = dt.datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp()) * 10_000_000 + int((frac + "0000000")[:7])


@pytest.fixture(scope="module")
def azure(run, datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("azure") / "azure.parquet"
    return ingest(run, "azure", datasets / "azure_conv_small.csv", out)


@pytest.fixture(scope="module")
def mooncake(run, datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("mooncake") / "mooncake.parquet"
    return ingest(run, "mooncake", datasets / "mooncake_conv_small.jsonl", out)


@pytest.mark.parametrize("trace", ["azure", "mooncake"])
def test_schema_has_the_documented_types_and_nullability(trace, request):
    schema = pq.read_schema(request.getfixturevalue(trace))
    assert schema.names == list(COLUMN_TYPES)
    for name, want in COLUMN_TYPES.items():
        field = schema.field(name)
        assert field.type == want, f"{name}: {field.type}"
        assert field.nullable == (name not in NOT_NULL), name


def test_azure_metadata_keys(azure, datasets):
    meta = kv_metadata(azure)
    for key in ["format_version", "source_format", "input_files", "filters",
                "rows_read", "rows_written", "rows_dropped", "time_unit", "t0"]:
        assert f"llm_replay.{key}" in meta, key
    assert meta["llm_replay.format_version"] == "1"
    assert meta["llm_replay.source_format"] == "azure"
    assert meta["llm_replay.time_unit"] == "100ns"
    assert meta["llm_replay.t0"] == "2023-11-16T18:15:46.6805900Z"
    assert json.loads(meta["llm_replay.rows_dropped"]) == {}
    assert meta["llm_replay.rows_read"] == meta["llm_replay.rows_written"] == "400"
    (f,) = json.loads(meta["llm_replay.input_files"])
    assert f["name"] == "azure_conv_small.csv"
    assert f["size_bytes"] == (datasets / "azure_conv_small.csv").stat().st_size
    assert "prefix_block_size" not in meta


def test_azure_values_equal_the_csv_exactly(azure, datasets):
    df = pd.read_parquet(azure)
    with open(datasets / "azure_conv_small.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(df) == len(rows) == 400
    assert df["input_tokens"].tolist() == [int(r["ContextTokens"]) for r in rows]
    assert df["output_tokens"].tolist() == [int(r["GeneratedTokens"]) for r in rows]
    # Offsets: exact tick differences, truncated to the microsecond.
    t0 = azure_ticks(rows[0]["TIMESTAMP"])
    want = [(azure_ticks(r["TIMESTAMP"]) - t0) // 10 for r in rows]
    assert df["arrival_offset_us"].tolist() == want
    assert df["arrival_offset_us"].iloc[1] == 4_314_579
    # Ids and source rows are the CSV's 1-based lines (the header is line 1).
    assert df["request_id"].iloc[0] == "line2"
    assert df["source_row"].tolist() == list(range(2, 402))
    assert set(df["request_kind"].astype(str)) == {"conv"}
    assert df["session_id"].isna().all() and df["prefix_block_ids"].isna().all()


def test_mooncake_blocks_and_times_equal_the_jsonl(mooncake, datasets):
    meta = kv_metadata(mooncake)
    assert meta["llm_replay.prefix_block_size"] == "512"
    assert meta["llm_replay.time_unit"] == "ms"
    with open(datasets / "mooncake_conv_small.jsonl") as f:
        src = [json.loads(line) for line in f if line.strip()]
    table = pq.read_table(mooncake)
    assert table.column("prefix_block_ids").to_pylist() == [r["hash_ids"] for r in src]
    t0 = src[0]["timestamp"]
    assert table.column("arrival_offset_us").to_pylist() == [(r["timestamp"] - t0) * 1000 for r in src]
    assert table.column("input_tokens").to_pylist() == [r["input_length"] for r in src]


def test_duckdb_reads_rows_metadata_and_blocks(azure, mooncake):
    con = duckdb.connect()
    n, kinds, rate = con.execute(
        """SELECT count(*), count(DISTINCT request_kind),
                  (count(*) - 1) / ((max(arrival_offset_us) - min(arrival_offset_us)) / 1e6)
           FROM read_parquet(?)""",
        [str(azure)],
    ).fetchone()
    assert (n, kinds) == (400, 1) and 3.0 < rate < 4.5
    kv = dict(con.execute(
        "SELECT decode(key), decode(value) FROM parquet_kv_metadata(?)", [str(azure)]
    ).fetchall())
    assert kv["llm_replay.source_format"] == "azure"
    assert kv["llm_replay.rows_written"] == "400"
    # Block counts agree with lengths, and some blocks are shared (the
    # Mooncake trace's first block is a common system prompt).
    ok, shared = con.execute(
        """WITH b AS (SELECT unnest(prefix_block_ids) AS id FROM read_parquet(?))
           SELECT (SELECT bool_and(len(prefix_block_ids) = ceil(input_tokens / 512))
                   FROM read_parquet(?)),
                  (SELECT count(*) FROM (SELECT id FROM b GROUP BY id HAVING count(*) > 1))""",
        [str(mooncake), str(mooncake)],
    ).fetchone()
    assert ok and shared > 0


def test_inspect_json_agrees_with_pandas(run, azure, mooncake):
    stats = json.loads(run("inspect", azure, "--json").stdout)
    df = pd.read_parquet(azure)
    assert stats["violations"] == [] and stats["violation_count"] == 0
    assert stats["rows"] == len(df)
    assert stats["input_tokens"]["max"] == df["input_tokens"].max()
    assert stats["duration_s"] == pytest.approx(df["arrival_offset_us"].max() / 1e6)
    assert stats["repeated_prefix_share"] is None
    moon = json.loads(run("inspect", mooncake, "--json").stdout)
    assert 0 < moon["repeated_prefix_share"] < 1


def test_inspect_exits_2_on_a_broken_trace(run, azure, tmp_path):
    # Rewrite the trace with a duplicated id and times out of order, keeping
    # the metadata: inspect must list both and exit 2.
    table = pq.read_table(azure)
    # The llm_replay.* keys live in the file's key-value metadata (written at
    # close), not in the stored Arrow schema; carry them over.
    metadata = {k: v for k, v in pq.read_metadata(azure).metadata.items() if k.startswith(b"llm_replay.")}
    ids = table.column("request_id").to_pylist()
    ids[1] = ids[0]
    offsets = table.column("arrival_offset_us").to_pylist()
    offsets[3] = -1
    table = table.set_column(0, "request_id", pa.array(ids, pa.string()))
    table = table.set_column(1, "arrival_offset_us", pa.array(offsets, pa.int64()))
    bad = tmp_path / "bad.parquet"
    # zstd: the binary is built without snappy, pyarrow's default.
    pq.write_table(table.replace_schema_metadata(metadata), bad, compression="zstd")
    proc = run("inspect", bad, "--json", check=False)
    assert proc.returncode == 2, proc.stderr
    found = "\n".join(json.loads(proc.stdout)["violations"])
    assert 'row 1: request_id "line2" is not unique' in found
    assert "row 3: arrival_offset_us is negative (-1)" in found


def test_production_log_trace_is_scrubbed_and_queryable(run, datasets, tmp_path):
    out = ingest(run, "openai-log", datasets / "logs" / "gateway.jsonl", tmp_path / "log.parquet",
                 "--salt", "a test salt")
    schema = pq.read_schema(out)
    assert schema.names == list(COLUMN_TYPES)
    meta = kv_metadata(out)
    report = json.loads(meta["llm_replay.scrub_report"])
    assert report["strings_found"] == 0
    assert report["fields"]["authorization"] == [9, "dropped"]
    # Sessions and turns in SQL: three chats of three turns, linked by history.
    con = duckdb.connect()
    turns = con.execute(
        f"SELECT count(*) AS n, max(turn_index) FROM '{out}' GROUP BY session_id ORDER BY n DESC LIMIT 3"
    ).fetchall()
    assert turns == [(3, 2), (3, 2), (3, 2)]
    # Prefix reuse in SQL: the support chats (nine rows) and the two tool
    # calls share the system prompt's first block (tools come after it).
    first_block = con.execute(
        f"SELECT prefix_block_ids[1] AS b, count(*) FROM '{out}' GROUP BY b ORDER BY 2 DESC LIMIT 1"
    ).fetchone()
    assert first_block[1] == 11
    # Nothing of the log's content or ids in any decoded value.
    text = pd.read_parquet(out).astype(str).to_csv() + json.dumps(meta)
    for needle in ["maria.lopez", "203.0.113.", "sk-live-", "ExampleShopApp", "req_user", "SO-99812",
                   "a test salt", "Summarise"]:
        assert needle not in text, needle


def test_production_log_from_gzip_stdin_with_salt_from_environment(bin_path, run, datasets, tmp_path):
    import subprocess

    from_file = ingest(run, "openai-log", datasets / "logs" / "gateway.jsonl", tmp_path / "file.parquet",
                       "--salt", "env salt")
    gz = (datasets / "logs" / "gateway.jsonl.gz").read_bytes()
    proc = subprocess.run([bin_path, "ingest", "openai-log", "-", "-o", str(tmp_path / "stdin.parquet")],
                          input=gz, capture_output=True, timeout=120,
                          env={**os.environ, "LLM_REPLAY_SALT": "env salt"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"scrub report" in proc.stdout and b"none found" in proc.stdout
    a = pq.read_table(from_file).to_pandas()
    b = pq.read_table(tmp_path / "stdin.parquet").to_pandas()
    pd.testing.assert_frame_equal(a, b)
    # The salt is a secret: not in the output, not in --help.
    assert b"env salt" not in (tmp_path / "stdin.parquet").read_bytes()
    helped = subprocess.run([bin_path, "ingest", "--help"], capture_output=True, timeout=60,
                            env={**os.environ, "LLM_REPLAY_SALT": "env salt"})
    assert b"env salt" not in helped.stdout
