"""Disk images read without mounting them (``--root disk.qcow2``): the image's container
format and partitions (``source``), the ext2/3/4 on-disk format (``ext4``) and its answers as
``evidence/fs.py`` asks them (``extfs``), and XFS (``xfs``, both). docs/diskimage.md says what
is read and refused.
"""
from __future__ import annotations

from ovforensics.evidence.diskimage.ext4 import Ext4, Ext4Error, Source
from ovforensics.evidence.diskimage.extfs import ExtFS
from ovforensics.evidence.diskimage.source import (DiskImageError, Media, Partition, hash_files,
                                                   partitions)
from ovforensics.evidence.diskimage.xfs import Xfs, XfsFS

#: where an engine keeps its store, inside the filesystem that holds it
STORE_DIRS = ("/var/lib/docker", "/var/lib/containers", "/var/lib/containerd",
              "/lib/docker", "/lib/containers", "/lib/containerd",  # a separate /var
              "/docker", "/containers", "/containerd")  # a separate /var/lib
READABLE = ("ext4", "xfs")
REFUSED = {
    "btrfs": "btrfs is not read from an image: mount it read-only (ro,noload where it applies) "
             "and give the directory",
    "lvm": "an LVM physical volume (its logical volumes are numbered after the partitions: "
           "pick one with --partition N)",
}

__all__ = ["DiskImageError", "ExtFS", "Media", "Partition", "XfsFS", "open_filesystem",
           "partitions", "describe", "hash_image"]


def _open(media: Media, part: Partition, label: str) -> ExtFS | XfsFS:
    src = Source(part.media or media, part.offset, part.size)
    try:  # XfsError is an Ext4Error
        fs = XfsFS(Xfs(src, label), label) if part.fs == "xfs" else ExtFS(Ext4(src, label), label)
    except Ext4Error as exc:
        raise DiskImageError(f"{label}: {exc.strerror}") from None
    fs.partition, fs.image_format, fs.image_files = part, media.format, media.files
    return fs


def _holds_store(fs: ExtFS | XfsFS) -> bool:
    import stat

    for where in STORE_DIRS:
        try:
            if stat.S_ISDIR(fs.lstat(where).st_mode):
                return True
        except OSError:
            continue
    return False


def open_filesystem(path: str, partition: int | None = None) -> ExtFS | XfsFS:
    """The filesystem of ``path`` to read: partition ``partition`` (1-based), or the one that
    holds an engine's store, or the only readable one. Raises :class:`DiskImageError`."""
    media = Media(path)
    try:
        parts = partitions(media)
        if partition is not None:
            chosen = [p for p in parts if p.number == partition]
            if not chosen:
                listed = ", ".join(f"{p.number} ({p.fs or 'unknown'}"
                                   f"{', LVM ' + p.volume if p.volume else ''})" for p in parts)
                raise DiskImageError(f"{path}: no partition {partition} (there are: {listed})")
            part = chosen[0]
            if part.fs not in READABLE:
                why = REFUSED.get(part.fs or "", f"no filesystem this tool reads "
                                                  f"({part.fs or 'unknown'})")
                raise DiskImageError(f"{path}: partition {partition}: {why}")
            return _open(media, part, _label(path, part, parts))
        readable = [p for p in parts if p.fs in READABLE]
        if not readable:
            kinds = sorted({p.fs for p in parts if p.fs})
            why = "; ".join(REFUSED[k] for k in kinds if k in REFUSED) or \
                "no ext2/3/4 or XFS filesystem found (btrfs is not read from an image)"
            raise DiskImageError(f"{path}: {why}")
        if len(readable) == 1:
            return _open(media, readable[0], _label(path, readable[0], parts))
        opened = [_open(media, p, _label(path, p, parts)) for p in readable]
        stores = [fs for fs in opened if _holds_store(fs)]
        if len(stores) == 1:
            return stores[0]
        listed = ", ".join(str(fs.partition.number) for fs in (stores or opened))
        raise DiskImageError(f"{path}: several filesystems {'hold a store' if stores else ''} "
                             f"(partitions {listed}): pick one with --partition N")
    except BaseException:
        media.close()
        raise


def _label(path: str, part: Partition, parts: list[Partition]) -> str:
    if part.volume:
        return f"{path} LVM {part.volume} (partition {part.number})"
    return path if part.number == 0 else f"{path} partition {part.number}"


def hash_image(fs, algorithms: tuple[str, ...]) -> list[dict]:
    """Hash every file the image of ``fs`` is made of (kept on ``fs`` for :func:`describe`)."""
    fs.image_hashes = hash_files(getattr(fs, "image_files", []), algorithms)
    return fs.image_hashes


def describe(fs) -> dict:
    """For the run record: the image, its format, the partition and the filesystem, and the
    image's files with their hashes when they were asked for (``--image-hash``)."""
    part = getattr(fs, "partition", None)
    out = {"image_format": getattr(fs, "image_format", None),
           "partition": part.number if part is not None else None,
           "partition_scheme": part.scheme if part is not None else None,
           "filesystem": getattr(fs, "kind", None)}
    if getattr(fs, "image_hashes", None) is not None:
        out["files"] = fs.image_hashes
    return out
