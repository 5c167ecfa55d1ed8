"""The progress display: on stderr only when it is a terminal, records passed through as they are."""
from __future__ import annotations

import io
import os
import subprocess
import sys

from ovforensics.writers import progress
from ovforensics.records.record import ADDED, Change

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "samples", "experiment")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_wanted_only_with_stderr_on_a_terminal():
    tty, pipe = FakeTTY(), io.StringIO()
    assert not progress.wanted("jsonl", "out.jsonl", stderr=pipe, stdout=pipe)
    assert progress.wanted("jsonl", "out.jsonl", stderr=tty, stdout=tty)
    assert progress.wanted("jsonl", None, stderr=tty, stdout=pipe)
    # a report streaming to the same terminal would interleave with it; the table waits
    assert not progress.wanted("jsonl", None, stderr=tty, stdout=tty)
    assert not progress.wanted("docker", "-", stderr=tty, stdout=tty)
    assert progress.wanted("table", None, stderr=tty, stdout=tty)


def test_not_shown_leaves_records_untouched():
    records = [Change(path=b"/a", change=ADDED)]
    assert progress.tracked(records, show=False) is records


def test_shown_draws_then_clears_and_passes_every_record(monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    monkeypatch.setattr(progress, "EVERY", 2)
    tty = FakeTTY()
    records = [Change(path=b"/dir/f%d" % i, change=ADDED) for i in range(10)]
    assert list(progress.tracked(iter(records), show=True, stream=tty)) == records
    drawn = tty.getvalue()
    assert "scanning" in drawn and "records" in drawn and "/dir/f" in drawn


def test_cli_prints_nothing_on_stderr_when_it_is_no_terminal(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ovforensics", "diff", "--upper",
                           os.path.join(SAMPLE, "build.tar"), "--lower",
                           os.path.join(SAMPLE, "material2.tar"), "--lower",
                           os.path.join(SAMPLE, "material.tar"), "-o", str(tmp_path / "r.jsonl")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == ""
