"""The Podman / CRI-O reader against real podman stores (rootful, rootless, fuse-overlayfs).

One session builds the stores with real podman (hermetic: see tests/engine_podman.py): an image
imported from a busybox rootfs, a multi-layer image built from it with RUN steps that delete and
recreate, and containers with known changes. The reader's stacks are held against
``podman inspect``, ``ovforensics.scan`` over them against ``podman diff``, and copies of the
stores (evidence under another root, damaged files, crafted escapes) against both.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest

import ovforensics
from ovforensics.stores import podman as reader
from ovforensics.stores.base import Broken, Container
from ovforensics.evidence.rootfs import Root

from conftest import _overlay_works, need, need_container_runtime
from engine_podman import Podman, account, copy_tree, host_traces, make_rootfs, missing, remove_traces

FILES = {
    "/etc/hostname0": b"hello\n",
    "/data/f2": b"y\n",
    "/data/sub/f1": b"x\n",
    "/data/deep/x/y": b"deep\n",
    "/data/same": b"same\n",
    "/data/chm": b"chm\n",
    "/data/mvme": b"mv\n",
    "/data/mvdir/inner": b"inner\n",
    "/data/keep": b"keep\n",
}

CONTAINERFILE = """FROM localhost/ovf-test/busybox:1
RUN mkdir -p /opt/app/sub && echo v1 > /opt/app/conf && echo s > /opt/app/sub/s && rm /data/f2
RUN rm -rf /data/sub && echo v2 > /opt/app/conf && mkdir /data/sub && echo new > /data/sub/n
"""

NL_NAME = "/data/nl\nname"

#: c1: writes, deletes, rm -rf + recreate (opaque), chmod, a chmod that changes nothing, mv of a
#: file and of a directory (EXDEV without redirect_dir: copied, then deleted), a newline in a name
C1 = ("echo new > /new && rm /data/f2 && rm -rf /data/sub && mkdir /data/sub && echo z > /data/sub/g"
      " && rm -rf /data/deep && chmod 600 /data/chm && chmod 644 /data/same"
      " && mv /data/mvme /data/moved && mv /data/mvdir /data/mvdir2"
      f" && printf odd > '{NL_NAME}'")
#: c2, on the built image: over a layer with a 0/0 whiteout and an opaque dir of its own
C2 = ("echo v3 > /opt/app/conf && mv /opt/app/sub /opt/app/sub2 && rm -rf /opt/app/sub2"
      " && mkdir /opt/app/sub && chmod 700 /opt && rm /data/sub/n && echo x > /bin/extra"
      " && mv /etc/hostname0 /etc/hn && ln -s /etc/hn /lnk && mkfifo /fifo")
STUBS = {"/dev", "/etc/hostname", "/etc/hosts", "/etc/mtab", "/proc", "/run", "/run/.containerenv", "/sys"}

#: what podman diff and our records disagree on, each for a reason the contract states
EXPECTED = {
    "c1": {
        "init-inode": STUBS,
        "C-parent": {"/data", "/etc"},
        "C-copy-up": {"/data/same"},
        "D-opaque": {"/data/sub"},
        "opaque-hidden": {"/data/sub/f1"},
        "below-deleted": {"/data/deep/x", "/data/deep/x/y", "/data/mvdir/inner"},
    },
    "c2": {
        # /dev, /etc/hostname, /proc, /run, /sys: buildah left them in the built layers already
        "init-inode": STUBS - {"/dev", "/etc/hostname", "/proc", "/run", "/sys"},
        "C-parent": {"/bin", "/data", "/data/sub", "/etc", "/opt/app"},
        "D-opaque": {"/opt/app/sub"},
        "opaque-hidden": {"/opt/app/sub/s"},
    },
    "c3": {},  # created, never started: an empty upper
    "c4": {"init-inode": STUBS, "C-parent": {"/etc"}},  # running: /alive added
}


def _require_podman():
    ok, why = _overlay_works()
    need(ok, why)
    why = missing()
    need(why is None, why or "")


@pytest.fixture(scope="session")
def top():
    """A scratch dir every user can traverse (the rootless podman runs as nobody)."""
    path = Path(tempfile.mkdtemp(prefix="ovf-pm-", dir="/tmp"))
    path.chmod(0o755)
    traces = host_traces()
    yield path
    shutil.rmtree(path, ignore_errors=True)
    remove_traces(traces)


@pytest.fixture(scope="session")
def tarball(top):
    _require_podman()
    need_container_runtime()
    return make_rootfs(top / "src", FILES)


@pytest.fixture(scope="session")
def world(top, tarball):
    """Rootful store: images busybox:1 (imported) and multi:1 (built), containers c1..c4."""
    pm = Podman(top / "rootful")
    try:
        pm("import", str(tarball), "ovf-test/busybox:1")
        ctx = top / "ctx"
        ctx.mkdir()
        (ctx / "Containerfile").write_text(CONTAINERFILE)
        pm("build", "--network", "none", "-t", "ovf-test/multi:1", str(ctx))
        pm.run("c1", "ovf-test/busybox:1", C1)
        pm.run("c2", "ovf-test/multi:1", C2)
        pm.create("c3", "ovf-test/busybox:1")
        pm.run("c4", "ovf-test/busybox:1", "echo hi > /alive && exec sleep 600", detach=True)
        pm.info = {name: pm.inspect(name) for name in ("c1", "c2", "c3", "c4")}
        pm.wait_for(Path(pm.info["c4"]["GraphDriver"]["Data"]["UpperDir"]) / "alive")
        pm.info["c4"] = pm.inspect("c4")
        pm.diffs = {name: pm.diff(name) for name in pm.info}
        pm.refused = pm("run", "--name", "bad\nname", "--network", "none", "ovf-test/busybox:1", "true",
                        check=False)
        yield pm
    finally:
        pm.cleanup()


@pytest.fixture(scope="session")
def rootless(top, tarball):
    """Rootless store of user nobody (native overlay with userxattr), container r1 as c1."""
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        need(False, "no user 'nobody' for rootless podman")
    pm = Podman(top / "rootless", user=(nobody.pw_uid, nobody.pw_gid))
    try:
        pm("import", str(tarball), "ovf-test/busybox:1")
        pm.run("r1", "ovf-test/busybox:1", C1)
        pm.info = {"r1": pm.inspect("r1")}
        pm.diffs = {"r1": pm.diff("r1")}
        yield pm
    finally:
        pm.cleanup()


@pytest.fixture(scope="session")
def fuse(top, tarball):
    """Rootful store written through fuse-overlayfs (mount_program given on the command line)."""
    program = shutil.which("fuse-overlayfs")
    need(program is not None and os.path.exists("/dev/fuse"),
         "fuse-overlayfs is not installed (apt-get install fuse-overlayfs)")
    pm = Podman(top / "fuse", mount_program=program)
    try:
        pm("import", str(tarball), "ovf-test/busybox:1")
        pm.run("f1", "ovf-test/busybox:1", "rm -rf /data/sub && mkdir /data/sub && rm /data/f2")
        pm.info = {"f1": pm.inspect("f1")}
        yield pm
    finally:
        pm.cleanup()


def _split(results):
    containers = {c.names[0]: c for c in results if isinstance(c, Container)}
    broken = [b for b in results if isinstance(b, Broken)]
    return containers, broken


def _stack(info) -> tuple[str, list[str]]:
    data = info["GraphDriver"]["Data"]
    return data["UpperDir"], data["LowerDir"].split(":") if data.get("LowerDir") else []


def _scan(c: Container, **kw):
    return list(ovforensics.scan(c.upper.dir, [l.dir for l in c.lowers], **kw))


def _records(changes):
    return [(ch.path, ch.change, ch.via, ch.what, ch.type) for ch in changes]


def _layers_json(storage: Path) -> dict:
    return {e["id"]: e for e in json.loads((storage / "overlay-layers/layers.json").read_text())}


# -- 1. stacks, names, images, states as podman inspect has them ---------------------------------------

def test_find_matches_podman_inspect(world):
    containers, broken = _split(list(reader.find(Root("/"), data_root=str(world.storage))))
    assert broken == []
    assert sorted(containers) == ["c1", "c2", "c3", "c4"]
    layers = _layers_json(world.storage)
    stored = {e["id"]: e for e in
              json.loads((world.storage / "overlay-containers/containers.json").read_text())}
    for name, c in containers.items():
        info = world.info[name]
        upper, lowers = _stack(info)
        assert (c.engine, c.id, c.names) == ("podman", info["Id"], [name])
        assert c.image == info["ImageName"]
        assert c.state == info["State"]["Status"]
        assert c.store == str(world.storage)
        assert c.upper.dir == upper and c.upper.role == "upper"
        assert [l.dir for l in c.lowers] == lowers
        assert (c.whiteouts, c.xattr_ns) == ("kernel", "auto")
        assert c.created == stored[c.id]["created"]
        for layer in [c.upper, *c.lowers]:
            assert layer.dir == str(world.storage / "overlay" / layer.id / "diff")
            assert layer.link == (world.storage / "overlay" / layer.id / "link").read_text().strip()
            assert layer.diff_id == layers[layer.id].get("diff-digest")
        assert [l.role for l in c.lowers] == ["image"] * len(c.lowers)
        assert [l.image_index for l in c.lowers] == list(range(len(c.lowers) - 1, -1, -1))
        # the stack is layers.json's parent chain (inspect's LowerDir is overlay/<id>/lower's reading)
        assert [l.id for l in c.lowers][:1] == [layers[c.upper.id]["parent"]]
    assert [c.state for c in (containers["c1"], containers["c3"], containers["c4"])] == \
        ["exited", "created", "running"]
    assert len(containers["c2"].lowers) == 3 and len(containers["c1"].lowers) == 1
    assert containers["c2"].lowers[2].id == containers["c1"].lowers[0].id  # the shared base layer
    base = containers["c1"].lowers[0]
    assert base.chain_id == base.diff_id  # OCI: the bottom layer's chain id is its diff id
    assert containers["c2"].lowers[0].chain_id.startswith("sha256:")
    # podman refuses names that are not [a-zA-Z0-9][a-zA-Z0-9_.-]*: no newline ever reaches its store
    assert world.refused.returncode != 0 and "names must match" in world.refused.stderr


# -- 2. ovforensics.scan over those stacks vs podman diff -------------------------------------------

def test_scan_accounts_for_podman_diff(world):
    containers, _ = _split(list(reader.find(Root("/"), data_root=str(world.storage))))
    for name, c in containers.items():
        changes = _scan(c)
        explained = account(world.diffs[name], changes, c.upper.dir)
        assert explained == EXPECTED[name], name
    by_path = {ch.path: ch for ch in _scan(containers["c1"])}
    assert (by_path[b"/data/sub/f1"].change, by_path[b"/data/sub/f1"].via) == ("deleted", "opaque")
    assert (by_path[b"/data/deep/x/y"].change, by_path[b"/data/deep/x/y"].via) == ("deleted", "parent")
    assert (by_path[b"/data/chm"].change, by_path[b"/data/chm"].what) == ("modified", ("mode",))
    assert b"/data/same" not in by_path  # copied up, nothing different
    assert by_path[NL_NAME.encode()].change == "added"
    assert by_path[b"/data/f2"].lower_layer.dir == containers["c1"].lowers[0].dir
    c2 = {ch.path: ch for ch in _scan(containers["c2"])}
    # the built layers' own markers are honoured: /data/f2 (0/0 in layer 1) is gone for good,
    # /data/sub/n comes from layer 2 (its opaque /data/sub hid layer 0's f1)
    assert b"/data/f2" not in c2 and b"/data/sub/f1" not in c2
    assert c2[b"/data/sub/n"].lower_layer.index == 0
    assert c2[b"/opt/app/conf"].what[0] == "content"


# -- 3. the same store as evidence under another root -----------------------------------------------

@pytest.fixture(scope="session")
def evidence(world, top):
    ev = top / "evidence"
    copy_tree(world.storage, ev / "var/lib/containers/storage")
    return ev


def test_evidence_root_gives_same_containers_and_scan(world, evidence):
    live, _ = _split(list(reader.find(Root("/"), data_root=str(world.storage))))
    found, broken = _split(list(reader.find(Root(str(evidence)))))
    assert broken == []
    assert sorted(found) == sorted(live)
    store = evidence / "var/lib/containers/storage"
    for name, c in found.items():
        ref = live[name]
        assert (c.id, c.image, c.state, c.created) == (ref.id, ref.image, ref.state, ref.created)
        assert c.store == str(store)
        for mine, theirs in zip([c.upper, *c.lowers], [ref.upper, *ref.lowers], strict=True):
            assert mine.dir == str(store / os.path.relpath(theirs.dir, world.storage))
            assert (mine.id, mine.diff_id, mine.link, mine.image_index) == \
                (theirs.id, theirs.diff_id, theirs.link, theirs.image_index)
        assert _records(_scan(c)) == _records(_scan(ref))
    # the same store given as data_root (an evidence path inside the root)
    again, _ = _split(list(reader.find(Root(str(evidence)), data_root="/var/lib/containers/storage")))
    assert {n: c.upper.dir for n, c in again.items()} == {n: c.upper.dir for n, c in found.items()}


def _copy(world, tmp_path) -> tuple[Path, Path]:
    ev = tmp_path / "ev"
    store = ev / "var/lib/containers/storage"
    copy_tree(world.storage, store)
    return ev, store


def _outside(ev: Path, results) -> list[str]:
    """Dirs of listed containers that are not under the evidence root."""
    return [d for c in results if isinstance(c, Container)
            for d in [c.upper.dir, *(l.dir for l in c.lowers)] if not d.startswith(str(ev) + "/")]


@pytest.mark.parametrize("target", ["../../../../../../etc", "../../../../../../../../../../etc", "/etc"])
def test_crafted_l_link_is_refused(world, tmp_path, target):
    """An l/ link of c2's top image layer pointed at /etc: c2 is Broken, never /etc of the host."""
    ev, store = _copy(world, tmp_path)
    c2_top = world.info["c2"]["GraphDriver"]["Data"]["LowerDir"].split(":")[0]
    short = (Path(c2_top).parent / "link").read_text().strip()
    link = store / "overlay/l" / short
    link.unlink()
    os.symlink(target, link)
    (ev / "etc").mkdir()  # the evidence's own /etc: exactly where the first and last targets land
    results = list(reader.find(Root(str(ev))))
    containers, broken = _split(results)
    assert sorted(containers) == ["c1", "c3", "c4"]
    assert len(broken) == 1 and broken[0].where == str(link), broken
    assert "c2" in broken[0].why
    assert _outside(ev, results) == []


