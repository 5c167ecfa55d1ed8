r"""Timelines: every timestamp of every changed entry, for mactime/Plaso and for Timesketch.

``ovforensics timeline web-1 --format bodyfile -o web-1.body`` then ``mactime -b web-1.body -z
UTC``; or ``--format timesketch -o web-1.jsonl`` (``timesketch-csv`` for CSV) and import the file
into Timesketch. Library entry point: :func:`write_timeline`.

**All times are UTC.** Bodyfile times are POSIX epoch seconds, which are UTC by definition (give
mactime ``-z UTC`` so it prints them as UTC instead of in the analyst's local zone; Plaso reads
bodyfile times as local time in its ``--timezone``, UTC by default). Timesketch events carry
``datetime`` with an explicit ``+00:00`` offset and ``timestamp`` in microseconds since the epoch.

What gets a line / events
=========================

Anomaly records are skipped. For every other record, one *subject* per entry behind it:

* the **merged-view entry** (``change.entry``) of an ``added`` or ``modified`` record: what the
  container sees now. It is stored in the upperdir, or, for an entry seen at a new path through
  a renamed (redirected) directory, in a lower layer;
* the **shadowed original** (``change.shadow``) of a ``modified`` or ``deleted`` record: the base
  entry, in the lower layer ``change.lower_layer`` names.

A record built without entries (``entry``/``shadow`` None) falls back to its own fields (mode,
owner, size, mtime), as the merged entry for added/modified and as the original for deleted.

Naming. Each subject is labelled at the end of the Timesketch ``message`` (``... - LABEL``),
in the ``side``/``view`` fields, and in the bodyfile's name and inode fields:

* merged entry stored in the upperdir: bodyfile name ``/etc/passwd``, inode ``INODE``;
  message ``... - upper copy``; ``side=upper``, ``view=merged``;
* merged entry stored in lower layer N (seen through a renamed directory): name ``/d/f``,
  inode ``INODE-N``; ``... - in lower layer N``; ``side=lower``, ``view=merged``;
* shadowed original in lower layer N: name ``/x (deleted)`` for a deleted path, as the Sleuth
  Kit names a deleted file, ``/etc/passwd (original)`` for a modified one; inode ``INODE-N``;
  ``... - original in lower layer N``; ``side=lower``, ``view=original``.

N is the lower layer's index (0 = topmost lower, as in ``lower_layer`` and ``layers``), so
``/x (deleted)`` with inode ``1234-0`` is the file a whiteout hid. The inode field keeps TSK's
numeric ``NUMBER-NUMBER`` form (as for NTFS): Plaso reads the number before the ``-``, mactime
prints the field whole (and drops a line whose inode field is not numeric).
A symlink's target follows the name, as ``fls -m`` appends it: ``/l -> /target`` (Plaso splits
the target off at the last `` -> ``). Messages read e.g.
``modified /etc/passwd (content (size 5 -> 10), mtime) - upper copy``,
``modified /usr/bin/find (mode 0755 -> 4755) - upper copy``,
``deleted /x via wh-file - original in lower layer 0``.

``bodyfile`` (TSK 3.x)
======================

``MD5|name|inode|mode_as_string|UID|GID|size|atime|mtime|ctime|crtime``, one line per subject
(mactime expands the four times into events itself). MD5 is ``extra["md5"]`` for the merged
entry, ``extra["lower_md5"]`` for the original (``scan(..., hashes="md5")`` fills them; with
``hashes=True`` the writer hashes regular files itself where they are missing), else ``0``.
``mode_as_string`` is what ``fls -m`` writes: name type ``/`` meta type + ``ls -l`` permissions,
``r/rrw-r--r--``, ``d/drwxr-xr-x``, ``l/lrwxrwxrwx``, ``p/``, ``c/``, ``b/``, ``s/``, with
``s``/``S`` for setuid/setgid and ``t``/``T`` for sticky (TSK's ``tsk_fs_meta_make_ls``).
Times are epoch seconds with nine fraction digits (``1700000000.123456789``, exact to the
nanosecond); an unknown time (atime/ctime of a tar member, a birth time the filesystem does not
record) is ``0``, as fls writes it. A *known* time of exactly the epoch is ``0.000000000``
(mactime and Plaso still read it as 0: unset for Plaso, ``Xxx Xxx 00 0000`` for mactime).

Name escaping. What the consumers actually do (read in their sources, checked with Debian's
mactime 4.11.1):

* **mactime** (``tm_split``) splits every line on *every* ``|`` (no escape is recognised: a line
  with ``\|`` in the name shifts the fields, fails mactime's sanity checks and is **silently
  dropped**), then decodes ``%XX`` (hex, any case) in every field into the byte. Backslashes mean
  nothing to it; lines starting with ``#`` are skipped; times go through ``sprintf("%.10d")``, so
  fractions are accepted and truncated; a 0 time prints as ``Xxx Xxx 00 0000 00:00:00``.
* **Plaso** (``parsers/bodyfile.py``) reads the file as UTF-8 (a non-UTF-8 byte ends the
  parse, on the first line it rejects the file), splits on ``|``, takes MD5 from the front and the
  nine numeric fields from the back and joins the rest with ``|``, so a raw ``|`` in the name
  survives; it then turns ``\xNN`` back into the character for NN in 00-1f and 7f-9f only, then
  ``\|`` into ``|`` and ``\\`` into ``\``. A name still holding a raw control character gets a
  warning. It reads times with ``float()`` (sub-microsecond digits are approximate there) and a
  0 time means "not set". A first line that is not a record (a ``#`` comment) makes Plaso
  reject the file, so no header line is written.
* ``fls -m`` itself replaces control characters by ``^`` and does not escape ``|`` at all.

So the only escape both tools read without losing the line is one without ``|`` or ``%XX``
in it. The rule here: the name is the UTF-8 path, with

* ``\`` written as ``\\`` (Plaso restores it; mactime shows it doubled),
* ``|`` written as ``\x7c`` (not ``\|``, which mactime drops; both tools show ``\x7c``),
* ``%`` written as ``\x25`` where two hex digits follow it (else mactime decodes ``%41`` to
  ``A``); a lone ``%`` stays,
* every byte that is not valid UTF-8, and every byte of a control, format or line-separator
  character (Unicode Cc, Cf, Zl, Zp: newline, tab, ESC, DEL, C1 controls, U+202E, U+2028, ...),
  written as ``\xNN`` (lower-case hex, one escape per byte; Plaso restores the C0 controls and
  DEL, mactime shows the escape).

Each ``\xNN`` stands for one byte, ``\\`` for a backslash (``\|`` is also read as ``|`` by a
strict TSK-3 reader): unescaping gives back the exact bytes of the path. The same rule applies to
a symlink target. No field then holds a ``|``, a newline or a byte that is not UTF-8, so every
line has exactly eleven fields for mactime, Plaso and ``cut -d'|'`` alike. Known Plaso
inexactness: a name holding a literal backslash followed by ``x`` and a control code (``\x0a``
as text) is shown by Plaso with a newline instead; ``\x7c``/``\x25`` stay literal in Plaso, and
a C1 control (two UTF-8 bytes, ``\xc2\x85``) comes out of Plaso as ``\xc2`` + U+0085.

``timesketch`` (JSONL) and ``timesketch-csv``
=============================================

One event per known timestamp of each subject: ``mtime`` -> ``Content Modification Time``,
``atime`` -> ``Last Access Time``, ``ctime`` -> ``Metadata Modification Time``, birth time ->
``Creation Time`` (Plaso's ``timestamp_desc`` strings). Timesketch requires ``message``,
``datetime`` (ISO 8601; its importer keeps a JSONL ``datetime`` as given and normalises CSV
ones with pandas) and ``timestamp_desc``; ``timestamp`` (integer microseconds since the epoch)
is given too so Timesketch need not compute it. ``datetime`` is
``2026-11-28T01:57:14.123456+00:00`` (microseconds, truncated like ``timestamp``); an event whose
time cannot be written as an ISO date (beyond year 9999, before year 1) is left out.

Each event also carries the record's fields from :meth:`Change.to_dict` (``path``, ``change``,
``what`` - a list in JSONL, ``;``-joined in CSV -, ``via``, ``lower_path``, ``upper_path``,
``renamed_from``, ``metacopy``, ``*_b64``, the ``extra`` enrichment fields), with
``lower_layer`` flattened to its index plus ``lower_layer_dir`` (and ``lower_layer_id``,
``lower_layer_diff_id``, ``lower_layer_image_index``, ``lower_layer_role`` when an engine named
it), and per event: ``side`` (``upper``/``lower``: where the subject is stored), ``view``
(``merged``/``original``), ``layer_index`` (the subject's lower layer, empty for the upper),
``physical_path`` (the subject on disk), ``inode``; ``type``, ``size``, ``mode``, ``uid``,
``gid``, ``target`` and ``md5`` describe *the subject* (for an original they are the original's,
not the merged file's). The record-level ``mtime`` field is not repeated: the event has its own
time. ``message`` shows control characters as escapes (:func:`~ovforensics.writers.formats.visible`);
``path`` and ``path_b64`` keep the exact name. CSV: fixed columns (:data:`CSV_COLUMNS`), the
formula guard on every text cell (:func:`~ovforensics.writers.formats.guard_formula`) and ``path_b64``
filled when the path is not UTF-8 or the guard changed it, as in the ``csv`` diff format.
"""
from __future__ import annotations

