"""Bloat audit: the bytes a container's upper layer or an image's layers carry, and the waste.

The arithmetic is defined in docs/bloat.md (with a worked example); this module implements it:

* :func:`audit_container`: every regular file of the upper layer is *added*, a *copy* of the
  file it replaces with the content changed, a *copy* with the content unchanged (chmod,
  chown, touch, a hard link, an xattr: the whole file copied for nothing), a *metacopy* (no
  data in the upper), or another name of an inode already counted (*link*). Wasted bytes are
  the unchanged copies.
* :func:`audit_image`: every regular file every layer stores is either shown by the final image
  (*visible*) or not (*wasted*: deleted later, below a deleted or opaque directory, overwritten,
  replaced by an unchanged copy, hidden by a type change). Each wasted file is attributed to
  its path, the layer that stored it and the layer that made it waste.

Both give a :class:`Report` that the writers (:func:`write_report`) render as table, json,
jsonl, csv or html, with rollups (top paths, by directory, by layer) and CI gates
(:class:`Gates`: ``--max-wasted``, ``--max-wasted-percent``, ``--min-efficiency``,
``--ignore``, ``.ovforensics.toml``).
"""
from __future__ import annotations

import base64
import csv
import fnmatch
import json
import os

import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Iterator, TextIO

from tabulate import tabulate

from ovforensics.scanner.diff import Differ
from ovforensics.layers.layer import Entry, Layer, Path, join
from ovforensics.layers.markers import Namespaces, interpret, is_metacopy
from ovforensics.records.record import ADDED, ANOMALY, DELETED, MODIFIED, escape_bytes, is_utf8
from ovforensics.scanner.resolve import Resolved, View, layer_root, layer_roots
from ovforensics.evidence.storetext import escape_surrogates
from ovforensics.units import SizeError, human
from ovforensics.units import parse_bytes as _parse_bytes
from ovforensics.writers.formats import guard_formula, json_line, visible

SCHEMA = 1
FORMATS = ("table", "json", "jsonl", "csv", "html")
CONFIG_NAME = ".ovforensics.toml"
CONFIG_KEYS = ("max-wasted", "max-wasted-percent", "min-efficiency", "ignore", "top", "depth")
DEFAULT_TOP = 20
DEFAULT_DEPTH = 2

#: container file categories
CATEGORIES = ("added", "copy_changed", "copy_unchanged", "metacopy", "link")
#: why an image file is waste
REASONS = ("deleted", "deleted-dir", "opaque", "overwritten", "unchanged-copy", "type-change",
           "hidden")


class BloatError(ValueError):
    """Bad gate values or configuration: a one-line message naming the option or file."""


# -- numbers ---------------------------------------------------------------------------------------
def parse_bytes(value, what: str = "--max-wasted") -> int:
    """``50MB`` (10^6), ``1.5GiB`` (2^30), ``1200``, ``10k``: a byte count (:func:`ovforensics.units.parse_bytes`)."""
    try:
        return _parse_bytes(value, what)
    except SizeError as exc:
        raise BloatError(str(exc)) from None


def _number(value, what: str) -> Decimal:
    text = str(value).strip()
    if isinstance(value, bool):
        raise BloatError(f"{what}: expected a number, got {value!r}")
    percent = text.endswith("%")
    try:
        number = Decimal(text.rstrip("%").strip())
    except InvalidOperation:
        raise BloatError(f"{what}: expected a number, got {value!r}") from None
    if not number.is_finite() or number < 0:
        raise BloatError(f"{what}: expected a number >= 0, got {value!r}")
    return number / 100 if percent else number


def parse_percent(value, what: str = "--max-wasted-percent") -> Decimal:
    """``5``, ``5%`` or ``2.5``: a percentage (0..100)."""
    text = str(value).strip()
    number = _number(text.rstrip("%"), what)
    if number > 100:
        raise BloatError(f"{what}: a percentage is at most 100, got {value!r}")
    return number


def parse_fraction(value, what: str = "--min-efficiency") -> Decimal:
    """``0.95`` or ``95%``: a fraction (0..1)."""
    number = _number(value, what)
    if number > 1:
        raise BloatError(f"{what}: an efficiency is between 0 and 1 (or a percentage such as "
                         f"95%), got {value!r}")
    return number


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