def test_live_root_link_onto_host_etc_is_refused(world, tmp_path):
    """With Root("/") the same link reaches the host's /etc, which is inside that root: still refused
    (it is no layer's diff dir), and nothing is listed there."""
    store = tmp_path / "store"
    copy_tree(world.storage, store)
    c2_top = world.info["c2"]["GraphDriver"]["Data"]["LowerDir"].split(":")[0]
    short = (Path(c2_top).parent / "link").read_text().strip()
    link = store / "overlay/l" / short
    link.unlink()
    os.symlink("../" * len(link.parent.parts[1:]) + "etc", link)
    assert os.path.realpath(link) == "/etc"
    results = list(reader.find(Root("/"), data_root=str(store)))
    containers, broken = _split(results)
    assert sorted(containers) == ["c1", "c3", "c4"]
    assert [b.where for b in broken] == [str(link)]
    assert "leads to /etc," in broken[0].why
    assert all(not d.startswith("/etc")
               for c in containers.values() for d in [c.upper.dir, *(l.dir for l in c.lowers)])


def test_crafted_lower_file_is_refused(world, tmp_path):
    ev, store = _copy(world, tmp_path)
    upper_id = Path(world.info["c2"]["GraphDriver"]["Data"]["UpperDir"]).parent.name
    lower = store / "overlay" / upper_id / "lower"
    lower.write_text("l/../../../etc")
    containers, broken = _split(list(reader.find(Root(str(ev)))))
    assert sorted(containers) == ["c1", "c3", "c4"]
    assert [(b.where, "l/../../../etc" in b.why) for b in broken] == [(str(lower), True)]


