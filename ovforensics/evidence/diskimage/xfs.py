"""XFS read from a byte source (a disk image, a partition of one), never mounted.

Pure Python, from the on-disk format (the kernel's fs/xfs/libxfs/xfs_format.h, xfs_da_format.h
and the "XFS Algorithms & Data Structures" book): the superblock, inodes of version 2 and 3
(v4 and v5 filesystems), their data and attribute forks in every format (device, local,
extents, B+tree), directories in every form (short form in the inode, single block, leaf and
node: the data blocks below 32 GiB are read linearly, the hash index is not needed), symlinks
(in the inode and in remote blocks), extended attributes (short form, leaf and node attribute
blocks, remote values; ``user.``, ``trusted.``, ``security.``, and the POSIX ACLs XFS keeps as
``trusted.SGI_ACL_*``, given as the kernel lists them to root: both as they are and as
``system.posix_acl_*`` in the kernel's xattr format),
nanosecond times (and the 64-bit "bigtime" ones), 32-bit owners, and device numbers (XFS keeps
its own 14:18 encoding: a 300:700 device is never a 0/0 whiteout).

Not read: the log. An image whose log was not cleanly written back reads as the kernel reads it
with ``norecovery``. Realtime files are refused one by one (their data is on another device).

Why not the libyal binding (libfsxfs-python): it shares libfsext's name handling (a name that is
not UTF-8 is refused; a container may make one and it is evidence).

Every read is bounded: a damaged image raises :class:`XfsError` (naming what is wrong) for the
entry concerned, never loops (B+tree depth, attribute block chains) nor allocates more than the
entry's own size.
"""
from __future__ import annotations

import errno
import io
import os
import stat
import struct
from typing import BinaryIO

from ovforensics.evidence.diskimage.ext4 import ExtentFile, Ext4Error, Source

MAGIC = b"XFSB"
INODE_MAGIC = 0x494E  # "IN"
FMT_DEV, FMT_LOCAL, FMT_EXTENTS, FMT_BTREE = 0, 1, 2, 3
DIFLAG_REALTIME = 0x1
DIFLAG2_BIGTIME = 0x8
DIFLAG2_NREXT64 = 0x10
INCOMPAT_FTYPE = 0x1  # v5
VERSION2_FTYPE = 0x200  # v4's features2
LEAF_OFFSET = 1 << 35  # directory data blocks sit below 32 GiB of the directory's offsets
BIGTIME_EPOCH_OFFSET = 1 << 31
MAX_DEPTH = 8
MAX_DIR_BYTES = 1 << 30
MAX_XATTR_BYTES = 1 << 20
MAX_LINK = 1024  # XFS_SYMLINK_MAXLEN
MAX_ATTR_BLOCKS = 1 << 16
ATTR_LOCAL, ATTR_ROOT, ATTR_SECURE, ATTR_PARENT, ATTR_INCOMPLETE = 1, 2, 4, 8, 0x80
DIR_DATA_MAGICS = {0x58443242: 16, 0x58443244: 16,  # XD2B, XD2D (v4): header of 16 bytes
                   0x58444233: 64, 0x58444433: 64}  # XDB3, XDD3 (v5): header of 64 bytes
DIR_BLOCK_FORMS = (0x58443242, 0x58444233)  # the single-block form: a leaf tail at its end
ATTR_LEAF = {0xFBEE: 32, 0x3BEE: 80}  # attribute leaf magic: its header's size
DA_NODE = {0xFEBE: 16, 0x3EBE: 64}  # da node magic: its header's size
ACL_NAMES = {b"SGI_ACL_FILE": "system.posix_acl_access",
             b"SGI_ACL_DEFAULT": "system.posix_acl_default"}


class XfsError(Ext4Error):
    """The filesystem (or one entry of it) cannot be read: the message says what and where."""


