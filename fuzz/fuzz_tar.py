#!/usr/bin/env python3
"""Fuzz the tar layer reader (``tarlayer.TarLayer``): the input is the archive itself.

The archive is opened (compression is sniffed from the bytes: gzip, zstd, xz, bzip2, plain),
every directory listed, every entry's metadata, xattrs (PAX ``SCHILY.xattr.*``,
``LIBARCHIVE.xattr.*``) and symlink target read, every regular member opened and read (the
start, and the end: sparse maps, truncated members), and then the archive is scanned as an
upper over a fixed lower archive and as a lower under a fixed upper (whiteouts, opaque dirs,
redirects, metacopy as its headers and xattrs say). Each input is read twice: as it is, and
with its header checksums and PAX record lengths made right (:func:`fix_tar`), so that the
fuzzer's changes to header fields and PAX values get past tarfile's own checks. Contract: opening raises nothing but
LayerError; ``open()`` and reading a member nothing but EntryError; ``scan`` nothing at all
(a damaged entry is an anomaly record); never a hang.

    python fuzz/run.py tar 3600
"""
from __future__ import annotations

import atexit
import io
import os
import re
import shutil
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import ovforensics  # noqa: E402
from ovforensics.layers.layer import EntryError, LayerError  # noqa: E402
from ovforensics.layers.tarlayer import TarLayer  # noqa: E402

READ = 1 << 16
MAX_ENTRIES = 4000
RULES = ("auto", "oci", "kernel", "fuse")