def test_crafted_layer_id_is_refused(world, tmp_path):
    """A layer id in containers.json that is a path: never joined onto the store."""
    ev, store = _copy(world, tmp_path)
    path = store / "overlay-containers/containers.json"
    entries = json.loads(path.read_text())
    for e in entries:
        if e["names"] == ["c3"]:
            e["layer"] = "../../../../../../etc"
    path.write_text(json.dumps(entries))
    containers, broken = _split(list(reader.find(Root(str(ev)))))
    assert sorted(containers) == ["c1", "c2", "c4"]
    assert len(broken) == 1 and broken[0].where == str(path) and "c3" in broken[0].why


# -- 4. damaged store files ----------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "garbage", "not-a-list"])
def test_damaged_containers_json_is_broken_for_the_store(world, tmp_path, damage):
    ev, store = _copy(world, tmp_path)
    path = store / "overlay-containers/containers.json"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(300) + b"\xff",
                      "not-a-list": b'{"id": "x"}'}[damage])
    results = list(reader.find(Root(str(ev))))
    assert len(results) == 1 and isinstance(results[0], Broken)
    assert results[0].where == str(path) and results[0].engine == "podman"


def test_bad_container_entries_are_broken_others_listed(world, tmp_path):
    ev, store = _copy(world, tmp_path)
    path = store / "overlay-containers/containers.json"
    entries = json.loads(path.read_text())
    ids = {e["names"][0]: e["id"] for e in entries}
    for e in entries:
        if e["names"] == ["c3"]:
            e["layer"] = 42
        if e["names"] == ["c1"]:
            e["names"] = ["c1\nwith newline"]  # podman would refuse it; the reader passes it on
    entries += [17, {"id": "f" * 64, "names": ["ghost"], "layer": "0" * 64}, {"names": ["no-id"]}]
    path.write_text(json.dumps(entries))
    containers, broken = _split(list(reader.find(Root(str(ev)))))
    assert sorted(containers) == ["c1\nwith newline", "c2", "c4"]
    assert containers["c1\nwith newline"].id == ids["c1"]
    assert len(broken) == 4
    assert {b.where for b in broken} == {str(path), str(store / "overlay" / ("0" * 64) / "diff")}
    whys = " | ".join(b.why for b in broken)
    assert ids["c3"][:12] in whys and "ghost" in whys and "entry" in whys and "no id" in whys


