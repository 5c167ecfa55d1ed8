"""An ext filesystem as ``evidence/fs.py`` asks questions of one: paths inside it (``str``,
undecodable bytes as surrogate escapes), answers as ``os`` gives them."""
from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from ovforensics.evidence.diskimage.ext4 import EXTENTS_FL, INLINE_DATA_FL, Ext4, Ext4Error

MAX_LINK = 1 << 16


class ExtFS:
    def __init__(self, ext: Ext4, label: str, close=None):
        self.ext, self.label, self._close = ext, label, close
        self.kind = "ext4"

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def _inode(self, path: str):
        return self.ext.lookup(os.fsencode(path))

    def lstat(self, path: str) -> os.stat_result:
        n = self._inode(path)
        return n.stat_result(self.ext.rdev(n))

    def btime_ns(self, path: str) -> int | None:
        return self._inode(path).crtime_ns

    def listdir(self, path: str) -> list[str]:
        n = self._inode(path)
        if not stat.S_ISDIR(n.mode):
            raise NotADirectoryError(errno.ENOTDIR, f"{path}: not a directory")
        return [os.fsdecode(name) for name in self.ext.entries(n)]

    def readlink(self, path: str) -> str:
        n = self._inode(path)
        if not stat.S_ISLNK(n.mode):
            raise OSError(errno.EINVAL, f"{path}: not a symbolic link")
        if n.size > MAX_LINK:
            raise Ext4Error(f"{path}: symlink target of {n.size} bytes")
        if n.flags & INLINE_DATA_FL:
            target = self.ext.inline(n)
        elif not n.flags & EXTENTS_FL and n.size < 60:  # a fast symlink: in i_block itself
            target = n.block[:n.size]
        else:
            target = self.ext.read_all(n, MAX_LINK)
        return os.fsdecode(target[:n.size])

    def open(self, path: str) -> BinaryIO:
        n = self._inode(path)
        if not stat.S_ISREG(n.mode):
            raise OSError(errno.EINVAL, f"{path}: not a regular file")
        return self.ext.open(n)

    def xattrs(self, path: str) -> dict[str, bytes]:
        return self.ext.xattrs(self._inode(path))
