"""Layers given as tar archives, read in place: no root, no extraction.

Evidence often arrives as ``tar --xattrs`` archives of an overlay upperdir or of a lower layer,
and the project's samples ship as archives because git cannot hold character devices. Extracting
such an archive would need root (devices, ``trusted.*`` xattrs, foreign owners) and would write
attacker-chosen names onto the analyst's disk, so :class:`TarLayer` answers the
:class:`~ovforensics.layers.layer.Layer` questions straight from the archive's headers.

Compression (gzip, zstd; also xz and bzip2, which the standard library reads) is detected from the
magic bytes, never from the file name. A compressed archive is decompressed once, at open, into an
anonymous temporary file in the system temp dir (never next to the evidence), so that reading
member bytes later is a seek instead of a re-decompression; the stream is read in bounded chunks
and the copy is capped (:mod:`ovforensics.layers.unpack`). Extended headers (PAX, GNU long names) are
bounded too (:data:`MAX_EXTENDED`): a larger one is an error naming the member, never read.
"""
from __future__ import annotations

import base64
import bisect
import binascii
import io
import os
import re
import stat
import tarfile
import urllib.parse
from typing import BinaryIO

from ovforensics.ticker import tick
from ovforensics.layers import bigdir
from ovforensics.layers import unpack
from ovforensics.layers.deeppath import DEEP, DeepPath, child
from ovforensics.layers.layer import Entry, EntryError, LayerError, Path, join

_CHUNK = 1 << 20

_KIND_BY_TYPE = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.GNUTYPE_SPARSE: "file",
    tarfile.DIRTYPE: "dir",
    b"D": "dir",  # GNU incremental "dumpdir": a directory whose data lists its names
    tarfile.SYMTYPE: "symlink",
    tarfile.FIFOTYPE: "fifo",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
}
_FMT_BY_KIND = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "fifo": stat.S_IFIFO,
    "char": stat.S_IFCHR,
    "block": stat.S_IFBLK,
}
_MTIME_RE = re.compile(r"(-?)(\d+)(?:\.(\d*))?")


def _b(text: str) -> bytes:
    """Undo tarfile's ``utf-8``/``surrogateescape`` decoding: the exact bytes of the archive."""
    return text.encode("utf-8", "surrogateescape")


def normalise(name: bytes) -> Path | None:
    """Member name to a layer path: no ``./``, ``/`` or ``//``; None if it has a ``..``."""
    parts = tuple(p for p in name.split(b"/") if p and p != b".")
    if b".." in parts:
        return None
    return parts


_MAX_MTIME_DIGITS = 30  # seconds: far past any time a filesystem holds, far below int()'s limit


def _parse_mtime_ns(info: tarfile.TarInfo) -> int:
    """The member's mtime in ns, exact when a PAX ``mtime`` record carries a fraction. Raises
    ValueError/OverflowError for what is no time: ``nan``, ``inf`` (tarfile reads PAX ``mtime``
    as a float), thousands of digits."""
    text = info.pax_headers.get("mtime")
    if text is not None:
        m = _MTIME_RE.fullmatch(text.strip())
        if m:
            sign, whole, frac = m.groups()
            if len(whole) > _MAX_MTIME_DIGITS:
                raise ValueError(f"{len(whole)} digits")
            ns = int(whole) * 1_000_000_000 + int(((frac or "") + "000000000")[:9])
            return -ns if sign else ns
    return int(info.mtime) * 1_000_000_000


def _mtime_ns(info: tarfile.TarInfo) -> int:
    """:func:`_parse_mtime_ns`, with 0 for a value that is no time (noted in the layer's
    ``errors`` when the member is indexed)."""
    try:
        return _parse_mtime_ns(info)
    except (ValueError, OverflowError):
        return 0


def _makedev(major: int, minor: int) -> int:
    """``os.makedev``, for any numbers a header holds (base-256 fields reach 2**63): a number
    the kernel's dev_t cannot hold still gives a distinct, non-zero device, never a 0/0 one."""
    try:
        return os.makedev(major, minor)
    except (OverflowError, ValueError):
        return (abs(major) << 64 | abs(minor)) or 1