class Inode:
    __slots__ = ("ino", "mode", "uid", "gid", "size", "nlink", "format", "aformat", "flags",
                 "flags2", "nextents", "anextents", "data", "attr", "atime_ns", "mtime_ns",
                 "ctime_ns", "crtime_ns", "blocks")

    def stat_result(self, rdev: int, bs: int) -> os.stat_result:
        return os.stat_result((self.mode, self.ino, 0, self.nlink, self.uid, self.gid, self.size,
                               self.atime_ns // 10**9, self.mtime_ns // 10**9,
                               self.ctime_ns // 10**9,
                               self.atime_ns / 1e9, self.mtime_ns / 1e9, self.ctime_ns / 1e9,
                               self.atime_ns, self.mtime_ns, self.ctime_ns,
                               bs, self.blocks * (bs // 512), rdev))


def _be(fmt: str, data: bytes, off: int = 0):
    return struct.unpack_from(">" + fmt, data, off)[0]


class Xfs:
    """One XFS filesystem. ``src``: a :class:`Source` of its bytes."""

    def __init__(self, src: Source, label: str):
        self.src, self.label = src, label
        sb = src.pread(512, 0)
        if sb[:4] != MAGIC:
            raise XfsError(f"{label}: no XFS superblock")
        self.bs = _be("I", sb, 4)
        dblocks = _be("Q", sb, 8)
        self.rootino = _be("Q", sb, 56)
        self.agblocks = _be("I", sb, 84)
        self.agcount = _be("I", sb, 88)
        version = _be("H", sb, 100)
        self.version = version & 0xF
        self.isize = _be("H", sb, 104)
        blocklog, self.inopblog, self.agblklog = sb[120], sb[123], sb[124]
        self.dirblklog = sb[192]
        features2 = _be("I", sb, 200)
        incompat = _be("I", sb, 216) if self.version == 5 else 0
        if self.version not in (4, 5) or not 9 <= blocklog <= 16 or self.bs != 1 << blocklog \
                or self.isize not in (256, 512, 1024, 2048) or self.dirblklog > 8 \
                or not self.agblocks or not self.agcount or self.agblocks > 1 << self.agblklog:
            raise XfsError(f"{label}: damaged superblock (version, block, inode or AG size)")
        self.v5 = self.version == 5
        self.ftype = bool(incompat & INCOMPAT_FTYPE) if self.v5 else bool(features2 & VERSION2_FTYPE)
        self.dbs = self.bs << self.dirblklog
        if src.size is None:
            src.size = dblocks * self.bs
        self._dirs: dict[int, dict[bytes, int]] = {}
        self._path_inodes: dict[int, Inode] = {}

    # -- addresses ------------------------------------------------------------------------------
    def linear(self, fsb: int) -> int:
        """A filesystem block number (AG number, block in the AG) as a block from the start."""
        agno, agbno = fsb >> self.agblklog, fsb & ((1 << self.agblklog) - 1)
        if agno >= self.agcount or agbno >= self.agblocks:
            raise XfsError(f"{self.label}: block {fsb} beyond the filesystem")
        return agno * self.agblocks + agbno

    def _block(self, fsb: int, count: int = 1) -> bytes:
        return self.src.pread(count * self.bs, self.linear(fsb) * self.bs)

    # -- inodes ---------------------------------------------------------------------------------
    def inode(self, ino: int) -> Inode:
        shift = self.agblklog + self.inopblog
        agno, agino = ino >> shift, ino & ((1 << shift) - 1)
        agbno, index = agino >> self.inopblog, agino & ((1 << self.inopblog) - 1)
        if agno >= self.agcount or agbno >= self.agblocks:
            raise XfsError(f"{self.label}: inode {ino} out of range")
        raw = self.src.pread(self.isize, (agno * self.agblocks + agbno) * self.bs
                             + index * self.isize)
        if _be("H", raw, 0) != INODE_MAGIC:
            raise XfsError(f"{self.label}: inode {ino}: no inode magic (damaged)")
        n = Inode()
        n.ino = ino
        n.mode = _be("H", raw, 2)
        version, n.format = raw[4], raw[5]
        n.uid, n.gid = _be("I", raw, 8), _be("I", raw, 12)
        n.nlink = _be("H", raw, 6) if version == 1 else _be("I", raw, 16)
        n.size, n.blocks = _be("Q", raw, 56), _be("Q", raw, 64)
        forkoff, n.aformat = raw[82], raw[83]
        n.flags = _be("H", raw, 90)
        n.flags2 = _be("Q", raw, 120) if version == 3 else 0
        if n.flags2 & DIFLAG2_NREXT64:
            n.nextents, n.anextents = _be("Q", raw, 24), _be("I", raw, 76)
        else:
            n.nextents, n.anextents = _be("I", raw, 76), _be("H", raw, 80)
        core = 176 if version == 3 else 100
        split = core + forkoff * 8 if forkoff else self.isize
        if split > self.isize:
            raise XfsError(f"{self.label}: inode {ino}: attribute fork beyond the inode")
        n.data, n.attr = raw[core:split], raw[split:] if forkoff else b""
        n.atime_ns, n.mtime_ns, n.ctime_ns = (self._time(n, raw, off) for off in (32, 40, 48))
        n.crtime_ns = self._time(n, raw, 144) if version == 3 else None
        return n

    @staticmethod
    def _time(n: Inode, raw: bytes, off: int) -> int:
        if n.flags2 & DIFLAG2_BIGTIME:
            return _be("Q", raw, off) - BIGTIME_EPOCH_OFFSET * 10**9
        return _be("i", raw, off) * 10**9 + _be("I", raw, off + 4)

    @staticmethod
    def rdev(n: Inode) -> int:
        """XFS's device encoding (xfs_inode_buf.c): 14 bits of major (9 used) over 18 of minor."""
        if not (stat.S_ISCHR(n.mode) or stat.S_ISBLK(n.mode)) or n.format != FMT_DEV:
            return 0
        dev = _be("I", n.data, 0)
        return os.makedev((dev >> 18) & 0x1FF, dev & 0x3FFFF)

    # -- block maps -----------------------------------------------------------------------------
    def _records(self, data: bytes, count: int, out: list) -> None:
        if 16 * count > len(data):
            raise XfsError(f"{self.label}: more extent records than room for them")
        for i in range(count):
            hi, lo = struct.unpack_from(">QQ", data, 16 * i)
            unwritten = bool(hi >> 63)
            startoff = (hi >> 9) & ((1 << 54) - 1)
            startblock = ((hi & 0x1FF) << 43) | (lo >> 21)
            length = lo & ((1 << 21) - 1)
            out.append((startoff, length, self.linear(startblock), unwritten))

    def _btree(self, fsb: int, depth_left: int, out: list) -> None:
        hdr = 72 if self.v5 else 24
        block = self._block(fsb)
        if block[:4] not in (b"BMA3", b"BMAP"):
            raise XfsError(f"{self.label}: damaged block map B+tree block {fsb}")
        level, numrecs = _be("H", block, 4), _be("H", block, 6)
        if level > depth_left:
            raise XfsError(f"{self.label}: block map B+tree deeper than {MAX_DEPTH}")
        if level == 0:
            self._records(block[hdr:], numrecs, out)
            return
        maxrecs = (self.bs - hdr) // 16
        if numrecs > maxrecs:
            raise XfsError(f"{self.label}: damaged block map B+tree block {fsb}")
        for i in range(numrecs):
            self._btree(_be("Q", block, hdr + maxrecs * 8 + 8 * i), level - 1, out)

    def _fork_map(self, fork: bytes, fmt: int, count: int, what: str) -> list:
        """(logical block, blocks, linear block, unwritten) of a fork, sorted."""
        out: list = []
        if fmt == FMT_EXTENTS:
            self._records(fork, count, out)
        elif fmt == FMT_BTREE:
            level, numrecs = _be("H", fork, 0), _be("H", fork, 2)
            maxrecs = (len(fork) - 4) // 16
            if level == 0 or level > MAX_DEPTH or numrecs > maxrecs:
                raise XfsError(f"{self.label}: damaged {what} B+tree root")
            for i in range(numrecs):
                self._btree(_be("Q", fork, 4 + maxrecs * 8 + 8 * i), level - 1, out)
        elif fmt != FMT_LOCAL:
            raise XfsError(f"{self.label}: {what} of unknown format {fmt}")
        return sorted(out)

    def extents(self, n: Inode) -> list:
        if n.flags & DIFLAG_REALTIME:
            raise XfsError(f"{self.label}: inode {n.ino}: a realtime file (its data is on the "
                           "realtime device, not read)")
        return self._fork_map(n.data, n.format, n.nextents, f"inode {n.ino}'s data fork")

    # -- data -----------------------------------------------------------------------------------
    def open(self, n: Inode) -> BinaryIO:
        if n.format == FMT_LOCAL:
            return io.BytesIO(n.data[:n.size])
        return ExtentFile(self, n)

    def readlink(self, n: Inode) -> bytes:
        if n.size > MAX_LINK:
            raise XfsError(f"{self.label}: inode {n.ino}: symlink target of {n.size} bytes")
        if n.format == FMT_LOCAL:
            return n.data[:n.size]
        out = bytearray()
        for _lblock, length, pblock, _unwritten in self.extents(n):
            if length > 8:
                raise XfsError(f"{self.label}: inode {n.ino}: symlink of {length} blocks")
            chunk = self.src.pread(length * self.bs, pblock * self.bs)
            if self.v5:  # one 56-byte header (XSLM) per extent, not per block
                if chunk[:4] != b"XSLM":
                    raise XfsError(f"{self.label}: inode {n.ino}: damaged symlink block")
                chunk = chunk[56:56 + _be("I", chunk, 8)]
            out += chunk
        return bytes(out[:n.size])

    # -- directories ----------------------------------------------------------------------------
    def entries(self, n: Inode) -> dict[bytes, int]:
        """name -> inode of a directory (``.`` and ``..`` left out), names as stored (bytes)."""
        cached = self._dirs.get(n.ino)
        if cached is not None:
            return cached
        if not stat.S_ISDIR(n.mode):
            raise XfsError(f"{self.label}: inode {n.ino}: not a directory", errno.ENOTDIR)
        out: dict[bytes, int] = {}
        if n.format == FMT_LOCAL:
            self._shortform(n, out)
        else:
            if n.size > MAX_DIR_BYTES:
                raise XfsError(f"{self.label}: directory inode {n.ino} of {n.size} bytes")
            fh = ExtentFile(self, n)
            fh.size = LEAF_OFFSET  # the data blocks, whatever the directory's size says
            per = 1 << self.dirblklog
            blocks: set[int] = set()
            for lblock, length, _pblock, _unwritten in fh.map:
                for lb in range(lblock, min(lblock + length, LEAF_OFFSET // self.bs)):
                    blocks.add(lb // per)
                if len(blocks) * self.dbs > MAX_DIR_BYTES:
                    raise XfsError(f"{self.label}: directory inode {n.ino}: too many blocks")
            for db in sorted(blocks):
                fh.seek(db * self.dbs)
                self._data_block(fh.read(self.dbs), n.ino, out)
        if len(self._dirs) > 4096:
            self._dirs.clear()
        self._dirs[n.ino] = out
        return out

    def _shortform(self, n: Inode, out: dict) -> None:
        d = n.data
        count, i8 = d[0], d[1]
        width = 8 if i8 else 4
        off = 2 + width
        for _ in range(count):
            if off + 3 > len(d):
                raise XfsError(f"{self.label}: directory inode {n.ino}: damaged short form")
            namelen = d[off]
            name = d[off + 3:off + 3 + namelen]
            off += 3 + namelen + (1 if self.ftype else 0)
            if len(name) != namelen or off + width > len(d):
                raise XfsError(f"{self.label}: directory inode {n.ino}: damaged short form")
            out[name] = int.from_bytes(d[off:off + width], "big")
            off += width

    def _data_block(self, block: bytes, ino: int, out: dict) -> None:
        magic = _be("I", block, 0) if len(block) >= 4 else 0
        hdr = DIR_DATA_MAGICS.get(magic)
        if hdr is None:
            raise XfsError(f"{self.label}: directory inode {ino}: damaged data block")
        end = len(block)
        if magic in DIR_BLOCK_FORMS:  # count leaf entries (8 bytes each), then the 8-byte tail
            end -= 8 + 8 * _be("I", block, end - 8)
        off = hdr
        extra = 1 if self.ftype else 0
        while off + 8 <= end:
            if _be("H", block, off) == 0xFFFF:  # unused space: its length follows
                length = _be("H", block, off + 2)
                if length < 8 or length % 8:
                    raise XfsError(f"{self.label}: directory inode {ino}: damaged free space")
                off += length
                continue
            child, namelen = _be("Q", block, off), block[off + 8]
            name = block[off + 9:off + 9 + namelen]
            if namelen == 0 or off + 9 + namelen > end:
                raise XfsError(f"{self.label}: directory inode {ino}: damaged entry")
            if name not in (b".", b".."):
                out[name] = child
            off += (8 + 1 + namelen + extra + 2 + 7) & ~7

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
        n = self._dir_inode(self.rootino)
        for i, part in enumerate(parts):
            if part == b"..":
                raise XfsError(f"{path!r}: '..' is not looked up", errno.EINVAL)
            ino = self.entries(n).get(part)
            if ino is None:
                raise FileNotFoundError(errno.ENOENT,
                                        f"{os.fsdecode(path)}: no such file or directory")
            n = self._dir_inode(ino) if i < len(parts) - 1 else self.inode(ino)
        return n

    # -- extended attributes --------------------------------------------------------------------
    def xattrs(self, n: Inode) -> dict[str, bytes]:
        raw: list[tuple[int, bytes, bytes]] = []  # (flags, name, value)
        if not n.attr:
            return {}
        if n.aformat == FMT_LOCAL:
            a = n.attr
            total, count = _be("H", a, 0), a[2]
            off = 4
            for _ in range(count):
                if off + 3 > min(total, len(a)):
                    raise XfsError(f"{self.label}: inode {n.ino}: damaged short-form attributes")
                namelen, valuelen, flags = a[off], a[off + 1], a[off + 2]
                name = a[off + 3:off + 3 + namelen]
                value = a[off + 3 + namelen:off + 3 + namelen + valuelen]
                if len(value) != valuelen:
                    raise XfsError(f"{self.label}: inode {n.ino}: damaged short-form attributes")
                raw.append((flags, name, value))
                off += 3 + namelen + valuelen
        else:
            amap = self._fork_map(n.attr, n.aformat, n.anextents, f"inode {n.ino}'s attr fork")
            if amap:  # an attribute fork in block form with no blocks (its attributes removed)
                self._attr_blocks(n, amap, raw)
        out: dict[str, bytes] = {}
        for flags, name, value in raw:
            if flags & (ATTR_INCOMPLETE | ATTR_PARENT):
                continue  # half written, or a parent pointer (not an xattr anyone lists)
            if flags & ATTR_ROOT and name in ACL_NAMES:  # listed twice, as the kernel does
                out[ACL_NAMES[name]] = _acl(value)
            prefix = "trusted." if flags & ATTR_ROOT else "security." if flags & ATTR_SECURE \
                else "user."
            out[prefix + name.decode("utf-8", "surrogateescape")] = value
        return out

    def _attr_read(self, amap: list, lblock: int, count: int = 1) -> bytes:
        """``count`` blocks of the attribute fork from logical block ``lblock``."""
        out = bytearray()
        for lb in range(lblock, lblock + count):
            for start, length, pblock, unwritten in amap:
                if start <= lb < start + length and not unwritten:
                    out += self.src.pread(self.bs, (pblock + lb - start) * self.bs)
                    break
            else:
                raise XfsError(f"{self.label}: attribute block {lb} not mapped")
        return bytes(out)

    def _attr_blocks(self, n: Inode, amap: list, raw: list) -> None:
        block, seen = self._attr_read(amap, 0), 0
        for _ in range(MAX_DEPTH + 1):  # node blocks: down the leftmost child to a leaf
            magic = _be("H", block, 8)
            if magic not in DA_NODE:
                break
            block = self._attr_read(amap, _be("I", block, DA_NODE[magic] + 4))
        while True:
            magic = _be("H", block, 8)
            if magic not in ATTR_LEAF:
                raise XfsError(f"{self.label}: inode {n.ino}: damaged attribute block")
            self._attr_leaf(n, amap, block, ATTR_LEAF[magic], raw)
            forw, seen = _be("I", block, 0), seen + 1
            if not forw:
                return
            if seen > MAX_ATTR_BLOCKS:
                raise XfsError(f"{self.label}: inode {n.ino}: attribute blocks loop")
            block = self._attr_read(amap, forw)

    def _attr_leaf(self, n: Inode, amap: list, block: bytes, hdr: int, raw: list) -> None:
        count = _be("H", block, 56 if self.v5 else 12)  # right after the block info
        for i in range(count):
            off = hdr + 8 * i
            if off + 8 > len(block):
                raise XfsError(f"{self.label}: inode {n.ino}: damaged attribute leaf")
            nameidx, flags = _be("H", block, off + 4), block[off + 6]
            if flags & ATTR_LOCAL:
                valuelen, namelen = _be("H", block, nameidx), block[nameidx + 2]
                name = block[nameidx + 3:nameidx + 3 + namelen]
                value = block[nameidx + 3 + namelen:nameidx + 3 + namelen + valuelen]
            else:
                valueblk, valuelen = _be("I", block, nameidx), _be("I", block, nameidx + 4)
                namelen = block[nameidx + 8]
                name = block[nameidx + 9:nameidx + 9 + namelen]
                value = self._remote(n, amap, valueblk, valuelen)
            if len(name) != namelen or len(value) != valuelen:
                raise XfsError(f"{self.label}: inode {n.ino}: attribute beyond its block")
            raw.append((flags, name, value))

    def _remote(self, n: Inode, amap: list, lblock: int, length: int) -> bytes:
        if length > MAX_XATTR_BYTES:
            raise XfsError(f"{self.label}: inode {n.ino}: xattr value of {length} bytes")
        if not self.v5:
            return self._attr_read(amap, lblock, (length + self.bs - 1) // self.bs)[:length]
        room = self.bs - 56  # each block: a 56-byte header (XARM), then value bytes
        out = bytearray()
        for i in range((length + room - 1) // room):
            block = self._attr_read(amap, lblock + i)
            if block[:4] != b"XARM":
                raise XfsError(f"{self.label}: inode {n.ino}: damaged remote xattr value")
            out += block[56:56 + min(_be("I", block, 8), room)]
        return bytes(out[:length])


def _acl(value: bytes) -> bytes:
    """XFS's on-disk ACL (big-endian count, then tag, id, perm) in the kernel's xattr form (the
    little-endian posix_acl_xattr: version 2, then tag, perm, id)."""
    count = _be("I", value, 0) if len(value) >= 4 else 0
    out = bytearray(struct.pack("<I", 2))
    for i in range(min(count, (len(value) - 4) // 12)):
        tag, uid, perm = struct.unpack_from(">IIH", value, 4 + 12 * i)
        out += struct.pack("<HHI", tag, perm, uid if tag in (0x02, 0x08) else 0xFFFFFFFF)
    return bytes(out)


class XfsFS:
    """An XFS filesystem as ``evidence/fs.py`` asks questions of one: paths inside it (``str``,
    undecodable bytes as surrogate escapes), answers as ``os`` gives them."""

    def __init__(self, xfs: Xfs, label: str, close=None):
        self.xfs, self.label, self._close = xfs, label, close
        self.kind = "xfs"

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def _inode(self, path: str) -> Inode:
        return self.xfs.lookup(os.fsencode(path))

    def lstat(self, path: str) -> os.stat_result:
        n = self._inode(path)
        return n.stat_result(self.xfs.rdev(n), self.xfs.bs)

    def btime_ns(self, path: str) -> int | None:
        return self._inode(path).crtime_ns

    def listdir(self, path: str) -> list[str]:
        n = self._inode(path)
        if not stat.S_ISDIR(n.mode):
            raise NotADirectoryError(errno.ENOTDIR, f"{path}: not a directory")
        return [os.fsdecode(name) for name in self.xfs.entries(n)]

    def readlink(self, path: str) -> str:
        n = self._inode(path)
        if not stat.S_ISLNK(n.mode):
            raise OSError(errno.EINVAL, f"{path}: not a symbolic link")
        return os.fsdecode(self.xfs.readlink(n))

    def open(self, path: str) -> BinaryIO:
        n = self._inode(path)
        if not stat.S_ISREG(n.mode):
            raise OSError(errno.EINVAL, f"{path}: not a regular file")
        return self.xfs.open(n)

    def xattrs(self, path: str) -> dict[str, bytes]:
        return self.xfs.xattrs(self._inode(path))
