"""Overlay markers: which entries of a layer are whiteouts, opaque dirs, redirects, metacopy.

Three rule sets, per layer (``Layer.rules``):

- ``kernel``: what the Linux kernel honours in an upperdir or lowerdir: a 0/0 character device is a
  whiteout; a directory whose ``<ns>opaque`` xattr is exactly the byte ``y`` is opaque (``x``
  and every other value are not); a zero-size regular file with ``<ns>whiteout`` is an
  xwhiteout, in any layer, the upper included: the kernel's lookup treats it as a whiteout
  whatever its parent carries (readdir hides it only under a lower ``opaque=x`` parent, and
  lists a broken entry elsewhere). A file named ``.wh.NAME`` is an ordinary file.
- ``oci``: the kernel forms plus OCI/AUFS marker files: ``.wh.NAME`` deletes ``NAME`` and
  ``.wh..wh..opq`` makes its directory opaque (tar layers, ``docker save``).
- ``fuse``: ``oci`` plus fuse-overlayfs' ``user.fuseoverlayfs.opaque`` and its ``.wh..opq``
  marker (fuse-overlayfs marks an opaque dir three ways: ``trusted.overlay.opaque=y``, an empty
  ``.wh..wh..opq`` and a 0/0 device ``.wh..opq``).

``<ns>`` is ``trusted.overlay.`` (root mounts) or ``user.overlay.`` (``userxattr`` mounts). A
mount honours only its own prefix; ``auto`` finds it from the layers' root directories (the
kernel writes ``<ns>uuid``/``<ns>impure`` there; a ``trusted.`` mark wins, as only a root
mount can write one), and honours both when nothing tells. ``<ns>overlay.X`` is an escaped xattr: user data shown as ``<ns>X``.
See docs/kernel-facts.md for what was checked against the kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from ovforensics.layers.entry import Entry

WH_PREFIX = b".wh."
WH_OPAQUE = b".wh..wh..opq"
FUSE_OPAQUE = b".wh..opq"  # fuse-overlayfs' own opaque mark (a 0/0 device), beside the others
AUFS_META_PREFIX = b".wh..wh."  # .wh..wh.plnk, .wh..wh.aufs, .wh..wh.orph: AUFS bookkeeping

TRUSTED = "trusted.overlay."
USER = "user.overlay."
FUSE_PREFIX = "user.fuseoverlayfs."
FUSE_PRIVATE = ("user.fuseoverlayfs.", "user.containers.override_stat")

RULES = ("kernel", "oci", "fuse")


def honours_wh_files(rules: str) -> bool:
    return rules in ("oci", "fuse")


@dataclass(frozen=True)
class Namespaces:
    """Which control-xattr prefixes are honoured (``--xattr-ns``)."""

    prefixes: tuple[str, ...] = (TRUSTED, USER)

    @classmethod
    def parse(cls, value: str, roots: "list[Entry] | tuple" = ()) -> "Namespaces":
        """``both``, ``trusted``, ``user``, or ``auto``: detected from the layer roots' xattrs."""
        table = {"both": (TRUSTED, USER), "trusted": (TRUSTED,), "user": (USER,)}
        if value == "auto":
            return cls(detect_prefixes(roots))
        if value not in table:
            raise ValueError(f"--xattr-ns: expected one of auto, {', '.join(table)}, got {value!r}")
        return cls(table[value])

    def control(self, entry: Entry, key: str) -> bytes | None:
        """The first control xattr ``<ns>key`` found on ``entry``."""
        xattrs = entry.xattrs()
        for prefix in self.prefixes:
            value = xattrs.get(prefix + key)
            if value is not None:
                return value
        return None


CONTROL_NAMES = frozenset({"opaque", "redirect", "origin", "impure", "nlink", "upper", "uuid",
                           "metacopy", "whiteout", "whiteouts", "protattr"})


