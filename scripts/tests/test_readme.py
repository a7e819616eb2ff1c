"""The README's examples as written: the tour runs end to end (its shell
block, then its SQL on what the shell wrote), and every other `llm-replay`
command line in a shell block is accepted by the command line parser."""
import os
import re
import shlex
import subprocess

import duckdb

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def _blocks(text, langs):
    """Fenced code blocks of the given languages, in order."""
    pattern = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
    return [m.group(2) for m in pattern.finditer(text) if m.group(1) in langs]


def _commands(block):
    """`llm-replay` invocations of a shell block, continuation lines joined,
    environment prefixes and comments dropped, as argv lists."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        argv = shlex.split(line, comments=True)
        while argv and re.match(r"^[A-Z_]+=", argv[0]):
            argv.pop(0)
        if argv and argv[0] == "llm-replay":
            out.append(argv[1:])
    return out


def _tour():
    begin = README.index("<!-- tour:begin -->")
    end = README.index("<!-- tour:end -->")
    return README[begin:end]


def test_the_tour_runs_as_written(bin_path, tmp_path):
    tour = _tour()
    (tmp_path / "datasets").symlink_to(ROOT / "datasets")
    commands = [c for b in _blocks(tour, {"sh", "bash"}) for c in _commands(b)]
    assert len(commands) >= 4
    for argv in commands:
        proc = subprocess.run([bin_path, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"llm-replay {' '.join(argv)}:\n{proc.stderr}"
        assert "<mode>" not in proc.stdout + proc.stderr, "paths are printed as they are"
    assert (tmp_path / "chats-report.html").exists()
    assert (tmp_path / "chats-sweep" / "_sweep.parquet").exists()
    (sql,) = _blocks(tour, {"sql"})
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        rows = duckdb.connect().execute(sql).fetchall()
    finally:
        os.chdir(cwd)
    assert [r[0] for r in rows] == [0, 1, 2], "one row per turn index"
    assert sum(r[1] for r in rows) == 15, "every turn joined to the trace"


# Placeholders the README uses for what only the reader has.
PLACEHOLDERS = {
    "$T": "2030-01-01T00:00:00Z",
    "$JOB_COMPLETION_INDEX/N": "0/2",
}


def test_every_readme_command_line_parses(bin_path):
    commands = [c for b in _blocks(README, {"sh", "bash"}) for c in _commands(b)]
    assert len(commands) >= 15
    for argv in commands:
        argv = [PLACEHOLDERS.get(a, a) for a in argv]
        if argv and argv[0] == "replay" and "--tokenizer" in argv:
            # The tokenizer is loaded at run time, not parsed: keep the flag's
            # shape checked with a tokenizer that exists here.
            argv[argv.index("--tokenizer") + 1] = "o200k_base"
        proc = subprocess.run([bin_path, *argv, "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"llm-replay {' '.join(argv)}:\n{proc.stderr}"
