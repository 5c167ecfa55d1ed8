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
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, Protocol

from ovforensics.layers.deeppath import child
from ovforensics.layers.deeppath import join as join_deep
from ovforensics.evidence.safeio import PATH_LONG, FdWalker, open_dir, open_file, xattrs_at

Path = tuple[bytes, ...]  # components of a path inside a layer; () is the layer root (past
# deeppath.DEEP components, a DeepPath: the same tuple, sharing its prefix; made by child())

KIND_BY_FMT = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
}


class LayerError(Exception):
    """A layer that cannot be read at all (missing, not a directory, not an archive)."""


class EntryError(Exception):
    """One entry that cannot be read; the scan records it and goes on."""


@dataclass(eq=False)
class Entry:
    """Metadata of one entry in one layer, as stored there (no overlay interpretation)."""

    layer: "Layer"
    path: Path
    kind: str
    mode: int  # full st_mode
    uid: int
    gid: int
    size: int
    mtime_ns: int
    rdev: int = 0
    nlink: int = 1
    ino: int = 0
    target: bytes | None = None
    blocks: int | None = None
    atime_ns: int | None = None
    ctime_ns: int | None = None
    _xattrs: dict[str, bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> bytes:
        return self.path[-1] if self.path else b""

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def perm(self) -> int:
        return self.mode & 0o7777

    def xattrs(self) -> dict[str, bytes]:
        """All xattrs as stored in the layer (control and escaped ones included); read once."""
        if self._xattrs is None:
            self._xattrs = self.layer.read_xattrs(self)
        return self._xattrs

    def xattr(self, name: str) -> bytes | None:
        return self.xattrs().get(name)

    def open(self) -> BinaryIO:
        return self.layer.open(self)

    def btime_ns(self) -> int | None:
        """Birth time, where the layer's filesystem records one (statx); None elsewhere."""
        getter = getattr(self.layer, "btime_ns", None)
        return getter(self) if getter is not None else None

    @property
    def physical(self) -> bytes:
        """Where this entry lives on disk (or inside the archive), for reports."""
        return self.layer.physical(self.path)


def _get_target(self: Entry) -> bytes | None:
    """A symlink's target, read only when asked: readlink(2) updates the link's atime on a
    relatime mount (O_NOATIME has no readlink twin), so untouched links are never read."""
    value = self.__dict__.get("_target")
    if value is None and self.kind == "symlink":
        reader = getattr(self.layer, "read_target", None)
        if reader is not None:
            value = self.__dict__["_target"] = reader(self)
    return value


def _set_target(self: Entry, value: bytes | None) -> None:
    self.__dict__["_target"] = value


Entry.target = property(_get_target, _set_target)  # the dataclass __init__ assigns through it


class Layer(Protocol):
    index: int
    label: str  # the layer's directory or archive, as the user named it
    rules: str  # whiteout rules: "kernel", "oci" or "fuse" (see markers.py)

    def root_entry(self) -> Entry: ...
    def listdir(self, path: Path) -> dict[bytes, Entry] | None: ...
    def read_xattrs(self, entry: Entry) -> dict[str, bytes]: ...
    def open(self, entry: Entry) -> BinaryIO: ...
    def physical(self, path: Path) -> bytes: ...


def join(path: Path) -> bytes:
    return b"/".join(path) if type(path) is tuple else join_deep(path)


def statx_btime_ns(where: bytes, dir_fd: int = -100) -> int | None:
    """Birth time by statx(2) (no link following), or None where the filesystem has none;
    ``where`` relative to ``dir_fd`` (default: AT_FDCWD)."""
    import ctypes

    global _statx
    if _statx is None:
        libc = ctypes.CDLL(None, use_errno=True)
        _statx = getattr(libc, "statx", False)
    if not _statx:
        return None
    buf = ctypes.create_string_buffer(256)
    AT_SYMLINK_NOFOLLOW, STATX_BTIME = 0x100, 0x800
    if _statx(dir_fd, where, AT_SYMLINK_NOFOLLOW, STATX_BTIME, buf) != 0:
        return None
    mask = int.from_bytes(buf.raw[0:4], "little")
    if not mask & STATX_BTIME:
        return None
    # struct statx: stx_btime (struct statx_timestamp: i64 sec, u32 nsec) at offset 80
    sec = int.from_bytes(buf.raw[80:88], "little", signed=True)
    nsec = int.from_bytes(buf.raw[88:92], "little")
    return sec * 1_000_000_000 + nsec


_statx = None


class DiskEntry(Entry):
    """An entry of a directory layer: its fields are read from the ``stat_result`` of the
    listing when asked (much cheaper than filling the 16-field dataclass for every entry)."""

    def __init__(self, layer: "DirLayer", path: Path, kind: str, st: os.stat_result):
        self.layer = layer
        self.path = path
        self.kind = kind
        self._st = st
        self._xattrs = None

    mode = property(lambda self: self._st.st_mode)
    uid = property(lambda self: self._st.st_uid)
    gid = property(lambda self: self._st.st_gid)
    size = property(lambda self: self._st.st_size)
    mtime_ns = property(lambda self: self._st.st_mtime_ns)
    atime_ns = property(lambda self: self._st.st_atime_ns)
    ctime_ns = property(lambda self: self._st.st_ctime_ns)
    rdev = property(lambda self: self._st.st_rdev)
    nlink = property(lambda self: self._st.st_nlink)
    ino = property(lambda self: self._st.st_ino)
    blocks = property(lambda self: getattr(self._st, "st_blocks", None))


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
        from ovforensics.layers import bigdir

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
