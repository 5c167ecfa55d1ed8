"""Rows of one table of an SQLite database found in the evidence, read as data, never as a program.

A store database (Podman's ``db.sql``) comes from the evidence, so whoever wrote it chose its
schema. A planted file can make the table a ``VIEW ... WITH RECURSIVE`` that never ends, a
virtual table whose module parses crafted shadow tables, or carry triggers. What is done here,
so that none of it runs:

* opened ``mode=ro&immutable=1`` through a URI: no journal or ``-wal`` file is created or read,
  nothing is written next to the evidence;
* the table must be in ``sqlite_master`` as ``type = 'table'`` and not ``CREATE VIRTUAL TABLE``
  (a view or a virtual table is refused before any query touches it);
* ``PRAGMA trusted_schema = OFF`` and ``query_only = ON``; an authorizer allows nothing but
  ``SELECT`` and reading the named columns of that table (a view's body, a function call or
  another table is denied);
* a progress handler stops any statement after ``max_seconds`` or ``max_steps`` virtual-machine
  steps, and SQLite's heap is capped (``hard_heap_limit``) while the read runs;
* at most ``max_rows`` rows are read; text comes back as bytes and is decoded here.
"""
from __future__ import annotations

import sqlite3
import time
import urllib.parse

from ovforensics.evidence import fs

MAX_ROWS = 100_000
MAX_SECONDS = 10.0
MAX_STEPS = 50_000_000  # progress-handler calls are every 1,000 steps
HEAP_LIMIT = 256 << 20

MAX_IMAGE_DB = 1 << 30  # a store database read out of a disk image is held in memory


class SQLiteError(Exception):
    """A database that cannot be read as expected; the message says why (the caller names the file)."""


def read_rows(path: str, table: str, columns: tuple[str, ...], *, max_rows: int = MAX_ROWS,
              max_seconds: float = MAX_SECONDS, max_steps: int = MAX_STEPS) -> tuple[list[tuple], bool]:
    """(rows of ``columns`` from ``table``, whether more rows were left unread).

    Text values are ``bytes``. Raises :class:`SQLiteError` for a database that is damaged, is
    not SQLite, lacks the table or columns, holds a view or virtual table under that name, or
    would take longer than allowed."""
    try:
        con = _connect(path)
    except sqlite3.Error as exc:
        raise SQLiteError(f"cannot open it as SQLite ({exc})") from None
    previous_heap = None
    try:
        con.text_factory = bytes
        steps = [0]
        deadline = time.monotonic() + max_seconds

        def progress() -> int:
            steps[0] += 1000
            return 1 if steps[0] > max_steps or time.monotonic() > deadline else 0

        con.set_progress_handler(progress, 1000)
        try:
            previous_heap = con.execute("PRAGMA hard_heap_limit").fetchone()[0]
            con.execute(f"PRAGMA hard_heap_limit = {HEAP_LIMIT}")
            con.execute("PRAGMA trusted_schema = OFF")
            con.execute("PRAGMA query_only = ON")
            kinds = con.execute("SELECT type, sql FROM sqlite_master WHERE name = ? COLLATE NOCASE",
                                (table,)).fetchall()
        except sqlite3.Error as exc:
            raise SQLiteError(_why(exc, steps[0], max_steps)) from None
        if not kinds:
            raise SQLiteError(f"no table {table}")
        kind, sql = kinds[0]
        sql = (sql or b"").decode("utf-8", "replace").lstrip().upper()
        if len(kinds) != 1 or kind != b"table" or sql.startswith("CREATE VIRTUAL"):
            what = "a virtual table" if sql.startswith("CREATE VIRTUAL") else (
                f"a {kind.decode('utf-8', 'replace')}" if len(kinds) == 1 else "defined twice")
            raise SQLiteError(f"{table} is {what}, not a plain table: not read (a store database "
                              "is data; this one holds code)")
        try:  # (cid, name, type, notnull, default, pk, hidden): hidden 2 and 3 are generated
            info = {row[1].decode("utf-8", "replace").lower(): row[6]
                    for row in con.execute(f"PRAGMA table_xinfo({_quote(table)})")}
        except sqlite3.Error as exc:
            raise SQLiteError(_why(exc, steps[0], max_steps)) from None
        for column in columns:  # a missing "name" would be read as a string literal: check
            if column.lower() not in info:
                raise SQLiteError(f"no such column: {table}.{column}")
            if info[column.lower()] in (2, 3):
                raise SQLiteError(f"{table}.{column} is a generated column (an expression, not "
                                  "data): not read")
        allowed = {c.lower() for c in columns}

        def authorize(action, arg1, arg2, _db, _trigger):
            if action == sqlite3.SQLITE_SELECT:
                return sqlite3.SQLITE_OK
            if action == sqlite3.SQLITE_READ and arg1 is not None and arg1.lower() == table.lower() \
                    and (arg2 or "").lower() in allowed:
                return sqlite3.SQLITE_OK
            return sqlite3.SQLITE_DENY

        con.set_authorizer(authorize)
        query = f"SELECT {', '.join(_quote(c) for c in columns)} FROM {_quote(table)}"
        try:
            cursor = con.execute(query)
            rows = cursor.fetchmany(max_rows)
            more = bool(rows) and len(rows) == max_rows and cursor.fetchone() is not None
        except sqlite3.Error as exc:
            raise SQLiteError(_why(exc, steps[0], max_steps)) from None
        except MemoryError:
            raise SQLiteError("the query needed more memory than allowed: refused") from None
        return rows, more
    finally:
        con.set_authorizer(None)
        if previous_heap is not None:
            try:
                con.execute(f"PRAGMA hard_heap_limit = {int(previous_heap)}")
            except sqlite3.Error:
                pass
        con.close()


def _connect(path: str) -> sqlite3.Connection:
    """The database, read-only: on the host through an immutable read-only URI; inside an
    attached disk image (evidence/fs.py) its bytes, read once (at most :data:`MAX_IMAGE_DB`),
    deserialized into a private in-memory copy that is then made query-only."""
    if not fs.is_image_path(path):
        uri = "file:" + urllib.parse.quote(path) + "?mode=ro&immutable=1"
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        data = fs.read_file(path, limit=MAX_IMAGE_DB)
    except ValueError:
        raise SQLiteError(f"larger than {MAX_IMAGE_DB} bytes: not read from a disk image") from None
    except OSError as exc:
        raise SQLiteError(f"cannot read it: {exc.strerror or exc}") from None
    con = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    con.deserialize(data)
    con.execute("PRAGMA query_only = 1")
    return con


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _why(exc: sqlite3.Error, steps: int, max_steps: int) -> str:
    text = str(exc)
    if "interrupted" in text:
        return (f"reading it took longer than allowed ({MAX_SECONDS:g} s or {max_steps:,} steps): "
                "stopped (crafted or damaged)")
    if "not authorized" in text:
        return "the query would read something other than the table's own columns: refused"
    return f"not readable as SQLite ({text})"
