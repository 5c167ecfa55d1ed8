"""ext2/3/4 read from a byte source (a disk image, a partition of one), never mounted.

Pure Python, from the on-disk format (the kernel's Documentation/filesystems/ext4): the
superblock, group descriptors (32- and 64-bit), inodes (their extra fields: nanosecond times,
32-bit uids and gids), extent trees and the old block maps, directory blocks read linearly
(htree index blocks are empty entries there), inline data, extended attributes (in the inode
and in their block; ``user.``, ``trusted.``, ``security.``, ``system.``), device numbers in both
encodings (the old one in ``i_block[0]``, the new one in ``i_block[1]``: a 300:700 device is
never a 0/0 whiteout), fast and slow symlinks.

Why not the libyal binding (libfsext-python): it refuses a name that is not UTF-8 (a container
may make one; it is evidence) and decodes only the old device encoding (a new-encoding device
reads as 0/0, an overlay whiteout). Checked on images ``mkfs.ext4 -d`` made, in
tests/test_diskimage.py.

Every read is bounded: a damaged image raises :class:`Ext4Error` (naming what is wrong) for the
entry concerned, never loops (extent depth, block map depth and symlink hops are capped) nor
allocates more than the entry's own size.
"""
from __future__ import annotations

import io
import os
import stat
import struct
from typing import BinaryIO

MAGIC = 0xEF53
ROOT_INO = 2
INCOMPAT_FILETYPE = 0x2
INCOMPAT_EXTENTS = 0x40
INCOMPAT_64BIT = 0x80
INCOMPAT_INLINE_DATA = 0x8000
EXTENTS_FL = 0x80000
INLINE_DATA_FL = 0x10000000
EA_MAGIC = 0xEA020000
EXTENT_MAGIC = 0xF30A
MAX_DEPTH = 5
MAX_DIR_BYTES = 1 << 30  # a directory larger than this is damage, not a directory
MAX_XATTR_BYTES = 1 << 20

#: xattr name indexes (fs/ext4/xattr.c)
PREFIXES = {1: "user.", 2: "system.posix_acl_access", 3: "system.posix_acl_default",
            4: "trusted.", 6: "security.", 7: "system.", 8: "system.richacl"}


class Ext4Error(OSError):
    """The filesystem (or one entry of it) cannot be read: the message says what and where."""

    def __init__(self, why: str, err: int = 5):  # EIO
        super().__init__(err, why)


class Source:
    """Bytes at offsets: a file-like (``seek``/``read``) from ``base`` on."""

    def __init__(self, fh, base: int = 0, size: int | None = None):
        self.fh, self.base, self.size = fh, base, size

    def pread(self, length: int, offset: int) -> bytes:
        if offset < 0 or length < 0 or (self.size is not None and offset + length > self.size):
            raise Ext4Error(f"read of {length} bytes at {offset}: beyond the filesystem's end")
        self.fh.seek(self.base + offset)
        data = self.fh.read(length)
        if len(data) != length:
            raise Ext4Error(f"short read at {offset} ({len(data)} of {length} bytes): truncated")
        return data


class Inode:
    __slots__ = ("ino", "mode", "uid", "gid", "size", "nlink", "flags", "block", "atime_ns",
                 "mtime_ns", "ctime_ns", "crtime_ns", "file_acl", "raw", "extra", "blocks")

    def stat_result(self, rdev: int) -> os.stat_result:
        return os.stat_result((self.mode, self.ino, 0, self.nlink, self.uid, self.gid, self.size,
                               self.atime_ns // 10**9, self.mtime_ns // 10**9,
                               self.ctime_ns // 10**9,
                               self.atime_ns / 1e9, self.mtime_ns / 1e9, self.ctime_ns / 1e9,
                               self.atime_ns, self.mtime_ns, self.ctime_ns,
                               4096, self.blocks, rdev))


def _time(seconds: int, extra: int | None) -> int:
    """ext4's time: a signed 32-bit second count; with an extra field, 2 more bits of seconds
    (the epoch) and 30 bits of nanoseconds."""
    secs = seconds - (1 << 32) if seconds >= 1 << 31 else seconds
    if extra is None:
        return secs * 10**9
    return (secs + ((extra & 3) << 32)) * 10**9 + (extra >> 2)


