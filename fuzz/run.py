#!/usr/bin/env python3
"""Run one harness under atheris (libFuzzer) with the project's settings.

    python fuzz/run.py [--workdir DIR] NAME SECONDS [libFuzzer options ...]

NAME is one of the harnesses (``python fuzz/run.py --list``). The corpus is ``fuzz/corpus/NAME``
(seeded from the harness's ``seeds()`` the first time, kept between runs, never committed);
crashes, timeouts and out-of-memory inputs land in ``fuzz/artifacts/NAME/``. Each input has 10
seconds (``-timeout``: an input that takes longer is reported as a hang) and the process 2 GiB.
Replay one input: ``python fuzz/fuzz_NAME.py fuzz/artifacts/NAME/crash-...``.
``--workdir DIR`` keeps the corpus and artifacts in ``DIR/corpus/NAME`` and ``DIR/artifacts/NAME``
instead (the smoke test uses a temporary directory).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
#: harness -> largest input libFuzzer makes (bytes)
HARNESSES = {"bbolt": 32768, "tar": 65536, "docker": 8192, "podman": 8192, "containerd": 8192,
             "lowerdir": 4096, "xattrs": 4096, "packages": 16384}


def seed(name: str, corpus: str) -> None:
    sys.path.insert(0, HERE)
    module = __import__(f"fuzz_{name}")
    os.makedirs(corpus, exist_ok=True)
    for data in module.seeds():
        path = os.path.join(corpus, "seed-" + hashlib.sha1(data).hexdigest()[:16])
        if not os.path.exists(path):
            with open(path, "wb") as fh:
                fh.write(data)


def main(argv: list[str]) -> int:
    workdir = HERE
    if argv[:1] == ["--workdir"] and len(argv) > 1:
        workdir, argv = argv[1], argv[2:]
    if argv[:1] == ["--list"]:
        print("\n".join(HARNESSES))
        return 0
    if len(argv) < 2 or argv[0] not in HARNESSES:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    name, seconds, extra = argv[0], int(argv[1]), argv[2:]
    corpus = os.path.join(workdir, "corpus", name)
    artifacts = os.path.join(workdir, "artifacts", name)
    os.makedirs(artifacts, exist_ok=True)
    seed(name, corpus)
    cmd = [sys.executable, os.path.join(HERE, f"fuzz_{name}.py"),
           f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=2048",
           f"-max_len={HARNESSES[name]}", f"-artifact_prefix={artifacts}/",
           "-print_final_stats=1"]
    dictionary = os.path.join(HERE, "dicts", f"{name}.dict")
    if os.path.exists(dictionary):
        cmd.append(f"-dict={dictionary}")
    cmd += extra + [corpus]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
