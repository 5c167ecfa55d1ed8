"""The read-only bbolt reader.

Two sources of files:

* crafted here by a tiny writer (:func:`craft`) that lays out bbolt pages exactly as the format
  says: nested, inline and overflowing buckets, multi-level trees, two meta pages of different
  transactions; then damaged on purpose (loops, shared pages, keys out of order, elements
  outside their page, pages past the high-water mark, bad checksums). No root needed.
* the real ``meta.db`` and overlayfs ``metadata.db`` of a hermetic containerd (shared with
  ``test_engine_containerd.py``): every bucket and key is read and compared with what ``ctr``
  reports; copies are truncated and corrupted at random, and the reader may only ever answer
  with data or a :class:`BoltError` naming the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from ovforensics.stores import bbolt  # noqa: E402
from ovforensics.stores.bbolt import BoltError  # noqa: E402
from ovforensics.stores import containerd  # noqa: E402
from ovforensics.stores.base import Broken, Container  # noqa: E402
from ovforensics.evidence.rootfs import Root  # noqa: E402

import test_engine_containerd as env_mod  # noqa: E402


from boltwriter import Inline, _b, craft  # noqa: E402  (tests/boltwriter.py)


def as_bytes(tree) -> dict:
    return {_b(k): (as_bytes(v) if isinstance(v, dict) else _b(v)) for k, v in tree.items()}


SAMPLE = {
    "v1": {
        "default": {
            "containers": {f"c{i:03d}": {"image": f"img{i}", "labels": Inline({"a": "1", "b": "2"}),
                                         "spec": "s" * (i * 7)} for i in range(40)},
            "big": {"blob": "x" * 20000},  # overflow pages
            "empty": {},
            "inline-empty": Inline(),
        },
        "version": b"\x06",
    },
    "other": Inline({"k": "v"}),
}


def write(tmp_path, data: bytes, name: str = "x.db") -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def page_of(data: bytes, pgid: int, size: int = 4096) -> tuple[int, int, int, int]:
    return struct.unpack_from("<QHHI", data, pgid * size)


# -- pure units --------------------------------------------------------------------------------
def test_fnv1a64_matches_go():
    assert bbolt.fnv1a64(b"") == 0xCBF29CE484222325
    assert bbolt.fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert bbolt.fnv1a64(b"foobar") == 0x85944171F73967E8


def test_varints():
    assert bbolt.uvarint(b"\x01") == 1
    assert bbolt.uvarint(b"\xac\x02") == 300
    assert bbolt.uvarint(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01") == 2 ** 64 - 1
    assert bbolt.varint(b"\x06") == 3 and bbolt.varint(b"\x05") == -3  # zig-zag
    for bad in (b"", b"\x80", b"\xff" * 10 + b"\x01", b"\xff" * 9 + b"\x02"):
        with pytest.raises(ValueError):
            bbolt.uvarint(bad)


# -- crafted files -----------------------------------------------------------------------------
def test_crafted_round_trip(tmp_path):
    path = write(tmp_path, craft(SAMPLE, per_leaf=4, per_branch=3))
    with bbolt.open_db(path) as db:
        assert db.dump() == as_bytes(SAMPLE)
        assert db.meta.txid == 7 and db.meta.page == 1 and db.page_size == 4096
        containers = db.bucket("v1", "default", "containers")
        assert not containers.inline
        # 40 keys, 4 per leaf, 3 per branch: leaves under two branch levels
        pages = containers.pages()
        flags = [db.page(p).flags for p in pages]
        assert flags.count(bbolt.BRANCH) >= 4 and flags.count(bbolt.LEAF) == 10
        big = db.bucket("v1", "default", "big")
        assert db.page(big.root_page).overflow == 4  # 20000 bytes: 5 pages
        assert db.bucket("other").inline and db.bucket("v1", "default", "inline-empty").inline
        lab = db.bucket("v1", "default", "containers", "c017", "labels")
        assert lab.inline and lab.to_dict() == {b"a": b"1", b"b": b"2"}
        # get() descends the branches to the one right leaf, for present and absent keys
        for i in range(40):
            assert containers.bucket(f"c{i:03d}").value("image") == f"img{i}".encode()
            assert containers.get(f"c{i:03d}x") is None
        assert containers.get("a") is None and containers.get("d") is None
        assert db.bucket("v1").value("version") == b"\x06"
        assert db.bucket("v1", "version") is None  # a value, not a bucket
        assert db.bucket("nope", "x") is None


def test_page_size_8192_and_damaged_first_meta(tmp_path):
    data = bytearray(craft(SAMPLE, page_size=8192))
    data[0:8192] = os.urandom(8192)  # meta page 0 gone: page 1 is found at offset 8192
    with bbolt.open_db(write(tmp_path, bytes(data))) as db:
        assert db.page_size == 8192 and db.meta.page == 1
        assert "bad magic" in db.metas[0].error
        assert db.dump() == as_bytes(SAMPLE)


def test_meta_selection(tmp_path):
    old = {"v1": {"state": "old"}}
    new = {"v1": {"state": "new"}}
    data = bytearray(craft(new, older=old, txid=9))
    with bbolt.open_db(write(tmp_path, bytes(data), "a.db")) as db:
        assert db.meta.txid == 9 and db.dump() == as_bytes(new)
    # the newer meta page fails its checksum: the previous transaction is read
    data[4096 + 16 + 48] ^= 1  # txid of meta page 1
    with bbolt.open_db(write(tmp_path, bytes(data), "b.db")) as db:
        assert db.meta.txid == 8 and db.meta.page == 0 and db.dump() == as_bytes(old)
        assert "bad checksum" in db.metas[1].error
    # both bad: no valid meta page, both reasons named
    data[16 + 48] ^= 1
    path = write(tmp_path, bytes(data), "c.db")
    with pytest.raises(BoltError) as exc:
        bbolt.open_db(path)
    msg = str(exc.value)
    assert msg.startswith(path + ": ") and exc.value.path == path
    assert "no valid meta page" in msg and msg.count("bad checksum") == 2


def test_version_and_magic(tmp_path):
    with pytest.raises(BoltError, match="unsupported version 1"):
        bbolt.open_db(write(tmp_path, craft(SAMPLE, version=1)))
    with pytest.raises(BoltError, match="bad magic"):
        bbolt.open_db(write(tmp_path, b"SQLite format 3\0" + b"\0" * 9000, "s.db"))
    for size in (0, 10, 79):
        with pytest.raises(BoltError, match="too short"):
            bbolt.open_db(write(tmp_path, b"\0" * size, f"t{size}.db"))
    with pytest.raises(BoltError, match="cannot open"):
        bbolt.open_db(str(tmp_path / "missing.db"))


def _patch_branch(data: bytes, pgid: int, elem: int, child: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<Q", out, pgid * 4096 + 16 + elem * 16 + 8, child)
    return bytes(out)


def _containers_root(tmp_path, data: bytes) -> int:
    with bbolt.open_db(write(tmp_path, data, "probe.db")) as db:
        return db.bucket("v1", "default", "containers").root_page


def _all(path: str):
    with bbolt.open_db(path) as db:
        return db.dump()


@pytest.mark.parametrize("case", ["self-loop", "shared-child", "past-high-water", "meta-page",
                                  "keys-out-of-order", "element-outside", "header-id", "flags",
                                  "count", "bucket-loop", "inline-flags", "short-bucket-header"])
def test_crafted_damage_is_a_bolt_error(tmp_path, case):
    clean = craft(SAMPLE, per_leaf=4, per_branch=3)
    root = _containers_root(tmp_path, clean)
    assert page_of(clean, root)[1] == bbolt.BRANCH
    data = bytearray(clean)
    at = root * 4096
    if case == "self-loop":
        data = _patch_branch(data, root, 1, root)
    elif case == "shared-child":
        first = struct.unpack_from("<Q", data, at + 16 + 8)[0]
        data = _patch_branch(data, root, 1, first)
    elif case == "past-high-water":
        data = _patch_branch(data, root, 1, 10_000)
    elif case == "meta-page":
        data = _patch_branch(data, root, 1, 1)
    elif case == "keys-out-of-order":
        # the branch's second key sorts before its first
        pos = struct.unpack_from("<I", data, at + 32)[0]
        data[at + 32 + pos:at + 32 + pos + 1] = b"\x00"
    elif case == "element-outside":
        struct.pack_into("<I", data, at + 16, 1 << 20)  # pos of element 0
    elif case == "header-id":
        struct.pack_into("<Q", data, at, root + 1)
    elif case == "flags":
        struct.pack_into("<H", data, at + 8, bbolt.FREELIST)
    elif case == "count":
        struct.pack_into("<H", data, at + 10, 300)
    elif case in ("bucket-loop", "inline-flags", "short-bucket-header"):
        with bbolt.open_db(write(tmp_path, bytes(data), "probe.db")) as db:
            c = db.bucket("v1", "default", "containers", "c000")
            leaf = c.root_page
        raw = bytes(data[leaf * 4096:(leaf + 1) * 4096])
        n = struct.unpack_from("<H", raw, 10)[0]
        for i in range(n):  # find the "labels" element (an inline bucket)
            fl, pos, ks, vs = struct.unpack_from("<IIII", raw, 16 + i * 16)
            if raw[16 + i * 16 + pos:16 + i * 16 + pos + ks] == b"labels":
                value_at = leaf * 4096 + 16 + i * 16 + pos + ks
                break
        if case == "bucket-loop":  # "labels" claims the root of an enclosing bucket
            struct.pack_into("<Q", data, value_at, root)
        elif case == "inline-flags":
            struct.pack_into("<H", data, value_at + 16 + 8, bbolt.BRANCH)
        else:
            struct.pack_into("<I", data, leaf * 4096 + 16 + i * 16 + 12, 3)  # vsize 3
    path = write(tmp_path, bytes(data))
    with pytest.raises(BoltError) as exc:
        _all(path)
    assert str(exc.value).startswith(path + ": ") and "damaged" in str(exc.value), exc.value


def test_get_on_a_looping_tree_stops(tmp_path):
    clean = craft(SAMPLE, per_leaf=4, per_branch=3)
    root = _containers_root(tmp_path, clean)
    n = page_of(clean, root)[2]
    path = write(tmp_path, _patch_branch(clean, root, n - 1, root))
    with bbolt.open_db(path) as db:
        with pytest.raises(BoltError, match="loops"):
            db.bucket("v1", "default", "containers").get("c039")


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path):
    tree: dict = {}
    cur = tree
    for _ in range(300):
        nxt = Inline()
        cur["n"] = nxt
        cur = nxt
    path = write(tmp_path, craft({"top": tree}))
    with pytest.raises(BoltError, match="nested more than"):
        _all(path)


def test_truncated_crafted_file(tmp_path):
    clean = craft(SAMPLE, per_leaf=4, per_branch=3)
    for cut in list(range(0, len(clean), 4096)) + [4096 * 2 + 100, len(clean) - 1]:
        path = write(tmp_path, clean[:cut], f"t{cut}.db")
        with pytest.raises(BoltError) as exc:
            _all(path)
        assert re.search(r"too short|truncated|beyond the end", str(exc.value)), (cut, exc.value)


def test_reading_never_writes_and_never_maps(tmp_path):
    path = write(tmp_path, craft(SAMPLE))
    os.chmod(path, 0o444)
    before = os.stat(path)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    with bbolt.open_db(path) as db:
        db.dump()
        with open(f"/proc/self/fdinfo/{db._fd}") as fh:
            flags = int(re.search(r"flags:\s*(\d+)", fh.read())[1], 8)
        assert flags & os.O_ACCMODE == os.O_RDONLY
        with open("/proc/self/maps") as fh:
            assert path not in fh.read()
    after = os.stat(path)
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == digest
    assert (before.st_mtime_ns, before.st_ctime_ns, before.st_size) == \
        (after.st_mtime_ns, after.st_ctime_ns, after.st_size)


# -- the real files of a real containerd -------------------------------------------------------
@pytest.fixture(scope="session")
def ctrd(request):
    return env_mod.shared_env(request)


def _meta(ctrd) -> str:
    return os.path.join(ctrd.root, containerd.META_DB)


def _snap(ctrd) -> str:
    return os.path.join(ctrd.root, containerd.OVERLAY_PLUGIN, "metadata.db")


def _shape(db: bbolt.DB) -> dict:
    """How many buckets, keys, inline buckets, branch, leaf and overflow pages the reader met."""
    st = dict(buckets=0, inline=0, keys=0, branch=0, leaf=0, overflow=0)

    def walk(b):
        st["buckets"] += 1
        st["inline"] += b.inline
        for p in b.pages():
            page = db.page(p)
            st["branch" if page.flags == bbolt.BRANCH else "leaf"] += 1
            st["overflow"] += page.overflow > 0
        for _k, v in b.items():
            st["keys"] += 1
            if isinstance(v, bbolt.Bucket):
                walk(v)

    walk(db.root)
    return st


def test_real_files_read_whole(ctrd):
    with bbolt.open_db(_meta(ctrd)) as db:
        shape = _shape(db)
        assert all(m.valid for m in db.metas)  # containerd leaves both meta pages valid
        db.dump()
    # the bulk namespace makes branch pages, the 9 KB environment an overflow page, and
    # containerd's small buckets (labels, runtime, children) are inline
    assert shape["branch"] >= 1 and shape["overflow"] >= 1 and shape["inline"] >= 50, shape
    with bbolt.open_db(_snap(ctrd)) as db:
        shape = _shape(db)
        db.dump()
    assert shape["branch"] >= 1 and shape["inline"] >= 50, shape


def test_get_agrees_with_items_on_real_files(ctrd):
    for path in (_meta(ctrd), _snap(ctrd)):
        with bbolt.open_db(path) as db:
            def check(b):
                items = list(b.items())
                for k, v in items:
                    got = b.get(k)
                    if isinstance(v, bbolt.Bucket):
                        assert isinstance(got, bbolt.Bucket) and got.root_page == v.root_page
                        check(v)
                    else:
                        assert got == v
                    assert b.get(k + b"\x00") is None or (k + b"\x00") in dict(items)
            check(db.root)


def _any_value(raw: bytes) -> tuple[str, bytes]:
    """A protobuf Any: field 1 type_url, field 2 value."""
    out, i = {}, 0
    while i < len(raw):
        tag = raw[i]
        i += 1
        n = bbolt.uvarint(raw[i:i + 10])
        while raw[i] & 0x80:
            i += 1
        i += 1
        out[tag >> 3] = raw[i:i + n]
        i += n
    return out[1].decode(), out.get(2, b"")


def test_meta_db_matches_ctr(ctrd):
    with bbolt.open_db(_meta(ctrd)) as db:
        v1 = db.bucket("v1")
        namespaces = {k.decode() for k, _ in v1.buckets()}
        assert namespaces == set(ctrd.ctr("namespaces", "ls", "-q").split())
        assert bbolt.varint(v1.value("version")) == 3  # containerd 1.6's schema version
        for ns in sorted(namespaces):
            nsb = v1.bucket(ns)
            # containers: every field ctr shows
            cb = nsb.bucket("containers")
            ids = sorted(k.decode() for k, _ in cb.buckets()) if cb else []
            assert ids == sorted(ctrd.ctr("containers", "ls", "-q", ns=ns).split())
            for cid in ids:
                info = json.loads(ctrd.ctr("containers", "info", cid, ns=ns))
                c = cb.bucket(cid)
                assert (c.value("image") or b"").decode() == info["Image"]
                assert (c.value("snapshotKey") or b"").decode() == info["SnapshotKey"]
                assert (c.value("snapshotter") or b"").decode() == info["Snapshotter"]
                assert containerd.go_time(c.value("createdat")) == info["CreatedAt"]
                assert containerd.go_time(c.value("updatedat")) == info["UpdatedAt"]
                assert c.bucket("runtime").value("name").decode() == info["Runtime"]["Name"]
                labels = c.bucket("labels")
                assert {k.decode(): v.decode() for k, v in (labels.items() if labels else ())} == \
                    (info["Labels"] or {})
                type_url, spec = _any_value(c.value("spec"))
                assert type_url.endswith("opencontainers/runtime-spec/1/Spec")
                assert json.loads(spec) == info["Spec"]
            # snapshots: key, parent, and kind (from the snapshotter's own database)
            out = ctrd.ctr("snapshots", "--snapshotter", "overlayfs", "ls", ns=ns).splitlines()[1:]
            listed = {}
            for line in out:
                parts = line.split()
                listed[parts[0]] = (parts[1] if len(parts) == 3 else "", parts[-1])
            sb = nsb.bucket("snapshots")
            ob = sb.bucket("overlayfs") if sb else None
            ours = {}
            with bbolt.open_db(_snap(ctrd)) as sdb:
                backend = sdb.bucket("v1", "snapshots")
                for key, b in (ob.buckets() if ob else ()):
                    kind = backend.bucket(b.value("name")).value("kind")[0]
                    ours[key.decode()] = ((b.value("parent") or b"").decode(),
                                          containerd.KINDS[kind].capitalize())
            assert ours == listed
            for key in ours:
                info = json.loads(ctrd.ctr("snapshots", "--snapshotter", "overlayfs", "info", key, ns=ns))
                b = ob.bucket(key)
                assert containerd.go_time(b.value("createdat")) == info["Created"]
                assert containerd.go_time(b.value("updatedat")) == info["Updated"]
            # images and content blobs
            ib = nsb.bucket("images")
            images = {k.decode(): b.bucket("target").value("digest").decode() for k, b in ib.buckets()} if ib else {}
            listed_images = {}
            for line in ctrd.ctr("images", "ls", ns=ns).splitlines()[1:]:
                parts = line.split()
                listed_images[parts[0]] = parts[2]
            assert images == listed_images
            content = nsb.bucket("content")
            blobs = content.bucket("blob") if content else None
            assert sorted(k.decode() for k, _ in (blobs.buckets() if blobs else ())) == \
                sorted(ctrd.ctr("content", "ls", "-q", ns=ns).split())


def test_snapshotter_db_matches_the_mounts(ctrd):
    """Every active snapshot's id is the directory containerd mounts; v1/parents is consistent."""
    with bbolt.open_db(_snap(ctrd)) as sdb, bbolt.open_db(_meta(ctrd)) as mdb:
        backend = sdb.bucket("v1", "snapshots")
        parents = sdb.bucket("v1", "parents").to_dict()
        by_name = {k.decode(): b for k, b in backend.buckets()}
        ids = {}
        for name, b in by_name.items():
            ids[name] = bbolt.uvarint(b.value("id"))
            assert b.value("kind")[0] in containerd.KINDS
        assert len(set(ids.values())) == len(ids)
        assert sorted(os.listdir(os.path.join(ctrd.root, containerd.OVERLAY_PLUGIN, "snapshots"))) == \
            sorted(str(i) for i in ids.values())
        for name, b in by_name.items():
            parent = b.value("parent")
            if parent:
                pkey = _uv(ids[parent.decode()]) + b"\x00" + _uv(ids[name])
                assert parents[pkey] == name.encode()
        assert len(parents) == sum(1 for b in by_name.values() if b.value("parent"))
        for ns, nsb in mdb.bucket("v1").buckets():
            ob = nsb.bucket("snapshots")
            ob = ob.bucket("overlayfs") if ob else None
            for key, b in (ob.buckets() if ob else ()):
                name = b.value("name").decode()
                assert name.startswith(f"{ns.decode()}/") and name.endswith("/" + key.decode())
                if by_name[name].value("kind")[0] == 2:
                    upper, lowers = env_mod.snapshot_mount(ctrd, ns.decode(), key.decode())
                    base = os.path.join(ctrd.root, containerd.OVERLAY_PLUGIN, "snapshots")
                    assert upper == f"{base}/{ids[name]}/fs"
                    chain, cur = [], by_name[name].value("parent")
                    while cur:
                        chain.append(f"{base}/{ids[cur.decode()]}/fs")
                        cur = by_name[cur.decode()].value("parent")
                    assert lowers == chain


