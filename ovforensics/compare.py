"""What differs between the entry a path shows in the merged view and in the base view."""
from __future__ import annotations

import errno
import os

from .layer import Entry, EntryError
from .markers import Namespaces, visible_xattrs
from .record import WHAT_ORDER

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
            if _sparse(a, b):
                return _holes_skipped(fa.fileno(), fb.fileno(), a.size)
            while True:
                ca = fa.read(CHUNK)
                cb = fb.read(CHUNK)
                if ca != cb:
                    return True
                if not ca:
                    return False
    except (EntryError, OSError):
        return None


def _sparse(a: Entry, b: Entry) -> bool:
    """Both on disk (their allocation known) and one allocated less than its size: compare by
    data extents, so two 1 TB sparse files are not read as a terabyte of zeros each."""
    if a.blocks is None or b.blocks is None:
        return False
    return a.blocks * 512 < a.size or b.blocks * 512 < b.size


def _next_data(fd: int, offset: int, size: int) -> int:
    try:
        return os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return size  # only a hole from here to the end
        return offset  # no SEEK_DATA here: read it all


def _holes_skipped(fda: int, fdb: int, size: int) -> bool:
    """Same bytes? A range both files leave as a hole reads as zeros in both: skipped."""
    offset = 0
    while offset < size:
        start = min(_next_data(fda, offset, size), _next_data(fdb, offset, size))
        if start >= size:
            return False
        want = min(CHUNK, size - start)
        ca, cb = os.pread(fda, want, start), os.pread(fdb, want, start)
        if ca != cb:
            return True
        if not ca:
            return False  # shorter than the size read at listing time: the rest is not there
        offset = start + len(ca)
    return False


def _unreadable(a: Entry | None, b: Entry | None) -> str:
    names = [e.layer.label for e in (a, b) if e is not None]
    return ", ".join(names) if names else "no data"
