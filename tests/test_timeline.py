r"""Timelines: TSK 3 bodyfile (read back field by field and through the real ``mactime``) and
Timesketch JSONL/CSV, on a small hand-made stack (no root needed): a modified file, a deleted
file and a deleted directory (OCI ``.wh.`` markers), added files, a FIFO, a sticky directory, a
symlink, and names holding ``|``, ``\``, ``%41``, a newline, U+202E and bytes that are not UTF-8.

Expected values come from ``os.lstat`` (and statx for birth times) of the files on disk, not from
the module under test.
"""
from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ovforensics
from conftest import need
from ovforensics.layers.layer import DirLayer, statx_btime_ns
from ovforensics.records.record import ADDED, ANOMALY, DELETED, MODIFIED, Change, LayerRef
from ovforensics.writers.timeline import CSV_COLUMNS, FORMATS, TIME_FIELDS, UTC_NOTE, escape_name, mode_string, write_timeline

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
S = 1_000_000_000

# name (bytes, relative to the layer root) -> (atime_ns, mtime_ns)
WEIRD = b"mod|pipe\\back"
NEWLINE = b"new\nline %41 \xff\xfe"
RTL = "rtl\u202etxt.exe".encode()
LINK_TARGET = b"=HYPERLINK(\"http://x\")|t"
PASSWD_LOWER_ATIME = 1_600_000_000 * S + 111_111_111
PASSWD_LOWER_MTIME = 1_500_000_000 * S + 222_222_222
PASSWD_UPPER_ATIME = 1_700_000_001 * S + 333_333_333
PASSWD_UPPER_MTIME = 1_700_000_000 * S + 444_444_444


def _file(root: bytes, rel: bytes, data: bytes, times, mode=0o644):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)
    os.utime(path, ns=times)
    return path


@pytest.fixture
def stack(tmp_path):
    """(upper, lower) directories: the changes listed in the module docstring."""
    lower, upper = os.fsencode(tmp_path / "lower"), os.fsencode(tmp_path / "upper")
    for root in (lower, upper):
        os.makedirs(root + b"/etc")
        os.chmod(root + b"/etc", 0o755)
    _file(lower, b"etc/passwd", b"root:x:0:0\n", (PASSWD_LOWER_ATIME, PASSWD_LOWER_MTIME))
    _file(upper, b"etc/passwd", b"root:x:0:0\nevil:x:0:0\n",
          (PASSWD_UPPER_ATIME, PASSWD_UPPER_MTIME))
    _file(lower, b"gone.txt", b"bye", (1_500_000_100 * S + 1, 1_500_000_100 * S + 2))
    _file(upper, b".wh.gone.txt", b"", (1_700_000_002 * S, 1_700_000_002 * S))
    _file(lower, b"olddir/inner", b"in", (1_500_000_150 * S, 1_500_000_150 * S + 5))
    _file(upper, b".wh.olddir", b"", (1_700_000_003 * S, 1_700_000_003 * S))
    _file(lower, WEIRD, b"a", (1_500_000_200 * S, 1_500_000_200 * S))
    _file(upper, WEIRD, b"b", (1_700_000_200 * S, 1_700_000_200 * S + 500_000_000), 0o4755)
    _file(upper, NEWLINE, b"x", (1_700_000_300 * S, 1_700_000_300 * S + 7))
    _file(upper, RTL, b"exe", (1_700_000_310 * S, 1_700_000_310 * S), 0o2644)
    os.symlink(LINK_TARGET, upper + b"/link")
    os.utime(upper + b"/link", ns=(1_700_000_400 * S, 1_700_000_400 * S + 9), follow_symlinks=False)
    os.mkfifo(upper + b"/fifo", 0o644)
    os.chmod(upper + b"/fifo", 0o640)
    os.utime(upper + b"/fifo", ns=(1_700_000_500 * S, 1_700_000_500 * S))
    os.mkdir(upper + b"/sticky")
    os.chmod(upper + b"/sticky", 0o1777)
    os.utime(upper + b"/sticky", ns=(1_700_000_600 * S, 1_700_000_600 * S + 600))
    # The oracle: every entry's stat before any scan. Listed first (listing a directory may
    # update its atime), then lstat'ed (which changes nothing).
    paths = [os.path.join(where, name) for root in (upper, lower)
             for where, dirs, files in os.walk(root) for name in dirs + files]
    BEFORE.clear()
    for path in paths:
        st_ = os.lstat(path)
        BEFORE[path] = (st_, {"atime": st_.st_atime_ns, "mtime": st_.st_mtime_ns,
                              "ctime": st_.st_ctime_ns, "btime": statx_btime_ns(path)})
    return upper, lower


