"""Progress of long library work, as a hook every folder may call (like ``units``): the
library calls :func:`tick` once per item (a layer's file read by ``bloat``/``image``, an entry
``recover`` placed); a front end that wants a display installs one with :func:`set_display`
(the CLI does, on a terminal: ``writers/progress.py``). With none installed a tick costs a
global lookup and a comparison.
"""
from __future__ import annotations

from typing import Callable

_display: Callable[[str, str], None] | None = None


def set_display(display: Callable[[str, str], None] | None) -> None:
    """Install ``display(stage, item)`` (None: no display)."""
    global _display
    _display = display


def tick(stage: str, item: str = "") -> None:
    """One item of work done: ``stage`` says what is being done (``reading layer 2 of 5``),
    ``item`` which one (a path, already escaped for a terminal or not: the display escapes)."""
    if _display is not None:
        _display(stage, item)
