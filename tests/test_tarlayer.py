"""TarLayer against DirLayer: an archive of a tree must read as the tree itself, without root.

Archives are made both with Python's tarfile and with the real ``tar --xattrs``, plain and
compressed; devices and ``trusted.*`` xattrs need root to *create* (never to read).
"""
from __future__ import annotations

import base64
import gzip
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from conftest import need, need_whiteout_devices
from ovforensics.layers.layer import DirLayer, Entry, EntryError, LayerError
from ovforensics.layers.tarlayer import TarLayer, normalise

IS_ROOT = os.geteuid() == 0
ROOT = Path(__file__).resolve().parents[1]
BAD = b"bad\xff"
NL = b"nl\nname"
MTIME_NS = 1_600_000_000_123_456_789


# -- helpers ----------------------------------------------------------------------------------

def _user_xattrs_work(path) -> bool:
    probe = os.path.join(path, ".xattr-probe")
    open(probe, "w").close()
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe)


def make_tree(root, *, devices: bool = False, xattrs: bool = True) -> None:
    """A small upperdir-like tree; ``devices`` (root) adds whiteouts, an opaque dir, owners."""
    rb = os.fsencode(root)
    j = lambda *parts: os.path.join(rb, *parts)  # noqa: E731
    os.makedirs(j(b"d", b"sub"))
    os.makedirs(j(b"d", b"empty"))
    with open(j(b"f"), "wb") as fh:
        fh.write(b"hello\n")
    with open(j(b"d", b"sub", b"deep"), "wb") as fh:
        fh.write(os.urandom(70_000))
    with open(j(BAD), "wb") as fh:
        fh.write(b"not utf-8 name\n")
    with open(j(NL), "wb") as fh:
        fh.write(b"newline in name\n")
    with open(j(b"h1"), "wb") as fh:
        fh.write(b"hard-linked content\n")
    os.link(j(b"h1"), j(b"d", b"h2"))
    with open(j(b"suid"), "wb") as fh:
        fh.write(b"#!/bin/sh\n")
    os.chmod(j(b"suid"), 0o4755)
    open(j(b"empty"), "wb").close()
    os.symlink(b"/etc/shadow", j(b"shadow"))
    os.symlink(b"d/sub", j(b"rel"))
    os.mkfifo(j(b"p"), 0o640)
    if xattrs:
        os.setxattr(j(b"f"), "user.bin", b"\x00\xff\x80\xc3(\n=\x00")
        os.setxattr(j(b"d"), "user.txt", b"text")
    if devices:
        os.mknod(j(b"wh"), 0o600 | stat.S_IFCHR, os.makedev(0, 0))
        os.link(j(b"wh"), j(b"d", b"wh2"))
        os.setxattr(j(b"d"), "trusted.overlay.opaque", b"y")
        os.chown(j(b"f"), 1234, 5678)
        os.lchown(j(b"shadow"), 4321, 8765)
        # a valid VFS_CAP_REVISION_2 value (cap_net_raw+ep): binary, with NULs
        os.setxattr(j(b"suid"), "security.capability",
                    bytes.fromhex("0100000200200000000000000000000000000000"))
    os.utime(j(b"f"), ns=(MTIME_NS, MTIME_NS))


def gnu_tar(src, dest, *extra: str) -> None:
    need(shutil.which("tar") is not None, "GNU tar is not installed")
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", *extra, "-C", str(src), "-cf",
                    str(dest), "."], check=True, capture_output=True)


def compress(src, kind: str, dest) -> None:
    data = open(src, "rb").read()
    if kind == "gzip":
        out = gzip.compress(data)
    elif kind == "zstd":  # with a content checksum, as the zstd CLI writes by default
        out = zstandard.ZstdCompressor(write_checksum=True).compress(data)
    elif kind == "zstd-frames":  # several frames, as pzstd and some writers produce
        c = zstandard.ZstdCompressor()
        half = len(data) // 2
        out = c.compress(data[:half]) + c.compress(data[half:])
    else:
        out = data
    with open(dest, "wb") as fh:
        fh.write(out)


