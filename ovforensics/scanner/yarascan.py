"""YARA rules over changed files: the upper version of every added and modified regular file
and, on request, the shadowed originals (``lower_`` side). Records gain ``yara`` (and
``lower_yara``): the names of the rules that matched, ``namespace:rule`` when the rules came
from a directory.

yara-python (PyPI ``yara-python``, or Debian's ``python3-yara``) is optional and imported only
when ``--yara`` is given. A file is opened by the layer's own safe open (``O_NOFOLLOW``,
``O_NOATIME``, regular files only: FIFOs, devices and sockets are never opened) and mapped
read-only with ``mmap``, so big files are not read into memory; what cannot be mapped (an
archive member) is spooled to a private temporary file first.
"""
from __future__ import annotations

import collections
import mmap
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

from ovforensics.layers.layer import EntryError
from ovforensics.records.record import ADDED, DELETED, MODIFIED, Change

RULE_SUFFIXES = (".yar", ".yara", ".rule", ".rules")
MATCH_TIMEOUT = 60  # seconds per file


class YaraError(ValueError):
    """The rules cannot be used (yara-python missing, a rules file that does not compile)."""


def _module():
    try:
        import yara
    except ImportError:
        raise YaraError("--yara needs yara-python: pip install yara-python (or apt-get install "
                        "python3-yara)") from None
    return yara


def compile_rules(spec: str):
    """Rules from a file, or from every ``*.yar``/``*.yara`` file of a directory (each its own
    namespace, the file's name)."""
    yara = _module()
    if os.path.isdir(spec):
        files = {}
        for name in sorted(os.listdir(spec)):
            path = os.path.join(spec, name)
            if name.lower().endswith(RULE_SUFFIXES) and os.path.isfile(path):
                files[os.path.splitext(name)[0]] = path
        if not files:
            raise YaraError(f"--yara: {spec}: no *.yar or *.yara file in this directory")
        try:
            return yara.compile(filepaths=files), True
        except yara.Error as exc:
            raise YaraError(f"--yara: {spec}: {exc}") from None
    if not os.path.isfile(spec):
        raise YaraError(f"--yara: {spec}: no such file or directory")
    try:
        return yara.compile(filepath=spec), False
    except yara.Error as exc:
        raise YaraError(f"--yara: {spec}: {exc}") from None


class YaraScanner:
    def __init__(self, spec: str, originals: bool = False, workers: int | None = None):
        self.rules, self.namespaced = compile_rules(spec)
        self.originals = originals
        self.workers = workers or min(4, os.cpu_count() or 1)
        self._error = _module().Error

    def names(self, matches) -> list[str]:
        return sorted({f"{m.namespace}:{m.rule}" if self.namespaced else m.rule for m in matches})

    def match_entry(self, entry) -> list[str]:
        if entry.size == 0:
            return self.names(self.rules.match(data=b"", timeout=MATCH_TIMEOUT))
        with entry.open() as fh:
            try:
                fd = fh.fileno()
            except (OSError, ValueError, AttributeError):
                fd = None
            if fd is not None:
                try:
                    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as view:
                        return self.names(self.rules.match(data=view, timeout=MATCH_TIMEOUT))
                except (ValueError, OSError, TypeError):
                    pass  # not mappable (e.g. a file that shrank): spool it
            fh.seek(0) if fh.seekable() else None
            with tempfile.TemporaryFile(prefix="ovf-yara-") as spool:
                shutil.copyfileobj(fh, spool, 1 << 20)
                spool.flush()
                spool.seek(0)
                if os.fstat(spool.fileno()).st_size == 0:
                    return self.names(self.rules.match(data=b"", timeout=MATCH_TIMEOUT))
                with mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ) as view:
                    return self.names(self.rules.match(data=view, timeout=MATCH_TIMEOUT))

    def scan(self, record: Change) -> Change:
        sides = []
        if record.change in (ADDED, MODIFIED) and _is_file(record.entry):
            sides.append(("yara", record.data or record.entry))
        if self.originals and record.change in (MODIFIED, DELETED) and _is_file(record.shadow):
            sides.append(("lower_yara", record.shadow_data or record.shadow))
        for key, entry in sides:
            if entry is None:
                continue
            try:
                record.extra[key] = self.match_entry(entry)
            except (EntryError, OSError, self._error) as exc:
                record.extra.setdefault("read_errors", []).append(f"yara: {exc}")
        return record

    def run(self, records: Iterable[Change]) -> Iterator[Change]:
        window: collections.deque = collections.deque()
        limit = self.workers * 8
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ovf-yara") as pool:
            for record in records:
                window.append(pool.submit(self.scan, record))
                while len(window) >= limit or (window and window[0].done()):
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()


def _is_file(entry) -> bool:
    return entry is not None and entry.kind == "file"
