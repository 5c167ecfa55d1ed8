#!/usr/bin/env python3
"""Fuzz ``stack.split_lowerdir``: a ``lowerdir=`` / ``LowerDir`` string as a config holds it.

Contract: it returns a list of strings for any string (never raises); an item never contains an
unescaped separator, so escaping the items back (``\\`` -> ``\\\\``, ``:`` -> ``\\:``) and joining
them with ``:`` splits again to the same list; ``len(items)`` is one more than the number of
unescaped colons.

    python fuzz/run.py lowerdir 3600
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402,F401  (puts the repo on sys.path)

from ovforensics.layers.stack import split_lowerdir  # noqa: E402


def escape(item: str) -> str:
    return item.replace("\\", "\\\\").replace(":", "\\:")


def separators(value: str) -> int:
    n, i = 0, 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            i += 2
            continue
        n += value[i] == ":"
        i += 1
    return n


def TestOneInput(data: bytes) -> None:
    value = data.decode("utf-8", "surrogateescape")
    items = split_lowerdir(value)
    assert isinstance(items, list) and all(isinstance(i, str) for i in items), items
    assert len(items) == separators(value) + 1, (value, items)
    again = split_lowerdir(":".join(escape(i) for i in items))
    assert again == items, (value, items, again)


def seeds() -> list[bytes]:
    return [b"/a:/b", b"/var/lib/docker/overlay2/l/ABC:/x\\:y", b"a::b", b"\\", b"a\\\\:b", b"",
            b":", "/d\u00e9j\u00e0:\udcff".encode("utf-8", "surrogateescape")]


if __name__ == "__main__":
    common.fuzz_main(TestOneInput)
