"""Where a report goes: stdout, or a file that appears only once it is complete.

A report file is written to a temporary name beside the target and renamed into place after
the last record, so a crash, a full disk or Ctrl-C never leaves a partial file that looks
finished. A report is never written inside a layer being scanned (the evidence).
"""
from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from typing import Iterable, Iterator, TextIO


class OutputError(Exception):
    pass


def refuse_inside(target: str, evidence: Iterable[str]) -> None:
    """Raise when ``target`` lies inside one of the evidence directories or is an archive of it."""
    real = os.path.realpath(target)
    for root in evidence:
        root_real = os.path.realpath(root)
        if real == root_real or real.startswith(root_real.rstrip("/") + "/"):
            raise OutputError(f"{target}: refusing to write inside the evidence ({root})")


@contextlib.contextmanager
def report_stream(target: str | None, force: bool | None = None) -> Iterator[TextIO]:
    if target is None or target == "-":
        yield sys.stdout
        return
    if not target:
        raise OutputError("-o: the path is empty (an unset shell variable?): give a file, or - "
                          "for standard output")
    try:
        st = os.lstat(target)
    except OSError:
        st = None
    if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        # /dev/null, /dev/stdout's terminal, a pipe: written to as they are, never replaced (a
        # rename over /dev/null would put a regular file in its place)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as exc:
            raise OutputError(f"{target}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
            yield stream
        return
    if st is not None and (stat.S_ISDIR(st.st_mode) or stat.S_ISBLK(st.st_mode) or
                           stat.S_ISSOCK(st.st_mode)):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a block device" \
            if stat.S_ISBLK(st.st_mode) else "a socket"
        raise OutputError(f"{target}: {kind}, not a report file (nothing written)")
    if not (_FORCE if force is None else force) and st is not None:
        raise OutputError(f"{target}: exists; give --force to replace it (nothing written)")
    directory = os.path.dirname(os.path.abspath(target))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ovf-", suffix=".partial", dir=directory)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write here: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        _unlink(tmp)
        raise OutputError(f"{target}: {exc.strerror or exc}") from None
    except BaseException:
        _unlink(tmp)
        raise


_FORCE = False  # --force: an existing report file is replaced


def set_force(value: bool) -> None:
    global _FORCE
    _FORCE = bool(value)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def default_format(target: str | None) -> str:
    """``table`` on a terminal, else from the file's extension, else ``jsonl``."""
    if target and target != "-":
        ext = os.path.splitext(target)[1].lower().lstrip(".")
        known = {"csv": "csv", "json": "json", "jsonl": "jsonl", "ndjson": "jsonl", "txt": "table"}
        if ext not in known:
            raise ValueError(f"-o {target}: {'the extension .' + ext if ext else 'no extension'} "
                             "says no format: give -f (table, csv, json, jsonl, docker) or a "
                             ".csv, .json, .jsonl or .txt name")
        return known[ext]
    return "table" if sys.stdout.isatty() else "jsonl"
