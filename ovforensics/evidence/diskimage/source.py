"""A disk image file as bytes: raw/dd, qcow2 (its backing files), VMDK, VHD/VHDX, E01; the
partitions on it (MBR with extended partitions, GPT); the filesystem on each (by its magic).

Container formats are read by the libyal bindings (LGPL-3.0, on PyPI: libqcow-python,
libvmdk-python, libvhdi-python, libewf-python); each is imported only when an image of its
format is opened, and a missing one is a one-line error naming the package. Partition tables
and the filesystem magics are read here. Nothing is ever written; the image is opened read-only.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

SECTOR = 512
MAX_PARTITIONS = 128
MAX_EBR = 64  # logical partitions followed in an extended partition chain


class DiskImageError(ValueError):
    """The image cannot be read as asked: one line naming the file and what is wrong."""


@dataclass
class Partition:
    number: int  # 1-based, as sfdisk -l lists them (0: the whole image, no partition table)
    offset: int  # bytes
    size: int
    scheme: str  # "mbr", "gpt", "none"
    type: str  # the table's type (MBR hex byte, GPT type GUID)
    fs: str | None = None  # ext4, xfs, btrfs, lvm, swap, ... (by magic), None unknown
    media: object = None  # an LVM logical volume: its own bytes (offset 0 of them)
    volume: str | None = None  # an LVM logical volume: VG/LV


class Media:
    """The image's bytes as a file-like (``seek``/``read``), whatever its container format."""

    def __init__(self, path: str):
        self.path = path
        backing: list[str] = []
        self.format, self.handle = _open_media(path, backing)
        self.size = self._size()
        self.files = _files(path, self.format, self.handle) + backing

    def _size(self) -> int:
        if self.format == "raw":
            return os.fstat(self.handle.fileno()).st_size
        return int(self.handle.get_media_size())

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence) if self.format == "raw" else \
            self.handle.seek_offset(offset, whence)

    def read(self, n: int = -1) -> bytes:
        return self.handle.read(n) if self.format == "raw" else self.handle.read_buffer(n)

    def pread(self, n: int, offset: int) -> bytes:
        self.seek(offset)
        return self.read(n)

    def close(self) -> None:
        for h in getattr(self, "_parents", []) + [self.handle]:
            try:
                h.close()
            except Exception:  # noqa: BLE001 - closing what was opened read-only
                pass


