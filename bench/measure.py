"""Timing a command against its baseline: wall time and the child's own peak RSS, in rounds.

Each round runs the baseline and the case back to back (their order alternates between
rounds), so both see the same machine load; the ratio is taken per round, and the table shows
its median, min and max. Peak RSS is the command's own ``ru_maxrss`` as ``/usr/bin/time``
reports it (this process's ``wait4`` otherwise, which also counts the parent's RSS the child
started as).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable


class Failed(RuntimeError):
    pass


@dataclass
class Cmd:
    argv: list[str]
    env: dict | None = None
    stdin: str | None = None  # a file fed on standard input

    def run(self) -> tuple[float, int]:
        """(wall seconds, peak RSS in KiB); raises :class:`Failed` on a non-zero exit."""
        with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
            stdin = open(self.stdin, "rb") if self.stdin else subprocess.DEVNULL
            try:
                start = time.perf_counter()
                proc = subprocess.Popen([*_rss_probe(rss.name), *self.argv], stdin=stdin,
                                        stdout=subprocess.DEVNULL, stderr=err, env=self.env)
                _, status, usage = os.wait4(proc.pid, 0)
                seconds = time.perf_counter() - start
            finally:
                if self.stdin:
                    stdin.close()
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                err.seek(0)
                tail = err.read()[-600:].decode(errors="replace")
                raise Failed(f"{' '.join(self.argv[:4])}... exited {proc.returncode}: {tail}")
            reported = rss.read().strip().splitlines()
        return seconds, int(reported[-1]) if reported else usage.ru_maxrss


def _rss_probe(report: str) -> list[str]:
    """``/usr/bin/time -f %M``: a forked child's ``ru_maxrss`` starts at its parent's RSS (the
    copy it runs as until exec), so the command is started by a small C process, not by us."""
    return ["/usr/bin/time", "-f", "%M", "-o", report] if os.access(TIME, os.X_OK) else []


TIME = "/usr/bin/time"


@dataclass
class Result:
    name: str
    target: str
    ratios: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    rss_kib: int = 0
    ok: bool | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)


def compare(name: str, target: str, ours: Cmd, base: Cmd, rounds: int, *,
            throughput: bool = False, warm: bool = True,
            check: Callable[["Result"], bool] | None = None) -> Result:
    """``rounds`` paired runs. The ratio is ours/base in time, or base/ours (same bytes) for a
    ``throughput`` case. A warm-up pair runs first (caches, page cache) unless ``warm`` is off."""
    result = Result(name, target)
    if warm:
        base.run()
        ours.run()
    for r in range(rounds):
        pair = [("base", base), ("ours", ours)]
        if r % 2:
            pair.reverse()
        times = {}
        for which, cmd in pair:
            seconds, rss = cmd.run()
            times[which] = seconds
            if which == "ours":
                result.rss_kib = max(result.rss_kib, rss)
        result.ours.append(times["ours"])
        result.base.append(times["base"])
        result.ratios.append(times["base"] / times["ours"] if throughput
                             else times["ours"] / times["base"])
    if check is not None:
        result.ok = check(result)
    return result


def at_most(limit: float) -> Callable[[Result], bool]:
    return lambda r: r.median <= limit


def at_least(limit: float) -> Callable[[Result], bool]:
    return lambda r: r.median >= limit


def rss_at_most(mib: float) -> Callable[[Result], bool]:
    return lambda r: r.rss_kib <= mib * 1024


def table(results: list[Result]) -> str:
    """The figures as a plain text table (one row per case)."""
    head = ("case", "target", "median", "min", "max", "ours s", "base s", "peak RSS", "ok")
    rows = [head]
    for r in results:
        if not r.ratios:
            rows.append((r.name, r.target, "-", "-", "-", "-", "-", "-", r.note or "skipped"))
            continue
        rows.append((
            r.name, r.target, f"{r.median:.2f}x", f"{min(r.ratios):.2f}x", f"{max(r.ratios):.2f}x",
            f"{statistics.median(r.ours):.3f}", f"{statistics.median(r.base):.3f}",
            f"{r.rss_kib / 1024:.0f} MB", {True: "yes", False: "NO", None: "-"}[r.ok],
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