# -- gates and configuration ------------------------------------------------------------------------
@dataclass
class Gates:
    max_wasted: int | None = None
    max_wasted_percent: Decimal | None = None
    min_efficiency: Decimal | None = None
    ignore: list[str] = field(default_factory=list)
    top: int = DEFAULT_TOP
    depth: int = DEFAULT_DEPTH
    config: str | None = None  # the configuration file read, if any

    @property
    def any(self) -> bool:
        return (self.max_wasted, self.max_wasted_percent, self.min_efficiency) != (None, None, None)


def load_config(path: str | None, use_default: bool = True) -> tuple[dict, str | None]:
    """The ``[bloat]`` table of ``path``, or of ``./.ovforensics.toml`` when it exists."""
    if path is None:
        if not use_default or not os.path.isfile(CONFIG_NAME):
            return {}, None
        path = CONFIG_NAME
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise BloatError(f"--config: {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BloatError(f"--config: {path}: not valid TOML ({exc})") from None
    table = doc.get("bloat", {})
    if not isinstance(table, dict):
        raise BloatError(f"--config: {path}: [bloat] must be a table")
    out = {}
    for key, value in table.items():
        norm = key.replace("_", "-")
        if norm not in CONFIG_KEYS:
            raise BloatError(f"--config: {path}: unknown key {key!r} in [bloat]; known: "
                             f"{', '.join(CONFIG_KEYS)}")
        out[norm] = value
    return out, path


def make_gates(*, max_wasted=None, max_wasted_percent=None, min_efficiency=None, ignore=(),
               top=None, depth=None, config: str | None = None, use_default: bool = True) -> Gates:
    """Gates from the command line over the configuration file (the command line wins;
    ``ignore`` globs add up)."""
    table, source = load_config(config, use_default)
    where = f" (in {source})" if source else ""

    def pick(cli, key):
        return (cli, f"--{key}") if cli is not None else (table.get(key), f"{key}{where}")

    gates = Gates(config=source)
    value, what = pick(max_wasted, "max-wasted")
    if value is not None:
        gates.max_wasted = parse_bytes(value, what)
    value, what = pick(max_wasted_percent, "max-wasted-percent")
    if value is not None:
        gates.max_wasted_percent = parse_percent(value, what)
    value, what = pick(min_efficiency, "min-efficiency")
    if value is not None:
        gates.min_efficiency = parse_fraction(value, what)
    conf_ignore = table.get("ignore", [])
    if isinstance(conf_ignore, str):
        conf_ignore = [conf_ignore]
    if not isinstance(conf_ignore, list) or not all(isinstance(g, str) for g in conf_ignore):
        raise BloatError(f"ignore{where}: expected a list of globs")
    gates.ignore = list(conf_ignore) + list(ignore)
    for key, cli in (("top", top), ("depth", depth)):
        value, what = pick(cli, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "top" else 1):
            raise BloatError(f"{what}: expected a whole number >= {0 if key == 'top' else 1}, "
                             f"got {value!r}")
        setattr(gates, key, value)
    return gates


def evaluate(totals: dict, gates: Gates) -> dict:
    """The gate results: every gate given, its limit, the value, passed or not and by how much."""
    results = []
    wasted, stored = totals["wasted_bytes"], totals["stored_bytes"]
    if gates.max_wasted is not None:
        limit = gates.max_wasted
        ok = wasted <= limit
        results.append({
            "gate": "max-wasted", "limit": limit, "value": wasted, "passed": ok,
            "over_by": max(wasted - limit, 0),
            "message": f"max-wasted: {wasted} bytes wasted ({human(wasted)}), limit {limit} "
                       f"({human(limit)})" + ("" if ok else f": over by {wasted - limit} bytes "
                                                             f"({human(wasted - limit)})")})
    if gates.max_wasted_percent is not None:
        limit = gates.max_wasted_percent
        exact = Fraction(100 * wasted, stored) if stored else Fraction(0)
        ok = exact <= Fraction(limit)
        value = float(exact)
        results.append({
            "gate": "max-wasted-percent", "limit": float(limit), "value": round(value, 4),
            "passed": ok, "over_by": round(max(value - float(limit), 0.0), 4),
            "message": f"max-wasted-percent: {value:.2f}% wasted, limit {float(limit):g}%"
                       + ("" if ok else f": over by {value - float(limit):.2f} percentage points")})
    if gates.min_efficiency is not None:
        limit = gates.min_efficiency
        exact = Fraction(stored - wasted, stored) if stored else Fraction(1)
        ok = exact >= Fraction(limit)
        value = float(exact)
        results.append({
            "gate": "min-efficiency", "limit": float(limit), "value": round(value, 6),
            "passed": ok, "under_by": round(max(float(limit) - value, 0.0), 6),
            "message": f"min-efficiency: efficiency {value:.4f}, minimum {float(limit):g}"
                       + ("" if ok else f": under by {float(limit) - value:.4f}")})
    return {"passed": all(r["passed"] for r in results), "results": results,
            "config": gates.config, "ignore": list(gates.ignore)}


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
    return any(fnmatch.fnmatchcase(text, g) for g in globs)


def _cpath(path: Path) -> bytes:
    return b"/" + join(path)


def layer_files(layer: Layer, ns: Namespaces) -> Iterator[Entry]:
    """Every regular file a layer holds (markers excluded, as the layer's rules say)."""
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


# -- containers -------------------------------------------------------------------------------------
def audit_container(upper: Layer, lowers: list[Layer], ns: Namespaces | None = None, *,
                    gates: Gates | None = None, target: dict | None = None) -> Report:
    """The bytes of a container's upper layer by category, and the unchanged copies (waste)."""
    gates = gates or Gates()
    if ns is None:
        ns = Namespaces.parse("auto", roots=layer_roots([upper, *lowers]))
    differ = Differ(upper, list(lowers), ns)
    recorded = {}
    deleted_files = deleted_bytes = 0
    anomalies = []
    for rec in differ.changes():
        if rec.change == ANOMALY:
            anomalies.append({**_path_fields(rec.path), "anomaly": rec.anomaly, "detail": rec.detail})
        elif rec.change == DELETED:
            if rec.type == "file":
                deleted_files += 1
                deleted_bytes += rec.shadow_data.size if rec.shadow_data is not None else rec.size or 0
        else:
            recorded[rec.path] = rec
    base = View(list(lowers), ns)
    merged = View([upper, *lowers], ns, upper=upper)
    rows: list[dict] = []
    by_inode: dict[int, list[dict]] = {}
    for entry in layer_files(upper, ns):
        path = _cpath(entry.path)
        rec = recorded.get(path)
        metacopy = is_metacopy(entry, ns)
        what: tuple = ()
        shadow: Entry | None = None
        if rec is not None and rec.change == ADDED:
            category = "added"
        elif rec is not None and rec.change == MODIFIED:
            shadow = rec.shadow_data or rec.shadow
            what = rec.what
            if "type" in what or rec.shadow is None or rec.shadow.kind != "file":
                category = "added"  # replaces a directory, symlink or device: new data
            elif metacopy:
                category = "metacopy"
            elif "content" in what:
                category = "copy_changed"
            else:
                category = "copy_unchanged"
        else:  # no record: a copy with nothing different (the scanner drops it)
            found = _shadow(base, merged, entry.path)
            if found is not None and found.top.kind == "file":
                shadow = found.data or found.top
                category = "metacopy" if metacopy else "copy_unchanged"
            else:
                category = "added"
        row = {**_path_fields(path), "_raw": path, "category": category, "size": entry.size,
               "bytes": 0 if metacopy else entry.size,
               "allocated": _allocated(entry), "what": list(what),
               "nlink": entry.nlink, "shadow_layer": None, "shadow_path": None}
        if shadow is not None:
            row["shadow_layer"] = lowers.index(shadow.layer) if shadow.layer in lowers else None
            row["shadow_path"] = _text(shadow.physical)
        rows.append(row)
        if entry.nlink > 1:
            by_inode.setdefault(entry.ino, []).append(row)
    # one inode, several names: its bytes count once, under the copy's name if there is one
    for names in by_inode.values():
        if len(names) < 2:
            continue
        names.sort(key=lambda r: r["_raw"])
        primary = next((r for r in names if r["category"] in ("copy_unchanged", "copy_changed",
                                                               "metacopy")), names[0])
        for r in names:
            if r is primary:
                if r["category"] == "copy_unchanged":
                    r["what"] = r["what"] + ["hard-link"]
                r["links"] = [_text(x["_raw"]) for x in names if x is not r]
            else:
                r["category"] = "link"
                r["bytes"] = 0
                r["allocated"] = 0 if r["allocated"] is not None else None
                r["link_of"] = _text(primary["_raw"])
    rows.sort(key=lambda r: r["_raw"])
    for r in rows:
        r["ignored"] = r["category"] == "copy_unchanged" and _ignored(r["_raw"], gates.ignore)
    cats = {c: {"category": c, "files": 0, "bytes": 0, "allocated": 0, "size": 0} for c in CATEGORIES}
    allocated_known = True
    for r in rows:
        c = cats[r["category"]]
        c["files"] += 1
        c["bytes"] += r["bytes"]
        c["size"] += r["size"]
        if r["allocated"] is None:
            allocated_known = False
        else:
            c["allocated"] += r["allocated"]
    if not allocated_known:
        for c in cats.values():
            c["allocated"] = None
    stored = sum(c["bytes"] for c in cats.values())
    waste_rows = [r for r in rows if r["category"] == "copy_unchanged"]
    ignored = sum(r["bytes"] for r in waste_rows if r["ignored"])
    wasted = sum(r["bytes"] for r in waste_rows if not r["ignored"])
    totals = {
        "stored_bytes": stored,
        "stored_files": sum(c["files"] for c in cats.values() if c["category"] != "link"),
        "allocated_bytes": sum(c["allocated"] for c in cats.values()) if allocated_known else None,
        "added_bytes": cats["added"]["bytes"], "added_files": cats["added"]["files"],
        "copy_changed_bytes": cats["copy_changed"]["bytes"],
        "copy_changed_files": cats["copy_changed"]["files"],
        "copy_unchanged_bytes": cats["copy_unchanged"]["bytes"],
        "copy_unchanged_files": cats["copy_unchanged"]["files"],
        "metacopy_files": cats["metacopy"]["files"], "metacopy_size": cats["metacopy"]["size"],
        "link_names": cats["link"]["files"],
        "deleted_files": deleted_files, "deleted_bytes": deleted_bytes,
        "wasted_bytes": wasted, "wasted_files": sum(1 for r in waste_rows if not r["ignored"]),
        "ignored_bytes": ignored,
        "wasted_percent": round(100 * _ratio(wasted, stored), 4),
        "efficiency": round(1 - _ratio(wasted, stored), 6) if stored else 1.0,
    }
    report = Report(kind="container", target=target or {}, totals=totals, anomalies=anomalies,
                    categories=list(cats.values()))
    report.waste = [{**{k: r[k] for k in ("path", "bytes", "allocated", "what", "shadow_layer",
                                           "shadow_path", "ignored")},
                     **({"path_b64": r["path_b64"]} if "path_b64" in r else {}),
                     "reason": "unchanged-copy", "_raw": r["_raw"]} for r in waste_rows]
    report.largest = [{k: v for k, v in r.items() if k != "_raw"}
                      for r in sorted(rows, key=lambda r: (-r["bytes"], r["_raw"]))[:gates.top]
                      if r["bytes"]]
    # every upper byte by directory (and how much of it is waste)
    dirs: dict[bytes, dict] = {}
    for r in rows:
        key = dir_of(r["_raw"], gates.depth)
        d = dirs.setdefault(key, {**_path_fields(key, "dir"), "bytes": 0, "files": 0, "added": 0,
                                  "copy_changed": 0, "copy_unchanged": 0})
        d["bytes"] += r["bytes"]
        d["files"] += 1 if r["category"] != "link" else 0
        if r["category"] in ("added", "copy_changed", "copy_unchanged"):
            d[r["category"]] += r["bytes"]
    _finish(report, gates)
    report.upper_dirs = sorted(dirs.values(), key=lambda d: (-d["bytes"], d["dir"]))
    for r in rows:
        r.pop("_raw", None)
    report.files = rows
    return report


# -- images -----------------------------------------------------------------------------------------
def _reason_of_deleted(rec, gone: dict[bytes, str]) -> str:
    via = rec.via
    if via in ("whiteout", "xwhiteout", "wh-file"):
        return "deleted"
    if via in ("opaque", "type-change"):
        return via
    # "parent": below a directory deleted above it; say how that one went
    path = rec.path
    while True:
        path = path.rsplit(b"/", 1)[0]
        if not path:
            return "deleted-dir"
        if path in gone:
            root = gone[path]
            return "deleted-dir" if root == "deleted" else root


def audit_image(image, *, gates: Gates | None = None) -> Report:
    """Stored, visible and wasted bytes of an image (an :class:`~ovforensics.stores.images.Image`)."""
    gates = gates or Gates()
    layers = [item.layer for item in image.layers]  # bottom first
    index_of = {id(layer): i for i, layer in enumerate(layers)}
    ns = Namespaces.parse(getattr(image, "xattr_ns", "auto") or "auto", roots=layer_roots(layers))

    # what each layer stores: inode groups (hard links store their data once)
    stored: dict[tuple[int, int], dict] = {}
    per_layer_files: list[list[Entry]] = []
    for i, layer in enumerate(layers):
        files = []
        for entry in layer_files(layer, ns):
            if is_metacopy(entry, ns):
                continue
            files.append(entry)
            key = (i, entry.ino)
            group = stored.get(key)
            if group is None:
                stored[key] = {"layer": i, "size": entry.size, "names": [entry.path]}
            else:
                group["names"].append(entry.path)
        per_layer_files.append(files)

    # when each stored file stops being visible, and why: the scanner on each layer over those below
    events: dict[tuple[int, Path], tuple[int, str, tuple]] = {}
    changes: list[dict] = []
    anomalies: list[dict] = []
    seen_anomalies: set = set()
    counts = [{k: {"count": 0, "bytes": 0} for k in ("added", "modified", "deleted", "copied")}
              for _ in layers]

    def event(entry: Entry | None, j: int, reason: str, what: tuple = ()) -> None:
        if entry is None or entry.kind != "file" or id(entry.layer) not in index_of:
            return
        events.setdefault((index_of[id(entry.layer)], entry.path), (j, reason, what))

    for j, upper in enumerate(layers):
        lowers = layers[:j][::-1]  # topmost first
        recorded: set[bytes] = set()
        gone: dict[bytes, str] = {}
        for rec in Differ(upper, lowers, ns).changes():
            if rec.change == ANOMALY:  # a layer's own damage is told by every scan that reads it
                key = (rec.path, rec.anomaly, rec.detail)
                if key not in seen_anomalies:
                    seen_anomalies.add(key)
                    anomalies.append({"layer": j, **_path_fields(rec.path), "anomaly": rec.anomaly,
                                      "detail": rec.detail})
                continue
            recorded.add(rec.path)
            shadow = rec.shadow
            row = {"layer": j, **_path_fields(rec.path), "change": rec.change, "type": rec.type,
                   "size": rec.size, "what": list(rec.what), "via": rec.via,
                   "shadows": index_of.get(id(shadow.layer)) if shadow is not None else None,
                   "shadow_size": shadow.size if shadow is not None else None}
            c = counts[j][rec.change]
            c["count"] += 1
            if rec.change == DELETED:
                reason = _reason_of_deleted(rec, gone)
                if rec.type == "dir":
                    gone[rec.path] = {"deleted-dir": "deleted"}.get(reason, reason)
                row["reason"] = reason
                if shadow is not None and shadow.kind == "file":
                    c["bytes"] += shadow.size
                    event(rec.shadow_data, j, reason)
            elif rec.change == MODIFIED:
                if rec.type == "file":
                    c["bytes"] += rec.size or 0
                old = rec.shadow_data if shadow is not None and shadow.kind == "file" else None
                if old is not None and not (rec.data is not None and rec.data.layer is old.layer
                                            and rec.data.path == old.path):
                    if "type" in rec.what:
                        reason = "type-change"
                    elif "content" in rec.what:
                        reason = "overwritten"
                    else:
                        reason = "unchanged-copy"
                    row["reason"] = reason
                    event(old, j, reason, rec.what)
            elif rec.change == ADDED and rec.type == "file":
                c["bytes"] += rec.size or 0
            changes.append(row)
        # copies with nothing different: no record, but the lower file is hidden all the same
        if lowers:
            base = View(list(lowers), ns)
            merged = View([upper, *lowers], ns, upper=upper)
            for entry in per_layer_files[j]:
                path = _cpath(entry.path)
                if path in recorded:
                    continue
                found = _shadow(base, merged, entry.path)
                if found is None or found.top.kind != "file" or found.data is None:
                    continue
                event(found.data, j, "unchanged-copy")
                counts[j]["copied"]["count"] += 1
                counts[j]["copied"]["bytes"] += entry.size
                changes.append({"layer": j, **_path_fields(path), "change": "copied", "type": "file",
                                "size": entry.size, "what": [], "via": None,
                                "shadows": index_of.get(id(found.data.layer)),
                                "shadow_size": found.data.size, "reason": "unchanged-copy"})

    # what the final image shows
    visible_keys = _visible(layers, ns, index_of)

    waste: list[dict] = []
    layer_rows = []
    for i, item in enumerate(image.layers):
        layer_rows.append({
            "index": i, "command": item.command, "created": item.created, "comment": item.comment,
            "diff_id": item.diff_id, "digest": item.digest, "id": item.id, "source": item.source,
            "stored_files": 0, "stored_bytes": 0, "visible_files": 0, "visible_bytes": 0,
            "wasted_files": 0, "wasted_bytes": 0, "ignored_bytes": 0,
            "caused_files": 0, "caused_bytes": 0, **{k: v for k, v in counts[i].items()}})
    for key, group in stored.items():
        i, size = group["layer"], group["size"]
        row = layer_rows[i]
        row["stored_files"] += 1
        row["stored_bytes"] += size
        if key in visible_keys:
            row["visible_files"] += 1
            row["visible_bytes"] += size
            continue
        names = sorted(group["names"])
        named = next((p for p in names if (i, p) in events), names[0])
        made_by, reason, what = events.get((i, named), (None, "hidden", ()))
        raw = _cpath(named)
        ignored = _ignored(raw, gates.ignore)
        waste.append({**_path_fields(raw), "_raw": raw, "bytes": size, "layer": i,
                      "made_by": made_by, "reason": reason, "what": list(what),
                      "links": len(names), "ignored": ignored,
                      "layer_command": image.layers[i].command,
                      "made_by_command": image.layers[made_by].command if made_by is not None else None})
        if ignored:
            row["ignored_bytes"] += size
            continue
        row["wasted_files"] += 1
        row["wasted_bytes"] += size
        if made_by is not None:
            layer_rows[made_by]["caused_files"] += 1
            layer_rows[made_by]["caused_bytes"] += size
    waste.sort(key=lambda w: (-w["bytes"], w["_raw"]))
    stored_bytes = sum(r["stored_bytes"] for r in layer_rows)
    visible_bytes = sum(r["visible_bytes"] for r in layer_rows)
    wasted = sum(r["wasted_bytes"] for r in layer_rows)
    ignored_bytes = sum(r["ignored_bytes"] for r in layer_rows)
    totals = {
        "layers": len(layers),
        "stored_bytes": stored_bytes, "stored_files": sum(r["stored_files"] for r in layer_rows),
        "visible_bytes": visible_bytes, "visible_files": sum(r["visible_files"] for r in layer_rows),
        "wasted_bytes": wasted, "wasted_files": sum(r["wasted_files"] for r in layer_rows),
        "ignored_bytes": ignored_bytes,
        "wasted_percent": round(100 * _ratio(wasted, stored_bytes), 4),
        "efficiency": round(_ratio(stored_bytes - wasted, stored_bytes), 6) if stored_bytes else 1.0,
        "by_reason": {r: sum(w["bytes"] for w in waste if w["reason"] == r and not w["ignored"])
                      for r in REASONS},
    }
    target = image.to_dict()
    report = Report(kind="image", target=target, totals=totals, layers=layer_rows, waste=waste,
                    changes=changes, anomalies=anomalies, warnings=list(image.warnings))
    return _finish(report, gates)


def _visible(layers: list[Layer], ns: Namespaces, index_of: dict[int, int]) -> set[tuple[int, int]]:
    """The (layer, inode) of every regular file the final image shows."""
    view = View(list(reversed(layers)), ns)
    out: set[tuple[int, int]] = set()
    stack = [view.root_frames]
    while stack:
        frames = stack.pop()
        subdirs = []
        for name in sorted(view.names(frames)):
            found = view.lookup(frames, name)
            if found is None:
                continue
            if found.top.is_dir:
                subdirs.append(found.frames)
            elif found.top.kind == "file" and found.data is not None:
                out.add((index_of[id(found.data.layer)], found.data.ino))
        view.forget(frames)
        stack.extend(reversed(subdirs))
    return out


# -- writers ----------------------------------------------------------------------------------------
WASTE_COLUMNS = ("path", "bytes", "layer", "made_by", "reason", "what", "links", "ignored",
                 "layer_command", "made_by_command", "path_b64")
CONTAINER_WASTE_COLUMNS = ("path", "bytes", "allocated", "reason", "what", "shadow_layer",
                           "shadow_path", "ignored", "path_b64")
FILE_COLUMNS = ("path", "category", "bytes", "size", "allocated", "what", "nlink", "shadow_layer",
                "shadow_path", "ignored", "path_b64")
LAYER_COLUMNS = ("index", "stored_files", "stored_bytes", "visible_bytes", "wasted_files",
                 "wasted_bytes", "caused_files", "caused_bytes", "ignored_bytes", "added_count",
                 "added_bytes", "modified_count", "modified_bytes", "deleted_count",
                 "deleted_bytes", "copied_count", "copied_bytes", "command", "created", "diff_id",
                 "digest", "id", "source")
DIR_COLUMNS = ("dir", "bytes", "files", "dir_b64")
UPPER_DIR_COLUMNS = ("dir", "bytes", "files", "added", "copy_changed", "copy_unchanged", "dir_b64")
CHANGE_COLUMNS = ("layer", "path", "change", "type", "size", "what", "via", "reason", "shadows",
                  "shadow_size", "path_b64")
ROWS = {"image": ("waste", "layers", "dirs", "changes"), "container": ("files", "waste", "dirs")}


def _flat_layer(row: dict) -> dict:
    out = dict(row)
    for kind in ("added", "modified", "deleted", "copied"):
        out[f"{kind}_count"] = row[kind]["count"]
        out[f"{kind}_bytes"] = row[kind]["bytes"]
    return out


def rows_of(report: Report, which: str | None) -> tuple[list[dict], tuple[str, ...]]:
    """The rows ``--rows`` names (CSV writes one table)."""
    which = which or ("waste" if report.kind == "image" else "files")
    if which not in ROWS[report.kind]:
        raise BloatError(f"--rows: expected one of {', '.join(ROWS[report.kind])} for "
                         f"{report.kind}, got {which!r}")
    if which == "waste":
        return report.waste, WASTE_COLUMNS if report.kind == "image" else CONTAINER_WASTE_COLUMNS
    if which == "layers":
        return [_flat_layer(r) for r in report.layers], LAYER_COLUMNS
    if which == "dirs":
        if report.kind == "container":  # every upper byte by directory, by category
            return report.upper_dirs, UPPER_DIR_COLUMNS
        return report.by_directory, DIR_COLUMNS
    if which == "changes":
        return report.changes, CHANGE_COLUMNS
    return report.files, FILE_COLUMNS


def _json_text(value) -> str:
    text = escape_surrogates(json.dumps(value, ensure_ascii=False, indent=1))
    for raw, esc in (("\x85", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, esc)
    return text


def write_report(fmt: str, report: Report, stream: TextIO, rows: str | None = None) -> None:
    if fmt == "json":
        stream.write(_json_text(report.to_dict()) + "\n")
    elif fmt == "jsonl":
        _write_jsonl(report, stream)
    elif fmt == "csv":
        data, columns = rows_of(report, rows)
        _write_csv(data, columns, stream)
    elif fmt == "table":
        _write_table(report, stream)
    elif fmt == "html":
        from ovforensics.bloat.report_html import render

        stream.write(render(report))
    else:
        raise BloatError(f"--format: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    stream.flush()


def _write_jsonl(report: Report, stream: TextIO) -> None:
    d = report.to_dict()
    head = {"record": "summary", "report": d["report"], "schema": SCHEMA, report.kind: d[report.kind],
            "totals": d["totals"], "gates": d["gates"], "depth": report.depth,
            "warnings": report.warnings}
    stream.write(json_line(head) + "\n")
    parts = [("layer", report.layers), ("category", report.categories),
             ("directory", report.by_directory), ("upper_directory", report.upper_dirs),
             ("waste", report.waste),
             ("change", report.changes), ("file", report.files), ("anomaly", report.anomalies)]
    for kind, items in parts:
        for item in items:
            stream.write(json_line({"record": kind, **item}) + "\n")


def _write_csv(rows: list[dict], columns: tuple[str, ...], stream: TextIO) -> None:
    out = csv.writer(stream, lineterminator="\r\n")
    out.writerow(columns)
    for row in rows:
        cells = []
        for col in columns:
            value = row.get(col)
            if value is None:
                cells.append("")
            elif isinstance(value, bool):
                cells.append("true" if value else "false")
            elif isinstance(value, (list, tuple)):
                cells.append(guard_formula(";".join(str(v) for v in value)))
            elif isinstance(value, str):
                cells.append(guard_formula(value))
            else:
                cells.append(value)
        for key in ("path", "dir"):
            if key in columns and f"{key}_b64" in columns:
                i, b = columns.index(key), columns.index(f"{key}_b64")
                if not cells[b] and isinstance(row.get(key), str) and cells[i] != row[key]:
                    cells[b] = base64.b64encode(row[key].encode("utf-8")).decode("ascii")
        out.writerow(cells)


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    text = visible(text)
    return text if len(text) <= width else text[:width - 1] + "…"


def _write_table(report: Report, stream: TextIO) -> None:
    t = report.totals
    w = stream.write
    if report.kind == "image":
        img = report.target
        w(f"Image: {visible(str(img.get('name') or img.get('ref')))} "
          f"({(img.get('id') or '?').split(':')[-1][:12]}), {img.get('kind')} "
          f"{visible(str(img.get('location')))}, {t['layers']} layers\n")
        w(f"Stored {t['stored_bytes']} bytes ({human(t['stored_bytes'])}) in {t['stored_files']} files; "
          f"visible {t['visible_bytes']} ({human(t['visible_bytes'])}); wasted {t['wasted_bytes']} "
          f"({human(t['wasted_bytes'])}, {t['wasted_percent']:.2f}%); efficiency {t['efficiency']:.4f}\n")
        if t["ignored_bytes"]:
            w(f"Ignored (--ignore): {t['ignored_bytes']} bytes\n")
    else:
        c = report.target
        name = ",".join(c.get("names") or []) or c.get("upper") or "?"
        w(f"Container: {visible(str(name))} ({visible(str(c.get('engine') or 'layers'))})\n")
        alloc = t["allocated_bytes"]
        w(f"Upper layer: {t['stored_bytes']} bytes ({human(t['stored_bytes'])}) in "
          f"{t['stored_files']} files" + (f", {alloc} allocated ({human(alloc)})" if alloc is not None else "")
          + "\n")
        w(f"Wasted (unchanged copies): {t['wasted_bytes']} ({human(t['wasted_bytes'])}, "
          f"{t['wasted_percent']:.2f}%); efficiency {t['efficiency']:.4f}\n")
    gates = report.gates.get("results") or []
    for g in gates:
        w(f"Gate {'passed' if g['passed'] else 'FAILED'}: {g['message']}\n")
    if report.kind == "image":
        table = [[r["index"], r["stored_bytes"], r["visible_bytes"], r["wasted_bytes"],
                  r["caused_bytes"], r["added"]["count"], r["modified"]["count"],
                  r["deleted"]["count"], r["copied"]["count"], _short(r["command"])]
                 for r in report.layers]
        w("\nLayers (0 = bottom):\n")
        w(tabulate(table, headers=("layer", "stored", "visible", "wasted here", "made waste",
                                   "added", "modified", "deleted", "copied", "command"),
                   disable_numparse=True) + "\n")
        top = [[w_["bytes"], _short(w_["path"], 80), w_["layer"],
                "" if w_["made_by"] is None else w_["made_by"], w_["reason"]] for w_ in report.top]
        w(f"\nTop {len(top)} wasted paths:\n")
        w((tabulate(top, headers=("bytes", "path", "stored in", "made waste by", "reason"),
                    disable_numparse=True) if top else "(none)") + "\n")
    else:
        cats = [[c["category"], c["files"], c["bytes"], "" if c["allocated"] is None else c["allocated"],
                 c["size"]] for c in report.categories]
        w("\n" + tabulate(cats, headers=("category", "files", "bytes", "allocated", "apparent size"),
                          disable_numparse=True) + "\n")
        top = [[r["bytes"], _short(r["path"], 80), r["category"], ",".join(r["what"])]
               for r in report.largest]
        w(f"\nLargest {len(top)} files in the upper layer:\n")
        w((tabulate(top, headers=("bytes", "path", "category", "what"), disable_numparse=True)
           if top else "(none)") + "\n")
    dirs = [[d["bytes"], d["files"], _short(d["dir"], 80)] for d in report.by_directory]
    w(f"\nWasted bytes by directory (depth {report.depth}):\n")
    w((tabulate(dirs, headers=("bytes", "files", "directory"), disable_numparse=True)
       if dirs else "(none)") + "\n")
    if report.anomalies:
        w(f"\n{len(report.anomalies)} anomalies (see --format json)\n")
