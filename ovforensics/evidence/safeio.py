"""Reading evidence without touching it: the one place that opens files and directories.

Every open is read-only, never follows a symlink (O_NOFOLLOW), asks the kernel not to update
the access time (O_NOATIME; allowed to the file's owner or CAP_FOWNER, retried without it where
refused), and never blocks on a FIFO (O_NONBLOCK; and a non-regular file is refused before any
read). What O_NOATIME cannot cover: reading a symlink's target (readlink) updates the link's
atime on a ``relatime`` mount when the atime is not newer than its mtime; mount evidence
``ro,noatime`` (docs/evidence.md).

A path of :data:`PATH_LONG` bytes or more (a 10,000-deep tree; names of 255 bytes) cannot be
opened by name (``ENAMETOOLONG`` past ``PATH_MAX``): :class:`FdWalker` reaches its parent by
``openat2`` steps of less than ``PATH_MAX`` bytes each, relative to directory fds, refusing a
symlink at any component (``RESOLVE_NO_SYMLINKS``), and the entry is then opened, stat-ed or read
relative to that parent fd.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading

_NOATIME = getattr(os, "O_NOATIME", 0)
_BASE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open(where, flags: int, dir_fd: int | None = None) -> int:
    try:
        return os.open(where, flags | _NOATIME, dir_fd=dir_fd)
    except PermissionError:
        if not _NOATIME:
            raise
        return os.open(where, flags, dir_fd=dir_fd)  # O_NOATIME needs ownership or CAP_FOWNER


def open_dir(where, dir_fd: int | None = None) -> int:
    """A directory fd for listing: no link following, no atime update where allowed."""
    return _open(where, _BASE | os.O_DIRECTORY, dir_fd)


def open_file(where, dir_fd: int | None = None) -> int:
    """A regular file's fd; anything else (FIFO, device, socket) is refused unread."""
    fd = _open(where, _BASE | os.O_NONBLOCK, dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{os.fsdecode(where)}: not a regular file")
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_file(where, limit: int | None = None) -> bytes:
    """A regular file's bytes; raises ValueError when it is larger than ``limit``."""
    fd = open_file(where)
    try:
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if limit is not None and size > limit:
                raise ValueError(f"{os.fsdecode(where)}: larger than {limit} bytes")
            chunks.append(chunk)
    finally:
        os.close(fd)


def list_dir(where) -> list[str]:
    """The names in a directory, read through an O_NOATIME directory fd."""
    fd = open_dir(where)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


# --- long paths: walking directory fds -------------------------------------------------------

PATH_LONG = 4000  # physical paths at least this long are reached through FdWalker
_STEP = 3800  # bytes of relative path per openat2 step (PATH_MAX is 4096 with the NUL)
_MARK = 2000  # a step at least this long leaves its directory fd open as a waypoint
_MAX_MARKS = 32  # per layer; released when the scan leaves the deep part (DirLayer.forget)
_RESOLVE_NO_XDEV, _RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 1, 2, 4, 8
_SYS_OPENAT2 = 437  # the same number on every architecture (the unified syscall table)
_openat2 = None


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _openat2_dir(dir_fd: int, rel: bytes) -> int:
    """openat2(2): a directory below ``dir_fd``, no symlink (nor /proc magic link) at any
    component, never above ``dir_fd``; ``ENOSYS`` where the kernel (or a seccomp filter) has none."""
    global _openat2
    if _openat2 is None:
        libc = ctypes.CDLL(None, use_errno=True)
        _openat2 = libc.syscall
        _openat2.restype = ctypes.c_long
    resolve = _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS | _RESOLVE_BENEATH
    for flags in (_BASE | os.O_DIRECTORY | _NOATIME, _BASE | os.O_DIRECTORY):
        how = _OpenHow(flags, 0, resolve)
        fd = _openat2(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd), ctypes.c_char_p(rel),
                      ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err == errno.EPERM and flags & _NOATIME:
            continue  # O_NOATIME needs ownership or CAP_FOWNER
        raise OSError(err, os.strerror(err))
    raise AssertionError("unreachable")


def _step(dir_fd: int, names: list[bytes]) -> int:
    """A directory fd ``names`` below ``dir_fd``, never following a symlink."""
    for name in names:
        if name in (b"", b".", b"..") or b"/" in name:
            raise OSError(errno.EINVAL, f"bad path component {name!r}")
    global _openat2_missing
    if not _openat2_missing:
        try:
            return _openat2_dir(dir_fd, b"/".join(names))
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            _openat2_missing = True
    fd = dir_fd  # one O_NOFOLLOW openat per component
    try:
        for name in names:
            new = open_dir(name, dir_fd=fd)
            if fd != dir_fd:
                os.close(fd)
            fd = new
    except BaseException:
        if fd != dir_fd:
            os.close(fd)
        raise
    return fd


_openat2_missing = False


class FdWalker:
    """Directory fds for the paths of one tree that are too long to open by name.

    ``parent(path)`` gives a (borrowed) fd of ``path[:-1]``, reached from the root in openat2
    steps below ``PATH_MAX``; the fds of long steps stay open as waypoints (at most
    ``_MAX_MARKS``) and the last directory asked for is kept, so a depth-first scan pays about
    one short step per directory. Callers hold :attr:`lock` while they use the fd.
    """

    def __init__(self, root: bytes):
        self.root = root
        self.lock = threading.Lock()
        self._root_fd: int | None = None
        self._marks: list[tuple[tuple, int]] = []  # (dir path, fd), each a prefix of the next
        self._tail: tuple[tuple, int] | None = None

    def dir_fd(self, path: tuple) -> int:
        """A borrowed fd of directory ``path`` (components below the root)."""
        tail = self._tail
        if tail is not None and tail[0] == path:
            return tail[1]
        marks = self._marks
        while marks and path[:len(marks[-1][0])] != marks[-1][0]:
            os.close(marks.pop()[1])
        if marks and marks[-1][0] == path:
            return marks[-1][1]
        if self._root_fd is None:
            self._root_fd = open_dir(self.root)
        done, fd = marks[-1] if marks else ((), self._root_fd)
        owned = False  # fd is a temporary of this walk (not the root, a mark or the tail)
        pos = len(done)
        names = tuple(path[pos:])  # indexed below: a deep path's components, copied once
        base = pos
        try:
            while pos < len(path):
                chunk, size = [], 0
                while pos + len(chunk) < len(path):
                    name = names[pos - base + len(chunk)]
                    if chunk and size + len(name) + 1 > _STEP:
                        break
                    chunk.append(name)
                    size += len(name) + 1
                new = _step(fd, chunk)
                if owned:
                    os.close(fd)
                fd, owned = new, True
                pos += len(chunk)
                if size >= _MARK and len(marks) < _MAX_MARKS:
                    marks.append((path[:pos], fd))
                    owned = False
        except BaseException:
            if owned:
                os.close(fd)
            raise
        if owned:
            self.keep(path, fd)
        return fd

    def parent(self, path: tuple) -> int:
        return self.dir_fd(path[:-1])

    def keep(self, path: tuple, fd: int) -> None:
        """Adopt ``fd`` (directory ``path``) as the last directory asked for."""
        if self._tail is not None:
            os.close(self._tail[1])
        self._tail = (path, fd)

    @property
    def holding(self) -> bool:
        return self._root_fd is not None

    def close(self) -> None:
        """Close every fd held (the walker still works: it reopens what it needs)."""
        with self.lock:
            for _, fd in self._marks:
                os.close(fd)
            self._marks.clear()
            if self._tail is not None:
                os.close(self._tail[1])
                self._tail = None
            if self._root_fd is not None:
                os.close(self._root_fd)
                self._root_fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def xattrs_at(dir_fd: int, name: bytes) -> dict[str, bytes]:
    """All xattrs of entry ``name`` in ``dir_fd``, itself never followed: an O_PATH fd of the
    entry, read through its /proc/self/fd magic link (which names the entry, even a symlink)."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        where = f"/proc/self/fd/{fd}"
        return {n: os.getxattr(where, n) for n in os.listxattr(where)}
    finally:
        os.close(fd)
