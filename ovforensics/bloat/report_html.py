"""The bloat report as one self-contained HTML file.

Everything is in the file: the style sheet, the charts (inline SVG, drawn here), the tables
behind them and a small script that makes the tables sortable. Nothing is fetched: a
Content-Security-Policy allows no network at all, and only this file's own style sheet and
script (by their SHA-256), so even a name that slipped through escaping could not run or load
anything. Every name from the evidence (paths, commands, image names) is shown through
:func:`ovforensics.writers.formats.visible` (control and bidi characters as escapes) and then HTML-escaped.
"""
from __future__ import annotations

import math

from ovforensics.units import human
from ovforensics.writers.formats import visible
from ovforensics.writers.html import CSP, SCRIPT, STYLE, _b, _cards, _n, _table, esc


def _short(text, width: int) -> str:
    text = visible("" if text is None else str(text))
    return text if len(text) <= width else text[:width - 1] + "\u2026"


# -- charts --------------------------------------------------------------------------------------
#: What the numbers mean, in the report itself (its reader may not have the docs).
HOW_TO_READ = {
    "image": (
        '<div class="how"><p>Sizes are apparent file sizes in bytes (KiB/MiB are powers of 1024). '
        "Layers are numbered from 0, the bottom (base) layer.</p><ul>"
        "<li>stored: bytes of regular files the layer's archive holds.</li>"
        "<li>visible: bytes of those files still seen in the final image (not replaced or "
        "deleted by a later layer).</li>"
        "<li>wasted here: bytes stored in this layer that a later layer replaced or deleted: "
        "they still ship with the image but nobody sees them.</li>"
        "<li>made waste: bytes of earlier layers that this layer replaced or deleted (the "
        "layer to fix).</li>"
        "<li>efficiency: (stored - wasted) / stored bytes (1.0 = nothing wasted); "
        "wasted percent: 100 &#215; wasted / stored.</li>"
        "<li>Wasted paths matched by --ignore are listed but counted apart, as "
        "ignored, not as waste.</li>"
        "<li>Gates: the limits given (--max-wasted, --max-wasted-percent, "
        "--min-efficiency or the [bloat] table of a config file); a failed gate makes the "
        "command exit with status 3.</li></ul></div>"),
    "container": (
        '<div class="how"><p>Sizes are apparent file sizes in bytes (KiB/MiB are powers of 1024); '
        "allocated is what the file system really used, where it could be read.</p><ul>"
        "<li>added: files new in the upper (writable) layer.</li>"
        "<li>copy_changed: files copied up from the image whose content changed.</li>"
        "<li>copy_unchanged: files copied up with the same content (a chmod, chown, touch "
        "or hard link copied the whole file): this is the waste.</li>"
        "<li>metacopy: copies holding only metadata (the data stays in the image): "
        "0 bytes.</li>"
        "<li>efficiency: (stored - wasted) / stored, stored being the upper layer's bytes "
        "(1.0 = nothing wasted).</li>"
        "<li>Gates: the limits given (--max-wasted, --max-wasted-percent, "
        "--min-efficiency or the [bloat] table of a config file); a failed gate makes the "
        "command exit with status 3.</li></ul></div>"),
}


