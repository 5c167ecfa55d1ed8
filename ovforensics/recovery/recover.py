"""Recovery: copy the originals of deleted and modified paths out of the lower layers.

The *original* of a path is what the base view (the lowers alone, as the kernel would mount
them) shows there: the file, directory or symlink the container deleted or overwrote. It is
copied into a destination directory (``--to``) under its container path (``/etc/passwd`` ->
``TO/etc/passwd``), with its mode (setuid/setgid dropped), times and, when running as root,
owner; a manifest (``manifest.csv`` and ``manifest.jsonl`` at the top of ``TO``) has one row
per entry recovered or not: path, change, source layer and path, size, sha256, status.

What is recovered:

- a path named explicitly: the base view's version of it and everything below it (for a
  directory, its whole base subtree: the directory as it was before the container touched it),
  each entry with its own ``change`` (``deleted``, ``modified``, ``unchanged``);
- ``all_deleted``/``all_modified``: the original of every deleted/modified record of a scan;
- ``all_added``, and a named path only the upper holds: the container's own files (a web shell,
  a dropped binary), copied from the upper layer with the same rules, ``change`` ``added``.

A named path is resolved as the merged view resolves it: a symlink among its parents
(``/bin -> usr/bin``) is followed inside the stack, never out of it (``within``); its row has
the path it was found at, and says so in ``detail``.

Rules:

- The evidence is never written: ``TO`` may not lie inside a layer directory or an evidence
  root, nor hold one (checked by path and by device/inode, so bind mounts are caught too).
- Nothing in ``TO`` is ever overwritten or followed. Files are created with ``O_EXCL`` and
  ``O_NOFOLLOW`` relative to directory fds opened with ``O_NOFOLLOW``; an existing entry is a
  manifest row with status ``skipped`` and the run goes on; a symlink planted in ``TO`` (where a
  directory would go) is never followed: the entries below it are ``skipped``.
- Regular files are streamed from the layer (``Entry.open``: read-only, no link following, no
  atime update) and hashed while copied. For a metacopy file the bytes come from the layer that
  holds its data (``data_path`` in the manifest). Symlinks are recreated with their target as
  is (never followed); directories are created, their modes and times set once everything below
  them is written. FIFOs, sockets and devices are never opened nor recreated (``skipped``, with
  ``not a regular file: char 1/3``).
- Names round-trip byte for byte on disk; the manifest writes them as records do (``\\xNN``
  escapes plus ``path_b64`` etc. in JSONL, the CSV formula guard plus ``path_b64``).
- The manifest is written under temporary names and linked to ``manifest.csv``/``manifest.jsonl``
  (never replacing a file) when the run is complete; a run into a ``TO`` that already holds a
  manifest is refused. A top-level container entry with a manifest's name is ``skipped``.

Rows come in this order: the named paths, in the order given (each subtree depth first, names
sorted by bytes), then the ``all_deleted``/``all_modified`` records in path order; a path met
twice has one row.

Manifest statuses: ``recovered``, ``skipped`` (exists in ``TO``, not a regular file, ...),
``not-found`` (the path is in no layer), ``error`` (could not be read or written;
a partly written file is removed)."""
from __future__ import annotations

import hashlib
import os
from typing import Callable, Iterable

from ovforensics.ticker import tick
from ovforensics.scanner.globs import compile_globs, matches
from ovforensics.layers.deeppath import child
from ovforensics.layers.layer import Entry, EntryError, Layer, Path, join
from ovforensics.layers.markers import Namespaces
from ovforensics.records.record import ADDED, DELETED, LayerRef, MODIFIED, escape_bytes
from ovforensics.recovery.destination import (RecoverError, _Blocked, _Dest, _FULL,
    _check_destination, _why)
from ovforensics.recovery.manifest import (ERROR, MANIFEST_CSV, MANIFEST_JSONL, MANIFEST_NAMES,
    ManifestRow, NOT_FOUND, RECOVERED, RUN_RECORD, RecoverResult, SKIPPED, UNCHANGED, _Manifest,
    _ManifestFailed, _lexists)
from ovforensics.recovery.copying import Copier
from ovforensics.recovery.within import LinkLoop, resolve_parents
from ovforensics.scanner.compare import differences, same_entry
from ovforensics.scanner.resolve import Frame, Resolved, View
from ovforensics.writers.output import OutputError, refuse_inside


