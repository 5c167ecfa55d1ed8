"""rpm's database, read as data: ``/var/lib/rpm/rpmdb.sqlite`` (rpm >= 4.16), whose
``Packages`` table holds one header blob per package.

The SQLite file is copied out of the layers and read by :func:`ovforensics.evidence.sqlitedb.read_rows`
(read-only, immutable, no code the database holds runs). Each blob is an rpm header (rpm's
``lib/header.c``: index count and data length, big-endian 16-byte index entries, then the data
store); the few tags needed are decoded here with every offset and count bounds-checked, and the
parser is fuzzed. The older Berkeley DB ``Packages`` and ndb ``Packages.db`` are not read (no
kept Python library reads them): that is said in the database's problems, and paths no readable
database owns are then ``unknown``, never ``unowned``.
"""
from __future__ import annotations

import struct

from ovforensics.packages.db import Database, FileInfo, Package, clean_path, valid_digest

DBDIRS = ((b"var", b"lib", b"rpm"), (b"usr", b"lib", b"sysimage", b"rpm"))
SQLITE = b"rpmdb.sqlite"

TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH, TAG_ARCH = 1000, 1001, 1002, 1003, 1022
TAG_FILEMODES, TAG_FILEDIGESTS, TAG_FILELINKTOS, TAG_FILEFLAGS = 1030, 1035, 1036, 1037
TAG_DIRINDEXES, TAG_BASENAMES, TAG_DIRNAMES, TAG_OLDFILENAMES = 1116, 1117, 1118, 1027
TAG_FILEDIGESTALGO = 5011
RPMFILE_CONFIG, RPMFILE_GHOST = 1, 64
DIGEST_ALGOS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}
T_INT8, T_INT16, T_INT32, T_INT64, T_STRING, T_BIN, T_STRING_ARRAY, T_I18N = 2, 3, 4, 5, 6, 7, 8, 9
MAX_INDEX = 1 << 16
MAX_DATA = 256 << 20
_SIZES = {T_INT8: 1, T_INT16: 2, T_INT32: 4, T_INT64: 8}
_WANTED = {TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH, TAG_ARCH, TAG_FILEMODES,
           TAG_FILEDIGESTS, TAG_FILELINKTOS, TAG_FILEFLAGS, TAG_DIRINDEXES, TAG_BASENAMES,
           TAG_DIRNAMES, TAG_OLDFILENAMES, TAG_FILEDIGESTALGO}


class HeaderError(ValueError):
    """A header blob that is not a well-formed rpm header."""


def parse_header(blob: bytes) -> dict[int, object]:
    """The wanted tags of a header blob: ints as lists, strings as bytes, arrays as lists."""
    if len(blob) < 8:
        raise HeaderError("shorter than a header")
    il, dl = struct.unpack_from(">II", blob, 0)
    if il > MAX_INDEX or dl > MAX_DATA:
        raise HeaderError(f"index count {il} or data length {dl} out of bounds")
    start = 8 + 16 * il
    if len(blob) < start + dl:
        raise HeaderError("truncated")
    data = bytes(blob[start:start + dl])
    out: dict[int, object] = {}
    for i in range(il):
        tag, kind, offset, count = struct.unpack_from(">iIiI", blob, 8 + 16 * i)
        if tag not in _WANTED:
            continue
        if offset < 0 or offset > dl or count > dl + 1:
            raise HeaderError(f"tag {tag}: offset {offset} or count {count} out of bounds")
        if kind in _SIZES:
            size = _SIZES[kind] * count
            if offset + size > dl:
                raise HeaderError(f"tag {tag}: data past the end")
            fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[_SIZES[kind]]
            out[tag] = list(struct.unpack_from(f">{count}{fmt}", data, offset))
        elif kind in (T_STRING, T_STRING_ARRAY, T_I18N):
            items, pos = [], offset
            for _ in range(count if kind != T_STRING else 1):
                end = data.find(b"\0", pos)
                if end < 0:
                    raise HeaderError(f"tag {tag}: unterminated string")
                items.append(data[pos:end])
                pos = end + 1
            out[tag] = items[0] if kind == T_STRING else items
        # other types (BIN) are not needed
    return out


def _text(value) -> str:
    if isinstance(value, list):
        value = value[0] if value else b""
    return (value or b"").decode("utf-8", "surrogateescape") if isinstance(value, bytes) else ""


def _ints(header: dict, tag: int) -> list[int]:
    value = header.get(tag) or []
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise HeaderError(f"tag {tag}: not an integer array")
    return value


def _strs(header: dict, tag: int) -> list[bytes]:
    value = header.get(tag) or []
    if not isinstance(value, list) or not all(isinstance(v, bytes) for v in value):
        raise HeaderError(f"tag {tag}: not a string array")
    return value


