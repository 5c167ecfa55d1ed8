"""Reading evidence without touching it: the one place that opens files and directories.

Every open is read-only, never follows a symlink (O_NOFOLLOW), asks the kernel not to update
the access time (O_NOATIME; allowed to the file's owner or CAP_FOWNER, retried without it where
refused), and never blocks on a FIFO (O_NONBLOCK; and a non-regular file is refused before any
read). What O_NOATIME cannot cover: reading a symlink's target (readlink) updates the link's
atime on a ``relatime`` mount when the atime is not newer than its mtime; mount evidence
``ro,noatime`` (docs/evidence.md).
"""
from __future__ import annotations

import os
import stat

_NOATIME = getattr(os, "O_NOATIME", 0)
_BASE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open(where, flags: int) -> int:
    try:
        return os.open(where, flags | _NOATIME)
    except PermissionError:
        if not _NOATIME:
            raise
        return os.open(where, flags)  # O_NOATIME needs ownership or CAP_FOWNER


def open_dir(where) -> int:
    """A directory fd for listing: no link following, no atime update where allowed."""
    return _open(where, _BASE | os.O_DIRECTORY)


def open_file(where) -> int:
    """A regular file's fd; anything else (FIFO, device, socket) is refused unread."""
    fd = _open(where, _BASE | os.O_NONBLOCK)
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
