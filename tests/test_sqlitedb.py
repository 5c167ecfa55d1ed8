"""A store database from the evidence is data, never a program (libpod's db.sql)."""
from __future__ import annotations

import json
import resource
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from ovforensics.evidence.sqlitedb import SQLiteError, read_rows

REAL_SCHEMA = """CREATE TABLE ContainerState(ID TEXT PRIMARY KEY NOT NULL, State INTEGER NOT NULL,
                 ExitCode INTEGER, JSON TEXT NOT NULL)"""


def _db(path, *sql: str) -> str:
    con = sqlite3.connect(path)
    for stmt in sql:
        con.execute(stmt)
    con.commit()
    con.close()
    return str(path)


def test_reads_the_table(tmp_path):
    db = _db(tmp_path / "db.sql", REAL_SCHEMA,
             """INSERT INTO ContainerState VALUES ('c1', 1, 0, '{"state": 6}')""")
    assert read_rows(db, "ContainerState", ("ID", "JSON")) == ([(b"c1", b'{"state": 6}')], False)
    # nothing written beside the evidence (immutable: no journal, no -wal, no -shm)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.sql"]


RECURSIVE_VIEW = """CREATE VIEW ContainerState AS WITH RECURSIVE r(ID, JSON) AS
    (SELECT 'x', zeroblob(1000) UNION ALL SELECT ID || 'x', JSON FROM r) SELECT ID, JSON FROM r"""


@pytest.mark.parametrize("schema, words", [
    ([RECURSIVE_VIEW], "is a view"),
    (["CREATE VIRTUAL TABLE ContainerState USING fts5(ID, JSON)"], "virtual table"),
    (["CREATE TABLE Other(x)"], "no table ContainerState"),
])
def test_code_in_the_schema_is_refused(tmp_path, schema, words):
    db = _db(tmp_path / "db.sql", *schema)
    with pytest.raises(SQLiteError, match=words):
        read_rows(db, "ContainerState", ("ID", "JSON"))


def test_only_the_named_columns_are_read(tmp_path):
    # a generated column whose expression would do the work of a view is not a column we asked
    # for, and a column that is not there is an error, not a crash
    db = _db(tmp_path / "db.sql", REAL_SCHEMA, "INSERT INTO ContainerState VALUES ('c', 1, 0, '{}')")
    with pytest.raises(SQLiteError, match="no such column"):  # SQLite would read "Nope" as a string
        read_rows(db, "ContainerState", ("ID", "Nope"))
    gen = _db(tmp_path / "gen.sql", "CREATE TABLE ContainerState(ID TEXT, "
              "JSON BLOB GENERATED ALWAYS AS (zeroblob(100000000)) VIRTUAL)",
              "INSERT INTO ContainerState(ID) VALUES ('c')")
    with pytest.raises(SQLiteError, match="generated column"):
        read_rows(gen, "ContainerState", ("ID", "JSON"))


def test_rows_and_time_are_bounded(tmp_path):
    db = _db(tmp_path / "db.sql", REAL_SCHEMA)
    con = sqlite3.connect(db)
    con.executemany("INSERT INTO ContainerState VALUES (?, 1, 0, '{}')", ((f"c{i}",) for i in range(5000)))
    con.commit()
    con.close()
    rows, more = read_rows(db, "ContainerState", ("ID", "JSON"), max_rows=100)
    assert len(rows) == 100 and more
    with pytest.raises(SQLiteError, match="longer than allowed"):
        read_rows(db, "ContainerState", ("ID", "JSON"), max_steps=2000)


def test_not_sqlite_is_an_error(tmp_path):
    bad = tmp_path / "db.sql"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(SQLiteError, match="not readable as SQLite"):
        read_rows(str(bad), "ContainerState", ("ID", "JSON"))


def test_planted_recursive_view_in_a_podman_store_ends_quickly(tmp_path):
    """The hostile store of issue 15: a recursive view as ContainerState. `containers` and
    `diff ANY` used to hang past 2.7 GB; now a warning names the file, under a 1 GiB cap."""
    store = tmp_path / "var/lib/containers/storage"
    (store / "overlay-containers").mkdir(parents=True)
    (store / "overlay-containers/containers.json").write_text("[]")
    _db(store / "db.sql", RECURSIVE_VIEW)
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from ovforensics.cli import run
        sys.argv = ["ovforensics", "containers", "--root", {str(tmp_path)!r}, "-f", "json"]
        run()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    assert "db.sql" in done.stderr and "is a view" in done.stderr
    assert "Traceback" not in done.stderr
