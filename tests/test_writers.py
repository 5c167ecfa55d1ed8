"""Writers: every format renders Change.to_dict(), one record never spans lines/rows, and
hostile names (newlines, non-UTF-8 bytes, spreadsheet formulas, escapes) stay harmless."""
from __future__ import annotations

import base64
import csv
import io
import json

import pytest

from ovforensics.records.record import ADDED, ANOMALY, DELETED, MODIFIED, Change, LayerRef
from ovforensics.writers.formats import CSV_COLUMNS, FORMATS, guard_formula, open_writer, visible, write_all

FORMULA = "=cmd|' /C calc'!A0"
LAYER = LayerRef(index=2, dir="/var/lib/docker/overlay2/abc/diff", id="abc")


def sample() -> list[Change]:
    return [
        Change(path=b"/etc/passwd", change=MODIFIED, type="file", what=("content", "mtime"),
               lower_path=b"/etc/passwd", lower_layer=LAYER, upper_path=b"/up/etc/passwd",
               size=1234, mode=0o644, uid=0, gid=0, mtime_ns=1_700_000_000_123_456_789),
        Change(path=b"/tmp/new", change=ADDED, type="file", size=3, mode=0o755),
        Change(path=b"/bad\xff", change=ADDED, type="file", size=0),
        Change(path=b"/evil\nD /etc/shadow", change=ADDED, type="file"),
        Change(path=b"/gone", change=DELETED, type="dir", via="whiteout", lower_layer=LAYER),
        Change(path=b"/link", change=ADDED, type="symlink", target=FORMULA.encode()),
        Change(path=b"/odd", change=ANOMALY, anomaly="orphan-whiteout", detail="no lower entry"),
    ]


def render(fmt: str, changes) -> tuple[str, dict]:
    buf = io.StringIO()
    counts = write_all(fmt, changes, buf)
    return buf.getvalue(), counts


def read_csv(text: str) -> list[dict]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    return [dict(zip(rows[0], row)) for row in rows[1:]]


# -- API ----------------------------------------------------------------------------------
def test_formats_constant():
    assert FORMATS == ("table", "csv", "json", "jsonl", "docker")


def test_unknown_format_names_it_and_valid_ones():
    with pytest.raises(ValueError) as err:
        open_writer("xml", io.StringIO())
    msg = str(err.value)
    assert "'xml'" in msg
    for fmt in FORMATS:
        assert fmt in msg


@pytest.mark.parametrize("fmt", FORMATS)
def test_counts_every_kind(fmt):
    _, counts = render(fmt, sample())
    assert counts == {"added": 4, "modified": 1, "deleted": 1, "anomaly": 1}


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_input(fmt):
    text, counts = render(fmt, [])
    assert counts == {"added": 0, "modified": 0, "deleted": 0, "anomaly": 0}
    if fmt == "json":
        assert json.loads(text) == {"changes": [], "summary": counts}
    elif fmt == "csv":
        assert read_csv(text) == []
    elif fmt in ("jsonl", "docker"):
        assert text == ""


@pytest.mark.parametrize("fmt", FORMATS)
def test_stream_not_closed_and_close_idempotent(fmt):
    buf = io.StringIO()
    w = open_writer(fmt, buf)
    w.write(sample()[0])
    first = w.close()
    size = len(buf.getvalue())
    assert w.close() == first
    assert len(buf.getvalue()) == size  # second close writes nothing
    assert not buf.closed
    with pytest.raises(ValueError):
        w.write(sample()[0])


class Boom(Exception):
    pass


def test_exceptions_propagate_and_json_is_left_incomplete():
    def changes():
        yield sample()[0]
        raise Boom()

    buf = io.StringIO()
    with pytest.raises(Boom):
        write_all("json", changes(), buf)
    with pytest.raises(json.JSONDecodeError):
        json.loads(buf.getvalue())  # a failed scan must not look like a complete result