def detect_prefixes(roots) -> tuple[str, ...]:
    """The control prefix the layers were written with, judged from their root directories.

    The first root (the upper's, where the mount writes ``<ns>uuid``/``<ns>impure``) that
    carries a known control xattr under exactly one prefix decides; unknown names such as
    ``trusted.overlay.x`` are user data and prove nothing. Only a root mount can write
    ``trusted.*``, so where both prefixes carry control names, ``trusted`` wins. With no
    mark at all, both are honoured.
    """
    for root in roots:
        seen = set()
        for name in root.xattrs():
            for prefix in (TRUSTED, USER):
                if name.startswith(prefix) and name[len(prefix):] in CONTROL_NAMES:
                    seen.add(prefix)
        if TRUSTED in seen:
            return (TRUSTED,)
        if USER in seen:
            return (USER,)
    return (TRUSTED, USER)


def is_char_whiteout(entry: Entry) -> bool:
    return entry.kind == "char" and entry.rdev == 0


def opaque_value(entry: Entry, ns: Namespaces) -> bytes | None:
    value = ns.control(entry, "opaque")
    if value is None and entry.layer.rules == "fuse":
        value = entry.xattrs().get(FUSE_PREFIX + "opaque")
    return value


def xattr_opaque(entry: Entry, ns: Namespaces) -> bool:
    """Opaque by xattr: the kernel takes exactly the one byte ``y`` (``x`` means xwhiteouts)."""
    return entry.is_dir and opaque_value(entry, ns) == b"y"


def redirect(entry: Entry, ns: Namespaces) -> bytes | None:
    if entry.kind not in ("dir", "file"):
        return None
    return ns.control(entry, "redirect")


def is_metacopy(entry: Entry, ns: Namespaces) -> bool:
    return entry.kind == "file" and ns.control(entry, "metacopy") is not None


def visible_xattrs(entry: Entry, ns: Namespaces) -> dict[str, bytes]:
    """The xattrs a reader of the merged mount sees: control xattrs dropped, escaped ones unescaped."""
    out: dict[str, bytes] = {}
    fuse = entry.layer.rules == "fuse"
    for name, value in entry.xattrs().items():
        for prefix in ns.prefixes:
            if name.startswith(prefix):
                rest = name[len(prefix):]
                if rest.startswith("overlay."):
                    out[prefix + rest[len("overlay."):]] = value
                break
        else:
            if fuse and name.startswith(FUSE_PRIVATE):
                continue
            out[name] = value
    return out


@dataclass
class DirView:
    """One layer's directory, read through that layer's rules.

    ``entries`` holds what the directory shows; ``whiteouts`` maps a hidden name to its marker
    (``via`` and the marker entry); ``opaque`` says why lower dirs are hidden (None if not).
    """

    entries: dict[bytes, Entry] = field(default_factory=dict)
    whiteouts: dict[bytes, tuple[str, Entry]] = field(default_factory=dict)
    opaque: str | None = None
    lookalikes: list[Entry] = field(default_factory=list)

    def find(self, name: bytes) -> tuple[Entry | None, bool]:
        """What the directory shows at ``name``, and whether a marker here hides ``name``."""
        return self.entries.get(name), name in self.whiteouts


    def sorted_names(self) -> list[bytes]:
        """Every name this directory shows or hides, sorted."""
        return sorted({*self.entries, *self.whiteouts})


def interpret(dir_entry: Entry, listing, ns: Namespaces) -> "DirView | LazyDirView":
    """Split a raw listing into entries and markers, as the layer's rules say."""
    if getattr(listing, "lazy", False):
        return LazyDirView(dir_entry, listing, ns)
    layer = dir_entry.layer
    wh_files = honours_wh_files(layer.rules)
    opaque_val = opaque_value(dir_entry, ns) if dir_entry.is_dir else None
    view = DirView()
    if opaque_val == b"y":
        view.opaque = "opaque"
    for name, entry in listing.items():
        if wh_files and name.startswith(WH_PREFIX):
            if name == WH_OPAQUE or (name == FUSE_OPAQUE and layer.rules == "fuse"):
                view.opaque = view.opaque or "opaque"
            elif name.startswith(AUFS_META_PREFIX):
                pass  # AUFS bookkeeping, never content
            else:
                view.whiteouts[name[len(WH_PREFIX):]] = ("wh-file", entry)
            continue
        if is_char_whiteout(entry):
            view.whiteouts[name] = ("whiteout", entry)
            continue
        if entry.kind == "file" and entry.size == 0 and ns.control(entry, "whiteout") is not None:
            view.whiteouts[name] = ("xwhiteout", entry)
            continue
        if not wh_files and name.startswith(WH_PREFIX):
            view.lookalikes.append(entry)
        view.entries[name] = entry
    return view