import base64
import csv
import datetime as _dt
import re
import stat
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Iterator, TextIO

from ovforensics.records.record import (ADDED, DELETED, MODIFIED, Change, escape_bytes, format_mode,
                                        is_utf8, what_text)
from ovforensics.writers.formats import guard_formula, json_line, visible

__all__ = ["FORMATS", "CSV_COLUMNS", "TIME_FIELDS", "UTC_NOTE", "Subject", "subjects",
           "write_timeline", "escape_name", "mode_string", "body_time", "bodyfile_line",
           "timesketch_events"]

FORMATS = ("bodyfile", "timesketch", "timesketch-csv")

#: (subject time attribute, Timesketch/Plaso ``timestamp_desc``), in event order.
TIME_FIELDS = (
    ("mtime", "Content Modification Time"),
    ("atime", "Last Access Time"),
    ("ctime", "Metadata Modification Time"),
    ("btime", "Creation Time"),
)

#: One line per format for the CLI to print on stderr: how to read the times.
UTC_NOTE = {
    "bodyfile": "times are UTC epoch seconds; read with: mactime -b FILE -z UTC",
    "timesketch": "datetime is UTC (+00:00); timestamp is microseconds since the epoch",
    "timesketch-csv": "datetime is UTC (+00:00); timestamp is microseconds since the epoch",
}

