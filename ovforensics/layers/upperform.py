"""What a directory given as ``--upper`` really is, before it is read as one.

An upper named by hand is easy to get wrong, and each wrong one reads as a normal report:
an empty shell variable (``--upper ''``) is the analyst's working directory, an overlay2 layer
directory (``<id>/`` instead of ``<id>/diff``) reports ``/diff/...`` and ``/link`` as added, the
store's ``l/`` directory of short links reports the links, and a mounted overlay's merged view
(``merged/``) reports the whole image as added with no whiteout at all. Each is recognised:
refused with the path to give, or (a layer directory) read at its ``diff/`` with a warning.
"""
from __future__ import annotations

import ctypes
import os
import stat

OVERLAYFS_SUPER_MAGIC = 0x794C7630


class UpperError(ValueError):
    """The path given is not an upper directory; the message says what it is and what to give."""


def _statfs_type(path: str) -> int | None:
    class _StatFs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 120)]

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = _StatFs()
        if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
            return None
        return buf.f_type & 0xFFFFFFFF
    except (OSError, AttributeError):
        return None


def _mount_upperdir(path: str) -> str | None:
    """The upperdir of the overlay mounted at ``path`` (from /proc/self/mountinfo), if any."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5:
                    continue
                point = fields[4].encode().decode("unicode_escape")
                if point != real:
                    continue
                for opt in right.split()[-1].split(","):
                    if opt.startswith("upperdir="):
                        return opt[len("upperdir="):]
    except OSError:
        return None
    return None


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def check_upper(path: str, has_lowers: bool) -> tuple[str, list[str]]:
    """(the directory to read, warnings) for ``--upper PATH``; raises :class:`UpperError`."""
    warnings: list[str] = []
    if not path:
        raise UpperError("--upper: the path is empty (an unset shell variable?): give the "
                         "upperdir")
    if not os.path.lexists(path):
        return path, warnings  # the layer says so, in one line
    if not has_lowers:
        warnings.append(f"--upper {path} has no lower layer: its whiteouts delete nothing and "
                        "every path reads as added (give the image's layers with "
                        "--lowers/--lower)")
    if not _is_dir(path):
        return path, warnings  # a tar archive, or an error the layer reports
    if _statfs_type(path) == OVERLAYFS_SUPER_MAGIC:
        upper = _mount_upperdir(path)
        hint = f" its upperdir is {upper}" if upper else " see upperdir= in /proc/self/mountinfo"
        raise UpperError(f"--upper: {path} is a mounted overlay (the merged view, not a layer):"
                         f"{hint}; give that, or name the container")
    if _is_dir(os.path.join(path, "diff")) and (_is_file(os.path.join(path, "link"))
                                                 or _is_file(os.path.join(path, "lower"))):
        warnings.append(f"--upper: {path} is an overlay2 layer directory: reading its diff/ "
                        f"({os.path.join(path, 'diff')}; give that next time)")
        return os.path.join(path, "diff"), warnings
    if _is_dir(os.path.join(path, "fs")) and _is_dir(os.path.join(path, "work")):
        warnings.append(f"--upper: {path} is a containerd snapshot directory: reading its fs/ "
                        f"({os.path.join(path, 'fs')}; give that next time)")
        return os.path.join(path, "fs"), warnings
    if os.path.basename(os.path.normpath(path)) == "l" and _all_short_links(path):
        raise UpperError(f"--upper: {path} is overlay2's l/ directory of short links, not a "
                         "layer: give a layer's <id>/diff directory (or name the container)")
    return path, warnings


def _all_short_links(path: str) -> bool:
    try:
        names = os.listdir(path)[:64]
    except OSError:
        return False
    if not names:
        return False
    for name in names:
        where = os.path.join(path, name)
        try:
            if not stat.S_ISLNK(os.lstat(where).st_mode):
                return False
            if not os.readlink(where).endswith("/diff"):
                return False
        except OSError:
            return False
    return True
