r"""Output writers: turn a stream of :class:`~ovforensics.records.record.Change` records into text.

Every writer renders from :meth:`Change.to_dict` (the JSONL contract), so all formats agree on
field names and values. Formats (:data:`FORMATS`):

``jsonl``
    One JSON object per line, as the records arrive. ``json.dumps`` escapes control characters;
    we also escape U+0085, U+2028 and U+2029, which ``str.splitlines`` and some JSON-lines
    readers treat as line breaks, so one record is always exactly one line.
``json``
    One document, ``{"changes": [...], "summary": {...}}``. Changes are streamed as they arrive;
    the summary (counts per change kind) follows the list, so nothing is held in memory.
``csv``
    Fixed columns (:data:`CSV_COLUMNS`), one header row. The csv module quotes cells holding
    newlines, so a name with a newline stays one row. **Formula guard:** any text cell that
    starts with ``=``, ``+``, ``-``, ``@``, tab or CR gets a leading ``'`` (OWASP's advice for
    CSV injection), so a spreadsheet does not evaluate a name such as ``=cmd|' /C calc'!A0``.
    That makes guarded cells inexact; the exact bytes stay available in JSON/JSONL, and in the
    CSV ``path_b64`` column, which is filled when the path is not UTF-8 *or* the guard changed
    the path cell. Rule for readers: if ``path_b64`` is non-empty it is authoritative, otherwise
    the ``path`` cell is the exact (UTF-8) path.
``table``
    Human output in tabulate's ``simple`` layout: one row per record, then a summary of counts
    (last, so it does not scroll away). Columns are fitted to the terminal
    (:mod:`~ovforensics.writers.tables`: ``$COLUMNS``, else the terminal's width, else 120):
    ids and hashes cut to 12 characters, sizes human, long paths and anomaly details wrapped
    onto continuation lines (never cut); ``no_trunc`` keeps every value whole. It must see every
    record before printing (to know the widths), so it is the one writer that holds them: in a
    temporary spool file, not in memory.
``docker``
    The lines ``docker diff`` (``podman diff`` for a Podman container) prints: ``A``/``C``/``D``
    + space + path, one ``D`` for a deleted directory, a ``C`` for the parent of each added or
    deleted path (:class:`DockerWriter`). Anomalies are counted but not printed (docker diff has
    no way to say them).

In the two human formats (``table``, ``docker``) control and format characters are shown as
escapes (``\n``, ``\t``, ``\x1b``, ``\u202e`` ...) so a crafted name cannot forge extra rows or
lines, or send terminal escape sequences. A literal backslash is left as is, as in
:func:`~ovforensics.records.record.escape_bytes`; use JSON for exact values.

Writers never close the stream (the caller owns it, e.g. ``sys.stdout``) and never swallow
exceptions such as ``BrokenPipeError``; the CLI decides what to do with them.
"""
from __future__ import annotations

import base64
import csv
import json
import tempfile
import textwrap
import unicodedata
from typing import Iterable, TextIO

from orjson import dumps as _orjson_dumps

from ovforensics.records.record import (ADDED, ANOMALY, CHANGE_KINDS, DELETED, MODIFIED, Change,
                                        LayerRef, escape_bytes, format_mode, format_ns, what_text)
from ovforensics.evidence.storetext import escape_surrogates, with_b64
from ovforensics.writers import tables

FORMATS = ("table", "csv", "json", "jsonl", "docker")

CSV_COLUMNS = (
    "path", "change", "type", "what", "via", "lower_path", "lower_layer", "lower_layer_dir",
    "lower_layer_id", "lower_layer_role", "upper_path", "size", "mode", "uid", "gid", "mtime", "target", "renamed_from", "metacopy",
    "anomaly", "detail", "path_b64",
    # a modified record's original, as it was (appended: the columns before keep their places)
    "lower_size", "lower_mode", "lower_uid", "lower_gid", "lower_mtime", "lower_target",
)