def _reached_pages(db: bbolt.DB) -> set[int]:
    """Every page the current tree uses (overflow runs included)."""
    out: set[int] = set()

    def walk(b):
        for p in b.pages():
            out.update(range(p, p + db.page(p).overflow + 1))
        for _k, v in b.items():
            if isinstance(v, bbolt.Bucket):
                walk(v)

    walk(db.root)
    return out


def _uv(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def test_damaged_real_copies_never_raise_anything_else(ctrd, tmp_path):
    """Truncations at every page boundary and random corruption of real files: data or a
    BoltError naming the file, nothing else; find() turns each into Broken records."""
    farm = tmp_path / "farm"
    subprocess.run(["cp", "-al", ctrd.root, str(farm)], check=True)
    rng = random.Random(20261128)
    for rel in (containerd.META_DB, containerd.OVERLAY_PLUGIN + "/metadata.db"):
        target = farm / rel
        clean = target.read_bytes()
        target.unlink()  # the farm's copy only, never the real file
        with bbolt.open_db(os.path.join(ctrd.root, rel)) as db:
            used = db.meta.pgid
            reached = _reached_pages(db)
        # a truncation that cuts a page the current tree reaches must fail; freed pages may go
        cuts = list(range(0, used * 4096 + 1, 4096)) + [rng.randrange(len(clean)) for _ in range(20)]
        variants = [(clean[:cut], any((p + 1) * 4096 > cut for p in reached)) for cut in cuts]
        for _ in range(100):
            d = bytearray(clean)
            pgid = rng.randrange(2, used)
            n = rng.choice((1, 8, 64))
            off = pgid * 4096 + rng.randrange(4096 - n)
            d[off:off + n] = os.urandom(n)
            variants.append((bytes(d), None))
        for n, (data, must_fail) in enumerate(variants):
            target.write_bytes(data)
            try:
                with bbolt.open_db(str(target)) as db:
                    db.dump()
                failed = False
            except BoltError as exc:
                failed = True
                assert str(exc).startswith(str(target) + ": ")
            if must_fail is not None:
                assert failed == must_fail, (rel, len(data))
            if n % 3 == 0:  # and the engine reader turns it into records, never an exception
                items = list(containerd.find(Root("/"), data_root=str(farm)))
                assert all(isinstance(i, (Container, Broken)) for i in items)
        target.unlink()
        shutil.copyfile(os.path.join(ctrd.root, rel), target)
