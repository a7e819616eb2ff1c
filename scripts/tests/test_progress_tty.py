"""The progress bar on a real terminal (a pseudo-terminal from util-linux
`script`): drawn while the run goes, then cleared, so the last progress
text is the final line and no stale bar is left above the summary."""
import re
import shutil
import subprocess

import pytest

from conftest import ROOT


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux script")
def test_the_bar_is_cleared_and_the_final_line_stays(bin_path, tmp_path):
    log = tmp_path / "tty.log"
    command = (
        f"{bin_path} replay {ROOT / 'datasets' / 'azure_conv_small.parquet'} --rate 50 --requests 100 "
        f"--sim-zero-delay -o {tmp_path / 'r.parquet'}"
    )
    subprocess.run(["script", "-q", "-e", "-c", command, str(log)], check=True, timeout=120, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    text = log.read_bytes().decode("utf-8", "replace")
    assert "\u2588" in text, "a bar was drawn on the terminal"
    # The bar's line is erased, the final line written in its place...
    final = re.search(r"\x1b\[2K\[\s*[\d.]+s\] 100/100 done \(100\.0%\) \| finished", text)
    assert final, text[-600:]
    # ...and nothing redraws the bar afterwards: the summary follows.
    after = text[final.end():]
    assert "\u2588" not in after and "\x1b[2K" not in after
    assert "\nrequests             100" in after.replace("\r\n", "\n")