def _xattrs(info: tarfile.TarInfo) -> dict[str, bytes]:
    """Xattrs from PAX records ``SCHILY.xattr.NAME`` (GNU tar, Go) and ``LIBARCHIVE.xattr.NAME``."""
    out: dict[str, bytes] = {}
    libarchive: dict[str, bytes] = {}
    for key, value in info.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            # GNU tar escapes '%' and '=' in the name (a PAX keyword ends at the first '=').
            name = key[13:].replace("%3D", "=").replace("%25", "%")
            out[name] = _b(value)
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote(key[17:], errors="surrogateescape")
            try:
                libarchive[name] = base64.b64decode(value + "=" * (-len(value) % 4))
            except (binascii.Error, ValueError):
                continue
    for name, value in libarchive.items():
        out.setdefault(name, value)  # bsdtar writes both; the SCHILY copy is the raw one
    return out


class _Member:
    """What the index keeps of one member: the fields a layer answers with, nothing of
    tarfile's TarInfo (which is dropped as soon as it is read: a million TarInfo objects, their
    PAX dicts and strings, held ~0.9 GB)."""

    __slots__ = ("mode", "uid", "gid", "size", "mtime_ns", "rdev", "target", "offset_data",
                 "sparse", "xattrs")

    def __init__(self, info: tarfile.TarInfo, kind: str):
        self.mode = info.mode & 0o7777
        self.uid, self.gid = info.uid, info.gid
        self.size = info.size
        self.mtime_ns = _mtime_ns(info)
        self.rdev = _makedev(info.devmajor, info.devminor) if kind in ("char", "block") else 0
        self.target = _b(info.linkname) if kind == "symlink" else None
        self.offset_data = info.offset_data
        self.sparse = info.sparse or None
        self.xattrs = _xattrs(info) or None


class _Rec:
    """One name in the archive. ``info`` is the member holding the metadata (for a hard link:
    the member it links to); ``own`` is the member that carries this very name."""

    __slots__ = ("path", "kind", "info", "own", "nlink", "ino")

    def __init__(self, path: Path, kind: str, info, own, ino: int = 0):
        self.path = path
        self.kind = kind
        self.info: _Member | None = info  # None for an implied parent directory
        self.own: _Member | None = own
        self.nlink = 1
        self.ino = ino


class _MemberReader(io.RawIOBase):
    """Read-only, seekable view of one member's bytes, by ``pread`` on the shared archive file
    (so several open members never disturb each other's position). Sparse holes read as zeros."""

    def __init__(self, fh: BinaryIO, segments: list[tuple[int, int, int | None]], size: int,
                 name: str):
        super().__init__()
        self._fh = fh
        self._segs = segments  # (start in member, length, offset in archive or None for a hole)
        self._starts = [s[0] for s in segments]
        self._size = size
        self._pos = 0
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buf) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self._pos >= self._size or not len(buf):
            return 0
        i = bisect.bisect_right(self._starts, self._pos) - 1
        start, length, where = self._segs[i]
        n = min(len(buf), start + length - self._pos, self._size - self._pos)
        if where is None:
            buf[:n] = bytes(n)
        else:
            data = os.pread(self._fh.fileno(), n, where + self._pos - start)
            if not data:
                raise EntryError(f"{self.name}: archive ends inside this member")
            n = len(data)
            buf[:n] = data
        self._pos += n
        return n


def _segments(info: tarfile.TarInfo, name: str) -> list[tuple[int, int, int | None]]:
    """Where the member's bytes are: one run, or (sparse member) data runs between holes."""
    if not info.sparse:
        return [(0, info.size, info.offset_data)]
    segs: list[tuple[int, int, int | None]] = []
    pos = 0
    data = info.offset_data
    for offset, numbytes in info.sparse:
        if numbytes == 0 and 0 <= offset <= info.size:
            continue  # an empty entry: GNU's end marker, or an unused slot of an old GNU header
        if offset < pos or numbytes < 0 or offset + numbytes > info.size:
            raise EntryError(f"{name}: corrupt sparse map in the archive")
        if offset > pos:
            segs.append((pos, offset - pos, None))
        if numbytes:
            segs.append((offset, numbytes, data))
        data += numbytes
        pos = offset + numbytes
    if pos < info.size or not segs:
        segs.append((pos, max(info.size - pos, 0), None))
    return segs


