"""What every engine reader returns: containers and their layer stacks, as typed records."""
from __future__ import annotations

from dataclasses import dataclass, field


class StoreError(Exception):
    """A store file that is missing or damaged; the message names the file and what was expected."""


@dataclass
class LayerInfo:
    """One layer of a container's stack, as the engine knows it.

    ``dir`` is the host path of the layer's real content directory (``.../diff`` or ``.../fs``),
    resolved inside the evidence root, never through an ``l/`` link.
    """

    role: str  # "upper", "init" or "image"
    dir: str
    id: str | None = None  # Docker cache-id, Podman layer id, containerd snapshot key
    diff_id: str | None = None  # sha256:... where known
    chain_id: str | None = None
    link: str | None = None  # the l/ short name, where the engine keeps one
    image_index: int | None = None  # 0 = the image's bottom layer


@dataclass
class Container:
    engine: str  # "docker", "podman", "containerd"
    id: str
    names: list[str]
    image: str | None
    state: str | None
    created: str | None  # ISO 8601 as the engine stored it
    store: str  # host path of the engine's data root
    upper: LayerInfo
    lowers: list[LayerInfo] = field(default_factory=list)  # topmost first: init, then image top..bottom
    namespace: str | None = None  # containerd namespace
    whiteouts: str = "kernel"  # marker rules of this store's layers (fuse-overlayfs: "fuse")
    xattr_ns: str = "auto"
    #: the image id the engine's own CLI shows for this store (docker images / podman images /
    #: ctr images ls or crictl images), where the files say it
    image_id: str | None = None
    exit_code: int | None = None  # of the last run, where the engine's files keep it
    started: str | None = None  # ISO 8601 (UTC), as the engine stored it
    finished: str | None = None
    #: why ``state`` is None (the files do not say), for the analyst
    state_note: str | None = None
    #: paths the engine's own diff leaves out (``podman diff``: its /etc/hosts, /run/.containerenv
    #: ...); ``-f docker`` leaves them out too, to print what the engine prints
    diff_hides: tuple[str, ...] = ()
    #: Kubernetes (containerd's CRI plugin, CRI-O): the pod and the container's name in it;
    #: ``role`` is "sandbox" (the pod's pause container) or "container"
    pod: str | None = None
    pod_namespace: str | None = None
    pod_uid: str | None = None
    container_name: str | None = None
    role: str | None = None


@dataclass
class Broken:
    """A container entry that could not be read: listed as a warning, never fatal."""

    engine: str
    where: str
    why: str
