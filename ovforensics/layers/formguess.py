"""Which marker rules a directory layer was written with, for ``--whiteouts auto``.

The kernel reads ``.wh.NAME`` in an upperdir as an ordinary file, but a layer can be a directory
made by hand in OCI/AUFS form (an unpacked ``docker save`` layer, ``umoci``'s output, a layer
rebuilt for analysis): ``.wh.`` files and ``.wh..wh..opq`` markers, and none of the kernel's
forms. Read with kernel rules, its deletions would be reported as ``whiteout-lookalike``
anomalies. So, in ``auto`` mode, the first time the scan lists a ``.wh.`` name in a directory
layer (until then no rule set reads the layer differently), the layer's whole tree is looked
over once (names and ``d_type`` only: no entry is stat-ed but a ``.wh.`` one or a device, no
file is opened; one ``listxattr`` per directory), and its rules set:

- a 0/0 character device (a kernel whiteout) or a directory with an overlay control xattr
  (``trusted.overlay.*``/``user.overlay.*``) is the kernel's form: ``kernel`` (the walk stops
  there);
- fuse-overlayfs' own marks (``user.fuseoverlayfs.*`` on a directory, a ``.wh..opq`` name):
  ``fuse``;
- ``.wh.`` names, each an empty regular file (what an OCI marker is), and none of the above
  anywhere: ``oci``. A ``.wh.`` name of any other kind (a FIFO, a directory, a file with
  data) is an ordinary entry the kernel made: ``kernel``. AUFS bookkeeping (``.wh..wh.plnk``
  and the like) counts for neither;
- nothing: ``kernel`` (no marker at all reads the same under every rule set).

The guess and its reason are kept on the layer (``rules_auto``) and written in the run record;
``--whiteouts kernel`` reads any layer as the kernel would. Paths too long to name
(``PATH_LONG``) are not walked into: the guess is from the part of the tree a path can reach.
"""
from __future__ import annotations

import os
import stat

from ovforensics.layers.markers import AUFS_META_PREFIX, FUSE_OPAQUE, FUSE_PREFIX, TRUSTED, USER, WH_OPAQUE, WH_PREFIX
from ovforensics.evidence.safeio import PATH_LONG, open_dir

MAX_DIRS = 1_000_000  # directories looked at, at most: a guess must stay cheap


def guess_rules(root: bytes) -> tuple[str, str | None]:
    """(rules, why) for the directory layer at ``root``; ``why`` is None for plain ``kernel``
    (no marker of any form found)."""
    wh_seen: bytes | None = None
    fuse_seen: str | None = None
    stack = [root]
    dirs = 0
    while stack and dirs < MAX_DIRS:
        where = stack.pop()
        dirs += 1
        try:
            names = os.listxattr(where, follow_symlinks=False)
        except OSError:
            names = []
        for name in names:
            if name.startswith((TRUSTED, USER)):
                return "kernel", None
            if name.startswith(FUSE_PREFIX) and fuse_seen is None:
                fuse_seen = f"{os.fsdecode(where)}: {name}"
        try:
            fd = open_dir(where)
        except OSError:
            continue
        try:
            with os.scandir(fd) as it:
                for dent in it:
                    name = os.fsencode(dent.name)
                    try:
                        if name.startswith(WH_PREFIX):
                            if name.startswith(AUFS_META_PREFIX) and name != WH_OPAQUE:
                                continue  # AUFS bookkeeping (.wh..wh.plnk ...): no marker
                            if name == FUSE_OPAQUE and fuse_seen is None:
                                fuse_seen = os.fsdecode(where + b"/" + name)
                                continue
                            # an OCI marker is an empty regular file; a .wh. name of any other
                            # kind (a FIFO, a directory, a file with data) is the kernel's
                            # ordinary entry, and the layer is in the kernel's form
                            if not dent.is_file(follow_symlinks=False) or \
                                    dent.stat(follow_symlinks=False).st_size != 0:
                                return "kernel", None
                            if wh_seen is None:
                                wh_seen = where + b"/" + name
                            continue
                        if dent.is_dir(follow_symlinks=False):
                            child = where + b"/" + name
                            if len(child) < PATH_LONG:
                                stack.append(child)
                            continue
                        if not (dent.is_file(follow_symlinks=False) or dent.is_symlink()):
                            st = dent.stat(follow_symlinks=False)  # devices, FIFOs, sockets
                            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                                return "kernel", None
                    except OSError:
                        continue
        except OSError:
            pass
        finally:
            os.close(fd)
    if fuse_seen is not None:
        return "fuse", (f"auto: fuse-overlayfs marks ({fuse_seen}), no 0/0 device nor overlay "
                        "xattr: read with fuse rules")
    if wh_seen is not None:
        return "oci", (f"auto: OCI/AUFS markers ({os.fsdecode(wh_seen)}), no 0/0 device nor "
                       "overlay xattr: read with oci rules (--whiteouts kernel reads .wh. files "
                       "as the kernel would: ordinary files)")
    return "kernel", None

