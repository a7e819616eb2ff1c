#!/usr/bin/env bash
# The test command: Rust unit and integration tests, then the Python checks
# that read real outputs with pyarrow, pandas and DuckDB (installed into
# .venv on first use).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import pyarrow, pandas, duckdb, matplotlib, pytest, polars, jsonschema' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements.txt
fi
# `cargo test` built the binary for the integration tests; building it again
# here would resolve features without the dev-only ones and rebuild half the
# dependencies.
bin="$PWD/target/debug/llm-replay"
[ -x "$bin" ] || { echo "missing $bin after cargo test" >&2; exit 1; }
LLM_REPLAY_BIN="$bin" "$venv/bin/python" -m pytest -q scripts/tests