def walk(layer, path=()):
    listing = layer.listdir(path)
    assert listing is not None, path
    for name, entry in sorted(listing.items()):
        yield entry
        if entry.is_dir:
            yield from walk(layer, entry.path)


def compare(dl: DirLayer, tl: TarLayer, *, ns: bool = True, xattrs: bool = True,
            nlink: bool = True) -> int:
    """Field by field; returns how many entries were compared."""
    dir_entries = {e.path: e for e in walk(dl)}
    tar_entries = {e.path: e for e in walk(tl)}
    assert sorted(tar_entries) == sorted(dir_entries)
    for path, d in dir_entries.items():
        t = tar_entries[path]
        where = path
        assert t.kind == d.kind, where
        assert t.mode == d.mode, where
        assert (t.uid, t.gid) == (d.uid, d.gid), where
        if d.kind != "dir":
            assert t.size == d.size, where
        assert t.rdev == d.rdev, where
        assert t.target == d.target, where
        assert t.mtime_ns // 10**9 == d.mtime_ns // 10**9, where
        if ns:
            assert t.mtime_ns == d.mtime_ns, where
        else:  # Python's tarfile writes a float mtime: microseconds survive
            assert abs(t.mtime_ns - d.mtime_ns) < 1000, where
        if nlink:
            assert t.nlink == d.nlink, where
        if xattrs:
            assert t.xattrs() == d.xattrs(), where
        if d.kind == "file":
            with t.open() as a, d.open() as b:
                assert a.read() == b.read(), where
    return len(dir_entries)


def write_members(dest, members, fmt=tarfile.PAX_FORMAT, mode="w") -> None:
    """``members``: (TarInfo, bytes | None) pairs, written with Python's tarfile."""
    with tarfile.open(dest, mode, format=fmt, encoding="utf-8",
                      errors="surrogateescape") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)


def ti(name, type=tarfile.REGTYPE, **kw) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type
    info.mode = kw.pop("mode", 0o644)
    info.mtime = kw.pop("mtime", 1_700_000_000)
    for k, v in kw.items():
        setattr(info, k, v)
    return info


# -- real tar, compared with the tree ----------------------------------------------------------

@pytest.mark.parametrize("comp", ["plain", "gzip", "zstd", "zstd-frames"])
def test_gnu_tar_matches_dirlayer(tmp_path, comp):
    src = tmp_path / "src"
    src.mkdir()
    xattrs = _user_xattrs_work(tmp_path)
    make_tree(src, xattrs=xattrs)
    gnu_tar(src, tmp_path / "x.tar")
    # a misleading name: the format comes from the magic bytes
    archive = tmp_path / "evidence.tar"
    compress(tmp_path / "x.tar", comp, archive)
    with TarLayer(str(archive)) as tl:
        assert tl.compression == (None if comp == "plain" else comp.split("-")[0])
        assert compare(DirLayer(str(src)), tl) >= 14
        assert tl.errors == []
        top = tl.listdir(())
        assert top[b"shadow"].target == b"/etc/shadow" and top[b"shadow"].kind == "symlink"
        assert top[b"p"].kind == "fifo"
        assert top[BAD].kind == "file" and top[NL].kind == "file"
        assert top[b"f"].mtime_ns == MTIME_NS  # GNU tar's PAX mtime keeps nanoseconds
        if xattrs:
            assert top[b"f"].xattrs() == {"user.bin": b"\x00\xff\x80\xc3(\n=\x00"}