CSV_COLUMNS = (
    "message", "datetime", "timestamp", "timestamp_desc", "path", "change", "what", "via",
    "side", "view", "layer_index", "physical_path", "type", "size", "mode", "uid", "gid",
    "inode", "md5", "target", "lower_path", "lower_layer", "lower_layer_dir", "lower_layer_id",
    "upper_path", "renamed_from", "metacopy", "path_b64",
)

_TYPE_CHAR = {"file": "r", "dir": "d", "symlink": "l", "fifo": "p", "socket": "s",
              "char": "c", "block": "b"}
_FMT_BY_KIND = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
                "fifo": stat.S_IFIFO, "socket": stat.S_IFSOCK, "char": stat.S_IFCHR,
                "block": stat.S_IFBLK}
_MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")
_HEX = frozenset("0123456789abcdefABCDEF")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


# -- rendering helpers --------------------------------------------------------------------
def escape_name(raw: bytes) -> str:
    r"""A path or link target as a bodyfile name field (see the module docstring).

    ``\`` -> ``\\``; ``|`` -> ``\x7c``; ``%`` before two hex digits -> ``\x25``; each byte of
    an invalid UTF-8 sequence or of a Cc/Cf/Zl/Zp character -> ``\xNN``.
    """
    text = raw.decode("utf-8", errors="surrogateescape")
    out = []
    for i, ch in enumerate(text):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not valid UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "|":
            out.append("\\x7c")
        elif ch == "%" and text[i + 1:i + 2] in _HEX and text[i + 2:i + 3] in _HEX:
            out.append("\\x25")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out)