def test_damaged_layers_json_falls_back_to_lower_files(world, tmp_path):
    ev, store = _copy(world, tmp_path)
    path = store / "overlay-layers/layers.json"
    path.write_bytes(path.read_bytes()[:100])
    ref, _ = _split(list(reader.find(Root(str(ev)), data_root="/var/lib/containers/storage")))
    results = list(reader.find(Root(str(ev))))
    containers, broken = _split(results)
    assert [b.where for b in broken] == [str(path)]
    assert sorted(containers) == ["c1", "c2", "c3", "c4"]
    for name, c in containers.items():
        upper, lowers = _stack(world.info[name])
        assert os.path.relpath(c.upper.dir, store) == os.path.relpath(upper, world.storage)
        assert [os.path.relpath(l.dir, store) for l in c.lowers] == \
            [os.path.relpath(l, world.storage) for l in lowers]
        assert [l.id for l in c.lowers] == [Path(l).parent.name for l in lowers]
        assert all(l.diff_id is None for l in c.lowers)


def test_damaged_images_json_and_state_db(world, tmp_path):
    ev, store = _copy(world, tmp_path)
    (store / "overlay-images/images.json").write_text("[{")
    db = store / "libpod/bolt_state.db"
    db.write_bytes(b"\0" * 8192)
    containers, broken = _split(list(reader.find(Root(str(ev)))))
    assert sorted(b.where for b in broken) == sorted([str(db), str(store / "overlay-images/images.json")])
    assert sorted(containers) == ["c1", "c2", "c3", "c4"]
    for name, c in containers.items():
        assert c.image == world.info[name]["ImageName"]  # from the container's own metadata
        assert c.state is None


