"""What a layer is made of: entries (one per name, as stored: no overlay interpretation),
the :class:`Layer` protocol the scanner reads through, and the errors a layer raises."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from ovforensics.layers.deeppath import join as join_deep

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

    def __init__(self, layer: "Layer", path: Path, kind: str, st: os.stat_result):
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