def mode_string(mode: int, kind: str | None = None) -> str:
    """``fls -m``'s mode field: ``r/rrw-r--r--`` (name type / meta type + permissions)."""
    if kind is None:
        from ovforensics.layers.layer import KIND_BY_FMT

        kind = KIND_BY_FMT.get(stat.S_IFMT(mode), "unknown")
    t = _TYPE_CHAR.get(kind, "-")
    perms = ["-"] * 9
    for i, (bit, ch) in enumerate(((0o400, "r"), (0o200, "w"), (0o100, "x"),
                                   (0o040, "r"), (0o020, "w"), (0o010, "x"),
                                   (0o004, "r"), (0o002, "w"), (0o001, "x"))):
        if mode & bit:
            perms[i] = ch
    for special, pos, on_exec, no_exec in ((stat.S_ISUID, 2, "s", "S"), (stat.S_ISGID, 5, "s", "S"),
                                           (stat.S_ISVTX, 8, "t", "T")):
        if mode & special:
            perms[pos] = on_exec if perms[pos] == "x" else no_exec
    return f"{t}/{t}" + "".join(perms)


def body_time(ns: int | None) -> str:
    """Epoch seconds with nine fraction digits; ``0`` when unknown."""
    if ns is None:
        return "0"
    sign = "-" if ns < 0 else ""
    secs, frac = divmod(abs(ns), 1_000_000_000)
    return f"{sign}{secs}.{frac:09d}"


def _iso(ns: int) -> tuple[str, int] | None:
    """(ISO 8601 UTC with microseconds, microseconds since the epoch), or None if unwritable."""
    micros = ns // 1000
    try:
        stamp = _EPOCH + _dt.timedelta(microseconds=micros)
    except OverflowError:
        return None
    return stamp.isoformat(timespec="microseconds"), micros


# -- subjects: the entries behind a record -------------------------------------------------
@dataclass
class Subject:
    """One entry behind a record, as the timeline shows it."""

    view: str  # "merged" (what the container sees) or "original" (the shadowed base entry)
    side: str  # "upper" or "lower": where it is stored
    layer_index: int | None  # its lower layer, None for the upper (or unknown)
    kind: str
    mode: int  # full st_mode
    ino: int
    uid: int
    gid: int
    size: int
    target: bytes | None
    physical: bytes | None
    times: dict  # "mtime"/"atime"/"ctime"/"btime" -> ns or None
    md5: str | None

    @property
    def label(self) -> str:
        """The bodyfile label: ``upper``, ``in lower layer N``, ``original in lower layer N``."""
        layer = "lower layer" if self.layer_index is None else f"lower layer {self.layer_index}"
        if self.view == "original":
            return f"original in {layer}"
        return "upper" if self.side == "upper" else f"in {layer}"

    @property
    def inode_field(self) -> str:
        """The bodyfile's inode field: ``INODE`` for an entry of the upper, ``INODE-N`` for one of
        lower layer N (TSK's numeric ``NUMBER-NUMBER`` form: mactime prints it whole and drops a
        line whose field is not numeric; Plaso reads the number before the ``-``)."""
        if self.side == "upper" or self.layer_index is None:
            return str(self.ino)
        return f"{self.ino}-{self.layer_index}"

    @property
    def message_label(self) -> str:
        return "upper copy" if self.label == "upper" else self.label


def _layer_index(layer) -> int | None:
    index = getattr(layer, "index", None)
    return index if isinstance(index, int) and index >= 0 else None


def _md5_value(value) -> str | None:
    return value.lower() if isinstance(value, str) and _MD5_RE.match(value) else None


def _hash(entry) -> str | None:
    if entry is None or getattr(entry, "kind", None) != "file":
        return None
    from ovforensics.scanner.enrich import read_digest
    from ovforensics.layers.layer import EntryError

    try:
        digests, _ = read_digest(entry, ("md5",))
    except (EntryError, OSError):
        return None
    return digests["md5"]


def _from_entry(entry, view: str, side: str, index: int | None, md5: str | None) -> Subject:
    btime = None
    getter = getattr(entry, "btime_ns", None)
    if getter is not None:
        try:
            btime = getter()
        except OSError:
            btime = None
    physical = getattr(entry, "physical", None)
    return Subject(
        view=view, side=side, layer_index=index, kind=entry.kind, mode=entry.mode,
        ino=entry.ino or 0, uid=entry.uid, gid=entry.gid, size=entry.size,
        target=entry.target if entry.kind == "symlink" else None, physical=physical,
        times={"mtime": entry.mtime_ns, "atime": getattr(entry, "atime_ns", None),
               "ctime": getattr(entry, "ctime_ns", None), "btime": btime},
        md5=md5,
    )


