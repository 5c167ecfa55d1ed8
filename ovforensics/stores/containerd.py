"""containerd: containers and their overlayfs snapshot stacks, from containerd's bbolt files alone.

Never talks to the daemon or its socket. What is read, under the data root (``root =`` in
``/etc/containerd/config.toml``, default ``/var/lib/containerd``):

* ``io.containerd.metadata.v1.bolt/meta.db``: bucket ``v1``, one bucket per namespace
  (``default`` for ctr, ``k8s.io`` for the CRI plugin, ``moby`` for Docker's containerd image
  store, ...). In each namespace:

  - ``containers/<id>/``: ``image``, ``snapshotter``, ``snapshotKey`` (strings), ``createdat``,
    ``updatedat`` (Go ``time.MarshalBinary``), ``spec`` (a protobuf ``Any`` holding the OCI
    spec JSON), ``runtime/{name,options}``, ``labels/``, ``extensions/``;
  - ``snapshots/<snapshotter>/<key>/``: ``name`` (the snapshotter's own key,
    ``<namespace>/<n>/<key>``), ``parent`` (the parent's key), ``children/``, ``labels/``,
    ``createdat``, ``updatedat``;
  - ``images/<name>/target/{digest,mediatype,size}``, ``content/blob/<digest>/``, ``leases/``.

* ``io.containerd.snapshotter.v1.overlayfs/metadata.db``: ``v1/snapshots/<name>/`` with ``id``
  (uvarint: the directory ``snapshots/<id>/``), ``kind`` (one byte: 1 view, 2 active,
  3 committed), ``parent`` (the parent's *name*), ``inodes``, ``size`` (zig-zag varints),
  ``createdat``, ``updatedat``, ``labels/``; and ``v1/parents/`` (``uvarint(parent id) 0x00
  uvarint(child id)`` → child name). A snapshot's content is ``snapshots/<id>/fs``.

The container's upperdir is its active snapshot's ``fs``; the lowerdirs are the parent chain's
``fs``, immediate parent first, exactly the ``lowerdir=`` containerd mounts. Image layers are
committed snapshots whose key is the layer's chain ID.

Container state is never known from containerd's own files: whether a task runs lives under
its ``state`` directory (``/run/containerd``, a tmpfs that is not part of a disk image), so
``state`` is ``None`` and ``state_note`` says why.

Kubernetes (the CRI plugin, namespace ``k8s.io``): each pod is a sandbox (pause) container plus
its containers. Their labels name them: ``io.kubernetes.pod.name``, ``.pod.namespace``,
``.pod.uid``, ``io.kubernetes.container.name`` and ``io.cri-containerd.kind`` (``sandbox`` or
``container``); these become :attr:`Container.pod`, ``pod_namespace``, ``pod_uid``,
``container_name`` and ``role``. The pod's name is not a name of the container (a pod holds
several): ``diff POD/CONTAINER`` names one.

Docker with the containerd image store keeps its containers' layers here, in namespace ``moby``
(snapshot key = the container id, its parent ``<id>-init``, then the image's chain): the docker
reader lists those containers (:class:`SnapshotReader`); this reader skips namespace ``moby``'s
container records, which are Docker's.

Image ids, as each CLI shows them: ``ctr images ls`` (and nerdctl, Docker in this mode) show
the image's target digest (its index or manifest); ``crictl images`` (namespace ``k8s.io``)
shows the config digest.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import stat
import tomllib
from typing import Iterator

from ovforensics.evidence import fs
from ovforensics.stores import bbolt
from ovforensics.stores.bbolt import BoltError
from ovforensics.evidence.rootfs import Root, RootEscape
from ovforensics.stores.base import Broken, Container, LayerInfo

ENGINE = "containerd"
CONFIG = "/etc/containerd/config.toml"
DEFAULT_ROOT = "/var/lib/containerd"
META_DB = "io.containerd.metadata.v1.bolt/meta.db"
OVERLAY_PLUGIN = "io.containerd.snapshotter.v1.overlayfs"
CONTENT = "io.containerd.content.v1.content"
SNAPSHOTTER = "overlayfs"

KINDS = {1: "view", 2: "active", 3: "committed"}
#: labels whose values are also names of the container (nerdctl, the CRI plugin)
NAME_LABELS = ("nerdctl/name", "io.kubernetes.container.name")
#: the CRI plugin's labels: Container field -> label
K8S_LABELS = {"pod": "io.kubernetes.pod.name", "pod_namespace": "io.kubernetes.pod.namespace",
              "pod_uid": "io.kubernetes.pod.uid", "container_name": "io.kubernetes.container.name",
              "role": "io.cri-containerd.kind"}
K8S_NAMESPACE = "k8s.io"
STATE_NOTE = ("containerd keeps task state under /run/containerd (tmpfs), not in its data root: "
              "not knowable from the disk")
#: Docker (with its classic graph drivers) registers every container in namespace "moby" with
#: no snapshot and this label; its layers are Docker's own (the docker reader lists them)
DOCKER_NAMESPACE = "moby"
DOCKER_BUNDLE_LABEL = "com.docker/engine.bundle.path"
MAX_CHAIN = 1000  # a parent chain longer than this loops
MAX_JSON = 4 << 20
_GO_EPOCH_TO_UNIX = 62135596800  # seconds from 0001-01-01 to 1970-01-01 (Go's unixToInternal)


#: what resolving a path found in the evidence may raise: it leaves the root (RootEscape), a
#: loop or unreadable component (OSError), or a NUL byte that a crafted config put in it
#: (ValueError from os.lstat: "embedded null byte")
_UNRESOLVABLE = (RootEscape, OSError, ValueError)


# -- values ------------------------------------------------------------------------------------
def text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "backslashreplace")


def go_time(value: bytes) -> str:
    """Decode Go's ``time.MarshalBinary`` into RFC 3339 with nanoseconds, as Go prints it
    (``time.RFC3339Nano``: trailing zeros of the fraction dropped; ``Z`` for UTC).

    Layout: version byte (1, or 2 when the zone offset has seconds), seconds since
    0001-01-01T00:00:00Z (int64 big-endian), nanoseconds (uint32 BE), zone offset in minutes
    (int16 BE, -1 = UTC), and for version 2 the offset's seconds (one byte).
    """
    if len(value) < 15 or value[0] not in (1, 2) or len(value) != (15 if value[0] == 1 else 16):
        raise ValueError(f"not a Go binary time ({len(value)} bytes, version {value[:1].hex() or '-'})")
    sec = int.from_bytes(value[1:9], "big", signed=True)
    nsec = int.from_bytes(value[9:13], "big")
    offset_min = int.from_bytes(value[13:15], "big", signed=True)
    offset = 0 if offset_min == -1 else offset_min * 60
    if value[0] == 2:
        offset += int.from_bytes(value[15:16], "big", signed=True)
    if nsec >= 1_000_000_000:
        raise ValueError(f"nanoseconds out of range ({nsec})")
    try:
        local = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=sec - _GO_EPOCH_TO_UNIX + offset)
    except (OverflowError, ValueError):  # a crafted value: Go allows years datetime cannot hold
        raise ValueError(f"Go binary time out of range (year 1..9999): {sec} s since year 1, "
                         f"offset {offset} s") from None
    out = (f"{local.year:04d}-{local.month:02d}-{local.day:02d}T"  # strftime drops %Y's zeros
           f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}")
    if nsec:
        out += "." + f"{nsec:09d}".rstrip("0")
    if offset == 0:
        return out + "Z"
    sign, a = ("+" if offset > 0 else "-"), abs(offset)
    out += f"{sign}{a // 3600:02d}:{a % 3600 // 60:02d}"
    return out + (f":{a % 60:02d}" if a % 60 else "")


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain IDs: ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


# -- where things are --------------------------------------------------------------------------
def _config(root: Root, broken: list[Broken]) -> dict:
    try:
        host = root.resolve(CONFIG)
    except _UNRESOLVABLE as exc:
        broken.append(Broken(ENGINE, root.host_path(CONFIG), f"cannot resolve ({exc}); using {DEFAULT_ROOT}"))
        return {}
    if not fs.isfile(host):
        return {}
    try:
        return tomllib.loads(fs.read_file(host, limit=MAX_JSON).decode("utf-8"))
    except OSError as exc:
        broken.append(Broken(ENGINE, host, f"cannot read ({exc.strerror or exc}); using {DEFAULT_ROOT}"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        broken.append(Broken(ENGINE, host, f"not valid TOML ({exc}); using {DEFAULT_ROOT}"))
    except RecursionError:  # crafted: nested deeper than Python's recursion limit
        broken.append(Broken(ENGINE, host, "not valid TOML (nested deeper than the parser can "
                             f"follow: crafted or damaged); using {DEFAULT_ROOT}"))
    return {}


def _overlay_root_path(config: dict) -> str | None:
    plugins = config.get("plugins")
    if not isinstance(plugins, dict):
        return None
    for name in (OVERLAY_PLUGIN, SNAPSHOTTER):  # config version 2/3 ids; version 1 used short names
        section = plugins.get(name)
        if isinstance(section, dict) and isinstance(section.get("root_path"), str) and section["root_path"]:
            return section["root_path"]
    return None


def _join(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + rel


class _Damaged(Exception):
    """One container's stack cannot be followed; ``where`` is the host path at fault."""

    def __init__(self, where: str, why: str):
        super().__init__(why)
        self.where = where
        self.why = why


