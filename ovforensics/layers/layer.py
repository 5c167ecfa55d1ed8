"""Layers as the scanner sees them: directories of entries, read once and cached.

A :class:`Layer` is one layer of an overlay stack (an upperdir, a lowerdir, or a tar archive of
one). The scanner asks a layer only two things: the listing of a directory (``listdir``) and,
lazily, an entry's xattrs and bytes. :class:`DirLayer` reads a directory on disk without
following links and without writing; :mod:`ovforensics.layers.tarlayer` reads an archive.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO, Iterator

from ovforensics.layers.deeppath import child
from ovforensics.evidence.safeio import PATH_LONG, FdWalker, open_dir, open_file, xattrs_at
from ovforensics.layers import bigdir
from ovforensics.layers.entry import (  # noqa: F401 (Entry, Layer, ... re-exported here)
    DiskEntry, Entry, EntryError, KIND_BY_FMT, Layer, LayerError, Path, join, statx_btime_ns)

class DirLayer:
    """A layer that is a directory on disk. Never follows a symlink, never writes.

    Each directory is listed once, through ``os.scandir`` on an ``O_NOATIME`` descriptor, and
    each entry stat-ed relative to it (``fstatat``); an entry that vanished in between is left
    out and noted in :attr:`errors`. An entry whose physical path is ``PATH_LONG`` bytes or more
    (past ``PATH_MAX``) is reached relative to its parent's fd, found by a
    :class:`~ovforensics.evidence.safeio.FdWalker`; shorter paths are opened by name as they are.
    """

    def __init__(self, root: str | bytes, index: int = -1, rules: str = "kernel"):
        self.root = os.fsencode(root).rstrip(b"/") or b"/"
        self.index = index
        self.label = os.fsdecode(self.root)
        self.rules = rules
        self.guess_rules = False  # --whiteouts auto: decide at the first .wh. name (formguess)
        self.rules_auto: str | None = None  # why auto chose the rules, when it chose any
        self.info = None  # the engine's LayerInfo, when an engine reader found this layer
        try:
            st = os.lstat(self.root)
        except OSError as exc:
            raise LayerError(f"{self.label}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise LayerError(f"{self.label}: not a directory")
        try:  # a layer that cannot be listed is unreadable input, not an empty layer
            os.close(open_dir(self.root))
        except OSError as exc:
            raise LayerError(f"{self.label}: cannot list it: {exc.strerror}") from None
        self._cache: dict[Path, dict[bytes, Entry] | None] = {}
        self._root: Entry | None = None
        self.errors: list[tuple[bytes, str]] = []  # (physical path, why) for entries not read
        self._walker = FdWalker(self.root)  # holds no fd until a long path is met
        self._last_dir: tuple[Path, bytes] = ((), self.root)  # (path, physical) listed last

    def physical(self, path: Path) -> bytes:
        if len(path) > 64:  # deep: the last directory listed is usually the parent
            last = self._last_dir
            if len(last[0]) == len(path) - 1 and path[:-1] == last[0]:
                return last[1] + b"/" + path[-1]
        return self.root + b"/" + join(path) if path else self.root

    def inside(self, where: bytes) -> bytes:
        """The inverse of :meth:`physical`: ``/`` + the path inside the layer of an on-disk
        path (as :attr:`errors` holds them), or ``b""`` where it is not under the root."""
        if where == self.root:
            return b"/"
        prefix = self.root.rstrip(b"/") + b"/"
        return b"/" + where[len(prefix):] if where.startswith(prefix) else b""

    def root_entry(self) -> Entry:
        """The layer's root directory itself (its xattrs may mark it opaque or impure)."""
        if self._root is None:
            self._root = DiskEntry(self, (), "dir", os.lstat(self.root))
        return self._root

    def listdir(self, path: Path) -> dict[bytes, Entry] | None:
        """The entries of directory ``path`` in this layer, or None where it is no directory."""
        try:
            return self._cache[path]
        except KeyError:
            pass
        listing = self._read_dir(path)
        self._cache[path] = listing
        return listing

    def forget(self, path: Path) -> None:
        """Drop a cached listing once the scan has left that directory (keeps memory flat);
        leaving a directory too short to hold a long path's parent releases the walker's fds
        (a stack of many deep layers must not run out of descriptors)."""
        self._cache.pop(path, None)
        if self._walker.holding and len(self.root) + 256 * len(path) < PATH_LONG:
            self._walker.close()

    def _read_dir(self, path: Path) -> dict[bytes, Entry] | None:
        where = self.physical(path)
        if len(path) > 64:
            self._last_dir = (path, where)
        try:
            if len(where) < PATH_LONG:
                fd = open_dir(where)
            else:
                walker = self._walker
                with walker.lock:
                    fd = open_dir(path[-1], dir_fd=walker.parent(path))
                    walker.keep(path, os.dup(fd))  # its entries are asked for next
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                self.errors.append((where, exc.strerror or str(exc)))
            return None
        out: dict[bytes, Entry] = {}
        big = bigdir.BIG
        try:
            with os.scandir(fd) as it:
                for dent in it:
                    if len(out) >= big:  # too big to hold: names only (bigdir.py)
                        return bigdir.NameListing.take_over(self, path, fd, out, dent, it)
                    name = os.fsencode(dent.name)
                    try:
                        st = dent.stat(follow_symlinks=False)
                    except OSError as exc:  # vanished or unreadable: record and go on
                        self.errors.append((where + b"/" + name, exc.strerror or str(exc)))
                        continue
                    kind = KIND_BY_FMT.get(stat.S_IFMT(st.st_mode), "unknown")
                    out[name] = DiskEntry(self, child(path, name), kind, st)
        except OSError as exc:
            self.errors.append((where, exc.strerror or str(exc)))
        finally:
            os.close(fd)
        if self.guess_rules:
            self.check_rules(out)
        return out

    def check_rules(self, names) -> None:
        """``--whiteouts auto``: the first listing that holds a ``.wh.`` name decides the
        layer's rules from its whole tree (:mod:`ovforensics.layers.formguess`). Until then the rules
        make no difference: every form but the kernel's is a ``.wh.`` name."""
        if not any(name[:4] == b".wh." for name in names):
            return
        from ovforensics.layers.formguess import guess_rules

        self.guess_rules = False
        self.rules, self.rules_auto = guess_rules(self.root)

    def btime_ns(self, entry: Entry) -> int | None:
        where = self.physical(entry.path)
        if len(where) < PATH_LONG:
            return statx_btime_ns(where)
        walker = self._walker
        with walker.lock:
            try:
                return statx_btime_ns(entry.path[-1], walker.parent(entry.path))
            except OSError:
                return None

    def read_target(self, entry: Entry) -> bytes:
        where = self.physical(entry.path)
        try:
            if len(where) < PATH_LONG:
                return os.readlink(where)
            walker = self._walker
            with walker.lock:
                return os.readlink(entry.path[-1], dir_fd=walker.parent(entry.path))
        except OSError as exc:
            self.errors.append((where, exc.strerror or str(exc)))
            return b""

    def read_xattrs(self, entry: Entry) -> dict[str, bytes]:
        where = self.physical(entry.path)
        try:
            if len(where) >= PATH_LONG:
                walker = self._walker
                with walker.lock:
                    return xattrs_at(walker.parent(entry.path), entry.path[-1])
            names = os.listxattr(where, follow_symlinks=False)
            return {n: os.getxattr(where, n, follow_symlinks=False) for n in names}
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.ENODATA):
                return {}
            self.errors.append((where, f"xattrs: {exc.strerror or exc}"))
            return {}

    def open(self, entry: Entry) -> BinaryIO:
        """Open a regular file read-only: no link following, no atime update where allowed."""
        if entry.kind != "file":
            raise EntryError(f"{os.fsdecode(entry.physical)}: not a regular file")
        where = self.physical(entry.path)
        try:
            if len(where) < PATH_LONG:
                fd = open_file(where)
            else:
                walker = self._walker
                held = walker.holding  # False: the scan has left this part (forget)
                try:
                    with walker.lock:
                        fd = open_file(entry.path[-1], dir_fd=walker.parent(entry.path))
                finally:
                    if not held:  # a late open (--hash's pool) keeps no waypoint fds behind it
                        walker.close()
        except OSError as exc:
            raise EntryError(f"{os.fsdecode(where)}: {exc.strerror or exc}") from None
        return os.fdopen(fd, "rb")

    def walk_dirs(self, path: Path = ()) -> Iterator[Path]:  # pragma: no cover - helper
        stack = [path]
        while stack:
            p = stack.pop()
            yield p
            listing = self.listdir(p) or {}
            stack.extend(e.path for e in listing.values() if e.is_dir)
