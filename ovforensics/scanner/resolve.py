"""Name lookup through a stack of layers, the way the kernel's ``ovl_lookup`` does it.

A *view* is an ordered list of layers, topmost first: the lowers alone (the base view) or the
upper over the lowers (the merged view). Looking a name up in a directory of the view walks the
directory's *frames* (that directory in each layer that contributes to it) top down:

- a whiteout stops the search: the name does not exist below it;
- a non-directory ends the search (unless it is a metacopy file: then the search goes on for
  the lower file that holds its data);
- a directory collects a frame and the search goes on, unless it is opaque or a non-directory
  lies below it;
- a redirect (``<ns>redirect``) makes the layers below look the object up under another name:
  relative to the same parent, or from the layers' roots when it is absolute.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ovforensics.layers.layer import Entry, Layer, Path, EntryError
from ovforensics.layers.markers import DirView, Namespaces, honours_wh_files, interpret, is_metacopy, redirect, xattr_opaque


@dataclass(frozen=True)
class Frame:
    """A directory of one layer that contributes to a directory of the view."""

    pos: int  # position of the layer in the view (0 = topmost)
    entry: Entry

    @property
    def layer(self) -> Layer:
        return self.entry.layer

    @property
    def key(self) -> tuple[int, Path]:
        return (id(self.entry.layer), self.entry.path)


@dataclass
class Resolved:
    """What a lookup found: the entry the view shows, and where the rest of it lives."""

    top: Entry
    pos: int  # view position of the layer that holds ``top``
    frames: list[Frame] = field(default_factory=list)  # for a directory
    data: Entry | None = None  # for a file: where its bytes are (differs from top for metacopy)
    redirected_from: bytes | None = None  # the redirect value on ``top``, if any
    problems: list[tuple[str, str]] = field(default_factory=list)  # (anomaly, detail)


MAX_LISTED = 256  # frames lists whose views names() keeps (one per directory being walked)


class BadRedirect(ValueError):
    pass


def parse_redirect(value: bytes, parent: Path) -> Path | bytes:
    """An absolute redirect becomes a path; a relative one stays a single name.

    Refuses what the kernel refuses (empty, ``/`` inside a relative name, empty components) and
    ``.``/``..`` components, so a crafted redirect can never climb out of a layer.
    """
    value = value.rstrip(b"\0")
    if not value:
        raise BadRedirect("empty redirect")
    if value.startswith(b"/"):
        parts = tuple(value[1:].split(b"/"))
        if any(p in (b"", b".", b"..") for p in parts):
            raise BadRedirect(f"redirect {value!r} has an empty, '.' or '..' component")
        return parts
    if b"/" in value or value in (b".", b".."):
        raise BadRedirect(f"relative redirect {value!r} is not a single name")
    return value


class View:
    """An ordered stack of layers, read with one set of marker rules; caches directory views.

    Two views over the same layers (merged and base) may share one ``cache``, so a lower
    directory is read and interpreted once for both.
    """

    def __init__(self, layers: list[Layer], ns: Namespaces, upper: Layer | None = None,
                 cache: dict | None = None):
        self.layers = layers
        self.ns = ns
        self.upper = upper
        self._views: dict[tuple[int, Path], DirView] = {} if cache is None else cache
        self._listed: dict[int, tuple[list[Frame], list[DirView]]] = {}  # see names()
        self.root_frames: list[Frame] = []
        for pos, layer in enumerate(layers):
            root = layer_root(layer)
            if root is not None:
                self.root_frames.append(Frame(pos, root))

    # -- directory views ---------------------------------------------------------------------
    def dirview(self, entry: Entry) -> DirView:
        key = (id(entry.layer), entry.path)
        view = self._views.get(key)
        if view is None:
            listing = entry.layer.listdir(entry.path) or {}
            view = interpret(entry, listing, self.ns)
            self._views[key] = view
        return view

    def forget(self, frames: list[Frame]) -> None:
        """Drop cached listings of a finished directory (keeps memory flat on big trees)."""
        listed = self._listed.get(id(frames))
        if listed is not None and listed[0] is frames:
            del self._listed[id(frames)]
        for frame in frames:
            self._views.pop(frame.key, None)
            forget = getattr(frame.layer, "forget", None)
            if forget is not None:
                forget(frame.entry.path)

    def is_opaque(self, entry: Entry) -> bool:
        """Opaque by xattr, or (OCI and fuse rules) by a marker file inside: only then is the
        directory listed here."""
        if xattr_opaque(entry, self.ns):
            return True
        return honours_wh_files(entry.layer.rules) and self.dirview(entry).opaque is not None

    # -- lookup ------------------------------------------------------------------------------
    def views(self, frames: list[Frame]) -> list[DirView]:
        """The views of a directory's frames, topmost first.

        They are kept for this list of frames until :meth:`forget`, so the lookups of each of
        the directory's names skip the frames that lack it at the cost of a list index (a
        directory in every one of 100 layers is looked up name by name)."""
        views = [self.dirview(frame.entry) for frame in frames]
        if len(self._listed) >= MAX_LISTED:
            del self._listed[next(iter(self._listed))]
        self._listed[id(frames)] = (frames, views)
        return views

    def names(self, frames: list[Frame]) -> set[bytes]:
        """Every name some frame of a directory shows (lookup decides which are visible)."""
        out: set[bytes] = set()
        for view in self.views(frames):
            out.update(view.entries)
        return out

    def _listed_views(self, frames: list[Frame]) -> list[DirView] | None:
        listed = self._listed.get(id(frames))
        return listed[1] if listed is not None and listed[0] is frames else None

    def lookup(self, frames: list[Frame], name: bytes) -> Resolved | None:
        """Look ``name`` up in the directory made of ``frames``, as the kernel would."""
        found: Resolved | None = None
        want_rel: bytes = name
        want_abs: Path | None = None
        stack = frames
        views = self._listed_views(frames)  # while want_abs is None, stack is frames
        i = 0
        while i < len(stack):
            frame = stack[i]
            i += 1
            stop_here = False
            if want_abs is None:
                view = views[i - 1] if views is not None else self.dirview(frame.entry)
                entry, hidden = view.entries.get(want_rel), want_rel in view.whiteouts
                if hidden:
                    if entry is None:
                        break
                    stop_here = True  # OCI: re-added in the same layer that deleted the lower one
            else:
                try:
                    entry, stop_here, blocked, rewritten = self._walk_abs(frame.entry.layer, want_abs)
                except BadRedirect as exc:  # on a directory on the way: the kernel fails the lookup
                    if found is not None:
                        found.problems.append(("bad-redirect", f"{frame.entry.layer.label}: {exc}"))
                    break
                if rewritten is not None:
                    want_abs = rewritten  # the layers below look the rewritten path up
                if entry is None:
                    if blocked:
                        break
                    continue
            if entry is None:
                continue
            if found is None:
                found = Resolved(top=entry, pos=frame.pos)
                if not entry.is_dir and not is_metacopy(entry, self.ns):
                    found.data = entry
                    break
            elif found.top.is_dir:
                if not entry.is_dir:
                    break
            else:  # searching the data of a metacopy file
                if entry.kind != "file":
                    break
                if not is_metacopy(entry, self.ns):
                    found.data = entry
                    break
            if want_abs is not None and stop_here:
                # an opaque directory above it on the absolute path stops the layers below,
                # unless it carries an absolute redirect itself (ovl_check_redirect resets
                # d->stop); a metacopy file's data is looked up below it whatever its parents
                own = redirect(entry, self.ns)
                stop_here = entry.is_dir and not (own is not None and own.startswith(b"/"))
            if entry.is_dir:
                found.frames.append(Frame(frame.pos, entry))
                if stop_here or self.is_opaque(entry):
                    break
            elif stop_here:
                break
            target = redirect(entry, self.ns)
            if target is None:
                continue
            parent = entry.path[:-1]
            try:
                parsed = parse_redirect(target, parent)
            except BadRedirect as exc:
                found.problems.append(("bad-redirect", f"{entry.layer.label}: {exc}"))
                break
            if entry is found.top:
                found.redirected_from = target
            if isinstance(parsed, tuple):
                want_abs = parsed
                stack = self.root_frames
                i = next((k for k, f in enumerate(stack) if f.pos > frame.pos), len(stack))
            elif want_abs is not None:
                want_abs = want_abs[:-1] + (parsed,)
            else:
                want_rel = parsed
        if found is not None and not found.top.is_dir and found.data is None:
            found.problems.append(("metacopy-without-data",
                                   f"{found.top.layer.label}: no lower layer holds the data"))
        return found

    def _walk_abs(self, layer: Layer, path: Path) -> tuple[Entry | None, bool, bool, Path | None]:
        """Follow an absolute redirect inside one layer: (entry, stop below, blocked here, the
        path the layers below look up instead, or None).

        As the kernel's ``ovl_lookup_layer``: a directory on the way that carries a redirect
        itself rewrites the path for the layers below (the redirect, absolute or in place of
        that component, with the rest of the path after it; an absolute one also lifts the stop
        an opaque directory above it set), while this layer's walk goes on below it. A bad
        redirect there raises :class:`BadRedirect`."""
        frame_entry = layer_root(layer)
        stop_below = False
        current: Path = path
        rewritten: Path | None = None
        for depth, name in enumerate(path):
            if frame_entry is None or not frame_entry.is_dir:
                return None, False, frame_entry is not None, rewritten
            child, hidden = self.dirview(frame_entry).find(name)
            if hidden and child is None:
                return None, True, True, rewritten
            if child is None:
                return None, False, False, rewritten
            last = depth == len(path) - 1
            if not last:
                if not child.is_dir:
                    return None, True, True, rewritten
                if self.is_opaque(child):
                    stop_below = True
                else:
                    target = redirect(child, self.ns)
                    if target is not None:
                        parsed = parse_redirect(target, child.path[:-1])
                        rest = path[depth + 1:]
                        if isinstance(parsed, tuple):
                            current = parsed + rest
                            stop_below = False
                        else:
                            at = len(current) - len(path) + depth  # this component in current
                            current = current[:at] + (parsed,) + rest
                        rewritten = current
            frame_entry = child
        return frame_entry, stop_below, False, rewritten


_ROOTS: dict[int, Entry | None] = {}


def layer_root(layer: Layer) -> Entry | None:
    """The root directory entry of a layer (its xattrs carry opaque/impure marks)."""
    getter = getattr(layer, "root_entry", None)
    try:
        return getter() if getter is not None else None
    except EntryError:
        return None


def layer_roots(layers) -> list[Entry]:
    """The root entries of those layers that have one (for :meth:`Namespaces.parse`)."""
    return [root for root in map(layer_root, layers) if root is not None]
