"""A read-only reader for bbolt (``go.etcd.io/bbolt``, formerly BoltDB) database files.

containerd keeps its metadata in bbolt files (``meta.db``, the snapshotters' ``metadata.db``);
so do Docker's BuildKit, volumes and network stores. This module reads them as evidence: the
file is opened ``O_RDONLY`` and read with ``pread`` page by page; it is never written, never
locked and never memory-mapped, and nothing is required beyond the standard library.

The on-disk format (little-endian on every platform containerd ships for; bbolt writes native
endianness, and this reader assumes little-endian):

* The file is an array of pages of ``page_size`` bytes (the OS page size when the file was
  made, stored in the meta pages). Every page starts with a 16-byte header:
  ``id u64, flags u16, count u16, overflow u32``. A page with ``overflow = n`` occupies ``n + 1``
  consecutive pages (a large value, or a long list of elements).
* Flags: ``0x01`` branch, ``0x02`` leaf, ``0x04`` meta, ``0x10`` freelist.
* Pages 0 and 1 are meta pages (written alternately, one per transaction). After the header:
  ``magic u32 = 0xED0CDAED, version u32 = 2, page_size u32, flags u32, root bucket (root pgid
  u64, sequence u64), freelist pgid u64, pgid u64 (high-water mark: pages below it are in use),
  txid u64, checksum u64``. The checksum is the 64-bit FNV-1a of the 56 bytes before it. The
  valid meta page with the higher txid is the current state; the other one is the previous
  transaction.
* A branch page has ``count`` elements ``pos u32, ksize u32, pgid u64``; a leaf page has
  ``flags u32, pos u32, ksize u32, vsize u32``. Elements are 16 bytes, packed after the header;
  ``pos`` is the distance from *the element itself* to its key (the value follows the key).
  Keys are sorted bytewise; a branch element's key is the first key of its child.
* A leaf element with flag ``0x01`` is a nested bucket. Its value is ``root pgid u64,
  sequence u64``; with ``root = 0`` the bucket is *inline*: a whole leaf page (header and
  elements) follows in the value itself.

Reading is lazy: a page is read when the walk reaches it, so damage in one sub-tree surfaces as
a :class:`BoltError` only when that sub-tree is read, and the rest of the file stays readable.
Every error names the file and, where known, the bucket path and page.
"""
from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass, replace
from typing import Iterator, NamedTuple

from ovforensics.evidence import fs
from ovforensics.evidence import safeio
from ovforensics.stores.base import StoreError

MAGIC = 0xED0CDAED
VERSION = 2
PAGE_HEADER = struct.Struct("<QHHI")  # id, flags, count, overflow
META = struct.Struct("<IIIIQQQQQQ")  # magic, version, page_size, flags, root, sequence, freelist, pgid, txid, checksum
CHECKSUMMED = META.size - 8  # the checksum covers every meta field before it (56 bytes)
BRANCH_ELEM = struct.Struct("<IIQ")  # pos, ksize, pgid
LEAF_ELEM = struct.Struct("<IIII")  # flags, pos, ksize, vsize
BUCKET_HEADER = struct.Struct("<QQ")  # root pgid, sequence

BRANCH, LEAF, META_PAGE, FREELIST = 0x01, 0x02, 0x04, 0x10
BUCKET_LEAF_FLAG = 0x01

#: page sizes to try for the second meta page when the first one is unreadable
COMMON_PAGE_SIZES = (4096, 8192, 16384, 32768, 65536, 2048, 1024, 512)
MAX_DEPTH = 64  # a B+tree of 2^64 pages is not deeper than this; deeper means a loop
MAX_NESTING = 128  # buckets within buckets (containerd: 6); deeper means a damaged or hostile file
MAX_PAGE_SIZE = 1 << 20
_CACHE_PAGES = 512


