"""Hostile input (issue 7): shapes and links made to break a scanner, on real files.

- paths past PATH_MAX (a 10,000-deep tree; 255-byte names): every entry reported with its full
  path, hashed, timed and recovered, never an ``unreadable`` anomaly, never a RecursionError;
- a million entries in one directory (streamed), a 1 TB sparse file (never read);
- hard-linked whiteouts, empty and over-long redirects, symlink loops and links out of the
  layers (never followed), FIFOs, sockets and devices (never opened), entries an unprivileged
  run cannot read (reported in the run record);
- a full disk under ``-o`` and a reader that leaves (``| head``) on a large report.

Forms already covered elsewhere (not repeated here): every byte 1-255 in a name
(test_kernel_oracle.py), a device other than 0/0 (test_forms.py), opaque values other than
``y`` (test_forms.py), redirects climbing out with ``..`` or ``/..`` (test_forms.py).
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import resource
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ovforensics
from conftest import need, need_whiteout_devices

ROOT = Path(__file__).resolve().parent.parent
DEEP = 10_000
LONG_NAMES = [bytes([ord("a") + i % 26]) * 255 for i in range(20)]  # 5,120 bytes of path


def cli(*args, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovforensics", *map(os.fspath, args)],
                          capture_output=True, cwd=ROOT, timeout=timeout, **kw)


def jsonl(path) -> list[dict]:
    with open(path, "rb") as fh:
        return [json.loads(line) for line in fh]


@contextlib.contextmanager
def chain(root, names):
    """A directory fd at ``root/names...``, made (or walked) one level at a time by dir fds,
    so a path of any length can be built."""
    os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=fd)
            new = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = new
        yield fd
    finally:
        os.close(fd)


def write_at(dir_fd: int, name: bytes, data: bytes) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_at(root, names, leaf: bytes) -> bytes:
    with chain(root, names) as fd:
        fh = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
        try:
            return os.read(fh, 1 << 20)
        finally:
            os.close(fh)


def age(dir_fd: int, *names: bytes, when: int = 1_000_000_000) -> None:
    """Set mtimes (ext4's coarse clock can give two files made in a row the same one)."""
    for name in names:
        os.utime(name, ns=(when * 10**9, when * 10**9), dir_fd=dir_fd, follow_symlinks=False)


def whiteout_at(dir_fd: int, name: bytes) -> None:
    os.mknod(name, 0o000 | stat.S_IFCHR, os.makedev(0, 0), dir_fd=dir_fd)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- 1. paths past PATH_MAX -----------------------------------------------------------------

def test_10000_deep_upper_every_entry_with_its_full_path(tmp_path):
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    upper.mkdir()
    lower.mkdir()
    with chain(upper, [b"d"] * DEEP) as fd:
        write_at(fd, b"leaf", b"deep")
    count = 0
    for count, record in enumerate(ovforensics.scan(str(upper), [str(lower)]), 1):
        want = b"/d" * count if count <= DEEP else b"/d" * DEEP + b"/leaf"
        assert (record.change, record.path) == ("added", want), count
        assert record.upper_path == os.fsencode(upper) + want
    assert count == DEEP + 1
    assert record.type == "file" and record.size == 4

    out = tmp_path / "out.jsonl"
    proc = cli("diff", "--upper", upper, "--lower", lower, "-f", "jsonl", "--meta", "-o", out)
    assert (proc.returncode, proc.stderr) == (0, b"")
    lines = jsonl(out)
    meta = lines.pop(0)["meta"]
    assert meta["unread"] == [] and meta["counts"]["added"] == DEEP + 1
    assert meta["counts"]["anomaly"] == 0
    assert len(lines) == DEEP + 1
    assert [r["change"] for r in lines] == ["added"] * (DEEP + 1)
    assert lines[-1]["path"] == "/d" * DEEP + "/leaf"
    assert lines[DEEP // 2]["path"] == "/d" * (DEEP // 2 + 1)


def test_10000_deep_lower_modified_and_deleted_at_the_bottom(tmp_path):
    need(os.geteuid() == 0, "needs root for a 0/0 whiteout")
    need_whiteout_devices(tmp_path)
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    upper.mkdir()
    lower.mkdir()
    with chain(lower, [b"d"] * DEEP) as fd:
        write_at(fd, b"leaf", b"old")
        write_at(fd, b"gone", b"bye")
        age(fd, b"leaf")
    with chain(upper, [b"d"] * DEEP) as fd:  # the copied-up directories, as the kernel leaves them
        write_at(fd, b"leaf", b"new!")
        whiteout_at(fd, b"gone")
    bottom = b"/d" * DEEP
    got = [(r.change, r.path, r.what, r.via, r.lower_path)
           for r in ovforensics.scan(str(upper), [str(lower)])]
    assert got == [
        ("deleted", bottom + b"/gone", (), "whiteout", os.fsencode(lower) + bottom + b"/gone"),
        ("modified", bottom + b"/leaf", ("content", "mtime"), None,
         os.fsencode(lower) + bottom + b"/leaf"),
    ]
    # --hash, deleted, timeline and recover on long paths: test_path_over_4096_bytes_* (faster)


@pytest.fixture
def long_stack(tmp_path):
    """A lower and an upper with a directory 20 × 255-byte names deep (5,120-byte paths):
    a modified file, a deleted one, a retargeted symlink, a new file with an xattr."""
    need(os.geteuid() == 0, "needs root for a 0/0 whiteout")
    need_whiteout_devices(tmp_path)
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    upper.mkdir()
    lower.mkdir()
    with chain(lower, LONG_NAMES) as fd:
        write_at(fd, b"f", b"original")
        write_at(fd, b"gone", b"bye")
        os.symlink(b"f", b"ln", dir_fd=fd)
        age(fd, b"f", b"ln")
    with chain(upper, LONG_NAMES) as fd:
        write_at(fd, b"f", b"changed")
        whiteout_at(fd, b"gone")
        os.symlink(b"elsewhere", b"ln", dir_fd=fd)
        write_at(fd, b"new", b"n")
        nfd = os.open(b"new", os.O_RDONLY, dir_fd=fd)
        os.setxattr(nfd, "user.note", b"deep")
        os.close(nfd)
    return upper, lower, b"/" + b"/".join(LONG_NAMES)


def test_path_over_4096_bytes_scan(long_stack):
    upper, lower, deep = long_stack
    assert len(os.fsencode(upper) + deep) > 4096
    got = [(r.change, r.path, r.what or r.via, r.target)
           for r in ovforensics.scan(str(upper), [str(lower)])]
    assert got == [
        ("modified", deep + b"/f", ("content", "mtime"), None),
        ("deleted", deep + b"/gone", "whiteout", None),
        ("modified", deep + b"/ln", ("target", "mtime"), b"elsewhere"),
        ("added", deep + b"/new", None, None),
    ]
    new = [r for r in ovforensics.scan(str(upper), [str(lower)]) if r.path.endswith(b"/new")][0]
    assert new.upper_path == os.fsencode(upper) + deep + b"/new"


def test_path_over_4096_bytes_hash_deleted_timeline_recover(long_stack, tmp_path):
    upper, lower, deep = long_stack
    text = os.fsdecode(deep)
    layers = ("--upper", upper, "--lower", lower)

    out = tmp_path / "diff.jsonl"
    proc = cli("diff", *layers, "--hash", "sha256", "--magic", "--meta", "-f", "jsonl", "-o", out)
    assert (proc.returncode, proc.stderr) == (0, b"")
    meta, *rows = jsonl(out)
    assert meta["meta"]["unread"] == []
    by_path = {r["path"]: r for r in rows}
    assert by_path[text + "/f"]["sha256"] == sha256(b"changed")
    assert by_path[text + "/f"]["lower_sha256"] == sha256(b"original")
    assert by_path[text + "/new"]["sha256"] == sha256(b"n")
    assert by_path[text + "/ln"].get("sha256", "absent") in (None, "absent")  # a symlink is never opened
    assert "anomaly" not in {r["change"] for r in rows}

    out = tmp_path / "deleted.jsonl"
    proc = cli("deleted", *layers, "--hash", "sha256", "-f", "jsonl", "-o", out)
    assert (proc.returncode, proc.stderr) == (0, b"")
    (row,) = jsonl(out)
    assert (row["path"], row["lower_sha256"]) == (text + "/gone", sha256(b"bye"))

    out = tmp_path / "timeline.jsonl"
    proc = cli("timeline", *layers, "-f", "timesketch", "-o", out)
    assert proc.returncode == 0 and b"error" not in proc.stderr, proc.stderr
    events = [e for e in jsonl(out) if e["path"] == text + "/f"]
    kinds = {(e["side"], e["timestamp_desc"]) for e in events}
    assert ("upper", "Creation Time") in kinds  # statx birth time, through the parent's fd
    assert {"upper", "lower"} <= {side for side, _ in kinds}

    to = tmp_path / "recovered"
    proc = cli("recover", *layers, text + "/f", text + "/gone", "--to", to)
    assert proc.returncode == 0, proc.stderr
    assert read_at(to, LONG_NAMES, b"f") == b"original"
    assert read_at(to, LONG_NAMES, b"gone") == b"bye"


def _branchy(root, files: dict) -> None:
    for (branch, depth), data in files.items():
        names = [bytes([ord("a") + branch]) * 255] + LONG_NAMES[:depth]
        with chain(root, names) as fd:
            write_at(fd, b"f%d" % depth, data)


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "per-component"])
def test_long_paths_in_branches_backtracking_and_parallel_hashing(tmp_path, monkeypatch, openat2):
    """Several deep branches, files at many depths, hashed on the thread pool: the walker's
    cached fds survive backtracking and threads; the same with one openat per component."""
    from ovforensics import safeio

    monkeypatch.setattr(safeio, "_openat2_missing", not openat2)
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    lower.mkdir()
    files = {(b, d): b"%d/%d" % (b, d) for b in range(4) for d in range(0, 20, 3)}
    _branchy(upper, files)
    records = {r.path: r for r in ovforensics.scan(str(upper), [str(lower)])
               if r.type == "file"}
    want = {b"/" + b"/".join([bytes([ord("a") + b]) * 255] + LONG_NAMES[:d] + [b"f%d" % d]): data
            for (b, d), data in files.items()}
    assert set(records) == set(want)
    assert not [r for r in ovforensics.scan(str(upper), [str(lower)]) if r.change == "anomaly"]
    if openat2:  # the CLI in a subprocess: hashing on its thread pool
        out = tmp_path / "out.jsonl"
        proc = cli("diff", "--upper", upper, "--lower", lower, "--hash", "sha256", "-o", out)
        assert proc.returncode == 0, proc.stderr
        got = {r["path"]: r["sha256"] for r in jsonl(out) if r["type"] == "file"}
        assert got == {os.fsdecode(p): sha256(data) for p, data in want.items()}


