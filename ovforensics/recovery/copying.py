"""Writing one recovered entry into the destination: a directory (its modes and times set
once everything below it is written), a symlink (recreated, never followed), a regular file
(streamed from its layer, hashed while copied, zero stretches left as holes); FIFOs, sockets
and devices never opened nor made. The :class:`Copier` half of ``recover.Recoverer``."""
from __future__ import annotations

import hashlib
import os
import stat

from ovforensics.layers.layer import Entry, EntryError, Path
from ovforensics.records.record import format_mode
from ovforensics.recovery.destination import _Blocked, _DIR_FLAGS, _NEW_FILE, _why
from ovforensics.recovery.manifest import ERROR, MANIFEST_NAMES, ManifestRow, SKIPPED

_CHUNK = 1 << 20


_ZEROS = bytes(_CHUNK)


_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID



def _safe_name(name: bytes) -> bool:
    return bool(name) and name not in (b".", b"..") and b"/" not in name and b"\0" not in name


class Copier:
    """The destination side of a recovery (``self.dest``, ``self._dirs``, ``self.keep_owner``
    and ``self._note_full`` come from the :class:`~ovforensics.recovery.recover.Recoverer`)."""

    def _place(self, path: Path, top: Entry, data: Entry | None, row: ManifestRow) -> None:
        if not path:
            row.status, row.detail = SKIPPED, "the root directory itself is not recovered"
            return
        if not all(_safe_name(p) for p in path):
            row.status, row.detail = ERROR, "unsafe name; not written"
            return
        if len(path) == 1 and path[0] in MANIFEST_NAMES:
            row.status, row.detail = SKIPPED, "collides with the manifest; not written"
            return
        kind = top.kind
        if kind not in ("file", "dir", "symlink"):
            row.status, row.detail = SKIPPED, "not a regular file: " + _describe(top)
            return
        if kind == "file" and data is None:
            row.status, row.detail = ERROR, "metacopy file: no lower layer holds its data"
            return
        parent = self.dest.dir(path[:-1])
        name = path[-1]
        if kind == "dir":
            self._make_dir(path, parent, name, top, row)
        elif kind == "symlink":
            self._make_link(parent, name, top, row)
        else:
            self._copy_file(parent, name, top, data, row)

    def _make_dir(self, path: Path, parent: int, name: bytes, top: Entry, row: ManifestRow) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            if path not in self.dest.made:  # not one of ours: leave it alone
                row.status, row.detail = SKIPPED, "exists in the destination; not overwritten"
                return
        self.dest.made.add(path)
        self._dirs.append((path, top))
        row.detail = self._special_note(top)

    def _make_link(self, parent: int, name: bytes, top: Entry, row: ManifestRow) -> None:
        try:
            os.symlink(top.target or b"", name, dir_fd=parent)
        except FileExistsError:
            row.status, row.detail = SKIPPED, "exists in the destination; not overwritten"
            return
        notes = []
        if self.keep_owner:
            try:
                os.chown(name, top.uid, top.gid, dir_fd=parent, follow_symlinks=False)
            except OSError as exc:
                notes.append(f"owner not kept: {_why(exc)}")
        try:
            os.utime(name, ns=_times(top), dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            notes.append(f"times not kept: {_why(exc)}")
        row.detail = "; ".join(notes) or None

    def _copy_file(self, parent: int, name: bytes, top: Entry, data: Entry, row: ManifestRow) -> None:
        try:
            src = data.open()
        except (EntryError, OSError) as exc:
            row.status, row.detail = ERROR, f"cannot read the original: {_why(exc)}"
            return
        with src:
            try:
                fd = os.open(name, _NEW_FILE, 0o600, dir_fd=parent)
            except FileExistsError:
                row.status, row.detail = SKIPPED, "exists in the destination; not overwritten"
                return
            digest = hashlib.sha256()
            size = 0
            try:
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    digest.update(chunk)
                    if chunk == _ZEROS[:len(chunk)]:
                        os.lseek(fd, len(chunk), os.SEEK_CUR)  # a hole: a sparse original stays sparse
                    else:
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view):]
                    size += len(chunk)
                os.ftruncate(fd, size)  # the size, where the file ends in a hole
                notes = self._set_meta(fd, top)
            except BaseException as exc:
                os.close(fd)
                try:
                    os.unlink(name, dir_fd=parent)  # ours (O_EXCL): a partial copy is no copy
                except OSError:
                    pass
                if isinstance(exc, (OSError, EntryError)):
                    row.status, row.detail = ERROR, f"copy failed, partial file removed: {_why(exc)}"
                    self._note_full(exc)
                    return
                raise
            os.close(fd)
        row.size, row.sha256 = size, digest.hexdigest()
        expected = data.size
        if size != expected:
            notes.append(f"read {size} bytes, the layer says {expected}")
        special = self._special_note(top)
        if special:
            notes.insert(0, special)
        row.detail = "; ".join(notes) or None

    # -- metadata ------------------------------------------------------------------------------
    def _set_meta(self, fd: int, entry: Entry) -> list[str]:
        """Owner (as root), mode without setuid/setgid, times: on an fd we created."""
        notes = []
        if self.keep_owner:
            try:
                os.fchown(fd, entry.uid, entry.gid)
            except OSError as exc:
                notes.append(f"owner not kept: {_why(exc)}")
        try:
            os.fchmod(fd, entry.perm & ~_SPECIAL_BITS)
        except OSError as exc:
            notes.append(f"mode not kept: {_why(exc)}")
        try:
            os.utime(fd, ns=_times(entry))
        except OSError as exc:
            notes.append(f"times not kept: {_why(exc)}")
        return notes

    @staticmethod
    def _special_note(entry: Entry) -> str | None:
        if entry.perm & _SPECIAL_BITS:
            return f"setuid/setgid dropped on the copy (original mode {format_mode(entry.perm)})"
        return None

    def _finish_dirs(self) -> None:
        """Directories' modes and times, deepest first (writing inside one moves its mtime)."""
        for path, entry in sorted(self._dirs, key=lambda item: len(item[0]), reverse=True):
            try:
                self.dest.dir(path[:-1], create=False)
                parent = self.dest.chain[-1][1] if self.dest.chain else self.dest.to_fd
                fd = os.open(path[-1], _DIR_FLAGS, dir_fd=parent)
            except (OSError, _Blocked):
                continue
            try:
                self._set_meta(fd, entry)
            finally:
                os.close(fd)


def _times(entry: Entry) -> tuple[int, int]:
    atime = entry.atime_ns if entry.atime_ns is not None else entry.mtime_ns
    return (atime, entry.mtime_ns)


def _describe(entry: Entry) -> str:
    if entry.kind in ("char", "block"):
        return f"{entry.kind} {os.major(entry.rdev)}/{os.minor(entry.rdev)}"
    return entry.kind
