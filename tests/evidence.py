"""Snapshots of a store's inodes, to prove a run left the evidence untouched.

The snapshot itself must not disturb what it measures: directories are opened with O_NOATIME
and entries stat'ed through the directory fd (fstatat never touches atime).
"""
from __future__ import annotations

import os
import stat

from ovforensics.evidence.safeio import open_dir


def snapshot(top) -> dict[bytes, tuple[int, int, int, int]]:
    """path -> (type bits, atime_ns, mtime_ns, ctime_ns) for every inode below ``top``."""
    top = os.fsencode(str(top))
    out = {}
    st = os.lstat(top)
    out[top] = (stat.S_IFMT(st.st_mode), st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)
    stack = [top]
    while stack:
        where = stack.pop()
        fd = open_dir(where)
        try:
            with os.scandir(fd) as it:
                for dent in it:
                    path = where + b"/" + os.fsencode(dent.name)
                    st = dent.stat(follow_symlinks=False)
                    out[path] = (stat.S_IFMT(st.st_mode), st.st_atime_ns, st.st_mtime_ns,
                                 st.st_ctime_ns)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(path)
        finally:
            os.close(fd)
    return out


def changed(before: dict, after: dict) -> dict[str, list]:
    """What moved: {"atime": [...], "mtime": [...], "ctime": [...], "added": [...], "gone": [...]}."""
    out = {"atime": [], "mtime": [], "ctime": [], "added": [], "gone": []}
    for path in before.keys() - after.keys():
        out["gone"].append(path)
    for path in after.keys() - before.keys():
        out["added"].append(path)
    for path in before.keys() & after.keys():
        b, a = before[path], after[path]
        for i, name in ((1, "atime"), (2, "mtime"), (3, "ctime")):
            if b[i] != a[i]:
                out[name].append((path, stat.S_ISLNK(b[0])))
    return out
