"""The manifest of a recovery: one row per entry recovered or not (path, change, status, size,
sha256, source layer and path), written under temporary names and linked into place when
the run is complete."""
from __future__ import annotations

import base64
import csv
import errno
import io
import os
import secrets
from dataclasses import dataclass, field
from typing import Callable

from ovforensics.records.record import LayerRef, escape_bytes, format_mode, format_ns, is_utf8
from ovforensics.recovery.destination import _FULL, _NEW_FILE, _why
from ovforensics.writers.output import OutputError


MANIFEST_CSV = "manifest.csv"


MANIFEST_JSONL = "manifest.jsonl"


#: The run record beside the manifests (``recovery.runfile``), written after them.
RUN_RECORD = "run.json"
MANIFEST_NAMES = (MANIFEST_CSV.encode(), MANIFEST_JSONL.encode(), RUN_RECORD.encode())


RECOVERED = "recovered"


SKIPPED = "skipped"


NOT_FOUND = "not-found"


ERROR = "error"


STATUSES = (RECOVERED, SKIPPED, NOT_FOUND, ERROR)


UNCHANGED = "unchanged"


MANIFEST_COLUMNS = (
    "path", "change", "what", "type", "status", "detail", "size", "sha256", "mode", "uid",
    "gid", "mtime", "target", "source_layer", "source_layer_dir", "source_layer_id",
    "source_path", "data_path", "path_b64",
)


_RESERVE = 64 << 10  # bytes kept free for the manifest's last rows when the destination fills


# -- the manifest ------------------------------------------------------------------------------
@dataclass
class ManifestRow:
    """One entry recovered, or not, and why. ``path`` is the raw container path (bytes)."""

    path: bytes
    status: str
    change: str | None = None  # deleted, modified, unchanged (named paths), added (not-found)
    what: tuple[str, ...] = ()
    type: str | None = None
    detail: str | None = None
    size: int | None = None  # bytes copied (a file), target length (a symlink)
    sha256: str | None = None
    mode: int | None = None  # the original's permission bits, setuid/setgid included
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int | None = None
    target: bytes | None = None
    source_layer: LayerRef | None = None
    source_path: bytes | None = None  # the original entry on disk / in the archive
    data_path: bytes | None = None  # where the bytes came from, when not source_path (metacopy)
    extra: dict = field(default_factory=dict)  # --packages: package, package_status, ...

    def to_dict(self) -> dict:
        out = {
            "path": escape_bytes(self.path),
            "change": self.change,
            "what": list(self.what),
            "type": self.type,
            "status": self.status,
            "detail": self.detail,
            "size": self.size,
            "sha256": self.sha256,
            "mode": format_mode(self.mode),
            "uid": self.uid,
            "gid": self.gid,
            "mtime": format_ns(self.mtime_ns),
            "target": _text(self.target),
            "source_layer": self.source_layer.to_dict() if self.source_layer else None,
            "source_path": _text(self.source_path),
            "data_path": _text(self.data_path),
        }
        for key, raw in (("path", self.path), ("target", self.target),
                         ("source_path", self.source_path), ("data_path", self.data_path)):
            if raw is not None and not is_utf8(raw):
                out[key + "_b64"] = base64.b64encode(raw).decode("ascii")
        out.update(self.extra)
        return out


def _text(raw: bytes | None) -> str | None:
    return escape_bytes(raw) if raw is not None else None


@dataclass
class RecoverResult:
    """What a run did: where, the manifests, and the count of rows per status."""

    to: str
    manifest_csv: str
    manifest_jsonl: str
    counts: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STATUSES})

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class _ManifestFailed(Exception):
    """The manifest itself could not be written (``cause``: the OSError)."""

    def __init__(self, cause: OSError):
        super().__init__(_why(cause))
        self.cause = cause