# physical path -> (lstat, times) taken when the stack was made. Taken before scanning because
# reading a symlink (readlink(2)) updates its atime where the mount allows it: the timeline
# must show the times the scan found, which are the ones from before.
BEFORE: dict = {}


def scan(stack, **kw):
    upper, lower = stack
    return list(ovforensics.scan(upper, [lower], whiteouts="oci", **kw))


def expected_subjects(changes):
    """(change, entry, label, view) per subject, by the rule: merged entry of added/modified
    (all stored in the upper here), shadowed original of modified/deleted (lower layer 0)."""
    out = []
    for c in changes:
        if c.change in (ADDED, MODIFIED):
            out.append((c, c.entry, "upper", "merged"))
        if c.change in (MODIFIED, DELETED):
            out.append((c, c.shadow, "original in lower layer 0", "original"))
    return out


def stat_times(physical: bytes) -> dict:
    return BEFORE[physical][1]


# -- a bodyfile reader written against the TSK 3 spec ------------------------------------------
def has_controls(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") for ch in text)


def split_unescaped(line: str) -> list[str]:
    """Split on every ``|`` not escaped by a backslash; escapes are kept for :func:`unescape`."""
    fields, cur, i = [], [], 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            cur.append(line[i:i + 2])
            i += 2
            continue
        if ch == "|":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    fields.append("".join(cur))
    return fields


def unescape(field: str) -> bytes:
    r"""``\\`` -> ``\``, ``\|`` -> ``|``, ``\xNN`` -> byte NN; everything else is UTF-8 text."""
    out, i = bytearray(), 0
    while i < len(field):
        ch = field[i]
        if ch == "\\":
            nxt = field[i + 1]
            if nxt in "\\|":
                out += nxt.encode()
                i += 2
                continue
            assert nxt == "x", f"unknown escape in {field!r}"
            out.append(int(field[i + 2:i + 4], 16))
            i += 4
            continue
        out += ch.encode("utf-8")
        i += 1
    return bytes(out)


def parse_time(text: str) -> int | None:
    if text == "0":
        return None
    secs, frac = text.split(".")
    assert len(frac) == 9
    return int(secs) * S + int(frac)


def read_bodyfile(text: str) -> list[dict]:
    rows = []
    assert text.endswith("\n")
    for line in text[:-1].split("\n"):
        assert not has_controls(line), line  # no raw control/format/line-break characters
        fields = split_unescaped(line)
        assert len(fields) == 11, line
        assert line.count("|") == 10  # no | inside a field at all (mactime needs that)
        md5, name, inode, mode, uid, gid, size, atime, mtime, ctime, crtime = fields
        rows.append({"md5": md5, "name": unescape(name), "name_text": name, "inode": int(inode.partition("-")[0]), "inode_field": inode,
                     "mode": mode, "uid": int(uid), "gid": int(gid), "size": int(size),
                     "atime": parse_time(atime), "mtime": parse_time(mtime),
                     "ctime": parse_time(ctime), "btime": parse_time(crtime),
                     "raw_times": (atime, mtime, ctime, crtime)})
    return rows


def tsk_mode(st_mode: int) -> str:
    """Expected mode_as_string, from the stdlib's ``ls -l`` string (fls says r for a file)."""
    ls = stat.filemode(st_mode)
    t = "r" if ls[0] == "-" else ls[0]
    return f"{t}/{t}{ls[1:]}"


def render(fmt, changes, **kw) -> tuple[str, int]:
    buf = io.StringIO()
    n = write_timeline(fmt, changes, buf, **kw)
    return buf.getvalue(), n


# -- API ---------------------------------------------------------------------------------------
def test_formats_and_notes():
    assert FORMATS == ("bodyfile", "timesketch", "timesketch-csv")
    assert set(UTC_NOTE) == set(FORMATS)
    assert all("UTC" in note for note in UTC_NOTE.values())
    import ovforensics.writers.timeline as tl
    assert "UTC" in tl.__doc__ and "-z UTC" in tl.__doc__


def test_unknown_format_names_valid_ones():
    with pytest.raises(ValueError) as err:
        write_timeline("plaso", [], io.StringIO())
    assert "'plaso'" in str(err.value) and all(f in str(err.value) for f in FORMATS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_and_anomalies_only(fmt):
    odd = Change(path=b"/x", change=ANOMALY, anomaly="orphan-whiteout", detail="nothing below")
    text, n = render(fmt, iter([odd]))
    assert n == 0
    assert text == (",".join(CSV_COLUMNS) + "\r\n" if fmt == "timesketch-csv" else "")


@pytest.mark.parametrize("fmt", FORMATS)
def test_streams_and_leaves_stream_open(fmt, stack):
    seen = []

    def gen():
        for c in scan(stack):
            seen.append(c)
            yield c

    buf = io.StringIO()
    n = write_timeline(fmt, gen(), buf)
    assert not buf.closed and n > 0 and seen


@pytest.mark.parametrize("mode, expected", [
    (0o100644, "r/rrw-r--r--"), (0o040755, "d/drwxr-xr-x"), (0o120777, "l/lrwxrwxrwx"),
    (0o020000, "c/c---------"), (0o010644, "p/prw-r--r--"), (0o060660, "b/brw-rw----"),
    (0o140755, "s/srwxr-xr-x"), (0o104755, "r/rrwsr-xr-x"), (0o104644, "r/rrwSr--r--"),
    (0o102755, "r/rrwxr-sr-x"), (0o102644, "r/rrw-r-Sr--"), (0o041777, "d/drwxrwxrwt"),
    (0o041776, "d/drwxrwxrwT"), (0o107777, "r/rrwsrwsrwt"),
])
def test_mode_string_as_fls(mode, expected):
    assert mode_string(mode) == expected
    assert tsk_mode(mode) == expected  # the test's oracle agrees


@pytest.mark.parametrize("raw, text", [
    (b"/a|b", "/a\\x7cb"), (b"/a\\b", "/a\\\\b"), (b"/n\nl\tt\r", "/n\\x0al\\x09t\\x0d"),
    (b"/\xff\xfe", "/\\xff\\xfe"), (b"/100%41", "/100\\x2541"), (b"/100% x%4", "/100% x%4"),
    ("/\u202e\u2028\x85é".encode(), "/\\xe2\\x80\\xae\\xe2\\x80\\xa8\\xc2\\x85é"),
    (b"/\x7f\x00", "/\\x7f\\x00"),
])
def test_escape_name_examples(raw, text):
    assert escape_name(raw) == text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40)
       | st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_escape_name_round_trips_and_is_safe(raw):
    text = escape_name(raw)
    assert "|" not in text and "\n" not in text and "\r" not in text
    assert not has_controls(text)
    text.encode("utf-8")  # always valid UTF-8
    assert unescape(text) == raw
    import re
    assert not re.search(r"%[0-9A-Fa-f]{2}", text)  # mactime would decode it


# -- bodyfile ----------------------------------------------------------------------------------
def test_bodyfile_fields_exact(stack):
    changes = scan(stack)
    kinds = {(c.change, c.path) for c in changes}
    assert {(MODIFIED, b"/etc/passwd"), (DELETED, b"/gone.txt"), (DELETED, b"/olddir"),
            (DELETED, b"/olddir/inner"), (MODIFIED, b"/" + WEIRD), (ADDED, b"/" + NEWLINE),
            (ADDED, b"/" + RTL), (ADDED, b"/link"), (ADDED, b"/fifo"), (ADDED, b"/sticky")} <= kinds
    text, n = render("bodyfile", changes)
    rows = read_bodyfile(text)
    want = expected_subjects(changes)
    assert n == len(rows) == len(want)
    for row, (change, entry, label, _view) in zip(rows, want):
        suffix = {"upper": b"", "original in lower layer 0":
                  b" (deleted)" if change.change == DELETED else b" (original)"}[label]
        name = change.path + suffix
        if entry.kind == "symlink":
            name += b" -> " + os.readlink(entry.physical)
        assert row["name"] == name
        st_ = BEFORE[entry.physical][0]
        assert row["inode"] == st_.st_ino
        assert row["inode_field"] == f"{st_.st_ino}" + ("" if label == "upper" else "-0")
        assert row["mode"] == tsk_mode(st_.st_mode)
        assert (row["uid"], row["gid"], row["size"]) == (st_.st_uid, st_.st_gid, st_.st_size)
        assert row["md5"] == "0"
        times = stat_times(entry.physical)
        for key in ("atime", "mtime", "ctime", "btime"):
            assert row[key] == times[key], (name, key)
    by_name = {r["name"]: r for r in rows}
    # the documented names, literally
    assert b"/etc/passwd" in by_name
    assert b"/etc/passwd (original)" in by_name
    assert b"/gone.txt (deleted)" in by_name
    assert b"/olddir/inner (deleted)" in by_name
    original = by_name[b"/etc/passwd (original)"]
    assert original["mtime"] == PASSWD_LOWER_MTIME and original["atime"] == PASSWD_LOWER_ATIME
    assert by_name[b"/etc/passwd"]["atime"] == PASSWD_UPPER_ATIME
    assert by_name[b"/" + WEIRD + b""]["mode"] == "r/rrwsr-xr-x"
    assert by_name[b"/" + RTL + b""]["mode"] == "r/rrw-r-Sr--"
    assert by_name[b"/fifo"]["mode"] == "p/prw-r-----"
    assert by_name[b"/sticky"]["mode"] == "d/drwxrwxrwt"
    assert by_name[b"/link -> " + LINK_TARGET]["mode"] == "l/lrwxrwxrwx"
    # the escapes as written
    texts = {r["name_text"] for r in rows}
    assert "/mod\\x7cpipe\\\\back" in texts
    assert "/new\\x0aline \\x2541 \\xff\\xfe" in texts


def test_bodyfile_md5_from_extra_and_computed(stack):
    upper, lower = stack
    digest = lambda p: hashlib.md5(open(p, "rb").read()).hexdigest()  # noqa: E731
    # from scan's own enrichment (md5 / lower_md5 in extra)
    rows = {r["name"]: r for r in read_bodyfile(render("bodyfile", scan(stack, hashes="md5"))[0])}
    assert rows[b"/etc/passwd"]["md5"] == digest(upper + b"/etc/passwd")
    original = rows[b"/etc/passwd (original)"]
    assert original["md5"] == digest(lower + b"/etc/passwd")
    gone = rows[b"/gone.txt (deleted)"]
    assert gone["md5"] == digest(lower + b"/gone.txt")
    assert rows[b"/fifo"]["md5"] == "0"
    assert rows[b"/sticky"]["md5"] == "0"
    # computed by the writer (hashes=True), same answers
    rows2 = {r["name"]: r for r in read_bodyfile(render("bodyfile", scan(stack), hashes=True)[0])}
    assert {k: r["md5"] for k, r in rows2.items()} == {k: r["md5"] for k, r in rows.items()}
    # a value in extra wins; junk there is not written
    c = next(c for c in scan(stack) if c.path == b"/etc/passwd")
    c.extra["md5"], c.extra["lower_md5"] = "A" * 32, "not-a-hash"
    got = read_bodyfile(render("bodyfile", [c])[0])
    assert [r["md5"] for r in got] == ["a" * 32, "0"]


def test_bodyfile_through_real_mactime(stack, tmp_path):
    need(shutil.which("mactime"), "mactime (Debian package sleuthkit) is not installed")
    changes = scan(stack)
    body = tmp_path / "stack.body"
    with open(body, "w", encoding="utf-8", newline="") as fh:
        n = write_timeline("bodyfile", changes, fh)
    rows = read_bodyfile(body.read_text("utf-8"))
    assert n == len(rows)
    proc = subprocess.run(["mactime", "-b", str(body), "-z", "UTC", "-d"], capture_output=True,
                          check=True, env={**os.environ, "LC_ALL": "C"})
    out = list(csv.reader(io.StringIO(proc.stdout.decode("utf-8"), newline="")))
    assert out[0] == ["Date", "Size", "Type", "Mode", "UID", "GID", "Meta", "File Name"]
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

    def date(secs: int) -> str:
        if secs == 0:
            return "Xxx Xxx 00 0000 00:00:00"
        t = EPOCH + dt.timedelta(seconds=secs)
        return f"{days[t.weekday()]} {months[t.month - 1]} {t:%d %Y %H:%M:%S}"

    want: dict = {}
    for r in rows:
        for letter, raw in zip("macb", (r["raw_times"][1], r["raw_times"][0], r["raw_times"][2],
                                        r["raw_times"][3])):
            secs = int(raw.split(".")[0])
            key = (date(secs), r["inode_field"], r["name_text"])
            want.setdefault(key, set()).add(letter)
    got: dict = {}
    others = {}
    for day, size, macb, mode, uid, gid, inode, name in out[1:]:
        got[(day, inode, name)] = {ch for ch in macb if ch != "."}
        others[name] = (int(size), mode, int(uid), int(gid))
    assert got == want
    for r in rows:  # every line made it through (mactime drops lines it cannot split)
        assert others[r["name_text"]] == (r["size"], r["mode"], r["uid"], r["gid"])
    # literally: the shadowed original's mtime, the upper copy's atime, escapes left as written
    original = "/etc/passwd (original)"
    inode = next(r["inode_field"] for r in rows if r["name_text"] == original)
    assert inode.endswith("-0")  # the layer, in its own field, through mactime
    assert got[("Fri Jul 14 2017 02:40:00", inode, original)] == {"m"}  # PASSWD_LOWER_MTIME
    assert got[("Sun Sep 13 2020 12:26:40", inode, original)] == {"a"}  # PASSWD_LOWER_ATIME
    names = {name for *_, name in out[1:]}
    assert "/new\\x0aline \\x2541 \\xff\\xfe" in names  # %41 not decoded to A
    assert "/mod\\x7cpipe\\\\back" in names
    assert "/gone.txt (deleted)" in names


def test_bodyfile_tar_layers_unknown_times_are_zero(tmp_path):
    def tar(path, members):
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
            for name, data, mtime in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), mtime, 0o644
                tf.addfile(info, io.BytesIO(data))
        return str(path)

    lower = tar(tmp_path / "lower.tar", [("etc/passwd", b"a", 1_500_000_000),
                                         ("gone", b"g", 1_500_000_001)])
    upper = tar(tmp_path / "upper.tar", [("etc/passwd", b"bb", 1_700_000_000),
                                         (".wh.gone", b"", 1_700_000_001)])
    changes = list(ovforensics.scan(upper, [lower]))
    rows = read_bodyfile(render("bodyfile", changes)[0])
    assert [r["name"] for r in rows] == [b"/etc/passwd",
                                         b"/etc/passwd (original)",
                                         b"/gone (deleted)"]
    assert [r["mtime"] for r in rows] == [1_700_000_000 * S, 1_500_000_000 * S, 1_500_000_001 * S]
    for r in rows:
        assert r["raw_times"][0] == r["raw_times"][2] == r["raw_times"][3] == "0"
    events = [json.loads(line) for line in render("timesketch", changes)[0].splitlines()]
    assert [e["timestamp_desc"] for e in events] == ["Content Modification Time"] * 3


