"""``--include``/``--exclude`` (and the bloat audit's ``--ignore``): shell globs matched against
a record's container path, one rule for every command.

- A pattern matches the path itself and, when it names a directory, its whole subtree:
  ``/usr/share/doc`` takes ``/usr/share/doc/**`` too (as a user means it; fnmatch alone would
  take the directory and nothing below).
- Paths are absolute, so a relative pattern could never match: ``usr/share`` is read as
  ``/usr/share`` (anchored); a pattern starting with ``*`` matches anywhere, as before.
- An empty pattern (an unset shell variable) is an error, not a pattern that matches nothing.
"""
from __future__ import annotations

import fnmatch
from typing import Iterable


def compile_globs(option: str, globs: Iterable[str]) -> list[str]:
    """The patterns to match, checked and anchored; ValueError names ``option``."""
    out = []
    for g in globs:
        if not isinstance(g, str) or not g.strip():
            raise ValueError(f"{option}: an empty pattern (an unset shell variable?): give a "
                             "path or a glob such as /usr/share/doc or *.log")
        if not g.startswith(("/", "*", "?", "[")):
            g = "/" + g
        out.append(g.rstrip("/") or "/")
    return out


def matches(text: str, globs: list[str]) -> bool:
    """Whether ``text`` (a container path) is one of ``globs`` or below one."""
    for g in globs:
        if fnmatch.fnmatchcase(text, g) or (g != "/" and fnmatch.fnmatchcase(text, g + "/*")):
            return True
        if g == "/":
            return True
    return False