def test_stream_errors_propagate():
    class Broken(io.StringIO):
        def write(self, s):
            raise BrokenPipeError()

    with pytest.raises(BrokenPipeError):
        write_all("jsonl", sample(), Broken())


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "docker"])
def test_streaming_writers_emit_before_close(fmt):
    buf = io.StringIO()
    w = open_writer(fmt, buf)
    before = len(buf.getvalue())
    w.write(sample()[0])
    assert len(buf.getvalue()) > before


def test_table_buffers_until_close():
    buf = io.StringIO()
    w = open_writer("table", buf)
    w.write(sample()[0])
    assert buf.getvalue() == ""
    w.close()
    assert buf.getvalue().startswith("change") and "\nSummary:" in buf.getvalue()


# -- JSONL / JSON -------------------------------------------------------------------------
def test_jsonl_is_to_dict_one_per_line():
    changes = sample()
    text, _ = render("jsonl", changes)
    lines = text.split("\n")
    assert lines[-1] == ""
    assert [json.loads(line) for line in lines[:-1]] == [c.to_dict() for c in changes]


def test_jsonl_newline_and_unicode_line_separators_stay_on_one_line():
    path = "/a\nb\r\u2028c\u2029d\x85e\x1cf".encode()
    text, _ = render("jsonl", [Change(path=path, change=ADDED)])
    assert len(text.splitlines()) == 1  # splitlines also breaks on U+2028, U+0085, \x1c
    assert json.loads(text)["path"].encode() == path


def test_jsonl_non_utf8_keeps_exact_bytes():
    text, _ = render("jsonl", [Change(path=b"/bad\xff", change=ADDED)])
    rec = json.loads(text)
    assert rec["path"] == "/bad\\xff"
    assert base64.b64decode(rec["path_b64"]) == b"/bad\xff"


def test_json_document():
    changes = sample()
    text, counts = render("json", changes)
    doc = json.loads(text)
    assert list(doc) == ["changes", "summary"]
    assert doc["changes"] == [c.to_dict() for c in changes]
    assert doc["summary"] == counts


def test_json_keeps_formula_exact():
    text, _ = render("json", [Change(path=b"/link", change=ADDED, target=FORMULA.encode())])
    assert json.loads(text)["changes"][0]["target"] == FORMULA


# -- CSV ----------------------------------------------------------------------------------
def test_csv_columns_and_values():
    rows = read_csv(render("csv", sample())[0])
    first = rows[0]
    assert first["path"] == "/etc/passwd"
    assert first["change"] == "modified"
    assert first["what"] == "content;mtime"
    assert first["lower_layer"] == "2"
    assert first["lower_layer_dir"] == LAYER.dir
    assert first["size"] == "1234"
    assert first["mode"] == "0644"
    assert first["uid"] == "0"
    assert first["mtime"] == "2023-11-14T22:13:20.123456789Z"
    assert first["metacopy"] == "false"
    assert first["via"] == "" and first["anomaly"] == "" and first["path_b64"] == ""
    anomaly = rows[-1]
    assert (anomaly["change"], anomaly["anomaly"], anomaly["detail"]) == (
        "anomaly", "orphan-whiteout", "no lower entry")


@pytest.mark.parametrize("path", [b"/a\nb", b"/a\r\nb", b"/a\rb", b'/q"uo,te\n'])
def test_csv_newline_in_name_reads_back_exactly(path):
    rows = read_csv(render("csv", [Change(path=path, change=ADDED), sample()[1]])[0])
    assert len(rows) == 2
    assert rows[0]["path"].encode() == path
    assert rows[1]["path"] == "/tmp/new"


def test_csv_non_utf8_path_b64():
    row = read_csv(render("csv", [Change(path=b"/bad\xff", change=ADDED)])[0])[0]
    assert row["path"] == "/bad\\xff"
    assert base64.b64decode(row["path_b64"]) == b"/bad\xff"


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@", "\t", "\r"])
def test_guard_formula(prefix):
    assert guard_formula(prefix + "x") == "'" + prefix + "x"
    assert guard_formula("x" + prefix) == "x" + prefix
    assert guard_formula("") == ""


