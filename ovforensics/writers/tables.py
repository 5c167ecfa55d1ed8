"""Human tables that fit the terminal, as ``docker ps`` does.

Every table the CLI prints (``diff``/``deleted``, ``containers``, ``layers``, ``bloat``,
``image``) goes through :func:`render`:

* **width**: ``$COLUMNS`` if set (a positive integer), else the size of the terminal the stream
  is, else :data:`DEFAULT_WIDTH` (120) when the output is a pipe or a file;
* **short values**: ids and digests are cut to 12 characters (``sha256:`` dropped), hashes to
  a 12-character prefix, sizes shown as people read them (``31.3 MiB``);
* **nothing else is lost**: a column still too wide is *wrapped* onto continuation lines (paths,
  anomaly details, commands), never cut, so no line is longer than the width;
* ``no_trunc=True`` (``--no-trunc``): full ids, full hashes, exact byte counts, no wrapping.

Machine formats (csv, json, jsonl) never come here: they keep every value whole.
"""
from __future__ import annotations

import os
import textwrap
import unicodedata
from typing import Iterable, Iterator, Sequence

from ovforensics.units import human

#: The width when the output is no terminal and ``$COLUMNS`` is not set.
DEFAULT_WIDTH = 120
#: How long an id, digest or hash is in a table (as ``docker ps``).
SHORT = 12

#: Column kinds: ``text`` (kept whole, wrapped only as a last resort), ``wrap`` (wrapped first:
#: paths, details, commands), ``id`` (cut to 12, ``sha256:`` dropped), ``hash`` (a 12-character
#: prefix), ``bytes`` (human size).
KINDS = ("text", "wrap", "id", "hash", "bytes")

#: The ``containers`` table: (field, header, kind). Every field: ``-f json``/``csv``.
CONTAINER_TABLE = (("engine", "engine", "text"), ("id", "container id", "id"),
                   ("names", "names", "wrap"), ("image", "image", "wrap"),
                   ("state", "state", "text"), ("created", "created", "text"),
                   ("upper_bytes", "size", "bytes"))
#: The ``layers`` table.
LAYER_TABLE = (("index", "index", "text"), ("role", "role", "text"), ("id", "id", "id"),
               ("diff_id", "diff id", "id"), ("entries", "entries", "text"),
               ("bytes", "size", "bytes"), ("dir", "dir", "wrap"))


def width_for(stream) -> int:
    """The width a table written to ``stream`` must fit (see the module docstring)."""
    value = os.environ.get("COLUMNS", "")
    if value.strip().isdigit() and int(value) > 0:
        return int(value)
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns or DEFAULT_WIDTH
    except (AttributeError, OSError, ValueError):
        pass
    return DEFAULT_WIDTH


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_width(text: str) -> int:
    """Display width: wide (CJK) characters count two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(_char_width(ch) for ch in text)


def cell(value, kind: str, no_trunc: bool = False) -> str:
    """One value as the table shows it (the caller has made control characters visible)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    if kind == "bytes" and isinstance(value, int) and not no_trunc:
        return human(value)
    text = str(value)
    if no_trunc:
        return text
    if kind == "id":
        if ":" in text and text.split(":", 1)[0] in ("sha256", "sha512", "sha384"):
            text = text.split(":", 1)[1]
        return text[:SHORT]
    if kind == "hash":
        return text[:SHORT]
    return text


def floors(headers: Sequence[str], cell_widths: Sequence[int], kinds: Sequence[str]) -> list[int]:
    """How narrow a column gets before the last resort: a ``wrap`` column 10 (or its natural
    width), any other its widest cell, with its header wrapped at spaces."""
    out = []
    for header, cells, kind in zip(headers, cell_widths, kinds):
        words = max((text_width(word) for word in header.split()), default=1)
        natural = max(cells, text_width(header))
        out.append(min(natural, 10) if kind == "wrap" else max(cells, words))
    return out


def fits(floor: Sequence[int], width: int) -> bool:
    """Whether columns of at least these widths fit ``width``."""
    return sum(floor) + 2 * max(len(floor) - 1, 0) <= width