def bar_chart(chart_id: str, rows: list[tuple[str, str, list[tuple[str, int, str]]]],
              width: int = 1100) -> str:
    """Horizontal grouped bars: rows of (label, tooltip, [(css class, value, series name)])."""
    label_w, row_h, bar_h, pad = 330, 34, 12, 10
    series_n = max((len(s) for _, _, s in rows), default=1)
    row_h = max(row_h, series_n * (bar_h + 3) + 8)
    height = pad * 2 + max(len(rows), 1) * row_h
    top = max((v for _, _, s in rows for _, v, _ in s), default=0) or 1
    scale_w = width - label_w - 110
    out = [f'<svg class="chart" id="{chart_id}" '
           f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">']
    if not rows:
        out.append(f'<text x="20" y="{pad + 20}">nothing to show</text>')
    for r, (label, tip, series) in enumerate(rows):
        y0 = pad + r * row_h
        middle = y0 + row_h / 2  # the label's and the bar group's vertical centre, the same
        group_h = len(series) * bar_h + max(len(series) - 1, 0) * 3
        out.append(f'<text class="label" x="8" y="{middle:.1f}" dominant-baseline="central">'
                   f'<title>{esc(tip)}</title>{esc(_short(label, 46))}</text>')
        for s, (css, value, name) in enumerate(series):
            y = middle - group_h / 2 + s * (bar_h + 3)
            w = value / top * scale_w
            if value and w < 1:
                w = 1.0
            out.append(f'<rect class="bar {css}" x="{label_w}" y="{y:.1f}" width="{w:.2f}" '
                       f'height="{bar_h}"><title>{esc(name)}: {value} bytes ({esc(human(value))})'
                       f'</title></rect>')
            if value:
                out.append(f'<text class="value" x="{label_w + w + 6:.1f}" y="{y + bar_h / 2:.1f}" '
                           f'dominant-baseline="central">{esc(human(value))}</text>')
    out.append("</svg>")
    return "".join(out)


def squarify(values: list[float], x: float, y: float, w: float, h: float) -> list[tuple]:
    """Squarified treemap (Bruls, Huizing, van Wijk): one rectangle per value, largest first."""
    total = sum(values)
    if total <= 0 or w <= 0 or h <= 0:
        return [(x, y, 0.0, 0.0) for _ in values]
    areas = [v * w * h / total for v in values]
    rects: list[tuple] = []

    def worst(row: list[float], length: float) -> float:
        s = sum(row)
        return max(max(length * length * a / (s * s), (s * s) / (length * length * a)) for a in row)

    i = 0
    while i < len(areas):
        length = min(w, h)
        row = [areas[i]]
        i += 1
        while i < len(areas) and areas[i] > 0 and worst(row + [areas[i]], length) <= worst(row, length):
            row.append(areas[i])
            i += 1
        s = sum(row)
        if w >= h:
            cw = s / h if h else 0
            yy = y
            for a in row:
                rh = a / cw if cw else 0
                rects.append((x, yy, cw, rh))
                yy += rh
            x += cw
            w -= cw
        else:
            rh = s / w if w else 0
            xx = x
            for a in row:
                cw = a / rh if rh else 0
                rects.append((xx, y, cw, rh))
                xx += cw
            y += rh
            h -= rh
    return rects


def treemap(chart_id: str, items: list[tuple[str, int, float]], width: int = 1100,
            height: int = 380, limit: int = 60) -> str:
    """Treemap of (label, bytes, waste share 0..1) items (the largest ``limit``; the rest as one)."""
    items = [it for it in items if it[1] > 0]
    items.sort(key=lambda it: -it[1])
    if len(items) > limit:
        rest = items[limit - 1:]
        items = items[:limit - 1] + [(f"({len(rest)} more directories)", sum(i[1] for i in rest),
                                      sum(i[1] * i[2] for i in rest) / max(sum(i[1] for i in rest), 1))]
    out = [f'<svg class="chart" id="{chart_id}" '
           f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">']
    if not items:
        out.append('<text x="20" y="30">nothing to show</text>')
    rects = squarify([float(it[1]) for it in items], 0, 0, width, height)
    for (label, value, share), (x, y, w, h) in zip(items, rects):
        # red for waste, blue-grey for kept bytes; lighter for smaller cells
        light = 32 + int(28 * (1 - math.sqrt(value / items[0][1])))
        hue = 4 if share >= 0.5 else 214
        sat = 62 if share >= 0.5 else 30
        out.append(f'<rect class="cell" x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" '
                   f'fill="hsl({hue},{sat}%,{light}%)"><title>{esc(label)}: {value} bytes '
                   f'({esc(human(value))})</title></rect>')
        if w > 70 and h > 34:
            chars = max(int(w / 7.2), 4)
            out.append(f'<text class="in" x="{x + 5:.1f}" y="{y + 15:.1f}">'
                       f'{esc(_short(label, chars))}</text>'
                       f'<text class="in" x="{x + 5:.1f}" y="{y + 30:.1f}">{esc(human(value))}</text>')
    out.append("</svg>")
    return "".join(out)


def _gates(report) -> str:
    results = report.gates.get("results") or []
    if not results:
        return '<p class="none" id="gates">No gates set.</p>'
    rows = "".join(
        f'<tr><td>{esc(g["gate"])}</td><td class="{"passed" if g["passed"] else "failed"}">'
        f'{"passed" if g["passed"] else "FAILED"}</td><td>{esc(g["message"])}</td></tr>'
        for g in results)
    return (f'<table id="gates"><thead><tr><th>gate</th><th>result</th><th>detail</th></tr>'
            f'</thead><tbody>{rows}</tbody></table>')


# -- the page -------------------------------------------------------------------------------------
def render(report) -> str:
    t = report.totals
    if report.kind == "image":
        img = report.target
        title = f"Image bloat: {img.get('name') or img.get('ref')}"
        meta = (f"{img.get('kind')} {img.get('location')}; id {img.get('id') or '?'}; "
                f"{t['layers']} layers")
        cards = [("stored in the layers", human(t["stored_bytes"]), ""),
                 ("visible in the final image", human(t["visible_bytes"]), ""),
                 ("wasted", human(t["wasted_bytes"]), "waste"),
                 ("wasted percent", f"{t['wasted_percent']:.2f}%", "waste"),
                 ("efficiency (visible / stored)", f"{t['efficiency']:.4f}", "")]
        if t.get("ignored_bytes"):
            cards.append(("ignored (--ignore)", human(t["ignored_bytes"]), ""))
        bars = [(f"layer {r['index']}: {r['command'] or r['comment'] or r['diff_id'] or ''}",
                 f"layer {r['index']}: {r['command'] or ''}",
                 [("wasted", r["wasted_bytes"], "stored here, wasted later"),
                  ("caused", r["caused_bytes"], "lower layers' bytes this layer made waste")])
                for r in report.layers]
        legend = ('<p class="legend"><span class="wasted"></span>bytes the layer stored that the '
                  'final image does not show<span class="caused"></span>bytes of lower layers the '
                  'layer made waste</p>')
        chart1_title = "Waste by layer"
        tree_items = [(d["dir"], d["bytes"], 1.0) for d in report.by_directory]
        chart2_title = f"Waste by directory (depth {report.depth})"
        layer_table = _table("layers-table", [
            ("layer", "n"), ("stored", "n"), ("visible", "n"), ("wasted here", "n"),
            ("made waste", "n"), ("added", "n"), ("modified", "n"), ("deleted", "n"),
            ("copied", "n"), ("command", "c")],
            [[_n(r["index"]), _b(r["stored_bytes"]), _b(r["visible_bytes"]), _b(r["wasted_bytes"]),
              _b(r["caused_bytes"]), _n(r["added"]["count"]), _n(r["modified"]["count"]),
              _n(r["deleted"]["count"]), _n(r["copied"]["count"]),
              (r["command"] or r["comment"] or "", None)]
             for r in report.layers])
        top_table = _table("top-table", [
            ("bytes", "n"), ("path", "p"), ("stored in layer", "n"), ("made waste by layer", "n"),
            ("reason", "t"), ("what", "t")],
            [[_b(w["bytes"]), (w["path"], None), _n(w["layer"]), _n(w["made_by"]),
              (w["reason"], None), (",".join(w["what"]), None)] for w in report.top])
        sections = [("Layers (0 = bottom)", layer_table),
                    (f"Top {len(report.top)} wasted paths", top_table)]
    else:
        c = report.target
        name = ",".join(c.get("names") or []) or c.get("upper") or "?"
        title = f"Container bloat: {name}"
        meta = f"{c.get('engine') or 'layers'}; upper {c.get('upper') or '?'}"
        cards = [("bytes in the upper layer", human(t["stored_bytes"]), ""),
                 ("added", human(t["added_bytes"]), ""),
                 ("copies, content changed", human(t["copy_changed_bytes"]), ""),
                 ("copies, content unchanged (wasted)", human(t["wasted_bytes"]), "waste"),
                 ("efficiency", f"{t['efficiency']:.4f}", "")]
        if t.get("allocated_bytes") is not None:
            cards.insert(1, ("allocated on disk", human(t["allocated_bytes"]), ""))
        css = {"added": "keep", "copy_changed": "caused", "copy_unchanged": "wasted",
               "metacopy": "keep", "link": "keep"}
        bars = [(cat["category"], cat["category"],
                 [(css[cat["category"]], cat["bytes"], f"{cat['files']} files")])
                for cat in report.categories]
        legend = ('<p class="legend"><span class="keep"></span>new data<span class="caused">'
                  '</span>copies with new content<span class="wasted"></span>copies with the same '
                  'content (wasted)</p>')
        chart1_title = "Upper layer bytes by kind"
        tree_items = [(d["dir"], d["bytes"], d["copy_unchanged"] / d["bytes"] if d["bytes"] else 0)
                      for d in report.upper_dirs]
        chart2_title = f"Upper layer bytes by directory (depth {report.depth}; red: mostly wasted)"
        cat_table = _table("categories-table", [
            ("category", "t"), ("files", "n"), ("bytes", "n"), ("allocated", "n"),
            ("apparent size", "n")],
            [[(cat["category"], None), _n(cat["files"]), _b(cat["bytes"]), _b(cat["allocated"]),
              _b(cat["size"])] for cat in report.categories])
        largest = _table("largest-table", [
            ("bytes", "n"), ("allocated", "n"), ("path", "p"), ("category", "t"), ("what", "t")],
            [[_b(r["bytes"]), _b(r["allocated"]), (r["path"], None), (r["category"], None),
              (",".join(r["what"]), None)] for r in report.largest])
        top_table = _table("top-table", [("bytes", "n"), ("path", "p"), ("what", "t"),
                                         ("copied from", "p")],
                           [[_b(w["bytes"]), (w["path"], None), (",".join(w["what"]), None),
                             (w.get("shadow_path") or "", None)] for w in report.top])
        sections = [("By kind", cat_table), (f"Largest {len(report.largest)} files", largest),
                    (f"Top {len(report.top)} wasted copies", top_table)]
    dir_table = _table("dirs-table", [("bytes", "n"), ("files", "n"), ("directory", "p")],
                       [[_b(d["bytes"]), _n(d["files"]), (d["dir"], None)]
                        for d in report.by_directory])
    sections.append((f"Wasted bytes by directory (depth {report.depth})", dir_table))
    if report.anomalies:
        sections.append(("Anomalies", _table("anomalies-table", [("path", "p"), ("anomaly", "t"),
                                                                   ("detail", "p")],
                                             [[(a["path"], None), (a["anomaly"], None),
                                               (a["detail"], None)] for a in report.anomalies])))
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f'<header><h1>{esc(title)}</h1><p class="meta">{esc(meta)}</p>',
        _cards(cards), "</header><main>",
        f"<h2>Gates</h2>{_gates(report)}",
        f"<h2>{esc(chart1_title)}</h2>{legend}{bar_chart('layer-chart', bars)}",
        f"<h2>{esc(chart2_title)}</h2>{treemap('dir-chart', tree_items)}",
    ]
    for heading, content in sections:
        body.append(f"<h2>{esc(heading)}</h2>{content}")
    if report.warnings:
        body.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{esc(w)}</li>" for w in report.warnings)
                    + "</ul>")
    body.append(f"<h2>How to read this report</h2>{HOW_TO_READ[report.kind]}")
    body.append(f'<p class="meta">ovforensics bloat report, schema 1.'
                f'</p></main><script>{SCRIPT}</script></body></html>\n')
    return "".join(body)
