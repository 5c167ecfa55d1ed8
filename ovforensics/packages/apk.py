"""apk's database, read as data: ``/lib/apk/db/installed``, apk-tools' documented text format
(one stanza per package, blank-line separated: ``P:`` name, ``V:`` version, ``A:`` arch,
``F:`` a directory, ``R:`` a file in the last ``F:``, ``Z:`` that file's checksum: ``Q1`` +
base64 of its SHA-1, ``Q2`` + base64 of its SHA-256). Parsed here (no library reads it), fuzzed.
"""
from __future__ import annotations

import base64
import binascii

from ovforensics.packages.db import Database, FileInfo, Package, clean_path

INSTALLED = (b"lib", b"apk", b"db", b"installed")
_ALGORITHMS = {b"Q1": ("sha1", 20), b"Q2": ("sha256", 32)}


def decode_checksum(value: bytes) -> tuple[str, str] | None:
    """``Q1<base64>`` -> ("sha1", hex); None for what is not a well-formed checksum."""
    algorithm = _ALGORITHMS.get(value[:2])
    if algorithm is None:
        return None
    try:
        raw = base64.b64decode(value[2:], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != algorithm[1]:
        return None
    return algorithm[0], raw.hex()


def parse_installed(text: bytes, db: Database, aliases: dict[bytes, bytes]) -> None:
    pkg: Package | None = None
    directory: tuple[bytes, ...] | None = ()
    last: FileInfo | None = None
    for line in text.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            pkg, directory, last = None, (), None
            continue
        key, sep, value = line.partition(b":")
        if not sep or len(key) != 1:
            continue  # damaged line: skipped, the rest is read
        if pkg is None:
            pkg = Package("apk", "", "", "")
        text_value = value.decode("utf-8", "surrogateescape")
        if key == b"P":
            pkg.name = text_value
            db.packages[text_value] = pkg
        elif key == b"V":
            pkg.version = text_value
        elif key == b"A":
            pkg.arch = text_value
        elif key == b"F":
            directory = clean_path(value)
            last = None
            if directory is None:
                db.problems.append(f"/lib/apk/db/installed: directory {value!r} climbs out of "
                                   "the root or is damaged: its files are not used")
            else:
                _own(db, directory, FileInfo(pkg, kind="dir"), aliases)
        elif key == b"R":
            if directory is None or b"/" in value or value in (b"", b".", b"..") or b"\0" in value:
                last = None
                db.problems.append(f"/lib/apk/db/installed: file {value!r} is damaged: not used")
                continue
            last = FileInfo(pkg, kind="file")
            _own(db, directory + (value,), last, aliases)
        elif key == b"Z" and last is not None:
            checksum = decode_checksum(value)
            if checksum is None:
                db.problems.append(f"/lib/apk/db/installed: checksum {value!r} is damaged")
            else:
                last.algorithm, last.digest = checksum


def _own(db, parts, info, aliases) -> None:
    if parts and parts[0] in aliases:
        parts = tuple(aliases[parts[0]].split(b"/")) + tuple(parts[1:])
    db.own(b"/" + b"/".join(parts), info)


def load(view, aliases: dict[bytes, bytes]) -> Database | None:
    from ovforensics.packages import viewfs

    where = INSTALLED
    if where[0] in aliases:  # merged /usr: /lib -> usr/lib (the alias, not any symlink)
        where = tuple(aliases[where[0]].split(b"/")) + where[1:]
    try:
        text = viewfs.read(view, where)
    except viewfs.SymlinkedParent as exc:
        db = Database("apk", "/lib/apk/db/installed", complete=False)
        db.problems.append(f"/lib/apk/db/installed: {exc}")
        return db
    except viewfs.NotFound:
        return None
    except OSError as exc:
        db = Database("apk", "/lib/apk/db/installed", complete=False)
        db.problems.append(f"/lib/apk/db/installed: {exc}")
        return db
    db = Database("apk", "/lib/apk/db/installed")
    parse_installed(text, db, aliases)
    return db