def add_header(db: Database, header: dict, aliases: dict[bytes, bytes]) -> None:
    name = _text(header.get(TAG_NAME))
    if not name:
        raise HeaderError("no name")
    version = _text(header.get(TAG_VERSION))
    release = _text(header.get(TAG_RELEASE))
    epoch = _ints(header, TAG_EPOCH)
    full = (f"{epoch[0]}:" if epoch else "") + version + \
        (f"-{release}" if release else "")
    arch = _text(header.get(TAG_ARCH))
    pkg = Package("rpm", name, full, arch)
    db.packages[f"{name}.{arch}" if arch else name] = pkg
    basenames = _strs(header, TAG_BASENAMES)
    if basenames:
        dirnames = _strs(header, TAG_DIRNAMES)
        indexes = _ints(header, TAG_DIRINDEXES)
        if len(indexes) != len(basenames) or any(i >= len(dirnames) for i in indexes):
            raise HeaderError(f"{name}: file lists of different lengths")
        paths = [dirnames[i] + b for i, b in zip(indexes, basenames)]
    else:
        paths = list(_strs(header, TAG_OLDFILENAMES))
    n = len(paths)

    def column(tag, default):
        values = _ints(header, tag) if isinstance(default, int) else _strs(header, tag)
        return values if len(values) == n else [default] * n

    digests = column(TAG_FILEDIGESTS, b"")
    modes, flags, links = column(TAG_FILEMODES, 0), column(TAG_FILEFLAGS, 0), column(TAG_FILELINKTOS, b"")
    algo_values = _ints(header, TAG_FILEDIGESTALGO) or [1]
    algorithm = DIGEST_ALGOS.get(algo_values[0])
    for path, digest, mode, flag, link in zip(paths, digests, modes, flags, links):
        parts = clean_path(path)
        if parts is None:
            db.problems.append(f"{name}: path {path!r} climbs out of the root or is damaged: not used")
            continue
        if parts and parts[0] in aliases:
            parts = tuple(aliases[parts[0]].split(b"/")) + parts[1:]
        kind = {0o040000: "dir", 0o120000: "symlink", 0o100000: "file"}.get(mode & 0o170000)
        text = digest.decode("ascii", "replace") if digest else None
        if text and valid_digest(text, algorithm) is None:
            db.problems.append(f"{name}: damaged digest for {path!r}: not used")
        text = valid_digest(text, algorithm)
        ghost = bool(flag & RPMFILE_GHOST)
        info = FileInfo(pkg, None if ghost or not algorithm else text,
                        None if ghost or not text else algorithm,
                        conffile=bool(flag & RPMFILE_CONFIG),
                        link_target=link if kind == "symlink" else None, kind=kind)
        db.own(b"/" + b"/".join(parts), info)


def load(view, aliases: dict[bytes, bytes]) -> Database | None:
    import tempfile

    from ovforensics.evidence.sqlitedb import SQLiteError, read_rows
    from ovforensics.packages import viewfs

    for dbdir in DBDIRS:
        where = "/" + b"/".join(dbdir).decode()
        if viewfs.exists(view, dbdir + (SQLITE,)):
            db = Database("rpm", f"{where}/rpmdb.sqlite")
            try:
                wal = viewfs.lookup(view, dbdir + (SQLITE + b"-wal",)).top
            except viewfs.NotFound:
                wal = None
            if wal is not None and (wal.kind != "file" or wal.size > 0):
                db.problems.append(f"{db.source}-wal: transactions not yet written back to the "
                                   "database (rpm was interrupted or is running): not read")
                db.complete = False
            with tempfile.TemporaryDirectory(prefix="ovf-rpmdb-") as tmp:
                try:
                    copy = viewfs.copy_out(view, dbdir + (SQLITE,), tmp)
                    rows, more = read_rows(copy, "Packages", ("hnum", "blob"))
                except (viewfs.NotFound, OSError, SQLiteError) as exc:
                    db.problems.append(f"{db.source}: {exc}")
                    db.complete = False
                    return db
            if more:
                db.problems.append(f"{db.source}: more packages than read")
                db.complete = False
            for hnum, blob in rows:
                try:
                    add_header(db, parse_header(bytes(blob or b"")), aliases)
                except HeaderError as exc:
                    db.problems.append(f"{db.source}: header {hnum}: {exc}")
                    db.complete = False
            return db
        for other in (b"Packages", b"Packages.db"):
            if viewfs.exists(view, dbdir + (other,)):
                db = Database("rpm", f"{where}/{other.decode()}", complete=False)
                kind = "Berkeley DB" if other == b"Packages" else "ndb"
                db.problems.append(f"{db.source}: an rpm {kind} database: not read (ovforensics "
                                   "reads rpmdb.sqlite only); rpm's files are unknown")
                return db
    return None