def test_gnu_tar_devices_opaque_owners(tmp_path):
    need(IS_ROOT, "needs root to mknod whiteouts and set trusted.* xattrs")
    need_whiteout_devices(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src, devices=True)
    gnu_tar(src, tmp_path / "x.tar")
    with TarLayer(tmp_path / "x.tar") as tl:
        # GNU tar 1.34 stores every name of a hard-linked device as a device of its own, so the
        # link count is lost there (Docker and bsdtar write hard links: see the test below)
        compare(DirLayer(str(src)), tl, nlink=False)
        top = tl.listdir(())
        d = tl.listdir((b"d",))
        for wh in (top[b"wh"], d[b"wh2"]):
            assert (wh.kind, wh.rdev, wh.perm) == ("char", 0, 0o600)
        assert top[b"d"].xattr("trusted.overlay.opaque") == b"y"
        assert top[b"suid"].xattr("security.capability") == bytes.fromhex(
            "0100000200200000000000000000000000000000")
        assert (top[b"f"].uid, top[b"f"].gid) == (1234, 5678)
        assert (top[b"shadow"].uid, top[b"shadow"].gid) == (4321, 8765)


def test_python_tarfile_matches_dirlayer(tmp_path):
    if IS_ROOT:
        need_whiteout_devices(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src, devices=IS_ROOT, xattrs=False)
    with tarfile.open(tmp_path / "x.tar", "w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(str(src), arcname=".")  # tarfile hard-links regular files only
    with TarLayer(tmp_path / "x.tar") as tl:
        compare(DirLayer(str(src)), tl, ns=False, xattrs=False, nlink=not IS_ROOT)
        h1, h2 = tl.listdir(())[b"h1"], tl.listdir((b"d",))[b"h2"]
        assert h1.nlink == h2.nlink == 2 and h1.ino == h2.ino
        assert h2.open().read() == b"hard-linked content\n"


def test_gnu_tar_sparse_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as fh:
        fh.truncate(3 << 20)
        fh.seek(1_500_000)
        fh.write(b"middle")
        fh.seek((3 << 20) - 3)
        fh.write(b"end")
    gnu_tar(src, tmp_path / "x.tar", "--sparse")
    with TarLayer(tmp_path / "x.tar") as tl:
        e = tl.listdir(())[b"sparse"]
        assert e.size == 3 << 20
        with e.open() as fh:
            assert fh.read() == (src / "sparse").read_bytes()
            fh.seek(1_500_000 - 2)
            assert fh.read(10) == b"\0\0middle\0\0"


def test_gnu_tar_implied_parents(tmp_path):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "c").write_bytes(b"c")
    need(shutil.which("tar") is not None, "GNU tar is not installed")
    subprocess.run(["tar", "-C", str(src), "-cf", str(tmp_path / "x.tar"), "a/b/c"], check=True)
    with TarLayer(tmp_path / "x.tar") as tl:
        a = tl.listdir(())[b"a"]
        assert (a.kind, a.mode, a.uid, a.gid, a.mtime_ns) == ("dir", stat.S_IFDIR | 0o755, 0, 0, 0)
        assert list(tl.listdir((b"a",))) == [b"b"]
        assert tl.listdir((b"a", b"b"))[b"c"].open().read() == b"c"


# -- crafted archives: what tarfile.add cannot write -------------------------------------------

def test_hard_linked_whiteouts_look_like_char_devices(tmp_path):
    # What Docker/containerd and bsdtar write for the kernel's shared whiteout inode.
    wh = ti("./wh", tarfile.CHRTYPE, mode=0o000, devmajor=0, devminor=0, uid=0, gid=0)
    wh2 = ti("./d/wh2", tarfile.LNKTYPE, linkname="./wh", mode=0o777)
    wh3 = ti("./d/e/wh3", tarfile.LNKTYPE, linkname="wh")
    write_members(tmp_path / "x.tar", [(ti("./", tarfile.DIRTYPE, mode=0o755), None),
                                       (wh, None), (wh2, None), (wh3, None)])
    with TarLayer(tmp_path / "x.tar") as tl:
        es = [tl.listdir(())[b"wh"], tl.listdir((b"d",))[b"wh2"],
              tl.listdir((b"d", b"e"))[b"wh3"]]
        for e in es:
            assert (e.kind, e.rdev, e.mode, e.nlink) == ("char", 0, stat.S_IFCHR, 3)
            assert e.ino == es[0].ino
        with pytest.raises(EntryError):
            tl.open(es[1])