def fit(natural: Sequence[int], kinds: Sequence[str], width: int,
        floor: Sequence[int] | None = None) -> list[int]:
    """Column widths summing (with two-space gaps) to at most ``width``: the widest column above
    its ``floor`` shrinks first (``wrap`` columns before the others), and only when that is not
    enough does any column go below its floor (down to 1)."""
    widths = list(natural)
    gaps = 2 * max(len(widths) - 1, 0)
    floor = list(floor) if floor is not None else [min(n, 10) for n in natural]

    def over() -> int:
        return sum(widths) + gaps - width

    stages = ((lambda i: floor[i], ("wrap",)), (lambda i: floor[i], KINDS), (lambda i: 1, KINDS))
    for low, allowed in stages:
        while over() > 0:
            cands = [i for i, w in enumerate(widths) if kinds[i] in allowed and w > low(i)]
            if not cands:
                break
            i = max(cands, key=lambda j: widths[j] - low(j))
            widths[i] -= 1
    return widths


def wrap(text: str, width: int, header: bool = False) -> list[str]:
    """``text`` in pieces no wider than ``width``: by characters (exact: nothing dropped), or for
    a header at spaces."""
    if text_width(text) <= width:
        return [text]
    if header and text.isascii():
        return textwrap.wrap(text, width) or [""]
    pieces, piece, used = [], [], 0
    for ch in text:
        w = _char_width(ch) if not ch.isascii() else 1
        if used + w > width and piece:
            # break after a "/" or space in the second half of the piece where there is one
            cut = max((k for k, c in enumerate(piece) if c in "/ ," and k >= len(piece) // 2),
                      default=None)
            if cut is None or cut == len(piece) - 1:
                pieces.append("".join(piece))
                piece = []
            else:
                pieces.append("".join(piece[:cut + 1]))
                piece = piece[cut + 1:]
            used = sum(_char_width(c) for c in piece)
        piece.append(ch)
        used += w
    pieces.append("".join(piece))
    return pieces


def row_lines(cells: Sequence[str], widths: Sequence[int], header: bool = False) -> list[str]:
    """One row in the given widths, a cell too wide wrapped onto continuation lines."""
    pieces = [wrap(c, w, header) for c, w in zip(cells, widths)]
    out = []
    for k in range(max((len(p) for p in pieces), default=1)):
        parts = [(p[k] if k < len(p) else "") for p in pieces]
        out.append("  ".join(t + " " * (w - text_width(t)) for t, w in zip(parts, widths)).rstrip())
    return out


def head_lines(headers: Sequence[str], widths: Sequence[int]) -> list[str]:
    """The header (wrapped at spaces where too wide) and its rule."""
    return row_lines(headers, widths, header=True) + ["  ".join("-" * w for w in widths).rstrip()]


def lines(headers: Sequence[str], rows: Iterable[Sequence[str]],
          widths: Sequence[int]) -> Iterator[str]:
    """tabulate's ``simple`` layout (header, rule, rows; left-aligned; two-space gaps) in the
    given widths."""
    yield from head_lines(headers, widths)
    for cells in rows:
        yield from row_lines(cells, widths)


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], kinds: Sequence[str],
           width: int, no_trunc: bool = False) -> list[str]:
    """A whole table (rows already made cells with :func:`cell`) as lines fitting ``width``
    (unless ``no_trunc``)."""
    cells = [0] * len(headers)
    for row in rows:
        for i, c in enumerate(row):
            w = text_width(c)
            if w > cells[i]:
                cells[i] = w
    natural = [max(c, text_width(h)) for c, h in zip(cells, headers)]
    widths = natural if no_trunc else fit(natural, kinds, width, floors(headers, cells, kinds))
    return list(lines(headers, rows, widths))


def wrap_text(text: str, width: int, no_trunc: bool = False) -> str:
    """A line of prose (a report's totals) wrapped at ``width``, continuation lines indented."""
    if no_trunc or text_width(text) <= width:
        return text
    return "\n".join(textwrap.wrap(text, width, subsequent_indent="  ", break_on_hyphens=False))
