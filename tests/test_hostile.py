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
import errno
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


def rmtree_deep(path) -> None:
    """Remove a tree of any depth without recursion (shutil.rmtree and pytest's own clean-up of
    old temporary directories die of RecursionError on a 10,000-deep tree): each directory's
    subdirectories are moved up beside it, then it is emptied and removed."""
    if not os.path.lexists(path):
        return
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        os.unlink(path)
        return
    parent = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    tag = "~rm-%d-" % os.getpid()
    queue, counter = os.listdir(parent), 0
    try:
        while queue:
            name = queue.pop()
            if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=parent)
                continue
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            try:
                os.chmod(fd, 0o700)
                for child in os.listdir(fd):
                    if stat.S_ISDIR(os.stat(child, dir_fd=fd, follow_symlinks=False).st_mode):
                        counter += 1
                        os.rename(child, tag + str(counter), src_dir_fd=fd, dst_dir_fd=parent)
                        queue.append(tag + str(counter))
                    else:
                        os.unlink(child, dir_fd=fd)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=parent)
    finally:
        os.close(parent)
    os.rmdir(path)


@pytest.fixture
def deep_tmp(tmp_path):
    """tmp_path, emptied at the end without recursion (see rmtree_deep)."""
    yield tmp_path
    for name in os.listdir(tmp_path):
        rmtree_deep(tmp_path / name)


#: runs the CLI in-process and, at exit, writes its own read bytes (rchar of /proc/self/io) and
#: peak RSS (VmHWM, kB) to stderr: measured in the CLI's process itself, so other children of
#: the test run (RUSAGE_CHILDREN keeps the largest) cannot blur them
PROBE = """import atexit, sys
def _report():
    io = dict(l.split(":") for l in open("/proc/self/io"))
    st = dict(l.split(":", 1) for l in open("/proc/self/status"))
    sys.stderr.write("PROBE %s %s\\n" % (io["rchar"].strip(), st["VmHWM"].split()[0]))
atexit.register(_report)
from ovforensics.cli import run
sys.argv = ["ovforensics"] + sys.argv[1:]
run()
"""


def probed(proc_stderr: bytes) -> tuple[int, int]:
    """(bytes read, peak RSS in MB) that PROBE wrote."""
    rchar, hwm = proc_stderr.rsplit(b"PROBE ", 1)[1].split()
    return int(rchar), int(hwm) // 1024


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

def test_10000_deep_upper_every_entry_with_its_full_path(deep_tmp):
    tmp_path = deep_tmp
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


