"""Opening the layers a user names: directories or tar archives, in lowerdir order."""
from __future__ import annotations

import os
import stat

from ovforensics.evidence import fs
from ovforensics.layers.disklayer import DiskImageLayer
from ovforensics.layers.layer import DirLayer, Layer, LayerError
from ovforensics.layers.markers import RULES


def split_lowerdir(value: str) -> list[str]:
    r"""Split a ``lowerdir=`` / ``LowerDir`` string: ``:`` separates, ``\:`` is a literal colon.

    ``::`` (the start of data-only layers) is kept as an empty item for the caller to refuse.
    """
    items, cur, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i + 1])
            i += 2
            continue
        if ch == ":":
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    items.append("".join(cur))
    return items


def open_layer(spec: str | os.PathLike | Layer, index: int = -1, rules: str = "auto") -> Layer:
    """A directory becomes a :class:`DirLayer` (kernel rules; with ``auto``, the rules its markers
    were written with: :mod:`ovforensics.layers.formguess`); a file, a tar layer (OCI rules)."""
    if not isinstance(spec, (str, bytes, os.PathLike)):
        return spec  # already a layer
    if rules != "auto" and rules not in RULES:
        raise ValueError(f"--whiteouts: expected auto or one of {', '.join(RULES)}, got {rules!r}")
    path = os.fsdecode(spec)
    if fs.is_image_path(path):  # a directory inside a disk image (--root disk.qcow2)
        return DiskImageLayer(path, index=index, rules="kernel" if rules == "auto" else rules)
    try:
        st = os.lstat(path.rstrip("/") or "/")
    except FileNotFoundError:
        raise LayerError(f"{path}: no such file or directory") from None
    except OSError as exc:  # e.g. a parent directory this user may not search
        raise LayerError(f"{path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise LayerError(f"{path}: is a symbolic link; name the real directory (links are never followed)")
    if stat.S_ISDIR(st.st_mode):
        layer = DirLayer(path, index=index, rules="kernel" if rules == "auto" else rules)
        # auto: kernel form, unless the tree carries only OCI/AUFS or fuse-overlayfs marks;
        # decided when the scan first lists a .wh. name (DirLayer.check_rules, formguess.py)
        layer.guess_rules = rules == "auto"
        return layer
    from ovforensics.layers.tarlayer import TarLayer

    return TarLayer(path, index=index, rules="oci" if rules == "auto" else rules)


def dir_layer(path, index: int = -1, rules: str = "kernel") -> Layer:
    """A directory layer a store names: on this host (:class:`DirLayer`), or inside an attached
    disk image (:class:`~ovforensics.layers.disklayer.DiskImageLayer`)."""
    kind = DiskImageLayer if fs.is_image_path(path) else DirLayer
    return kind(path, index=index, rules=rules)


def container_layers(container, whiteouts: str | None = None) -> list[Layer]:
    """A container's stack as layers (upper first), each carrying the engine's ``LayerInfo``;
    marker rules are the store's own unless ``whiteouts`` names others."""
    rules = whiteouts if whiteouts not in (None, "auto") else container.whiteouts
    layers = []
    for index, info in enumerate([container.upper, *container.lowers]):
        layer = dir_layer(info.dir, index=index - 1, rules=rules)
        layer.info = info
        layers.append(layer)
    return layers