def test_records_without_entries_and_lower_side_labels(tmp_path):
    """Hand-built records fall back to their fields; a merged entry stored in a lower (seen
    through a renamed directory) is labelled with its layer."""
    layer = LayerRef(index=2, dir="/l2")
    bare = [
        Change(path=b"/new", change=ADDED, type="file", size=3, mode=0o755, uid=1, gid=2,
               mtime_ns=5 * S + 7, upper_path=b"/up/new"),
        Change(path=b"/old", change=DELETED, type="dir", mode=0o700, via="whiteout",
               lower_layer=layer, lower_path=b"/l2/old", mtime_ns=4 * S),
    ]
    rows = read_bodyfile(render("bodyfile", bare)[0])
    fields = ("name", "mode", "uid", "gid", "size", "mtime", "atime")
    assert [tuple(r[f] for f in fields) for r in rows] == [
        (b"/new", "r/rrwxr-xr-x", 1, 2, 3, 5 * S + 7, None),
        (b"/old (deleted)", "d/drwx------", 0, 0, 0, 4 * S, None)]
    events = [json.loads(x) for x in render("timesketch", bare)[0].splitlines()]
    assert [(e["side"], e["view"], e["layer_index"]) for e in events] == [
        ("upper", "merged", None), ("lower", "original", 2)]

    os.makedirs(tmp_path / "l1" / "d")
    (tmp_path / "l1" / "d" / "f").write_bytes(b"x")
    entry = DirLayer(str(tmp_path / "l1"), index=1).listdir((b"d",))[b"f"]
    moved = Change(path=b"/renamed/f", change=ADDED, type="file", renamed_from=None,
                   lower_layer=LayerRef(1, str(tmp_path / "l1")), lower_path=entry.physical,
                   entry=entry, data=entry, shadow=entry)
    rows = read_bodyfile(render("bodyfile", [moved])[0])
    assert [r["name"] for r in rows] == [b"/renamed/f"]
    events = [json.loads(x) for x in render("timesketch", [moved])[0].splitlines()]
    assert {(e["side"], e["view"], e["layer_index"]) for e in events} == {("lower", "merged", 1)}
    assert all(e["message"] == "added /renamed/f - in lower layer 1" for e in events)


