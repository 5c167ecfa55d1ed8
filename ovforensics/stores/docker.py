"""Docker (moby) with the overlay2 storage driver: containers and their layer stacks, from files.

Nothing here talks to the daemon. The data root is ``data_root`` (an evidence path) if given,
else ``data-root`` (or the legacy ``graph``) from ``/etc/docker/daemon.json`` inside the root,
else ``/var/lib/docker``. Every path is resolved with :meth:`Root.resolve`, so a seized host's
store is read under its mount point and no link ever leads onto the analyst's host.

Where a container's stack comes from (``<data root>`` below):

- ``containers/<id>/config.v2.json``: ``ID``, ``Name`` (``/name``), ``Image`` (image id),
  ``Config.Image`` (what the user typed), ``Driver``, ``State``, ``Created``.
- ``image/overlay2/layerdb/mounts/<id>/{mount-id,init-id,parent}``: the upperdir is
  ``overlay2/<mount-id>/diff``, the first lower ``overlay2/<init-id>/diff``, then the image's
  layers from the chain id in ``parent`` down through
  ``image/overlay2/layerdb/sha256/<chain>/{cache-id,diff,parent}``.
- ``overlay2/<mount-id>/lower``: ``l/SHORT:l/SHORT:...``, topmost first: what the kernel was
  given as ``lowerdir=``. Each ``overlay2/l/SHORT`` is a relative link ``../<id>/diff``.

With Docker's **containerd image store** (Docker 29's default; ``"containerd-snapshotter":
true`` in daemon.json's ``features`` for Docker 24-28) a container's config.v2.json says
``"Driver": "overlayfs"`` (a containerd snapshotter) and has no layerdb entry: its layers are
containerd snapshots in namespace ``moby`` (daemon.json's ``containerd-namespace``), key = the
container id, parent ``<id>-init``, then the image's chain (a ``docker build`` image keeps each
build step's ``-init`` snapshot in it). They are read from the containerd data root that holds
them: dockerd's own (``<data root>/containerd/daemon``, when it runs without a system
containerd) or the system containerd's (``root`` of /etc/containerd/config.toml, default
``/var/lib/containerd``). ``Image`` is then the image's manifest or index digest (what
``docker images`` shows in this mode), and the image's names come from containerd's
``images`` of that namespace. BuildKit's leases and snapshots there are not containers: only
Docker's ``containers/`` directory lists containers.

The two must agree. When they do not, the ``lower`` file wins for the directories (it is what
the kernel mounted) and layerdb supplies the ids of the directories it knows; the disagreement
is reported as a :class:`Broken` warning next to the container. A ``lower`` entry or ``l/`` link
that leads anywhere but ``overlay2/<id>/diff`` is refused (warning) and layerdb's stack is used.
Damaged files make a :class:`Broken` record naming the file; the other containers are still
listed. :class:`StoreError` is raised only when the data root itself is unusable.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from typing import Iterator

from ovforensics.evidence import fs
from ovforensics.evidence.rootfs import Root, RootEscape
from ovforensics.stores.base import Broken, Container, LayerInfo, StoreError

ENGINE = "docker"
DEFAULT_DATA_ROOT = "/var/lib/docker"
DAEMON_JSON = "/etc/docker/daemon.json"
DRIVER = "overlay2"
#: storage drivers that are containerd snapshotters (Docker's containerd image store)
SNAPSHOTTERS = ("overlayfs",)
CONTAINERD_NAMESPACE = "moby"

MAX_FILE = 32 << 20  # no store file we read is anywhere near this
MAX_LAYERS = 4096  # chain-walk guard (overlay2 itself stops at 128 lowers)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHAIN = re.compile(r"sha256:([0-9a-f]{64})")
# An overlay2 directory name: one path component, never "." or "..". Docker writes 64 hex
# digits, with "-init" for init layers; be lenient about the rest.
_LAYER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_SHORT = re.compile(r"[A-Za-z0-9]{1,64}")  # l/ names: 26 base32 characters in practice
_ZERO_TIME = "0001-01-01T00:00:00Z"


class _Bad(Exception):
    """One damaged or missing store file: where it is, and what was expected there."""

    def __init__(self, where: str, why: str):
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why

    def broken(self) -> Broken:
        return Broken(engine=ENGINE, where=self.where, why=self.why)


def find(root: Root, data_root: str | None = None) -> Iterator[Container | Broken]:
    """Every Docker container of the overlay2 store under ``root`` (and a :class:`Broken`
    for every entry that could not be read, or whose files disagree)."""
    warnings: list[Broken] = []
    config: dict = {}
    inside = _pick_data_root(root, data_root, warnings, config)
    yield from warnings
    store = _Store(root, inside)
    if store.host is None:
        return
    namespace = config.get("containerd-namespace")
    store.namespace = namespace if isinstance(namespace, str) and namespace else CONTAINERD_NAMESPACE
    try:
        yield from _containers(store)
    finally:
        store.close()


def _containers(store: "_Store") -> Iterator[Container | Broken]:
    try:
        containers = store.host_of("containers")
    except _Bad as bad:
        raise StoreError(str(bad)) from None
    if not fs.lexists(containers):
        return
    if not fs.isdir(containers):
        raise StoreError(f"{containers}: not a directory: expected one directory per container")
    try:
        entries = sorted(fs.list_dir(containers))
    except OSError as exc:
        raise StoreError(f"{containers}: cannot list it: {exc.strerror or exc}") from None
    names, warning = store.image_names()
    if warning is not None:
        yield warning
    for entry in entries:
        try:
            yield from store.container(entry, names)
        except _Bad as bad:
            yield bad.broken()
        except Exception as exc:  # one strange container never stops the listing
            yield Broken(ENGINE, store.lexical(f"containers/{entry}"),
                         f"unreadable container entry: {type(exc).__name__}: {exc}")


# -- the data root -------------------------------------------------------------------------
def _pick_data_root(root: Root, data_root: str | None, warnings: list[Broken],
                    config_out: dict | None = None) -> str:
    """The data root as an evidence path: the argument, daemon.json's, or the default.
    ``config_out`` receives daemon.json's settings (when it is readable)."""
    if data_root:
        return "/" + data_root.strip("/") if data_root.strip("/") else "/"
    try:
        host = root.resolve(DAEMON_JSON)
    except (RootEscape, OSError) as exc:
        warnings.append(Broken(ENGINE, root.host_path(DAEMON_JSON),
                               f"cannot be read inside the root ({exc}); using {DEFAULT_DATA_ROOT}"))
        return DEFAULT_DATA_ROOT
    if not fs.lexists(host):
        return DEFAULT_DATA_ROOT
    try:
        config = json.loads(_read_bytes(host))
    except (OSError, ValueError, RecursionError, _Bad) as exc:  # RecursionError: deep nesting
        why = exc.why if isinstance(exc, _Bad) else str(exc) or type(exc).__name__
        warnings.append(Broken(ENGINE, host, f"not readable as JSON ({why}); using {DEFAULT_DATA_ROOT}"))
        return DEFAULT_DATA_ROOT
    if not isinstance(config, dict):
        warnings.append(Broken(ENGINE, host, f"expected a JSON object; using {DEFAULT_DATA_ROOT}"))
        return DEFAULT_DATA_ROOT
    if config_out is not None:
        config_out.update(config)
    for key in ("data-root", "graph"):  # "graph" is the name before Docker 17.05
        value = config.get(key)
        if isinstance(value, str) and value.strip():
            if not value.startswith("/"):
                warnings.append(Broken(ENGINE, host, f"{key} {value!r} is not an absolute path; "
                                                     f"read as /{value.lstrip('/')}"))
            return "/" + value.strip().strip("/")
        if value is not None:
            warnings.append(Broken(ENGINE, host, f"{key}: expected a path string, got "
                                                 f"{value!r}: ignored"))
    return DEFAULT_DATA_ROOT


