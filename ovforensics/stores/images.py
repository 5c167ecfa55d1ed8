"""Images as ordered lists of layers (bottom first), with the commands that made them.

Where an image can come from (:func:`open_image`):

``docker save`` archives (plain, or gzip/zstd compressed as a whole)
    ``manifest.json`` = ``[{"Config", "RepoTags", "Layers"}]``. Docker < 25 writes
    ``<id>/layer.tar`` members (a layer that occurs twice may be a symlink to the other one's
    ``layer.tar``); Docker >= 25 writes an OCI layout inside the archive (``blobs/sha256/...``,
    ``index.json``, ``oci-layout``) and a ``manifest.json`` naming those blobs. Either way the
    ``manifest.json`` paths are taken. A directory holding an unpacked ``docker save`` works too.
OCI image layouts (a directory, or a tar of one)
    ``oci-layout``, ``index.json`` and ``blobs/<alg>/<hex>``; an index entry may itself be an
    index (several platforms): the host's ``linux/<arch>`` is taken, or the only one there is.
Images in a local store, read offline from the engine's files
    Docker overlay2 (``repositories.json`` -> ``imagedb`` config ``rootfs.diff_ids`` -> layerdb
    chain ids -> ``overlay2/<cache-id>/diff``), Podman/CRI-O containers-storage (``images.json``
    -> the top layer -> its ``parent`` chain -> ``overlay/<id>/diff``; the config is the image's
    big-data item ``sha256:<id>``), containerd (``v1/<ns>/images/<name>`` in ``meta.db`` -> the
    manifest and config blobs in the content store -> the committed snapshot whose key is each
    layer's chain id, or, where the image was never unpacked, the layer blobs themselves).

Layers from archives are :class:`~ovforensics.layers.tarlayer.TarLayer` objects (OCI marker rules:
``.wh.NAME``, ``.wh..wh..opq``); a layer inside an archive is read in place through a window
on the archive (a compressed one is decompressed once into an anonymous temporary file, as
``TarLayer`` does): nothing is ever extracted to disk. Layers from stores are
:class:`~ovforensics.layers.layer.DirLayer` objects with kernel rules (the engines store whiteouts as
0/0 devices and opaque directories as xattrs), or fuse rules for a fuse-overlayfs Podman store.

Names are matched the way the engines match them: ``app:1``, ``docker.io/library/app:1`` and
``library/app:1`` are one reference (``latest`` when no tag is given); an unqualified name
also matches Podman's ``localhost/app:1``. A full id, or a unique id prefix, names an image
too. Nothing found, or several different images found, raises :class:`ImageError` with a
one-line message.
"""
from __future__ import annotations

import io
import json
import os
import platform
import re
import stat
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from ovforensics.evidence import safeio
from ovforensics.evidence import storetext
from ovforensics.layers import unpack
from ovforensics.layers.layer import DirLayer, Layer, LayerError
from ovforensics.evidence.rootfs import Root, RootEscape
from ovforensics.layers.tarlayer import HeaderTooLarge, TarLayer, _compression, normalise, open_tar

MAX_JSON = 32 << 20  # manifests and configs are far smaller
_CHUNK = 1 << 20
_DIGEST = re.compile(r"(sha256|sha512):([0-9a-f]{64}|[0-9a-f]{128})")
_HEXID = re.compile(r"(?:sha256:)?([0-9a-f]{4,64})")
ENGINES = ("docker", "podman", "containerd")

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")


class ImageError(Exception):
    """An image that cannot be found or read; the message is one line naming the cause."""


@dataclass
class ImageLayer:
    """One layer of an image. ``index`` 0 is the bottom layer."""

    index: int
    layer: Layer
    diff_id: str | None = None
    digest: str | None = None  # the blob's digest (archives, containerd content)
    media_type: str | None = None
    command: str | None = None  # ``created_by`` of the layer's history entry
    created: str | None = None
    comment: str | None = None
    source: str = ""  # archive member, blob or directory the layer is read from
    id: str | None = None  # the engine's id: Docker cache-id, Podman layer id, snapshot key

    def to_dict(self) -> dict:
        return {"index": self.index, "diff_id": self.diff_id, "digest": self.digest,
                "media_type": self.media_type, "command": self.command, "created": self.created,
                "comment": self.comment, "source": self.source, "id": self.id}