def test_walker_never_follows_a_symlink_in_a_long_path(tmp_path, monkeypatch):
    """A directory swapped for a symlink (to a twin tree elsewhere) between listing and
    reading: the walk refuses it (ELOOP) rather than reading the twin."""
    from ovforensics import safeio
    from ovforensics.layer import DirLayer

    for openat2 in (True, False):
        monkeypatch.setattr(safeio, "_openat2_missing", not openat2)
        base = tmp_path / ("a" if openat2 else "b")
        upper, twin = base / "upper", base / "twin"
        for where in (upper, twin):
            with chain(where, LONG_NAMES) as fd:
                write_at(fd, b"f", b"twin" if where == twin else b"real")
        layer = DirLayer(str(upper))
        path = tuple(LONG_NAMES) + (b"f",)
        entry = layer.listdir(path[:-1])[b"f"]
        with entry.open() as fh:
            assert fh.read() == b"real"
        with chain(upper, LONG_NAMES[:3]) as fd:  # swap the 4th component for a symlink
            os.rename(LONG_NAMES[3], b"moved", src_dir_fd=fd, dst_dir_fd=fd)
            with chain(twin, LONG_NAMES[:3]) as tfd:
                os.symlink(b"/".join([os.fsencode(twin)] + LONG_NAMES[:4]), LONG_NAMES[3],
                           dir_fd=fd)
                layer2 = DirLayer(str(upper))  # a fresh walker: no cached fds
                # openat2 RESOLVE_NO_SYMLINKS: ELOOP; O_NOFOLLOW|O_DIRECTORY per component: ENOTDIR
                refused = "Too many levels of symbolic links" if openat2 else "Not a directory"
                with pytest.raises(ovforensics.layer.EntryError, match=refused):
                    layer2.open(entry)
                assert layer2.listdir(path[:-1]) is None  # not a directory here: never followed
                assert layer2.read_xattrs(entry) == {}