class BoltError(StoreError):
    """The file is not a readable bbolt database, or a page of it is damaged.

    ``str()`` is ``"<path>: <detail>"``, as :class:`StoreError` promises; ``path`` and ``detail``
    are kept apart for callers that place the path themselves."""

    def __init__(self, path: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


def fnv1a64(data: bytes) -> int:
    """64-bit FNV-1a, as Go's ``hash/fnv.New64a``."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass(frozen=True)
class Meta:
    """One meta page, parsed; ``error`` says why it is not usable (``None``: valid)."""

    page: int  # 0 or 1
    magic: int
    version: int
    page_size: int
    flags: int
    root: int  # the root bucket's page
    sequence: int
    freelist: int
    pgid: int  # high-water mark
    txid: int
    checksum: int
    computed: int  # the FNV-1a of the checksummed bytes
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None


def parse_meta(raw: bytes, page: int) -> Meta:
    """Parse the meta fields at the start of ``raw`` (the bytes after the page header)."""
    if len(raw) < META.size:
        raise ValueError(f"meta page {page}: {len(raw)} bytes, {META.size} needed")
    fields = META.unpack_from(raw)
    computed = fnv1a64(raw[:CHECKSUMMED])
    magic, version, page_size = fields[0], fields[1], fields[2]
    error = None
    if magic != MAGIC:
        error = f"bad magic {magic:#010x} (expected {MAGIC:#010x}: not a bbolt file, or overwritten)"
    elif version != VERSION:
        error = f"unsupported version {version} (expected {VERSION})"
    elif fields[9] != computed:
        error = f"bad checksum {fields[9]:#018x} (FNV-1a of the meta is {computed:#018x})"
    elif page_size < 512 or page_size > MAX_PAGE_SIZE or page_size & (page_size - 1):
        error = f"implausible page size {page_size}"
    return Meta(page, *fields, computed=computed, error=error)


class Page(NamedTuple):
    id: int
    flags: int  # BRANCH or LEAF
    count: int
    overflow: int  # how many pages follow this one as its continuation
    data: bytes  # the whole page, header included: (overflow + 1) * page_size bytes


class DB:
    """A bbolt file opened read-only. Use as a context manager, or call :meth:`close`.

    ``meta`` is the meta page in force (the valid one with the higher txid); ``metas`` holds
    both, parsed, with the reason one is unusable. Raises :class:`BoltError` when the file
    cannot be read as bbolt at all (too short, no valid meta page).
    """

    def __init__(self, path: str, display: str | None = None):
        self.path = path
        self.name = display or path  # how errors name the file (an evidence path, say)
        self._cache: dict[int, Page] = {}
        self._parsed: dict[int, list] = {}  # pgid -> the page's checked elements
        self._fh = None  # a file inside an attached disk image (evidence/fs.py)
        try:
            if fs.is_image_path(path):
                self._fh, self._fd = fs.open_file(path), None
            else:
                self._fd = safeio.open_file(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP and fs.islink(path):
                raise BoltError(self.name, "is a symbolic link, not followed (resolve it inside the "
                                "evidence root first)") from None
            raise BoltError(self.name, f"cannot open: {exc.strerror or exc}") from None
        try:
            if self._fh is not None:
                self.size = self._fh.seek(0, os.SEEK_END)
            else:
                self.size = os.fstat(self._fd).st_size
            self.metas, self.meta = self._read_metas()
        except BaseException:
            self.close()
            raise
        self.page_size = self.meta.page_size

    # -- plumbing ---------------------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None
        if getattr(self, "_fh", None) is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "DB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DB({self.name!r}, txid={self.meta.txid}, page_size={self.page_size})"

    def error(self, detail: str) -> BoltError:
        return BoltError(self.name, detail)

    def _pread(self, length: int, offset: int, what: str) -> bytes:
        if offset + length > self.size:
            raise self.error(f"{what} at offset {offset} (+{length} bytes) is beyond the end of the "
                             f"file ({self.size} bytes): truncated")
        try:
            if self._fh is not None:
                self._fh.seek(offset)
                data = self._fh.read(length)
            else:
                data = os.pread(self._fd, length, offset)
        except OSError as exc:
            raise self.error(f"cannot read {what} at offset {offset}: {exc.strerror or exc}") from None
        if len(data) != length:
            raise self.error(f"{what} at offset {offset}: short read ({len(data)} of {length} bytes)")
        return data

    def _meta_at(self, offset: int, page: int) -> Meta | str:
        if offset + PAGE_HEADER.size + META.size > self.size:
            return f"meta page {page} at offset {offset} is beyond the end of the file ({self.size} bytes)"
        raw = self._pread(PAGE_HEADER.size + META.size, offset, f"meta page {page}")
        pid, flags, _count, _overflow = PAGE_HEADER.unpack_from(raw)
        meta = parse_meta(raw[PAGE_HEADER.size:], page)
        if meta.valid and (pid != page or not flags & META_PAGE):
            meta = replace(meta, error=f"page header says id {pid} flags {flags:#x}, not meta page {page}")
        return meta

    def _read_metas(self) -> tuple[list[Meta | str], Meta]:
        if self.size < PAGE_HEADER.size + META.size:
            raise self.error(f"{self.size} bytes: too short for a bbolt file (truncated or empty)")
        m0 = self._meta_at(0, 0)
        if isinstance(m0, Meta) and m0.valid:
            sizes = [m0.page_size]
        else:
            # page 0 is damaged: look for page 1 at the page sizes bbolt uses (as bbolt itself does)
            guess = m0.page_size if isinstance(m0, Meta) else 0
            sizes = [guess] if 512 <= guess <= MAX_PAGE_SIZE and not guess & (guess - 1) else []
            sizes += [s for s in (os.sysconf("SC_PAGE_SIZE"), *COMMON_PAGE_SIZES) if s not in sizes]
        m1: Meta | str = "not found"
        for n, size in enumerate(sizes):
            candidate = self._meta_at(size, 1)
            if isinstance(candidate, Meta) and candidate.valid and candidate.page_size != size:
                candidate = replace(candidate, error=f"stores page size {candidate.page_size} but was "
                                    f"found at offset {size}")
            if n == 0 or (isinstance(candidate, Meta) and candidate.valid):
                m1 = candidate
            if isinstance(m1, Meta) and m1.valid:
                break
        valid = [m for m in (m0, m1) if isinstance(m, Meta) and m.valid]
        if not valid:
            why = "; ".join(f"meta page {i}: {m.error if isinstance(m, Meta) else m}"
                            for i, m in enumerate((m0, m1)))
            raise self.error(f"no valid meta page, not a readable bbolt file ({why})")
        return [m0, m1], max(valid, key=lambda m: m.txid)

    # -- pages ------------------------------------------------------------------------------
    def page(self, pgid: int, where: tuple[bytes, ...] | None = None) -> "Page":
        """Page ``pgid`` (a branch or leaf page), its overflow pages included; checked.
        ``where``: the path of the bucket being read, for error messages."""
        hit = self._cache.get(pgid)
        if hit is not None:
            return hit
        at = f" (bucket {_show(where)})" if where is not None else ""
        if pgid < 2:
            raise self.error(f"page {pgid}{at}: a tree points at a meta page: damaged")
        if pgid >= self.meta.pgid:
            raise self.error(f"page {pgid}{at} is past the high-water mark {self.meta.pgid} of "
                             f"txid {self.meta.txid}: damaged")
        offset = pgid * self.page_size
        head = self._pread(PAGE_HEADER.size, offset, f"page {pgid}{at}")
        pid, flags, count, overflow = PAGE_HEADER.unpack(head)
        if pid != pgid:
            raise self.error(f"page {pgid}{at}: header says page {pid}: damaged, or rewritten since")
        if flags not in (BRANCH, LEAF):
            raise self.error(f"page {pgid}{at}: flags {flags:#x}, expected a branch or leaf page: damaged")
        if pgid + overflow >= self.meta.pgid:
            raise self.error(f"page {pgid}{at}: {overflow} overflow pages run past the high-water mark "
                             f"{self.meta.pgid}: damaged")
        data = self._pread((overflow + 1) * self.page_size, offset, f"page {pgid}{at}")
        if len(self._cache) >= _CACHE_PAGES:
            self._cache.pop(next(iter(self._cache)))
        page = self._cache[pgid] = Page(pgid, flags, count, overflow, data)
        return page

    # -- buckets ----------------------------------------------------------------------------
    @property
    def root(self) -> "Bucket":
        """The root bucket (its keys are the top-level buckets)."""
        return Bucket(self, (), self.meta.root, self.meta.sequence, None, frozenset())

    def bucket(self, *names: bytes | str) -> "Bucket | None":
        """The bucket at ``names`` (a path of nested bucket names), or ``None``."""
        b: Bucket | None = self.root
        for name in names:
            b = b.bucket(name) if b is not None else None
        return b

    def dump(self) -> dict:
        """Everything, as nested dicts: key -> bytes value, or key -> dict for a bucket."""
        return self.root.to_dict()


def _key(k: bytes | str) -> bytes:
    return k.encode() if isinstance(k, str) else bytes(k)


def _show(path: tuple[bytes, ...]) -> str:
    return "/".join(p.decode("utf-8", "backslashreplace") for p in path) or "<root>"


class Bucket:
    """A bucket: an ordered map of bytes keys to bytes values or nested buckets."""

    def __init__(self, db: DB, path: tuple[bytes, ...], root: int, sequence: int, inline: bytes | None,
                 enclosing: frozenset[int]):
        self.db = db
        self.path = path
        self.root_page = root  # 0 for an inline bucket
        self.sequence = sequence
        self._inline = inline
        # root pages of this bucket and every bucket around it: a nested bucket cannot reuse one
        self._enclosing = enclosing | {root} if root else enclosing

    def __repr__(self) -> str:
        return f"Bucket({_show(self.path)!r}, root={self.root_page}{', inline' if self._inline is not None else ''})"

    @property
    def inline(self) -> bool:
        return self._inline is not None

    # -- elements of one page ---------------------------------------------------------------
    def _where(self) -> str:
        return _show(self.path)

    def _label(self, pgid: int) -> str:
        where = self._where()
        return f"inline page of bucket {where}" if pgid == 0 else f"page {pgid} (bucket {where})"

    def _page_elements(self, pgid: int) -> tuple[int, list]:
        """(flags, elements) of tree page ``pgid``, parsed and checked once per DB."""
        page = self.db.page(pgid, self.path)
        parsed = self.db._parsed.get(pgid)
        if parsed is None:
            parsed = self._elements(page.flags, page.count, page.data, pgid)
            if len(self.db._parsed) >= _CACHE_PAGES:
                self.db._parsed.pop(next(iter(self.db._parsed)))
            self.db._parsed[pgid] = parsed
        return page.flags, parsed

    def _elements(self, flags: int, count: int, data: bytes, pgid: int):
        """The elements of one page: ``(key, child_pgid)`` (branch) or ``(key, flags, value)`` (leaf)."""
        db = self.db
        if PAGE_HEADER.size + count * 16 > len(data):
            raise db.error(f"{self._label(pgid)}: {count} elements do not fit in {len(data)} bytes: damaged")
        out = []
        for i in range(count):
            at = PAGE_HEADER.size + i * 16
            if flags == BRANCH:
                pos, ksize, child = BRANCH_ELEM.unpack_from(data, at)
                vsize = 0
            else:
                eflags, pos, ksize, vsize = LEAF_ELEM.unpack_from(data, at)
            start = at + pos
            end = start + ksize + vsize
            if start < PAGE_HEADER.size + count * 16 or end > len(data):
                raise db.error(f"{self._label(pgid)}: element {i} points outside the page (offset {start}, "
                               f"{ksize}+{vsize} bytes, page holds {len(data)}): damaged")
            key = data[start:start + ksize]
            if out and key <= out[-1][0]:
                raise db.error(f"{self._label(pgid)}: keys out of order at element {i} ({key[:40]!r} after "
                               f"{out[-1][0][:40]!r}): damaged")
            if flags == BRANCH:
                out.append((key, child))
            else:
                out.append((key, eflags, data[start + ksize:end]))
        return out

    def _leaf(self, key: bytes, eflags: int, value: bytes):
        if not eflags & BUCKET_LEAF_FLAG:
            return value
        path = self.path + (key,)
        if len(path) > MAX_NESTING:
            raise self.db.error(f"bucket {_show(path[:8])}/...: nested more than {MAX_NESTING} deep: damaged")
        if len(value) < BUCKET_HEADER.size:
            raise self.db.error(f"bucket {_show(path)}: header is {len(value)} bytes, 16 needed: damaged")
        root, seq = BUCKET_HEADER.unpack_from(value)
        if root == 0:
            page = value[BUCKET_HEADER.size:]
            if len(page) < PAGE_HEADER.size:
                raise self.db.error(f"inline bucket {_show(path)}: {len(page)} bytes, no page header: damaged")
            return Bucket(self.db, path, 0, seq, page, self._enclosing)
        if root in self._enclosing:
            raise self.db.error(f"bucket {_show(path)}: its root page {root} is also the root of an "
                                "enclosing bucket (a loop): damaged")
        return Bucket(self.db, path, root, seq, None, self._enclosing)

    def _walk(self, pgid: int, depth: int, visited: set[int]) -> Iterator[tuple[bytes, int, bytes]]:
        db = self.db
        if pgid in visited:
            raise db.error(f"page {pgid} (bucket {self._where()}) is reached twice (a loop, or pages "
                           "shared between trees): damaged")
        if depth > MAX_DEPTH:
            raise db.error(f"page {pgid} (bucket {self._where()}): tree deeper than {MAX_DEPTH}: damaged")
        visited.add(pgid)
        flags, elements = self._page_elements(pgid)
        if flags == LEAF:
            yield from elements
            return
        for _key_, child in elements:
            yield from self._walk(child, depth + 1, visited)

    def _raw_items(self, visited: set[int] | None = None) -> Iterator[tuple[bytes, int, bytes]]:
        if self._inline is not None:
            _pid, flags, count, _overflow = PAGE_HEADER.unpack_from(self._inline)
            if flags != LEAF:
                raise self.db.error(f"inline bucket {self._where()}: page flags {flags:#x}, expected a leaf: damaged")
            yield from self._elements(flags, count, self._inline, 0)
        else:
            yield from self._walk(self.root_page, 0, set() if visited is None else visited)

    # -- public -----------------------------------------------------------------------------
    def items(self, _visited: set[int] | None = None) -> Iterator[tuple[bytes, "bytes | Bucket"]]:
        """Every ``(key, value)`` in key order; a nested bucket's value is a :class:`Bucket`."""
        last = None
        for key, eflags, value in self._raw_items(_visited):
            if last is not None and key <= last:
                raise self.db.error(f"bucket {self._where()}: keys out of order across pages "
                                    f"({key[:40]!r} after {last[:40]!r}): damaged")
            last = key
            yield key, self._leaf(key, eflags, value)

    def __iter__(self) -> Iterator[bytes]:
        for key, _v in self.items():
            yield key

    def keys(self) -> list[bytes]:
        return list(self)

    def buckets(self) -> Iterator[tuple[bytes, "Bucket"]]:
        for key, value in self.items():
            if isinstance(value, Bucket):
                yield key, value

    def get(self, key: bytes | str) -> "bytes | Bucket | None":
        """The value (bytes, or a nested :class:`Bucket`) at ``key``; ``None`` if absent.

        Descends the tree to the one leaf that can hold ``key``."""
        key = _key(key)
        if self._inline is not None:
            for k, eflags, value in self._raw_items():
                if k == key:
                    return self._leaf(k, eflags, value)
            return None
        pgid, seen = self.root_page, ()
        while True:
            if pgid in seen or len(seen) > MAX_DEPTH:
                raise self.db.error(f"page {pgid} (bucket {self._where()}): the tree loops back on itself: damaged")
            flags, elements = self._page_elements(pgid)
            if flags == LEAF:
                for k, eflags, value in elements:
                    if k == key:
                        return self._leaf(k, eflags, value)
                return None
            if not elements:
                return None
            child = elements[0][1]
            for k, c in elements:
                if k <= key:
                    child = c
                else:
                    break
            seen += (pgid,)
            pgid = child

    def bucket(self, key: bytes | str) -> "Bucket | None":
        value = self.get(key)
        return value if isinstance(value, Bucket) else None

    def value(self, key: bytes | str) -> bytes | None:
        value = self.get(key)
        return value if isinstance(value, bytes) else None

    def to_dict(self, _visited: set[int] | None = None) -> dict:
        """The whole bucket, nested buckets as dicts. Every page is read once: a page that two
        trees share (possible only in a damaged file) is an error, not an endless walk."""
        visited = set() if _visited is None else _visited
        return {k: (v.to_dict(visited) if isinstance(v, Bucket) else v) for k, v in self.items(visited)}

    def pages(self) -> list[int]:
        """The page ids this bucket's own tree occupies (not its nested buckets'); [] if inline."""
        if self._inline is not None:
            return []
        out: set[int] = set()
        todo = [(self.root_page, 0)]
        while todo:
            pgid, depth = todo.pop()
            if pgid in out:  # a branch pointing back up (or across): without this, an endless walk
                raise self.db.error(f"page {pgid} (bucket {self._where()}) is reached twice (a loop, "
                                    "or pages shared within the tree): damaged")
            if depth > MAX_DEPTH:
                raise self.db.error(f"page {pgid} (bucket {self._where()}): tree deeper than "
                                    f"{MAX_DEPTH}: damaged")
            out.add(pgid)
            flags, elements = self._page_elements(pgid)
            if flags == BRANCH:
                todo += [(c, depth + 1) for _k, c in elements]
        return sorted(out)


def open_db(path: str, display: str | None = None) -> DB:
    """Open ``path`` read-only; ``display`` is how error messages name it (default: ``path``)."""
    return DB(path, display)


# -- Go encodings that bbolt users store in values --------------------------------------------
def uvarint(data: bytes) -> int:
    """Go's ``binary.Uvarint`` (LEB128); raises ``ValueError`` on a short or overlong value."""
    result = shift = 0
    for i, byte in enumerate(data):
        if i == 10 or (i == 9 and byte > 1):
            raise ValueError("uvarint overflows 64 bits")
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result
        shift += 7
    raise ValueError(f"uvarint truncated ({len(data)} bytes)")


def varint(data: bytes) -> int:
    """Go's ``binary.Varint`` (zig-zag over uvarint)."""
    u = uvarint(data)
    return (u >> 1) ^ -(u & 1)