# -- Timesketch --------------------------------------------------------------------------------
def check_event(event: dict):
    for key in ("message", "datetime", "timestamp_desc", "timestamp"):
        assert event.get(key) not in (None, ""), key
    when = dt.datetime.fromisoformat(event["datetime"])
    assert event["datetime"].endswith("+00:00") and when.utcoffset() == dt.timedelta(0)
    assert when - EPOCH == dt.timedelta(microseconds=int(event["timestamp"]))
    assert event["timestamp_desc"] in dict(TIME_FIELDS).values()


def expected_events(changes) -> set:
    """(path, view, side, timestamp_desc, microseconds) for every known time of every subject."""
    out = set()
    for change, entry, _label, view in expected_subjects(changes):
        times = stat_times(entry.physical)
        for attr, desc in TIME_FIELDS:
            if times[attr] is not None:
                side = "upper" if view == "merged" else "lower"
                out.add((change.path_text, view, side, desc, times[attr] // 1000))
    return out


def test_timesketch_jsonl(stack):
    changes = scan(stack)
    text, n = render("timesketch", changes)
    lines = text.splitlines()
    assert len(lines) == n and text.endswith("\n")
    events = [json.loads(line) for line in lines]
    for e in events:
        check_event(e)
    got = [(e["path"], e["view"], e["side"], e["timestamp_desc"], e["timestamp"]) for e in events]
    assert len(got) == len(set(got))  # one event per timestamp, none twice
    assert set(got) == expected_events(changes)

    passwd = [e for e in events if e["path"] == "/etc/passwd"]
    assert {(e["side"], e["view"]) for e in passwd} == {("upper", "merged"), ("lower", "original")}
    upper_m = next(e for e in passwd
                   if e["side"] == "upper" and e["timestamp_desc"] == "Content Modification Time")
    assert upper_m["datetime"] == "2023-11-14T22:13:20.444444+00:00"
    assert upper_m["timestamp"] == 1_700_000_000_444_444
    assert upper_m["message"] == "modified /etc/passwd (content (size 11 -> 22), mtime) - upper copy"
    assert upper_m["what"] == ["content", "mtime"] and upper_m["change"] == "modified"
    assert upper_m["lower_layer"] == 0 and upper_m["size"] == 22 and upper_m["mode"] == "0644"
    orig = next(e for e in passwd if e["view"] == "original")
    assert orig["message"] == "modified /etc/passwd (content (size 11 -> 22), mtime) - original in lower layer 0"
    assert orig["size"] == 11 and orig["layer_index"] == 0  # the original's own size
    assert orig["physical_path"].endswith("/lower/etc/passwd")
    gone = next(e for e in events if e["path"] == "/gone.txt")
    assert gone["message"] == "deleted /gone.txt via wh-file - original in lower layer 0"
    assert gone["via"] == "wh-file" and gone["lower_path"].endswith("/lower/gone.txt")
    bad = next(e for e in events if e.get("path_b64") and e["change"] == "added")
    assert base64.b64decode(bad["path_b64"]) == b"/" + NEWLINE
    assert "\n" not in bad["message"] and "\\n" in bad["message"]
    rtl = next(e for e in events if e["path"] == "/" + RTL.decode())
    assert "\u202e" not in rtl["message"]  # shown as an escape in the human text
    link = next(e for e in events if e["path"] == "/link")
    assert link["target"] == LINK_TARGET.decode() and link["type"] == "symlink"


def test_timesketch_csv(stack):
    changes = scan(stack)
    text, n = render("timesketch-csv", changes)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    rows = list(reader)
    assert len(rows) == n
    for row in rows:
        check_event(row)
        for col in CSV_COLUMNS:
            assert not row[col].startswith(("=", "+", "-", "@", "\t", "\r")), (col, row[col])
    def path(row):  # path_b64, when filled, is authoritative
        if not row["path_b64"]:
            return row["path"]
        return base64.b64decode(row["path_b64"]).decode("utf-8", "backslashreplace")

    got = {(path(r), r["view"], r["side"], r["timestamp_desc"], int(r["timestamp"]))
           for r in rows}
    assert len(got) == len(rows)
    assert got == expected_events(changes)
    passwd = [r for r in rows if r["path"] == "/etc/passwd"]
    assert {(r["side"], r["view"]) for r in passwd} == {("upper", "merged"), ("lower", "original")}
    assert passwd[0]["what"] == "content;mtime"
    link = next(r for r in rows if r["path"] == "/link")
    assert link["target"] == "'" + LINK_TARGET.decode()  # formula guard
    bad = next(r for r in rows if r["path_b64"] and r["change"] == "added")
    assert base64.b64decode(bad["path_b64"]) == b"/" + NEWLINE
    assert "\n" in bad["path"]  # the exact (quoted) name, one CSV row nevertheless
