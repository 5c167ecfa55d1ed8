"""A progress display for long scans: on stderr, and only when stderr is a terminal.

:func:`tracked` passes the records through unchanged. When the display is wanted, and once a
scan has run for :data:`DELAY` seconds (short scans print nothing), a one-line rich display
shows a pulsing bar, the records so far, the elapsed time and the path being reported; it is
transient: the line is gone when the scan ends. Nothing is shown when stderr is not a terminal,
nor when the report itself streams to the same terminal (the two would interleave).
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator

DELAY = 1.0  # seconds before the display appears
EVERY = 256  # records between updates (an update costs far more than a record)


def wanted(fmt: str, output: str | None, stderr=None, stdout=None) -> bool:
    """Show progress for this report? stderr must be a terminal, and the report must not
    stream to a terminal (the table is printed only at the end, so it never interleaves)."""
    stderr = stderr or sys.stderr
    stdout = stdout or sys.stdout
    if not _is_tty(stderr):
        return False
    to_stdout = not output or output == "-"
    return not (to_stdout and fmt != "table" and _is_tty(stdout))


def tracked(records: Iterable, show: bool, stream=None, label: str = "scanning") -> Iterable:
    """``records`` as they are, or, when ``show``, the same records drawing the display."""
    if not show:
        return records
    return _shown(records, _Display(stream or sys.stderr, label))


def _shown(records: Iterable, display: "_Display") -> Iterator:
    try:
        for count, record in enumerate(records, 1):
            if count % EVERY == 0:
                display.update(count, record)
            yield record
    finally:
        display.stop()


class _Display:
    def __init__(self, stream, label: str):
        self.stream = stream
        self.label = label
        self.started = time.monotonic()
        self.progress = None
        self.task = None

    def update(self, count: int, record) -> None:
        if self.progress is None:
            if time.monotonic() - self.started < DELAY:
                return
            self._start(count)
        self.progress.update(self.task, completed=count, path=_shown_path(record))

    def _start(self, count: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.table import Column

        console = Console(file=self.stream, force_terminal=True)
        self.progress = Progress(
            SpinnerColumn(), TextColumn(self.label), BarColumn(bar_width=20),
            TextColumn("{task.completed:,} records"), TimeElapsedColumn(),
            TextColumn("{task.fields[path]}", markup=False,
                       table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
            console=console, transient=True, redirect_stdout=False, redirect_stderr=False)
        self.task = self.progress.add_task(self.label, total=None, completed=count, path="")
        self.progress.start()

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _shown_path(record) -> str:
    from ovforensics.writers.formats import visible

    text = getattr(record, "path_text", None)
    return visible(text) if isinstance(text, str) else ""


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or closed
        return False
