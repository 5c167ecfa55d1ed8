"""A layer that is a directory inside a disk image read without mounting it (``--root
disk.qcow2``): the same entries, markers and records as the directory would give on a mounted
filesystem, read through the image's filesystem (:mod:`ovforensics.evidence.fs`)."""
from __future__ import annotations

import os
import stat
from typing import BinaryIO

from ovforensics.evidence import fs
from ovforensics.layers.deeppath import child
from ovforensics.layers.entry import KIND_BY_FMT, DiskEntry, Entry, LayerError, Path, join


class DiskImageLayer:
    """A directory layer inside an attached disk image (``path`` is an attached path:
    ``disk.qcow2!/var/lib/docker/overlay2/<id>/diff``). Nothing is followed, nothing written."""

    def __init__(self, root: str | bytes, index: int = -1, rules: str = "kernel"):
        found = fs.image_of(root)
        if found is None:
            raise LayerError(f"{os.fsdecode(root)}: not inside an attached disk image")
        self._fs, inside = found
        self._inside = inside.rstrip("/") or "/"
        self.root = os.fsencode(root).rstrip(b"/")
        self.index = index
        self.label = os.fsdecode(self.root)
        self.rules = rules
        self.guess_rules = False  # an image's layers are an engine's, in the engine's form
        self.rules_auto: str | None = None
        self.info = None
        try:
            st = self._fs.lstat(self._inside)
        except OSError as exc:
            raise LayerError(f"{self.label}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise LayerError(f"{self.label}: not a directory")
        self._root_st = st
        self._cache: dict[Path, dict[bytes, Entry] | None] = {}
        self._root: Entry | None = None
        self.errors: list[tuple[bytes, str]] = []

    def _path(self, path: Path) -> str:
        rel = os.fsdecode(join(path)) if path else ""
        return (self._inside.rstrip("/") + "/" + rel) if rel else self._inside

    def physical(self, path: Path) -> bytes:
        return self.root + b"/" + join(path) if path else self.root

    def inside(self, where: bytes) -> bytes:
        if where == self.root:
            return b"/"
        prefix = self.root + b"/"
        return b"/" + where[len(prefix):] if where.startswith(prefix) else b""

    def root_entry(self) -> Entry:
        if self._root is None:
            self._root = DiskEntry(self, (), "dir", self._root_st)
        return self._root

    def listdir(self, path: Path) -> dict[bytes, Entry] | None:
        try:
            return self._cache[path]
        except KeyError:
            pass
        listing = self._cache[path] = self._read_dir(path)
        return listing

    def forget(self, path: Path) -> None:
        self._cache.pop(path, None)

    def _read_dir(self, path: Path) -> dict[bytes, Entry] | None:
        where = self._path(path)
        try:
            st = self._fs.lstat(where)
            if not stat.S_ISDIR(st.st_mode):
                return None
            names = self._fs.listdir(where)
        except OSError as exc:
            self.errors.append((self.physical(path), exc.strerror or str(exc)))
            return None
        out: dict[bytes, Entry] = {}
        for text in sorted(names):
            name = os.fsencode(text)
            try:
                est = self._fs.lstat(where.rstrip("/") + "/" + text)
            except OSError as exc:
                self.errors.append((self.physical(path) + b"/" + name, exc.strerror or str(exc)))
                continue
            kind = KIND_BY_FMT.get(stat.S_IFMT(est.st_mode), "unknown")
            out[name] = DiskEntry(self, child(path, name), kind, est)
        return out

    def btime_ns(self, entry: Entry) -> int | None:
        """Birth time, where the image's filesystem records one (ext4's crtime)."""
        getter = getattr(self._fs, "btime_ns", None)
        try:
            return getter(self._path(entry.path)) if getter is not None else None
        except OSError:
            return None

    def read_target(self, entry: Entry) -> bytes:
        try:
            return os.fsencode(self._fs.readlink(self._path(entry.path)))
        except OSError as exc:
            self.errors.append((self.physical(entry.path), exc.strerror or str(exc)))
            return b""

    def read_xattrs(self, entry: Entry) -> dict[str, bytes]:
        try:
            return dict(self._fs.xattrs(self._path(entry.path)))
        except OSError as exc:
            self.errors.append((self.physical(entry.path), f"xattrs: {exc.strerror or exc}"))
            return {}

    def open(self, entry: Entry) -> BinaryIO:
        if entry.kind != "file":
            raise OSError(f"{os.fsdecode(self.physical(entry.path))}: not a regular file")
        return self._fs.open(self._path(entry.path))
