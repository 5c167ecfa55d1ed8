"""Reading files of one view of a stack (the image's or the container's) by container path.

Every lookup goes through :class:`ovforensics.scanner.resolve.View`, so the overlay rules (upper over
lowers, whiteouts, opaque directories, redirects, metacopy) are the differ's own. A path is
walked one name at a time: a component that is a symlink (or anything but a directory) ends the
walk, so no symlinked parent is ever followed, and a database path cannot leave the stack.
Bytes are read through the layer's own ``open`` (``O_NOFOLLOW``, regular files only).
"""
from __future__ import annotations

import os
import tempfile

from ovforensics.layers.layer import EntryError
from ovforensics.scanner.resolve import Resolved, View

MAX_DB_FILE = 512 << 20  # a package database file larger than this is refused, not read


class NotFound(Exception):
    """The path is not in the view, or a parent of it is not a directory there (a symlink)."""


class SymlinkedParent(NotFound):
    """A parent of the path is a symlink in this view: never followed (it could lead anywhere)."""


def lookup(view: View, path: tuple[bytes, ...]) -> Resolved:
    """The view's entry at ``path`` (components below the root)."""
    frames = view.root_frames
    found: Resolved | None = None
    for depth, name in enumerate(path):
        if not frames:
            raise NotFound("/" + os.fsdecode(b"/".join(path[:depth])) + ": not a directory here"
                           if depth else "no root")
        found = view.lookup(frames, name)
        if found is None:
            raise NotFound(f"/{os.fsdecode(b'/'.join(path[:depth + 1]))}: not in this view")
        if depth < len(path) - 1:
            if found.top.kind != "dir":
                where = "/" + os.fsdecode(b"/".join(path[:depth + 1]))
                if found.top.kind == "symlink":
                    raise SymlinkedParent(f"{where}: a symlink (not followed)")
                raise NotFound(f"{where}: not a directory")
            frames = found.frames
    if found is None:
        raise NotFound("the root is no file")
    return found


def exists(view: View, path: tuple[bytes, ...]) -> bool:
    try:
        lookup(view, path)
    except NotFound:
        return False
    return True


def read(view: View, path: tuple[bytes, ...], limit: int = MAX_DB_FILE) -> bytes:
    """A regular file's bytes; raises :class:`NotFound` or ``OSError`` (named by the caller)."""
    found = lookup(view, path)
    if found.top.kind != "file":  # a FIFO, device, symlink...: reported, never opened
        raise OSError(f"a {found.top.kind}, not a regular file: not read")
    if found.data is None:
        raise NotFound(f"/{os.fsdecode(b'/'.join(path))}: no layer holds its data")
    return read_entry(found, limit)


def copy_out(view: View, path: tuple[bytes, ...], directory: str) -> str:
    """A private copy of a file (for SQLite, which opens by name): the evidence's own file is
    never handed to another library, so no link or ``-wal`` beside it is ever touched."""
    body = read(view, path)
    fd, name = tempfile.mkstemp(dir=directory, suffix=".db")
    with os.fdopen(fd, "wb") as out:
        out.write(body)
    return name


def listdir(view: View, path: tuple[bytes, ...]) -> dict[bytes, Resolved]:
    """The names the view shows in a directory, each resolved (whiteouts honoured)."""
    found = lookup(view, path) if path else None
    frames = found.frames if found is not None else view.root_frames
    if found is not None and found.top.kind != "dir":
        raise NotFound(f"/{os.fsdecode(b'/'.join(path))}: not a directory")
    out = {}
    for name in sorted(view.names(frames)):
        hit = view.lookup(frames, name)
        if hit is not None:
            out[name] = hit
    return out


def read_entry(found: Resolved, limit: int = MAX_DB_FILE) -> bytes:
    """The bytes of a file found by :func:`listdir`."""
    if found.top.kind != "file" or found.data is None:
        raise OSError(f"a {found.top.kind}, not a regular file: not read")
    chunks, size = [], 0
    try:
        with found.data.open() as fh:
            while True:
                block = fh.read(1 << 20)
                if not block:
                    return b"".join(chunks)
                size += len(block)
                if size > limit:
                    raise OSError(f"larger than {limit} bytes: not read")
                chunks.append(block)
    except EntryError as exc:
        raise OSError(str(exc)) from None


def usr_aliases(view: View) -> dict[bytes, bytes]:
    """Top-level symlinks of a merged-/usr root (``/bin -> usr/bin``): {b"bin": b"usr/bin"}.

    Package databases still name ``/bin/ls`` where the layers hold ``usr/bin/ls``; only links
    from a root name to ``usr/<the same name>`` count (the link itself is read, never followed)."""
    out = {}
    for name in (b"bin", b"sbin", b"lib", b"lib32", b"lib64", b"libx32"):
        try:
            found = view.lookup(view.root_frames, name)
        except Exception:  # noqa: BLE001 - a damaged root entry: no alias
            continue
        if found is not None and found.top.kind == "symlink":
            target = (found.top.target or b"").rstrip(b"/")
            if target in (b"usr/" + name, b"/usr/" + name):
                out[name] = b"usr/" + name
    return out