def _read_bytes(host: str) -> bytes:
    """A regular file's bytes (never a device or fifo, never more than MAX_FILE)."""
    try:
        return fs.read_file(host, limit=MAX_FILE)
    except ValueError:
        raise _Bad(host, f"larger than {MAX_FILE} bytes: not a Docker store file") from None
    except OSError as exc:
        if exc.errno is None:  # refused: not a regular file
            raise _Bad(host, "not a regular file") from None
        raise


# -- one store ---------------------------------------------------------------------------------
class _Store:
    def __init__(self, root: Root, inside: str):
        self.root = root
        self.inside = inside.rstrip("/") or "/"
        try:
            host = root.resolve(self.inside)
        except RootEscape as exc:
            raise StoreError(f"{root.host_path(self.inside)}: the data root leaves the evidence "
                             f"root: {exc}") from None
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in a crafted data-root
            raise StoreError(f"{root.host_path(self.inside)}: cannot resolve the data root: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        if not fs.lexists(host):
            self.host = None
            return
        if not fs.isdir(host):
            raise StoreError(f"{host}: not a directory: expected Docker's data root")
        self.host = host
        self.inside = root.inside(host)  # symlinks on the way are resolved once, here
        self._overlay2: str | None = None
        self._dirs: dict[str, str] = {}  # a directory under the data root -> its host path
        self._shorts: dict[str, str | None] = {}  # an l/ short name -> the layer id it names
        self._chains: dict[str, list[LayerInfo]] = {}  # an image's top chain id -> its layers
        self.namespace = CONTAINERD_NAMESPACE
        self._snapshots = None  # containerd.SnapshotReader, for the containerd image store
        self._cd_names: dict[str, list[str]] | None = None

    def close(self) -> None:
        if self._snapshots is not None:
            self._snapshots.close()

    def snapshots(self):
        """The containerd data roots that may hold this Docker's snapshots, opened on first use."""
        if self._snapshots is None:
            from ovforensics.stores import containerd

            system, overlay, _warnings = containerd.system_data_root(self.root)
            own = self.inside.rstrip("/") + "/containerd/daemon"
            self._snapshots = containerd.SnapshotReader(self.root, [(own, None), (system, overlay)])
        return self._snapshots

    def containerd_image_names(self) -> dict[str, list[str]]:
        """digest -> Docker's names (``repo:tag`` as ``docker images`` shows them) of the images
        in containerd's namespace; dangling images (``moby-dangling@...``) have none."""
        if self._cd_names is None:
            self._cd_names = {}
            for digest, refs in self.snapshots().image_names(self.namespace).items():
                named = [familiar(r) for r in refs if not r.startswith("moby-dangling@")]
                if named:
                    self._cd_names[digest] = sorted(named)
        return self._cd_names

    # paths -------------------------------------------------------------------------------
    def lexical(self, rel: str) -> str:
        """The host path of ``rel`` under the data root, without resolving (for messages)."""
        return os.path.join(self.host, rel)

    def host_of(self, rel: str, follow_last: bool = True) -> str:
        """``rel`` (inside the data root) resolved inside the evidence root."""
        try:
            return self._resolve(rel, follow_last)
        except RootEscape as exc:
            raise _Bad(self.lexical(rel), f"leads out of the evidence root: refused ({exc})") from None
        except OSError as exc:
            raise _Bad(self.lexical(rel), f"cannot be resolved: {exc.strerror or exc}") from None

    def _resolve(self, rel: str, follow_last: bool) -> str:
        """What :meth:`Root.resolve` gives for ``rel``, one ``lstat`` per call: the directory
        part is resolved once per directory (a store holds thousands of files in a few
        thousand directories). A symlink met on the way takes :meth:`Root.resolve` itself."""
        parent, _, name = rel.rpartition("/")
        if name in ("", ".", "..") or any(p in ("", ".", "..") for p in parent.split("/") if parent):
            return self.root.resolve(self.inside.rstrip("/") + "/" + rel, follow_last=follow_last)
        base = self._dir(parent) if parent else self.host
        host = os.path.join(base, name)
        try:
            st = fs.lstat(host)
        except FileNotFoundError:
            return host  # as Root.resolve: the rest of a missing path is taken as written
        if follow_last and stat.S_ISLNK(st.st_mode):
            return self.root.resolve(self.inside.rstrip("/") + "/" + rel)
        return host

    def _dir(self, rel: str) -> str:
        host = self._dirs.get(rel)
        if host is None:
            host = self._dirs[rel] = self._resolve(rel, follow_last=True)
        return host

    def read(self, rel: str, expected: str, required: bool = True) -> str | None:
        """A small text file's content, stripped; ``None`` when absent and not required."""
        host = self.host_of(rel)
        try:
            data = _read_bytes(host)
        except FileNotFoundError:
            if required:
                raise _Bad(host, f"missing: expected {expected}") from None
            return None
        except _Bad as bad:
            raise _Bad(host, f"{bad.why}: expected {expected}") from None
        except OSError as exc:
            raise _Bad(host, f"unreadable ({exc.strerror or exc}): expected {expected}") from None
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise _Bad(host, f"not text: expected {expected}") from None

    @property
    def overlay2(self) -> str:
        if self._overlay2 is None:
            self._overlay2 = self.host_of(DRIVER)
        return self._overlay2

    def layer_dir(self, layer_id: str, what: str, named_in: str) -> str:
        """``overlay2/<layer_id>/diff``: a real directory (no link followed at the last two
        steps), so it is always inside the overlay2 directory."""
        if not _LAYER_ID.fullmatch(layer_id):
            raise _Bad(named_in, f"{layer_id!r} is not an overlay2 layer id: expected {what}")
        base = self.overlay2
        for path in (os.path.join(base, layer_id), os.path.join(base, layer_id, "diff")):
            try:
                st = fs.lstat(path)
            except FileNotFoundError:
                raise _Bad(path, f"missing: expected {what} (named in {named_in})") from None
            except OSError as exc:
                raise _Bad(path, f"unreadable ({exc.strerror or exc}): expected {what}") from None
            if not stat.S_ISDIR(st.st_mode):
                kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                raise _Bad(path, f"{kind}: expected {what} as a real directory; refused")
        return os.path.join(base, layer_id, "diff")

    def link_of(self, layer_id: str) -> str | None:
        """The layer's l/ short name (``overlay2/<id>/link``), if readable."""
        try:
            value = self.read(f"{DRIVER}/{layer_id}/link", "the layer's l/ short name", required=False)
        except _Bad:
            return None
        return value if value and _SHORT.fullmatch(value) else None

    # images --------------------------------------------------------------------------------
    def image_names(self) -> tuple[dict[str, list[str]], Broken | None]:
        """image id -> its references (``repo:tag``, ``repo@digest``) from repositories.json."""
        rel = f"image/{DRIVER}/repositories.json"
        try:
            text = self.read(rel, "Docker's image references", required=False)
            if text is None:
                return {}, None
            data = json.loads(text)
            repos = data.get("Repositories") if isinstance(data, dict) else None
            if not isinstance(repos, dict):
                raise ValueError("no \"Repositories\" object")
        except _Bad as bad:
            return {}, Broken(ENGINE, bad.where, f"{bad.why}; image names unknown")
        except (ValueError, RecursionError) as exc:
            return {}, Broken(ENGINE, self.lexical(rel), f"not valid ({exc}): expected "
                                                         f"{{\"Repositories\": {{repo: {{ref: id}}}}}}; "
                                                         f"image names unknown")
        names: dict[str, list[str]] = {}
        for refs in repos.values():
            if isinstance(refs, dict):
                for ref, image_id in refs.items():
                    if isinstance(ref, str) and isinstance(image_id, str):
                        names.setdefault(image_id, []).append(ref)
        return names, None

    # containers ----------------------------------------------------------------------------
    def container(self, entry: str, names: dict[str, list[str]]) -> Iterator[Container | Broken]:
        cdir = self.host_of(f"containers/{entry}")
        if not fs.isdir(cdir):
            raise _Bad(cdir, "not a directory: expected a container's directory")
        rel = f"containers/{entry}/config.v2.json"
        cfg_host = self.host_of(rel)
        if not fs.lexists(cfg_host):
            old = " (there is a config.json: a Docker < 1.10 layout, not read)" if fs.lexists(
                os.path.join(cdir, "config.json")) else ""
            raise _Bad(cfg_host, f"missing: expected the container's config.v2.json{old}")
        text = self.read(rel, "the container's configuration (JSON)")
        if not text:
            raise _Bad(cfg_host, "empty: expected the container's configuration (JSON)")
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise _Bad(cfg_host, f"not valid JSON ({exc}): expected the container's configuration; "
                                 f"truncated or overwritten?") from None
        if not isinstance(config, dict):
            raise _Bad(cfg_host, "not a JSON object: expected the container's configuration")

        def field(key: str, kind: type, required: bool = True):
            value = config.get(key)
            if value is None and not required:
                return None
            if not isinstance(value, kind):
                got = "missing" if key not in config else f"a {type(value).__name__}"
                raise _Bad(cfg_host, f"\"{key}\" is {got}: expected a {kind.__name__}")
            return value

        cid = field("ID", str)
        if not _HEX64.fullmatch(cid):
            raise _Bad(cfg_host, f"\"ID\" {cid!r} is not a container id (64 hex digits)")
        warnings: list[Broken] = []
        if cid != entry:
            warnings.append(Broken(ENGINE, cfg_host, f"\"ID\" {cid} differs from its directory "
                                                     f"name {entry}; the ID is used for layerdb"))
        name = field("Name", str)
        driver = field("Driver", str)
        if driver != DRIVER and driver not in SNAPSHOTTERS:
            raise _Bad(cfg_host, f"storage driver {driver!r}: only {DRIVER} and the containerd "
                                 f"snapshotter {', '.join(SNAPSHOTTERS)} are read here")
        state = field("State", dict)
        image_id = field("Image", str, required=False)
        inner = config.get("Config")
        typed = inner.get("Image") if isinstance(inner, dict) else None
        created = field("Created", str, required=False)
        names_out = [name[1:] if name.startswith("/") else name] if name else []

        yield from warnings
        if driver in SNAPSHOTTERS:
            from ovforensics.stores.containerd import SnapshotError

            try:
                _host, upper, lowers = self.snapshots().stack(self.namespace, cid, image_id)
            except SnapshotError as exc:
                raise _Bad(exc.where, f"container {cid[:12]} ({', '.join(names_out) or 'no name'}), "
                                      f"storage driver {driver}: {exc.why}") from None
            names = self.containerd_image_names()
        else:
            upper, lowers, stack_warnings = self.stack(cid)
            yield from stack_warnings
        exit_code = state.get("ExitCode")
        yield Container(
            engine=ENGINE,
            id=cid,
            names=names_out,
            image=_image_name(image_id, typed if isinstance(typed, str) else None, names),
            state=_state(state),
            created=created,
            store=self.host,
            upper=upper,
            lowers=lowers,
            image_id=image_id or None,
            exit_code=exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None,
            started=_time(state.get("StartedAt")),
            finished=_time(state.get("FinishedAt")),
        )

    # the stack -----------------------------------------------------------------------------
    def stack(self, cid: str) -> tuple[LayerInfo, list[LayerInfo], list[Broken]]:
        mounts = f"image/{DRIVER}/layerdb/mounts/{cid}"
        mdir = self.host_of(mounts)
        if not fs.isdir(mdir):
            raise _Bad(mdir, "missing: expected the container's layerdb mount entry "
                             "(mount-id, init-id, parent)")
        mount_id = self.read(f"{mounts}/mount-id", "the id of the container's overlay2 directory "
                                                   "(its upperdir)")
        where_mount_id = self.lexical(f"{mounts}/mount-id")
        upper = LayerInfo(role="upper", id=mount_id, link=None,
                          dir=self.layer_dir(mount_id, "the container's upperdir", where_mount_id))
        upper.link = self.link_of(mount_id)

        warnings: list[Broken] = []
        known: dict[str, LayerInfo] = {}
        try:
            from_layerdb = self._layerdb_lowers(mounts, known)
        except _Bad as bad:
            from_layerdb, layerdb_bad = None, bad
        else:
            layerdb_bad = None
        try:
            from_lower = self._lower_file(mount_id, known)
        except _Bad as bad:
            from_lower, lower_bad = None, bad
        else:
            lower_bad = None

        if from_layerdb is None and from_lower is None:
            if lower_bad is not None:  # both sources failed: say so in the one record
                raise _Bad(layerdb_bad.where, f"{layerdb_bad.why}; and {lower_bad.where}: "
                                              f"{lower_bad.why}")
            raise layerdb_bad
        if lower_bad is not None:
            warnings.append(Broken(ENGINE, lower_bad.where, f"{lower_bad.why}; the lower layers "
                                                            f"are taken from layerdb instead"))
        if from_lower is None:
            return upper, from_layerdb, warnings
        lower_file = self.lexical(f"{DRIVER}/{mount_id}/lower")
        if layerdb_bad is not None:
            warnings.append(Broken(ENGINE, layerdb_bad.where,
                                   f"{layerdb_bad.why}; the lower layers are taken from {lower_file}"))
        lower_ids = [info.id for info in from_lower]
        if from_layerdb is not None and [info.id for info in from_layerdb] != lower_ids:
            warnings.append(Broken(
                ENGINE, lower_file,
                f"lists the lowers {_short_ids(lower_ids)} but layerdb ({self.lexical(mounts)}) "
                f"gives {_short_ids([i.id for i in from_layerdb])}; using the lower file (what "
                f"the kernel mounted), ids matched by directory"))
        return upper, from_lower, warnings

    def _layerdb_lowers(self, mounts: str, known: dict[str, LayerInfo]) -> list[LayerInfo]:
        """init, then the image layers top..bottom, from layerdb; fills ``known`` as it goes."""
        lowers: list[LayerInfo] = []
        init_id = self.read(f"{mounts}/init-id", "the id of the container's init layer")
        init = LayerInfo(role="init", id=init_id, link=None, dir=self.layer_dir(
            init_id, "the container's init layer", self.lexical(f"{mounts}/init-id")))
        init.link = self.link_of(init_id)
        known[init_id] = init
        lowers.append(init)

        parent_rel = f"{mounts}/parent"
        chain = self.read(parent_rel, "the chain id of the image's top layer", required=False)
        image = self._image_layers(chain, parent_rel) if chain else []
        for info in image:
            known[info.id] = info
        return lowers + image

    def _image_layers(self, chain: str, parent_rel: str) -> list[LayerInfo]:
        """The image's layers top..bottom from its top chain id, read once per image: the
        containers of a host mostly share a few images (500 containers of one image read its
        layerdb once, not 500 times). Copies are returned, so no container shares a record."""
        cached = self._chains.get(chain)
        if cached is None:
            cached = self._chains[chain] = self._read_chain(chain, parent_rel)
        return [dataclasses.replace(info) for info in cached]

    def _read_chain(self, chain: str, parent_rel: str) -> list[LayerInfo]:
        image: list[LayerInfo] = []
        named_in = "the chain id of the image's top layer"
        seen: set[str] = set()
        while chain:
            match = _CHAIN.fullmatch(chain)
            if not match:
                raise _Bad(self.lexical(parent_rel), f"{chain[:80]!r}: expected {named_in} "
                                                     f"(sha256:<64 hex digits>)")
            hexid = match.group(1)
            if hexid in seen or len(seen) >= MAX_LAYERS:
                raise _Bad(self.lexical(parent_rel), f"{chain}: the layer chain loops")
            seen.add(hexid)
            ldir = f"image/{DRIVER}/layerdb/sha256/{hexid}"
            if not fs.isdir(self.host_of(ldir)):
                raise _Bad(self.lexical(ldir), f"missing: expected the layerdb entry of {chain} "
                                               f"(named in {self.lexical(parent_rel)})")
            cache_id = self.read(f"{ldir}/cache-id", "the layer's overlay2 directory id")
            diff_id = self.read(f"{ldir}/diff", "the layer's diff id", required=False) or None
            if diff_id is not None and not _CHAIN.fullmatch(diff_id):
                raise _Bad(self.lexical(f"{ldir}/diff"), f"{diff_id[:80]!r}: expected the layer's "
                                                         f"diff id (sha256:<64 hex digits>)")
            info = LayerInfo(role="image", id=cache_id, diff_id=diff_id, chain_id=chain,
                             dir=self.layer_dir(cache_id, f"the content of image layer {chain}",
                                                self.lexical(f"{ldir}/cache-id")))
            info.link = self.link_of(cache_id)
            image.append(info)
            parent_rel, named_in = f"{ldir}/parent", "the chain id of the layer below"
            chain = self.read(parent_rel, named_in, required=False)
        for position, info in enumerate(image):
            info.image_index = len(image) - 1 - position
        return image

    def _lower_file(self, mount_id: str, known: dict[str, LayerInfo]) -> list[LayerInfo] | None:
        """The stack as ``overlay2/<mount-id>/lower`` gives it (None when there is no such file)."""
        rel = f"{DRIVER}/{mount_id}/lower"
        text = self.read(rel, "the l/ short names of the container's lowers", required=False)
        if text is None:
            return None
        where = self.lexical(rel)
        if not text:
            return []
        by_link = {info.link: layer_id for layer_id, info in known.items() if info.link}
        lowers = []
        for entry in text.split(":"):
            short = entry[2:] if entry.startswith("l/") else None
            if short is None or not _SHORT.fullmatch(short):
                raise _Bad(where, f"entry {entry[:120]!r}: expected l/<short name>; refused")
            layer_id = self._follow_short(short, where) or by_link.get(short)
            if layer_id is None:
                raise _Bad(self.lexical(f"{DRIVER}/l/{short}"), f"missing, and no known layer has "
                                                               f"the link {short} (named in {where})")
            info = known.get(layer_id)
            if info is None:
                info = LayerInfo(role="init" if layer_id.endswith("-init") else "image", id=layer_id,
                                 dir=self.layer_dir(layer_id, f"the layer {entry}", where))
                info.link = self.link_of(layer_id)
            lowers.append(info)
        return lowers

    def _follow_short(self, short: str, named_in: str) -> str | None:
        """The layer id an ``l/`` link names (read once per link: image layers are shared)."""
        if short not in self._shorts:
            self._shorts[short] = self._read_short(short, named_in)
        return self._shorts[short]

    def _read_short(self, short: str, named_in: str) -> str | None:
        """The layer id an ``l/`` link names: its target must be ``../<id>/diff`` inside overlay2."""
        rel = f"{DRIVER}/l/{short}"
        link = self.host_of(rel, follow_last=False)
        try:
            st = fs.lstat(link)
        except FileNotFoundError:
            return None
        if not stat.S_ISLNK(st.st_mode):
            raise _Bad(link, f"not a symlink: expected a link to ../<id>/diff (named in {named_in})")
        target = fs.readlink(link)
        try:
            resolved = self.root.resolve(target, base=self.root.inside(os.path.dirname(link)))
        except RootEscape:
            raise _Bad(link, f"points to {target!r}, out of the evidence root: refused "
                             f"(named in {named_in})") from None
        except OSError as exc:
            raise _Bad(link, f"points to {target!r}, which cannot be resolved "
                             f"({exc.strerror or exc}) (named in {named_in})") from None
        layer_dir, leaf = os.path.split(resolved)
        layer_id = os.path.basename(layer_dir)
        if leaf != "diff" or os.path.dirname(layer_dir) != self.overlay2 or not _LAYER_ID.fullmatch(layer_id):
            raise _Bad(link, f"points to {target!r} ({resolved}), not to a layer's diff directory "
                             f"in {self.overlay2}: refused (named in {named_in})")
        return layer_id


# -- helpers -------------------------------------------------------------------------------
def _state(state: dict) -> str:
    """``docker inspect``'s ``.State.Status``, computed as moby does (config.v2.json keeps only
    the flags)."""
    status = state.get("Status")
    if isinstance(status, str) and status:
        return status
    if state.get("Running"):
        if state.get("Paused"):
            return "paused"
        if state.get("Restarting"):
            return "restarting"
        return "running"
    if state.get("RemovalInProgress"):
        return "removing"
    if state.get("Dead"):
        return "dead"
    started = state.get("StartedAt")
    if not isinstance(started, str) or not started or started.startswith(_ZERO_TIME[:10]):
        return "created"
    return "exited"


def _image_name(image_id: str | None, typed: str | None, names: dict[str, list[str]]) -> str | None:
    """The image's ``repo:tag`` if repositories.json knows one; else what the user typed
    (``Config.Image``) unless that name now points at another image; else the image id."""
    refs = names.get(image_id or "", [])
    if typed:
        for candidate in (typed, f"{typed}:latest"):
            if candidate in refs:
                return candidate
    tags = sorted(r for r in refs if "@" not in r) or sorted(refs)
    if tags:
        return tags[0]
    if typed and image_id and re.fullmatch(r"(sha256:)?[0-9a-f]{6,64}", typed) and \
            image_id.removeprefix("sha256:").startswith(typed.removeprefix("sha256:")):
        return image_id  # run by (a prefix of) the id: the full id says more
    if typed:
        # a name that repositories.json now gives to another image would mislead: use the id
        retagged = any(typed in other or f"{typed}:latest" in other
                       for other_id, other in names.items() if other_id != image_id)
        if not retagged:
            return typed
    return image_id or typed


def _time(value) -> str | None:
    """A State time as Docker stored it; Go's zero time (never happened) is None."""
    if not isinstance(value, str) or not value or value.startswith(_ZERO_TIME[:10]):
        return None
    return value


def familiar(ref: str) -> str:
    """A reference as the docker CLI shows it: ``docker.io/library/x:1`` -> ``x:1``,
    ``docker.io/ovf/x:1`` -> ``ovf/x:1``; other registries keep their name."""
    if ref.startswith("docker.io/library/") and "/" not in ref[len("docker.io/library/"):]:
        return ref[len("docker.io/library/"):]
    return ref.removeprefix("docker.io/")


def _short_ids(ids: list[str | None]) -> str:
    return "[" + ", ".join((i or "?")[:12] + ("-init" if i and i.endswith("-init") else "")
                           for i in ids) + "]"
