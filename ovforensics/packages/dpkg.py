"""dpkg's database, read as data: ``/var/lib/dpkg/status`` (packages, versions, conffile
digests), ``info/<package>[:<arch>].list`` (the paths each package owns) and
``info/<package>[:<arch>].md5sums`` (the MD5 of each packaged regular file; conffiles are not
in it: their digests are in ``status``'s ``Conffiles`` field).

The formats are deb822 stanzas and line lists (dpkg's own ``lib/dpkg/parse.c`` and
``deb-md5sums(5)``); no maintained library reads a dpkg admin directory offline without
running dpkg, so they are parsed here, bounded, and fuzzed (fuzz/fuzz_packages.py).
"""
from __future__ import annotations

from ovforensics.packages.db import Database, FileInfo, Package, clean_path, valid_digest

STATUS = (b"var", b"lib", b"dpkg", b"status")
INFO = (b"var", b"lib", b"dpkg", b"info")
NOT_INSTALLED = ("not-installed", "config-files")


def parse_stanzas(text: bytes) -> list[dict[str, str]]:
    """deb822 stanzas: ``Field: value`` with continuation lines starting with a blank."""
    out: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    last = None
    for raw in text.split(b"\n"):
        line = raw.decode("utf-8", "surrogateescape").rstrip("\r")
        if not line.strip():
            if cur:
                out.append(cur)
            cur, last = {}, None
            continue
        if line[0] in " \t":
            if last is not None:
                cur[last] += "\n" + line[1:]
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue  # damaged line: skipped (dpkg would refuse the whole file)
        last = name.strip().lower()
        cur[last] = value.strip()
    if cur:
        out.append(cur)
    return out


def parse_status(text: bytes, db: Database) -> dict[str, list[tuple[bytes, str]]]:
    """Fill ``db.packages``; returns {package key: [(conffile path, md5 hex)]}."""
    conffiles: dict[str, list[tuple[bytes, str]]] = {}
    for stanza in parse_stanzas(text):
        name = stanza.get("package")
        if not name or "/" in name or "\0" in name:
            continue
        state = (stanza.get("status", "").split() or ["", "", "unknown"])[-1]
        arch = stanza.get("architecture", "")
        key = f"{name}:{arch}" if stanza.get("multi-arch") == "same" and arch else name
        pkg = Package("dpkg", name, stanza.get("version", ""), arch, state)
        db.packages[key] = pkg
        items = []
        for line in stanza.get("conffiles", "").split("\n"):
            fields = line.split()
            if len(fields) >= 2 and fields[0].startswith("/"):
                items.append((fields[0].encode("utf-8", "surrogateescape"), fields[1].lower()))
        if items:
            conffiles[key] = items
    return conffiles


def parse_list(text: bytes) -> list[bytes]:
    return [line for line in text.split(b"\n") if line.startswith(b"/")]


def parse_md5sums(text: bytes) -> list[tuple[bytes, str]]:
    """``<32 hex>  <path without the leading slash>`` lines."""
    out = []
    for line in text.split(b"\n"):
        digest, _, path = line.partition(b"  ")
        if len(digest) == 32 and path and all(c in b"0123456789abcdefABCDEF" for c in digest):
            out.append((b"/" + path.lstrip(b"/"), digest.decode("ascii").lower()))
    return out


def load(view, aliases: dict[bytes, bytes]) -> Database | None:
    """dpkg's database as ``view`` shows it, or None where the view has no ``status`` file."""
    from ovforensics.packages import viewfs

    try:
        status = viewfs.read(view, STATUS)
    except viewfs.SymlinkedParent as exc:
        db = Database("dpkg", "/var/lib/dpkg/status", complete=False)
        db.problems.append(f"/var/lib/dpkg/status: {exc}")
        return db
    except viewfs.NotFound:
        return None
    except OSError as exc:
        db = Database("dpkg", "/var/lib/dpkg/status", complete=False)
        db.problems.append(f"/var/lib/dpkg/status: {exc}")
        return db
    db = Database("dpkg", "/var/lib/dpkg/status")
    conffiles = parse_status(status, db)
    try:
        info = viewfs.listdir(view, INFO)
    except viewfs.NotFound as exc:
        db.problems.append(f"/var/lib/dpkg/info: {exc}")
        db.complete = False
        info = {}
    by_key = db.packages
    for name, found in info.items():
        text_name = name.decode("utf-8", "surrogateescape")
        for suffix in (".list", ".md5sums"):
            if not text_name.endswith(suffix):
                continue
            key = text_name[: -len(suffix)]
            pkg = by_key.get(key) or by_key.get(key.split(":")[0])
            if pkg is None:
                continue  # a leftover file of a package status no longer lists
            try:
                body = viewfs.read_entry(found)
            except (viewfs.NotFound, OSError) as exc:
                db.problems.append(f"/var/lib/dpkg/info/{text_name}: {exc}")
                db.complete = False
                continue
            if suffix == ".list":
                for raw in parse_list(body):
                    _own(db, raw, FileInfo(pkg), aliases, text_name)
            else:
                for raw, digest in parse_md5sums(body):
                    _own(db, raw, FileInfo(pkg, digest, "md5"), aliases, text_name)
    for key, items in conffiles.items():
        pkg = by_key[key]
        for raw, digest in items:
            known = valid_digest(digest, "md5")  # "newconffile": none recorded yet
            _own(db, raw, FileInfo(pkg, known, "md5" if known else None, conffile=True), aliases,
                 "status")
    return db


def _own(db: Database, raw: bytes, info: FileInfo, aliases, where: str) -> None:
    parts = clean_path(raw)
    if parts is None:
        db.problems.append(f"{where}: path {raw!r} climbs out of the root or is damaged: not used")
        return
    if parts and parts[0] in aliases:
        parts = tuple(aliases[parts[0]].split(b"/")) + parts[1:]
    db.own(b"/" + b"/".join(parts), info)
