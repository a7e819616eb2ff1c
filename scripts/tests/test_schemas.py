"""The committed JSON Schemas (schemas/) describe what llm-replay writes:
--summary-json of runs of several kinds, the summary in the results
metadata, and a sweep's _capacity.json, all from real runs on the
simulator."""
import json

import jsonschema
import pyarrow.parquet as pq
import pytest

from conftest import ROOT


def schema(name):
    s = json.loads((ROOT / "schemas" / name).read_text())
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(s)


@pytest.mark.parametrize("flags", [
    ["--rate", "20", "--requests", "40", "--slo", "ttft=50ms,tpot=5ms,e2e=2s", "--percentiles", "50,95,99.9"],
    ["--rate", "40", "--requests", "40", "--max-in-flight", "2"],
    ["--stages", "20/s:1s,40/s:1s", "--by", "stage", "--sim-fail-500", "0.2"],
    ["--concurrency", "3", "--requests", "20"],
])
def test_summary_json_matches_its_schema(run, datasets, tmp_path, flags):
    out, summary = tmp_path / "r.parquet", tmp_path / "s.json"
    run("replay", datasets / "azure_conv_small.parquet", *flags, "-o", out, "--summary-json", summary, "-q",
        check=False)
    v = schema("summary.schema.json")
    s = json.loads(summary.read_text())
    v.validate(s)
    # The same summary in the results metadata.
    v.validate(json.loads(pq.read_metadata(out).metadata[b"llm_replay.summary"]))
    # A key the schema does not know is refused: the schema is complete.
    with pytest.raises(jsonschema.ValidationError):
        v.validate({**s, "surprise": 1})
    with pytest.raises(jsonschema.ValidationError):
        v.validate({**s, "ttft": {**s["ttft"], "p99_ms": "slow"}})


def test_session_summary_and_report_json_match(run, datasets, tmp_path):
    trace = tmp_path / "chats.parquet"
    run("ingest", "sharegpt", datasets / "sharegpt_small.json", "-o", trace)
    out, summary = tmp_path / "r.parquet", tmp_path / "s.json"
    run("replay", trace, "--rate", "20", "--think-time-scale", "0", "--sim-zero-delay", "-q",
        "-o", out, "--summary-json", summary)
    v = schema("summary.schema.json")
    s = json.loads(summary.read_text())
    assert "sessions" in s
    v.validate(s)
    report = json.loads(run("report", out, "--format", "json").stdout)
    v.validate(report[0]["summary"])


def test_capacity_json_matches_its_schema(run, datasets, tmp_path):
    out = tmp_path / "s"
    run("sweep", datasets / "azure_conv_small.parquet", "--out-dir", out, "--rates", "5,10", "--requests", "20",
        "--slo", "ttft=2s", "--search-steps", "0", "--sim-decode-base-us", "500", "-q")
    v = schema("capacity.schema.json")
    c = json.loads((out / "_capacity.json").read_text())
    v.validate(c)
    assert c["slo_capacity_lower_bound"] is True
    v.validate(json.loads(run("report", out, "--format", "json").stdout)[0]["capacity"])
    with pytest.raises(jsonschema.ValidationError):
        v.validate({**c, "knee": 3})
