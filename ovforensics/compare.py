"""What differs between the entry a path shows in the merged view and in the base view."""
from __future__ import annotations

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
            while True:
                ca = fa.read(CHUNK)
                cb = fb.read(CHUNK)
                if ca != cb:
                    return True
                if not ca:
                    return False
    except (EntryError, OSError):
        return None


def _unreadable(a: Entry | None, b: Entry | None) -> str:
    names = [e.layer.label for e in (a, b) if e is not None]
    return ", ".join(names) if names else "no data"