class _Sink:
    """One manifest file, written a whole row at a time through its fd (no buffer: what a
    failed write leaves is never half a row, the file is cut back to the last whole one)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.size = 0

    def put(self, data: bytes, on_full: Callable[[], bool]) -> None:
        start, view, retried = self.size, memoryview(data), False
        while view:
            try:
                n = os.write(self.fd, view)
            except OSError as exc:
                if exc.errno in _FULL and not retried and on_full():
                    retried = True  # room was made (the reserve): try once more
                    continue
                try:
                    os.ftruncate(self.fd, start)
                    os.lseek(self.fd, start, os.SEEK_SET)
                    self.size = start
                except OSError:
                    pass
                raise
            view = view[n:]
            self.size += n


class _Manifest:
    """Both manifests, written as rows arrive under temporary names inside ``TO``.

    A destination that fills up (``ENOSPC``, ``EDQUOT``: no blocks, or no inodes) must still
    get a manifest of what was recovered: a small reserve file is made first and given back
    when the disk is full, so the row of the entry that failed and the final names fit."""

    def __init__(self, to_fd: int, extra_columns: tuple[str, ...] = ()):
        from ovforensics.writers.formats import guard_formula, json_line

        self.columns = MANIFEST_COLUMNS + tuple(extra_columns)

        self._guard, self._json_line = guard_formula, json_line
        self.to_fd = to_fd
        token = secrets.token_hex(6)
        self.tmp_csv = f".ovf-manifest-{token}.csv.partial"
        self.tmp_jsonl = f".ovf-manifest-{token}.jsonl.partial"
        self.reserve: str | None = f".ovf-reserve-{token}"
        self._made: list[str] = []
        self._cells = io.StringIO()
        self.csv = csv.writer(self._cells)
        try:
            self._make_reserve()
            self.csv_fh = _Sink(self._create(self.tmp_csv))
            self.jsonl_fh = _Sink(self._create(self.tmp_jsonl))
            self.csv.writerow(self.columns)
            self.csv_fh.put(self._take_csv(), self.release)
        except OSError:
            self._remove_all()
            raise

    def _create(self, name: str) -> int:
        fd = os.open(name, _NEW_FILE, 0o600, dir_fd=self.to_fd)
        self._made.append(name)
        return fd

    def _make_reserve(self) -> None:
        fd = self._create(self.reserve)
        try:
            try:
                os.posix_fallocate(fd, 0, _RESERVE)
            except OSError as exc:
                if exc.errno in _FULL:
                    raise
                os.write(fd, bytes(_RESERVE))  # no fallocate on this filesystem
        finally:
            os.close(fd)

    def release(self) -> bool:
        """Give the reserve back (the destination is full); False when it is already gone."""
        if self.reserve is None:
            return False
        try:
            os.unlink(self.reserve, dir_fd=self.to_fd)
        except OSError:
            pass
        self.reserve = None
        return True

    def _take_csv(self) -> bytes:
        data = self._cells.getvalue().encode("utf-8", "backslashreplace")
        self._cells.seek(0)
        self._cells.truncate()
        return data

    def write(self, row: ManifestRow) -> None:
        record = row.to_dict()
        layer = record["source_layer"] or {}
        values = dict(record, what=";".join(record["what"]), source_layer=layer.get("index"),
                      source_layer_dir=layer.get("dir"), source_layer_id=layer.get("id"))
        cells = []
        for col in self.columns:
            value = values.get(col)
            cells.append("" if value is None else
                         self._guard(value) if isinstance(value, str) else value)
        path_col, b64_col = MANIFEST_COLUMNS.index("path"), MANIFEST_COLUMNS.index("path_b64")
        if not cells[b64_col] and cells[path_col] != record["path"]:
            cells[b64_col] = base64.b64encode(row.path).decode("ascii")  # the guard changed it
        self.csv.writerow(cells)
        line = (self._json_line(record) + "\n").encode("utf-8", "backslashreplace")
        try:
            self.jsonl_fh.put(line, self.release)
            try:
                self.csv_fh.put(self._take_csv(), self.release)
            except OSError:  # keep both files to the same rows
                size = self.jsonl_fh.size - len(line)
                os.ftruncate(self.jsonl_fh.fd, size)
                os.lseek(self.jsonl_fh.fd, size, os.SEEK_SET)
                self.jsonl_fh.size = size
                raise
        except OSError as exc:
            self._take_csv()
            raise _ManifestFailed(exc) from None

    def finish(self) -> None:
        """Sync, and give the files their final names without replacing anything."""
        try:
            for sink, tmp, final in ((self.csv_fh, self.tmp_csv, MANIFEST_CSV),
                                     (self.jsonl_fh, self.tmp_jsonl, MANIFEST_JSONL)):
                os.fsync(sink.fd)
                os.close(sink.fd)
                sink.fd = -1
                self._final_name(tmp, final)
        except OSError as exc:
            raise _ManifestFailed(exc) from None
        finally:
            self.release()

    def _final_name(self, tmp: str, final: str) -> None:
        try:
            os.link(tmp, final, src_dir_fd=self.to_fd, dst_dir_fd=self.to_fd,
                    follow_symlinks=False)
        except FileExistsError:
            raise OutputError(f"{final} appeared in the destination during the run; "
                              f"the manifest is left as {tmp}") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, *_FULL):
                raise
            # no hard links here (vfat, some network filesystems; tmpfs out of inodes counts a
            # link as one): rename, after a check
            if _lexists(final, self.to_fd):
                raise OutputError(f"{final} appeared in the destination during the run; "
                                  f"the manifest is left as {tmp}") from None
            os.rename(tmp, final, src_dir_fd=self.to_fd, dst_dir_fd=self.to_fd)
            return
        os.unlink(tmp, dir_fd=self.to_fd)

    def abandon(self) -> None:
        """A run that failed: close the partial manifests (kept: whole rows of what was
        written) and drop the reserve."""
        for sink in (self.csv_fh, self.jsonl_fh):
            if sink.fd >= 0:
                try:
                    os.close(sink.fd)
                except OSError:
                    pass
                sink.fd = -1
        self.release()

    def _remove_all(self) -> None:
        """The manifest could not even start: nothing of it is left in ``TO``."""
        for name in self._made:
            try:
                os.unlink(name, dir_fd=self.to_fd)
            except OSError:
                pass
        self.reserve = None


def _lexists(name: str | bytes, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
