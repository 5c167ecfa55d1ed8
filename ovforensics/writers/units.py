"""Sizes as people read them, for reports and tables."""
from __future__ import annotations


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