def _module(name: str, package: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise DiskImageError(f"reading this image needs {package} (pip install {package}, or "
                             "pip install 'ovforensics[disk]')") from None


def _sniff(path: str) -> str:
    with open(path, "rb") as fh:
        head = fh.read(512)
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        tail = b""
        if size >= 512:
            fh.seek(size - 512)
            tail = fh.read(512)
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if head[:4] == b"KDMV" or head.startswith(b"# Disk DescriptorFile"):
        return "vmdk"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if head[:8] == b"conectix" or tail[:8] == b"conectix":
        return "vhd"
    if head[:8] in (b"EVF\x09\x0d\x0a\xff\x00", b"EVF2\x0d\x0a\x81\x00"):
        return "ewf"
    return "raw"


def _open_media(path: str, backing: list):
    fmt = _sniff(path)
    if fmt == "raw":
        return fmt, open(path, "rb")
    try:
        if fmt == "qcow2":
            pyqcow = _module("pyqcow", "libqcow-python")
            h = pyqcow.file()
            h.open(path)
            _qcow_parents(h, path, pyqcow, backing)
        elif fmt == "vmdk":
            pyvmdk = _module("pyvmdk", "libvmdk-python")
            h = pyvmdk.handle()
            h.open(path)
            h.open_extent_data_files()
        elif fmt in ("vhd", "vhdx"):
            pyvhdi = _module("pyvhdi", "libvhdi-python")
            h = pyvhdi.file()
            h.open(path)
        else:
            pyewf = _module("pyewf", "libewf-python")
            h = pyewf.handle()
            h.open(pyewf.glob(path))  # every segment: disk.E01, disk.E02, ...
    except DiskImageError:
        raise
    except (OSError, IOError) as exc:
        raise DiskImageError(f"{path}: cannot open it as {fmt}: {str(exc).splitlines()[0]}") from None
    return fmt, h


def _files(path: str, fmt: str, handle) -> list[str]:
    """The files the image is made of, as found when it was opened: the one named, then its
    extent files (VMDK) or further segments (E01). A qcow2's backing files are added by the
    opening itself."""
    out = [os.path.abspath(path)]
    try:
        if fmt == "vmdk":
            here = os.path.dirname(os.path.abspath(path))
            for i in range(handle.get_number_of_extents()):
                name = handle.get_extent_descriptor(i).get_filename()
                if name:
                    name = os.path.join(here, os.path.basename(os.fsdecode(name)))
                    if name not in out and os.path.isfile(name):
                        out.append(name)
        elif fmt == "ewf":
            import pyewf

            out += [os.path.abspath(p) for p in pyewf.glob(path) if os.path.abspath(p) not in out]
    except (OSError, IOError, AttributeError):
        pass
    return out


def hash_files(files: list[str], algorithms: tuple[str, ...]) -> list[dict]:
    """Each file's digests, read once: ``[{"file": PATH, "size": N, "sha256": HEX}, ...]``."""
    import hashlib

    out = []
    for name in files:
        digests = {a: hashlib.new(a) for a in algorithms}
        size = 0
        try:
            with open(name, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    size += len(chunk)
                    for d in digests.values():
                        d.update(chunk)
        except OSError as exc:
            raise DiskImageError(f"{name}: cannot hash it: {exc.strerror or exc}") from None
        out.append({"file": name, "size": size, **{a: d.hexdigest() for a, d in digests.items()}})
    return out


def _qcow_parents(h, path: str, pyqcow, backing: list, depth: int = 0) -> None:
    """A qcow2 with a backing file: the backing file is looked up beside the image only (a
    relative name; an absolute one by its base name there), never elsewhere on the host."""
    name = h.get_backing_filename()
    if not name:
        return
    if depth > 16:
        raise DiskImageError(f"{path}: more than 16 backing files")
    name = os.fsdecode(name) if isinstance(name, bytes) else name
    here = os.path.dirname(os.path.abspath(path))
    candidate = os.path.join(here, os.path.basename(name) if os.path.isabs(name) else name)
    candidate = os.path.normpath(candidate)
    if os.path.dirname(candidate) != here or not os.path.isfile(candidate):
        raise DiskImageError(f"{path}: its backing file {name!r} is not beside it "
                             f"(looked for {candidate})")
    parent = pyqcow.file()
    parent.open(candidate)
    backing.append(candidate)
    _qcow_parents(parent, candidate, pyqcow, backing, depth + 1)
    h.set_parent(parent)


# -- partitions ---------------------------------------------------------------------------------
def _fs_magic(media, offset: int, size: int) -> str | None:
    def at(off: int, n: int) -> bytes:
        if off + n > size:
            return b""
        return media.pread(n, offset + off)

    if at(1080, 2) == b"\x53\xef":
        return "ext4"
    if at(0, 4) == b"XFSB":
        return "xfs"
    if at(0x10040, 8) == b"_BHRfS_M":
        return "btrfs"
    if at(512, 8) == b"LABELONE" or at(0, 8) == b"LABELONE":
        return "lvm"
    if at(4086, 10) in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "swap"
    if at(0x52, 8) == b"FAT32   " or at(0x36, 5) == b"FAT16" or at(0x36, 5) == b"FAT12":
        return "vfat"
    return None


def partitions(media: Media) -> list[Partition]:
    """The partitions of the image (GPT, else MBR), or the whole image as number 0."""
    mbr = media.pread(SECTOR, 0) if media.size >= SECTOR else b""
    found: list[Partition] = []
    if len(mbr) == SECTOR and mbr[510:512] == b"\x55\xaa":
        entries = [struct.unpack_from("<BBBBBBBBII", mbr, 446 + 16 * i) for i in range(4)]
        if any(e[4] == 0xEE for e in entries):
            found = _gpt(media)
        else:
            found = _mbr(media, entries)
    if not found:
        found = [Partition(0, 0, media.size, "none", "")]
    for p in found:
        p.fs = _fs_magic(media, p.offset, p.size)
    out: list[Partition] = []
    nxt = max(p.number for p in found) + 1  # logical volumes: numbered after the partitions
    for p in found:
        out.append(p)
        if p.fs == "lvm":
            volumes = _logical_volumes(media, p, nxt)
            out += volumes
            nxt += len(volumes)
    return out


class _Window:
    """``size`` bytes of ``media`` from ``offset``, as the file-like libyal's bindings read."""

    def __init__(self, media, offset: int, size: int):
        self.media, self.offset, self.size, self.pos = media, offset, size, 0

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: 0, 1: self.pos, 2: self.size}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def get_size(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n is None or n < 0 else min(n, self.size - self.pos)
        if n <= 0:
            return b""
        data = self.media.pread(n, self.offset + self.pos)
        self.pos += len(data)
        return data


class _Volume:
    """An LVM logical volume's bytes (libvslvm-python), with ``pread`` as :class:`Media` has."""

    def __init__(self, lv):
        self.lv, self.size = lv, int(lv.get_size())

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.lv.seek_offset(offset, whence)

    def read(self, n: int = -1) -> bytes:
        return self.lv.read_buffer(n)

    def pread(self, n: int, offset: int) -> bytes:
        return self.lv.read_buffer_at_offset(n, offset)


def _logical_volumes(media, pv: Partition, first: int) -> list[Partition]:
    """The logical volumes of the volume group on physical volume ``pv``, numbered on from
    ``first`` (libvslvm-python reads the metadata; linear and striped volumes)."""
    pyvslvm = _module("pyvslvm", "libvslvm-python")
    window = _Window(media, pv.offset, pv.size)
    try:
        h = pyvslvm.handle()
        h.open_file_object(window)
        h.open_physical_volume_files_as_file_objects([window])
        vg = h.get_volume_group()
        if vg.number_of_physical_volumes > 1:
            raise DiskImageError(f"{media.path}: LVM volume group {vg.name} spans "
                                 f"{vg.number_of_physical_volumes} physical volumes; only one is "
                                 "read: activate it read-only (vgchange -ay --readonly) and "
                                 "give a mount of the volume")
        out = []
        for i in range(vg.number_of_logical_volumes):
            lv = vg.get_logical_volume(i)
            volume = _Volume(lv)
            part = Partition(first + i, 0, volume.size, "lvm", "", media=volume,
                             volume=f"{vg.name}/{lv.name}")
            try:
                part.fs = _fs_magic(volume, 0, volume.size)
            except (OSError, IOError) as exc:
                part.fs = None
                part.type = f"unreadable: {str(exc).splitlines()[0]}"
            out.append(part)
        return out
    except DiskImageError:
        raise
    except (OSError, IOError) as exc:
        raise DiskImageError(f"{media.path}: LVM physical volume (partition {pv.number}) not "
                             f"read: {str(exc).splitlines()[0]}") from None


def _mbr(media: Media, entries) -> list[Partition]:
    out = []
    for i, e in enumerate(entries):
        kind, start, count = e[4], e[8], e[9]
        if kind == 0 or count == 0:
            continue
        if kind in (0x05, 0x0F, 0x85):
            out += _logical(media, start)
            continue
        out.append(Partition(i + 1, start * SECTOR, count * SECTOR, "mbr", f"{kind:02x}"))
    return [p for p in out if p.offset + p.size <= media.size]


def _logical(media: Media, ext_start: int) -> list[Partition]:
    out, here, number = [], ext_start, 5
    for _ in range(MAX_EBR):
        ebr = media.pread(SECTOR, here * SECTOR)
        if ebr[510:512] != b"\x55\xaa":
            break
        first = struct.unpack_from("<BBBBBBBBII", ebr, 446)
        nxt = struct.unpack_from("<BBBBBBBBII", ebr, 462)
        if first[4] and first[9]:
            out.append(Partition(number, (here + first[8]) * SECTOR, first[9] * SECTOR, "mbr",
                                 f"{first[4]:02x}"))
            number += 1
        if not nxt[4] or not nxt[8]:
            break
        here = ext_start + nxt[8]
    return out


def _gpt(media: Media) -> list[Partition]:
    head = media.pread(SECTOR, SECTOR)
    if head[:8] != b"EFI PART":
        return []
    start_lba, count, esize = struct.unpack_from("<QII", head, 72)
    if not 128 <= esize <= 4096 or count > 4096:
        return []
    table = media.pread(count * esize, start_lba * SECTOR)
    out = []
    for i in range(min(count, MAX_PARTITIONS)):
        e = table[i * esize:(i + 1) * esize]
        if e[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", e, 32)
        guid = _guid(e[:16])
        if last >= first:
            out.append(Partition(i + 1, first * SECTOR, (last - first + 1) * SECTOR, "gpt", guid))
    return [p for p in out if p.offset + p.size <= media.size]


def _guid(raw: bytes) -> str:
    a, b, c = struct.unpack_from("<IHH", raw, 0)
    return f"{a:08x}-{b:04x}-{c:04x}-{raw[8:10].hex()}-{raw[10:16].hex()}"
