"""Enrichment: hashes of both versions of a changed file, its file type, and executable flags.

Runs after the differ, on the records it yields, in a thread pool (hashlib releases the GIL on
large buffers, so both cores hash) while keeping the records in order and holding only a small
window of them. A file is read once per record side, whatever the number of algorithms; a
metacopy file's bytes are read from the lower layer that holds them, never from its upper stub.
FIFOs, sockets and devices are never opened.
"""
from __future__ import annotations

import collections
import os
import stat
import threading
from typing import Iterable, Iterator

from ovforensics.layers.layer import Entry, EntryError
from ovforensics.records.record import ADDED, ANOMALY, DELETED, MODIFIED, Change

HASHES = ("md5", "sha1", "sha256", "sha512")
CHUNK = 1 << 20
MAGIC_BYTES = 1 << 16  # what libmagic sees of a file: enough for its usual tests


def parse_hashes(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"sha256,md5"`` -> ("sha256", "md5"); unknown names raise ValueError naming them."""
    if not value:
        return ()
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip().lower() for item in names for n in item.split(",") if n.strip()]
    bad = [n for n in names if n not in HASHES]
    if bad:
        raise ValueError(f"--hash: unknown algorithm {', '.join(bad)}; expected {', '.join(HASHES)}")
    return tuple(dict.fromkeys(names))


class _Magic:
    """python-magic handles, one pair per thread (libmagic cookies are not thread-safe)."""

    def __init__(self):
        self._local = threading.local()

    def describe(self, head: bytes) -> tuple[str, str]:
        handles = getattr(self._local, "handles", None)
        if handles is None:
            import magic

            handles = (magic.Magic(), magic.Magic(mime=True))
            self._local.handles = handles
        return handles[0].from_buffer(head), handles[1].from_buffer(head)


def read_digest(entry: Entry, algorithms: tuple[str, ...], head_size: int = 0):
    """(hex digests, first ``head_size`` bytes) of a regular file, read once; with no digest
    asked for, only the head is read (a 1 TB sparse file costs 64 KiB, not a terabyte)."""
    import hashlib

    hashers = [hashlib.new(a) for a in algorithms]
    head = b""
    with entry.open() as fh:
        while True:
            if not hashers and len(head) >= head_size:
                break
            block = fh.read(CHUNK if hashers else head_size - len(head))
            if not block:
                break
            if len(head) < head_size:
                head += block[: head_size - len(head)]
            for h in hashers:
                h.update(block)
    return {a: h.hexdigest() for a, h in zip(algorithms, hashers)}, head


def exec_flags(entry: Entry, head: bytes, visible_xattrs: dict) -> list[str]:
    """Why a file could run: ELF, a script with an exec bit, setuid/setgid, file capabilities."""
    flags = []
    if head.startswith(b"\x7fELF"):
        flags.append("elf")
    if head.startswith(b"#!"):
        flags.append("script")
    if entry.mode & 0o111:
        flags.append("exec-bit")
    if entry.mode & stat.S_ISUID:
        flags.append("setuid")
    if entry.mode & stat.S_ISGID:
        flags.append("setgid")
    if "security.capability" in visible_xattrs:
        flags.append("capability")
    return flags


def is_executable(flags: list[str]) -> bool:
    runnable = "elf" in flags or ("script" in flags and "exec-bit" in flags)
    return runnable or any(f in flags for f in ("setuid", "setgid", "capability"))


class Enricher:
    def __init__(self, hashes: tuple[str, ...] = (), magic: bool = False, ns=None,
                 workers: int | None = None):
        self.hashes = hashes
        self.magic = _Magic() if magic else None
        self.ns = ns
        self.workers = workers or min(8, os.cpu_count() or 1)

    @property
    def active(self) -> bool:
        return bool(self.hashes or self.magic)

    def run(self, records: Iterable[Change]) -> Iterator[Change]:
        """The records, in order, each with its hashes/type fields added to ``extra``."""
        if not self.active:
            yield from records
            return
        window: collections.deque = collections.deque()
        limit = self.workers * 8
        from concurrent.futures import ThreadPoolExecutor  # imported when a scan enriches

        with ThreadPoolExecutor(self.workers, thread_name_prefix="ovf-hash") as pool:
            for record in records:
                window.append(pool.submit(self.enrich, record))
                while len(window) >= limit or (window and window[0].done()):
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()

    def enrich(self, record: Change) -> Change:
        if record.change == ANOMALY:
            return record
        errors = []
        if record.change in (ADDED, MODIFIED) and _is_file(record.entry):
            self._side(record, record.data or record.entry, "", errors, describe=True)
        if record.change in (MODIFIED, DELETED) and _is_file(record.shadow):
            self._side(record, record.shadow_data or record.shadow, "lower_", errors,
                       describe=False)
        if errors:
            record.extra["read_errors"] = errors
        return record

    def _side(self, record: Change, source: Entry | None, prefix: str, errors: list, describe: bool):
        if source is None:
            errors.append(f"{prefix or 'upper '}data: no layer holds it")
            return
        want_head = MAGIC_BYTES if (self.magic and describe) else 0
        if not self.hashes and not want_head:
            return  # nothing to read on this side (--magic describes the upper version only)
        try:
            digests, head = read_digest(source, self.hashes, want_head)
        except (EntryError, OSError) as exc:
            errors.append(f"{source.layer.label}: {exc}")
            return
        for algorithm, value in digests.items():
            record.extra[prefix + algorithm] = value
        if self.magic and describe:
            try:
                record.extra["magic"], record.extra["mime"] = self.magic.describe(head)
            except Exception as exc:  # libmagic errors are reported, never fatal
                errors.append(f"libmagic: {exc}")
            from ovforensics.layers.markers import visible_xattrs

            shown = visible_xattrs(record.entry, self.ns) if self.ns is not None else {}
            flags = exec_flags(record.entry, head, shown)
            record.extra["exec_flags"] = flags
            changed = record.change == ADDED or "content" in record.what or "mode" in record.what \
                or "xattrs" in record.what
            record.extra["new_executable"] = bool(changed and is_executable(flags))


def _is_file(entry) -> bool:
    return entry is not None and entry.kind == "file"
