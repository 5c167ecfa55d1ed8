"""The bloat of an image's layers: stored, visible and wasted bytes, each wasted byte attributed
to a path, the layer that stored it and the layer that made it waste."""
from __future__ import annotations

from ovforensics.bloat.gates import Gates, _ratio
from ovforensics.bloat.model import (REASONS, Report, _cpath, _finish, _ignored, _path_fields,
    _shadow, layer_files)
from ovforensics.layers.layer import Entry, Layer, Path
from ovforensics.layers.markers import Namespaces, is_metacopy
from ovforensics.records.record import ADDED, ANOMALY, DELETED, MODIFIED
from ovforensics.scanner.diff import Differ
from ovforensics.scanner.resolve import View, layer_roots


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
        for entry in layer_files(layer, ns, f"reading layer {i + 1} of {len(layers)}"):
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
