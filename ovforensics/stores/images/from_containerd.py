"""containerd's images in every namespace: the target in ``meta.db``, manifest and config from the
content store, each layer from its committed snapshot or, never unpacked, its blob."""
from __future__ import annotations

import os

from ovforensics.layers.stack import dir_layer
from ovforensics.evidence import fs
from ovforensics.evidence.rootfs import Root, RootEscape
from ovforensics.layers.layer import DirLayer, Layer, LayerError
from ovforensics.layers.tarlayer import TarLayer
from ovforensics.stores.images.model import (Image, ImageError, ImageLayer, _Candidate, _DIGEST,
    _apply_config, _attach_history, _hex_query, _manifest_from, ref_matches)


def _containerd_candidates(root: Root, data_root: str | None, query: str, warnings: list[str],
                           overlay_root: str | None = None, only_namespace: str | None = None,
                           crictl_ids: bool = True):
    """containerd's images (every namespace, or ``only_namespace``). The id is what the
    namespace's CLI shows: the config digest in ``k8s.io`` (crictl), else the target digest
    (ctr, nerdctl); both are accepted as a query."""
    from ovforensics.stores import bbolt
    from ovforensics.stores import containerd as cd

    broken: list = []
    if data_root is None:
        config = cd._config(root, broken)
        configured = config.get("root")
        data_root = configured if isinstance(configured, str) and configured else cd.DEFAULT_ROOT
        overlay_root = cd._overlay_root_path(config)
    overlay_root = overlay_root or cd._join(data_root, cd.OVERLAY_PLUGIN)
    try:
        store = cd._Store(root, data_root, overlay_root)
    except (RootEscape, OSError):
        return []
    if not fs.isfile(store.meta_host):
        return []
    out = []
    try:
        db = bbolt.open_db(store.meta_host)
    except bbolt.BoltError as exc:
        warnings.append(f"containerd: {exc}")
        return []
    try:
        v1 = db.bucket("v1")
        for raw_ns, ns_bucket in (v1.buckets() if v1 is not None else ()):
            namespace = cd.text(raw_ns)
            if only_namespace is not None and namespace != only_namespace:
                continue
            images = ns_bucket.bucket("images")
            for raw_name, img in (images.buckets() if images is not None else ()):
                name = cd.text(raw_name)
                target = img.bucket("target")
                digest = cd.text(target.value("digest")) if target is not None else None
                if not digest:
                    continue
                ids = [digest]
                if _hex_query(query) or ref_matches(query, name) or \
                        (crictl_ids and namespace == cd.K8S_NAMESPACE):
                    cfg = store.config_digest(digest)
                    if cfg:
                        crictl = crictl_ids and namespace == cd.K8S_NAMESPACE
                        ids = [cfg, digest] if crictl else [digest, cfg]
                out.append(_Candidate(
                    "containerd", [name], ids[0], f"{store.host} (namespace {namespace})",
                    lambda n=name, ns=namespace, d=digest, i=ids[0]: _containerd_open(
                        root, data_root, overlay_root, query, ns, n, d, i), namespace=namespace,
                    all_ids=ids, target=digest))
    except bbolt.BoltError as exc:
        warnings.append(f"containerd: {exc}")
    finally:
        db.close()
        store.close()
    return out


def _containerd_open(root: Root, data_root: str, overlay_root: str, query: str, namespace: str,
                     name: str, digest: str, shown_id: str | None = None) -> Image:
    from ovforensics.stores import bbolt
    from ovforensics.stores import containerd as cd

    store = cd._Store(root, data_root, overlay_root)
    image = Image(ref=query, kind="containerd", location=store.host, name=name, tags=[name],
                  namespace=namespace, evidence=[store.host])
    image._closers.append(store.close)

    def read_blob(d: str):
        doc = store._blob_json(d)
        if doc is None:
            raise ImageError(f"{store.host}: blob {d} is not in the content store (or not JSON)")
        return doc

    def where_of(blob: str) -> str:
        return os.path.join(store.host, cd.CONTENT, blob)

    try:
        db = bbolt.open_db(store.meta_host)
    except bbolt.BoltError as exc:
        raise ImageError(str(exc)) from None
    try:
        manifest, _ = _manifest_from(read_blob, {"digest": digest}, store.host)
        config_digest = (manifest.get("config") or {}).get("digest")
        config = read_blob(config_digest)
        image.id = shown_id or config_digest
        diff_ids = _apply_config(image, config)
        descs = manifest.get("layers") or []
        if len(descs) != len(diff_ids):
            raise ImageError(f"{store.host}: the manifest lists {len(descs)} layers, the config "
                             f"{len(diff_ids)} diff ids")
        snaps = db.bucket("v1", namespace, "snapshots", cd.SNAPSHOTTER)
        for index, (chain, diff_id, desc) in enumerate(zip(cd.chain_ids(diff_ids), diff_ids, descs)):
            snap = snaps.bucket(chain) if snaps is not None else None
            backend = cd.text(snap.value("name")) if snap is not None else None
            layer: Layer | None = None
            source = ""
            if backend:
                try:
                    sid, _kind, _parent = store.backend(backend)
                    source = store.layer_dir(sid)
                    layer = dir_layer(source, index=index, rules="kernel")
                except (cd._Damaged, bbolt.BoltError):
                    layer = None
            if layer is None:  # not unpacked: the layer blob itself
                blob_digest = desc.get("digest") if isinstance(desc, dict) else None
                m = _DIGEST.fullmatch(blob_digest or "")
                if not m:
                    raise ImageError(f"{store.host}: layer {index} has no snapshot and no digest")
                try:
                    source = root.resolve(cd._join(data_root, f"{cd.CONTENT}/blobs/{m[1]}/{m[2]}"))
                    layer = TarLayer(source, index=index, rules="oci")
                except (RootEscape, OSError, LayerError) as exc:
                    raise ImageError(f"{store.host}: layer {index} ({chain}): no snapshot, and "
                                     f"its blob cannot be read ({exc})") from None
                image._closers.append(layer.close)
            image.layers.append(ImageLayer(index=index, layer=layer, diff_id=diff_id,
                                           digest=desc.get("digest") if isinstance(desc, dict) else None,
                                           media_type=desc.get("mediaType") if isinstance(desc, dict) else None,
                                           source=source, id=chain))
    except bbolt.BoltError as exc:
        raise ImageError(str(exc)) from None
    except BaseException:
        image.close()
        raise
    finally:
        db.close()
    _attach_history(image)
    return image