class Ext4:
    """One ext filesystem. ``src``: a :class:`Source` of its bytes."""

    def __init__(self, src: Source, label: str):
        self.src, self.label = src, label
        sb = src.pread(1024, 1024)
        if struct.unpack_from("<H", sb, 56)[0] != MAGIC:
            raise Ext4Error(f"{label}: no ext2/3/4 superblock")
        log = struct.unpack_from("<I", sb, 24)[0]
        if log > 6:
            raise Ext4Error(f"{label}: block size 1024<<{log}: damaged superblock")
        self.bs = 1024 << log
        self.first_data_block = struct.unpack_from("<I", sb, 20)[0]
        self.blocks_per_group = struct.unpack_from("<I", sb, 32)[0]
        self.inodes_per_group = struct.unpack_from("<I", sb, 40)[0]
        self.inodes_count = struct.unpack_from("<I", sb, 0)[0]
        rev = struct.unpack_from("<I", sb, 76)[0]
        self.inode_size = struct.unpack_from("<H", sb, 88)[0] if rev >= 1 else 128
        self.incompat = struct.unpack_from("<I", sb, 96)[0]
        blocks = struct.unpack_from("<I", sb, 4)[0]
        self.desc_size = 32
        if self.incompat & INCOMPAT_64BIT:
            self.desc_size = max(32, struct.unpack_from("<H", sb, 254)[0])
            blocks |= struct.unpack_from("<I", sb, 0x150)[0] << 32
        self.blocks_count = blocks
        if not (self.inodes_per_group and self.blocks_per_group) or self.inode_size < 128 \
                or self.inode_size > self.bs:
            raise Ext4Error(f"{label}: damaged superblock (inodes per group, inode size)")
        if src.size is None:
            src.size = blocks * self.bs
        self.groups = (self.inodes_count + self.inodes_per_group - 1) // self.inodes_per_group
        self._tables: dict[int, int] = {}
        self._dirs: dict[int, dict[bytes, int]] = {}
        self._path_inodes: dict[int, Inode] = {}

    # -- inodes ---------------------------------------------------------------------------------
    def _inode_table(self, group: int) -> int:
        table = self._tables.get(group)
        if table is None:
            gdt = (self.first_data_block + 1) * self.bs
            d = self.src.pread(self.desc_size, gdt + group * self.desc_size)
            table = struct.unpack_from("<I", d, 8)[0]
            if self.desc_size >= 64:
                table |= struct.unpack_from("<I", d, 0x28)[0] << 32
            self._tables[group] = table
        return table

    def inode(self, ino: int) -> Inode:
        if not 1 <= ino <= self.inodes_count:
            raise Ext4Error(f"{self.label}: inode {ino} out of range")
        group, index = divmod(ino - 1, self.inodes_per_group)
        raw = self.src.pread(self.inode_size, self._inode_table(group) * self.bs
                             + index * self.inode_size)
        n = Inode()
        n.ino, n.raw = ino, raw
        n.mode = struct.unpack_from("<H", raw, 0)[0]
        n.uid = struct.unpack_from("<H", raw, 2)[0] | struct.unpack_from("<H", raw, 120)[0] << 16
        n.gid = struct.unpack_from("<H", raw, 24)[0] | struct.unpack_from("<H", raw, 122)[0] << 16
        n.size = struct.unpack_from("<I", raw, 4)[0] | struct.unpack_from("<I", raw, 108)[0] << 32
        n.nlink = struct.unpack_from("<H", raw, 26)[0]
        n.flags = struct.unpack_from("<I", raw, 32)[0]
        n.block = raw[40:100]
        n.file_acl = struct.unpack_from("<I", raw, 104)[0] | struct.unpack_from("<H", raw, 118)[0] << 32
        blocks = struct.unpack_from("<I", raw, 28)[0] | struct.unpack_from("<H", raw, 116)[0] << 32
        n.blocks = blocks
        extra = struct.unpack_from("<H", raw, 128)[0] if self.inode_size > 128 else 0
        n.extra = extra

        def field(off: int) -> int | None:
            return struct.unpack_from("<I", raw, off)[0] if extra >= off - 128 + 4 else None

        n.ctime_ns = _time(struct.unpack_from("<I", raw, 12)[0], field(132))
        n.mtime_ns = _time(struct.unpack_from("<I", raw, 16)[0], field(136))
        n.atime_ns = _time(struct.unpack_from("<I", raw, 8)[0], field(140))
        crtime = field(144)
        n.crtime_ns = _time(crtime, field(148)) if crtime is not None else None
        return n

    def rdev(self, n: Inode) -> int:
        """Both encodings (fs/ext4/inode.c): the old in i_block[0], else the new in i_block[1]."""
        if not (stat.S_ISCHR(n.mode) or stat.S_ISBLK(n.mode)):
            return 0
        old, new = struct.unpack_from("<II", n.block, 0)
        if old:
            return os.makedev((old >> 8) & 0xFF, old & 0xFF)
        return os.makedev((new & 0xFFF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xFFF00))

    # -- data -----------------------------------------------------------------------------------
    def _extents(self, node: bytes, depth_left: int, out: list) -> None:
        magic, entries, _max, depth = struct.unpack_from("<HHHH", node, 0)
        if magic != EXTENT_MAGIC or 12 + 12 * entries > len(node):
            raise Ext4Error(f"{self.label}: damaged extent tree")
        if depth > depth_left:
            raise Ext4Error(f"{self.label}: extent tree deeper than {MAX_DEPTH}")
        for i in range(entries):
            off = 12 + 12 * i
            if depth == 0:
                lblock, length, hi, lo = struct.unpack_from("<IHHI", node, off)
                unwritten = length > 32768
                out.append((lblock, length - 32768 if unwritten else length, hi << 32 | lo,
                            unwritten))
            else:
                _lblock, lo, hi = struct.unpack_from("<IIH", node, off)
                self._extents(self.src.pread(self.bs, (hi << 32 | lo) * self.bs), depth - 1, out)

    def _blockmap(self, n: Inode) -> list:
        """The old (ext2/3) block map as extents: 12 direct, then 1-, 2-, 3-level indirect."""
        out: list = []
        per = self.bs // 4
        nblocks = (n.size + self.bs - 1) // self.bs
        ptrs = struct.unpack_from("<15I", n.block, 0)

        def add(lblock: int, pblock: int) -> None:
            if pblock:
                out.append((lblock, 1, pblock, False))

        for i in range(min(12, nblocks)):
            add(i, ptrs[i])

        def walk(pblock: int, level: int, start: int) -> None:
            if not pblock or start >= nblocks:
                return
            table = struct.unpack_from(f"<{per}I", self.src.pread(self.bs, pblock * self.bs))
            span = per ** (level - 1)
            for i, p in enumerate(table):
                lb = start + i * span
                if lb >= nblocks:
                    return
                if level == 1:
                    add(lb, p)
                else:
                    walk(p, level - 1, lb)

        walk(ptrs[12], 1, 12)
        walk(ptrs[13], 2, 12 + per)
        walk(ptrs[14], 3, 12 + per + per * per)
        return out

    def extents(self, n: Inode) -> list:
        if n.flags & EXTENTS_FL:
            out: list = []
            self._extents(n.block, MAX_DEPTH, out)
            return sorted(out)
        return self._blockmap(n)

    def inline(self, n: Inode) -> bytes:
        """Inline data: i_block's 60 bytes, then the ``system.data`` xattr's value."""
        more = self.xattrs(n).get("system.data", b"")
        return (n.block + more)[:n.size] if not stat.S_ISDIR(n.mode) else n.block + more

    def open(self, n: Inode) -> BinaryIO:
        if n.flags & INLINE_DATA_FL:
            return io.BytesIO(self.inline(n))
        return ExtentFile(self, n)

    def read_all(self, n: Inode, limit: int) -> bytes:
        if n.size > limit:
            raise Ext4Error(f"{self.label}: inode {n.ino}: {n.size} bytes, more than {limit}")
        with self.open(n) as fh:
            return fh.read(n.size)

    # -- xattrs ---------------------------------------------------------------------------------
    def _entries(self, data: bytes, start: int, base: int, out: dict) -> None:
        off = start
        while off + 16 <= len(data):
            name_len, index, value_offs, value_inum, value_size = struct.unpack_from(
                "<BBHII", data, off)
            if name_len == 0 and index == 0 and value_offs == 0 and value_inum == 0:
                break  # the end of the entries (four zero bytes)
            name = data[off + 16:off + 16 + name_len]
            off += (16 + name_len + 3) & ~3
            if value_size > MAX_XATTR_BYTES:
                raise Ext4Error(f"{self.label}: xattr value of {value_size} bytes")
            if value_inum:
                value = self.read_all(self.inode(value_inum), MAX_XATTR_BYTES)[:value_size]
            else:
                value = data[base + value_offs:base + value_offs + value_size]
                if len(value) != value_size:
                    raise Ext4Error(f"{self.label}: xattr value beyond its block")
            prefix = PREFIXES.get(index, "")
            text = name.decode("utf-8", "surrogateescape")
            out[prefix + text if index not in (2, 3) else prefix] = value

    def xattrs(self, n: Inode) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        start = 128 + n.extra
        if n.extra and start + 4 <= len(n.raw) and \
                struct.unpack_from("<I", n.raw, start)[0] == EA_MAGIC:
            body = n.raw[start + 4:]
            self._entries(body, 0, 0, out)
        if n.file_acl:
            block = self.src.pread(self.bs, n.file_acl * self.bs)
            if struct.unpack_from("<I", block, 0)[0] != EA_MAGIC:
                raise Ext4Error(f"{self.label}: inode {n.ino}: damaged xattr block")
            self._entries(block, 32, 0, out)
        return out

    # -- directories and names ------------------------------------------------------------------
    def entries(self, n: Inode) -> dict[bytes, int]:
        """name -> inode of a directory (``.`` and ``..`` left out), names as stored (bytes)."""
        cached = self._dirs.get(n.ino)
        if cached is not None:
            return cached
        if not stat.S_ISDIR(n.mode):
            raise Ext4Error(f"{self.label}: inode {n.ino}: not a directory", 20)  # ENOTDIR
        out: dict[bytes, int] = {}
        if n.flags & INLINE_DATA_FL:
            data = self.inline(n)
            self._dirents(data[4:60], out)  # i_block: the parent's inode, then entries
            self._dirents(data[60:], out)
        else:
            if n.size > MAX_DIR_BYTES:
                raise Ext4Error(f"{self.label}: directory inode {n.ino} of {n.size} bytes")
            with self.open(n) as fh:
                while True:
                    block = fh.read(self.bs)
                    if not block:
                        break
                    self._dirents(block, out)
        if len(self._dirs) > 4096:
            self._dirs.clear()
        self._dirs[n.ino] = out
        return out

    def _dirents(self, block: bytes, out: dict) -> None:
        off = 0
        filetype = self.incompat & INCOMPAT_FILETYPE
        while off + 8 <= len(block):
            ino, rec_len, name_len = struct.unpack_from("<IHB" if filetype else "<IHH", block, off)
            if rec_len < 8 or off + rec_len > len(block):
                break  # the rest of the block is damaged (or the htree's fake entries)
            if ino and name_len and 8 + name_len <= rec_len:
                name = block[off + 8:off + 8 + (name_len & 0xFF if filetype else name_len)]
                if name not in (b".", b".."):
                    out[name] = ino
            off += rec_len

    def _dir_inode(self, ino: int) -> Inode:
        """An inode a path goes through, kept: every lookup walks from the root (bounded)."""
        n = self._path_inodes.get(ino)
        if n is None:
            if len(self._path_inodes) > 8192:
                self._path_inodes.clear()
            n = self._path_inodes[ino] = self.inode(ino)
        return n

    def lookup(self, path: bytes) -> Inode:
        """The inode at ``path`` (absolute inside the filesystem), no link followed."""
        parts = [p for p in path.split(b"/") if p not in (b"", b".")]
        n = self._dir_inode(ROOT_INO)
        for i, part in enumerate(parts):
            if part == b"..":
                raise Ext4Error(f"{path!r}: '..' is not looked up", 22)
            ino = self.entries(n).get(part)
            if ino is None:
                raise FileNotFoundError(2,
                                        f"{os.fsdecode(path)}: no such file or directory")
            n = self._dir_inode(ino) if i < len(parts) - 1 else self.inode(ino)
        return n


class ExtentFile(io.RawIOBase):
    """A regular file's (or directory's) bytes through its extents; holes and unwritten extents
    read as zeros."""

    def __init__(self, fs: Ext4, n: Inode):
        self.fs, self.size, self.pos = fs, n.size, 0
        self.map = fs.extents(n)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buf) -> int:
        want = min(len(buf), max(0, self.size - self.pos))
        if want <= 0:
            return 0
        bs = self.fs.bs
        data = bytearray(want)
        start, end = self.pos, self.pos + want
        for lblock, length, pblock, unwritten in self.map:
            e_start, e_end = lblock * bs, (lblock + length) * bs
            lo, hi = max(start, e_start), min(end, e_end)
            if lo >= hi or unwritten:
                continue
            data[lo - start:hi - start] = self.fs.src.pread(hi - lo, pblock * bs + (lo - e_start))
        buf[:want] = data
        self.pos += want
        return want