TABLE_HEADERS = ("change", "path", "type", "what", "via", "lower layer", "size")
#: How each table column fits the terminal (:mod:`~ovforensics.writers.tables`)
TABLE_KINDS = ("text", "wrap", "text", "wrap", "wrap", "text", "bytes")
#: ``extra`` fields the table shows as columns when the report carries them (--packages, --yara)
TABLE_EXTRA = ("package", "package_status", "yara", "lower_yara")
#: hash columns (``--hash``), shown as a 12-character prefix unless ``--no-trunc``
HASH_NAMES = ("md5", "sha1", "sha256", "sha512")

#: Leading characters that make a spreadsheet treat a cell as a formula (OWASP).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

_DOCKER_CODES = {ADDED: "A", MODIFIED: "C", DELETED: "D"}

# Characters that json.dumps(ensure_ascii=False) leaves raw but line splitters break on.
_JSON_LINEBREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


# -- helpers ------------------------------------------------------------------------------
def visible(text: str) -> str:
    r"""Make control/format/line-separator characters visible, e.g. newline -> ``\n``.

    Used by the human formats so one record is one row/line and no escape sequence reaches the
    terminal.
    """
    if text.isprintable():  # fast path: nothing to escape
        return text
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs"):  # Cs: a lone surrogate
            code = ord(ch)
            if ch in _NAMED_ESCAPES:
                out.append(_NAMED_ESCAPES[ch])
            elif code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def guard_formula(cell: str) -> str:
    """Prefix ``'`` to a cell a spreadsheet would run as a formula (CSV injection guard); a lone
    surrogate (from a store string) is written as its ``\\udXXX`` escape, never raw."""
    if not cell.isascii():
        cell = escape_surrogates(cell)
    return "'" + cell if cell.startswith(FORMULA_PREFIXES) else cell


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def json_line(record: dict) -> str:
    """Serialise one record as a single line of compact JSON, whatever characters its names hold.

    orjson (a compiled encoder, ~8x faster than ``json``'s C encoder per record here; bench/README.md)
    writes what it can; the standard encoder, with the same separators, takes what orjson refuses
    (an integer beyond 64 bits from a crafted tar header, a lone surrogate), so the output does not
    depend on which one ran."""
    try:
        text = _orjson_dumps(record).decode("utf-8")
    except TypeError:
        # a lone surrogate (a store string, storetext.py) goes out as its \uXXXX escape: exact,
        # and ASCII, so no locale's error handler can write it as a raw byte
        text = escape_surrogates(_JSON.encode(record))
    # These characters can only occur inside JSON strings, where an escape is equivalent.
    for raw, escaped in _JSON_LINEBREAKS.items():
        if raw in text:
            text = text.replace(raw, escaped)
    return text


