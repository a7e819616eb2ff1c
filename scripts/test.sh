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
if ! "$venv/bin/python" -c 'import pyarrow, pandas, duckdb, matplotlib, pytest' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements.txt
fi
cargo build --locked --bin llm-replay
LLM_REPLAY_BIN="$PWD/target/debug/llm-replay" "$venv/bin/python" -m pytest -q scripts/tests
