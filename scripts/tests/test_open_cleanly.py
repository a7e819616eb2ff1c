"""A sweep directory and its tables open cleanly in pandas, Polars and
DuckDB: the directory reads whole as one dataset, counters are signed,
nullable integers stay integers under the pyarrow dtype backend."""
import json

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def sweep_dir(run, datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    # A small cap on requests in flight so that some are dropped: errors > 0
    # and ok < requests at the higher rate.
    run("sweep", datasets / "azure_conv_small.parquet", "--out-dir", out, "--rates", "5,40",
        "--requests", "30", "--arrivals", "constant", "--slo", "ttft=2s", "--search-steps", "0",
        "--max-in-flight", "2", "--on-cap", "drop", "-q", check=False)
    assert (out / "_sweep.parquet").exists()
    return out


def test_only_step_results_sit_where_dataset_readers_look(sweep_dir):
    names = sorted(p.name for p in sweep_dir.iterdir())
    assert names == ["_capacity.json", "_sweep.csv", "_sweep.parquet", "rate=40", "rate=5"], names
    assert not (sweep_dir / "capacity.json").exists() and not (sweep_dir / "sweep.parquet").exists()


def test_pandas_reads_the_sweep_directory_whole(sweep_dir):
    df = pd.read_parquet(sweep_dir, dtype_backend="pyarrow")
    assert len(df) == 60
    assert sorted(df["rate"].astype(int).unique()) == [5, 40]
    # Nullable integers stay integers, nulls and all.
    assert str(df["ttft_us"].dtype) == "int64[pyarrow]"
    assert str(df["status_code"].dtype) == "int32[pyarrow]"
    assert df["ttft_us"].isna().sum() == (df["outcome"] != "ok").sum()


def test_polars_reads_the_sweep_directory_whole(sweep_dir):
    pl = pytest.importorskip("polars")
    df = pl.read_parquet(f"{sweep_dir}/**/results.parquet", hive_partitioning=True)
    assert df.height == 60
    assert sorted(df["rate"].unique().to_list()) == [5, 40]


def test_duckdb_reads_the_sweep_directory_whole(sweep_dir):
    rows = duckdb.connect().execute(
        f"SELECT rate, count(*) FROM read_parquet('{sweep_dir}/**/results.parquet', hive_partitioning = true) "
        "GROUP BY rate ORDER BY rate").fetchall()
    assert rows == [(5, 30), (40, 30)]


def test_sweep_counters_are_signed(sweep_dir):
    schema = pq.read_schema(sweep_dir / "_sweep.parquet")
    for name in ("requests", "ok", "errors"):
        assert schema.field(name).type == pa.int64(), name
    df = pd.read_parquet(sweep_dir / "_sweep.parquet", dtype_backend="pyarrow")
    diff = (df["ok"] - df["requests"]).tolist()
    assert min(diff) < 0, "the capped step dropped requests"
    assert all(-30 <= d <= 0 for d in diff), diff
    assert (df["ok"] - df["requests"] == -df["errors"]).all()
    con = duckdb.connect()
    got = con.execute(f"SELECT min(ok - requests) FROM read_parquet('{sweep_dir / '_sweep.parquet'}')").fetchone()[0]
    assert got == min(diff)
    csv = pd.read_csv(sweep_dir / "_sweep.csv")
    assert (csv["ok"] - csv["requests"]).min() == min(diff)


def test_report_reads_a_sweep_of_the_earlier_layout(run, sweep_dir, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for step in ("rate=5", "rate=40"):
        (old / step).mkdir()
        (old / step / "results.parquet").write_bytes((sweep_dir / step / "results.parquet").read_bytes())
    (old / "capacity.json").write_text((sweep_dir / "_capacity.json").read_text())
    (old / "sweep.csv").write_text((sweep_dir / "_sweep.csv").read_text())
    new = json.loads(run("report", sweep_dir, "--format", "json").stdout)[0]
    got = json.loads(run("report", old, "--format", "json").stdout)[0]
    assert got["capacity"]["slo"] == new["capacity"]["slo"] == "ttft=2000ms"
    assert got["steps"] == new["steps"]
    # The sweep sees the old table as a sweep already there.
    proc = run("sweep", sweep_dir.parent.parent / "x" if False else __import__("conftest").ROOT / "datasets" / "azure_conv_small.parquet", "--out-dir", old, "--rates", "5", "--requests", "5",
               "-q", check=False)
    assert proc.returncode != 0


def test_the_documented_step_table_is_the_written_one(sweep_dir):
    from conftest import ROOT

    doc = (ROOT / "docs" / "results-format.md").read_text()
    table = doc.split("<!-- sweep-columns:begin -->")[1].split("<!-- sweep-columns:end -->")[0]
    documented = []
    for line in table.splitlines()[3:]:
        cell = line.split("|")[1]
        documented += [c.strip().strip("`") for c in cell.split(",")]
    schema = pq.read_schema(sweep_dir / "_sweep.parquet")
    written = [f.name for f in schema]
    assert sorted(documented) == sorted(written), set(documented) ^ set(written)
    with open(sweep_dir / "_sweep.csv") as f:
        assert f.readline().strip().split(",") == written


def test_a_sweep_scraping_server_metrics_still_reads_whole(bin_path, run, datasets, tmp_path):
    import socket
    import subprocess
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim = subprocess.Popen([bin_path, "sim", "--bind", f"127.0.0.1:{port}", "--sim-zero-delay"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        out = tmp_path / "s"
        url = f"http://127.0.0.1:{port}"
        run("sweep", datasets / "azure_conv_small.parquet", "--out-dir", out, "--rates", "10,20",
            "--requests", "20", "--arrivals", "constant", "--search-steps", "0", "--url", url,
            "--model", "llm-replay-sim", "--scrape", f"{url}/metrics", "-q")
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    for step in ("rate=10", "rate=20"):
        assert (out / step / "_server_metrics.parquet").exists(), step
        assert not (out / step / "server_metrics.parquet").exists()
    df = pd.read_parquet(out, dtype_backend="pyarrow")
    assert len(df) == 40 and set(df["rate"].astype(str)) == {"10", "20"}