class RecordDicts:
    """``Change.to_dict()``, the same dict, built with what repeats across a report cached:
    each lower layer's dict (the differ shares one :class:`LayerRef` per layer) and the
    whole-second part of timestamps (``format_ns`` is the slow part of ``to_dict``).
    ``tests/test_perf_paths.py`` holds the two equal."""

    def __init__(self):
        self._layers: dict[int, tuple[LayerRef, dict]] = {}
        self._seconds: dict[int, str] = {}

    def __call__(self, c: Change) -> dict:
        path, path_b64 = _text(c.path)
        lower_path, lower_b64 = _text(c.lower_path)
        target, target_b64 = _text(c.target)
        renamed_from, renamed_b64 = _text(c.renamed_from)
        out: dict = {
            "path": path,
            "change": c.change,
            "type": c.type,
            "what": list(c.what),
            "via": c.via,
            "lower_path": lower_path,
            "lower_layer": self._layer(c.lower_layer) if c.lower_layer else None,
            "upper_path": _text(c.upper_path)[0],
            "size": c.size,
            "mode": format_mode(c.mode),
            "uid": c.uid,
            "gid": c.gid,
            "mtime": self._time(c.mtime_ns),
            "target": target,
            "renamed_from": renamed_from,
            "metacopy": c.metacopy,
        }
        lower_target_b64 = None
        if c.change == MODIFIED:
            lower_target, lower_target_b64 = _text(c.lower_target)
            out["lower_size"] = c.lower_size
            out["lower_mode"] = format_mode(c.lower_mode)
            out["lower_uid"] = c.lower_uid
            out["lower_gid"] = c.lower_gid
            out["lower_mtime"] = self._time(c.lower_mtime_ns)
            out["lower_target"] = lower_target
        if path_b64 is not None:
            out["path_b64"] = path_b64
        for key, b64 in (("lower_path", lower_b64), ("target", target_b64),
                         ("renamed_from", renamed_b64), ("lower_target", lower_target_b64)):
            if b64 is not None:
                out[key + "_b64"] = b64
        if c.change == ANOMALY:
            out["anomaly"] = c.anomaly
            out["detail"] = c.detail
        out.update(c.extra)
        return out

    def _layer(self, ref: LayerRef) -> dict:
        cached = self._layers.get(id(ref))
        if cached is None or cached[0] is not ref:
            cached = self._layers[id(ref)] = (ref, ref.to_dict())
        return dict(cached[1])

    def _time(self, ns: int | None) -> str | None:
        if ns is None:
            return None
        secs, frac = divmod(ns, 1_000_000_000)
        head = self._seconds.get(secs)
        if head is None:
            whole = format_ns(secs * 1_000_000_000)  # "...T12:34:56.000000000Z", or "@...ns"
            if not whole.endswith(".000000000Z"):
                return format_ns(ns)
            if len(self._seconds) >= 65536:
                self._seconds.clear()
            head = self._seconds[secs] = whole[:-len(".000000000Z")]
        return f"{head}.{frac:09d}Z"


def _text(raw: bytes | None) -> tuple[str | None, str | None]:
    """(``escape_bytes(raw)``, base64 of ``raw`` where it is not UTF-8), decoding once."""
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return escape_bytes(raw), base64.b64encode(raw).decode("ascii")


def empty_counts() -> dict:
    """Counts per change kind, every kind present (zero) so consumers need no defaults."""
    return {kind: 0 for kind in CHANGE_KINDS}


# -- writers ------------------------------------------------------------------------------
class Writer:
    """Base writer: counts records per change kind; subclasses render them.

    ``write(change)`` renders one record; ``close()`` finishes the output (footer, summary),
    flushes the stream and returns the counts. The stream itself is not closed.
    """

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.counts = empty_counts()
        self.closed = False
        self._dict = RecordDicts()

    def write(self, change: Change) -> None:
        if self.closed:
            raise ValueError("write() on a closed writer")
        self.counts[change.change] = self.counts.get(change.change, 0) + 1
        self._write(self._dict(change))

    def close(self) -> dict:
        if not self.closed:
            self.closed = True
            self._finish()
            self.stream.flush()
        return dict(self.counts)

    def _write(self, record: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self) -> None:
        pass


class JsonlWriter(Writer):
    """One JSON object per line, written as each record arrives."""

    def _write(self, record: dict) -> None:
        self.stream.write(json_line(record) + "\n")


