"""The differ: walks the merged view (upper over lowers) against the base view (lowers alone).

Only directories where the two views can differ are visited: those with an upper frame, and
those whose lower frames differ (a redirect or an opaque directory above them). A directory the
upper never touched has the same frames in both views and is skipped whole. The walk is an
explicit stack of generators, so a 10,000-deep tree needs no recursion, and records come out in
path order (depth first, names sorted by bytes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from ovforensics.layers.bigdir import merged_names
from ovforensics.scanner.compare import differences, same_entry
from ovforensics.layers.deeppath import child
from ovforensics.layers.layer import Entry, Layer, Path, join
from ovforensics.layers.markers import WH_PREFIX, Namespaces, is_metacopy
from ovforensics.records.record import ADDED, ANOMALY, DELETED, MODIFIED, Change, LayerRef
from ovforensics.scanner.resolve import Frame, Resolved, View


@dataclass
class Task:
    """A directory to compare. ``gone`` is set when the merged view lost it (the via of its
    contents: ``parent`` or ``type-change``); ``cut`` when an opaque upper dir hides its lowers."""

    path: Path
    mframes: list[Frame]
    bframes: list[Frame]
    gone: str | None = None
    cut: bool = False


def layer_ref(layer: Layer, index: int) -> LayerRef:
    """The record's name for a lower layer, with the engine's ids when a reader attached them."""
    info = getattr(layer, "info", None)
    if info is None:
        return LayerRef(index, layer.label)
    return LayerRef(index, layer.label, id=info.id, diff_id=info.diff_id,
                    image_index=info.image_index, role=info.role)


class Differ:
    def __init__(self, upper: Layer, lowers: list[Layer], ns: Namespaces):
        self.upper = upper
        self.lowers = lowers
        self.ns = ns
        shared: dict = {}  # lower directories are read and interpreted once for both views
        self.merged = View([upper, *lowers], ns, upper=upper, cache=shared)
        self.base = View(list(lowers), ns, cache=shared)
        self._refs: dict[tuple[int, int], LayerRef] = {}

    # -- driver -----------------------------------------------------------------------------
    def changes(self) -> Iterator[Change]:
        mroot, broot = self.merged.root_frames, self.base.root_frames
        if mroot and broot and mroot[0].pos == 0:
            yield from self._compare_root(mroot[0].entry, broot[0])
        stack = [self._walk(Task((), mroot, broot))]
        while stack:
            try:
                item = next(stack[-1])
            except StopIteration:
                stack.pop()
                continue
            if isinstance(item, Task):
                stack.append(self._walk(item))
            else:
                yield item
        yield from self._layer_errors()

    def _compare_root(self, upper_root: Entry, base_root: Frame) -> Iterator[Change]:
        what, problems = differences(upper_root, None, base_root.entry, None, self.ns)
        if what:
            yield self._record(MODIFIED, (), upper_root, what=what, shadow=base_root.entry,
                               shadow_pos=base_root.pos)
        for problem in problems:
            yield self._anomaly((), "unreadable", problem)

    # -- one directory --------------------------------------------------------------------
    def _walk(self, task: Task) -> Iterator[Change | Task]:
        upper_view = None
        if task.mframes and task.mframes[0].pos == 0:
            upper_view = self.merged.dirview(task.mframes[0].entry)
        for name in self._names(task, upper_view):
            path = child(task.path, name)
            m = self.merged.lookup(task.mframes, name) if task.mframes else None
            b = self.base.lookup(task.bframes, name) if task.bframes else None
            for found in (m, b):
                for anomaly, detail in (found.problems if found else ()):
                    yield self._anomaly(path, anomaly, detail)
            if m is None and b is None:
                # orphan: nothing below the whiteout in the merged view's own lower frames
                # (under a renamed dir those are the old path's, not the base's at this path)
                if (upper_view is not None and name in upper_view.whiteouts
                        and self.merged.lookup(task.mframes[1:], name) is None):
                    via, marker = upper_view.whiteouts[name]
                    yield self._anomaly(path, "orphan-whiteout",
                                        f"{via} {self._show(marker.physical)}: no lower layer holds this path",
                                        upper=marker)
                continue
            if m is None:
                yield from self._deleted(task, upper_view, path, b)
            elif b is None:
                yield from self._added(path, m)
            else:
                yield from self._both(task, path, m, b)
        self.merged.forget(task.mframes)
        self.base.forget(task.bframes)

    def _names(self, task: Task, upper_view) -> Iterable[bytes]:
        """Every name to look up in the directory, sorted. A set, as a rule; where a layer
        holds the directory by name only (too big to hold: ovforensics.layers.bigdir), a merge of
        the layers' sorted name lists, so the walk never holds the directory's names twice."""
        views = [*self.merged.views(task.mframes), *self.base.views(task.bframes)]
        if not any(getattr(view, "lazy", False) for view in views):
            names: set[bytes] = set()
            for view in views:
                names.update(view.entries)
            if upper_view is not None:
                names.update(upper_view.whiteouts)
            return sorted(names)
        return merged_names(view.sorted_names() for view in views)

    def _deleted(self, task: Task, upper_view, path: Path, b: Resolved) -> Iterator[Change | Task]:
        name = path[-1]
        if task.gone:
            via = task.gone
        elif upper_view is not None and name in upper_view.whiteouts:
            via = upper_view.whiteouts[name][0]
            if task.cut or upper_view.opaque:
                via = "opaque"  # a whiteout inside an opaque dir serves no purpose
        else:
            via = "opaque"
        yield self._record(DELETED, path, b.top, via=via, shadow=b.top, shadow_pos=b.pos,
                           data=b.data, shadow_data=b.data)
        if b.top.is_dir:
            yield Task(path, [], b.frames, gone="parent")

    def _added(self, path: Path, m: Resolved) -> Iterator[Change | Task]:
        top = m.top
        renamed = self._renamed_from(path, m)
        from_lower = top.layer is not self.upper
        yield self._record(ADDED, path, top, renamed_from=renamed,
                           shadow=top if from_lower else None, shadow_pos=m.pos - 1, data=m.data)
        lookalike = self._lookalike(path, top)
        if lookalike is not None:
            yield lookalike
        if top.is_dir:
            yield Task(path, m.frames, [])

    def _both(self, task: Task, path: Path, m: Resolved, b: Resolved) -> Iterator[Change | Task]:
        top = m.top
        if same_entry(top, b.top):  # the same lower entry shows in both views
            if not top.is_dir:
                return
            what, problems = (), []
        else:
            what, problems = differences(top, m.data, b.top, b.data, self.ns)
        for problem in problems:
            yield self._anomaly(path, "unreadable", problem)
        if what:
            yield self._record(MODIFIED, path, top, what=what, shadow=b.top, shadow_pos=b.pos,
                               renamed_from=self._renamed_from(path, m), data=m.data,
                               shadow_data=b.data)
            lookalike = self._lookalike(path, top)
            if lookalike is not None:
                yield lookalike
        if what == ("type",):
            if b.top.is_dir:
                yield Task(path, [], b.frames, gone="type-change")
            if top.is_dir:
                yield Task(path, m.frames, [])
            return
        if top.is_dir and _keys(m.frames) != _keys(b.frames):
            upper_dir = m.frames[0].entry if m.frames and m.frames[0].pos == 0 else None
            cut = task.cut or (upper_dir is not None and self.merged.is_opaque(upper_dir))
            yield Task(path, m.frames, b.frames, cut=cut)

    # -- records ----------------------------------------------------------------------------
    def _renamed_from(self, path: Path, m: Resolved) -> bytes | None:
        if m.redirected_from is None:
            return None
        value = m.redirected_from.rstrip(b"\0")
        if value.startswith(b"/"):
            return value
        return b"/" + join(path[:-1] + (value,))

    def _record(self, change: str, path: Path, entry: Entry, *, what=(), via=None,
                shadow: Entry | None = None, shadow_pos: int = 0, renamed_from=None,
                data: Entry | None = None, shadow_data: Entry | None = None) -> Change:
        in_upper = entry.layer is self.upper
        metacopy = is_metacopy(entry, self.ns)
        was = shadow if change == MODIFIED else None  # the original, as it was
        return Change(
            path=b"/" + join(path),
            change=change,
            type=entry.kind,
            what=tuple(what),
            via=via,
            lower_path=shadow.physical if shadow is not None else None,
            lower_layer=self._ref(shadow.layer, shadow_pos) if shadow is not None else None,
            upper_path=entry.physical if in_upper else None,
            size=entry.size,
            mode=entry.perm,
            uid=entry.uid,
            gid=entry.gid,
            mtime_ns=entry.mtime_ns,
            target=entry.target,
            renamed_from=renamed_from,
            metacopy=metacopy,
            lower_size=was.size if was is not None else None,
            lower_mode=was.perm if was is not None else None,
            lower_uid=was.uid if was is not None else None,
            lower_gid=was.gid if was is not None else None,
            lower_mtime_ns=was.mtime_ns if was is not None else None,
            lower_target=was.target if was is not None else None,
            entry=entry,
            data=data,
            shadow=shadow,
            shadow_data=shadow_data,
        )

    def _anomaly(self, path: Path, kind: str, detail: str, upper: Entry | None = None) -> Change:
        return Change(path=b"/" + join(path), change=ANOMALY, anomaly=kind, detail=detail,
                      upper_path=upper.physical if upper is not None else None,
                      type=upper.kind if upper is not None else None)

    def _ref(self, layer: Layer, index: int) -> LayerRef:
        """One :class:`LayerRef` per lower layer, shared by its records."""
        key = (id(layer), index)
        ref = self._refs.get(key)
        if ref is None:
            ref = self._refs[key] = layer_ref(layer, index)
        return ref

    def _lookalike(self, path: Path, entry: Entry) -> Change | None:
        if not (path[-1].startswith(WH_PREFIX) and entry.layer is self.upper
                and entry.layer.rules == "kernel"):
            return None
        return self._anomaly(path, "whiteout-lookalike",
                             "kernel rules: a .wh.* name in an upperdir is an ordinary file "
                             "(use --whiteouts oci for a layer in OCI/AUFS form, fuse for a "
                             "fuse-overlayfs upper)", upper=entry)

    def _layer_errors(self) -> Iterator[Change]:
        for layer in (self.upper, *self.lowers):
            inside = getattr(layer, "inside", None)  # directory layers map errors back
            for where, why in getattr(layer, "errors", ()):
                yield Change(path=inside(where) if inside else b"", change=ANOMALY,
                             anomaly="unreadable", detail=f"{self._show(where)}: {why}")

    @staticmethod
    def _show(raw: bytes) -> str:
        return raw.decode("utf-8", "backslashreplace")


def _keys(frames: list[Frame]) -> list[tuple[int, Path]]:
    return [f.key for f in frames]
