"""Sizes: as people read them (``human``) and as people write them (``parse_bytes``). Shared
by every folder (no package imports, like ``version``)."""
from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal


class SizeError(ValueError):
    """A byte count that cannot be read: a one-line message naming the option."""


_UNITS = {"": 1, "b": 1,
          "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12,
          "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
          "ti": 2**40, "tib": 2**40}


def parse_bytes(value, what: str = "--max-wasted") -> int:
    """``50MB`` (10^6), ``1.5GiB`` (2^30), ``1200``, ``10k``: a byte count (rounded to whole bytes)."""
    if isinstance(value, bool):
        raise SizeError(f"{what}: expected a byte count such as 50MB or 1.5GiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise SizeError(f"{what}: must not be negative")
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", str(value))
    unit = _UNITS.get(m.group(2).lower()) if m else None
    if unit is None:
        raise SizeError(f"{what}: expected a byte count such as 50MB, 1.5GiB or 1200, got {value!r}")
    return int((Decimal(m.group(1)) * unit).to_integral_value(ROUND_HALF_UP))


def human(n: int | None) -> str:
    """``32769847`` -> ``31.3 MiB``."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