class JsonWriter(Writer):
    """``{"changes": [...], "summary": {...}}``, changes streamed, summary last."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self._first = True

    def _write(self, record: dict) -> None:
        prefix = '{"changes": [\n' if self._first else ",\n"
        self._first = False
        self.stream.write(prefix + json_line(record))

    def _finish(self) -> None:
        head = '{"changes": [' if self._first else "\n"
        self.stream.write(head + '], "summary": ' + json.dumps(self.counts) + "}\n")


class CsvWriter(Writer):
    """Fixed columns, csv-module quoting, formula guard on text cells (see module docstring)."""

    def __init__(self, stream: TextIO, extra_columns: tuple[str, ...] = ()):
        super().__init__(stream)
        self.columns = CSV_COLUMNS + tuple(c for c in extra_columns if c not in CSV_COLUMNS)
        self._csv = csv.writer(stream)  # QUOTE_MINIMAL quotes cells with \r or \n
        self._csv.writerow(self.columns)

    def _write(self, record: dict) -> None:
        layer = record.get("lower_layer") or {}
        values = dict(record)
        values["what"] = ";".join(record.get("what") or ())
        values["lower_layer"] = layer.get("index")
        values["lower_layer_dir"] = layer.get("dir")
        values["lower_layer_id"] = layer.get("id")
        values["lower_layer_role"] = layer.get("role")
        values["metacopy"] = "true" if record.get("metacopy") else "false"
        row = [self._cell(values.get(col)) for col in self.columns]
        path_col, b64_col = self.columns.index("path"), self.columns.index("path_b64")
        if not row[b64_col] and record.get("path") is not None and row[path_col] != record["path"]:
            # The guard changed a UTF-8 path; keep its exact bytes recoverable.
            row[b64_col] = base64.b64encode(record["path"].encode("utf-8")).decode("ascii")
        self._csv.writerow(row)

    @staticmethod
    def _cell(value) -> str | int:
        if value is None:
            return ""
        if isinstance(value, str):
            return guard_formula(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return value
        if isinstance(value, (list, tuple)):
            return guard_formula(";".join(str(v) for v in value))
        return guard_formula(str(value))


class TableWriter(Writer):
    """The table, then the summary of counts (last, so it does not scroll away). Rows go to a
    temporary spool file, not to memory (a million records stay a few MB of RSS), with each
    column's width kept on the way; :meth:`close` fits the columns to the terminal
    (:mod:`~ovforensics.writers.tables`: short hashes, human sizes, long paths and anomaly
    details wrapped; ``no_trunc`` keeps every value whole) and prints the spool. Every extra
    column asked for (hashes, file types, exec flags, packages, YARA) is shown."""

    def __init__(self, stream: TextIO, extra_columns: tuple[str, ...] = (), no_trunc: bool = False,
                 width: int | None = None):
        super().__init__(stream)
        self._spool: TextIO | None = None
        self._extra = tuple(dict.fromkeys(extra_columns))
        self._headers = TABLE_HEADERS + tuple(c.replace("_", " ") for c in self._extra)
        self._kinds = TABLE_KINDS + tuple(_extra_kind(c) for c in self._extra)
        self._widths = [0] * len(self._headers)  # each column's widest cell
        self.no_trunc = no_trunc
        self.width = width

    def _write(self, record: dict) -> None:
        nt = self.no_trunc
        cells = _table_cells(record, nt) + [
            visible(tables.cell(record.get(c), k, nt))
            for c, k in zip(self._extra, self._kinds[len(TABLE_HEADERS):])]
        widths = self._widths
        for i, cell in enumerate(cells):
            width = tables.text_width(cell)
            if width > widths[i]:
                widths[i] = width
        if self._spool is None:
            self._spool = tempfile.TemporaryFile("w+", encoding="utf-8", newline="",
                                                 errors="surrogatepass")
        # visible() leaves no control character in a cell: NUL and newline cannot occur
        self._spool.write("\0".join(cells) + "\n")

    def _finish(self) -> None:
        if self._spool is None:
            self.stream.write("(no changes)\n" + summary_line(self.counts) + "\n")
            return
        spool, self._spool = self._spool, None
        width = self.width or tables.width_for(self.stream)
        headers, kinds, cells = self._headers, self._kinds, self._widths
        floor = tables.floors(headers, cells, kinds)
        base = len(TABLE_HEADERS)
        # extra columns that do not fit beside the others go on a line of their own below
        # each row ("  sha256: 3a7bd3e2360a  magic: ELF 64-bit ..."), wrapped
        keep = list(range(len(headers)))
        below = False
        if not self.no_trunc and len(headers) > base and not tables.fits(floor, width):
            # an extra column empty in every row says nothing: dropped first where too wide
            keep = [i for i in keep if i < base or cells[i]]
            below = not tables.fits([floor[i] for i in keep], width)
            if below:
                keep = list(range(base))
        headers, kinds = [headers[i] for i in keep], [kinds[i] for i in keep]
        cells, floor = [cells[i] for i in keep], [floor[i] for i in keep]
        natural = [max(c, tables.text_width(h)) for c, h in zip(cells, headers)]
        widths = natural if self.no_trunc else tables.fit(natural, kinds, width, floor)
        with spool:
            spool.seek(0)
            for text in tables.head_lines(headers, widths):
                self.stream.write(text + "\n")
            for line in spool:
                row = line[:-1].split("\0")
                for text in tables.row_lines([row[i] for i in keep], widths):
                    self.stream.write(text + "\n")
                if below:
                    extra = "  ".join(f"{h}: {c}" for h, c in zip(self._headers[base:], row[base:])
                                      if c)
                    for piece in textwrap.wrap(extra, max(width - 4, 1), break_on_hyphens=False):
                        self.stream.write("    " + piece + "\n")
        self.stream.write("\n" + tables.wrap_text(summary_line(self.counts), width, self.no_trunc)
                          + "\n")


def _extra_kind(column: str) -> str:
    name = column[len("lower_"):] if column.startswith("lower_") else column
    if name in HASH_NAMES:
        return "hash"
    return "text" if column in ("new_executable", "package_status", "atime", "ctime") else "wrap"


def _table_cells(record: dict, no_trunc: bool = False) -> list[str]:
    what = what_text(record, ",")
    if record.get("change") == ANOMALY:
        # No "what" for an anomaly: say which anomaly it is instead (wrapped, never cut).
        what = ": ".join(x for x in (record.get("anomaly"), record.get("detail")) if x)
    layer = record.get("lower_layer") or {}
    index, size = layer.get("index"), record.get("size")
    return [
        visible(record.get("change") or ""),
        visible(record.get("path") or ""),
        visible(record.get("type") or ""),
        visible(what),
        visible(record.get("via") or (f"renamed from {record['renamed_from']}"
                                       if record.get("renamed_from") else "")),
        "" if index is None else str(index),
        tables.cell(size, "bytes", no_trunc),
    ]


class DockerWriter(Writer):
    """The lines ``docker diff`` prints, from our records (moby's ``archive.changes`` rules):

    - ``A``/``C``/``D`` + space + path, in path order;
    - a deleted directory is one ``D`` line (its files, deleted with it, are not listed);
    - the parent directory of an added or deleted path gets a ``C`` line before it, unless it
      is printed already (docker reports every such parent as changed);
    - ``hide``: paths the engine leaves out (``podman diff`` drops its own ``/etc/hosts``,
      ``/run/.containerenv`` ...: the container's ``diff_hides``), any line of them.

    Where docker is wrong, these lines stay right: files an opaque directory hid are ``D``
    lines, a directory replaced by a file still lists the files it held, names are exact
    (escaped, never mangled). Anomalies are counted, not printed."""

    def __init__(self, stream: TextIO, hide: Iterable[str] = ()):
        super().__init__(stream)
        self._hide = frozenset(hide)
        self._printed: list[str] = []  # directories printed on the current branch, top down

    def _line(self, code: str, path: str) -> None:
        if path not in self._hide:
            self.stream.write(f"{code} {visible(path)}\n")

    def _write(self, record: dict) -> None:
        change = record.get("change")
        code = _DOCKER_CODES.get(change)
        if code is None or (change == DELETED and record.get("via") == "parent"):
            return
        path = record["path"]
        printed = self._printed
        while printed and not path.startswith(printed[-1].rstrip("/") + "/"):
            printed.pop()
        if change in (ADDED, DELETED):
            parent = path.rpartition("/")[0]
            if parent and (not printed or printed[-1] != parent):
                self._line("C", parent)
                printed.append(parent)
        self._line(code, path)
        if record.get("type") == "dir" and change != DELETED:
            printed.append(path)


def summary_line(counts: dict) -> str:
    """``Summary: 3 added, 1 modified, 0 deleted, 2 anomaly`` (plus any unexpected kinds)."""
    kinds = list(CHANGE_KINDS) + [k for k in counts if k not in CHANGE_KINDS]
    return "Summary: " + ", ".join(f"{counts.get(k, 0)} {visible(str(k))}" for k in kinds)


_WRITERS = {
    "table": TableWriter,
    "csv": CsvWriter,
    "json": JsonWriter,
    "jsonl": JsonlWriter,
    "docker": DockerWriter,
}
assert tuple(_WRITERS) == FORMATS


def open_writer(fmt: str, stream: TextIO, extra_columns: tuple[str, ...] = (),
                no_trunc: bool = False, *, hide: Iterable[str] = ()) -> Writer:
    """Return the writer for ``fmt``; unknown formats raise ``ValueError`` listing valid ones.

    ``extra_columns`` names ``extra`` fields (hashes, file types) that CSV adds as columns;
    JSON/JSONL always carry every field; the table shows them too (``no_trunc``: whole values).
    ``hide``: paths ``docker`` lines leave out (a container's ``diff_hides``).
    """
    try:
        cls = _WRITERS[fmt]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown output format {fmt!r}; valid formats: {', '.join(FORMATS)}") from None
    if cls is DockerWriter:
        return cls(stream, hide)
    if cls is TableWriter:
        return cls(stream, extra_columns, no_trunc=no_trunc)
    return cls(stream, extra_columns) if cls is CsvWriter else cls(stream)


def write_all(fmt: str, changes: Iterable[Change], stream: TextIO) -> dict:
    """Write every change in ``fmt`` and return the counts per change kind.

    If iteration or writing raises, the writer is not closed, so a JSON document is left
    visibly incomplete rather than looking like a finished (but partial) result.
    """
    writer = open_writer(fmt, stream)
    for change in changes:
        writer.write(change)
    return writer.close()


# -- rows: inventories (containers, layers) in the same formats ----------------------------
def write_rows(fmt: str, rows: Iterable[dict], columns: tuple[str, ...], stream: TextIO,
               table: tuple | None = None, no_trunc: bool = False, width: int | None = None) -> int:
    """Write plain records (``containers``, ``layers``) in any core format; returns the count.

    ``docker`` (docker diff's lines) is for changes only: an inventory refuses it, naming the
    formats it has. The table shows ``table``'s (field, header, kind) columns
    (:data:`tables.CONTAINER_TABLE`, ...; default every column) fitted to the terminal,
    ``no_trunc`` keeping every value whole; csv and json keep every column, whole. The same
    guards apply as for changes: formula-guarded CSV cells, visible control characters in tables.
    """
    if fmt not in FORMATS or fmt == "docker":
        valid = ", ".join(f for f in FORMATS if f != "docker")
        raise ValueError(f"--format {fmt}: not a format of this command (docker diff's lines are "
                         f"diff's); valid formats: {valid}")
    count = 0
    if fmt in ("json", "jsonl"):  # exact bytes beside a store string that is no valid text
        rows = (with_b64(row) for row in rows)
    if fmt == "jsonl":
        for row in rows:
            stream.write(json_line(row) + "\n")
            count += 1
    elif fmt == "json":
        stream.write("[")
        for row in rows:
            stream.write(("\n" if not count else ",\n") + json_line(row))
            count += 1
        stream.write("\n]\n")
    elif fmt == "csv":
        out = csv.writer(stream, lineterminator="\r\n")
        out.writerow(columns)
        for row in rows:
            out.writerow([_row_cell(row.get(c), guard=True) for c in columns])
            count += 1
    else:
        spec = table or tuple((c, c, "text") for c in columns)
        body = [[visible(tables.cell(row.get(field), kind, no_trunc)) for field, _, kind in spec]
                for row in rows]
        count = len(body)
        if not body:
            stream.write("(none)\n")
        else:
            for line in tables.render([h for _, h, _ in spec], body, [k for _, _, k in spec],
                                      width or tables.width_for(stream), no_trunc):
                stream.write(line + "\n")
    stream.flush()
    return count


def _row_cell(value, guard: bool):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    if isinstance(value, str) and guard:
        return guard_formula(value)
    return value
