"""Recovery of originals: hand-made stacks (OCI ``.wh.`` markers, no root needed), the shipped tar
samples, and a real kernel overlay whose base view the kernel itself shows (root).

Every test checks the round trip: the recovered bytes hash-equal the lower originals (by
``hashlib`` and by ``sha256sum``), the manifest has one row per entry with sizes and hashes,
modes and times are kept, and nothing outside ``--to`` or inside the evidence is ever written.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import need, need_whiteout_devices
from ovforensics.recovery import MANIFEST_COLUMNS, RecoverError, recover

ROOT = Path(__file__).resolve().parents[1]
RICH = ROOT / "samples" / "rich"

T_PASSWD = 1_600_000_000_123_456_789
T_LOG = 1_500_000_000_000_000_001
T_ATIME = 1_400_000_000_987_654_321


# -- helpers -----------------------------------------------------------------------------------
def tree(root, spec: dict) -> Path:
    """Make entries from ``{path: bytes | None (dir) | ("link", target) | ("fifo",)}``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = os.fsencode(root)
    for rel, value in spec.items():
        path = os.path.join(base, os.fsencode(rel))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if value is None:
            os.makedirs(path, exist_ok=True)
        elif isinstance(value, tuple) and value[0] == "link":
            os.symlink(value[1], path)
        elif isinstance(value, tuple) and value[0] == "fifo":
            os.mkfifo(path)
        else:
            with open(path, "wb") as fh:
                fh.write(value)
    return root


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path) -> str:
    with open(path, "rb") as fh:
        return sha(fh.read())


def sha256sum(path) -> str:
    """``sha256sum``'s own verdict (``-z``: no escaping of odd names in its output)."""
    out = subprocess.run(["sha256sum", "-z", "--", os.fsencode(path)], check=True,
                         capture_output=True).stdout
    return out.split(b" ", 1)[0].decode()