class _DiskFull(Exception):
    """The destination is full: the run stops after ``path``'s row."""

    def __init__(self, path: bytes):
        super().__init__(path)
        self.path = path


# -- paths -------------------------------------------------------------------------------------
def parse_path(value: str | bytes) -> Path:
    """A container path to components: absolute or not, ``//`` and ``.`` dropped; ``..`` refused."""
    raw = os.fsencode(value)
    if b"\0" in raw:
        raise RecoverError(f"{escape_bytes(raw)!r}: a path cannot hold a NUL byte")
    parts = tuple(p for p in raw.split(b"/") if p and p != b".")
    if b".." in parts:
        raise RecoverError(f"{escape_bytes(raw)}: '..' is not allowed in a container path")
    return parts



# -- the recoverer -----------------------------------------------------------------------------
class Recoverer(Copier):
    """Recover originals through a :class:`~ovforensics.scanner.diff.Differ` (its ``base`` and
    ``merged`` views, and its ``changes()`` for ``all_deleted``/``all_modified``)."""

    def __init__(self, differ, to: str, *, evidence: Iterable[str] = (),
                 include: Iterable[str] = (), exclude: Iterable[str] = (),
                 on_row: Callable[[ManifestRow], None] | None = None,
                 keep_owner: bool | None = None, packages=None):
        self.differ = differ
        self.packages = packages  # a PackageChecker: each original checked against the image's
        self.base: View = differ.base
        self.merged: View = differ.merged
        self.ns: Namespaces = differ.ns
        self.to = os.fsdecode(to)
        self.evidence = [os.fsdecode(e) for e in evidence]
        for layer in (differ.upper, *differ.lowers):
            self.evidence.append(layer_location(layer))
        self.include = compile_globs("--include", include)
        self.exclude = compile_globs("--exclude", exclude)
        self.on_row = on_row
        self.keep_owner = os.geteuid() == 0 if keep_owner is None else keep_owner
        self._positions = {id(layer): pos for pos, layer in enumerate(self.base.layers)}
        self._done: set[Path] = set()
        self._dirs: list[tuple[Path, Entry]] = []  # recovered dirs: metadata set at the end
        self.result: RecoverResult | None = None
        self._full: OSError | None = None  # the destination filled up (ENOSPC, EDQUOT)
        self._note: str | None = None  # a named path found elsewhere: said in its row
        self._all_added = False

    # -- driver ----------------------------------------------------------------------------------
    def run(self, paths: Iterable[str | bytes] = (), *, all_deleted: bool = False,
            all_modified: bool = False, all_added: bool = False) -> RecoverResult:
        named = [parse_path(p) for p in paths]
        for parts in named:
            if len(parts) == 1 and parts[0] in MANIFEST_NAMES:
                raise RecoverError(f"/{escape_bytes(parts[0])}: collides with the manifest "
                                   f"written at the top of {self.to}")
        if not named and not all_deleted and not all_modified and not all_added:
            raise RecoverError("nothing to recover: name paths, or all_deleted/all_modified/"
                               "all_added")
        self._all_added = all_added
        to_fd = self._open_destination()
        try:
            return self._run(to_fd, named, all_deleted, all_modified)
        finally:
            os.close(to_fd)

    def _open_destination(self) -> int:
        try:
            refuse_inside(self.to, self.evidence)
        except OutputError as exc:
            raise RecoverError(str(exc)) from None
        made = False
        if not os.path.lexists(self.to):
            # before making anything: the nearest existing directory above must be clean too
            # (a bind mount of the evidence hides from path checks, not from inode checks)
            above = os.path.abspath(self.to)
            while not os.path.lexists(above):
                above = os.path.dirname(above)
            try:
                _check_destination(self.to, above, self.evidence, itself=False)
            except OSError as exc:
                raise RecoverError(f"{self.to}: {exc.strerror or exc}") from None
            parent = os.path.dirname(os.path.abspath(self.to))
            try:
                os.makedirs(parent, exist_ok=True)
                os.mkdir(self.to, 0o700)
                made = True
            except OSError as exc:
                raise RecoverError(f"{self.to}: cannot create: {exc.strerror or exc}") from None
        try:
            to_fd = os.open(self.to, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RecoverError(f"{self.to}: {exc.strerror or exc}") from None
        try:
            try:
                _check_destination(self.to, to_fd, self.evidence)
            except OSError as exc:
                raise RecoverError(f"{self.to}: {exc.strerror or exc}") from None
            for name in (MANIFEST_CSV, MANIFEST_JSONL, RUN_RECORD):
                if _lexists(name, to_fd):
                    raise RecoverError(f"{self.to}: already holds {name} (a finished recovery?); "
                                       "choose a new destination")
        except BaseException:
            os.close(to_fd)
            if made:
                try:
                    os.rmdir(self.to)
                except OSError:
                    pass
            raise
        return to_fd

    def _run(self, to_fd: int, named: list[Path], all_deleted: bool,
             all_modified: bool) -> RecoverResult:
        self.result = RecoverResult(self.to, os.path.join(self.to, MANIFEST_CSV),
                                    os.path.join(self.to, MANIFEST_JSONL))
        from ovforensics.packages.verify import COLUMNS as PACKAGE_COLUMNS

        try:
            self.manifest = _Manifest(to_fd, PACKAGE_COLUMNS if self.packages is not None else ())
        except OSError as exc:
            raise RecoverError(f"{self.to}: cannot start the manifest: {_why(exc)}") from None
        self.dest = _Dest(to_fd)
        self._full: OSError | None = None
        stopped_at = None
        try:
            try:
                for parts in named:
                    self._named(parts)
                if all_deleted or all_modified or self._all_added:
                    kinds = {k for k, on in ((DELETED, all_deleted), (MODIFIED, all_modified),
                                             (ADDED, self._all_added)) if on}
                    for record in self.differ.changes():
                        tick("comparing the layers", record.path_text)
                        if record.change in kinds:
                            self._from_record(record)
            except _DiskFull as exc:
                stopped_at = exc.path
            self._finish_dirs()
            self.dest.close()
            self.manifest.finish()
        except _ManifestFailed as exc:
            self.dest.close()
            self.manifest.abandon()
            raise OutputError(f"{self.to}: the manifest could not be written: {exc}; recovery "
                              f"stopped ({self.manifest.tmp_csv} holds the whole rows written "
                              "before)") from None
        except BaseException:
            self.dest.close()
            self.manifest.abandon()
            raise
        if stopped_at is not None:
            counts = ", ".join(f"{n} {status}" for status, n in self.result.counts.items())
            raise OutputError(f"{self.to}: {_why(self._full)}: recovery stopped at "
                              f"{escape_bytes(stopped_at)} ({counts}); {MANIFEST_CSV} and "
                              f"{MANIFEST_JSONL} list what was written") from None
        return self.result

    # -- sources ------------------------------------------------------------------------------
    def _named(self, parts: Path) -> None:
        """A named path: its base version and its whole base subtree; symlinks among its parents
        followed inside the stack (``within``). A path only the upper holds (added by the
        container) is copied from the upper, ``change`` added."""
        bframes, mframes = self.base.root_frames, self.merged.root_frames
        if not parts:
            self._subtree((), bframes, mframes)
            return
        named = b"/" + join(parts)
        try:
            found, links = resolve_parents(self.base, parts)
        except LinkLoop as exc:
            self._emit(ManifestRow(path=named, status=ERROR, detail=str(exc)), parts)
            return
        b, m = self._walk(found)
        if b is None:  # not in the lowers: where the merged view finds it (the upper's links)
            try:
                found, links = resolve_parents(self.merged, parts)
            except LinkLoop as exc:
                self._emit(ManifestRow(path=named, status=ERROR, detail=str(exc)), parts)
                return
            b, m = self._walk(found)
        self._note = None if found == parts else \
            f"named {escape_bytes(named)}; found at /{escape_bytes(join(found))} ({', '.join(links)})"
        try:
            if b is None and m is not None:
                self._added(found, m)
                return
            if b is None:
                self._emit(ManifestRow(path=named, status=NOT_FOUND,
                                       detail="not in the lower layers nor in the upper"), parts)
                return
            self._visit(found, b, m)
        finally:
            self._note = None
        if b.top.is_dir:
            self._subtree(found, b.frames, m.frames if m is not None and m.top.is_dir else [])

    def _walk(self, parts: Path) -> tuple[Resolved | None, Resolved | None]:
        """``parts`` looked up in the base and the merged view (no symlink among its parents)."""
        bframes, mframes = self.base.root_frames, self.merged.root_frames
        b = m = None
        for name in parts:
            b = self.base.lookup(bframes, name) if bframes else None
            m = self.merged.lookup(mframes, name) if mframes else None
            bframes = b.frames if b is not None and b.top.is_dir else []
            mframes = m.frames if m is not None and m.top.is_dir else []
        return b, m

    def _added(self, path: Path, m: Resolved) -> None:
        """An added path (the container's own: a web shell, a dropped binary): the upper's
        version, and below an added directory everything the merged view shows there."""
        self._recover(path, m.top, m.data, self._upper_ref(m.top.layer), ADDED, ())
        if m.top.is_dir:
            stack = [(path, m.frames)]
            while stack:
                where, frames = stack.pop()
                for name in sorted(self.merged.names(frames), reverse=True):
                    found = self.merged.lookup(frames, name)
                    if found is None:
                        continue
                    sub = child(where, name)
                    self._recover(sub, found.top, found.data, self._upper_ref(found.top.layer),
                                  ADDED, ())
                    if found.top.is_dir:
                        stack.append((sub, found.frames))
                self.merged.forget(frames)

    def _upper_ref(self, layer: Layer) -> LayerRef:
        if layer is self.differ.upper:
            return LayerRef(-1, layer.label, role="upper")
        return self._ref(layer)

    def _subtree(self, root: Path, bframes: list[Frame], mframes: list[Frame]) -> None:
        """Every entry below a directory of the base view, depth first in name order."""
        stack = [iter(self._children(root, bframes, mframes))]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                continue
            path, b, m = item
            self._visit(path, b, m)
            if b.top.is_dir:
                mf = m.frames if m is not None and m.top.is_dir else []
                stack.append(iter(self._children(path, b.frames, mf)))

    def _children(self, path: Path, bframes: list[Frame], mframes: list[Frame]) -> list:
        out = []
        for name in sorted(self.base.names(bframes)):
            b = self.base.lookup(bframes, name)
            if b is None:
                continue
            out.append((child(path, name), b, self.merged.lookup(mframes, name) if mframes else None))
        self.base.forget(bframes)
        self.merged.forget(mframes)
        return out

    def _visit(self, path: Path, b: Resolved, m: Resolved | None) -> None:
        if m is None:
            change, what = DELETED, ()
        elif same_entry(m.top, b.top):
            change, what = UNCHANGED, ()
        else:
            what, _problems = differences(m.top, m.data, b.top, b.data, self.ns)
            change = MODIFIED if what else UNCHANGED
        self._recover(path, b.top, b.data, self._ref(b.top.layer), change, tuple(what))

    def _from_record(self, record) -> None:
        path = parse_path(record.path)
        if record.change == ADDED:
            if record.entry is not None:
                self._recover(path, record.entry, record.data, self._upper_ref(record.entry.layer),
                              ADDED, ())
            return
        if record.shadow is None:
            return
        self._recover(path, record.shadow, record.shadow_data, record.lower_layer,
                      record.change, tuple(record.what))

    def _ref(self, layer: Layer) -> LayerRef:
        from ovforensics.scanner.diff import layer_ref

        return layer_ref(layer, self._positions.get(id(layer), getattr(layer, "index", -1)))

    # -- one entry ----------------------------------------------------------------------------
    def _wanted(self, path: Path) -> bool:
        if not self.include and not self.exclude:
            return True
        text = escape_bytes(b"/" + join(path))
        if self.include and not matches(text, self.include):
            return False
        return not (self.exclude and matches(text, self.exclude))

    def _recover(self, path: Path, top: Entry, data: Entry | None, ref: LayerRef | None,
                 change: str, what: tuple[str, ...]) -> None:
        if path in self._done or not self._wanted(path):
            return
        self._done.add(path)
        row = ManifestRow(path=b"/" + join(path), status=RECOVERED, change=change, what=what,
                          type=top.kind, mode=top.perm, uid=top.uid, gid=top.gid,
                          mtime_ns=top.mtime_ns, target=top.target, source_layer=ref,
                          source_path=top.physical)
        if top.kind == "file" and data is not None and not same_entry(data, top):
            row.data_path = data.physical
        if top.kind == "symlink":
            row.size = len(top.target or b"")
        if self.packages is not None:
            row.extra.update(self.packages.check_original(row.path, top, data))
        try:
            self._place(path, top, data, row)
        except _Blocked as exc:
            row.status, row.detail = SKIPPED, str(exc)
        except (OSError, EntryError) as exc:
            row.status, row.detail = ERROR, _why(exc)
            self._note_full(exc)
        if self._note is not None:  # the named path was found through a symlink: say where
            row.detail = "; ".join(x for x in (self._note, row.detail) if x)
            self._note = None
        self._emit(row, path)

    # -- output --------------------------------------------------------------------------------
    def _emit(self, row: ManifestRow, path: Path) -> None:
        self.manifest.write(row)
        tick("recovering", path)
        self.result.counts[row.status] = self.result.counts.get(row.status, 0) + 1
        if self.on_row is not None:
            self.on_row(row)
        if self._full is not None:  # the destination is full: stop, with this row written
            raise _DiskFull(row.path)

    def _note_full(self, exc: BaseException) -> None:
        if isinstance(exc, OSError) and exc.errno in _FULL and self._full is None:
            self._full = exc


def layer_location(layer: Layer) -> str:
    """Where a layer lives: its directory, or its archive."""
    root = getattr(layer, "root", None)
    if root is not None:
        return os.fsdecode(root)
    return layer.label


# -- entry points ------------------------------------------------------------------------------
def recover(upper, lowers=(), *, to: str, paths: Iterable[str | bytes] = (),
            all_deleted: bool = False, all_modified: bool = False, all_added: bool = False,
            evidence: Iterable[str] = (), whiteouts: str = "auto", xattr_ns: str = "auto",
            include: Iterable[str] = (), exclude: Iterable[str] = (),
            on_row: Callable[[ManifestRow], None] | None = None,
            packages: bool = False) -> RecoverResult:
    """Copy the originals (the lowers' version) of ``paths`` and/or of every deleted/modified
    path into ``to``, with a manifest there. ``upper``/``lowers`` as for :func:`ovforensics.scan`
    (directories, archives or layers); ``evidence``: more directories never to write into (an
    evidence root); every layer directory is one already. Raises :class:`RecoverError` before
    writing anything when the destination or a path is refused; an entry that cannot be
    recovered is a manifest row (``skipped``, ``not-found``, ``error``) and the run goes on.
    ``packages``: each original is checked against the image's package databases (manifest
    columns ``package``, ``package_status``, ``package_manager``; docs/packages.md).
    """
    from ovforensics.layers.stack import open_layer
    from ovforensics.scanner.diff import Differ
    from ovforensics.scanner.resolve import layer_roots

    opened: list = []  # archives this call opened (closed at the end); given layers stay open

    def layer(spec, index):
        found = open_layer(spec, index=index, rules=whiteouts)
        if found is not spec:
            opened.append(found)
        return found

    try:
        upper_layer = layer(upper, -1)
        lower_layers = [layer(spec, i) for i, spec in enumerate(lowers)]
        ns = Namespaces.parse(xattr_ns, roots=layer_roots([upper_layer, *lower_layers]))
        differ = Differ(upper_layer, lower_layers, ns)
        checker = None
        if packages:
            from ovforensics.packages import PackageChecker, load_stack_databases

            checker = PackageChecker(*load_stack_databases(upper_layer, lower_layers, ns))
        recoverer = Recoverer(differ, to, evidence=evidence, include=include, exclude=exclude,
                              on_row=on_row, packages=checker)
        return recoverer.run(paths, all_deleted=all_deleted, all_modified=all_modified,
                             all_added=all_added)
    finally:
        for item in opened:
            close = getattr(item, "close", None)
            if close is not None:
                close()


def recover_container(container, *, to: str, evidence: Iterable[str] | None = None,
                      whiteouts: str | None = None, xattr_ns: str | None = None,
                      **options) -> RecoverResult:
    """:func:`recover` over a container's stack (manifest rows carry the engine's layer ids).
    ``evidence`` defaults to the engine's store; pass the evidence root for a seized disk."""
    from ovforensics.layers.stack import container_layers

    layers = container_layers(container, whiteouts)
    if evidence is None:
        evidence = [container.store]
    return recover(layers[0], layers[1:], to=to, evidence=evidence,
                   xattr_ns=xattr_ns or container.xattr_ns, **options)
