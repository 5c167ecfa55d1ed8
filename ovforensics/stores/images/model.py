"""Images as ordered lists of layers (bottom first): the types, reference matching, and what every
source shares (configs, manifests, platform choice)."""
from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field
from typing import Callable

from ovforensics.evidence import storetext
from ovforensics.layers.layer import Layer


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