class LazyDirView:
    """A :class:`DirView` of a directory listed by name only (:mod:`ovforensics.layers.bigdir`): the
    same rules as :func:`interpret`, applied to one name when a lookup asks for it.

    Where a name both carries its own marker (a 0/0 device, an xwhiteout) and has a ``.wh.``
    file beside it, ``via`` is the name's own marker. Whiteout look-alikes are not collected.
    """

    lazy = True

    def __init__(self, dir_entry: Entry, listing, ns: Namespaces):
        self.listing = listing
        self.ns = ns
        self.rules = dir_entry.layer.rules
        self.wh_files = honours_wh_files(self.rules)
        self.opaque = "opaque" if dir_entry.is_dir and opaque_value(dir_entry, ns) == b"y" else None
        if self.wh_files and (WH_OPAQUE in listing
                              or (self.rules == "fuse" and FUSE_OPAQUE in listing)):
            self.opaque = "opaque"
        self.entries = _LazyEntries(self)
        self.whiteouts = _LazyWhiteouts(self)
        self.lookalikes: list[Entry] = []

    def find(self, name: bytes) -> tuple[Entry | None, bool]:
        return self.entries.get(name), name in self.whiteouts

    def sorted_names(self) -> list[bytes] | "Iterator[bytes]":
        """Every name this directory may show or hide, sorted (a superset: lookups decide)."""
        names = self.listing.names
        if not self.wh_files:
            return names
        from ovforensics.layers.bigdir import merged_names

        hidden = [n[len(WH_PREFIX):] for n in self.listing.prefixed(WH_PREFIX)]
        return merged_names([names, hidden])

    def own_marker(self, name: bytes) -> tuple[str, Entry] | None:
        """The marker ``name`` itself is, or None (a ``.wh.`` name under OCI rules aside)."""
        if self.wh_files and name.startswith(WH_PREFIX):
            return None
        entry = self.listing.get(name)
        if entry is None:
            return None
        if is_char_whiteout(entry):
            return ("whiteout", entry)
        if entry.kind == "file" and entry.size == 0 and self.ns.control(entry, "whiteout") is not None:
            return ("xwhiteout", entry)
        return None


class _LazyMap:
    """A read-only mapping over one ``get(name)`` of a :class:`LazyDirView`."""

    def __init__(self, view: LazyDirView):
        self.view = view

    def get(self, name: bytes, default=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, name: bytes):
        found = self.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: bytes) -> bool:
        return self.get(name) is not None


class _LazyEntries(_LazyMap):
    """``LazyDirView.entries``: what the directory shows at a name."""

    def get(self, name: bytes, default=None) -> Entry | None:
        view = self.view
        if view.wh_files and name.startswith(WH_PREFIX):
            return default
        entry = view.listing.get(name)
        if entry is None or view.own_marker(name) is not None:
            return default
        return entry

    def __iter__(self):
        return (name for name in self.view.listing.names if self.get(name) is not None)


class _LazyWhiteouts(_LazyMap):
    """``LazyDirView.whiteouts``: the marker that hides a name here, as ``(via, marker)``."""

    def get(self, name: bytes, default=None) -> tuple[str, Entry] | None:
        view = self.view
        own = view.own_marker(name)
        if own is not None:
            return own
        if view.wh_files:
            marker = WH_PREFIX + name
            if not (marker.startswith(AUFS_META_PREFIX)
                    or (view.rules == "fuse" and marker == FUSE_OPAQUE)):
                entry = view.listing.get(marker)
                if entry is not None:
                    return ("wh-file", entry)
        return default

    def __iter__(self):
        return (name for name in self.view.sorted_names() if name in self)
