"""What an audit reports (:class:`Report`), and what both audits share: paths, the files of a
layer, lookups through a view, allocated sizes."""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Iterator

from ovforensics.ticker import tick
from ovforensics.scanner.globs import matches
from ovforensics.bloat.gates import DEFAULT_DEPTH, Gates, evaluate
from ovforensics.layers.layer import Entry, Layer, Path, join
from ovforensics.layers.markers import Namespaces, interpret
from ovforensics.records.record import escape_bytes, is_utf8
from ovforensics.scanner.resolve import Resolved, View, layer_root


SCHEMA = 1


#: container file categories
CATEGORIES = ("added", "copy_changed", "copy_unchanged", "metacopy", "link")


#: why an image file is waste
REASONS = ("deleted", "deleted-dir", "opaque", "overwritten", "unchanged-copy", "type-change",
           "hidden")


# -- paths ----------------------------------------------------------------------------------------
def _text(path: bytes) -> str:
    return escape_bytes(path)


def _path_fields(path: bytes, key: str = "path") -> dict:
    out = {key: _text(path)}
    if not is_utf8(path):
        out[key + "_b64"] = base64.b64encode(path).decode("ascii")
    return out


def dir_of(path: bytes, depth: int) -> bytes:
    """The directory a path is rolled up under: its parent, cut to ``depth`` components."""
    parts = [p for p in path.split(b"/") if p][:-1][:depth]
    return b"/" + b"/".join(parts)


def _ignored(path: bytes, globs: list[str]) -> bool:
    text = _text(path)
    return bool(globs) and matches(text, globs)


def _cpath(path: Path) -> bytes:
    return b"/" + join(path)


def layer_files(layer: Layer, ns: Namespaces, stage: str = "reading a layer") -> Iterator[Entry]:
    """Every regular file a layer holds (markers excluded, as the layer's rules say); each one
    a tick of progress (``stage``)."""
    root = layer_root(layer)
    if root is None:
        return
    forget = getattr(layer, "forget", None)
    stack = [root]
    while stack:
        directory = stack.pop()
        listing = layer.listdir(directory.path) or {}
        view = interpret(directory, listing, ns)
        subdirs = []
        for name in sorted(view.entries):
            entry = view.entries[name]
            if entry.kind == "file":
                tick(stage, entry.path)
                yield entry
            elif entry.is_dir:
                subdirs.append(entry)
        if forget is not None:
            forget(directory.path)
        stack.extend(reversed(subdirs))


def lookup_path(view: View, path: Path) -> Resolved | None:
    """What ``view`` shows at ``path`` (walked from its root, as the kernel's lookup does)."""
    frames = view.root_frames
    found = None
    for i, name in enumerate(path):
        if not frames:
            return None
        found = view.lookup(frames, name)
        if found is None:
            return None
        if i < len(path) - 1:
            if not found.top.is_dir:
                return None
            frames = found.frames
    return found


def _shadow(base: View, merged: View, path: Path) -> Resolved | None:
    """The lower file an upper file replaces: the base view's at the same path, or below a
    renamed (redirected) directory the one the merged view finds under the old name."""
    found = lookup_path(base, path)
    if found is not None:
        return found
    parent = lookup_path(merged, path[:-1]) if path[:-1] else None
    frames = parent.frames if parent is not None else (merged.root_frames if not path[:-1] else [])
    lower = [f for f in frames if f.pos > 0]
    return merged.lookup(lower, path[-1]) if lower else None


def _allocated(entry: Entry) -> int | None:
    return entry.blocks * 512 if entry.blocks is not None else None


# -- the report -------------------------------------------------------------------------------------
@dataclass
class Report:
    kind: str  # "container" or "image"
    target: dict
    totals: dict
    gates: dict = field(default_factory=dict)
    layers: list[dict] = field(default_factory=list)  # image
    waste: list[dict] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)  # container
    changes: list[dict] = field(default_factory=list)  # image
    by_directory: list[dict] = field(default_factory=list)
    top: list[dict] = field(default_factory=list)
    largest: list[dict] = field(default_factory=list)  # container: the biggest upper files
    categories: list[dict] = field(default_factory=list)  # container
    upper_dirs: list[dict] = field(default_factory=list)  # container: every upper byte by directory
    depth: int = DEFAULT_DEPTH
    anomalies: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.gates.get("results", []) if not r["passed"]]

    def to_dict(self) -> dict:
        out = {"report": f"{self.kind}-bloat", "schema": SCHEMA, self.kind: self.target,
               "totals": self.totals, "gates": self.gates}
        if self.kind == "image":
            out["layers"] = self.layers
        else:
            out["categories"] = self.categories
            out["largest"] = self.largest
            out["upper_by_directory"] = {"depth": self.depth, "rows": self.upper_dirs}
        out["top"] = self.top
        out["by_directory"] = {"depth": self.depth, "rows": self.by_directory}
        out["waste"] = self.waste
        if self.kind == "image":
            out["changes"] = self.changes
        else:
            out["files"] = self.files
        out["anomalies"] = self.anomalies
        out["warnings"] = self.warnings
        return out


def _finish(report: Report, gates: Gates) -> Report:
    waste = [w for w in report.waste if not w.get("ignored")]
    report.top = sorted(waste, key=lambda w: (-w["bytes"], w["path"]))[:gates.top]
    dirs: dict[bytes, dict] = {}
    for w in waste:
        key = dir_of(w["_raw"], gates.depth)
        row = dirs.setdefault(key, {**_path_fields(key, "dir"), "bytes": 0, "files": 0})
        row["bytes"] += w["bytes"]
        row["files"] += 1
    report.by_directory = sorted(dirs.values(), key=lambda r: (-r["bytes"], r["dir"]))
    report.depth = gates.depth
    report.gates = evaluate(report.totals, gates)
    for row in report.waste:
        row.pop("_raw", None)
    return report
