"""Shared fixtures: the llm-replay binary and the repository's datasets."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bin_path():
    path = os.environ.get("LLM_REPLAY_BIN", str(ROOT / "target" / "debug" / "llm-replay"))
    assert pathlib.Path(path).exists(), f"build the binary first: {path}"
    return path


@pytest.fixture(scope="session")
def run(bin_path):
    def _run(*args, check=True):
        proc = subprocess.run([bin_path, *map(str, args)], capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"llm-replay {' '.join(map(str, args))} failed:\n{proc.stderr}")
        return proc
    return _run


@pytest.fixture(scope="session")
def datasets():
    return ROOT / "datasets"