_compression = unpack.compression  # the names images.py and the fuzz harnesses use


class HeaderTooLarge(tarfile.TarError):
    """An extended header (PAX, GNU long name or link) larger than :data:`MAX_EXTENDED`."""


MAX_EXTENDED = 16 << 20  # bytes of one PAX / GNU long-name header: 16 MiB holds any real one
_EXTENDED = {tarfile.XHDTYPE: "PAX extended", tarfile.XGLTYPE: "PAX global",
             tarfile.SOLARIS_XHDTYPE: "Solaris extended", tarfile.GNUTYPE_LONGNAME: "GNU long-name",
             tarfile.GNUTYPE_LONGLINK: "GNU long-link"}


class _BoundedInfo(tarfile.TarInfo):
    """tarfile's TarInfo, refusing an extended header whose size field is past
    :data:`MAX_EXTENDED` before tarfile reads it whole into memory (a 3 KB archive can claim a
    1 TiB PAX header)."""

    def _proc_member(self, tarfile_):
        kind = _EXTENDED.get(self.type)
        if kind is not None and self.size > MAX_EXTENDED:
            raise HeaderTooLarge(
                f"member {_member_after(tarfile_.fileobj, self)}: {kind} header of {self.size} "
                f"bytes at byte {self.offset} (the limit is {MAX_EXTENDED})")
        return super()._proc_member(tarfile_)


