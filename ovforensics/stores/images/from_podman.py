"""Podman/CRI-O images from a containers-storage store: ``images.json``, the top layer's parent
chain, the config as the image's big-data item."""
from __future__ import annotations

import re

from ovforensics.layers.stack import dir_layer
from ovforensics.evidence import storetext
from ovforensics.evidence.rootfs import Root, RootEscape
from ovforensics.layers.layer import DirLayer, LayerError
from ovforensics.stores.images.model import (Image, ImageError, ImageLayer, _Candidate,
    _apply_config, _attach_history, _json, ref_matches)


def _podman_big_data_name(key: str) -> str:
    """containers-storage's file name for a big-data item (``makeBigDataBaseName``)."""
    if all(c == "." or c.isdigit() or ("a" <= c <= "z") for c in key):
        return key
    import base64

    return "=" + base64.b64encode(storetext.exact_bytes(key)).decode("ascii")


def _podman_candidates(root: Root, data_root: str | None, query: str, warnings: list[str]):
    from ovforensics.stores import podman
    from ovforensics.stores.base import Broken

    if data_root is not None:
        specs = [podman._Spec(data_root, None, False)]
    else:
        specs = list(podman._store_specs(root))
    out, seen = [], set()
    for spec in specs:
        if isinstance(spec, Broken):
            continue
        try:
            host = root.resolve(spec.path)
        except (RootEscape, OSError):
            continue
        if host in seen or not podman._is_store(root, host):
            continue
        seen.add(host)
        store = podman._Store(root, host, spec)
        images = store.load_images()
        for w in store.warnings:
            warnings.append(f"podman: {w.where}: {w.why}")
        store.warnings = []
        for image_id, entry in sorted(images.items()):
            names = [n for n in entry.get("names") or [] if isinstance(n, str)]
            out.append(_Candidate("podman", names, f"sha256:{image_id}" if re.fullmatch(
                r"[0-9a-f]{64}", image_id) else image_id, host,
                lambda s=store, e=entry, n=names: _podman_open(s, query, e, n)))
    return out


def _podman_open(store, query: str, entry: dict, names: list[str]) -> Image:
    from ovforensics.stores import podman

    image_id = entry["id"]
    image = Image(ref=query, kind="podman", location=store.host, tags=list(names),
                  id=f"sha256:{image_id}" if re.fullmatch(r"[0-9a-f]{64}", image_id) else image_id,
                  name=next((n for n in names if ref_matches(query, n)), names[0] if names else None),
                  evidence=[store.host], xattr_ns="user" if store.spec.rootless else "auto")
    fuse = store.spec.mount_program or store.has_mount_program()
    try:
        store.layers, ok = store.load_layers()
        top = entry.get("layer")
        if not ok or not isinstance(top, str) or top not in store.layers:
            raise ImageError(f"{store.show('overlay-layers/layers.json')}: the top layer "
                             f"{top!r} of image {image_id[:12]} is not there")
        chain = store.chain(top)
        if chain is None:
            raise ImageError(f"{store.show('overlay-layers/layers.json')}: the parent chain of "
                             f"layer {top} breaks off")
        ids = list(reversed([top, *chain]))  # bottom first
        key = "sha256:" + image_id if not image_id.startswith("sha256:") else image_id
        data, host = store.read_bytes(f"overlay-images/{image_id}/{_podman_big_data_name(key)}")
        if data is None:
            raise ImageError(f"{host}: missing: expected the image config")
        diff_ids = _apply_config(image, _json(data, host))
        if len(diff_ids) != len(ids):
            image.warnings.append(f"{host}: {len(diff_ids)} diff ids for {len(ids)} layers")
        for index, lid in enumerate(ids):
            path = store.layer_dir(lid)
            layer = dir_layer(path, index=index, rules="fuse" if fuse else "kernel")
            diff_id = diff_ids[index] if len(diff_ids) == len(ids) else store.diff_id(lid)
            image.layers.append(ImageLayer(index=index, layer=layer, diff_id=diff_id,
                                           source=path, id=lid))
    except podman._Damaged as exc:
        raise ImageError(f"{exc.where}: {exc.why}") from None
    except LayerError as exc:
        raise ImageError(str(exc)) from None
    _attach_history(image)
    return image
