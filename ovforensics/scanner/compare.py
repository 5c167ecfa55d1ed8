"""What differs between the entry a path shows in the merged view and in the base view."""
from __future__ import annotations

import bisect
import errno
import os
from typing import Callable

from ovforensics.layers.layer import Entry, EntryError
from ovforensics.layers.markers import Namespaces, visible_xattrs
from ovforensics.records.record import WHAT_ORDER

CHUNK = 1 << 20


def same_entry(a: Entry | None, b: Entry | None) -> bool:
    return a is not None and b is not None and a.layer is b.layer and a.path == b.path


def differences(top: Entry, data: Entry | None, base_top: Entry, base_data: Entry | None,
                ns: Namespaces) -> tuple[tuple[str, ...], list[str]]:
    """The ``what`` list for a path present in both views, and the problems met finding it.

    ``data``/``base_data`` are where each side's bytes live (a metacopy file's bytes live in a
    lower layer, so its own upper bytes are never read). A directory's mtime is never compared:
    it moves whenever a child changes.
    """
    if top.kind != base_top.kind:
        return ("type",), []
    found: set[str] = set()
    problems: list[str] = []
    if top.kind == "file":
        if not same_entry(data, base_data):
            verdict = _content_differs(data, base_data)
            if verdict is None:
                problems.append("content could not be compared: "
                                + _unreadable(data, base_data))
            elif verdict:
                found.add("content")
    elif top.kind in ("char", "block"):
        if top.rdev != base_top.rdev:
            found.add("content")
    elif top.kind == "symlink":
        if top.target != base_top.target:
            found.add("target")
    if top.kind != "symlink" and top.perm != base_top.perm:
        found.add("mode")
    if (top.uid, top.gid) != (base_top.uid, base_top.gid):
        found.add("owner")
    if not top.is_dir and top.mtime_ns != base_top.mtime_ns:
        found.add("mtime")
    if visible_xattrs(top, ns) != visible_xattrs(base_top, ns):
        found.add("xattrs")
    return tuple(w for w in WHAT_ORDER if w in found), problems


def _content_differs(a: Entry | None, b: Entry | None) -> bool | None:
    """True/False, or None when either side cannot be read."""
    if a is None or b is None:
        return None
    if a.size != b.size:
        return True
    try:
        with a.open() as fa, b.open() as fb:
            next_a, next_b = _data_finder(a, fa), _data_finder(b, fb)
            if next_a is not None or next_b is not None:
                return _holes_skipped(fa, fb, next_a or _dense, next_b or _dense, a.size)
            while True:
                ca = fa.read(CHUNK)
                cb = fb.read(CHUNK)
                if ca != cb:
                    return True
                if not ca:
                    return False
    except (EntryError, OSError):
        return None


def _dense(offset: int) -> int:
    return offset


def _data_finder(entry: Entry, fh) -> Callable[[int], int] | None:
    """For a sparse entry: ``offset -> the first offset >= it that may hold data`` (the size
    when only a hole is left); None for a dense one. A layer that knows its entries' data
    regions says so (:meth:`TarLayer.data_regions`: a tar's own sparse map, as the archive
    stores it); a file on disk allocated less than its size is asked with ``SEEK_DATA``. Two
    1 PiB sparse members are then compared by their data alone, not as a petabyte of zeros."""
    size = entry.size
    regions_of = getattr(entry.layer, "data_regions", None)
    regions = regions_of(entry) if regions_of is not None else None
    if regions is not None:
        starts = [start for start, _ in regions]
        ends = [start + length for start, length in regions]

        def next_region(offset: int) -> int:
            i = bisect.bisect_right(ends, offset)  # the first region ending past offset
            return size if i == len(ends) else max(offset, starts[i])
        return next_region
    if entry.blocks is not None and entry.blocks * 512 < size:
        fd = fh.fileno()
        return lambda offset: _next_data(fd, offset, size)
    return None


def _next_data(fd: int, offset: int, size: int) -> int:
    try:
        return os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return size  # only a hole from here to the end
        return offset  # no SEEK_DATA here: read it all


def _holes_skipped(fa, fb, next_a, next_b, size: int) -> bool:
    """Same bytes? A range both sides leave as a hole reads as zeros in both: skipped."""
    offset = 0
    while offset < size:
        start = min(next_a(offset), next_b(offset))
        if start >= size:
            return False
        want = min(CHUNK, size - start)
        fa.seek(start)
        fb.seek(start)
        ca, cb = fa.read(want), fb.read(want)
        if ca != cb:
            return True
        if not ca:
            return False  # shorter than the size read at listing time: the rest is not there
        offset = start + len(ca)
    return False


def _unreadable(a: Entry | None, b: Entry | None) -> str:
    names = [e.layer.label for e in (a, b) if e is not None]
    return ", ".join(names) if names else "no data"
