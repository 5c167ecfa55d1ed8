"""Strings from engine stores: evidence, carried losslessly whatever code units they hold.

A store file is JSON an intruder may have written. Two things in it are no valid Unicode text:

- a **lone surrogate** escape (``"Name": "/bad\\ud800name"``): ``json`` reads it as the code
  unit U+D800, which no UTF-8 writer can encode;
- **bytes that are not UTF-8** (a raw ``0xff`` inside a string): a strict decoder refuses the
  whole file. :func:`loads` reads them as Python's surrogate escapes (U+DC80..U+DCFF, one per
  byte), so one bad record never hides the rest.

Such strings go out exactly (:func:`exact_bytes`, base64 in ``*_b64`` fields beside the escaped
text, as ``path_b64`` does for paths), and never raw: JSON writes each surrogate as a ``\\uXXXX``
escape (ASCII: nothing a locale can turn into a raw byte), tables, CSV and messages as the
visible escape ``\\udXXX``.
"""
from __future__ import annotations

import base64
import json
import re

SURROGATE = re.compile("[\ud800-\udfff]")


def loads(data: bytes | str):
    """``json.loads`` of a store file; bytes that are not UTF-8 become surrogate escapes
    instead of failing the file (a BOM-less UTF-8 store is what every engine writes)."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            data = bytes(data).decode("utf-8", "surrogateescape")
    return json.loads(data)


def has_surrogates(text: str) -> bool:
    return not text.isascii() and SURROGATE.search(text) is not None


def exact_bytes(text: str) -> bytes:
    """The bytes a store string stands for: surrogate escapes U+DC80..U+DCFF back to the bytes
    they were read from, any other surrogate (an escape in the JSON text) as WTF-8."""
    out = bytearray()
    for piece in re.split("([\ud800-\udfff])", text):
        if not piece:
            continue
        code = ord(piece[0])
        if len(piece) == 1 and 0xD800 <= code <= 0xDFFF:
            out += (bytes([code - 0xDC00]) if 0xDC80 <= code <= 0xDCFF
                    else piece.encode("utf-8", "surrogatepass"))
        else:
            out += piece.encode("utf-8")
    return bytes(out)


def b64(text: str) -> str:
    return base64.b64encode(exact_bytes(text)).decode("ascii")


def escape_surrogates(text: str) -> str:
    """Each surrogate as ``\\udXXX`` (valid both as JSON inside a string and as visible text)."""
    if not has_surrogates(text):
        return text
    return SURROGATE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


def with_b64(row: dict) -> dict:
    """``row`` plus ``KEY_b64`` (exact bytes, base64) for each string value, or list of
    strings, holding a surrogate; the row itself when none does (the common case)."""
    extra = {}
    for key, value in row.items():
        if isinstance(value, str):
            if has_surrogates(value):
                extra[f"{key}_b64"] = b64(value)
        elif isinstance(value, (list, tuple)) and any(isinstance(v, str) and has_surrogates(v)
                                                      for v in value):
            extra[f"{key}_b64"] = [b64(v) if isinstance(v, str) else None for v in value]
    return {**row, **extra} if extra else row