def make_tar(members, fmt=tarfile.PAX_FORMAT, gnu_sparse: bool = False) -> bytes:
    """``members``: (name, kind, data/target, pax headers) tuples."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, kind, payload, pax in members:
            info = tarfile.TarInfo(name)
            info.pax_headers = dict(pax)
            info.mtime = 1700000000
            data = None
            if kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            elif kind == "char":
                info.type, (info.devmajor, info.devminor) = tarfile.CHRTYPE, payload
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


OPQ = {"SCHILY.xattr.trusted.overlay.opaque": "y"}
LOWER = [
    ("./", "dir", None, {}), ("etc/", "dir", None, {}), ("etc/passwd", "file", "root:x:0:0\n", {}),
    ("etc/hosts", "file", "127.0.0.1 localhost\n", {}), ("bin/", "dir", None, {}),
    ("bin/sh", "file", b"\x7fELF" + b"\0" * 60, {"SCHILY.xattr.security.capability": "\x01\0\0\x02"}),
    ("var/", "dir", None, {}), ("var/log/", "dir", None, {}), ("var/log/a", "file", "a", {}),
    ("lnk", "symlink", "/etc/passwd", {}), ("data", "file", "x" * 3000, {}),
]
UPPER = [
    ("./", "dir", None, {"SCHILY.xattr.trusted.overlay.impure": "y"}),
    ("etc/", "dir", None, {}), ("etc/passwd", "file", "root:x:0:0\nevil:x:0:0\n", {}),
    ("etc/.wh.hosts", "file", "", {}), ("var/", "dir", None, {}), ("var/log/", "dir", None, OPQ),
    ("bin/", "dir", None, {}), ("bin/sh", "file", "",
                               {"SCHILY.xattr.trusted.overlay.metacopy": "",
                                "SCHILY.xattr.trusted.overlay.redirect": "/data"}),
    ("new/", "dir", None, {"SCHILY.xattr.trusted.overlay.redirect": "/var"}),
    ("data", "char", (0, 0), {}), ("lnk", "symlink", "../../../etc/shadow", {}),
]

_FIXED: dict[str, str] = {}


def fixed(which: str) -> str:
    """The companion archives, written once per process."""
    if not _FIXED:
        where = common.scratch_dir("ovf-fuzz-tarfixed-")
        atexit.register(shutil.rmtree, where, True)
        for name, members in (("lower", LOWER), ("upper", UPPER)):
            path = os.path.join(where, name + ".tar")
            with open(path, "wb") as fh:
                fh.write(make_tar(members))
            _FIXED[name] = path
    return _FIXED[which]


def walk(layer: TarLayer) -> None:
    root = layer.root_entry()
    root.xattrs()
    todo, seen = [()], 0
    while todo:
        path = todo.pop()
        listing = layer.listdir(path)
        if listing is None:
            raise AssertionError(f"listdir({path!r}) of a listed directory is None")
        for name, entry in listing.items():
            seen += 1
            if seen > MAX_ENTRIES:
                return
            assert entry.path == path + (name,) and name and b"/" not in name, entry.path
            assert name not in (b".", b".."), entry.path
            entry.xattrs()
            (entry.mode, entry.uid, entry.size, entry.mtime_ns, entry.target, entry.physical)
            if entry.kind == "file":
                try:
                    with layer.open(entry) as fh:
                        fh.read(READ)
                        fh.seek(max(entry.size - READ, 0))
                        fh.read(READ)
                except EntryError:
                    pass
            elif entry.kind == "dir":
                todo.append(entry.path)
            else:
                try:
                    layer.open(entry)
                    raise AssertionError(f"open() of a {entry.kind} did not refuse")
                except EntryError:
                    pass


_PAX_LINE = re.compile(rb"[0-9]* ?(.*)", re.S)


def fix_tar(data: bytes) -> bytes:
    """``data`` with every header's checksum recomputed and every PAX record's length prefix
    rewritten (member sizes adjusted), so that a mutation inside a header or a PAX value is
    read as what it says rather than refused as a bad checksum or a bad record length."""
    out, pos = bytearray(), 0
    while pos + tarfile.BLOCKSIZE <= len(data):
        head = bytearray(data[pos:pos + tarfile.BLOCKSIZE])
        if not any(head):
            break
        try:
            size = tarfile.nti(bytes(head[124:136]))
        except tarfile.HeaderError:
            size = 0
        size = max(0, min(size, len(data)))
        body = data[pos + tarfile.BLOCKSIZE:pos + tarfile.BLOCKSIZE + size]
        pos += tarfile.BLOCKSIZE + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        if head[156:157] in (b"x", b"g"):  # PAX: "LEN key=value\n" records
            records = []
            for line in body.split(b"\n"):
                kv = _PAX_LINE.fullmatch(line).group(1)
                if kv:
                    n = p = 0
                    while True:  # the length counts its own digits (as tarfile computes it)
                        n = len(kv) + 2 + len(str(p))
                        if n == p:
                            break
                        p = n
                    records.append(b"%d %s\n" % (n, kv))
            body = b"".join(records)
            head[124:136] = b"%011o\0" % len(body)
        head[148:156] = b" " * 8
        head[148:156] = b"%06o\0 " % sum(head)
        out += head + body + bytes(-len(body) % tarfile.BLOCKSIZE)
    out += data[pos:] if pos < len(data) else b""
    return bytes(out)


def run_one(data: bytes, where: str) -> None:
    path = os.path.join(where, "layer.tar")
    with open(path, "wb") as fh:
        fh.write(data)
    try:
        layer = TarLayer(path)
    except LayerError:
        return
    with layer:
        walk(layer)
    rules = RULES[len(data) % len(RULES)]
    for upper, lowers in ((path, [fixed("lower")]), (fixed("upper"), [path, fixed("lower")])):
        for change in ovforensics.scan(upper, lowers, whiteouts=rules):
            change.to_dict()


def TestOneInput(data: bytes) -> None:
    where = common.scratch_dir("ovf-fuzz-tar-")
    try:
        run_one(data, where)
        fixed_data = fix_tar(data)
        if fixed_data != data:
            run_one(fixed_data, where)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def seeds() -> list[bytes]:
    import gzip

    import zstandard

    lib = {"LIBARCHIVE.xattr.user.overlay.opaque": "eQ==", "LIBARCHIVE.xattr.trusted.x%3Dy": "AQI"}
    odd = [
        ("./", "dir", None, {}), ("a/", "dir", None, lib), ("a/f", "file", "hello", {"mtime": "1.5"}),
        ("a/h", "hardlink", "a/f", {}), ("a/.wh..wh..opq", "file", "", {}), ("b", "file", "x", {}),
        ("b/c", "file", "under a file", {}), ("../escape", "file", "x", {}), ("d/.wh.zz", "char", (0, 0), {}),
        ("e" * 150 + "/" + "f" * 150, "file", "long", {}), ("fifo", "fifo", None, {}),
        ("hl2", "hardlink", "nowhere", {}), ("x\udcff\n", "file", "bytes", {}),
    ]
    sparse = make_tar([("s", "file", "abc", {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                                            "GNU.sparse.name": "s", "GNU.sparse.realsize": "1000000"})])
    lower, upper = make_tar(LOWER), make_tar(UPPER)
    gnu = make_tar([("d/", "dir", None, {}), ("d/" + "n" * 120, "file", "gnu longname", {})],
                   fmt=tarfile.GNU_FORMAT)
    return [lower, upper, make_tar(odd), sparse, gnu, gzip.compress(upper),
            zstandard.ZstdCompressor().compress(lower), upper[:700], b""]


if __name__ == "__main__":
    common.fuzz_main(TestOneInput, ("ovforensics", "tarfile"))