def test_hard_link_to_file_and_dangling_link(tmp_path):
    write_members(tmp_path / "x.tar", [
        (ti("a", mode=0o640, uid=7), b"data"),
        (ti("b", tarfile.LNKTYPE, linkname="a"), None),
        (ti("c", tarfile.LNKTYPE, linkname="missing"), None),
    ])
    with TarLayer(tmp_path / "x.tar") as tl:
        top = tl.listdir(())
        assert sorted(top) == [b"a", b"b"]
        b = top[b"b"]
        assert (b.kind, b.size, b.mode, b.uid, b.nlink) == ("file", 4, stat.S_IFREG | 0o640, 7, 2)
        assert b.open().read() == b"data"
        assert [n for n, _ in tl.errors] == [b"c"]


def test_binary_and_libarchive_xattrs(tmp_path):
    binary = bytes(range(256))
    esc = lambda b: b.decode("utf-8", "surrogateescape")  # noqa: E731 - how tarfile holds bytes
    f = ti(BAD.decode("utf-8", "surrogateescape"), pax_headers={
        "SCHILY.xattr.user.bin": esc(binary),
        "SCHILY.xattr.trusted.overlay.opaque": "y",
        "SCHILY.xattr.user.a%3Db%25c": "gnu-escaped",
    })
    g = ti("g", pax_headers={
        "LIBARCHIVE.xattr.user.b64": base64.b64encode(b"\x00\x01\xfe").decode().rstrip("="),
        "LIBARCHIVE.xattr.user.both": base64.b64encode(b"lib").decode(),
        "SCHILY.xattr.user.both": "schily",
    })
    write_members(tmp_path / "x.tar", [(f, b""), (g, b"")])
    raw = (tmp_path / "x.tar").read_bytes()
    assert b"hdrcharset=BINARY" in raw and binary in raw  # tarfile wrote the raw bytes
    with TarLayer(tmp_path / "x.tar") as tl:
        top = tl.listdir(())
        assert top[BAD].xattrs() == {"user.bin": binary, "trusted.overlay.opaque": b"y",
                                     "user.a=b%c": b"gnu-escaped"}
        assert top[b"g"].xattrs() == {"user.b64": b"\x00\x01\xfe", "user.both": b"schily"}


def test_pax_mtime_fraction_is_exact(tmp_path):
    write_members(tmp_path / "x.tar", [
        (ti("frac", pax_headers={"mtime": "1700000000.123456789"}), b""),
        (ti("short", pax_headers={"mtime": "1700000000.5"}), b""),
        (ti("neg", pax_headers={"mtime": "-1.25"}), b""),
        (ti("int", mtime=1_700_000_001), b""),
    ])
    with TarLayer(tmp_path / "x.tar") as tl:
        top = tl.listdir(())
        assert top[b"frac"].mtime_ns == 1_700_000_000_123_456_789
        assert top[b"short"].mtime_ns == 1_700_000_000_500_000_000
        assert top[b"neg"].mtime_ns == -1_250_000_000
        assert top[b"int"].mtime_ns == 1_700_000_001_000_000_000


def test_names_normalised_and_dotdot_refused(tmp_path):
    write_members(tmp_path / "x.tar", [
        (ti("./", tarfile.DIRTYPE, mode=0o700, mtime=5), None),
        (ti("/abs", mode=0o600), b"abs"),
        (ti("x//y/", tarfile.DIRTYPE, mode=0o750), None),
        (ti("./x/y/./z"), b"z"),
        (ti("../evil"), b"evil"),
        (ti("x/../../evil2"), b"evil"),
        (ti("dup"), b"first"),
        (ti("dup"), b"second!"),
        (ti("file"), b""),
        (ti("file/under"), b"orphan"),
    ], fmt=tarfile.GNU_FORMAT)
    with TarLayer(tmp_path / "x.tar") as tl:
        assert tl.root_entry().mode == stat.S_IFDIR | 0o700 and tl.root_entry().mtime_ns == 5 * 10**9
        top = tl.listdir(())
        assert sorted(top) == [b"abs", b"dup", b"file", b"x"]
        assert top[b"x"].mode == stat.S_IFDIR | 0o755  # implied by "x//y/"
        assert tl.listdir((b"x",))[b"y"].mode == stat.S_IFDIR | 0o750
        assert tl.listdir((b"x", b"y"))[b"z"].open().read() == b"z"
        assert top[b"dup"].open().read() == b"second!"
        assert tl.listdir((b"file",)) is None and tl.listdir((b"nope",)) is None
        assert dict(tl.errors) == {b"../evil": tl.errors[0][1], b"x/../../evil2": tl.errors[1][1],
                                   b"file/under": "parent is not a directory"}
        assert tl.physical((b"x", b"y", b"z")) == os.fsencode(tmp_path / "x.tar") + b":x/y/z"
    assert normalise(b"./a//b/") == (b"a", b"b") and normalise(b".") == ()
    assert not (tmp_path / "evil").exists() and not os.path.exists(tmp_path.parent / "evil")


