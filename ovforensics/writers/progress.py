"""A progress display for long scans: on stderr, and only when stderr is a terminal.

Two sources: the records a report writes (:func:`tracked`), and the library's own ticks while
it works before any record exists (:class:`ticking`: ``bloat``, ``image``, ``recover``).

:func:`tracked` passes the records through unchanged. When the display is wanted, and once a
scan has run for :data:`DELAY` seconds (short scans print nothing), a one-line rich display
shows a pulsing bar, the records so far, the elapsed time and the path being reported; it is
transient: the line is gone when the scan ends. Nothing is shown when stderr is not a terminal,
nor when the report itself streams to the same terminal (the two would interleave).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator

DELAY = float(os.environ.get("OVF_PROGRESS_DELAY", "1.0"))  # seconds before the display shows
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


def on_terminal(stderr=None) -> bool:
    """Show the library's progress (:class:`ticking`)? When stderr is a terminal: the report of
    the commands that tick is written only once the work is done, so nothing interleaves."""
    return _is_tty(stderr or sys.stderr)


def wrote(output: str | None, what: str, also: str = "", stderr=None) -> str | None:
    """The line that ends a run which wrote a report file, on a terminal only (a script's
    stderr stays quiet): what was written where. None when there is nothing to say."""
    if not output or output == "-" or not _is_tty(stderr or sys.stderr):
        return None
    return f"ovforensics: wrote {what} to {_visible(output)}{_visible(also)}"


def tracked(records: Iterable, show: bool, stream=None, label: str = "scanning") -> Iterable:
    """``records`` as they are, or, when ``show``, the same records drawing the display."""
    if not show:
        return records
    return _shown(records, _Display(stream or sys.stderr, label))


class ticking:
    """While the library works (``bloat``, ``image``, ``recover``), show its ticks
    (:mod:`ovforensics.ticker`): the stage, the items so far, the time, the item; transient, on
    stderr, only when :func:`wanted` says so."""

    def __init__(self, show: bool, stream=None, label: str = "working"):
        self.display = _Display(stream or sys.stderr, label, "items") if show else None
        self.counts: dict[str, int] = {}

    def _tick(self, stage: str, item: str) -> None:
        count = self.counts[stage] = self.counts.get(stage, 0) + 1  # each stage its own count
        if count % EVERY == 0:
            self.display.update(count, item, stage)

    def __enter__(self) -> "ticking":
        if self.display is not None:
            from ovforensics import ticker

            ticker.set_display(self._tick)
        return self

    def __exit__(self, *exc) -> None:
        if self.display is not None:
            from ovforensics import ticker

            ticker.set_display(None)
            self.display.stop()


def _shown(records: Iterable, display: "_Display") -> Iterator:
    try:
        for count, record in enumerate(records, 1):
            if count % EVERY == 0:
                display.update(count, record)
            yield record
    finally:
        display.stop()


class _Display:
    def __init__(self, stream, label: str, unit: str = "records"):
        self.stream = stream
        self.label, self.unit = label, unit
        self.started = time.monotonic()
        self.progress = None
        self.task = None

    def update(self, count: int, record, stage: str | None = None) -> None:
        if self.progress is None:
            if time.monotonic() - self.started < float(DELAY):
                return
            self._start(count)
        path = _shown_path(record) if stage is None else _visible(record)
        if stage is None:
            self.progress.update(self.task, completed=count, path=path)
        else:
            self.progress.update(self.task, completed=count, path=path, stage=_visible(stage))

    def _start(self, count: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.table import Column

        console = Console(file=self.stream, force_terminal=True)
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.fields[stage]}", markup=False),
            BarColumn(bar_width=20),
            TextColumn("{task.completed:,} " + self.unit), TimeElapsedColumn(),
            TextColumn("{task.fields[path]}", markup=False,
                       table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
            console=console, transient=True, redirect_stdout=False, redirect_stderr=False)
        self.task = self.progress.add_task(self.label, total=None, completed=count, path="",
                                           stage=self.label)
        self.progress.start()

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _shown_path(record) -> str:
    from ovforensics.writers.formats import visible

    text = getattr(record, "path_text", None)
    return visible(text) if isinstance(text, str) else ""


def _visible(item) -> str:
    """A stage or an item as shown: a str escaped; a raw path (bytes, or a tuple of its names)
    as a record shows it."""
    import os

    from ovforensics.writers.formats import visible

    if isinstance(item, tuple):
        item = b"/" + b"/".join(item)
    if isinstance(item, bytes):
        item = os.fsdecode(item)
    return visible(item) if isinstance(item, str) else ""


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or closed
        return False