def _from_record(change: Change, view: str, side: str, index: int | None, md5) -> Subject:
    kind = change.type or "unknown"
    return Subject(
        view=view, side=side, layer_index=index, kind=kind,
        mode=_FMT_BY_KIND.get(kind, 0) | (change.mode or 0), ino=0, uid=change.uid or 0,
        gid=change.gid or 0, size=change.size or 0,
        target=change.target if kind == "symlink" else None,
        physical=change.upper_path if side == "upper" else change.lower_path,
        times={"mtime": change.mtime_ns, "atime": None, "ctime": None, "btime": None}, md5=md5,
    )


def subjects(change: Change, hashes: bool = False) -> list[Subject]:
    """The merged entry and/or the shadowed original behind one record (none for anomalies)."""
    out: list[Subject] = []
    if change.change not in (ADDED, MODIFIED, DELETED):
        return out
    extra = change.extra or {}
    lower_index = change.lower_layer.index if change.lower_layer is not None else None
    entry, shadow = change.entry, change.shadow
    if change.change in (ADDED, MODIFIED):
        md5 = _md5_value(extra.get("md5"))
        if md5 is None and hashes:
            md5 = _hash(change.data or entry)
        if change.upper_path is not None:
            side, index = "upper", None
        else:
            side = "lower"
            # An added entry seen through a renamed dir is its own "shadow": lower_layer names it.
            index = lower_index if (shadow is entry and entry is not None) else _layer_index(
                getattr(entry, "layer", None))
            if index is None:
                index = lower_index
        if entry is not None:
            out.append(_from_entry(entry, "merged", side, index, md5))
        else:
            out.append(_from_record(change, "merged", side, index, md5))
    if change.change in (MODIFIED, DELETED):
        md5 = _md5_value(extra.get("lower_md5"))
        if md5 is None and change.change == DELETED:
            md5 = _md5_value(extra.get("md5"))
        original = shadow if shadow is not None else (entry if change.change == DELETED else None)
        if md5 is None and hashes and original is not None:
            md5 = _hash(change.shadow_data or original)
        index = lower_index if lower_index is not None else _layer_index(
            getattr(original, "layer", None))
        if original is not None and not (change.change == MODIFIED and original is entry):
            out.append(_from_entry(original, "original", "lower", index, md5))
        elif original is None and change.change == DELETED:
            out.append(_from_record(change, "original", "lower", index, md5))
    return out


# -- bodyfile ------------------------------------------------------------------------------
def _name_suffix(change: Change, subject: Subject) -> str:
    """``(deleted)`` after a deleted path's original, as the Sleuth Kit names a deleted file;
    ``(original)`` after a modified path's original; nothing after what the container shows."""
    if subject.view != "original":
        return ""
    return " (deleted)" if change.change == DELETED else " (original)"


def bodyfile_line(change: Change, subject: Subject) -> str:
    """One TSK 3.x bodyfile line (with its newline) for one subject of a record."""
    name = escape_name(change.path) + _name_suffix(change, subject)
    if subject.kind == "symlink" and subject.target is not None:
        name += " -> " + escape_name(subject.target)
    times = subject.times
    fields = (
        subject.md5 or "0", name, subject.inode_field, mode_string(subject.mode, subject.kind),
        str(subject.uid), str(subject.gid), str(subject.size), body_time(times.get("atime")),
        body_time(times.get("mtime")), body_time(times.get("ctime")),
        body_time(times.get("btime")),
    )
    return "|".join(fields) + "\n"


# -- Timesketch ----------------------------------------------------------------------------
def _message(change: Change, subject: Subject) -> str:
    text = f"{change.change} {visible(change.path_text)}"
    if change.what:
        text += f" ({visible(_what(change))})"
    if change.via:
        text += f" via {change.via}"
    if change.renamed_from is not None:
        text += f" (renamed from {visible(escape_bytes(change.renamed_from))})"
    if subject.kind == "symlink" and subject.target is not None:
        text += f" -> {visible(escape_bytes(subject.target))}"
    return f"{text} - {subject.message_label}"


