"""Podman / CRI-O containers, read from a containers-storage ``overlay`` store: files only.

Nothing here runs ``podman`` or opens a socket. Every path (store files, layer dirs, ``l/`` links)
is resolved with :meth:`Root.resolve`, so a seized host's links never lead onto the analyst's.

Where the stores are (:func:`find` without ``data_root``):

* the system store: ``graphroot`` of ``[storage]`` in ``/etc/containers/storage.conf``, default
  ``/var/lib/containers/storage``;
* a rootless store for ``/root`` and every home in ``/etc/passwd``: the user's own
  ``~/.config/containers/storage.conf`` (``graphroot``) when it has one, else the system file's
  ``rootless_storage_path`` (``$HOME``, ``$UID``, ``$USER`` expanded), and always the default
  ``~/.local/share/containers/storage``.

A store without ``overlay-containers/`` or ``overlay-layers/`` (no store, or another driver) is
skipped silently; the same directory reached twice is read once.

What a store holds, and what this reader takes from it:

* ``overlay-containers/containers.json`` (+ ``volatile-containers.json``): ``id``, ``names``,
  ``image`` (an image id), ``layer`` (the container's read-write layer), ``created``,
  ``metadata`` (a JSON string: ``image-name``, ``image-id``, ``name``, ``created-at``).
* ``overlay-images/images.json``: the image name is its ``names[0]``; a dangling image falls back
  to the metadata's ``image-name``, then to the image id.
* ``overlay-layers/layers.json`` (+ ``volatile-layers.json``): ``id``, ``parent``,
  ``diff-digest``. The container's layer is the upper (``overlay/<id>/diff``); its ``parent``
  chain are the image layers, topmost first (``image_index`` 0 = the bottom one; ``chain_id``
  is the OCI ChainID of the diff ids up to that layer). Podman makes **no init layer** (unlike
  Docker's ``-init``): ``/etc/hosts``, ``/etc/hostname``, ``/etc/resolv.conf``,
  ``/run/.containerenv`` are bind mounts from the container's ``userdata`` dirs, and their
  mount-point stubs (with ``/dev``, ``/proc``, ``/sys``, ``/run``, ``/etc/mtab -> /proc/mounts``)
  are created in the container's own upper layer when it first starts. ``podman diff`` hides
  exactly those paths (libpod's ``initInodes``); the scan reports them as added.
* ``overlay/<id>/lower`` (``l/SHORT:l/SHORT:...``, topmost first) is what the driver really hands
  to the kernel; each ``overlay/l/SHORT`` is a relative link ``../<id>/diff``. The stack from
  ``layers.json`` is checked against it: a disagreement, a ``lower`` entry that is not
  ``l/<name>``, or a link that leaves the root or does not land on a layer's ``diff`` makes the
  container :class:`Broken` (the analyst can still give ``--upper``/``--lowers`` by hand). When
  ``layers.json`` is unreadable (reported once) or lacks a layer, the ``lower`` file alone gives
  the stack (layer ids from the link targets, no ``diff_id``).
* ``overlay/<id>/link``: the layer's short name (:attr:`LayerInfo.link`).
* The container's state is libpod's, not containers-storage's, in one of two databases:
  ``db.sql`` (SQLite: Podman 5's default, at the graph root; Podman 4.8+ could use it, looked
  for in ``libpod/`` too) or ``libpod/bolt_state.db`` (BoltDB, Podman <= 5; read with
  :mod:`ovforensics.stores.bbolt`: bucket ``ctr`` / <id> / key ``state``). Each holds the container's
  state as libpod's JSON: ``state`` (libpod's enum), ``exitCode``, ``startedTime``,
  ``finishedTime``. In ``db.sql`` that JSON is table ``ContainerState``'s ``JSON`` column; its
  ``State`` column is **not** kept current (1 for an exited container, seen with Podman 5.4)
  and is not read. The database is data, never a program: :mod:`ovforensics.evidence.sqlitedb` reads
  the one table with views, triggers and virtual tables refused and time bounded. Where both
  databases exist, the one Podman itself uses wins: ``bolt_state.db`` when present (Podman 5
  keeps using it on hosts upgraded from 4), else ``db.sql``. States are named as ``podman
  inspect`` names them (libpod's "configured" is "created", "created" is "initialized"). No
  libpod database, or no entry (CRI-O, Buildah working containers): ``None``, and
  ``state_note`` says why.
* Kubernetes (CRI-O): a pod's containers carry ``io.kubernetes.pod.name``,
  ``io.kubernetes.pod.namespace``, ``io.kubernetes.pod.uid``, ``io.kubernetes.container.name``
  and ``io.kubernetes.cri-o.ContainerType`` (``sandbox`` or ``container``) as annotations of
  their OCI spec, ``overlay-containers/<id>/userdata/config.json``: read where present (CRI-O's
  documented layout; tested with Podman, which writes the same file and takes the same
  annotations with ``--annotation``).

Marker rules (:attr:`Container.xattr_ns`, :attr:`Container.whiteouts`):

* a rootless store's native overlay mounts use ``userxattr``: its layers carry
  ``user.overlay.*``, so ``xattr_ns = "user"``. A store is rootless when it was found under a home
  whose ``/etc/passwd`` uid is not 0, or (``data_root`` given) when its directory is not owned by
  uid 0. Rootful stores keep ``"auto"`` (the scanner reads the layer roots).
* ``whiteouts = "fuse"`` when the store's layers were written by a mount program
  (fuse-overlayfs): the applicable ``storage.conf`` sets ``mount_program`` (in
  ``[storage.options.overlay]`` or the older ``[storage.options]``), or the store's own
  ``overlay/.has-mount-program`` says ``true`` (containers-storage records it there, and keeps
  using the mount program for that store whatever the configuration says later).

Not followed: ``additionalimagestores`` (a layer kept in another store is reported Broken),
a libpod ``static_dir`` moved away from ``<store>/libpod`` by containers.conf (state ``None``).

Damage never raises: an unreadable or malformed store file is a :class:`Broken` naming it (host
path), one bad container entry is a :class:`Broken` for it and the others are still listed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tomllib
import urllib.parse
from dataclasses import dataclass
from typing import Iterator

from ovforensics.evidence import fs
from ovforensics.stores import bbolt
from ovforensics.evidence.sqlitedb import SQLiteError, read_rows
from ovforensics.evidence import storetext
from ovforensics.evidence.rootfs import Root, RootEscape
from ovforensics.stores.base import Broken, Container, LayerInfo, StoreError

#: What ``podman diff`` never prints: its initInodes (libpod/diff.go), the files podman puts in
#: every container itself; exact paths (their children are printed).
PODMAN_DIFF_HIDES = ("/dev", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/proc", "/run",
                     "/run/notify", "/run/.containerenv", "/run/secrets", "/run/podman-init",
                     "/sys", "/etc/mtab")

ENGINE = "podman"
DEFAULT_GRAPHROOT = "/var/lib/containers/storage"
ROOTLESS_DEFAULT = ".local/share/containers/storage"
SYSTEM_CONF = "/etc/containers/storage.conf"
USER_CONF = ".config/containers/storage.conf"
MAX_JSON = 256 << 20  # bytes: larger store files are refused, not read into memory
MAX_CHAIN = 4096  # layers in one parent chain, as Docker's reader (overlay itself stops at 500)

#: libpod's ContainerStatus enum, named as `podman inspect` / `podman ps` name it
STATES = {0: "unknown", 1: "created", 2: "initialized", 3: "running", 4: "stopped", 5: "paused",
          6: "exited", 7: "removing", 8: "stopping"}

#: a layer or container id as containers-storage makes them (hex), or a name given to it:
#: never a path (no "/", not "." or "..")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_ZERO_TIME = "0001-01-01"
#: CRI-O's annotations (the same keys as containerd's CRI labels): Container field -> key
K8S_ANNOTATIONS = {"pod": "io.kubernetes.pod.name", "pod_namespace": "io.kubernetes.pod.namespace",
                   "pod_uid": "io.kubernetes.pod.uid", "container_name": "io.kubernetes.container.name",
                   "role": "io.kubernetes.cri-o.ContainerType"}
MAX_SPEC = 4 << 20  # an OCI spec is a few KB


@dataclass
class _State:
    state: str | None
    exit_code: int | None = None
    started: str | None = None
    finished: str | None = None


#: what resolving a path found in the evidence may raise: it leaves the root (RootEscape), a
#: loop or unreadable component (OSError), or a NUL byte that a crafted config put in it
#: (ValueError from os.lstat: "embedded null byte")
_UNRESOLVABLE = (RootEscape, OSError, ValueError)
#: why a JSON or TOML parser gave up with RecursionError (a crafted file nests deeper than
#: Python's recursion limit; no store file nests more than a few levels)
_TOO_DEEP = "nested deeper than the parser can follow: crafted or damaged"


class _Damaged(Exception):
    """A store file or entry that cannot be used; ``where`` is the host path at fault."""

    def __init__(self, where: str, why: str):
        super().__init__(why)
        self.where = where
        self.why = why


@dataclass
class _Spec:
    path: str  # evidence path of the store
    rootless: bool | None  # None: decide from the store directory's owner
    mount_program: bool


# -- public entry point ----------------------------------------------------------------------------

def find(root: Root, data_root: str | None = None) -> Iterator[Container | Broken]:
    """Yield every container (or :class:`Broken` entry) of the Podman / CRI-O overlay stores.

    ``data_root``: one store (an evidence path inside ``root``); otherwise the system store and
    every user's rootless store, as named in the module docstring.
    """
    if data_root is not None:
        specs: list[_Spec | Broken] = [_Spec(data_root, None, False)]
    else:
        specs = list(_store_specs(root))
    seen: set[str] = set()
    for spec in specs:
        if isinstance(spec, Broken):
            yield spec
            continue
        try:
            host = root.resolve(spec.path)
        except _UNRESOLVABLE as exc:
            yield Broken(ENGINE, root.host_path(spec.path), f"store path: {exc}")
            continue
        if host in seen or not _is_store(root, host):
            continue
        seen.add(host)
        try:
            yield from _Store(root, host, spec).containers()
        except _Damaged as exc:  # a store-level file that makes the whole store unreadable
            yield Broken(ENGINE, exc.where, exc.why)


# -- where the stores are --------------------------------------------------------------------------

def _is_store(root: Root, host: str) -> bool:
    """An overlay store: ``overlay-containers/`` or ``overlay-layers/`` (resolved inside the root)."""
    for name in ("overlay-containers", "overlay-layers"):
        try:
            if fs.isdir(root.resolve(root.inside(host).rstrip("/") + "/" + name)):
                return True
        except _UNRESOLVABLE:
            return True  # a store whose files lead astray: read it, and report them
    return False


def _read_toml(root: Root, inside: str) -> tuple[dict | None, Broken | None]:
    try:
        host = root.resolve(inside)
    except _UNRESOLVABLE as exc:
        return None, Broken(ENGINE, root.host_path(inside), str(exc))
    try:
        data = fs.read_file(host, limit=MAX_JSON)
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except ValueError as exc:
        return None, Broken(ENGINE, host, str(exc))
    except OSError as exc:
        return None, Broken(ENGINE, host, f"cannot read: {exc.strerror or exc}")
    try:
        return tomllib.loads(data.decode("utf-8")), None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return None, Broken(ENGINE, host, f"not valid TOML: {exc}")
    except RecursionError:
        return None, Broken(ENGINE, host, f"not valid TOML: {_TOO_DEEP}")


def _conf_get(conf: dict | None, *keys: str):
    node = conf
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _mount_program(conf: dict | None) -> bool:
    for keys in (("storage", "options", "overlay", "mount_program"),
                 ("storage", "options", "mount_program")):
        value = _conf_get(conf, *keys)
        if isinstance(value, str) and value.strip():
            return True
    return False


def _homes(root: Root) -> Iterator[tuple[str, int, str]]:
    """(home, uid, user) for /root and for every /etc/passwd entry inside the root."""
    yield "/root", 0, "root"
    try:
        data = fs.read_file(root.resolve("/etc/passwd"), limit=MAX_JSON)
    except (RootEscape, OSError, ValueError):
        return
    for raw in data.split(b"\n"):
        fields = raw.decode("utf-8", "surrogateescape").split(":")
        if len(fields) < 7 or not fields[5].startswith("/"):
            continue
        try:
            uid = int(fields[2])
        except ValueError:
            continue
        yield fields[5], uid, fields[0]


def _store_specs(root: Root) -> Iterator[_Spec | Broken]:
    conf, broken = _read_toml(root, SYSTEM_CONF)
    if broken:
        yield broken
    graphroot = _conf_get(conf, "storage", "graphroot")
    if not isinstance(graphroot, str) or not graphroot.startswith("/"):
        graphroot = DEFAULT_GRAPHROOT
    system_mp = _mount_program(conf)
    yield _Spec(graphroot, False, system_mp)
    rootless_path = _conf_get(conf, "storage", "rootless_storage_path")
    for home, uid, user in _homes(root):
        rootless = uid != 0
        default = home.rstrip("/") + "/" + ROOTLESS_DEFAULT
        user_conf, broken = _read_toml(root, home.rstrip("/") + "/" + USER_CONF)
        if broken:
            yield broken
        if user_conf is not None:
            path = _conf_get(user_conf, "storage", "graphroot")
            mp = _mount_program(user_conf)
        else:
            path = rootless_path
            mp = system_mp
        if isinstance(path, str):
            path = path.replace("$HOME", home.rstrip("/")).replace("$UID", str(uid)).replace("$USER", user)
        if isinstance(path, str) and path.startswith("/"):
            yield _Spec(path, rootless, mp)
        yield _Spec(default, rootless, mp)


# -- one store -------------------------------------------------------------------------------------

class _Store:
    def __init__(self, root: Root, host: str, spec: _Spec):
        self.root = root
        self.host = host
        self.inside = root.inside(host)
        if spec.rootless is None:
            try:
                spec.rootless = fs.lstat(host).st_uid != 0
            except OSError:
                spec.rootless = False
        self.spec = spec
        self.warnings: list[Broken] = []

    # paths -------------------------------------------------------------------------------------
    def path(self, rel: str) -> str:
        """Host path of ``rel`` inside the store, resolved inside the root (may raise RootEscape)."""
        return self.root.resolve(self.inside.rstrip("/") + "/" + rel)

    def show(self, rel: str) -> str:
        """A host path for messages, without resolving (for paths that failed to resolve)."""
        return os.path.join(self.host, rel)

    # files -------------------------------------------------------------------------------------
    def read_bytes(self, rel: str, limit: int = MAX_JSON) -> tuple[bytes | None, str]:
        """(content or None when missing, host path); raises _Damaged when unreadable."""
        try:
            host = self.path(rel)
        except _UNRESOLVABLE as exc:
            raise _Damaged(self.show(rel), f"refused: {exc}") from None
        try:
            data = fs.read_file(host, limit=limit)
        except (FileNotFoundError, NotADirectoryError):
            return None, host
        except OSError as exc:
            raise _Damaged(host, f"cannot read: {exc.strerror or exc}") from None
        except ValueError:
            raise _Damaged(host, f"larger than {limit} bytes") from None
        return data, host

    def read_list(self, rel: str) -> tuple[list, str]:
        """A JSON list store file; missing: empty. Raises _Damaged naming the file."""
        data, host = self.read_bytes(rel)
        if data is None:
            return [], host
        try:
            value = storetext.loads(data)  # bytes that are not UTF-8: kept, not fatal to the file
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Damaged(host, f"not valid JSON ({exc}); expected a list of records") from None
        except RecursionError:
            raise _Damaged(host, f"not valid JSON ({_TOO_DEEP}); expected a list of records") from None
        if not isinstance(value, list):
            raise _Damaged(host, f"expected a JSON list of records, found {type(value).__name__}")
        return value, host

    def read_pair(self, kind: str) -> list[tuple[object, str]]:
        """Entries of ``overlay-<kind>/<kind>.json`` and ``volatile-<kind>.json``, each with its file."""
        out: list[tuple[object, str]] = []
        for name in (f"overlay-{kind}/{kind}.json", f"overlay-{kind}/volatile-{kind}.json"):
            items, host = self.read_list(name)
            out.extend((item, host) for item in items)
        return out

    # the store ---------------------------------------------------------------------------------
    def containers(self) -> Iterator[Container | Broken]:
        entries = self.read_pair("containers")  # damaged: _Damaged for the whole store
        self.layers, layers_ok = self.load_layers()
        images = self.load_images()
        states, self.state_note = self.load_states()
        self.fuse = self.spec.mount_program or self.has_mount_program()
        yield from self.warnings
        seen: set[str] = set()
        for index, (entry, host) in enumerate(entries):
            try:
                container = self.container(entry, images, states, layers_ok)
            except _Damaged as exc:
                ident = _ident(entry)
                yield Broken(ENGINE, exc.where or host,
                             f"container {ident}: {exc.why}" if ident else f"entry {index}: {exc.why}")
                continue
            if container.id in seen:
                continue
            seen.add(container.id)
            yield container

    def load_layers(self) -> tuple[dict[str, dict], bool]:
        try:
            entries = self.read_pair("layers")
        except _Damaged as exc:
            self.warnings.append(Broken(ENGINE, exc.where, exc.why + "; stacks are read from the "
                                        "overlay/<id>/lower files alone"))
            return {}, False
        layers: dict[str, dict] = {}
        for entry, _host in entries:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                layers.setdefault(entry["id"], entry)
        return layers, True

    def load_images(self) -> dict[str, dict]:
        try:
            entries = self.read_pair("images")
        except _Damaged as exc:
            self.warnings.append(Broken(ENGINE, exc.where, exc.why + "; image names are taken "
                                        "from the containers' metadata"))
            return {}
        return {e["id"]: e for e, _ in entries if isinstance(e, dict) and isinstance(e.get("id"), str)}

    def has_mount_program(self) -> bool:
        try:
            data, _ = self.read_bytes("overlay/.has-mount-program", limit=64)
        except _Damaged:
            return False
        return data is not None and data.strip() == b"true"

    def load_states(self) -> tuple[dict[str, _State], str | None]:
        """Container id -> state from libpod's database, and why states are unknown (or None)."""
        found: list[tuple[str, dict[str, _State]]] = []
        for rel, reader in (("db.sql", _sqlite_states), ("libpod/db.sql", _sqlite_states),
                            ("libpod/bolt_state.db", _bolt_states)):
            try:
                host = self.path(rel)
            except _UNRESOLVABLE as exc:
                self.warnings.append(Broken(ENGINE, self.show(rel), f"refused: {exc}"))
                continue
            if not fs.isfile(host):
                continue
            try:
                found.append((rel, reader(host)))
            except (StoreError, SQLiteError, OSError, ValueError) as exc:
                self.warnings.append(Broken(ENGINE, host, f"libpod database unreadable ({exc}); "
                                            "container states unknown"))
        states: dict[str, _State] = {}
        for _rel, part in found:  # bolt_state.db last: Podman uses it when it is there
            states.update(part)
        if found:
            return states, "not in libpod's database (not a Podman container: CRI-O or Buildah?)"
        return states, ("no libpod database (db.sql, libpod/bolt_state.db) in the store: state "
                        "unknown (CRI-O and Buildah keep none)")

    def k8s(self, cid: str) -> dict:
        """CRI-O's Kubernetes annotations of a container (its userdata/config.json), or {}."""
        try:
            data, _host = self.read_bytes(f"overlay-containers/{cid}/userdata/config.json", limit=MAX_SPEC)
            spec = json.loads(data) if data is not None else None
        except (_Damaged, ValueError, RecursionError):
            return {}
        notes = spec.get("annotations") if isinstance(spec, dict) else None
        if not isinstance(notes, dict):
            return {}
        out = {field: notes[key] for field, key in K8S_ANNOTATIONS.items()
               if isinstance(notes.get(key), str) and notes[key]}
        return out if "pod" in out or "role" in out else {}

    # one container -----------------------------------------------------------------------------
    def container(self, entry, images: dict, states: dict, layers_ok: bool) -> Container:
        if not isinstance(entry, dict):
            raise _Damaged("", f"expected a JSON object, found {type(entry).__name__}")
        cid = entry.get("id")
        if not isinstance(cid, str) or not cid:
            raise _Damaged("", "no id")
        names = entry.get("names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _Damaged("", f"names is not a list of strings: {names!r}")
        layer = entry.get("layer")
        if not isinstance(layer, str) or not _ID.fullmatch(layer):
            raise _Damaged("", f"layer is not a layer id: {layer!r}")
        created = entry.get("created")
        created = created if isinstance(created, str) else None
        meta = _metadata(entry.get("metadata"))
        image_id = entry.get("image") if isinstance(entry.get("image"), str) else None
        image = None
        if image_id:
            img_names = images.get(image_id, {}).get("names")
            if isinstance(img_names, list) and img_names and isinstance(img_names[0], str):
                image = img_names[0]
        if image is None and isinstance(meta.get("image-name"), str) and meta["image-name"]:
            image = meta["image-name"]
        if image is None:
            image = image_id or None
        upper, lowers = self.stack(layer, layers_ok)
        state = states.get(cid)
        return Container(
            engine=ENGINE, id=cid, names=list(names), image=image,
            state=state.state if state else None,
            created=created, store=self.host, upper=upper, lowers=lowers,
            whiteouts="fuse" if self.fuse else "kernel",
            xattr_ns="user" if self.spec.rootless else "auto",
            image_id=image_id or None,
            exit_code=state.exit_code if state else None,
            started=state.started if state else None,
            finished=state.finished if state else None,
            state_note=None if state else self.state_note,
            diff_hides=PODMAN_DIFF_HIDES,
            **self.k8s(cid),
        )

    def layer_dir(self, lid: str) -> str:
        if not _ID.fullmatch(lid):
            raise _Damaged(self.show("overlay-layers/layers.json"), f"layer id is not an id: {lid!r}")
        try:
            host = self.path(f"overlay/{lid}/diff")
        except _UNRESOLVABLE as exc:
            raise _Damaged(self.show(f"overlay/{lid}/diff"), f"refused: {exc}") from None
        st = _lstat(host)
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise _Damaged(host, "layer directory missing" if st is None else "not a directory")
        return host

    def link_of(self, lid: str) -> str | None:
        try:
            data, _ = self.read_bytes(f"overlay/{lid}/link", limit=4096)
        except _Damaged:
            return None
        if data is None:
            return None
        text = data.decode("utf-8", "replace").strip()
        return text or None

    def chain(self, layer: str) -> list[str] | None:
        """Parent chain of ``layer`` from layers.json, topmost first; None if it cannot be followed."""
        if layer not in self.layers:
            return None
        out: list[str] = []
        seen = {layer}  # a set: the walk is linear in the chain (a list made it quadratic)
        current = self.layers[layer].get("parent")
        while current:
            if not isinstance(current, str) or current in seen:
                raise _Damaged(self.show("overlay-layers/layers.json"),
                               f"layer {layer}: parent chain is not a chain of ids ({current!r})")
            if len(out) >= MAX_CHAIN:
                raise _Damaged(self.show("overlay-layers/layers.json"),
                               f"layer {layer}: parent chain longer than {MAX_CHAIN} layers "
                               "(Docker's reader stops there too); not followed")
            if current not in self.layers:
                return None
            out.append(current)
            seen.add(current)
            current = self.layers[current].get("parent")
        return out

    def lower_file(self, layer: str) -> list[tuple[str, str]] | None:
        """``overlay/<layer>/lower`` as [(entry, host dir it lands on)]; None when there is none."""
        data, host = self.read_bytes(f"overlay/{layer}/lower", limit=1 << 20)
        if data is None:
            return None
        text = data.decode("utf-8", "surrogateescape").strip()
        if not text:
            return []
        out = []
        for item in text.split(":"):
            short = item[2:] if item.startswith("l/") else None
            if not short or not _ID.fullmatch(short):
                raise _Damaged(host, f"lower entry {item!r} is not l/<short name>")
            link_rel = f"overlay/l/{short}"
            try:
                target = self.path(link_rel)
            except _UNRESOLVABLE as exc:
                raise _Damaged(self.show(link_rel), f"link refused: {exc}") from None
            out.append((item, target))
        return out

    def stack(self, layer: str, layers_ok: bool) -> tuple[LayerInfo, list[LayerInfo]]:
        upper_dir = self.layer_dir(layer)
        chain = self.chain(layer) if layers_ok else None
        lower = self.lower_file(layer)
        lowers: list[tuple[str, str]] = []  # (layer id, host dir)
        if chain is not None:
            lowers = [(lid, self.layer_dir(lid)) for lid in chain]
            if lower is not None and [d for _, d in lower] != [d for _, d in lowers]:
                self.disagree(layer, lower, lowers)
        elif lower is not None:
            for item, target in lower:
                lid = self.layer_id_of(target)
                if lid is None:
                    raise _Damaged(self.show(f"overlay/{item}"),
                                   f"does not lead to a layer's diff directory of this store "
                                   f"(lands on {self.root.inside(target)})")
                lowers.append((lid, self.layer_dir(lid)))
        else:
            why = ("is not in overlay-layers/layers.json" if layers_ok
                   else "has no overlay/<id>/lower file (and layers.json is unreadable)")
            if layers_ok and layer in self.layers:
                why = "has a parent chain that breaks off in overlay-layers/layers.json"
            raise _Damaged(self.show("overlay-layers/layers.json"), f"layer {layer} {why}")
        upper = LayerInfo(role="upper", dir=upper_dir, id=layer, diff_id=self.diff_id(layer),
                          link=self.link_of(layer))
        n = len(lowers)
        infos = [LayerInfo(role="image", dir=d, id=lid, diff_id=self.diff_id(lid),
                           link=self.link_of(lid), image_index=n - 1 - i)
                 for i, (lid, d) in enumerate(lowers)]
        # OCI: ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))
        chain_id = None
        for info in reversed(infos):
            if info.diff_id is None:
                break
            chain_id = info.diff_id if chain_id is None else \
                "sha256:" + hashlib.sha256(f"{chain_id} {info.diff_id}".encode()).hexdigest()
            info.chain_id = chain_id
        return upper, infos

    def disagree(self, layer: str, lower: list[tuple[str, str]], chain: list[tuple[str, str]]):
        """Raise for a ``lower`` file that does not hand the kernel layers.json's parent chain."""
        if len(lower) == len(chain):
            for (item, got), (lid, want) in zip(lower, chain):
                if got != want:  # name the link that goes astray
                    raise _Damaged(self.show(f"overlay/{item}"),
                                   f"{item} (in overlay/{layer}/lower) leads to {self.root.inside(got)}, "
                                   f"not to the diff of layer {lid}, which layers.json puts there")
        listed = ", ".join(f"{e} -> {self.root.inside(d)}" for e, d in lower)
        expected = ", ".join(self.root.inside(d) for _, d in chain)
        raise _Damaged(self.show(f"overlay/{layer}/lower"),
                       f"lower file ({listed}) disagrees with the parent chain in "
                       f"layers.json ({expected or 'no parent'})")

    def layer_id_of(self, target: str) -> str | None:
        """The layer id whose ``overlay/<id>/diff`` is ``target`` (a resolved host path)."""
        parent, leaf = os.path.split(target)
        lid = os.path.basename(parent)
        if leaf != "diff" or not _ID.fullmatch(lid):
            return None
        try:
            expected = self.path(f"overlay/{lid}/diff")
        except _UNRESOLVABLE:
            return None
        return lid if expected == target else None

    def diff_id(self, lid: str) -> str | None:
        value = self.layers.get(lid, {}).get("diff-digest")
        return value if isinstance(value, str) and value and value.isascii() else None


def _ident(entry) -> str:
    if not isinstance(entry, dict):
        return ""
    cid = entry.get("id") if isinstance(entry.get("id"), str) else ""
    names = entry.get("names")
    name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else ""
    if cid and name:
        return f"{cid[:12]} ({name!r})"
    return cid[:12] or (repr(name) if name else "")


def _metadata(value) -> dict:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _lstat(path: str) -> os.stat_result | None:
    try:
        return fs.lstat(path)
    except OSError:
        return None


# -- libpod state -----------------------------------------------------------------------------------

def _state_of(doc) -> _State | None:
    """libpod's ContainerState JSON -> a state, or None when it has no ``state``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("state"), int) or isinstance(doc["state"], bool):
        return None
    code = doc.get("exitCode")

    def when(key: str) -> str | None:
        value = doc.get(key)
        return value if isinstance(value, str) and value and not value.startswith(_ZERO_TIME) else None

    return _State(STATES.get(doc["state"], f"state {doc['state']}"),
                  exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
                  started=when("startedTime"), finished=when("finishedTime"))


def _sqlite_states(host: str) -> dict[str, _State]:
    """Container id -> state from libpod's ``db.sql``: table ``ContainerState``, column ``JSON``
    (its ``State`` column is stale), read as data (:func:`ovforensics.evidence.sqlitedb.read_rows`)."""
    rows, _more = read_rows(host, "ContainerState", ("ID", "JSON"))
    out: dict[str, _State] = {}
    for cid, raw in rows:
        if not isinstance(cid, bytes) or not isinstance(raw, bytes):
            continue
        try:
            state = _state_of(json.loads(raw))
        except (ValueError, RecursionError):
            continue
        if state is not None:
            out[cid.decode("utf-8", "replace")] = state
    return out


def _bolt_states(host: str) -> dict[str, _State]:
    """Container id -> state from libpod's ``bolt_state.db``: bucket ``ctr`` / <id>, key ``state``
    (libpod's ContainerState JSON). Raises :class:`BoltError` when damaged."""
    out: dict[str, _State] = {}
    with bbolt.open_db(host) as db:
        ctrs = db.bucket(b"ctr")
        if ctrs is None:
            return out
        for key, bucket in ctrs.buckets():
            raw = bucket.value(b"state")
            try:
                state = _state_of(json.loads(raw)) if raw is not None else None
            except (ValueError, RecursionError):
                continue
            if state is not None:
                out[key.decode("utf-8", "replace")] = state
    return out
