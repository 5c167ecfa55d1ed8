"""Inventories for ``containers`` and ``layers``: one plain dict per container or layer."""
from __future__ import annotations

import os
import stat

from ovforensics.evidence import fs
from ovforensics.stores.base import Container, LayerInfo
from ovforensics.evidence.safeio import open_dir

CONTAINER_COLUMNS = ("engine", "id", "names", "image", "image_id", "state", "exit_code", "created",
                     "started", "finished", "upperdir", "layers", "upper_entries", "upper_bytes",
                     "namespace", "pod", "pod_namespace", "pod_uid", "container_name", "role",
                     "state_note")
LAYER_COLUMNS = ("index", "role", "id", "dir", "link", "diff_id", "chain_id", "image_index",
                 "entries", "bytes")


def tree_stats(top: str) -> tuple[int, int]:
    """(entries, apparent bytes of regular files) below ``top``; no links followed, errors skipped."""
    if fs.is_image_path(top):
        return _image_tree_stats(top)
    entries = size = 0
    stack = [os.fsencode(top)]
    while stack:
        where = stack.pop()
        try:
            fd = open_dir(where)
        except OSError:
            continue
        try:
            with os.scandir(fd) as it:
                for dent in it:
                    entries += 1
                    try:
                        st = dent.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(where + b"/" + os.fsencode(dent.name))
                    elif stat.S_ISREG(st.st_mode):
                        size += st.st_size
        except OSError:
            pass
        finally:
            os.close(fd)
    return entries, size


def container_row(c: Container, sizes: bool = True) -> dict:
    entries, size = tree_stats(c.upper.dir) if sizes else (None, None)
    return {
        "engine": c.engine, "id": c.id, "names": list(c.names), "image": c.image,
        "image_id": c.image_id, "state": c.state, "exit_code": c.exit_code, "created": c.created,
        "started": c.started, "finished": c.finished, "upperdir": c.upper.dir,
        "layers": 1 + len(c.lowers), "upper_entries": entries, "upper_bytes": size,
        "namespace": c.namespace, "pod": c.pod, "pod_namespace": c.pod_namespace,
        "pod_uid": c.pod_uid, "container_name": c.container_name, "role": c.role,
        "state_note": c.state_note,
    }


def layer_rows(c: Container):
    """The stack top down: the upper (no index), then the lowers, each with the index a diff
    record's ``lower_layer.index`` gives it (0 = the topmost lower: the init layer, where the
    engine has one), the number the timeline's ``lower layer N`` labels use too."""
    yield layer_row(None, c.upper)
    for index, layer in enumerate(c.lowers):
        yield layer_row(index, layer)


def layer_row(index: int | None, layer: LayerInfo) -> dict:
    entries, size = tree_stats(layer.dir)
    return {
        "index": index, "role": layer.role, "id": layer.id, "dir": layer.dir,
        "link": layer.link, "diff_id": layer.diff_id, "chain_id": layer.chain_id,
        "image_index": layer.image_index, "entries": entries, "bytes": size,
    }


def _image_tree_stats(top: str) -> tuple[int, int]:
    """:func:`tree_stats` of a directory inside an attached disk image."""
    entries = size = 0
    stack = [top]
    while stack:
        where = stack.pop()
        try:
            names = fs.list_dir(where)
        except OSError:
            continue
        for name in names:
            entries += 1
            try:
                st = fs.lstat(where.rstrip("/") + "/" + name)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(where.rstrip("/") + "/" + name)
            elif stat.S_ISREG(st.st_mode):
                size += st.st_size
    return entries, size
