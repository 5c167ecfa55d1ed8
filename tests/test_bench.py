"""The benchmark still runs: ``bench/run.py --quick`` (tiny inputs, one round) exits 0 and prints
its table. Nothing here is timed: the figures of a quick run mean nothing (see bench/README.md).

The real-dockerd cases need root and a dockerd that can start; where they cannot run, the
benchmark says so in the table and this test skips (fails under ``OVF_REQUIRE_REAL=1``).
"""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import need

BENCH = os.path.join(os.path.dirname(__file__), "..", "bench", "run.py")
CASES = ("docker diff", "containers", "native differ", "synthetic", "deep 1 layer", "deep 3 layers",
         "memory", "--hash sha256", "single file", "diff out of an ext4 image",
         "diff out of an xfs image")


def test_quick_benchmark_runs_and_prints_the_table():
    proc = subprocess.run([sys.executable, BENCH, "--quick"], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("machine: "), proc.stdout
    header = next(i for i, line in enumerate(lines) if line.startswith("case "))
    assert lines[header].split() == ["case", "target", "median", "min", "max", "ours", "s",
                                     "base", "s", "peak", "RSS", "ok"]
    rows = lines[header + 2:lines.index("", header)] if "" in lines[header:] else lines[header + 2:]
    for case in CASES:
        assert any(row.startswith(case) for row in rows), (case, proc.stdout)
    assert sum(row.startswith("memory ") for row in rows) == 6  # every output format + one directory
    measured = [row for row in rows if "skipped:" not in row]
    assert all(" MB " in row for row in measured), proc.stdout
    skipped = [row for row in rows if "skipped:" in row]
    need(not skipped, "benchmark cases skipped here: " + "; ".join(
        row.split("skipped:", 1)[1].strip() for row in skipped))
