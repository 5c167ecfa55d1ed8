"""An audit's report in every format (table, csv, json, jsonl; html through ``report_html``)."""
from __future__ import annotations

import base64
import csv
import json
from typing import TextIO

from ovforensics.bloat.gates import BloatError
from ovforensics.bloat.model import Report, SCHEMA
from ovforensics.evidence.storetext import escape_surrogates
from ovforensics.units import human
from ovforensics.writers import tables
from ovforensics.writers.formats import guard_formula, json_line, visible


FORMATS = ("table", "json", "jsonl", "csv", "html")


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


def write_report(fmt: str, report: Report, stream: TextIO, rows: str | None = None,
                 no_trunc: bool = False, width: int | None = None) -> None:
    if fmt == "json":
        stream.write(_json_text(report.to_dict()) + "\n")
    elif fmt == "jsonl":
        _write_jsonl(report, stream)
    elif fmt == "csv":
        data, columns = rows_of(report, rows)
        _write_csv(data, columns, stream)
    elif fmt == "table":
        _write_table(report, stream, width or tables.width_for(stream), no_trunc)
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


def _table(w, headers, kinds, data, width: int, no_trunc: bool) -> None:
    """One table fitted to ``width`` (sizes human, long paths and commands wrapped)."""
    if not data:
        w("(none)\n")
        return
    cells = [[visible(tables.cell(v, k, no_trunc)) for v, k in zip(row, kinds)] for row in data]
    for line in tables.render(headers, cells, kinds, width, no_trunc):
        w(line + "\n")


def _write_table(report: Report, stream: TextIO, width: int = tables.DEFAULT_WIDTH,
                 no_trunc: bool = False) -> None:
    t = report.totals

    def w(text: str) -> None:  # prose lines wrap at the width too
        stream.write("\n".join(tables.wrap_text(line, width, no_trunc) for line in text.split("\n")))

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
                  r["deleted"]["count"], r["copied"]["count"], r["command"]]
                 for r in report.layers]
        w("\nLayers (0 = bottom):\n")
        _table(w, ("layer", "stored", "visible", "wasted here", "made waste", "add", "mod",
                   "del", "copy", "command"),
               ("text", "bytes", "bytes", "bytes", "bytes", "text", "text", "text", "text", "wrap"),
               table, width, no_trunc)
        top = [[w_["bytes"], w_["path"], w_["layer"], w_["made_by"], w_["reason"]]
               for w_ in report.top]
        w(f"\nTop {len(top)} wasted paths:\n")
        _table(w, ("bytes", "path", "stored in", "made waste by", "reason"),
               ("bytes", "wrap", "text", "text", "wrap"), top, width, no_trunc)
    else:
        cats = [[c["category"], c["files"], c["bytes"], c["allocated"], c["size"]]
                for c in report.categories]
        w("\n")
        _table(w, ("category", "files", "bytes", "allocated", "apparent size"),
               ("text", "text", "bytes", "bytes", "bytes"), cats, width, no_trunc)
        top = [[r["bytes"], r["path"], r["category"], r["what"]] for r in report.largest]
        w(f"\nLargest {len(top)} files in the upper layer:\n")
        _table(w, ("bytes", "path", "category", "what"), ("bytes", "wrap", "text", "wrap"), top,
               width, no_trunc)
    dirs = [[d["bytes"], d["files"], d["dir"]] for d in report.by_directory]
    w(f"\nWasted bytes by directory (depth {report.depth}):\n")
    _table(w, ("bytes", "files", "directory"), ("bytes", "text", "wrap"), dirs, width, no_trunc)
    if report.anomalies:
        w(f"\n{len(report.anomalies)} anomalies (see --format json)\n")
