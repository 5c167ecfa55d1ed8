"""The fast paths of issue 6 say exactly what the plain ones say.

- ``RecordDicts`` (the writers' cached ``to_dict``) == ``Change.to_dict()``;
- the spooled table == the same table rendered from the rows in memory;
- a listed entry's fields == its ``lstat``.
"""
from __future__ import annotations

import io
import os
import stat

from hypothesis import given, settings
from hypothesis import strategies as st

from ovforensics.layers.layer import DirLayer
from ovforensics.records.record import ADDED, ANOMALY, DELETED, MODIFIED, Change, LayerRef
from ovforensics.writers import tables
from ovforensics.writers.formats import TABLE_HEADERS, TABLE_KINDS, RecordDicts, open_writer, summary_line, visible

LAYER = LayerRef(index=1, dir="/var/lib/docker/overlay2/abc/diff", id="abc", diff_id="sha256:00",
                 image_index=3, role="image")

names = st.binary(min_size=1, max_size=12).map(lambda b: b"/" + b.replace(b"\0", b"0"))
maybe_names = st.none() | names
times = st.none() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)


@st.composite
def changes(draw) -> Change:
    kind = draw(st.sampled_from([ADDED, MODIFIED, DELETED, ANOMALY]))
    return Change(
        path=draw(names), change=kind,
        type=draw(st.none() | st.sampled_from(["file", "dir", "symlink", "char"])),
        what=tuple(draw(st.lists(st.sampled_from(["content", "mode", "type"]), max_size=2))),
        via=draw(st.none() | st.sampled_from(["whiteout", "opaque"])),
        lower_path=draw(maybe_names), lower_layer=draw(st.none() | st.just(LAYER)),
        upper_path=draw(maybe_names), size=draw(st.none() | st.integers(0, 2 ** 40)),
        mode=draw(st.none() | st.integers(0, 0o7777)), uid=draw(st.none() | st.integers(0, 70000)),
        gid=draw(st.none() | st.integers(0, 70000)), mtime_ns=draw(times),
        target=draw(maybe_names), renamed_from=draw(maybe_names), metacopy=draw(st.booleans()),
        anomaly=draw(st.none() | st.just("unreadable")), detail=draw(st.none() | st.text(max_size=20)),
        extra=draw(st.dictionaries(st.sampled_from(["sha256", "atime"]), st.text(max_size=8))),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(changes(), max_size=6))
def test_record_dicts_equal_to_dict(records):
    fast = RecordDicts()
    for record in records * 2:  # the second pass reads the caches
        assert fast(record) == record.to_dict()
        assert list(fast(record)) == list(record.to_dict())  # same key order


def _tabulated(records, no_trunc: bool) -> str:
    """The spooled table equals the same table made from the rows in memory."""
    rows, counts = [], {"added": 0, "modified": 0, "deleted": 0, "anomaly": 0}
    for record in records:
        counts[record.change] += 1
        d = record.to_dict()
        what = ",".join(d["what"])
        if d["change"] == ANOMALY:
            what = ": ".join(x for x in (d.get("anomaly"), d.get("detail")) if x)
        layer = d["lower_layer"] or {}
        rows.append([visible(d["change"]), visible(d["path"]), visible(d["type"] or ""),
                     visible(what), visible(d["via"] or (f"renamed from {d['renamed_from']}"
                                                         if d["renamed_from"] else "")),
                     "" if layer.get("index") is None else str(layer["index"]),
                     tables.cell(d["size"], "bytes", no_trunc)])
    out = summary_line(counts) + "\n"
    if not rows:
        return "(no changes)\n" + out
    return "\n".join(tables.render(TABLE_HEADERS, rows, TABLE_KINDS, 100, no_trunc)) + "\n\n" + out


@settings(max_examples=200, deadline=None)
@given(st.lists(changes(), max_size=8))
def test_spooled_table_equals_tabulate(records):
    buf = io.StringIO()
    for no_trunc in (False, True):
        buf = io.StringIO()
        writer = open_writer("table", buf, no_trunc=no_trunc)
        writer.width = 100
        for record in records:
            writer.write(record)
        writer.close()
        assert buf.getvalue() == _tabulated(records, no_trunc)


def _fields(entry) -> tuple:
    return (entry.kind, entry.mode, entry.uid, entry.gid, entry.size, entry.mtime_ns,
            entry.atime_ns, entry.ctime_ns, entry.rdev, entry.nlink, entry.ino, entry.blocks)


def test_listed_entries_carry_their_stat(tmp_path):
    os.makedirs(tmp_path / "d" / "sub")
    (tmp_path / "d" / "f").write_text("data")
    os.symlink("f", tmp_path / "d" / "link")
    os.mkfifo(tmp_path / "d" / "fifo")
    os.chmod(tmp_path / "d" / "f", 0o640)
    listing = DirLayer(str(tmp_path)).listdir((b"d",))
    assert sorted(listing) == [b"f", b"fifo", b"link", b"sub"]
    for name, entry in listing.items():
        st = os.lstat(os.path.join(tmp_path, "d", os.fsdecode(name)))
        kind = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                stat.S_IFIFO: "fifo"}[stat.S_IFMT(st.st_mode)]
        assert _fields(entry) == (kind, st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                  st.st_mtime_ns, st.st_atime_ns, st.st_ctime_ns, st.st_rdev,
                                  st.st_nlink, st.st_ino, st.st_blocks), name
    assert listing[b"link"].target == b"f" and listing[b"f"].perm == 0o640
