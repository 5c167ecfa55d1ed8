"""Images from files: ``docker save`` archives (any Docker) and OCI layouts (a directory or a tar of
one), read in place through windows on the archive; nothing is extracted."""
from __future__ import annotations

import io
import os
import re
import stat
import tarfile
from typing import BinaryIO

from ovforensics.evidence import fs
from ovforensics.evidence.rootfs import Root, RootEscape
from ovforensics.layers import unpack
from ovforensics.layers.layer import Layer, LayerError
from ovforensics.layers.tarlayer import HeaderTooLarge, TarLayer, _compression, normalise, open_tar
from ovforensics.stores.images.model import (Image, ImageError, ImageLayer, MAX_JSON,
    _apply_config, _attach_history, _blob_name, _json, _manifest_from, _pick)


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
    if fs.is_image_path(path):  # inside an attached disk image
        try:
            return fs.open_file(path)
        except OSError as exc:
            raise ImageError(f"{path}: {exc.strerror or exc}") from None
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
            return fs.isfile(self._host(name))
        except ImageError:
            return False

    def read(self, name: str) -> bytes:
        host = self._host(name)
        try:
            return fs.read_file(host, limit=MAX_JSON)
        except ValueError:
            raise ImageError(f"{host}: larger than {MAX_JSON} bytes") from None
        except OSError as exc:
            raise ImageError(f"{host}: {exc.strerror or exc}") from None

    def layer(self, name: str, index: int) -> Layer:
        host = self._host(name)
        if not fs.isfile(host):
            raise ImageError(f"{host}: missing: expected a layer blob")
        try:
            return TarLayer(host, index=index, rules="oci")
        except LayerError as exc:
            raise ImageError(str(exc)) from None

    def where(self, name: str) -> str:
        return os.path.join(self.label, name)


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
    is_dir = fs.isdir(path) and not fs.islink(path.rstrip("/") or "/")
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