def manifest(to) -> list[dict]:
    """The JSONL manifest, checked against the CSV one (same rows, same order)."""
    with open(Path(to) / "manifest.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    with open(Path(to) / "manifest.csv", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        assert tuple(next(reader)) == MANIFEST_COLUMNS
        table = [dict(zip(MANIFEST_COLUMNS, row)) for row in reader]
    assert len(table) == len(rows)
    for row, cells in zip(rows, table):
        assert raw_path(cells) == raw_path(row)
        assert cells["status"] == row["status"]
        assert cells["sha256"] == (row["sha256"] or "")
        assert cells["size"] == ("" if row["size"] is None else str(row["size"]))
    return rows


def raw_path(row: dict) -> bytes:
    if row.get("path_b64"):
        return base64.b64decode(row["path_b64"])
    return row["path"].encode("utf-8")


def by_path(rows) -> dict[bytes, dict]:
    out = {}
    for row in rows:
        path = raw_path(row)
        assert path not in out, f"two manifest rows for {path!r}"
        out[path] = row
    return out


def dest(to, container_path: bytes) -> bytes:
    return os.fsencode(to) + container_path


def check_copy(to, row: dict, original: bytes | Path) -> None:
    """The copy of ``row`` in ``to`` against the original file: bytes, hash, size, mode, times."""
    orig = os.fsencode(original)
    copy = dest(to, raw_path(row))
    with open(orig, "rb") as fh:
        data = fh.read()
    ost, cst = os.lstat(orig), os.lstat(copy)
    assert stat.S_ISREG(cst.st_mode)
    assert file_sha(copy) == sha(data) == sha256sum(orig) == sha256sum(copy) == row["sha256"]
    assert row["size"] == len(data) == cst.st_size
    assert row["mode"] == format(stat.S_IMODE(ost.st_mode), "04o")
    assert stat.S_IMODE(cst.st_mode) == stat.S_IMODE(ost.st_mode) & ~0o6000
    assert cst.st_mtime_ns == ost.st_mtime_ns
    assert row["status"] == "recovered"


def snapshot(where) -> dict:
    """Every entry below ``where`` with its metadata and bytes: to prove nothing was touched."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(where)):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as fh:
                    data = fh.read()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(path)
            out[path] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, data)
    return out


# -- a hand-made stack -------------------------------------------------------------------------
@pytest.fixture
def stack(tmp_path):
    """Two lowers and an upper with OCI markers (``.wh.NAME``, ``.wh..wh..opq``)."""
    l2 = tree(tmp_path / "layers" / "l2", {
        "etc/passwd": b"root:x:0:0:old\n",
        "etc/shadow": b"root:$6$hash:19000::::::\n",
        "etc/alt": ("link", "/etc/shadow"),
        "bin/su": b"\x7fELF su binary",
        "var/log/nginx/access.log": b"GET / 200\n" * 1000,
        "var/log/nginx/error.log": b"",
        "var/run/ctl": ("fifo",),
        b"var/new\nline": b"newline in the name",
        b"var/\xff\xfebad": b"not utf-8",
        "var/formula": ("link", "=HYPERLINK(\"http://x\")"),
        "opt/keep": b"untouched",
    })
    l1 = tree(tmp_path / "layers" / "l1", {
        "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/bin/false\n",
    })
    os.chmod(l2 / "etc/shadow", 0o640)
    os.chmod(l2 / "bin/su", 0o4755)
    os.utime(l1 / "etc/passwd", ns=(T_ATIME, T_PASSWD))
    os.utime(l2 / "var/log/nginx/access.log", ns=(T_ATIME, T_LOG))
    os.utime(l2 / "var/log/nginx", ns=(T_ATIME, T_LOG))
    upper = tree(tmp_path / "layers" / "upper", {
        "etc/.wh.passwd": b"",
        "etc/shadow": b"root:$6$EVIL:19000::::::\n",
        "bin/su": b"\x7fELF su binary",
        "var/log/nginx/.wh..wh..opq": b"",
        "var/log/nginx/new.log": b"attacker was here\n",
        b"var/.wh.new\nline": b"",
        b"var/.wh.\xff\xfebad": b"",
        "var/.wh.formula": b"",
    })
    os.chmod(upper / "bin/su", 0o755)  # the setuid bit removed: a mode change
    os.utime(upper / "bin/su", ns=(T_ATIME, os.stat(l2 / "bin/su").st_mtime_ns))
    return {"upper": upper, "l1": l1, "l2": l2, "layers": tmp_path / "layers"}


def run(stack, to, **kw):
    return recover(str(stack["upper"]), [str(stack["l1"]), str(stack["l2"])], to=str(to),
                   whiteouts="oci", **kw)


def test_all_deleted_round_trip(stack, tmp_path):
    to = tmp_path / "recovered"
    before = snapshot(stack["layers"])
    os.utime(stack["l1"] / "etc/passwd", ns=(T_ATIME, T_PASSWD))  # older than mtime: a read moves it
    src_atime = os.stat(stack["l1"] / "etc/passwd").st_atime_ns
    assert src_atime == T_ATIME
    result = run(stack, to, all_deleted=True)
    # atime kept (checked before anything reads the copy); the original's not moved (O_NOATIME)
    assert os.stat(to / "etc/passwd").st_atime_ns == src_atime
    assert os.stat(stack["l1"] / "etc/passwd").st_atime_ns == src_atime
    rows = by_path(manifest(to))
    assert set(rows) == {b"/etc/passwd", b"/var/log/nginx/access.log",
                         b"/var/log/nginx/error.log", b"/var/new\nline", b"/var/\xff\xfebad",
                         b"/var/formula"}
    assert result.counts == {"recovered": 6, "skipped": 0, "not-found": 0, "error": 0}
    assert all(row["change"] == "deleted" for row in rows.values())
    # the original is the topmost lower's version, named by layer and path
    passwd = rows[b"/etc/passwd"]
    check_copy(to, passwd, stack["l1"] / "etc/passwd")
    assert passwd["source_layer"] == {"index": 0, "dir": str(stack["l1"])}
    assert passwd["source_path"] == str(stack["l1"] / "etc/passwd")
    assert passwd["mtime"] == "2020-09-13T12:26:40.123456789Z"
    check_copy(to, rows[b"/var/log/nginx/access.log"], stack["l2"] / "var/log/nginx/access.log")
    check_copy(to, rows[b"/var/log/nginx/error.log"], stack["l2"] / "var/log/nginx/error.log")
    assert rows[b"/var/log/nginx/error.log"]["sha256"] == sha(b"")
    # odd names: exact bytes on disk, escaped + base64 in the manifest
    check_copy(to, rows[b"/var/new\nline"], os.fsencode(stack["l2"]) + b"/var/new\nline")
    bad = rows[b"/var/\xff\xfebad"]
    assert bad["path"] == "/var/\\xff\\xfebad" and base64.b64decode(bad["path_b64"]) == b"/var/\xff\xfebad"
    check_copy(to, bad, os.fsencode(stack["l2"]) + b"/var/\xff\xfebad")
    assert os.listdir(os.fsencode(to / "var")) and b"\xff\xfebad" in os.listdir(os.fsencode(to / "var"))
    assert os.readlink(to / "var/formula") == '=HYPERLINK("http://x")'
    assert snapshot(stack["layers"]) == before  # the evidence is untouched
    # nothing but the originals and the manifests was written
    written = sorted(os.path.relpath(p, os.fsencode(to)) for p in snapshot(to))
    assert written == sorted([b"etc", b"etc/passwd", b"var", b"var/log", b"var/log/nginx",
                              b"var/log/nginx/access.log", b"var/log/nginx/error.log",
                              b"var/new\nline", b"var/\xff\xfebad", b"var/formula",
                              b"manifest.csv", b"manifest.jsonl"])


def test_csv_manifest_guards_formulas_and_keeps_exact_names(stack, tmp_path):
    to = tmp_path / "out"
    run(stack, to, all_deleted=True)
    with open(to / "manifest.csv", encoding="utf-8", newline="") as fh:
        rows = {base64.b64decode(r["path_b64"]) if r["path_b64"] else r["path"].encode(): r
                for r in csv.DictReader(fh)}
    assert rows[b"/var/formula"]["target"] == "'=HYPERLINK(\"http://x\")"  # the guard
    assert rows[b"/var/new\nline"]["path"] == "/var/new\nline"  # one row, quoted
    assert rows[b"/var/\xff\xfebad"]["path"] == "/var/\\xff\\xfebad"
    assert rows[b"/etc/passwd"]["source_layer"] == "0"
    assert rows[b"/etc/passwd"]["source_layer_dir"] == str(stack["l1"])


def test_all_modified_keeps_original_mode_and_drops_setuid(stack, tmp_path):
    to = tmp_path / "out"
    run(stack, to, all_modified=True)
    rows = by_path(manifest(to))
    assert set(rows) == {b"/bin/su", b"/etc/shadow"}
    su = rows[b"/bin/su"]
    assert su["change"] == "modified" and su["what"] == ["mode"]
    check_copy(to, su, stack["l2"] / "bin/su")
    assert su["mode"] == "4755" and stat.S_IMODE(os.stat(to / "bin/su").st_mode) == 0o755
    assert "setuid/setgid dropped" in su["detail"]
    shadow = rows[b"/etc/shadow"]
    assert shadow["what"] == ["content", "mode", "mtime"]
    check_copy(to, shadow, stack["l2"] / "etc/shadow")
    assert (to / "etc/shadow").read_bytes() == b"root:$6$hash:19000::::::\n"  # not the EVIL one


def test_named_paths_subtrees_links_fifos_and_missing(stack, tmp_path):
    to = tmp_path / "out"
    result = run(stack, to, paths=["/var/log/nginx", "etc/alt", "/var/run/ctl", "/nope",
                                   "/var/log/nginx/new.log", "/opt"])
    rows = manifest(to)
    got = [(raw_path(r), r["change"], r["type"], r["status"]) for r in rows]
    assert got == [
        (b"/var/log/nginx", "unchanged", "dir", "recovered"),
        (b"/var/log/nginx/access.log", "deleted", "file", "recovered"),
        (b"/var/log/nginx/error.log", "deleted", "file", "recovered"),
        (b"/etc/alt", "unchanged", "symlink", "recovered"),
        (b"/var/run/ctl", "unchanged", "fifo", "skipped"),
        (b"/nope", None, None, "not-found"),
        (b"/var/log/nginx/new.log", "added", "file", "recovered"),  # from the upper
        (b"/opt", "unchanged", "dir", "recovered"),
        (b"/opt/keep", "unchanged", "file", "recovered"),
    ]
    assert result.counts == {"recovered": 7, "skipped": 1, "not-found": 1, "error": 0}
    rows = by_path(rows)
    # the directory is the original (its mtime is the lower's); new.log is there only because
    # it was named: the upper's own file, change added in its row
    assert sorted(os.listdir(to / "var/log/nginx")) == ["access.log", "error.log", "new.log"]
    assert os.stat(to / "var/log/nginx").st_mtime_ns == T_LOG
    assert rows[b"/var/log/nginx"]["source_path"] == str(stack["l2"] / "var/log/nginx")
    check_copy(to, rows[b"/var/log/nginx/access.log"], stack["l2"] / "var/log/nginx/access.log")
    # a symlink is recreated as a symlink, never followed
    assert os.readlink(to / "etc/alt") == "/etc/shadow"
    assert rows[b"/etc/alt"]["target"] == "/etc/shadow" and rows[b"/etc/alt"]["sha256"] is None
    assert os.lstat(to / "etc/alt").st_mtime_ns == os.lstat(stack["l2"] / "etc/alt").st_mtime_ns
    # a FIFO is never opened nor made
    assert rows[b"/var/run/ctl"]["detail"] == "not a regular file: fifo"
    assert not os.path.lexists(to / "var/run/ctl")
    assert rows[b"/nope"]["detail"] == "not in the lower layers nor in the upper"
    check_copy(to, rows[b"/var/log/nginx/new.log"], stack["upper"] / "var/log/nginx/new.log")
    check_copy(to, rows[b"/opt/keep"], stack["l2"] / "opt/keep")


def test_root_recovers_the_whole_base_view(stack, tmp_path):
    to = tmp_path / "out"
    run(stack, to, paths=["/"])
    rows = by_path(manifest(to))
    assert b"/" not in rows
    files = {p: r for p, r in rows.items() if r["type"] == "file"}
    assert set(files) == {b"/bin/su", b"/etc/passwd", b"/etc/shadow", b"/opt/keep",
                          b"/var/log/nginx/access.log", b"/var/log/nginx/error.log",
                          b"/var/new\nline", b"/var/\xff\xfebad"}
    for path, row in files.items():
        layer = stack["l1"] if path == b"/etc/passwd" else stack["l2"]
        check_copy(to, row, os.fsencode(layer) + path)
    assert rows[b"/bin/su"]["change"] == "modified" and rows[b"/opt/keep"]["change"] == "unchanged"


def test_existing_files_are_never_overwritten(stack, tmp_path):
    to = tmp_path / "out"
    (to / "etc").mkdir(parents=True)
    (to / "etc/passwd").write_bytes(b"the analyst's own file")
    os.utime(to / "etc/passwd", ns=(1, 2))
    result = run(stack, to, all_deleted=True)
    assert (to / "etc/passwd").read_bytes() == b"the analyst's own file"
    assert os.stat(to / "etc/passwd").st_mtime_ns == 2
    rows = by_path(manifest(to))
    assert rows[b"/etc/passwd"]["status"] == "skipped"
    assert rows[b"/etc/passwd"]["detail"] == "exists in the destination; not overwritten"
    assert rows[b"/etc/passwd"]["sha256"] is None
    assert result.counts["skipped"] == 1 and result.counts["recovered"] == 5  # the run went on
    check_copy(to, rows[b"/var/log/nginx/access.log"], stack["l2"] / "var/log/nginx/access.log")


def test_a_second_run_into_the_same_destination_is_refused(stack, tmp_path):
    to = tmp_path / "out"
    run(stack, to, all_deleted=True)
    before = snapshot(to)
    with pytest.raises(RecoverError, match="already holds manifest.csv"):
        run(stack, to, all_modified=True)
    assert snapshot(to) == before


def test_planted_symlinks_in_the_destination_are_not_followed(stack, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    to = tmp_path / "out"
    (to / "var/log/nginx").mkdir(parents=True)
    os.symlink(outside, to / "etc")  # a directory link: writes to /etc/* would land outside
    os.symlink(outside / "access.log", to / "var/log/nginx/access.log")  # a dangling file link
    os.symlink("../../../../outside/error.log", to / "var/log/nginx/error.log")
    run(stack, to, all_deleted=True, all_modified=True)
    assert os.listdir(outside) == []  # nothing written through either link
    rows = by_path(manifest(to))
    for path in (b"/etc/passwd", b"/etc/shadow"):
        assert rows[path]["status"] == "skipped"
        assert rows[path]["detail"] == "etc in the destination is a symbolic link; not followed"
    for path in (b"/var/log/nginx/access.log", b"/var/log/nginx/error.log"):
        assert rows[path]["status"] == "skipped"
    assert os.readlink(to / "etc") == str(outside)  # the links are left as they were
    check_copy(to, rows[b"/bin/su"], stack["l2"] / "bin/su")


def test_destination_inside_or_around_the_evidence_is_refused(stack, tmp_path):
    before = snapshot(stack["layers"])
    for to in (stack["l2"] / "recovered", stack["upper"], stack["l1"] / "etc" / "x",
               stack["layers"],  # holds every layer
               tmp_path):        # holds them too
        with pytest.raises(RecoverError, match="evidence"):
            run(stack, to, all_deleted=True)
    # an evidence root given by the caller (a seized disk's mount point)
    evidence_root = tmp_path / "mnt"
    evidence_root.mkdir()
    with pytest.raises(RecoverError, match="evidence"):
        run(stack, evidence_root / "case" / "out", all_deleted=True, evidence=[str(evidence_root)])
    assert not (evidence_root / "case").exists()
    # through a symlink to a layer
    os.symlink(stack["l2"], tmp_path / "sneaky")
    with pytest.raises(RecoverError, match="evidence"):
        run(stack, tmp_path / "sneaky" / "out", all_deleted=True)
    assert snapshot(stack["layers"]) == before


def test_destination_in_a_bind_mount_of_the_evidence_is_refused(stack, tmp_path):
    need(os.geteuid() == 0, "needs root to bind-mount")
    view = tmp_path / "view"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(stack["l2"]), str(view)], check=True)
    try:
        for to in (view / "out", view / "new" / "deeper" / "out"):
            with pytest.raises(RecoverError, match="evidence"):
                run(stack, to, all_deleted=True)
        assert not (stack["l2"] / "out").exists() and not (stack["l2"] / "new").exists()
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_manifest_names_are_reserved(tmp_path):
    lower = tree(tmp_path / "lower", {"manifest.csv": b"the container's own", "x": b"x"})
    upper = tree(tmp_path / "upper", {".wh.manifest.csv": b"", ".wh.x": b""})
    with pytest.raises(RecoverError, match="collides with the manifest"):
        recover(str(upper), [str(lower)], to=str(tmp_path / "out"), paths=["/manifest.csv"],
                whiteouts="oci")
    assert not (tmp_path / "out").exists()
    to = tmp_path / "out2"
    recover(str(upper), [str(lower)], to=str(to), all_deleted=True, whiteouts="oci")
    rows = by_path(manifest(to))
    assert rows[b"/manifest.csv"]["status"] == "skipped"
    assert rows[b"/manifest.csv"]["detail"] == "collides with the manifest; not written"
    assert rows[b"/x"]["status"] == "recovered"
    assert sorted(os.listdir(to)) == ["manifest.csv", "manifest.jsonl", "x"]


def test_bad_paths_are_refused_before_writing(stack, tmp_path):
    for bad in ("/etc/../../x", "a\0b"):
        with pytest.raises(RecoverError):
            run(stack, tmp_path / "out", paths=[bad])
    with pytest.raises(RecoverError, match="nothing to recover"):
        run(stack, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_include_exclude_and_row_callback(stack, tmp_path):
    seen = []
    to = tmp_path / "out"
    result = run(stack, to, all_deleted=True, include=["/var/*"], exclude=["*/error.log"],
                 on_row=seen.append)
    paths = [row.path for row in seen]
    assert paths == [raw_path(r) for r in manifest(to)]
    assert sorted(paths) == [b"/var/formula", b"/var/log/nginx/access.log", b"/var/new\nline",
                             b"/var/\xff\xfebad"]
    assert result.total == 4


def test_unreadable_originals_are_errors_and_partial_copies_are_removed(stack, tmp_path, monkeypatch):
    from ovforensics.layers.layer import DirLayer, EntryError

    real_open = DirLayer.open

    class Failing(io.RawIOBase):
        """Gives one chunk, then fails as a dying disk would."""

        def __init__(self):
            self.calls = 0

        def readable(self):
            return True

        def readinto(self, buf):
            self.calls += 1
            if self.calls > 1:
                raise OSError(5, "Input/output error")
            buf[:4] = b"part"
            return 4

    def fake_open(layer, entry):
        if entry.name == b"access.log":
            raise EntryError(f"{os.fsdecode(entry.physical)}: Permission denied")
        if entry.name == b"error.log":
            return io.BufferedReader(Failing())
        return real_open(layer, entry)

    monkeypatch.setattr(DirLayer, "open", fake_open)
    to = tmp_path / "out"
    result = run(stack, to, all_deleted=True)
    rows = by_path(manifest(to))
    assert rows[b"/var/log/nginx/access.log"]["status"] == "error"
    assert "cannot read the original" in rows[b"/var/log/nginx/access.log"]["detail"]
    assert rows[b"/var/log/nginx/error.log"]["status"] == "error"
    assert rows[b"/var/log/nginx/error.log"]["detail"] == \
        "copy failed, partial file removed: Input/output error"
    assert os.listdir(to / "var/log/nginx") == []
    assert result.counts == {"recovered": 4, "skipped": 0, "not-found": 0, "error": 2}
    check_copy(to, rows[b"/etc/passwd"], stack["l1"] / "etc/passwd")


def test_directory_modes_and_times_are_set_after_their_contents(tmp_path):
    lower = tree(tmp_path / "lower", {"ro/sub/f": b"data", "ro/g": b"g"})
    os.utime(lower / "ro/sub", ns=(T_ATIME, T_LOG))
    os.utime(lower / "ro", ns=(T_ATIME, T_PASSWD))
    os.chmod(lower / "ro/sub", 0o500)
    os.chmod(lower / "ro", 0o555)
    upper = tree(tmp_path / "upper", {".wh.ro": b""})
    to = tmp_path / "out"
    try:
        recover(str(upper), [str(lower)], to=str(to), all_deleted=True, whiteouts="oci")
        rows = by_path(manifest(to))
        assert [raw_path(r) for r in manifest(to)] == [b"/ro", b"/ro/g", b"/ro/sub", b"/ro/sub/f"]
        assert all(r["status"] == "recovered" for r in rows.values())
        for rel, mode, mtime in (("ro", 0o555, T_PASSWD), ("ro/sub", 0o500, T_LOG)):
            st = os.stat(to / rel)
            assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (mode, mtime)
        check_copy(to, rows[b"/ro/sub/f"], lower / "ro/sub/f")
    finally:
        for where in (lower, to):
            for rel in ("ro", "ro/sub"):
                if (where / rel).exists():
                    os.chmod(where / rel, 0o755)


def test_metacopy_lower_takes_bytes_from_its_data_layer(tmp_path):
    """A metacopy file in a lower: metadata from it, bytes from the layer below (user.overlay.)."""
    data = tree(tmp_path / "data", {"etc/passwd": b"the real bytes\n"})
    meta = tree(tmp_path / "meta", {})
    (meta / "etc").mkdir()
    with open(meta / "etc/passwd", "wb") as fh:
        fh.truncate(len(b"the real bytes\n"))  # sparse, as the kernel makes them
    os.setxattr(meta / "etc/passwd", "user.overlay.metacopy", b"")
    os.chmod(meta / "etc/passwd", 0o600)
    os.utime(meta / "etc/passwd", ns=(T_ATIME, T_PASSWD))
    upper = tree(tmp_path / "upper", {"etc/passwd": b"replaced\n"})
    to = tmp_path / "out"
    recover(str(upper), [str(meta), str(data)], to=str(to), all_modified=True, xattr_ns="user")
    row = by_path(manifest(to))[b"/etc/passwd"]
    assert row["source_path"] == str(meta / "etc/passwd")
    assert row["data_path"] == str(data / "etc/passwd")
    assert row["mode"] == "0600" and row["sha256"] == sha(b"the real bytes\n")
    assert (to / "etc/passwd").read_bytes() == b"the real bytes\n"
    st = os.stat(to / "etc/passwd")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o600, T_PASSWD)


def test_owners_and_devices_as_root(tmp_path):
    need(os.geteuid() == 0, "needs root to chown and mknod")
    need_whiteout_devices(tmp_path)
    lower = tree(tmp_path / "lower", {"home/u/notes": b"notes", "home/u/link": ("link", "notes")})
    os.mknod(lower / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chown(lower / "home/u", 1234, 5678)
    os.chown(lower / "home/u/notes", 1234, 5678)
    os.chown(lower / "home/u/link", 1234, 5678, follow_symlinks=False)
    upper = tree(tmp_path / "upper", {})
    for rel in ("home", "null"):
        os.mknod(upper / rel, 0o600 | stat.S_IFCHR, os.makedev(0, 0))  # kernel whiteouts
    to = tmp_path / "out"
    recover(str(upper), [str(lower)], to=str(to), all_deleted=True)
    rows = by_path(manifest(to))
    assert rows[b"/null"]["status"] == "skipped"
    assert rows[b"/null"]["detail"] == "not a regular file: char 1/3"
    assert not os.path.lexists(to / "null")
    for rel in ("home/u", "home/u/notes", "home/u/link"):
        st = os.lstat(to / rel)
        assert (st.st_uid, st.st_gid) == (1234, 5678), rel
        assert (rows[b"/" + rel.encode()]["uid"], rows[b"/" + rel.encode()]["gid"]) == (1234, 5678)
    check_copy(to, rows[b"/home/u/notes"], lower / "home/u/notes")


# -- tar layers: the shipped rich sample ---------------------------------------------------------
def member(archive: str, name: bytes) -> tuple[tarfile.TarInfo, bytes]:
    """A member of a layer archive by its normalised name (``./etc/x`` is ``etc/x``)."""
    with tarfile.open(archive) as tf:
        for info in tf.getmembers():
            if os.fsencode(info.name).removeprefix(b"./").strip(b"/") == name:
                data = tf.extractfile(tf.getmember(info.linkname) if info.islnk() else info)
                return info, data.read() if data is not None else b""
    raise KeyError(name)


def test_rich_sample_archives(tmp_path):
    to = tmp_path / "out"
    layers = [str(RICH / n) for n in ("upper.tar", "mid.tar", "base.tar")]
    before = {p: file_sha(p) for p in layers}
    result = recover(layers[0], layers[1:], to=str(to), all_deleted=True, all_modified=True)
    rows = manifest(to)
    got = [(r["path"], r["change"], r["type"], r["status"], r["source_layer"]["index"])
           for r in rows]
    assert got == [
        ("/etc/passwd", "modified", "file", "recovered", 1),   # metacopy in the upper
        ("/etc/tool-link", "modified", "symlink", "recovered", 1),
        ("/home/user", "deleted", "dir", "recovered", 1),
        ("/home/user/notes", "deleted", "file", "recovered", 1),
        ("/opt/app/a", "modified", "file", "recovered", 1),
        ("/opt/app/lib", "deleted", "dir", "recovered", 1),
        ("/opt/app/lib/b", "deleted", "file", "recovered", 1),
        ("/opt/app/lib/c", "deleted", "file", "recovered", 1),
        ("/srv/www/index.html", "deleted", "file", "recovered", 0),
        ("/usr/bin/tool", "modified", "file", "recovered", 1),
        ("/var/log/app.log", "modified", "file", "recovered", 1),
    ]
    assert result.counts["recovered"] == len(rows)
    for row in rows:
        archive, name = row["source_path"].rsplit(":", 1)
        assert archive == row["source_layer"]["dir"]
        copy = dest(to, raw_path(row))
        if row["type"] == "file":
            info, original = member(archive, name.encode())
            assert row["sha256"] == sha(original) == file_sha(copy) == sha256sum(copy)
            assert row["size"] == len(original)
            st = os.lstat(copy)
            assert stat.S_IMODE(st.st_mode) == info.mode & 0o1777
            assert st.st_mtime_ns == int(info.mtime * 1_000_000_000)
        elif row["type"] == "symlink":
            assert os.readlink(copy) == os.fsencode(row["target"])
    assert os.readlink(to / "etc/tool-link") == "../usr/bin/tool"  # the original target
    assert {p: file_sha(p) for p in layers} == before


# -- a real kernel overlay -----------------------------------------------------------------------
def walk_files(root: Path) -> dict[bytes, os.stat_result]:
    out = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            out[path[len(base):]] = os.lstat(path)
    return out


def test_kernel_overlay_originals_match_the_kernels_base_view(tmp_path, overlay):
    need_whiteout_devices(tmp_path)
    l2 = tree(tmp_path / "l2", {
        "etc/passwd": b"root:x:0:0\n", "etc/hosts": b"127.0.0.1 localhost\n",
        "srv/data/a.bin": os.urandom(300_000), "srv/data/b.txt": b"b", "srv/keep": b"keep",
        b"srv/odd\nname \xff": b"odd", "bin/tool": b"tool v1", "lnk": ("link", "etc/passwd"),
    })
    os.chmod(l2 / "bin/tool", 0o4755)
    l1 = tree(tmp_path / "l1", {"etc/passwd": b"root:x:0:0\nweb:x:33:33\n", "srv/data/c": b"c"})
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    merged = overlay.mount([l1, l2], upper=upper, work=work)
    # the container at work, through the kernel
    os.unlink(merged / "etc/passwd")
    (merged / "etc/hosts").write_bytes(b"6.6.6.6 bank.example\n")
    subprocess.run(["rm", "-rf", str(merged / "srv/data")], check=True)
    os.unlink(os.fsencode(merged) + b"/srv/odd\nname \xff")
    os.chmod(merged / "bin/tool", 0o755)
    os.unlink(merged / "lnk")
    os.symlink("/etc/shadow", merged / "lnk")
    overlay.umount(merged)

    to = tmp_path / "out"
    layer_state = snapshot(tmp_path / "l1"), snapshot(tmp_path / "l2"), snapshot(upper)
    recover(str(upper), [str(l1), str(l2)], to=str(to), all_deleted=True, all_modified=True)
    assert (snapshot(tmp_path / "l1"), snapshot(tmp_path / "l2"), snapshot(upper)) == layer_state
    rows = by_path(manifest(to))
    assert {p: r["change"] for p, r in rows.items()} == {
        b"/bin/tool": "modified", b"/etc/hosts": "modified", b"/etc/passwd": "deleted",
        b"/lnk": "modified", b"/srv/data": "deleted", b"/srv/data/a.bin": "deleted",
        b"/srv/data/b.txt": "deleted", b"/srv/data/c": "deleted", b"/srv/odd\nname \xff": "deleted",
    }
    # the kernel's own base view (the lowers alone) is the oracle
    base = overlay.mount([l1, l2], ro=True)
    for path, row in rows.items():
        assert row["status"] == "recovered", path
        seen = os.lstat(os.fsencode(base) + path)
        copy = os.lstat(dest(to, path))
        assert stat.S_IFMT(copy.st_mode) == stat.S_IFMT(seen.st_mode)
        assert copy.st_mtime_ns == seen.st_mtime_ns
        if stat.S_ISREG(seen.st_mode):
            assert row["sha256"] == sha256sum(os.fsencode(base) + path) == sha256sum(dest(to, path))
            assert stat.S_IMODE(copy.st_mode) == stat.S_IMODE(seen.st_mode) & ~0o6000
        elif stat.S_ISLNK(seen.st_mode):
            assert os.readlink(dest(to, path)) == os.readlink(os.fsencode(base) + path)
        else:
            assert stat.S_IMODE(copy.st_mode) == stat.S_IMODE(seen.st_mode)
    assert (to / "etc/passwd").read_bytes() == b"root:x:0:0\nweb:x:33:33\n"  # l1's, not l2's
    assert os.readlink(to / "lnk") == "etc/passwd"
    assert rows[b"/bin/tool"]["mode"] == "4755"

    # and the whole base view, named as "/": every entry the kernel shows, byte for byte
    full = tmp_path / "full"
    recover(str(upper), [str(l1), str(l2)], to=str(full), paths=["/"])
    kernel = walk_files(base)
    mine = {p: st for p, st in walk_files(full).items()
            if p not in (b"/manifest.csv", b"/manifest.jsonl")}
    assert set(mine) == set(kernel)
    for path, st in kernel.items():
        assert stat.S_IFMT(mine[path].st_mode) == stat.S_IFMT(st.st_mode)
        if stat.S_ISREG(st.st_mode):
            assert file_sha(os.fsencode(full) + path) == file_sha(os.fsencode(base) + path)
        if not stat.S_ISDIR(st.st_mode) or path != b"":
            assert mine[path].st_mtime_ns == st.st_mtime_ns, path
    assert len(manifest(full)) == len(kernel)


# -- issue 14: parents that are symlinks, the container's own files, exit status, run record -------
@pytest.fixture
def linked(tmp_path):
    """A usrmerge image (``/bin -> usr/bin``), links that try to leave the stack, a loop."""
    lower = tree(tmp_path / "layers" / "lower", {
        "bin": ("link", "usr/bin"),
        "usr/bin/ls": b"\x7fELF the original ls",
        "usr/lib/libc.so": b"libc",
        "lib": ("link", "/usr/lib"),  # absolute: the stack's /usr/lib, not the host's
        "up": ("link", "../../../../../usr"),  # '..' stops at the stack's root
        "etc/passwd": b"root:x:0:0::/root:/bin/sh\n",
        "hostetc": ("link", "/etc"),  # the stack's /etc, never the analyst's
        "loop/a": ("link", "b"),
        "loop/b": ("link", "a"),
    })
    upper = tree(tmp_path / "layers" / "upper", {
        "usr/bin/ls": b"\x7fELF trojaned ls",
        "var/www/shell.php": b"<?php system($_GET['c']); ?>",
        "usr/local/bin/miner": b"\x7fELF miner",
    })
    return {"upper": upper, "lower": lower}


def _run_linked(linked, to, **kw):
    return recover(str(linked["upper"]), [str(linked["lower"])], to=str(to), **kw)


def test_parent_symlinks_resolved_inside_the_stack(linked, tmp_path):
    to = tmp_path / "out"
    result = _run_linked(linked, to, paths=["/bin/ls", "/lib/libc.so", "/up/bin/ls",
                                            "/hostetc/passwd", "/loop/a/x"])
    rows = manifest(to)
    got = [(raw_path(r), r["change"], r["status"]) for r in rows]
    assert got == [(b"/usr/bin/ls", "modified", "recovered"),
                   (b"/usr/lib/libc.so", "unchanged", "recovered"),
                   (b"/etc/passwd", "unchanged", "recovered"),
                   (b"/loop/a/x", None, "error")], got
    ls = rows[0]
    assert "named /bin/ls" in ls["detail"] and "/bin -> usr/bin" in ls["detail"]
    check_copy(to, ls, linked["lower"] / "usr/bin/ls")
    assert (to / "usr/bin/ls").read_bytes() == b"\x7fELF the original ls"
    assert not os.path.lexists(to / "bin")  # the copy is at the path it was found at
    assert rows[2]["source_path"] == str(linked["lower"] / "etc/passwd")  # not the host's
    assert "symbolic links" in rows[3]["detail"]
    # /up/bin/ls: ../../.. clamped at the root is /usr/bin/ls, met already: one row
    assert result.counts["recovered"] == 3


def test_added_files_are_collected_from_the_upper(linked, tmp_path):
    to = tmp_path / "out"
    result = _run_linked(linked, to, all_added=True)
    rows = by_path(manifest(to))
    assert {p for p, r in rows.items() if r["type"] == "file"} == {b"/var/www/shell.php",
                                                                   b"/usr/local/bin/miner"}
    assert all(r["change"] == "added" and r["status"] == "recovered" for r in rows.values())
    shell = rows[b"/var/www/shell.php"]
    check_copy(to, shell, linked["upper"] / "var/www/shell.php")
    assert shell["source_layer"]["role"] == "upper"
    assert result.counts["recovered"] == len(rows)
    # named: the same, one path
    to2 = tmp_path / "out2"
    _run_linked(linked, to2, paths=["/var/www/shell.php"])
    (row,) = manifest(to2)
    assert (raw_path(row), row["change"], row["status"]) == (b"/var/www/shell.php", "added",
                                                             "recovered")


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ovforensics", "recover", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_nothing_recovered_is_exit_1_and_run_record_written(linked, tmp_path):
    stack = ["--upper", str(linked["upper"]), "--lower", str(linked["lower"])]
    done = _cli(*stack, "/nope", "/also/nope", "--to", str(tmp_path / "a"))
    assert done.returncode == 1, done.stderr
    assert "nothing was recovered" in done.stderr
    assert (tmp_path / "a" / "manifest.csv").exists()
    done = _cli(*stack, "/bin/ls", "--all-added", "--to", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    meta = json.loads((tmp_path / "b" / "run.json").read_text())["meta"]
    assert meta["command"] == "recover" and meta["tool"] == "ovforensics"
    assert meta["counts"]["recovered"] == len(manifest(tmp_path / "b")) >= 3
    assert "--all-added" in meta["argv"] and meta["target"]["upper"] == str(linked["upper"])
    assert meta["started"] <= meta["ended"]
    assert "run record: " in done.stderr


def test_kernel_resolves_the_named_path_where_recover_found_it(linked, tmp_path, overlay):
    """The kernel's own base view (the lower alone, mounted read-only) through /bin/ls and
    /lib/libc.so gives the bytes recover copied from the path it found."""
    empty = tmp_path / "empty"
    empty.mkdir()
    base = overlay.mount([linked["lower"], empty], ro=True)  # one lowerdir alone is refused
    merged = overlay.mount([linked["upper"], linked["lower"]], ro=True)
    to = tmp_path / "out"
    _run_linked(linked, to, paths=["/bin/ls", "/lib/libc.so", "/var/www/shell.php"])
    assert (to / "usr/bin/ls").read_bytes() == (base / "bin/ls").read_bytes()
    # /lib -> /usr/lib is absolute: on a mount the kernel would read the host's /usr/lib, inside
    # the container (its root the stack's) it is the stack's own /usr/lib, which recover took
    assert (to / "usr/lib/libc.so").read_bytes() == (base / "usr/lib/libc.so").read_bytes()
    assert (to / "var/www/shell.php").read_bytes() == (merged / "var/www/shell.php").read_bytes()
    assert (merged / "bin/ls").read_bytes() == b"\x7fELF trojaned ls"  # what it replaced
