"""The pieces of a self-contained HTML report (the bloat report and the triage summary): its
style and script, the Content-Security-Policy that allows only those two, escaping, tables and
summary cards. Nothing is loaded from outside the page."""
from __future__ import annotations

import base64
import hashlib
import html

from ovforensics.writers.formats import visible
from ovforensics.units import human

STYLE = """
:root{--fg:#1d2330;--muted:#5b6472;--line:#d9dde3;--bg:#f6f7f9;--waste:#c8372d;--caused:#e8912d;
--keep:#7a9cc6;--ok:#2e7d32;--bad:#c62828}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);background:#fff}
header{padding:18px 28px;background:var(--bg);border-bottom:1px solid var(--line)}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:26px 0 10px}
main{padding:0 28px 40px;max-width:1400px}
.meta{color:var(--muted);margin:0;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:18px}
.card{border:1px solid var(--line);border-radius:6px;padding:10px 14px;min-width:170px;background:#fff}
.card .v{font-size:20px;font-weight:600}.card .k{color:var(--muted);font-size:12px}
.card.waste .v{color:var(--waste)}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--bg);cursor:pointer;user-select:none;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.p{font-family:ui-monospace,"DejaVu Sans Mono",monospace;word-break:break-all}
td.c{font-family:ui-monospace,"DejaVu Sans Mono",monospace;min-width:320px;overflow-wrap:anywhere}
.passed{color:var(--ok);font-weight:600}.failed{color:var(--bad);font-weight:600}
svg{display:block;max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px;background:#fff}
svg text{font:12px system-ui,"DejaVu Sans",sans-serif;fill:#1d2330}
svg text.in{fill:#fff}
.bar.wasted{fill:var(--waste)}.bar.caused{fill:var(--caused)}.bar.keep{fill:var(--keep)}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 14px;vertical-align:-1px}
.legend .wasted{background:var(--waste)}.legend .caused{background:var(--caused)}
.legend .keep{background:var(--keep)}
.cell{stroke:#fff;stroke-width:1}
.none{color:var(--muted)}
.wrap{overflow-x:auto}
"""


SCRIPT = """
(function(){
  function key(td){var v=td.getAttribute('data-v');return v===null?td.textContent:parseFloat(v);}
  var tables=document.querySelectorAll('table.sortable');
  for(var t=0;t<tables.length;t++){
    (function(table){
      var heads=table.querySelectorAll('th');
      for(var i=0;i<heads.length;i++){
        (function(col,th){
          th.addEventListener('click',function(){
            var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
            var dir=th.getAttribute('data-dir')==='asc'?-1:1;th.setAttribute('data-dir',dir===1?'asc':'desc');
            rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
              return (x<y?-1:x>y?1:0)*dir;});
            for(var r=0;r<rows.length;r++){body.appendChild(rows[r]);}
          });
        })(i,heads[i]);
      }
    })(tables[t]);
  }
  document.documentElement.setAttribute('data-ready',
    String(document.querySelectorAll('svg.chart').length));
})();
"""


def _csp_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


CSP = (f"default-src 'none'; style-src '{_csp_hash(STYLE)}'; script-src '{_csp_hash(SCRIPT)}'; "
       "img-src 'none'; base-uri 'none'; form-action 'none'")


def esc(value) -> str:
    """Any value as safe HTML text: control/bidi characters made visible, then escaped."""
    return html.escape(visible("" if value is None else str(value)), quote=True)


# -- tables ----------------------------------------------------------------------------------------
def _table(table_id: str, headers: list[tuple[str, str]], rows: list[list[tuple]]) -> str:
    """``headers`` = [(title, kind)], kind ``n`` (number), ``p`` (path) or ``t``; a row cell is
    (shown text, sort value or None)."""
    if not rows:
        return f'<p class="none" id="{table_id}">(none)</p>'
    head = "".join(f'<th class="{k}">{esc(t)}</th>' for t, k in headers)
    body = []
    for row in rows:
        cells = []
        for (text, sort), (_, kind) in zip(row, headers):
            attr = f' data-v="{sort}"' if sort is not None else ""
            cells.append(f'<td class="{kind}"{attr}>{esc(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="wrap"><table class="sortable" id="{table_id}"><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>')


def _n(value) -> tuple:
    return ("" if value is None else str(value), value if isinstance(value, (int, float)) else None)


def _b(value) -> tuple:
    if value is None:
        return ("", None)
    return (f"{value} ({human(value)})", value)


def _cards(cards: list[tuple[str, str, str]]) -> str:
    return '<section class="cards" id="totals">' + "".join(
        f'<div class="card {css}"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
        for k, v, css in cards) + "</section>"