def test_implied_parents_python_tarfile(tmp_path):
    write_members(tmp_path / "x.tar", [(ti("a/b/c", mode=0o600, uid=3), b"c")])
    with TarLayer(tmp_path / "x.tar") as tl:
        for path, name in (((), b"a"), ((b"a",), b"b")):
            e = tl.listdir(path)[name]
            assert (e.kind, e.mode, e.uid, e.gid, e.mtime_ns, e.nlink) == (
                "dir", stat.S_IFDIR | 0o755, 0, 0, 0, 3 if name == b"a" else 2)
        c = tl.listdir((b"a", b"b"))[b"c"]
        assert (c.kind, c.mode, c.uid) == ("file", stat.S_IFREG | 0o600, 3)
        assert tl.listdir((b"a", b"b", b"c")) is None


# -- reading bytes ----------------------------------------------------------------------------

@pytest.mark.parametrize("comp", ["plain", "gzip", "zstd"])
def test_open_random_access_and_nothing_next_to_evidence(tmp_path, comp):
    blobs = {f"f{i}".encode(): os.urandom(i * 3000 + 1) for i in range(8)}
    write_members(tmp_path / "x.tar", [(ti(n.decode()), b) for n, b in blobs.items()])
    ev = tmp_path / "evidence"
    ev.mkdir()
    compress(tmp_path / "x.tar", comp, ev / "layer")
    before = sorted(os.listdir(ev))
    with TarLayer(ev / "layer") as tl:
        top = tl.listdir(())
        files = [tl.open(top[n]) for n in reversed(list(blobs))]  # all open at once
        for fh, (name, blob) in zip(files, reversed(list(blobs.items()))):
            assert fh.read(5) == blob[:5]
        for fh, (name, blob) in zip(files, reversed(list(blobs.items()))):
            assert fh.read() == blob[5:]
            fh.seek(-1, io.SEEK_END)
            assert fh.read() == blob[-1:]
            fh.close()
        assert sorted(os.listdir(ev)) == before
    assert sorted(os.listdir(ev)) == before
    with pytest.raises(EntryError):
        tl.open(top[b"f1"])  # closed


def test_label_index_rules_and_entry_shape(tmp_path):
    write_members(tmp_path / "x.tar", [(ti("f"), b"x")])
    rel = os.path.relpath(tmp_path / "x.tar")
    tl = TarLayer(rel, index=2, rules="kernel")
    assert (tl.label, tl.index, tl.rules) == (rel, 2, "kernel")
    e = tl.listdir(())[b"f"]
    assert isinstance(e, Entry) and e.layer is tl and e.physical == os.fsencode(rel) + b":f"
    assert tl.listdir(()) is tl.listdir(())  # cached, so entries keep their xattr cache
    tl.forget(())
    assert tl.listdir(()) is not None
    tl.close()


# -- archives that cannot be read --------------------------------------------------------------

def _expect_error(path, *words) -> str:
    with pytest.raises(LayerError) as exc:
        TarLayer(str(path))
    msg = str(exc.value)
    assert msg.startswith(str(path) + ":") and "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