def test_storage_conf_graphroot_and_damage(world, tmp_path):
    ev = tmp_path / "ev"
    copy_tree(world.storage, ev / "srv/pods")
    conf = ev / "etc/containers/storage.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text('[storage]\ndriver = "overlay"\ngraphroot = "/srv/pods"\n')
    containers, broken = _split(list(reader.find(Root(str(ev)))))
    assert broken == [] and sorted(containers) == ["c1", "c2", "c3", "c4"]
    assert containers["c1"].store == str(ev / "srv/pods")
    conf.write_text("[storage\ngraphroot = ")  # damaged: reported, the default store still read
    copy_tree(world.storage, ev / "var/lib/containers/storage")
    containers, broken = _split(list(reader.find(Root(str(ev)))))
    assert [b.where for b in broken] == [str(conf)]
    assert containers["c1"].store == str(ev / "var/lib/containers/storage")


def test_sqlite_state_db(world, tmp_path):
    """libpod's db.sql (Podman 5's default; at the graph root, or in libpod/): the state is its
    ContainerState JSON (the State column is stale); read read-only. Where bolt_state.db is
    there too, Podman itself uses bolt (hosts upgraded from 4), so bolt wins."""
    ev, store = _copy(world, tmp_path)
    db = store / "db.sql"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE ContainerState(ID TEXT PRIMARY KEY NOT NULL, State INTEGER NOT NULL, "
                "ExitCode INTEGER, JSON TEXT NOT NULL)")
    con.execute("INSERT INTO ContainerState VALUES (?, 1, 0, ?)",  # State 1: stale, as Podman 5 leaves it
                (world.info["c1"]["Id"], '{"state": 5, "exitCode": 7, "finishedTime": "2026-01-02T03:04:05Z"}'))
    con.commit()
    con.close()
    before = db.read_bytes()
    containers, broken = _split(list(reader.find(Root(str(ev)))))
    assert broken == []
    assert [containers[n].state for n in ("c1", "c3", "c4")] == [world.info["c1"]["State"]["Status"], "created", "running"]
    assert db.read_bytes() == before  # and no -wal, -shm or journal appeared beside it
    assert sorted(p.name for p in store.iterdir() if p.name.startswith("db.sql")) == ["db.sql"]
    (store / "libpod/bolt_state.db").unlink()  # a Podman 5 store: db.sql alone
    containers, broken = _split(list(reader.find(Root(str(ev)))))
    c1 = containers["c1"]
    assert (c1.state, c1.exit_code, c1.finished) == ("paused", 7, "2026-01-02T03:04:05Z")
    assert containers["c3"].state is None and "not in libpod's database" in containers["c3"].state_note


