"""Docker's images, offline: overlay2's imagedb and layerdb, and the containerd image store
(containerd images of namespace ``moby``)."""
from __future__ import annotations

import os
import re

from ovforensics.layers.stack import dir_layer
from ovforensics.evidence import fs
from ovforensics.evidence.rootfs import Root
from ovforensics.layers.layer import DirLayer, LayerError
from ovforensics.stores.images.from_containerd import _containerd_candidates
from ovforensics.stores.images.model import (Image, ImageError, ImageLayer, _Candidate,
    _apply_config, _attach_history, _json, ref_matches)


def _docker_candidates(root: Root, data_root: str | None, query: str, warnings: list[str]):
    from ovforensics.stores import docker

    broken: list = []
    inside = docker._pick_data_root(root, data_root, broken)
    try:
        store = docker._Store(root, inside)
    except Exception as exc:  # StoreError: a data root that is unusable
        warnings.append(f"docker: {exc}")
        return []
    if store.host is None:
        return []
    names, bad = store.image_names()
    if bad is not None:
        warnings.append(f"docker: {bad.where}: {bad.why}")
    try:
        content = store.host_of(f"image/{docker.DRIVER}/imagedb/content/sha256")
        ids = sorted(fs.list_dir(content)) if fs.isdir(content) else []
    except (docker._Bad, OSError):
        ids = []
    out = []
    for hexid in ids:
        if not re.fullmatch(r"[0-9a-f]{64}", hexid):
            continue
        image_id = f"sha256:{hexid}"
        refs = names.get(image_id, [])
        out.append(_Candidate("docker", refs, image_id, store.host,
                              lambda i=image_id, r=refs: _docker_open(store, query, i, r)))
    out += _docker_containerd_candidates(root, store, inside, query, warnings)
    return out


def _docker_containerd_candidates(root: Root, store, inside: str, query: str, warnings: list[str]):
    """Docker's images in its containerd image store: containerd images of namespace ``moby``
    (daemon.json's ``containerd-namespace``), in dockerd's own containerd data root or the
    system one; their id is the target (index or manifest) digest, as ``docker images`` shows."""
    from ovforensics.stores import containerd as cd
    from ovforensics.stores import docker

    config: dict = {}
    docker._pick_data_root(root, None if inside == docker.DEFAULT_DATA_ROOT else inside, [], config)
    namespace = config.get("containerd-namespace")
    namespace = namespace if isinstance(namespace, str) and namespace else docker.CONTAINERD_NAMESPACE
    system, overlay, _ = cd.system_data_root(root)
    out = []
    for data_root, overlay_root in ((store.inside.rstrip("/") + "/containerd/daemon", None), (system, overlay)):
        for c in _containerd_candidates(root, data_root, query, warnings, overlay_root=overlay_root,
                                        only_namespace=namespace, crictl_ids=False):
            c.engine = "docker"
            c.names = sorted({docker.familiar(n) for n in c.names} | set(c.names))
            c.names = [n for n in c.names if not n.startswith("moby-dangling@")]
            out.append(c)
    return out


def _docker_open(store, query: str, image_id: str, refs: list[str]) -> Image:
    from ovforensics.stores import docker
    from ovforensics.stores.containerd import chain_ids

    hexid = image_id.split(":", 1)[1]
    rel = f"image/{docker.DRIVER}/imagedb/content/sha256/{hexid}"
    image = Image(ref=query, kind="docker", location=store.host, id=image_id, tags=list(refs),
                  name=next((r for r in refs if ref_matches(query, r)), refs[0] if refs else None),
                  evidence=[store.host])
    try:
        text = store.read(rel, "the image config (JSON)")
        diff_ids = _apply_config(image, _json(text.encode(), store.lexical(rel)))
        for index, (chain, diff_id) in enumerate(zip(chain_ids(diff_ids), diff_ids)):
            ldir = f"image/{docker.DRIVER}/layerdb/sha256/{chain.split(':', 1)[1]}"
            cache_id = store.read(f"{ldir}/cache-id", "the layer's overlay2 directory id")
            path = store.layer_dir(cache_id, f"the content of image layer {chain}",
                                   store.lexical(f"{ldir}/cache-id"))
            layer = dir_layer(path, index=index, rules="kernel")
            image.layers.append(ImageLayer(index=index, layer=layer, diff_id=diff_id,
                                           source=path, id=cache_id))
    except docker._Bad as bad:
        raise ImageError(f"{bad.where}: {bad.why}") from None
    except LayerError as exc:
        raise ImageError(str(exc)) from None
    _attach_history(image)
    return image
