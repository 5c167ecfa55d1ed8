"""The bloat of a container's upper layer: added files, copies with new content, copies with the
same content (chmod, chown, touch, hard link: wasted), metacopy."""
from __future__ import annotations

from ovforensics.bloat.gates import Gates, _ratio
from ovforensics.bloat.model import (CATEGORIES, Report, _allocated, _cpath, _finish, _ignored,
    _path_fields, _shadow, _text, dir_of, layer_files)
from ovforensics.layers.layer import Entry, Layer
from ovforensics.layers.markers import Namespaces, is_metacopy
from ovforensics.records.record import ADDED, ANOMALY, DELETED, MODIFIED
from ovforensics.scanner.diff import Differ
from ovforensics.scanner.resolve import View, layer_roots


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
    for entry in layer_files(upper, ns, "reading the upper layer"):
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
