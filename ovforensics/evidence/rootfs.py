"""Re-rooting: resolve paths found inside evidence under ``--root``, never on the analyst's host.

A seized host's files name absolute paths (``/var/lib/docker/overlay2/...``), relative links
(``l/ABC -> ../<id>/diff``) and symlinks that may point anywhere. :class:`Root` resolves every
such path component by component *inside* the root: an absolute symlink target restarts at the
root, ``..`` never climbs above it (refused, not clamped: a path that tries is reported), and
nothing is ever opened outside. With ``Root("/")`` the same code serves a live host.
"""
from __future__ import annotations

import os
import stat

from ovforensics.evidence import fs

MAX_LINKS = 40  # as the kernel's MAXSYMLINKS


class RootEscape(Exception):
    """A path (or a link met on the way) tried to leave the evidence root."""


class Root:
    """The evidence root: ``/`` (a live host), a directory (a mounted image), or a disk image's
    filesystem attached by :func:`open_root` (its paths start ``IMAGE!``)."""

    def __init__(self, root: str = "/"):
        self.image = fs.is_image_path(root)
        self.root = root.rstrip("/") if self.image else os.path.abspath(root)
        self.live = self.root == "/"

    def __repr__(self) -> str:
        return f"Root({self.root!r})"

    def host_path(self, inside: str) -> str:
        """The host path of an already-resolved path inside the root (no link resolution)."""
        inside = "/" + inside.lstrip("/")
        return inside if self.live else self.root + inside if inside != "/" else self.root

    def inside(self, host: str) -> str:
        """The evidence path of a host path under the root (for messages)."""
        if self.live:
            return host
        rel = os.path.relpath(host, self.root)
        return "/" if rel == "." else "/" + rel

    def resolve(self, path: str, base: str = "/", follow_last: bool = True) -> str:
        """Resolve ``path`` (absolute, or relative to ``base``, both inside the root) to a host path.

        Symlinks met on the way are read and followed *inside* the root. Raises
        :class:`RootEscape` when ``..`` or a link would leave the root, and ``OSError`` for a
        loop or a missing component.
        """
        if not path.startswith("/"):
            path = base.rstrip("/") + "/" + path
        todo = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        links = 0
        while todo:
            name = todo.pop(0)
            if name == "..":
                if not done:
                    raise RootEscape(f"{path}: climbs above the root {self.root}")
                done.pop()
                continue
            candidate = self.host_path("/".join(done + [name]))
            try:
                st = fs.lstat(candidate)
            except FileNotFoundError:
                done.append(name)
                done.extend(p for p in todo if p not in ("", "."))
                if ".." in todo:
                    raise RootEscape(f"{path}: '..' after a missing component") from None
                return self.host_path("/".join(done))
            if stat.S_ISLNK(st.st_mode) and (todo or follow_last):
                links += 1
                if links > MAX_LINKS:
                    raise OSError(40, f"{path}: too many levels of symbolic links")
                target = fs.readlink(candidate)
                parts = [p for p in target.split("/") if p not in ("", ".")]
                if target.startswith("/"):
                    done = []
                todo = parts + todo
                continue
            done.append(name)
        return self.host_path("/".join(done))


class RootError(ValueError):
    """``--root`` names nothing that can be read: the message names it and why."""


_OPENED: dict[tuple[str, int | None], str] = {}
_PARTITION: int | None = None  # --partition: which filesystem of a partitioned disk image


_IMAGE_HASH: tuple[str, ...] = ()  # --image-hash: the digests of a disk image's files


def set_partition(number: int | None) -> None:
    global _PARTITION
    _PARTITION = number


def set_image_hash(algorithms: tuple[str, ...]) -> None:
    """``--image-hash``: hash a disk image's files when it is opened (for the run record)."""
    global _IMAGE_HASH
    _IMAGE_HASH = tuple(algorithms)


def open_root(root: str = "/", partition: int | None = None) -> Root:
    """``--root``: a directory (``/`` for a live host) or a disk image file, read without
    mounting it (raw, partitioned, qcow2, VMDK, VHD/VHDX, E01; ext4 or XFS inside; the
    filesystem that holds an engine's store, or ``partition``). Raises :class:`RootError`."""
    if not root:
        raise RootError("--root: the path is empty")
    partition = _PARTITION if partition is None else partition
    try:
        st = os.stat(root)
    except OSError as exc:
        raise RootError(f"--root: {root}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        if partition is not None:
            raise RootError(f"--partition: {root} is a directory, not a disk image")
        if _IMAGE_HASH:
            raise RootError(f"--image-hash: {root} is a directory, not a disk image (hash the "
                            "image it came from)")
        return Root(root)
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISBLK(st.st_mode):
        raise RootError(f"--root: {root}: neither a directory nor a disk image file")
    key = (os.path.abspath(root), partition)
    prefix = _OPENED.get(key)
    if prefix is None:
        from ovforensics.evidence.diskimage import DiskImageError, hash_image, open_filesystem

        try:
            image_fs = open_filesystem(root, partition)
            if _IMAGE_HASH:
                hash_image(image_fs, _IMAGE_HASH)
        except DiskImageError as exc:
            raise RootError(f"--root: {exc}") from None
        prefix = _OPENED[key] = fs.attach(image_fs, root)
    return Root(prefix)
