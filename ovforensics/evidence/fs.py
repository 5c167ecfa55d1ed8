"""Where evidence files live: on this host's filesystems, or inside a disk image read without
mounting it. Every store reader, ``Root`` and the layers ask this module, never ``os``
directly, so the same code reads ``--root /mnt/evidence`` and ``--root disk.qcow2``.

A disk image's filesystem is *attached* under a prefix (``disk.qcow2!``: the image's path and
a ``!``); a path that starts with an attached prefix is looked up inside that image, never on
the host (``disk.qcow2!/var/lib/docker/containers`` is ``/var/lib/docker/containers`` of the
image's filesystem). Any other path is a host path, read as :mod:`.safeio` reads: read-only,
no link followed, no atime update, no FIFO or device opened.

An attached filesystem is anything with the :class:`ImageFS` methods (``diskimage.fs`` gives
ext4 and XFS ones); its paths are ``str`` (undecodable bytes as surrogate escapes, as
``os.fsdecode`` makes them).
"""
from __future__ import annotations

import os
import stat
from typing import BinaryIO, Protocol

from ovforensics.evidence import safeio

SEP = "!"  # between an image's path and a path inside it


class ImageFS(Protocol):
    label: str  # the image, as the user named it (with the partition, when there are several)

    def lstat(self, path: str) -> os.stat_result: ...      # raises OSError (errno set)
    def listdir(self, path: str) -> list[str]: ...
    def readlink(self, path: str) -> str: ...
    def open(self, path: str) -> BinaryIO: ...              # a regular file, seekable
    def xattrs(self, path: str) -> dict[str, bytes]: ...


_ATTACHED: dict[str, ImageFS] = {}


def attach(image_fs: ImageFS, image_path: str) -> str:
    """Attach a filesystem read out of ``image_path``; returns the prefix its paths start with."""
    prefix = os.path.abspath(image_path) + SEP
    _ATTACHED[prefix] = image_fs
    return prefix


def detach(prefix: str) -> None:
    image_fs = _ATTACHED.pop(prefix, None)
    close = getattr(image_fs, "close", None)
    if close is not None:
        close()


def image_of(path) -> tuple[ImageFS, str] | None:
    """(filesystem, path inside it) for a path in an attached image; None for a host path."""
    if not _ATTACHED:
        return None
    text = os.fsdecode(path)
    for prefix, image_fs in _ATTACHED.items():
        if text.startswith(prefix):
            return image_fs, "/" + text[len(prefix):].lstrip("/")
    return None


def is_image_path(path) -> bool:
    return image_of(path) is not None


# -- the questions store readers ask ----------------------------------------------------------
def lstat(path) -> os.stat_result:
    found = image_of(path)
    return os.lstat(path) if found is None else found[0].lstat(found[1])


def stat_follow(path) -> os.stat_result:
    """``stat`` following a final symlink inside the same image (host: ``os.stat``)."""
    found = image_of(path)
    if found is None:
        return os.stat(path)
    image_fs, inside = found
    for _ in range(40):
        st = image_fs.lstat(inside)
        if not stat.S_ISLNK(st.st_mode):
            return st
        target = image_fs.readlink(inside)
        inside = target if target.startswith("/") else os.path.join(os.path.dirname(inside), target)
        inside = os.path.normpath(inside)
    raise OSError(40, f"{path}: too many levels of symbolic links")


def lexists(path) -> bool:
    try:
        lstat(path)
    except (OSError, ValueError):
        return False
    return True


def _mode(path, follow: bool) -> int | None:
    try:
        return (stat_follow(path) if follow else lstat(path)).st_mode
    except (OSError, ValueError):
        return None


def isdir(path) -> bool:
    mode = _mode(path, True)
    return mode is not None and stat.S_ISDIR(mode)


def isfile(path) -> bool:
    mode = _mode(path, True)
    return mode is not None and stat.S_ISREG(mode)


def islink(path) -> bool:
    mode = _mode(path, False)
    return mode is not None and stat.S_ISLNK(mode)


def readlink(path) -> str:
    found = image_of(path)
    return os.readlink(path) if found is None else found[0].readlink(found[1])


def list_dir(path) -> list[str]:
    found = image_of(path)
    return safeio.list_dir(path) if found is None else found[0].listdir(found[1])


def open_file(path) -> BinaryIO:
    """A regular file, opened read-only without following a link; anything else refused."""
    found = image_of(path)
    if found is None:
        return os.fdopen(safeio.open_file(path), "rb")
    image_fs, inside = found
    st = image_fs.lstat(inside)
    if stat.S_ISLNK(st.st_mode):
        raise OSError(40, f"{path}: is a symbolic link, not followed")
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{os.fsdecode(path)}: not a regular file")
    return image_fs.open(inside)


def read_file(path, limit: int | None = None) -> bytes:
    """A regular file's bytes; raises ValueError when it is larger than ``limit``."""
    if image_of(path) is None:
        return safeio.read_file(path, limit)
    with open_file(path) as fh:
        data = fh.read(limit + 1 if limit is not None else -1)
    if limit is not None and len(data) > limit:
        raise ValueError(f"{os.fsdecode(path)}: larger than {limit} bytes")
    return data


def xattrs(path) -> dict[str, bytes]:
    found = image_of(path)
    if found is None:
        names = os.listxattr(path, follow_symlinks=False)
        return {n: os.getxattr(path, n, follow_symlinks=False) for n in names}
    return found[0].xattrs(found[1])
