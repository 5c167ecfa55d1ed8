#!/usr/bin/env python3
"""Fuzz the package-database parsers (ovforensics.packages): dpkg's ``status`` stanzas,
``info/*.list`` and ``*.md5sums``, apk's ``installed``, and rpm header blobs (rpmdb.sqlite's
``Packages.blob``).

Input: the first byte picks the parser (``% 4``: dpkg status, dpkg list+md5sums, apk, rpm
header); the rest is the file. Contract: nothing raises but ``rpm.HeaderError`` from
``parse_header``/``add_header``; every path a database owns is absolute, with no empty, ``.``
or ``..`` component and no NUL (a path that climbs is reported, never indexed); every digest is
lower-case hex of its algorithm's length.

    python fuzz/run.py packages 3600
"""
from __future__ import annotations

import hashlib
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402,F401  (puts the repo on sys.path)

from ovforensics.packages import apk
from ovforensics.packages import dpkg
from ovforensics.packages import rpm  # noqa: E402
from ovforensics.packages.db import Database, FileInfo, Package, valid_digest  # noqa: E402

ALIASES = {b"bin": b"usr/bin", b"lib": b"usr/lib"}


def check(db: Database) -> None:
    for path, owners in db.files.items():
        assert isinstance(path, bytes) and path.startswith(b"/"), path
        parts = path[1:].split(b"/") if path != b"/" else []
        assert all(p not in (b"", b".", b"..") for p in parts), path
        assert b"\0" not in path, path
        for info in owners:
            if info.digest is not None:
                size = hashlib.new(info.algorithm).digest_size * 2
                assert len(info.digest) == size and info.digest == info.digest.lower(), info
                int(info.digest, 16)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    which, body = data[0] % 4, data[1:]
    db = Database("x", "/fuzz")
    if which == 0:
        conffiles = dpkg.parse_status(body, db)
        for key, items in conffiles.items():
            for raw, digest in items:
                ok = valid_digest(digest, "md5")
                dpkg._own(db, raw, FileInfo(db.packages[key], ok, "md5" if ok else None, True),
                          ALIASES, "status")
    elif which == 1:
        pkg = Package("dpkg", "p", "1")
        for raw in dpkg.parse_list(body):
            dpkg._own(db, raw, FileInfo(pkg), ALIASES, "p.list")
        for raw, digest in dpkg.parse_md5sums(body):
            dpkg._own(db, raw, FileInfo(pkg, digest, "md5"), ALIASES, "p.md5sums")
    elif which == 2:
        apk.parse_installed(body, db, ALIASES)
    else:
        try:
            rpm.add_header(db, rpm.parse_header(body), ALIASES)
        except rpm.HeaderError:
            pass
    check(db)


def _header(tags) -> bytes:
    index, store = b"", b""
    for tag, kind, count, value in tags:
        index += struct.pack(">iIiI", tag, kind, len(store), count)
        store += value
    return struct.pack(">II", len(tags), len(store)) + index + store


def seeds() -> list[bytes]:
    status = (b"Package: a\nStatus: install ok installed\nVersion: 1.0-1\nArchitecture: amd64\n"
              b"Conffiles:\n /etc/a.conf 0123456789abcdef0123456789abcdef\n /etc/b newconffile\n\n"
              b"Package: b\nMulti-Arch: same\nArchitecture: amd64\nVersion: 2\n")
    lists = b"/.\n/usr\n/bin/ls\n/../etc/shadow\n" + b"0" * 32 + b"  usr/bin/ls\n"
    installed = (b"P:musl\nV:1.2\nA:x86_64\nF:lib\nR:ld-musl.so\nZ:Q1" +
                 b"AAAAAAAAAAAAAAAAAAAAAAAAAAA=\nF:../x\nR:y\n\nP:b\nF:usr/bin\nR:b\n")
    header = _header([(1000, 6, 1, b"pkg\0"), (1001, 6, 1, b"1.0\0"), (1002, 6, 1, b"1\0"),
                      (1117, 8, 2, b"ls\0conf\0"), (1118, 8, 2, b"/usr/bin/\0/etc/\0"),
                      (1116, 4, 2, struct.pack(">II", 0, 1)),
                      (1035, 8, 2, b"d41d8cd98f00b204e9800998ecf8427e\0\0"),
                      (1037, 4, 2, struct.pack(">II", 0, 1))])
    return [b"\0" + status, b"\1" + lists, b"\2" + installed, b"\3" + header]


if __name__ == "__main__":
    common.fuzz_main(TestOneInput)
