"""Each fuzz harness (fuzz/) runs for a few seconds under atheris and finds nothing.

The real runs are long (fuzz/README.md: an hour each); this only proves that every harness
still starts, loads its seeds, fuzzes and ends cleanly with the code as it is, so a harness that
rotted (or a crash a seed already reaches) shows up in CI. All seven run at once, 5 s of fuzzing
each, in a temporary work directory (the repo's fuzz/corpus is not touched); under 30 s in all.
Needs atheris (in the ``test`` extras); under OVF_REQUIRE_REAL=1 its absence fails.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import need  # noqa: E402

FUZZ = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz")
sys.path.insert(0, FUZZ)
import run  # noqa: E402  (fuzz/run.py)

SECONDS = 5


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    need(importlib.util.find_spec("atheris") is not None,
         "atheris is not installed (pip install -e '.[test]')")
    work = tmp_path_factory.mktemp("fuzz")
    procs = {}
    for name in run.HARNESSES:
        log = open(work / f"{name}.log", "wb")
        procs[name] = (subprocess.Popen([sys.executable, os.path.join(FUZZ, "run.py"), "--workdir",
                                         str(work), name, str(SECONDS)],
                                        stdout=log, stderr=subprocess.STDOUT), log)
    results = {}
    for name, (proc, log) in procs.items():
        try:
            rc = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "timeout"
        log.close()
        results[name] = (rc, (work / f"{name}.log").read_text(errors="replace"), work)
    return results


def test_every_harness_is_listed():
    found = sorted(f[len("fuzz_"):-3] for f in os.listdir(FUZZ) if f.startswith("fuzz_") and f.endswith(".py"))
    assert found == sorted(run.HARNESSES)


@pytest.mark.parametrize("name", list(run.HARNESSES))
def test_harness_runs_clean(smoke, name):
    rc, log, work = smoke[name]
    tail = "\n".join(log.splitlines()[-40:])
    assert rc == 0, f"{name}: exit {rc}\n{tail}"
    assert "Uncaught Python exception" not in log and "ERROR: libFuzzer" not in log, tail
    assert "Done " in log, tail
    corpus = work / "corpus" / name
    assert len(os.listdir(corpus)) >= len(set(__import__(f"fuzz_{name}").seeds()))  # seeds written
    assert not os.listdir(work / "artifacts" / name)