def test_no_store_is_silent(tmp_path):
    assert list(reader.find(Root(str(tmp_path)))) == []
    assert list(reader.find(Root(str(tmp_path)), data_root="/nowhere")) == []


# -- rootless and fuse-overlayfs stores -----------------------------------------------------------------

def test_rootless_store(rootless, tmp_path):
    containers, broken = _split(list(reader.find(Root("/"), data_root=str(rootless.storage))))
    assert broken == [] and sorted(containers) == ["r1"]
    c = containers["r1"]
    upper, lowers = _stack(rootless.info["r1"])
    assert (c.upper.dir, [l.dir for l in c.lowers]) == (upper, lowers)
    assert (c.xattr_ns, c.whiteouts, c.state) == ("user", "kernel", "exited")
    # the kernel wrote user.overlay.* here (mounted with userxattr), and podman diff agrees with
    # our reading of them exactly as for the rootful c1 (same changes, same explanations)
    changes = _scan(c, xattr_ns=c.xattr_ns)
    assert account(rootless.diffs["r1"], changes, c.upper.dir) == EXPECTED["c1"]
    assert os.getxattr(os.path.join(c.upper.dir, "data/sub"), "user.overlay.opaque") == b"y"
    # read as a rootful store's, the opaque dir would go unseen: why xattr_ns matters
    assert b"/data/sub/f1" not in {ch.path for ch in _scan(c, xattr_ns="trusted")}
    # as evidence: the user's home from /etc/passwd, the user's own storage.conf
    ev = tmp_path / "ev"
    copy_tree(rootless.home, ev / "home/alice")
    (ev / "etc").mkdir()
    (ev / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                   f"alice:x:{rootless.user[0]}:{rootless.user[1]}::/home/alice:/bin/sh\n")
    found, broken = _split(list(reader.find(Root(str(ev)))))
    assert broken == [] and sorted(found) == ["r1"]
    assert found["r1"].xattr_ns == "user"
    assert found["r1"].store == str(ev / "home/alice/.local/share/containers/storage")
    assert _records(_scan(found["r1"], xattr_ns="user")) == _records(changes)


def test_fuse_overlayfs_store(fuse, tmp_path):
    containers, broken = _split(list(reader.find(Root("/"), data_root=str(fuse.storage))))
    assert broken == [] and sorted(containers) == ["f1"]
    c = containers["f1"]
    upper, lowers = _stack(fuse.info["f1"])
    assert (c.upper.dir, [l.dir for l in c.lowers]) == (upper, lowers)
    assert (fuse.storage / "overlay/.has-mount-program").read_text() == "true"
    assert c.whiteouts == "fuse"  # from the store's own record: no storage.conf says so here
    deleted = {ch.path: ch.via for ch in _scan(c, whiteouts=c.whiteouts) if ch.change == "deleted"}
    assert deleted == {b"/data/f2": "whiteout", b"/data/sub/f1": "opaque"}