def _what(change: Change) -> str:
    """``mode 0755 -> 4755, content (size 5 -> 10)``: what changed, before and after."""
    if change.change != "modified" or change.lower_mode is None:
        return ", ".join(change.what)
    return what_text(change.to_dict())


def _base_fields(change: Change) -> dict:
    """The record's fields, flattened for Timesketch (no nested lower_layer, no record mtime)."""
    base = change.to_dict()
    base.pop("mtime", None)
    layer = base.pop("lower_layer", None) or {}
    base["lower_layer"] = layer.get("index")
    base["lower_layer_dir"] = layer.get("dir")
    for key in ("id", "diff_id", "image_index", "role"):
        if key in layer:
            base["lower_layer_" + key] = layer[key]
    return base


def _subject_fields(subject: Subject) -> dict:
    out = {
        "side": subject.side,
        "view": subject.view,
        "layer_index": subject.layer_index,
        "physical_path": escape_bytes(subject.physical) if subject.physical is not None else None,
        "inode": subject.ino,
        "type": subject.kind,
        "size": subject.size,
        "mode": format_mode(subject.mode),
        "uid": subject.uid,
        "gid": subject.gid,
        "target": escape_bytes(subject.target) if subject.target is not None else None,
        "md5": subject.md5,
    }
    if subject.physical is not None and not is_utf8(subject.physical):
        out["physical_path_b64"] = base64.b64encode(subject.physical).decode("ascii")
    if subject.target is not None and not is_utf8(subject.target):
        out["target_b64"] = base64.b64encode(subject.target).decode("ascii")
    return out


def timesketch_events(change: Change, hashes: bool = False) -> Iterator[dict]:
    """Timesketch events (dicts) for one record: one per known timestamp of each subject."""
    base = None
    for subject in subjects(change, hashes):
        if base is None:
            base = _base_fields(change)
        fields = dict(base)
        fields.pop("target_b64", None)  # the subject's own target decides it
        fields.update(_subject_fields(subject))
        message = _message(change, subject)
        for attr, desc in TIME_FIELDS:
            ns = subject.times.get(attr)
            if ns is None:
                continue
            when = _iso(ns)
            if when is None:
                continue
            event = {"message": message, "datetime": when[0], "timestamp": when[1],
                     "timestamp_desc": desc}
            event.update(fields)
            yield event


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)):
        value = ";".join(str(v) for v in value)
    return guard_formula(str(value))


def _csv_row(event: dict) -> list:
    row = [_csv_cell(event.get(col)) for col in CSV_COLUMNS]
    path_col, b64_col = CSV_COLUMNS.index("path"), CSV_COLUMNS.index("path_b64")
    if not row[b64_col] and event.get("path") is not None and row[path_col] != event["path"]:
        row[b64_col] = base64.b64encode(event["path"].encode("utf-8")).decode("ascii")
    return row


# -- entry point ---------------------------------------------------------------------------
def write_timeline(fmt: str, changes: Iterable[Change], stream: TextIO,
                   hashes: bool = False, extra_columns: tuple[str, ...] = ()) -> int:
    """Write the timeline of ``changes`` in ``fmt`` (:data:`FORMATS`) to ``stream``.

    Streams: each record is rendered as it arrives. Returns the number of bodyfile lines or
    Timesketch events written (the CSV header row not counted). ``hashes`` computes the MD5 of
    regular files whose record has none in ``extra``. ``extra_columns`` (e.g. ``package_status``
    with ``--packages``) are added to the CSV's columns. The stream is flushed, never closed.
    Unknown formats raise ``ValueError`` naming the valid ones.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown timeline format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    count = 0
    if fmt == "bodyfile":
        for change in changes:
            for subject in subjects(change, hashes):
                stream.write(bodyfile_line(change, subject))
                count += 1
    elif fmt == "timesketch":
        for change in changes:
            for event in timesketch_events(change, hashes):
                stream.write(json_line(event) + "\n")
                count += 1
    else:
        out = csv.writer(stream)  # QUOTE_MINIMAL quotes cells with newlines
        extra = tuple(c for c in extra_columns if c not in CSV_COLUMNS)
        out.writerow(CSV_COLUMNS + extra)
        for change in changes:
            for event in timesketch_events(change, hashes):
                out.writerow(_csv_row(event) + [_csv_cell(event.get(c)) for c in extra])
                count += 1
    stream.flush()
    return count