def test_csv_formula_guard_on_text_cells():
    change = Change(path=FORMULA.encode(), change=ANOMALY, target=b"+1+1", detail="@SUM(A1)",
                    renamed_from=b"-2", anomaly="\tx", upper_path=b"\r=1")
    row = read_csv(render("csv", [change])[0])[0]
    assert row["path"] == "'" + FORMULA
    assert row["target"] == "'+1+1"
    assert row["detail"] == "'@SUM(A1)"
    assert row["renamed_from"] == "'-2"
    assert row["anomaly"] == "'\tx"
    assert row["upper_path"] == "'\r=1"
    # The guard altered the path cell, so path_b64 carries the exact bytes.
    assert base64.b64decode(row["path_b64"]) == FORMULA.encode()


def test_csv_harmless_cells_untouched():
    row = read_csv(render("csv", [sample()[5]])[0])[0]
    assert row["path"] == "/link"
    assert row["path_b64"] == ""  # path cell is exact
    assert row["target"] == "'" + FORMULA


def test_csv_no_cell_starts_with_formula_char():
    changes = sample() + [Change(path=b"=1", change=ADDED, via="-x", type="+y")]
    for row in read_csv(render("csv", changes)[0]):
        for col, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (col, cell)


# -- table --------------------------------------------------------------------------------
def test_table_rows_then_summary_last(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text, _ = render("table", sample())
    lines = text.splitlines()
    assert lines[-1] == "Summary: 4 added, 1 modified, 1 deleted, 1 anomaly"  # never scrolled away
    header = next(line for line in lines if line.startswith("change"))
    for col in ("change", "path", "type", "what", "via", "lower layer", "size"):
        assert col in header
    body = "\n".join(lines[lines.index(header) + 2:])
    assert "content,mtime" in body
    assert "orphan-whiteout: no lower entry" in body
    assert "/bad\\xff" in body


def test_table_one_row_per_record_even_with_control_chars(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    changes = [
        Change(path=b"/evil\nadded    /etc/shadow", change=ADDED, type="file"),
        Change(path=b"/cr\rx", change=ADDED),
        Change(path="/esc\x1b[31mred\u2028\u202e".encode(), change=MODIFIED),
    ]
    text, _ = render("table", changes)
    lines = text.split("\n")
    # header, rule, three rows, blank, summary, trailing ""
    assert len(lines) == 8, text
    assert "\\n" in lines[2] and "\\r" in lines[3]
    assert "\\x1b" in lines[4] and "\\u2028" in lines[4] and "\\u202e" in lines[4]
    assert "\x1b" not in text and "\r" not in text


def test_table_empty():
    text, _ = render("table", [])
    assert text == "(no changes)\nSummary: 0 added, 0 modified, 0 deleted, 0 anomaly\n"


# -- docker -------------------------------------------------------------------------------
def test_docker_lines():
    text, _ = render("docker", sample())
    assert text.split("\n") == [
        "C /etc/passwd",
        "C /tmp",  # the parent of an added path, as docker diff prints it
        "A /tmp/new",
        "A /bad\\xff",
        "C /evil\\nD /etc",  # its parent directory (a name with a newline, escaped)
        "A /evil\\nD /etc/shadow",  # the newline cannot forge a "D" line
        "D /gone",
        "A /link",
        "",  # anomaly not printed
    ]


def test_docker_escapes_control_chars():
    text, _ = render("docker", [Change(path="/a\rb\tc\x1b\u2028".encode(), change=ADDED)])
    assert text == "A /a\\rb\\tc\\x1b\\u2028\n"


def test_visible():
    assert visible("/plain/ü") == "/plain/ü"
    assert visible("a\nb") == "a\\nb"
    assert visible("\x00\x7f\x85") == "\\x00\\x7f\\x85"
    assert visible("\U000e0001") == "\\U000e0001"