@pytest.fixture
def good_tar(tmp_path):
    members = [(ti("a", pax_headers={"mtime": "2.5"}), os.urandom(5000)),
               (ti("b"), os.urandom(3000)),
               (ti("p", pax_headers={"mtime": "1.5"}), b"p"), (ti("c"), b"c")]
    write_members(tmp_path / "good.tar", members)
    return (tmp_path / "good.tar").read_bytes()


def test_truncated_plain_archives(tmp_path, good_tar):
    with tarfile.open(fileobj=io.BytesIO(good_tar)) as tf:
        b, p, c = tf.getmember("b"), tf.getmember("p"), tf.getmember("c")
    cuts = {
        "in-data": b.offset_data + 100,
        "after-pax-header": p.offset_data - 512,
        "in-header-after-pax-header": p.offset_data - 300,
        "first-member-data": 700,
        "after-first-pax-header": 1024,  # tarfile.open itself fails here
        "at-member-boundary": c.offset,  # tarfile alone would report a shorter, "fine" archive
        "in-header": c.offset + 200,
        "after-last-member": c.offset_data + 512,  # end-of-archive marker missing
    }
    for why, cut in cuts.items():
        path = tmp_path / f"cut-{why}.tar"
        path.write_bytes(good_tar[:cut])
        _expect_error(path, "truncated")
    lone = tmp_path / "lone-zero-block.tar"  # GNU tar reads this too (with a warning)
    lone.write_bytes(good_tar[:c.offset_data + 1024])
    assert sorted(TarLayer(lone).listdir(())) == [b"a", b"b", b"c", b"p"]
    garbage = bytearray(good_tar)
    garbage[b.offset:b.offset + 512] = b"\x42" * 512
    (tmp_path / "garbage.tar").write_bytes(bytes(garbage))
    _expect_error(tmp_path / "garbage.tar", "corrupt")


@pytest.mark.parametrize("comp", ["gzip", "zstd"])
def test_truncated_compressed_archives(tmp_path, good_tar, comp):
    (tmp_path / "x.tar").write_bytes(good_tar)
    compress(tmp_path / "x.tar", comp, tmp_path / "x.c")
    data = (tmp_path / "x.c").read_bytes()
    (tmp_path / "cut").write_bytes(data[: len(data) // 2])
    _expect_error(tmp_path / "cut", "truncated", comp)
    (tmp_path / "cut").write_bytes(data[:-3])
    _expect_error(tmp_path / "cut", comp)
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    (tmp_path / "bad").write_bytes(bytes(bad))
    _expect_error(tmp_path / "bad", comp)


def test_not_a_tar(tmp_path):
    (tmp_path / "text").write_bytes(b"just some text, no tar header here\n" * 40)
    _expect_error(tmp_path / "text", "not a tar")
    (tmp_path / "short").write_bytes(b"tiny")
    _expect_error(tmp_path / "short", "not a tar")
    (tmp_path / "empty").write_bytes(b"")
    _expect_error(tmp_path / "empty", "not a tar")
    (tmp_path / "text.gz").write_bytes(gzip.compress(b"hello\n" * 1000))
    _expect_error(tmp_path / "text.gz", "not a gzip-compressed tar")
    _expect_error(tmp_path / "missing.tar", "No such file")
    _expect_error(tmp_path, "not a regular file")


def test_unreadable(tmp_path, good_tar):
    """A locked archive (as on a FUSE/NFS evidence mount): as root, checked as an unprivileged user."""
    p = tmp_path / "locked.tar"
    p.write_bytes(good_tar)
    p.chmod(0)
    if not IS_ROOT:
        _expect_error(p, "Permission denied")
        return
    tmp_path.chmod(0o755)
    code = ("import sys; from ovforensics.layers.tarlayer import TarLayer; from ovforensics.layers.layer import LayerError\n"
            "try:\n    TarLayer(sys.argv[1])\nexcept LayerError as e:\n    print(e)\n")
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-c", code, str(p)], capture_output=True, text=True,
                          cwd="/", env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "Permission denied" in proc.stdout, proc.stdout + proc.stderr