def test_mount_program_in_storage_conf_means_fuse(world, tmp_path):
    ev, store = _copy(world, tmp_path)
    assert (store / "overlay/.has-mount-program").read_text() == "false"
    conf = ev / "etc/containers/storage.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text('[storage]\ndriver = "overlay"\n[storage.options.overlay]\n'
                    'mount_program = "/usr/bin/fuse-overlayfs"\n')
    containers, _ = _split(list(reader.find(Root(str(ev)))))
    assert {c.whiteouts for c in containers.values()} == {"fuse"}


def test_store_file_link_leaving_the_root_is_refused(world, tmp_path):
    ev, store = _copy(world, tmp_path)
    path = store / "overlay-containers/containers.json"
    path.unlink()
    os.symlink("../../../../../../../../../../etc/passwd", path)
    results = list(reader.find(Root(str(ev))))
    assert len(results) == 1 and isinstance(results[0], Broken)
    assert results[0].where == str(path) and "refused" in results[0].why


def test_rootless_storage_path_and_volatile_containers(world, tmp_path):
    """A user's store where the system storage.conf's rootless_storage_path puts it, with one
    container kept in volatile-containers.json (podman's --rm / transient containers)."""
    ev = tmp_path / "ev"
    store = ev / "home/bob/pods"
    copy_tree(world.storage, store)
    (ev / "etc/containers").mkdir(parents=True)
    (ev / "etc/containers/storage.conf").write_text(
        '[storage]\ndriver = "overlay"\nrootless_storage_path = "$HOME/pods"\n')
    (ev / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n")
    path = store / "overlay-containers/containers.json"
    entries = json.loads(path.read_text())
    volatile = [e for e in entries if e["names"] == ["c3"]]
    path.write_text(json.dumps([e for e in entries if e["names"] != ["c3"]]))
    (store / "overlay-containers/volatile-containers.json").write_text(json.dumps(volatile))
    containers, broken = _split(list(reader.find(Root(str(ev)))))
    assert broken == [] and sorted(containers) == ["c1", "c2", "c3", "c4"]
    assert {c.store for c in containers.values()} == {str(store)}
    assert {c.xattr_ns for c in containers.values()} == {"user"}  # bob's store: rootless


# -- -f docker: what podman diff prints ------------------------------------------------------------

def test_docker_format_prints_what_podman_diff_prints(world):
    """``diff -f docker`` on a Podman container against ``podman diff``: podman's own files
    (/etc/hosts, /run/.containerenv ...) left out as it leaves them out, one D for a deleted
    directory, a C for the parent of each A and D. Left, where podman is wrong: its C for a file
    copied up unchanged, its D for a directory made opaque (the directory is there), and the
    files an opaque directory hid (ours lists them, D)."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("c1", "c2", "c4"):
        proc = subprocess.run([sys.executable, "-m", "ovforensics", "diff", name, "--engine",
                               "podman", "--data-root", str(world.storage), "-f", "docker"],
                              capture_output=True, text=True, cwd=root)
        assert proc.returncode == 0, proc.stderr
        ours = {}
        for line in proc.stdout.splitlines():
            kind, _, path = line.partition(" ")
            ours[path.replace("\\n", "\n")] = kind
        theirs = world.diffs[name]
        want = EXPECTED[name]
        assert not set(ours) & STUBS, name  # podman's own files, left out
        extra = {p for p, k in ours.items() if theirs.get(p) != k}
        assert extra <= want.get("opaque-hidden", set()) | want.get("D-opaque", set()), (name, extra)
        missing = {p for p, k in theirs.items() if ours.get(p) != k}
        noise = {p for p in missing if theirs[p] == "C" and any(q.startswith(p + "/") for q in ours)}
        assert missing - noise <= want.get("C-copy-up", set()) | want.get("D-opaque", set()), \
            (name, missing - noise)
        assert not any(p.startswith(d + "/") for d in want.get("below-deleted", set()) for p in ours)