class _NoSnapshot(_Damaged):
    """The container's own snapshot is not in the metadata database (its message says which)."""


class _Store:
    """One containerd data root under an evidence root; opens the snapshotter database on demand."""

    def __init__(self, root: Root, data_root: str, overlay_root: str):
        self.root = root
        self.data_root = data_root  # evidence paths
        self.overlay_root = overlay_root
        self.host = root.resolve(data_root)
        self.meta_host = root.resolve(_join(data_root, META_DB))
        snap = _join(overlay_root, "metadata.db")
        try:
            self.snap_host = root.resolve(snap)
            self._snap_error: BoltError | None = None
        except _UNRESOLVABLE as exc:
            self.snap_host = root.host_path(snap)
            self._snap_error = BoltError(self.snap_host, f"cannot resolve: {exc}")
        self._snap_db: bbolt.DB | None = None
        self._diff_ids: dict[tuple[str, str], dict[str, str]] = {}

    def close(self) -> None:
        if self._snap_db is not None:
            self._snap_db.close()

    def snap_db(self) -> bbolt.DB:
        if self._snap_error is not None:
            raise self._snap_error
        if self._snap_db is None:
            try:
                self._snap_db = bbolt.open_db(self.snap_host)
            except BoltError as exc:
                self._snap_error = exc
                raise
        return self._snap_db

    def backend(self, name: str) -> tuple[int, int, str | None]:
        """(id, kind, parent name) of a snapshot in the overlayfs snapshotter's own database."""
        snaps = self.snap_db().bucket("v1", "snapshots")
        if snaps is None:
            raise _Damaged(self.snap_host, "no v1/snapshots bucket")
        b = snaps.bucket(name)
        if b is None:
            raise _Damaged(self.snap_host, f"snapshot {name!r} is not there (removed, or the two "
                           "databases disagree)")
        raw_id, raw_kind = b.value("id"), b.value("kind")
        try:
            sid = bbolt.uvarint(raw_id or b"")
        except ValueError as exc:
            raise _Damaged(self.snap_host, f"snapshot {name!r}: bad id {raw_id!r} ({exc})") from None
        return sid, raw_kind[0] if raw_kind else 0, text(b.value("parent"))

    def layer_dir(self, sid: int) -> str:
        inside = _join(self.overlay_root, f"snapshots/{sid}/fs")
        try:
            host = self.root.resolve(inside)
        except _UNRESOLVABLE as exc:
            raise _Damaged(self.root.host_path(inside), f"refused: {exc}") from None
        try:
            st = fs.stat_follow(host)
        except OSError as exc:
            raise _Damaged(host, f"snapshot {sid}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise _Damaged(host, f"snapshot {sid}: not a directory")
        return host

    def image_target(self, ns_bucket: bbolt.Bucket, image: str | None) -> str | None:
        """The target digest (index or manifest) of image ``image`` in a namespace, or None."""
        if not image:
            return None
        try:
            images = ns_bucket.bucket("images")
            img = images.bucket(image) if images is not None else None
            target = img.bucket("target") if img is not None else None
            return text(target.value("digest")) if target is not None else None
        except BoltError:
            return None

    def _walk_image(self, digest: str | None) -> tuple[str | None, dict[str, str]]:
        """(config digest, chain ID -> diff ID) from an image's index or manifest in the content
        store; (None, {}) when the content is not there (never an error). An index's manifests
        are all read: their configs' chain ids are merged, the first config digest kept."""
        cached = self._diff_ids.get(("", digest or ""))
        if cached is not None:
            return cached
        out: dict[str, str] = {}
        config = None
        todo, seen = [digest] if digest else [], set()
        while todo and len(seen) < 64:
            d = todo.pop(0)
            if d in seen:
                continue
            seen.add(d)
            doc = self._blob_json(d)
            if not isinstance(doc, dict):
                continue
            if isinstance(doc.get("manifests"), list):  # an index: every platform's manifest
                todo += [m.get("digest") for m in doc["manifests"]
                         if isinstance(m, dict) and isinstance(m.get("digest"), str)]
            elif isinstance(doc.get("config"), dict) and isinstance(doc["config"].get("digest"), str):
                todo.append(doc["config"]["digest"])
            elif isinstance(doc.get("rootfs"), dict):
                config = config or d
                diffs = doc["rootfs"].get("diff_ids")
                if isinstance(diffs, list) and all(isinstance(x, str) for x in diffs):
                    out.update(zip(chain_ids(diffs), diffs))
        self._diff_ids[("", digest or "")] = (config, out)
        return config, out

    def diff_ids(self, digest: str | None) -> dict[str, str]:
        """chain ID -> diff ID for the image whose target digest is ``digest``."""
        return self._walk_image(digest)[1]

    def config_digest(self, digest: str | None) -> str | None:
        """The config digest of the image whose target digest is ``digest`` (crictl's id)."""
        return self._walk_image(digest)[0]

    def stack(self, namespace: str, ns_bucket: bbolt.Bucket, key: str,
              image_digest: str | None) -> tuple[LayerInfo, list[LayerInfo]]:
        """The upper and lowers (topmost first) of the active snapshot ``key``: what containerd
        (or dockerd) hands the kernel as ``upperdir``/``lowerdir``. A ``<id>-init`` snapshot in
        the chain is an init layer (Docker's: ``/etc/hosts`` and the like); the others are the
        image's layers, ``image_index`` counted from its bottom one. Raises :class:`_Damaged`
        or :class:`BoltError`."""
        snaps = ns_bucket.bucket("snapshots")
        snaps = snaps.bucket(SNAPSHOTTER) if snaps is not None else None
        own = snaps.bucket(key) if snaps is not None else None
        if own is None:
            raise _NoSnapshot(self.meta_host, f"snapshot {key!r} is not in v1/{namespace}/snapshots/"
                              f"{SNAPSHOTTER} (removed?)")
        name = text(own.value("name"))
        if not name:
            raise _NoSnapshot(self.meta_host, f"snapshot {key!r} has no backend name")
        sid, _kind, parent = self.backend(name)
        upper = LayerInfo(role="upper", dir=self.layer_dir(sid), id=key)
        chain: list[tuple[str, int]] = []
        seen = {name}
        while parent:
            if parent in seen or len(chain) > MAX_CHAIN:
                raise _Damaged(self.snap_host, f"snapshot {parent!r}: the parent chain loops")
            seen.add(parent)
            psid, _pkind, next_parent = self.backend(parent)
            chain.append((parent, psid))
            parent = next_parent
        diff_ids = self.diff_ids(image_digest)
        lowers = []
        for pname, psid in chain:
            pkey = _key_of(pname)
            init = pkey.endswith("-init")
            lowers.append(LayerInfo(role="init" if init else "image", dir=self.layer_dir(psid), id=pkey,
                                    chain_id=pkey if pkey.startswith("sha256:") else None,
                                    diff_id=diff_ids.get(pkey)))
        images = [info for info in lowers if info.role == "image"]
        for i, info in enumerate(images):
            info.image_index = len(images) - 1 - i
        return upper, lowers

    def _blob_json(self, digest: str):
        m = re.fullmatch(r"(sha256|sha512):([0-9a-f]{64,128})", digest or "")
        if not m:
            return None
        try:
            host = self.root.resolve(_join(self.data_root, f"{CONTENT}/blobs/{m[1]}/{m[2]}"))
            return json.loads(fs.read_file(host, limit=MAX_JSON))
        except (OSError, RootEscape, ValueError, RecursionError):  # RecursionError: crafted nesting
            return None


# -- the reader --------------------------------------------------------------------------------
def find(root: Root, data_root: str | None = None) -> Iterator[Container | Broken]:
    """Every containerd container under ``root`` whose rootfs is an overlayfs snapshot.

    ``data_root`` (a path inside ``root``) overrides ``root =`` of ``/etc/containerd/config.toml``
    (itself read inside ``root``), whose default is ``/var/lib/containerd``. A missing or empty
    data root yields nothing. A damaged database, a container on another snapshotter, a missing
    snapshot, a path that leaves the root: each is a :class:`Broken` (``where`` = the host path
    of the file at fault) and the listing goes on; nothing the evidence holds makes this raise.
    """
    broken: list[Broken] = []
    overlay_root = None
    if data_root is None:
        data_root, overlay_root, broken = system_data_root(root)
    yield from broken
    overlay_root = overlay_root or _join(data_root, OVERLAY_PLUGIN)
    try:
        store = _Store(root, data_root, overlay_root)
    except _UNRESOLVABLE as exc:
        yield Broken(ENGINE, root.host_path(data_root), f"cannot resolve the data root: {exc}")
        return
    if not fs.isdir(store.host):
        return
    if not fs.lexists(store.meta_host):
        try:
            empty = not fs.list_dir(store.host)
        except OSError:
            empty = True
        if not empty:
            yield Broken(ENGINE, store.meta_host, f"missing: the data root {store.host} has no "
                         "metadata database, its containers cannot be listed")
        return
    try:
        db = bbolt.open_db(store.meta_host)
    except BoltError as exc:
        yield Broken(ENGINE, exc.path, exc.detail)
        return
    try:
        yield from _namespaces(db, store)
    finally:
        db.close()
        store.close()


def _namespaces(db: bbolt.DB, store: _Store) -> Iterator[Container | Broken]:
    try:
        v1 = db.bucket("v1")
        if v1 is None:
            yield Broken(ENGINE, db.name, "no v1 bucket: not a containerd metadata database, or an "
                         "unknown schema")
            return
        namespaces = list(v1.buckets())
    except BoltError as exc:
        yield Broken(ENGINE, exc.path, exc.detail)
        return
    for raw_ns, ns_bucket in namespaces:
        namespace = text(raw_ns)
        done = 0
        try:
            containers = ns_bucket.bucket("containers")
            if containers is None:
                continue
            for raw_id, c_bucket in containers.buckets():
                cid = text(raw_id)
                try:
                    item = _container(store, namespace, ns_bucket, cid, c_bucket)
                    if item is not None:
                        yield item
                except BoltError as exc:
                    yield Broken(ENGINE, exc.path, f"namespace {namespace}, container {cid}: {exc.detail}")
                done += 1
        except BoltError as exc:
            more = f" after {done} container{'s' * (done != 1)}" if done else ""
            yield Broken(ENGINE, exc.path, f"namespace {namespace}: {exc.detail}; the namespace's "
                         f"containers cannot be listed{more}")


def _container(store: _Store, namespace: str, ns_bucket: bbolt.Bucket, cid: str,
               c: bbolt.Bucket) -> Container | Broken | None:
    def broken(where: str, why: str) -> Broken:
        return Broken(ENGINE, where, f"namespace {namespace}, container {cid}: {why}")

    image = text(c.value("image")) or None
    snapshotter = text(c.value("snapshotter")) or ""
    key = text(c.value("snapshotKey")) or ""
    label_bucket = c.bucket("labels")
    labels = {text(k): text(v) for k, v in (label_bucket.items() if label_bucket else ())
              if isinstance(v, bytes)}
    created = None
    raw_created = c.value("createdat")
    if raw_created:
        try:
            created = go_time(raw_created)
        except ValueError:
            created = None
    names = [cid]
    names += [labels[k] for k in NAME_LABELS if labels.get(k) and labels[k] not in names]

    if not key:
        if namespace == DOCKER_NAMESPACE or DOCKER_BUNDLE_LABEL in labels:
            return None  # Docker's graph-driver containers: the docker reader lists them
        return broken(_db_name(c), "no snapshotKey: its rootfs is a directory of its own (ctr run "
                      "--rootfs), not a snapshot; nothing to diff")
    if snapshotter != SNAPSHOTTER:
        return broken(_db_name(c), f"snapshotter {snapshotter or '(none)'!r} (snapshot {key!r}): only "
                      "the overlayfs snapshotter is handled")
    target = store.image_target(ns_bucket, image)
    try:
        upper, lowers = store.stack(namespace, ns_bucket, key, target)
    except BoltError as exc:
        return broken(exc.path, f"snapshot {key!r}: {exc.detail}")
    except _Damaged as exc:
        if isinstance(exc, _NoSnapshot):
            return broken(_db_name(c), exc.why)
        return broken(exc.where, f"snapshot {key!r}: {exc.why}")
    k8s = {field: labels.get(label) or None for field, label in K8S_LABELS.items()}
    image_id = store.config_digest(target) if namespace == K8S_NAMESPACE else target
    return Container(engine=ENGINE, id=cid, names=names, image=image, state=None, created=created,
                     store=store.host, upper=upper, lowers=lowers, namespace=namespace,
                     whiteouts="kernel", xattr_ns="auto", image_id=image_id or None,
                     state_note=STATE_NOTE, **k8s)


def _db_name(bucket: bbolt.Bucket) -> str:
    return bucket.db.name


def _key_of(name: str) -> str:
    """The namespace's key of a snapshot from its backend name ``<namespace>/<n>/<key>``."""
    m = re.fullmatch(r"([^/]+)/(\d+)/(.+)", name, re.S)
    return m[3] if m else name


# -- for engines that keep their layers in containerd (Docker's containerd image store) -----------
class SnapshotError(Exception):
    """A snapshot stack that cannot be read; ``where`` is the host path at fault."""

    def __init__(self, where: str, why: str):
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why


def system_data_root(root: Root) -> tuple[str, str | None, list[Broken]]:
    """(data root, overlayfs snapshotter root or None, warnings) of the host's containerd, from
    ``/etc/containerd/config.toml`` inside ``root`` (default ``/var/lib/containerd``)."""
    broken: list[Broken] = []
    config = _config(root, broken)
    configured = config.get("root")
    data_root = configured if isinstance(configured, str) and configured else DEFAULT_ROOT
    return data_root, _overlay_root_path(config), broken


class SnapshotReader:
    """Snapshot stacks by key from the first of several containerd data roots that holds them
    (an evidence path each, with its overlayfs snapshotter root or None for the default).
    Each data root's databases are opened once, on first use, and closed by :meth:`close`."""

    def __init__(self, root: Root, candidates: list[tuple[str, str | None]]):
        self.root = root
        self.candidates = candidates
        self._opened: list[tuple[_Store, bbolt.DB]] | None = None
        self.problems: list[str] = []  # "host path: why" for data roots that could not be opened

    def _stores(self) -> list[tuple[_Store, bbolt.DB]]:
        if self._opened is None:
            self._opened = []
            seen: set[str] = set()
            for data_root, overlay_root in self.candidates:
                try:
                    store = _Store(self.root, data_root, overlay_root or _join(data_root, OVERLAY_PLUGIN))
                except _UNRESOLVABLE as exc:
                    self.problems.append(f"{self.root.host_path(data_root)}: cannot resolve ({exc})")
                    continue
                if store.host in seen or not fs.isfile(store.meta_host):
                    continue
                seen.add(store.host)
                try:
                    self._opened.append((store, bbolt.open_db(store.meta_host)))
                except BoltError as exc:
                    self.problems.append(f"{exc.path}: {exc.detail}")
        return self._opened

    def _namespace(self, db: bbolt.DB, namespace: str) -> bbolt.Bucket | None:
        v1 = db.bucket("v1")
        return v1.bucket(namespace) if v1 is not None else None

    def locate(self, namespace: str, key: str) -> tuple[_Store, bbolt.Bucket] | None:
        """The data root whose namespace has an overlayfs snapshot ``key``."""
        for store, db in self._stores():
            try:
                ns = self._namespace(db, namespace)
                snaps = ns.bucket("snapshots") if ns is not None else None
                snaps = snaps.bucket(SNAPSHOTTER) if snaps is not None else None
                if snaps is not None and snaps.bucket(key) is not None:
                    return store, ns
            except BoltError as exc:
                self.problems.append(f"{exc.path}: {exc.detail}")
        return None

    def looked_in(self) -> str:
        where = [store.meta_host for store, _ in self._stores()]
        if not where:
            where = [f"no containerd metadata database under "
                     f"{', '.join(self.root.host_path(d) for d, _ in self.candidates)}"]
        return "; ".join(where + self.problems)

    def stack(self, namespace: str, key: str,
              image_digest: str | None = None) -> tuple[str, LayerInfo, list[LayerInfo]]:
        """(store host path, upper, lowers) of snapshot ``key``; raises :class:`SnapshotError`."""
        found = self.locate(namespace, key)
        if found is None:
            raise SnapshotError(self.looked_in(), f"no overlayfs snapshot {key!r} in namespace "
                                f"{namespace} (removed, or its containerd data root is elsewhere)")
        store, ns = found
        try:
            upper, lowers = store.stack(namespace, ns, key, image_digest)
        except BoltError as exc:
            raise SnapshotError(exc.path, f"snapshot {key!r}: {exc.detail}") from None
        except _Damaged as exc:
            raise SnapshotError(exc.where, exc.why if isinstance(exc, _NoSnapshot)
                                else f"snapshot {key!r}: {exc.why}") from None
        return store.host, upper, lowers

    def image_names(self, namespace: str) -> dict[str, list[str]]:
        """target digest -> the image names (``docker.io/library/x:1``) pointing at it."""
        out: dict[str, list[str]] = {}
        for store, db in self._stores():
            try:
                ns = self._namespace(db, namespace)
                images = ns.bucket("images") if ns is not None else None
                for raw, _bucket in (images.buckets() if images is not None else ()):
                    name = text(raw)
                    digest = store.image_target(ns, name)
                    if digest:
                        out.setdefault(digest, []).append(name)
            except BoltError as exc:
                self.problems.append(f"{exc.path}: {exc.detail}")
        return out

    def close(self) -> None:
        for store, db in self._opened or ():
            db.close()
            store.close()
        self._opened = None