def _member_after(fileobj, info: tarfile.TarInfo) -> str:
    """The name of the member an extended header belongs to (its own name if unreadable)."""
    name = _b(info.name)
    try:
        here = fileobj.tell()
        try:
            fileobj.seek(info.offset + tarfile.BLOCKSIZE + info._block(info.size))
            block = fileobj.read(tarfile.BLOCKSIZE)
        finally:
            fileobj.seek(here)
        if len(block) == tarfile.BLOCKSIZE:
            name = _b(tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape").name)
    except (tarfile.HeaderError, OSError, ValueError, OverflowError):
        pass
    return repr(name.decode("utf-8", "backslashreplace"))


def open_tar(fh: BinaryIO) -> tarfile.TarFile:
    """A tarfile reader over ``fh`` with bounded extended headers (names as surrogate escapes)."""
    return tarfile.open(fileobj=fh, mode="r:", encoding="utf-8", errors="surrogateescape",
                        tarinfo=_BoundedInfo)


class _TarNames(bigdir.NameListing):
    """A directory of more than ``bigdir.BIG`` members, listed by name: each entry is made
    from the index when a lookup asks for it (as :class:`bigdir.NameListing` stats a big
    directory's entries on disk), so a million-member directory is never a million Entry
    objects at once."""

    def __init__(self, layer: "TarLayer", path: Path, names):
        super().__init__(layer, path, -1, list(names))

    def _stat(self, name: bytes) -> Entry | None:
        rec = self.layer._recs.get(child(self.path, name))
        return self.layer._entry(rec) if rec is not None else None


class TarLayer:
    """A layer that is a tar archive (plain, gzip or zstd). Read without root, never extracted.

    Member names are kept as bytes exactly as stored; implied parent directories appear as
    ``0755 root:root`` directories with mtime 0; a hard link takes the type and metadata of the
    member it names (a kernel whiteout linked to another is still a char device 0/0) and
    ``nlink`` counts the names sharing it (a directory's, as a filesystem would: 2 + subdirs;
    sizes of directories are 0, of symlinks the target's length, as ``lstat`` says). Members
    that cannot be placed (``..`` in the name, a dangling hard link, a parent that is not a
    directory) are left out and listed in :attr:`errors`; so are members kept with a field no
    filesystem could hold (an mtime of ``nan``, a device number past 32 bits), and what was made
    of it.
    """

    def __init__(self, path: str | bytes | os.PathLike, index: int = -1, rules: str = "oci"):
        self.label = os.fsdecode(os.fspath(path))
        self.index = index
        self.rules = rules
        self.errors: list[tuple[bytes, str]] = []  # (member name, why) for members left out
        self.compression: str | None = None
        self._fh: BinaryIO | None = None
        self._recs: dict[Path, _Rec] = {}
        self._children: dict[Path, dict[bytes, None]] = {(): {}}  # ordered name sets
        self._cache: dict[Path, dict[bytes, Entry] | None] = {}
        self._nodes: dict[Path, Path] = {}  # deep paths, one node each (_canonical)
        self._dirpaths: dict[Path, Path] = {}  # parent paths, one tuple each, while indexing
        self._fh = self._open_archive()
        try:
            self._index()
        except LayerError:
            self.close()
            raise

    # -- opening -------------------------------------------------------------------------------

    def _fail(self, why: str) -> LayerError:
        return LayerError(f"{self.label}: {why}")

    def _open_archive(self) -> BinaryIO:
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        try:
            try:
                fd = os.open(self.label, flags | getattr(os, "O_NOATIME", 0))
            except PermissionError:
                fd = os.open(self.label, flags)  # O_NOATIME needs file ownership or CAP_FOWNER
        except OSError as exc:
            raise self._fail(exc.strerror or str(exc)) from None
        try:
            st = os.fstat(fd)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                raise self._fail("not a regular file")
            self.compression = _compression(os.pread(fd, 16, 0))
            raw = os.fdopen(fd, "rb")
        except OSError as exc:
            os.close(fd)
            raise self._fail(exc.strerror or str(exc)) from None
        except LayerError:
            os.close(fd)
            raise
        if self.compression is None:
            return raw
        try:
            return self._decompress(raw)
        finally:
            raw.close()

    def _decompress(self, raw: BinaryIO) -> BinaryIO:
        try:
            return unpack.decompress(raw, self.compression)
        except Exception as exc:  # zstandard.ZstdError, lzma.LZMAError, EOFError, OSError ...
            raise self._fail(unpack.why(exc, self.compression)) from None

    def _where(self) -> str:
        return f"{self.compression}-compressed " if self.compression else ""

    def _index(self) -> None:
        fh = self._fh
        assert fh is not None
        try:
            tf = open_tar(fh)
            while True:
                info = tf.next()
                if info is None:
                    break
                self._add(info)
                tick("indexing a tar layer", info.name)
                tf.members.clear()  # kept in the index, compactly (_Member)
            end = tf.offset
        except HeaderTooLarge as exc:
            raise self._fail(str(exc)) from None
        except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
            raise self._fail(self._why(str(exc))) from None
        # tarfile stops quietly at a bad or short header after the first one, and at end of file:
        # only a zero block there means the archive really ended.
        block = os.pread(fh.fileno(), tarfile.BLOCKSIZE, end)
        if len(block) < tarfile.BLOCKSIZE:
            raise self._fail(f"truncated {self._where()}tar archive (ends at byte "
                             f"{end + len(block)} without an end-of-archive marker)")
        if block.count(0) != tarfile.BLOCKSIZE:
            raise self._fail(f"corrupt {self._where()}tar archive (bad header at byte {end})")
        tf.members = []  # the index below holds what is needed
        self._finish()
        self._nodes, self._dirpaths = {}, {}  # the index's keys hold what they kept

    def _why(self, why: str) -> str:
        """Name a tarfile error: not a tar at all, a truncated one, or a corrupt one."""
        head = os.pread(self._fh.fileno(), tarfile.BLOCKSIZE, 0)
        try:
            tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            return f"not a {self._where()}tar archive ({why})"
        # tarfile's words for running out of bytes inside a member, or between an extended
        # (PAX, GNU long name) header and the header it extends
        if "unexpected end" in why or why in ("truncated header", "empty header"):
            return f"truncated {self._where()}tar archive ({why})"
        return f"corrupt {self._where()}tar archive ({why})"

    def _add(self, info: tarfile.TarInfo) -> None:
        name = _b(info.name)
        path = normalise(name)
        if path is None:
            self.errors.append((name, "name escapes the archive root ('..')"))
            return
        if len(path) > DEEP:
            path = self._canonical(path)
        elif len(path) > 1:  # share the parent's components with every sibling's path
            parent = self._dirpaths.setdefault(path[:-1], path[:-1])
            path = parent + path[-1:]
        if info.type == tarfile.LNKTYPE:
            link = normalise(_b(info.linkname))
            target = self._recs.get(link) if link is not None else None
            if target is None or target.info is None or target.kind == "dir":
                self.errors.append((name, f"hard link to {_b(info.linkname)!r}, "
                                          "which is no earlier non-directory member"))
                return
            rec = _Rec(path, target.kind, target.info, _Member(info, target.kind))
        elif info.type == b"V":  # GNU volume label: names the archive, not a file
            return
        else:
            kind = _KIND_BY_TYPE.get(info.type)
            if kind is None:
                self.errors.append((name, f"unsupported member type {info.type!r}"))
                return
            member = _Member(info, kind)
            rec = _Rec(path, kind, member, member)
            self._check_numbers(name, kind, info)
        if not path:
            if rec.kind != "dir":
                self.errors.append((name, "archive root is not a directory"))
                return
            self._recs[()] = rec
            return
        node = path
        while node:  # register the name with every ancestor, walking up by parent
            parent = node[:-1]  # a deep path's parent is a node it holds: no copy
            kids = self._children.setdefault(parent, {})
            if node[-1] in kids:
                break  # and so are the ancestors above
            kids[node[-1]] = None
            node = parent
        self._recs[path] = rec  # a later member of the same name wins, as on extraction

    def _canonical(self, parts: Path) -> Path:
        """A deep member name as the archive's one node chain for it: every member below a
        deep directory shares its ancestors' nodes (memory linear in depth, and comparing two
        of its paths stops at their common parent)."""
        node = parts[:DEEP]
        nodes = self._nodes
        for name in parts[DEEP:]:
            new = DeepPath(node, name)
            node = nodes.setdefault(new, new)
        return node

    def _check_numbers(self, name: bytes, kind: str, info: tarfile.TarInfo) -> None:
        """Note (the member is kept) a time or device number no filesystem could hold."""
        try:
            _parse_mtime_ns(info)
        except (ValueError, OverflowError):
            raw = info.pax_headers.get("mtime", info.mtime)
            self.errors.append((name, f"mtime {str(raw)[:40]!r} is not a time: read as 0"))
        if kind in ("char", "block"):
            try:
                os.makedev(info.devmajor, info.devminor)
            except (OverflowError, ValueError):
                self.errors.append((name, f"device number {info.devmajor}:{info.devminor} is out of "
                                          "range: kept as a non-0/0 device"))

    def _finish(self) -> None:
        """Implied parents, members under non-directories, hard-link counts and inode numbers."""
        dead: set[Path] = set()  # names below a non-directory: unreachable, as on extraction
        for path in sorted(self._children, key=len):
            if not path:
                continue
            rec = self._recs.get(path)
            if path[:-1] in dead or (rec is not None and rec.kind != "dir"):
                dead.add(path)
            elif rec is None:
                self._recs[path] = _Rec(path, "dir", None, None)
        if dead:
            for path in [p for p in self._recs if p and p[:-1] in dead]:
                rec = self._recs.pop(path)
                if rec.own is not None:
                    self.errors.append((join(path), "parent is not a directory"))
            for path in dead:
                del self._children[path]
        if () not in self._recs:
            self._recs[()] = _Rec((), "dir", None, None)
        counts: dict[int, int] = {}
        inos: dict[int, int] = {}
        for rec in self._recs.values():
            key = id(rec.info) if rec.info is not None else id(rec)
            counts[key] = counts.get(key, 0) + 1
            rec.ino = inos.setdefault(key, len(inos) + 1)
        for rec in self._recs.values():
            if rec.kind == "dir":  # as a filesystem counts it: ".", the parent's name, each ".."
                kids = self._children.get(rec.path, ())
                subdirs = (self._recs.get(child(rec.path, n)) for n in kids)
                rec.nlink = 2 + sum(1 for r in subdirs if r is not None and r.kind == "dir")
            else:
                rec.nlink = counts[id(rec.info) if rec.info is not None else id(rec)]

    # -- the Layer protocol --------------------------------------------------------------------

    def physical(self, path: Path) -> bytes:
        return os.fsencode(self.label) + b":" + join(path)

    def listdir(self, path: Path) -> dict[bytes, Entry] | None:
        """The entries of directory ``path`` in the archive, or None where it is no directory."""
        try:
            return self._cache[path]
        except KeyError:
            pass
        names = self._children.get(path)
        if names is None:
            rec = self._recs.get(path)
            listing = {} if rec is not None and rec.kind == "dir" else None
        elif len(names) > bigdir.BIG:  # a huge directory: entries made when looked up
            listing = _TarNames(self, path, names)
        else:
            listing = {}
            for name in names:
                rec = self._recs.get(child(path, name))
                if rec is not None:
                    listing[name] = self._entry(rec)
        self._cache[path] = listing
        return listing

    def forget(self, path: Path) -> None:
        """Drop a cached listing once the scan has left that directory."""
        self._cache.pop(path, None)

    def root_entry(self) -> Entry:
        """The archive root (its ``./`` member, or an implied directory)."""
        return self._entry(self._recs[()])

    def _entry(self, rec: _Rec) -> Entry:
        info = rec.info
        if info is None:
            return Entry(layer=self, path=rec.path, kind="dir", mode=stat.S_IFDIR | 0o755, uid=0,
                         gid=0, size=0, mtime_ns=0, nlink=rec.nlink, ino=rec.ino)
        target = info.target if rec.kind == "symlink" else None
        if rec.kind == "file":
            size = info.size
        elif rec.kind == "symlink":
            size = len(target)
        else:
            size = 0
        return Entry(
            layer=self, path=rec.path, kind=rec.kind,
            mode=_FMT_BY_KIND[rec.kind] | info.mode, uid=info.uid, gid=info.gid,
            size=size, mtime_ns=info.mtime_ns, rdev=info.rdev, nlink=rec.nlink, ino=rec.ino,
            target=target,
        )

    def _rec(self, entry: Entry) -> _Rec:
        rec = self._recs.get(entry.path)
        if rec is None:
            raise EntryError(f"{os.fsdecode(self.physical(entry.path))}: not in the archive")
        return rec

    def read_xattrs(self, entry: Entry) -> dict[str, bytes]:
        rec = self._rec(entry)
        if rec.own is not None and rec.own is not rec.info and rec.own.xattrs:
            return dict(rec.own.xattrs)  # a hard link may carry its own copy; else the target's
        return dict(rec.info.xattrs) if rec.info is not None and rec.info.xattrs else {}

    def data_regions(self, entry: Entry) -> list[tuple[int, int]] | None:
        """A sparse member's data regions ``(start, length)`` from the archive's own sparse map
        (everything else is a hole); None for a member stored whole."""
        rec = self._recs.get(entry.path)
        if rec is None or rec.kind != "file" or rec.info is None or not rec.info.sparse:
            return None
        name = os.fsdecode(self.physical(entry.path))
        return [(start, length) for start, length, where in _segments(rec.info, name)
                if where is not None]

    def open(self, entry: Entry) -> BinaryIO:
        """The member's bytes as a read-only, seekable binary file (nothing lands on disk)."""
        name = os.fsdecode(self.physical(entry.path))
        rec = self._rec(entry)
        if rec.kind != "file" or rec.info is None:
            raise EntryError(f"{name}: not a regular file")
        if self._fh is None:
            raise EntryError(f"{name}: archive is closed")
        info = rec.info
        return io.BufferedReader(_MemberReader(self._fh, _segments(info, name), info.size, name))

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the archive (and drop the decompressed temporary copy)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "TarLayer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
