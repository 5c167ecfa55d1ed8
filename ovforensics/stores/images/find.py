"""One image by name or id across the local stores, or from a path (an archive or OCI layout)."""
from __future__ import annotations

import os

from ovforensics.evidence import fs
from ovforensics.evidence.rootfs import Root, RootError, open_root
from ovforensics.stores.images.archives import _open_path
from ovforensics.stores.images.from_containerd import _containerd_candidates
from ovforensics.stores.images.from_docker import _docker_candidates
from ovforensics.stores.images.from_podman import _podman_candidates
from ovforensics.stores.images.model import (ENGINES, Image, ImageError, _Candidate, _hex_query,
    parse_ref, ref_matches)


_FINDERS = {"docker": _docker_candidates, "podman": _podman_candidates,
            "containerd": _containerd_candidates}


def find_image(query: str, root: str = "/", engine: str | None = None,
               data_root: str | None = None, namespace: str | None = None) -> Image:
    """The image ``query`` names in the local stores under ``root`` (offline): a name, or the
    id (full or a prefix) the engine's CLI shows; ``namespace`` keeps one containerd namespace
    (Docker's containerd image store is namespace ``moby``)."""
    if engine is not None and engine not in ENGINES:
        raise ImageError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if data_root is not None and engine is None:
        raise ImageError("--data-root needs --engine (whose data root it is)")
    try:
        rootfs = open_root(root)
    except RootError as exc:
        raise ImageError(str(exc)) from None
    warnings: list[str] = []
    candidates: list[_Candidate] = []
    engines = (engine,) if engine else ENGINES
    for name in engines:
        try:
            candidates += _FINDERS[name](rootfs, data_root, query, warnings)
        except ImageError as exc:
            warnings.append(str(exc))
    if namespace is not None:
        candidates = [c for c in candidates if c.namespace == namespace]
    found = [c for c in candidates if any(ref_matches(query, n) for n in c.names)]
    if not found:
        hexq = _hex_query(query)
        if hexq:
            found = [c for c in candidates
                     if any(i.split(":")[-1].startswith(hexq)
                            for i in c.all_ids or [c.id])]
    if not found:
        if parse_ref(query) is None and not _hex_query(query):
            raise ImageError(f"{query}: neither an image archive, an OCI layout nor an image "
                             f"reference")
        hint = f" ({'; '.join(warnings)})" if warnings else ""
        raise ImageError(f"{query}: no such image (looked in: {', '.join(engines)}){hint}")
    # one image, whatever id each namespace's CLI shows for it: containerd candidates are the
    # same image when their target digest is
    distinct = {c.target or c.id for c in found}
    if len(distinct) > 1:
        listed = "; ".join(f"{c.engine}{' namespace ' + c.namespace if c.namespace else ''} "
                           f"{c.id.split(':')[-1][:12]} {','.join(c.names) or '<none>'}"
                           for c in found)
        hints = (["--engine"] if len({c.engine for c in found}) > 1 else []) + \
            (["--namespace"] if len({c.namespace for c in found}) > 1 else [])
        raise ImageError(f"{query}: ambiguous, matches {listed} (use "
                         f"{', '.join(hints + ['a longer id or a full name'])})")
    chosen = found[0]  # the same image in several stores: the first engine's copy
    image = chosen.open()
    image.warnings = warnings + image.warnings
    if len(found) > 1:
        others = ", ".join(f"{c.engine} ({c.where})" for c in found[1:])
        image.warnings.append(f"the same image is also in {others}; read from {chosen.engine} "
                              f"({chosen.where})")
    if root != "/":
        image.evidence = [root]
    return image


def image_names(root: str = "/", engine: str | None = None, data_root: str | None = None,
                namespace: str | None = None) -> list[str]:
    """The names (``repo:tag`` as the engines' CLIs show them) and short ids (12 hex digits) of
    every image in the local stores under ``root``, sorted, nothing opened: what a shell
    completes an IMAGE with. A store that cannot be read adds nothing."""
    if engine is not None and engine not in ENGINES:
        return []
    try:
        rootfs = open_root(root)
    except RootError:
        return []
    found: set[str] = set()
    for name in (engine,) if engine else ENGINES:
        try:
            candidates = _FINDERS[name](rootfs, data_root if engine else None, "", [])
        except ImageError:
            continue
        for c in candidates:
            if namespace is not None and c.namespace != namespace:
                continue
            found.update(n for n in c.names if "@" not in n)  # repo@digest: no one types that
            found.add(c.id.split(":")[-1][:12])
    return sorted(found)


def open_image(ref: str, root: str = "/", engine: str | None = None,
               data_root: str | None = None, select: str | None = None,
               namespace: str | None = None) -> Image:
    """An image from an archive or layout directory (a path that exists on this host), or from
    a local store (a name, full id or id prefix). Raises :class:`ImageError`."""
    if engine is None and data_root is None and fs.lexists(ref):  # an archive on this host
        if fs.islink(ref.rstrip("/") or "/"):
            raise ImageError(f"{ref}: is a symbolic link; name the real file or directory "
                             "(links are never followed)")
        return _open_path(ref, select)
    if select is not None:
        raise ImageError("--select picks an image inside an archive or OCI layout; "
                         f"{ref!r} is not a path")
    return find_image(ref, root=root, engine=engine, data_root=data_root, namespace=namespace)