@dataclass
class Image:
    ref: str  # what the user named
    kind: str  # docker-archive, oci-archive, oci-layout, docker-dir, docker, podman, containerd
    location: str  # the archive, layout directory or store
    layers: list[ImageLayer] = field(default_factory=list)  # bottom first
    name: str | None = None  # the image's own name (repo:tag) where known
    id: str | None = None  # the config's digest (``sha256:...``): the image id
    tags: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # the config's history, empty layers too
    namespace: str | None = None  # containerd
    evidence: list[str] = field(default_factory=list)  # never write a report inside these
    xattr_ns: str = "auto"
    warnings: list[str] = field(default_factory=list)
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {"ref": self.ref, "name": self.name, "id": self.id, "kind": self.kind,
                "location": self.location, "tags": list(self.tags), "namespace": self.namespace,
                "layers": len(self.layers)}

    def close(self) -> None:
        while self._closers:
            try:
                self._closers.pop()()
            except OSError:
                pass

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- references ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ref:
    domain: str | None  # None: the reference named no registry
    path: str
    tag: str | None
    digest: str | None


def parse_ref(text: str) -> Ref | None:
    """``[domain/]path[:tag][@digest]`` as the distribution spec reads it; None if malformed."""
    text = text.strip()
    if not text or any(c.isspace() for c in text):
        return None
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            return None
    parts = text.split("/")
    domain = None
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        domain = parts.pop(0)
    last = parts[-1]
    tag = None
    if ":" in last:
        last, tag = last.rsplit(":", 1)
        if not re.fullmatch(r"[\w][\w.-]{0,127}", tag):
            return None
        parts[-1] = last
    if not all(re.fullmatch(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", p) for p in parts):
        return None
    if tag is None and digest is None:
        tag = "latest"
    return Ref(domain, "/".join(parts), tag, digest)


def _full_path(ref: Ref) -> tuple[str, str]:
    domain = ref.domain or "docker.io"
    if domain in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        domain = "docker.io"
        if "/" not in ref.path:
            return domain, "library/" + ref.path
    return domain, ref.path


def ref_matches(query: str, stored: str) -> bool:
    """Does a stored reference (``repositories.json``, ``images.json``, containerd's image
    name, an archive's ``RepoTags``) answer to what the user typed?"""
    q, s = parse_ref(query), parse_ref(stored)
    if q is None or s is None:
        return False
    if q.digest is not None:
        if q.digest != s.digest:
            return False
    elif q.tag != s.tag:
        return False
    if q.domain is not None:
        return _full_path(q) == _full_path(s)
    s_domain, s_path = _full_path(s)
    # unqualified: any registry, as Podman resolves short names (docker.io's library/ implied)
    return s_path == q.path or (s_domain == "docker.io" and s_path == "library/" + q.path)


def _hex_query(query: str) -> str | None:
    m = _HEXID.fullmatch(query.strip())
    return m.group(1) if m else None


# -- history -------------------------------------------------------------------------------------
def _apply_config(image: Image, config: dict) -> list[str]:
    """Set history and commands from an image config; returns its ``rootfs.diff_ids``."""
    history = config.get("history")
    image.history = [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise ImageError(f"{image.location}: the image config has no rootfs.diff_ids list")
    return diff_ids


def _attach_history(image: Image) -> None:
    """The n-th history entry that is not ``empty_layer`` made the n-th layer."""
    made = [h for h in image.history if not h.get("empty_layer")]
    if len(made) != len(image.layers):
        if made:
            image.warnings.append(f"{image.location}: the image history lists {len(made)} layer "
                                  f"commands for {len(image.layers)} layers; commands not shown")
        return
    for layer, entry in zip(image.layers, made):
        for key in ("created_by", "created", "comment"):
            value = entry.get(key)
            if isinstance(value, str):
                setattr(layer, {"created_by": "command"}.get(key, key), value)


def _json(data: bytes, where: str) -> dict | list:
    try:
        return storetext.loads(data)  # bytes that are not UTF-8 kept as surrogate escapes
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ImageError(f"{where}: not valid JSON ({exc})") from None


# -- archives: a tar read in place ---------------------------------------------------------------
class _Window(io.RawIOBase):
    """One member of an archive as a file whose positions are the archive's own (so that a
    :class:`TarLayer` over it can ``pread`` the archive's fd at the offsets tarfile reports).
    Reads stop at the member's end; closing it leaves the archive open."""

    def __init__(self, fh: BinaryIO, start: int, size: int, name: str):
        super().__init__()
        self._fh = fh
        self._start = start
        self._end = start + size
        self._pos = start
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fh.fileno()

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def readinto(self, buf) -> int:
        n = min(len(buf), self._end - self._pos)
        if n <= 0:
            return 0
        data = os.pread(self._fh.fileno(), n, self._pos)
        buf[:len(data)] = data
        self._pos += len(data)
        return len(data)


class _MemberLayer(TarLayer):
    """A layer tar that is a member of another archive, read through a :class:`_Window`."""

    def __init__(self, fh: BinaryIO, start: int, size: int, label: str, index: int = -1):
        self._src = (fh, start, size)
        super().__init__(label, index=index, rules="oci")

    def _open_archive(self) -> BinaryIO:
        fh, start, size = self._src
        try:
            head = os.pread(fh.fileno(), 16, start)
        except OSError as exc:
            raise self._fail(exc.strerror or str(exc)) from None
        self.compression = _compression(head)
        window = _Window(fh, start, size, self.label)
        if self.compression is None:
            return window  # type: ignore[return-value]
        return self._decompress(window)  # type: ignore[arg-type]

    def _why(self, why: str) -> str:
        if self.compression is None:
            fh, start, _ = self._src
            head = os.pread(fh.fileno(), tarfile.BLOCKSIZE, start)
            try:
                tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
            except tarfile.HeaderError:
                return f"not a tar archive ({why})"
            return f"corrupt or truncated tar archive ({why})"
        return super()._why(why)


def _open_evidence_file(path: str) -> BinaryIO:
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        try:
            fd = os.open(path, flags | getattr(os, "O_NOATIME", 0))
        except PermissionError:
            fd = os.open(path, flags)
    except OSError as exc:
        raise ImageError(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ImageError(f"{path}: not a regular file")
    return os.fdopen(fd, "rb")


def _decompressed(raw: BinaryIO, kind: str, label: str) -> BinaryIO:
    """A compressed archive, decompressed once into an anonymous (capped) temporary file."""
    try:
        return unpack.decompress(raw, kind)
    except Exception as exc:
        raise ImageError(f"{label}: {unpack.why(exc, kind)}") from None


class _TarSource:
    """The members of an image archive, by name; regular files read with ``pread``."""

    def __init__(self, path: str):
        self.label = path
        raw = _open_evidence_file(path)
        kind = _compression(os.pread(raw.fileno(), 16, 0))
        if kind is not None:
            try:
                self.fh = _decompressed(raw, kind, path)
            finally:
                raw.close()
        else:
            self.fh = raw
        self.members: dict[tuple[bytes, ...], tarfile.TarInfo] = {}
        try:
            tf = open_tar(self.fh)
            for info in tf:
                name = normalise(info.name.encode("utf-8", "surrogateescape"))
                if name:
                    self.members[name] = info
            tf.members = []
        except HeaderTooLarge as exc:
            self.fh.close()
            raise ImageError(f"{path}: {exc}") from None
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            self.fh.close()
            raise ImageError(f"{path}: not a readable tar archive ({exc})") from None

    def close(self) -> None:
        self.fh.close()

    def _resolve(self, name: str) -> tarfile.TarInfo | None:
        """The regular-file member a name leads to, following symlinks and hard links inside
        the archive only (never more than 40, never out of it)."""
        path = normalise(name.encode("utf-8", "surrogateescape"))
        for _ in range(40):
            if path is None:
                return None
            info = self.members.get(path)
            if info is None:
                return None
            if info.isreg():
                return info
            link = info.linkname.encode("utf-8", "surrogateescape")
            if info.islnk():
                path = normalise(link)
            elif info.issym():
                base = b"" if link.startswith(b"/") else b"/".join(path[:-1])
                parts: list[bytes] = []
                for part in (base + b"/" + link).split(b"/"):
                    if part in (b"", b"."):
                        continue
                    if part == b"..":
                        if not parts:
                            return None
                        parts.pop()
                    else:
                        parts.append(part)
                path = tuple(parts)
            else:
                return None
        return None

    def exists(self, name: str) -> bool:
        return self._resolve(name) is not None

    def read(self, name: str) -> bytes:
        info = self._resolve(name)
        if info is None:
            raise ImageError(f"{self.label}: no member {name!r} (or not a regular file)")
        if info.size > MAX_JSON:
            raise ImageError(f"{self.label}:{name}: larger than {MAX_JSON} bytes")
        data = os.pread(self.fh.fileno(), info.size, info.offset_data)
        if len(data) != info.size:
            raise ImageError(f"{self.label}:{name}: the archive ends inside this member")
        return data

    def layer(self, name: str, index: int) -> Layer:
        info = self._resolve(name)
        if info is None:
            raise ImageError(f"{self.label}: no layer member {name!r}")
        if info.sparse:
            raise ImageError(f"{self.label}:{name}: a sparse member cannot be a layer")
        try:
            return _MemberLayer(self.fh, info.offset_data, info.size, f"{self.label}:{name}", index)
        except LayerError as exc:
            raise ImageError(str(exc)) from None

    def where(self, name: str) -> str:
        return f"{self.label}:{name}"


class _DirSource:
    """The files of an unpacked image (an OCI layout, an unpacked ``docker save``); names are
    resolved inside the directory (a link never leads out of it)."""

    def __init__(self, path: str):
        self.label = path
        self.root = Root(path)

    def close(self) -> None:
        pass

    def _host(self, name: str) -> str:
        try:
            return self.root.resolve("/" + name.lstrip("/"))
        except (RootEscape, OSError) as exc:
            raise ImageError(f"{self.where(name)}: refused ({exc})") from None

    def exists(self, name: str) -> bool:
        try:
            return os.path.isfile(self._host(name))
        except ImageError:
            return False

    def read(self, name: str) -> bytes:
        host = self._host(name)
        try:
            return safeio.read_file(host, limit=MAX_JSON)
        except ValueError:
            raise ImageError(f"{host}: larger than {MAX_JSON} bytes") from None
        except OSError as exc:
            raise ImageError(f"{host}: {exc.strerror or exc}") from None

    def layer(self, name: str, index: int) -> Layer:
        host = self._host(name)
        if not os.path.isfile(host):
            raise ImageError(f"{host}: missing: expected a layer blob")
        try:
            return TarLayer(host, index=index, rules="oci")
        except LayerError as exc:
            raise ImageError(str(exc)) from None

    def where(self, name: str) -> str:
        return os.path.join(self.label, name)


# -- archive formats ----------------------------------------------------------------------------
def _pick(query: str | None, candidates: list[tuple[list[str], list[str], object]], where: str):
    """One of ``candidates`` = [(names, ids, item)]: the one ``query`` names, or the only one."""
    if query is None:
        if len(candidates) == 1:
            return candidates[0][2]
        listed = "; ".join(",".join(n) or (ids[0] if ids else "?") for n, ids, _ in candidates)
        raise ImageError(f"{where}: holds {len(candidates)} images ({listed}): name one with --select")
    found = [c for c in candidates if any(ref_matches(query, n) or n == query for n in c[0])]
    if not found:
        hexq = _hex_query(query)
        if hexq:
            found = [c for c in candidates if any(i.split(":")[-1].startswith(hexq) for i in c[1])]
    if len(found) == 1:
        return found[0][2]
    if not found:
        raise ImageError(f"{where}: no image {query!r} in it (it holds: "
                         f"{'; '.join(','.join(n) or '?' for n, _, _ in candidates) or 'nothing'})")
    raise ImageError(f"{where}: {query!r} is ambiguous ({len(found)} images match)")


def _blob_name(digest: str) -> str:
    m = _DIGEST.fullmatch(digest or "")
    if not m:
        raise ImageError(f"bad digest {str(digest)[:100]!r}: expected sha256:<hex>")
    return f"blobs/{m.group(1)}/{m.group(2)}"


def _docker_manifest(source, image: Image, select: str | None) -> None:
    where = source.where("manifest.json")
    doc = _json(source.read("manifest.json"), where)
    if not isinstance(doc, list) or not doc:
        raise ImageError(f"{where}: expected a list of images")
    candidates = []
    for entry in doc:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list):
            raise ImageError(f"{where}: an entry lacks Config or Layers")
        tags = [t for t in entry.get("RepoTags") or [] if isinstance(t, str)]
        cfg = entry["Config"]
        m = re.search(r"([0-9a-f]{64})(?:\.json)?$", cfg)
        ids = [f"sha256:{m.group(1)}"] if m else []
        candidates.append((tags, ids, entry))
    entry = _pick(select, candidates, source.label)
    image.tags = [t for t in entry.get("RepoTags") or [] if isinstance(t, str)]
    image.name = image.tags[0] if image.tags else None
    cfg_name = entry["Config"]
    m = re.search(r"([0-9a-f]{64})(?:\.json)?$", cfg_name)
    image.id = f"sha256:{m.group(1)}" if m else None
    config = _json(source.read(cfg_name), source.where(cfg_name))
    if not isinstance(config, dict):
        raise ImageError(f"{source.where(cfg_name)}: expected the image config (a JSON object)")
    diff_ids = _apply_config(image, config)
    names = entry["Layers"]
    if len(names) != len(diff_ids):
        raise ImageError(f"{where}: {len(names)} layers but the config has {len(diff_ids)} diff ids")
    for index, (name, diff_id) in enumerate(zip(names, diff_ids)):
        if not isinstance(name, str):
            raise ImageError(f"{where}: layer {index} is not a member name")
        digest = None
        m = re.fullmatch(r"blobs/(sha256)/([0-9a-f]{64})", name)
        if m:
            digest = f"{m.group(1)}:{m.group(2)}"
        image.layers.append(ImageLayer(index=index, layer=source.layer(name, index),
                                       diff_id=diff_id, digest=digest, source=source.where(name)))


def _host_platform() -> tuple[str, str]:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
    return "linux", arch


def _platform_pick(entries: list[dict], where: str) -> dict:
    """From an index's manifests: the host's platform, or the only real one."""
    real = [e for e in entries
            if not (isinstance(e.get("annotations"), dict)
                    and e["annotations"].get("vnd.docker.reference.type") == "attestation-manifest")
            and (e.get("platform") or {}).get("os") != "unknown"]
    if len(real) == 1:
        return real[0]
    osname, arch = _host_platform()
    for e in real:
        p = e.get("platform") or {}
        if p.get("os") == osname and p.get("architecture") == arch:
            return e
    listed = ", ".join(f"{(e.get('platform') or {}).get('os')}/{(e.get('platform') or {}).get('architecture')}"
                       for e in real)
    raise ImageError(f"{where}: an index of several platforms ({listed}) and none is "
                     f"{osname}/{arch}")


def _manifest_from(read_blob: Callable[[str], dict | list], entry: dict, where: str) -> tuple[dict, str]:
    """Follow index entries down to one image manifest: (manifest, its digest)."""
    for _ in range(8):
        digest = entry.get("digest")
        doc = read_blob(digest)
        if not isinstance(doc, dict):
            raise ImageError(f"{where}: blob {digest} is not a JSON object")
        if isinstance(doc.get("manifests"), list) or entry.get("mediaType") in INDEX_TYPES:
            entries = [e for e in doc.get("manifests") or [] if isinstance(e, dict)]
            if not entries:
                raise ImageError(f"{where}: index {digest} lists no manifests")
            entry = _platform_pick(entries, where)
            continue
        return doc, digest
    raise ImageError(f"{where}: indexes nested too deep")


def _oci_names(entry: dict) -> list[str]:
    ann = entry.get("annotations") if isinstance(entry.get("annotations"), dict) else {}
    names = []
    for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
        value = ann.get(key)
        if isinstance(value, str) and value:
            names.append(value)
    return names


def _oci_layout(source, image: Image, select: str | None) -> None:
    where = source.where("index.json")
    index = _json(source.read("index.json"), where)
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ImageError(f"{where}: lists no manifests")
    entries = [e for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)]
    candidates = [(_oci_names(e), [e["digest"]], e) for e in entries]
    entry = _pick(select, candidates, source.label)
    names = _oci_names(entry)
    full = [n for n in names if "/" in n or ":" in n]
    image.tags = full or names
    image.name = image.tags[0] if image.tags else None

    def read_blob(digest: str):
        name = _blob_name(digest)
        return _json(source.read(name), source.where(name))

    manifest, _digest = _manifest_from(read_blob, entry, source.label)
    _from_manifest(image, manifest, read_blob, source.where,
                   lambda digest, i: source.layer(_blob_name(digest), i), source.label)


def _from_manifest(image: Image, manifest: dict, read_blob, where_of, open_blob, where: str) -> None:
    config_ref = manifest.get("config")
    layers = manifest.get("layers")
    if not isinstance(config_ref, dict) or not isinstance(layers, list):
        raise ImageError(f"{where}: the manifest has no config or layers")
    image.id = config_ref.get("digest") if isinstance(config_ref.get("digest"), str) else None
    config = read_blob(image.id)
    if not isinstance(config, dict):
        raise ImageError(f"{where}: the image config is not a JSON object")
    diff_ids = _apply_config(image, config)
    if len(diff_ids) != len(layers):
        raise ImageError(f"{where}: the manifest lists {len(layers)} layers, the config "
                         f"{len(diff_ids)} diff ids")
    for index, (desc, diff_id) in enumerate(zip(layers, diff_ids)):
        if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
            raise ImageError(f"{where}: layer {index} has no digest")
        digest = desc["digest"]
        layer = open_blob(digest, index)
        image.layers.append(ImageLayer(index=index, layer=layer, diff_id=diff_id, digest=digest,
                                       media_type=desc.get("mediaType"),
                                       source=where_of(_blob_name(digest))))


def _open_path(path: str, select: str | None) -> Image:
    is_dir = os.path.isdir(path) and not os.path.islink(path.rstrip("/") or "/")
    source: _TarSource | _DirSource = _DirSource(path) if is_dir else _TarSource(path)
    image = Image(ref=path, kind="", location=path, evidence=[path])
    image._closers.append(source.close)
    try:
        if source.exists("manifest.json"):
            image.kind = "docker-dir" if is_dir else "docker-archive"
            _docker_manifest(source, image, select)
        elif source.exists("index.json"):
            image.kind = "oci-layout" if is_dir else "oci-archive"
            _oci_layout(source, image, select)
        else:
            what = "directory" if is_dir else "archive"
            raise ImageError(f"{path}: neither a docker save {what} (manifest.json) nor an OCI "
                             f"layout (index.json)")
        for item in image.layers:
            image._closers.append(getattr(item.layer, "close", lambda: None))
        _attach_history(image)
    except BaseException:
        for item in image.layers:
            getattr(item.layer, "close", lambda: None)()
        image.close()
        raise
    return image


# -- local stores ----------------------------------------------------------------------------------
@dataclass
class _Candidate:
    engine: str
    names: list[str]
    id: str  # the image id (config digest, or the engine's own id)
    where: str
    open: Callable[[], Image]
    namespace: str | None = None  # containerd's
    all_ids: list[str] = field(default_factory=list)  # every id accepted as a query (else [id])
    target: str | None = None  # containerd: the target digest, the same in every namespace


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
        ids = sorted(safeio.list_dir(content)) if os.path.isdir(content) else []
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
            layer = DirLayer(path, index=index, rules="kernel")
            image.layers.append(ImageLayer(index=index, layer=layer, diff_id=diff_id,
                                           source=path, id=cache_id))
    except docker._Bad as bad:
        raise ImageError(f"{bad.where}: {bad.why}") from None
    except LayerError as exc:
        raise ImageError(str(exc)) from None
    _attach_history(image)
    return image


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
            layer = DirLayer(path, index=index, rules="fuse" if fuse else "kernel")
            diff_id = diff_ids[index] if len(diff_ids) == len(ids) else store.diff_id(lid)
            image.layers.append(ImageLayer(index=index, layer=layer, diff_id=diff_id,
                                           source=path, id=lid))
    except podman._Damaged as exc:
        raise ImageError(f"{exc.where}: {exc.why}") from None
    except LayerError as exc:
        raise ImageError(str(exc)) from None
    _attach_history(image)
    return image


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
    if not os.path.isfile(store.meta_host):
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
                    layer = DirLayer(source, index=index, rules="kernel")
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
    if not os.path.isdir(root):
        raise ImageError(f"--root: {root}: not a directory")
    rootfs = Root(root)
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


def open_image(ref: str, root: str = "/", engine: str | None = None,
               data_root: str | None = None, select: str | None = None,
               namespace: str | None = None) -> Image:
    """An image from an archive or layout directory (a path that exists on this host), or from
    a local store (a name, full id or id prefix). Raises :class:`ImageError`."""
    if engine is None and data_root is None and os.path.lexists(ref):  # an archive on this host
        if os.path.islink(ref.rstrip("/") or "/"):
            raise ImageError(f"{ref}: is a symbolic link; name the real file or directory "
                             "(links are never followed)")
        return _open_path(ref, select)
    if select is not None:
        raise ImageError("--select picks an image inside an archive or OCI layout; "
                         f"{ref!r} is not a path")
    return find_image(ref, root=root, engine=engine, data_root=data_root, namespace=namespace)