def test_10000_deep_lower_modified_and_deleted_at_the_bottom(deep_tmp, overlay):
    tmp_path = deep_tmp
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

    # the kernel agrees: its merged view, walked by dir fds, has the new leaf and no "gone"
    merged = overlay.mount([lower], upper=upper, ro=True)
    depth, fd = 0, os.open(merged, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while (names := os.listdir(fd)) == ["d"]:
            new = os.open(b"d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd, depth = new, depth + 1
        leaf = os.open(b"leaf", os.O_RDONLY, dir_fd=fd)
        assert (depth, names, os.read(leaf, 16)) == (DEEP, ["leaf"], b"new!")
        os.close(leaf)
    finally:
        os.close(fd)
        overlay.umount(merged)


def test_recover_3000_deep_under_a_low_fd_limit(deep_tmp):
    """`recover --all-deleted` of originals 3,000 and 1,500 levels down, run with 256 fds:
    the destination keeps an fd only every 64 levels (and going back up re-opens from one)."""
    tmp_path = deep_tmp
    need(os.geteuid() == 0, "needs root for a 0/0 whiteout")
    need_whiteout_devices(tmp_path)
    upper, lower, to = tmp_path / "upper", tmp_path / "lower", tmp_path / "to"
    with chain(lower, [b"d"] * 1500) as fd:
        write_at(fd, b"side", b"side")
    with chain(lower, [b"d"] * 3000) as fd:
        write_at(fd, b"leaf", b"deep original")
    with chain(upper, [b"d"] * 1500) as fd:
        whiteout_at(fd, b"side")
    with chain(upper, [b"d"] * 3000) as fd:
        whiteout_at(fd, b"leaf")

    def few_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    proc = cli("recover", "--upper", upper, "--lower", lower, "--all-deleted", "--to", to,
               preexec_fn=few_fds, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for depth, name, data in ((3000, b"leaf", b"deep original"), (1500, b"side", b"side")):
        with chain(to, [b"d"] * depth) as fd:
            got = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
            try:
                assert os.read(got, 64) == data
            finally:
                os.close(got)


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
    from ovforensics.evidence import safeio

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
    from ovforensics.evidence import safeio
    from ovforensics.layers.layer import DirLayer

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
            os.symlink(b"/".join([os.fsencode(twin)] + LONG_NAMES[:4]), LONG_NAMES[3], dir_fd=fd)
            assert stat.S_ISDIR(os.stat(LONG_NAMES[3], dir_fd=fd).st_mode)  # followed: the twin
            layer2 = DirLayer(str(upper))  # a fresh walker: no cached fds
            # openat2 RESOLVE_NO_SYMLINKS: ELOOP; O_NOFOLLOW|O_DIRECTORY per component: ENOTDIR
            refused = "Too many levels of symbolic links" if openat2 else "Not a directory"
            with pytest.raises(ovforensics.layers.layer.EntryError, match=refused):
                layer2.open(entry)
            assert layer2.listdir(path[:-1]) is None  # not a directory here: never followed
            assert layer2.read_xattrs(entry) == {}


# --- 2. shapes and links --------------------------------------------------------------------

class Inotify:
    """Watch files for any open or read (IN_OPEN, IN_ACCESS): O_NOATIME hides a read from the
    atime, not from inotify, so this proves a file was never opened (no strace needed)."""

    IN_ACCESS, IN_OPEN, IN_NONBLOCK = 0x1, 0x20, 0o4000

    def __init__(self, *paths, devices=()):
        """``devices``: device nodes, watched where the device cgroup lets us (a watch needs
        read permission on the node: inside a container it is EPERM for most devices)."""
        import ctypes

        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(self.IN_NONBLOCK)
        assert self.fd >= 0
        self.names = {}
        self.unwatched = []
        for path in (*paths, *devices):
            wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), self.IN_ACCESS | self.IN_OPEN)
            if wd < 0 and path in devices and ctypes.get_errno() == errno.EPERM:
                self.unwatched.append(os.fspath(path))
                continue
            assert wd >= 0, ctypes.get_errno()
            self.names[wd] = os.fspath(path)

    def events(self) -> list[tuple[str, int]]:
        out = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            while data:
                wd, mask, _, size = (int.from_bytes(data[i:i + 4], "little") for i in (0, 4, 8, 12))
                out.append((self.names.get(wd, "?"), mask))
                data = data[16 + size:]

    def close(self):
        os.close(self.fd)


def test_every_byte_1_to_255_in_a_name_through_the_kernel(tmp_path, overlay):
    """Names holding each byte 1-255 (but '/'): the kernel deletes, rewrites and creates them
    through a mount; every record comes back with the exact bytes (path_b64 where not UTF-8)."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    everything = [b for b in range(1, 256) if b != ord("/")]
    for b in everything:
        (lower / os.fsdecode(b"x" + bytes([b]))).write_bytes(b"L")
    merged = overlay.mount([lower], upper=upper)
    want = set()
    for b in everything:
        name = b"x" + bytes([b])
        if b % 2:
            os.unlink(os.fsencode(merged) + b"/" + name)
            want.add(("deleted", b"/" + name))
        elif b % 3 == 0:
            with open(os.fsencode(merged) + b"/" + name, "wb") as fh:
                fh.write(b"changed")
            want.add(("modified", b"/" + name))
        if b != ord("."):
            single = bytes([b])  # a one-byte name, "." excepted
            with open(os.fsencode(merged) + b"/" + single, "wb") as fh:
                fh.write(b"n")
            want.add(("added", b"/" + single))
    overlay.umount(merged)
    assert {(r.change, r.path) for r in ovforensics.scan(str(upper), [str(lower)])} == want

    out = tmp_path / "out.jsonl"
    proc = cli("diff", "--upper", upper, "--lower", lower, "-f", "jsonl", "-o", out)
    assert (proc.returncode, proc.stderr) == (0, b"")
    rows = jsonl(out)
    assert len(rows) == len(want)
    got = {(r["change"], base64.b64decode(r["path_b64"]) if "path_b64" in r
            else r["path"].encode()) for r in rows}
    assert got == want


MANY = 200_000  # a million: 31 s to make + 31 s to scan here (108 MB peak): see docs/evidence.md


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    """An upper of MANY new files in one directory (made once for the module)."""
    base = tmp_path_factory.mktemp("many")
    upper, lower = base / "upper", base / "lower"
    upper.mkdir()
    lower.mkdir()
    fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(MANY):
            os.mknod("f%07d" % i, 0o644 | stat.S_IFREG, 0, dir_fd=fd)
    finally:
        os.close(fd)
    return upper, lower


def test_many_entries_in_one_directory(many_files):
    """200,000 entries in one directory (a million takes over a minute to make and scan here):
    every one reported, in order, streamed to a pipe, the CLI's peak RSS well under 150 MB."""
    upper, lower = many_files
    proc = subprocess.Popen([sys.executable, "-c", PROBE, "diff", "--upper", upper,
                             "--lower", lower, "-f", "jsonl"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    lines, first, last, tail = 0, None, None, b""
    while chunk := proc.stdout.read(1 << 20):
        lines += chunk.count(b"\n")
        if first is None:
            first = chunk.split(b"\n", 1)[0]
        tail = (tail + chunk)[-4096:]
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    _, peak_mb = probed(err)
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    assert lines == MANY
    assert json.loads(first)["path"] == "/f0000000"
    assert json.loads(last)["path"] == "/f%07d" % (MANY - 1)
    assert peak_mb < 100, f"peak RSS {peak_mb} MB"  # 53 MB measured here


def test_sparse_terabyte_file_is_never_read(tmp_path):
    """1 TB sparse files: the size reported exactly, the allocation small, and the scan reads
    next to nothing (``rchar`` of /proc/self/io, counted in the CLI's own process): an added one
    is never opened by diff or bloat, --magic reads its first 64 KiB only (it read the whole
    file before), and a same-size copy-up (chmod) is compared by data extents, not as 2 TB of
    zeros."""
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    upper.mkdir()
    lower.mkdir()
    for where in (upper / "big.img", upper / "same.img", lower / "same.img"):
        where.touch()
        os.truncate(where, 1 << 40)
    for where in (upper / "same.img", lower / "same.img"):
        with open(where, "r+b") as fh:  # one real block in the middle, the same in both
            fh.seek(1 << 39)
            fh.write(b"data")
    os.chmod(upper / "same.img", 0o600)
    os.utime(upper / "same.img", ns=(0, os.stat(lower / "same.img").st_mtime_ns))
    watch = Inotify(upper / "big.img", lower / "same.img")
    def run(*args):
        proc = subprocess.run([sys.executable, "-c", PROBE, *map(os.fspath, args)],
                              capture_output=True, cwd=ROOT, timeout=60)
        rchar, _ = probed(proc.stderr)
        assert rchar < 64 << 20, rchar  # the interpreter's own modules: a few MB; 1 TB is not
        assert proc.returncode == 0, proc.stderr
        return proc

    proc = run("diff", "--upper", upper, "--lower", lower, "-f", "jsonl")
    rows = {r["path"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert (rows["/big.img"]["change"], rows["/big.img"]["size"]) == ("added", 1099511627776)
    assert (rows["/same.img"]["change"], rows["/same.img"]["what"]) == ("modified", ["mode"])
    assert [e for e in watch.events() if e[0].endswith("big.img")] == []  # never opened

    proc = run("diff", "--upper", upper, "--lower", lower, "--magic", "-f", "jsonl")
    rows = {r["path"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert rows["/big.img"]["mime"] == "application/octet-stream"
    assert rows["/same.img"]["size"] == 1 << 40
    watch.events()

    proc = run("bloat", "--upper", upper, "--lower", lower, "-f", "json", "--no-config")
    report = json.loads(proc.stdout)
    assert report["totals"]["stored_bytes"] == 2 << 40
    assert report["totals"]["allocated_bytes"] < 1 << 20
    # bloat compares the same-size copy (by extents: rchar stayed small) but never opens big.img
    assert [e for e in watch.events() if e[0].endswith("big.img")] == []
    watch.close()


def _walk_items(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _walk_items(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_items(v)


def test_hard_linked_whiteouts_are_both_deleted(tmp_path, overlay):
    need(os.geteuid() == 0, "needs root for 0/0 whiteouts")
    need_whiteout_devices(tmp_path)
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    (lower / "a").write_bytes(b"a")
    (lower / "b").write_bytes(b"b")
    (lower / "c").write_bytes(b"c")
    upper.mkdir()
    # by hand: one 0/0 inode, two names
    os.mknod(upper / "a", stat.S_IFCHR, os.makedev(0, 0))
    os.link(upper / "a", upper / "b")
    assert os.lstat(upper / "a").st_ino == os.lstat(upper / "b").st_ino
    assert changes(upper, lower) == {("deleted", b"/a", "whiteout"), ("deleted", b"/b", "whiteout")}
    # by the kernel: rm of two lower files through a mount shares one whiteout inode
    upper2 = tmp_path / "upper2"
    upper2.mkdir()
    merged = overlay.mount([lower], upper=upper2)
    os.unlink(merged / "a")
    os.unlink(merged / "c")
    overlay.umount(merged)
    st_a, st_c = os.lstat(upper2 / "a"), os.lstat(upper2 / "c")
    assert st_a.st_ino == st_c.st_ino and st_a.st_nlink >= 2
    assert changes(upper2, lower) == {("deleted", b"/a", "whiteout"), ("deleted", b"/c", "whiteout")}


def changes(upper, lower, **kw) -> set:
    return {(r.change, r.path, r.via or r.anomaly or ",".join(r.what))
            for r in ovforensics.scan(str(upper), [str(lower)], **kw)}


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs (root): it takes xattr values past ext4's ~4 KB, and can fill up."""
    need(os.geteuid() == 0, "needs root to mount a tmpfs")
    where = tmp_path / "tmpfs"
    where.mkdir()

    def mount(size="16m"):
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                               str(where)], capture_output=True, text=True)
        need(proc.returncode == 0, f"cannot mount a tmpfs: {proc.stderr.strip()}")
        return where

    yield mount
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.mark.parametrize("size", [0, 256, 4000, 5000])
def test_empty_and_over_long_redirects(tmpfs, overlay, size):
    """An empty redirect: the kernel refuses the directory (EINVAL, "invalid redirect"), we
    report bad-redirect. An absolute one of 256-5,000 bytes (one component past NAME_MAX): the
    kernel ignores it and shows the directory's own entries, and so do we. Nothing climbs out,
    nothing crashes. (On tmpfs: ext4 without ea_inode cannot store a 5,000-byte value.)"""
    base = tmpfs()
    lower, upper = base / "lower", base / "upper"
    (lower / "b").mkdir(parents=True)
    (lower / "b" / "y").write_bytes(b"y")
    (upper / "new").mkdir(parents=True)
    (upper / "new" / "mine").write_bytes(b"m")
    value = (b"/" + b"b" * (size - 1)) if size else b""
    os.setxattr(upper / "new", "trusted.overlay.redirect", value)
    assert os.getxattr(upper / "new", "trusted.overlay.redirect") == value
    got = changes(upper, lower)
    added = {("added", b"/new", ""), ("added", b"/new/mine", "")}
    merged = overlay.mount([lower], upper=upper, work=base / "work", ro=True)
    if size == 0:
        assert got == added | {("anomaly", b"/new", "bad-redirect")}
        with pytest.raises(OSError) as info:
            os.listdir(merged / "new")
        assert info.value.errno == errno.EINVAL
    else:
        assert got == added
        assert os.listdir(merged / "new") == ["mine"]


def test_symlink_loops_and_links_out_are_never_followed(tmp_path):
    """Loops (a->b->a, a self loop) and links out of the layers (to /etc/shadow, to a sentinel
    file beside the layers, to ../../..), in the lower and the upper: reported as symlinks with
    their targets; --hash, --magic and recover never open what they point at (inotify on the
    sentinel); recover makes links, never copies."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    sentinel = tmp_path / "sentinel"
    sentinel.write_bytes(b"SECRET-SENTINEL")
    up = "../" * 12
    links = {"a": "b", "b": "a", "self": "self", "shadow": "/etc/shadow",
             "sentinel": str(sentinel), "climb": up + str(sentinel).lstrip("/"), "dotdot": "../../.."}
    for name, target in links.items():
        os.symlink(target, lower / name)
        os.symlink(target + "/x" if name != "self" else "self2", upper / name)  # all retargeted
        os.symlink(target, upper / ("new-" + name))
    watch = Inotify(sentinel)
    layers = ("--upper", upper, "--lower", lower)

    out = tmp_path / "diff.jsonl"
    proc = cli("diff", *layers, "--hash", "sha256,md5", "--magic", "-f", "jsonl", "-o", out,
               timeout=60)
    assert (proc.returncode, proc.stderr) == (0, b"")
    rows = {r["path"]: r for r in jsonl(out)}
    assert len(rows) == 2 * len(links)
    for name, target in links.items():
        new, changed = rows["/new-" + name], rows["/" + name]
        assert (new["change"], new["type"], new["target"]) == ("added", "symlink", target)
        assert changed["change"] == "modified" and "target" in changed["what"]
        assert changed["target"] == (target + "/x" if name != "self" else "self2")
        for row in (new, changed):
            assert all(row.get(k) is None for k in ("sha256", "lower_sha256", "md5", "magic"))

    to = tmp_path / "recovered"
    proc = cli("recover", *layers, "--all-modified", "--to", to, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name, target in links.items():
        assert os.readlink(to / name) == target  # the original link, recreated as a link
    regular = [p for p in to.rglob("*") if p.is_file() and not p.is_symlink()
               and not p.name.startswith("manifest") and p.name != "run.json"]
    assert regular == []
    assert b"SECRET-SENTINEL" not in b"".join(p.read_bytes() for p in to.glob("manifest*"))
    assert watch.events() == []  # the sentinel was never opened nor read
    watch.close()


@pytest.mark.parametrize("options", [(), ("--hash", "sha256"), ("--magic",),
                                     ("--hash", "md5", "--magic", "--meta")])
def test_fifo_socket_devices_are_reported_never_opened(tmp_path, options):
    """A FIFO (opening it would hang), a bound AF_UNIX socket, char and block devices in the
    upper (and a FIFO replacing a lower file): reported with their types, never opened (inotify),
    the run finishes (a timeout would fail it)."""
    need(os.geteuid() == 0, "needs root to make devices")
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    (lower / "was-file").write_bytes(b"f")
    os.mkfifo(upper / "fifo")
    os.mkfifo(upper / "was-file")
    os.mknod(upper / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(upper / "loop", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    try:
        os.chdir(upper)  # sun_path is short: bind by a relative name
        sock.bind("sock")
    finally:
        os.chdir(cwd)
    watch = Inotify(upper / "fifo", upper / "was-file", upper / "sock",
                    devices=(upper / "null", upper / "loop"))
    try:
        proc = cli("diff", "--upper", upper, "--lower", lower, "-f", "jsonl", *options,
                   timeout=30)
    finally:
        sock.close()
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if b'"meta"' not in line[:9]]
    got = {(r["path"], r["change"], r["type"]) for r in rows}
    assert got == {("/fifo", "added", "fifo"), ("/was-file", "modified", "fifo"),
                   ("/null", "added", "char"), ("/loop", "added", "block"),
                   ("/sock", "added", "socket")}
    for row in rows:
        assert row.get("sha256") is None and row.get("magic") is None
    assert watch.events() == []
    watch.close()


def _as_nobody_works() -> tuple[bool, str]:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return False, "needs root and setpriv to run the CLI as nobody"
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-c", "import ovforensics"], capture_output=True,
                          cwd=ROOT)
    if proc.returncode != 0:
        return False, f"nobody cannot run this interpreter: {proc.stderr.decode()[-200:]}"
    return True, ""


def test_unprivileged_run_records_what_it_could_not_read():
    """As nobody: a root-owned 0700 directory and a 0000 file inside the upper. Exit 0 (an
    unreadable entry inside a layer never stops a scan), every readable entry reported and
    hashed, the two unreadable ones in the run record with the reason. A layer that cannot
    be listed at all is unreadable input: exit 2, one line naming it."""
    ok, why = _as_nobody_works()
    need(ok, why)
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="ovf-nobody-", dir="/tmp"))  # tmp_path is root-only
    try:
        os.chmod(base, 0o755)
        upper, lower = base / "upper", base / "lower"
        (upper / "locked").mkdir(parents=True)
        (upper / "open").mkdir()
        lower.mkdir()
        for rel in ("a", "locked/inside", "nomode", "open/f", "zeta"):
            (upper / rel).write_bytes(rel.encode())
        os.chmod(upper / "locked", 0o700)
        os.chmod(upper / "nomode", 0o000)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  sys.executable, "-m", "ovforensics"]
        proc = subprocess.run(nobody + ["diff", "--upper", str(upper), "--lower", str(lower),
                                        "-f", "jsonl", "--meta", "--hash", "sha256"],
                              capture_output=True, cwd=ROOT, timeout=60)
        assert proc.returncode == 0, proc.stderr
        meta, *rows = [json.loads(line) for line in proc.stdout.splitlines()]
        meta = meta["meta"]
        assert meta["uid"] == 65534
        added = {r["path"]: r for r in rows if r["change"] == "added"}
        assert set(added) == {"/a", "/locked", "/nomode", "/open", "/open/f", "/zeta"}
        for rel in ("a", "open/f", "zeta"):
            assert added["/" + rel]["sha256"] == sha256(rel.encode())
        assert "sha256" not in added["/nomode"] and added["/nomode"]["read_errors"]
        unread = meta["unread"]
        assert len(unread) == 2, unread
        nomode = [u for u in unread if u["path"] == "/nomode"]
        assert nomode and "Permission denied" in nomode[0]["why"]
        locked = [u for u in unread if u["why"].endswith("/upper/locked: Permission denied")]
        assert locked and locked[0]["path"] == "/locked", unread
        anomalies = [r for r in rows if r["change"] == "anomaly"]
        assert [(a["anomaly"], a["path"]) for a in anomalies] == [("unreadable", "/locked")]
        assert meta["counts"] == {"added": 6, "modified": 0, "deleted": 0, "anomaly": 1}

        os.chmod(lower, 0o700)  # a whole layer nobody may list
        proc = subprocess.run(nobody + ["diff", "--upper", str(upper), "--lower", str(lower)],
                              capture_output=True, cwd=ROOT, timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.decode() == f"ovforensics: error: {lower}: cannot list it: Permission denied\n"
        assert proc.stdout == b""
    finally:
        shutil.rmtree(base)


# --- 3. output --------------------------------------------------------------------------------

def test_full_disk_under_o_leaves_nothing_behind(tmp_path, tmpfs):
    """-o on a 64 KiB tmpfs, a report of ~2,000 records: exit 2, one line naming the file, no
    traceback, and no file (complete-looking or partial) left in the directory."""
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    upper.mkdir()
    lower.mkdir()
    for i in range(2000):
        (upper / f"file-{i:05d}").touch()
    disk = tmpfs("64k")
    runs = [("diff", "-f", fmt, "-o", disk / f"out.{fmt}") for fmt in ("jsonl", "json", "csv", "table")]
    runs += [("diff", "-f", "csv", "--meta", "-o", disk / "out.csv"),
             ("deleted", "-f", "csv", "-o", disk / "del.csv"),  # empty: fits; then removed below
             ("timeline", "-f", "bodyfile", "-o", disk / "out.body")]
    for command, *args in runs:
        target = args[-1]
        proc = cli(command, "--upper", upper, "--lower", lower, *args, timeout=60)
        if command == "deleted":
            assert proc.returncode == 0 and target.exists()
            target.unlink()
            continue
        assert proc.returncode == 2, (args, proc.stderr)
        errors = [line for line in proc.stderr.decode().splitlines() if "error" in line]
        assert errors == [f"ovforensics: error: {target}: No space left on device"]
        assert "Traceback" not in proc.stderr.decode()
        assert os.listdir(disk) == [], (args, os.listdir(disk))


@pytest.mark.parametrize("fmt", ["jsonl", "table"])
def test_broken_pipe_on_200000_changes_is_quiet(many_files, fmt):
    """`diff ... | head -1` on 200,000 changes: the reader leaves after one line; exit 0, nothing
    on stderr (test_cli.py's version has 20,000). (table spools every row before it prints.)"""
    upper, lower = many_files
    ovf = subprocess.Popen([sys.executable, "-m", "ovforensics", "diff", "--upper", upper,
                            "--lower", lower, "-f", fmt], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, cwd=ROOT)
    head = subprocess.run(["head", "-1"], stdin=ovf.stdout, capture_output=True, timeout=120)
    ovf.stdout.close()
    err = ovf.stderr.read()
    status = ovf.wait(timeout=120)
    assert err == b"", err
    assert len(head.stdout.splitlines()) == 1
    assert status == 0  # was 1 (click's EPIPE handler) until cli.py d9a557b


def test_interrupt_leaves_no_report_file(many_files, tmp_path):
    """Ctrl-C while -o is being written: exit 130, nothing on stderr, and neither the report
    nor its temporary file left behind."""
    import signal

    upper, lower = many_files
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "ovforensics", "diff", "--upper", upper,
                             "--lower", lower, "-f", "jsonl", "-o", out],
                            stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.monotonic() + 30
    while not [n for n in os.listdir(tmp_path) if n.endswith(".partial")]:
        assert proc.poll() is None and time.monotonic() < deadline, "no temporary file seen"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, err
    assert err == b""
    assert os.listdir(tmp_path) == []


def test_many_deep_layers_do_not_run_out_of_descriptors(tmp_path):
    """40 lowers, each with its own 5,120-byte-deep branch, deleted from the upper: the walker
    of each layer lets its fds go once the scan leaves that branch, so a 96-fd limit holds."""
    upper = tmp_path / "upper"
    lowers = []
    for i in range(40):
        top = b"b%02d" % i
        lower = tmp_path / f"lower{i:02d}"
        with chain(lower, [top] + LONG_NAMES) as fd:
            write_at(fd, b"f", b"%d" % i)
        with chain(upper, [top] + LONG_NAMES) as fd:
            write_at(fd, b".wh.f", b"")
        lowers.append(lower)
    limit = "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))\n"
    proc = subprocess.run([sys.executable, "-c", limit + PROBE, "diff",
                           "--upper", upper, *[x for lo in lowers for x in ("--lower", lo)],
                           "--whiteouts", "oci", "-f", "jsonl", "--hash", "sha256"],
                          capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    deleted = sorted(r["path"] for r in rows if r["change"] == "deleted")
    deep = "/" + os.fsdecode(b"/".join(LONG_NAMES)) + "/f"
    assert deleted == ["/b%02d%s" % (i, deep) for i in range(40)]
    assert [r for r in rows if r["change"] == "anomaly"] == []
    assert {r["lower_sha256"] for r in rows if r["change"] == "deleted"} == {
        sha256(b"%d" % i) for i in range(40)}
