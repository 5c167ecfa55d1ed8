"""The triage summary of a container: what a responder looks at first, then the rest.

First: packaged files whose content no longer matches their package (``altered``) or that are
gone while their package still lists them (``missing``); unowned executables (added or changed,
runnable: ELF, a script with an exec bit, setuid/setgid; owned by no package); YARA rule
matches; packages installed, removed, upgraded or altered. After: every other change, counted by
package status, and listed (up to :data:`MAX_REST` rows). Written as a table, JSON or one
self-contained HTML page (the bloat report's style, script and Content-Security-Policy).
"""
from __future__ import annotations

import json
from typing import Iterable, TextIO

from ovforensics.records.record import ANOMALY

FORMATS = ("table", "json", "html")
MAX_REST = 1000
FIRST = ("altered", "unowned_executables", "yara", "packages")
TITLES = {"altered": "Packaged files altered or missing",
          "unowned_executables": "Unowned executables",
          "yara": "YARA rule matches", "packages": "Packages changed"}
COLUMNS = {
    "altered": ("change", "path", "package", "package_status", "what"),
    "unowned_executables": ("change", "path", "exec_flags", "package_status", "mode", "size"),
    "yara": ("change", "path", "yara", "lower_yara", "package_status"),
    "packages": ("manager", "package", "change", "version_before", "version_after", "altered",
                 "missing"),
    "rest": ("change", "path", "type", "what", "package", "package_status"),
}


def _exec_flags(record) -> list[str]:
    from ovforensics.scanner.enrich import exec_flags

    entry = record.data or record.entry
    head = b""
    try:
        with entry.open() as fh:
            head = fh.read(4)
    except Exception:  # noqa: BLE001 - unreadable: flags from the mode alone
        pass
    return exec_flags(record.entry, head, {})


def build(records: Iterable, checker, target: dict) -> dict:
    """The summary's sections from checked records (``scan(..., packages=holder)``)."""
    from ovforensics.scanner.enrich import is_executable
    from ovforensics.packages.changes import package_rows

    out = {"target": target, "altered": [], "unowned_executables": [], "yara": [],
           "packages": [], "rest": [], "rest_count": 0, "counts": {}, "problems": []}
    for record in records:
        if record.change == ANOMALY:
            out["problems"].append({"path": record.path_text, "anomaly": record.anomaly,
                                    "detail": record.detail})
            continue
        row = record.to_dict()
        status = row.get("package_status")
        out["counts"][status] = out["counts"].get(status, 0) + 1
        first = False
        if status in ("altered", "missing"):
            out["altered"].append(row)
            first = True
        if status in ("unowned", "unknown", "no-database") and record.type == "file" and \
                record.change != "deleted":
            flags = _exec_flags(record)
            if is_executable(flags) or "exec-bit" in flags:
                row["exec_flags"] = flags
                out["unowned_executables"].append(row)
                first = True
        if row.get("yara") or row.get("lower_yara"):
            out["yara"].append(row)
            first = True
        if not first:
            out["rest_count"] += 1
            if len(out["rest"]) < MAX_REST:
                out["rest"].append(row)
    out["packages"] = list(package_rows(checker.base, checker.merged, checker.tally))
    return out


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def write(fmt: str, summary: dict, stream: TextIO) -> None:
    if fmt == "json":
        stream.write(json.dumps(summary, ensure_ascii=False, indent=1) + "\n")
    elif fmt == "html":
        stream.write(render_html(summary))
    elif fmt == "table":
        write_table(summary, stream)
    else:
        raise ValueError(f"unknown triage format {fmt!r}; expected one of {', '.join(FORMATS)}")


def write_table(summary: dict, stream: TextIO) -> None:
    from tabulate import tabulate

    from ovforensics.writers.formats import visible

    t = summary["target"]
    stream.write(visible(f"Triage: {t.get('name') or t.get('upper')}") + "\n")
    for key in (*FIRST, "rest"):
        rows = summary[key]
        title = TITLES.get(key) or f"Everything else ({summary['rest_count']} changes)"
        stream.write(f"\n== {title}: {len(rows) if key != 'rest' else summary['rest_count']}\n")
        if rows:
            cols = COLUMNS[key]
            table = [[visible(_cell(r.get(c))) for c in cols] for r in rows]
            stream.write(tabulate(table, headers=cols, disable_numparse=True,
                                  preserve_whitespace=True) + "\n")
        if key == "rest" and summary["rest_count"] > len(rows):
            stream.write(f"({summary['rest_count'] - len(rows)} more: ovforensics diff --packages)\n")
    if summary["problems"]:
        stream.write(f"\n== Anomalies and database problems: {len(summary['problems'])}\n")
        for p in summary["problems"]:
            stream.write(visible(f"{p['path']}: {p['anomaly']}: {p['detail']}") + "\n")


def render_html(summary: dict) -> str:
    from ovforensics.writers.html import CSP, SCRIPT, STYLE, _cards, _table, esc

    t = summary["target"]
    title = f"Triage: {t.get('name') or t.get('upper')}"
    cards = [(TITLES[k], str(len(summary[k])), "waste" if summary[k] and k != "packages" else "")
             for k in FIRST]
    cards.append(("other changes", str(summary["rest_count"]), ""))
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f'<header><h1>{esc(title)}</h1><p class="meta">{esc(t.get("engine") or "layers")}; '
        f'upper {esc(t.get("upper"))}</p>', _cards(cards), "</header><main>",
    ]
    for key in (*FIRST, "rest"):
        cols = COLUMNS[key]
        heading = TITLES.get(key) or f"Everything else ({summary['rest_count']} changes)"
        rows = [[(_cell(r.get(c)), r.get(c) if isinstance(r.get(c), int) else None) for c in cols]
                for r in summary[key]]
        kinds = [("p" if c == "path" else "n" if c in ("size", "altered", "missing") else "t")
                 for c in cols]
        body.append(f"<h2>{esc(heading)}</h2>" + _table(f"{key}-table", list(zip(cols, kinds)), rows))
        if key == "rest" and summary["rest_count"] > len(summary["rest"]):
            body.append(f'<p class="meta">{summary["rest_count"] - len(summary["rest"])} more: '
                        "ovforensics diff --packages</p>")
    if summary["problems"]:
        body.append("<h2>Anomalies and database problems</h2>" + _table(
            "problems-table", [("path", "p"), ("anomaly", "t"), ("detail", "p")],
            [[(p["path"], None), (p["anomaly"], None), (p["detail"], None)]
             for p in summary["problems"]]))
    body.append('<p class="meta">ovforensics triage summary. Statuses: docs/packages.md.</p>'
                f"</main><script>{SCRIPT}</script></body></html>\n")
    return "".join(body)
