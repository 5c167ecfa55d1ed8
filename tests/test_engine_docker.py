"""The Docker engine reader against a real, hermetic dockerd (overlay2).

One dockerd per session (own data root, exec root, socket; stopped by its pid file) builds a
one-layer busybox image and a multi-layer image whose own layers hold whiteouts and an opaque
directory, and runs containers that write, delete, rm -rf and recreate, chmod, rename, swap a
directory for a symlink, and make odd names. Then:

1. ``find()`` on the live data root gives what ``docker inspect`` gives (names, image, state,
   UpperDir, LowerDir), with the ids layerdb holds;
2. ``ovforensics.scan`` over that stack accounts for every line of ``docker diff``, and every
   record is either in ``docker diff`` or explained (pinned below);
3. a ``cp -a`` copy of the data root, read as evidence under ``Root(copy)``, gives the same
   containers and the same records, every directory inside the copy; hand-made ``l/`` links and
   ``lower`` entries that point out of the store are refused;
4. damaged stores give ``Broken`` records named by file, and the other containers still list.
"""
from __future__ import annotations

import hashlib
import base64
import json
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import engine_docker as ed  # noqa: E402
from conftest import need, need_container_runtime, need_loop_mount  # noqa: E402

import ovforensics  # noqa: E402
from ovforensics.stores import docker  # noqa: E402
from ovforensics.stores.base import Broken, Container, StoreError  # noqa: E402
from ovforensics.evidence.rootfs import Root  # noqa: E402

BUSYBOX, MULTI = "ovf-test/busybox:1", "ovf-test/multi:1"
ODD = "/odd\nname"

#: name -> (image, script, expected exit status); c3 is only created, c4 keeps running
SCRIPTS = {
    "c1": (MULTI, f"""
        echo new > /new.txt
        rm /data/a
        rm -rf /data/sub && mkdir /data/sub && echo c > /data/sub/c
        chmod 600 /opt/app/keep
        mv /tmp.txt /moved.txt
        echo x > "{ODD}"
        echo y > "$(printf '/bad\\377name')"
        mkdir -p /deep/er/est
        rm -rf /opt/app/lib
        mv /srv/tree /srv/moved
        echo again > /etc/motd
        """, 0),
    "c2": (BUSYBOX, "echo bye > /bye; exit 3", 3),
    "c5": (BUSYBOX, """
        rm -rf /data && ln -s /etc /data
        mkfifo /fifo
        touch /etc/issue
        ln /etc/issue /hard
        """, 0),
}
NAMES = ("c1", "c2", "c3", "c4", "c5")

#: what ``account`` must explain for each container, exactly (docker diff's known blind spots)
EXPLAINED = {
    "c1": [
        "C '/data': docker's parent-directory noise (a change below it)",
        "C '/data/sub': docker's parent-directory noise (a change below it)",
        "C '/etc': docker's parent-directory noise (a change below it)",
        "C '/opt': docker's parent-directory noise (a change below it)",
        "C '/opt/app': docker's parent-directory noise (a change below it)",
        "C '/srv': docker's parent-directory noise (a change below it)",
        "deleted '/opt/app/lib/y' (via parent): below D '/opt/app/lib'; docker lists a deleted "
        "directory alone",
        "deleted '/srv/tree/1' (via parent): below D '/srv/tree'; docker lists a deleted "
        "directory alone",
        "deleted '/srv/tree/1/f' (via parent): below D '/srv/tree'; docker lists a deleted "
        "directory alone",
        "deleted '/srv/tree/2' (via parent): below D '/srv/tree'; docker lists a deleted "
        "directory alone",
        "deleted '/srv/tree/2/g' (via parent): below D '/srv/tree'; docker lists a deleted "
        "directory alone",
    ],
    "c2": [],
    "c3": [],
    "c4": [],
    "c5": [
        "C '/etc': docker's parent-directory noise (a change below it)",
        "deleted '/data/a' (via type-change): below C '/data', a directory replaced by a "
        "symlink; docker does not list what it hid",
        "deleted '/data/sub' (via type-change): below C '/data', a directory replaced by a "
        "symlink; docker does not list what it hid",
        "deleted '/data/sub/b' (via parent): below C '/data', a directory replaced by a "
        "symlink; docker does not list what it hid",
    ],
}


# -- the daemon --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def dockerd(tmp_path_factory):
    why = ed.missing()
    need(why is None, why or "")
    need_container_runtime()
    base = tmp_path_factory.mktemp("dockerd")
    daemon = ed.DockerD(base)
    try:
        error = daemon.start()
        need(error is None, f"dockerd does not come up here: {error}")
        rootfs = ed.busybox_rootfs(base / "rootfs")
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True)
        daemon.cli("import", "-", BUSYBOX, input=tar.stdout)
        ctx = base / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(ed.DOCKERFILE)
        daemon.cli("build", "--network", "none", "-t", MULTI, str(ctx))
        for name, (image, script, status) in SCRIPTS.items():
            proc = daemon.cli("run", "--name", name, "--network", "none", image, "sh", "-c", script,
                              check=False)
            assert proc.returncode == status, (name, proc.stderr)
        daemon.cli("create", "--name", "c3", "--network", "none", BUSYBOX, "true")
        daemon.cli("run", "-d", "--name", "c4", "--network", "none", BUSYBOX, "sh", "-c",
                   "echo r > /r; exec sleep 1000")
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(base, ignore_errors=True)


def _containers(items) -> dict[str, Container]:
    return {c.names[0]: c for c in items if isinstance(c, Container)}


def _broken(items) -> list[Broken]:
    return [b for b in items if isinstance(b, Broken)]


@pytest.fixture(scope="session")
def live(dockerd):
    items = list(docker.find(Root("/"), data_root=str(dockerd.data)))
    assert _broken(items) == []
    return _containers(items)


def _copy_store(dockerd, dest) -> str:
    """``cp -a`` of the data root (xattrs, devices, links, times); not into live mounts."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    subprocess.run(["cp", "-a", "--one-file-system", str(dockerd.data), str(dest)], check=True)
    return str(dest)


def _read(path) -> str:
    with open(path) as fh:
        return fh.read()


def _write(path, text) -> None:
    with open(path, "w") as fh:
        fh.write(text)


# -- 1. find() == docker inspect ---------------------------------------------------------------
def test_find_matches_docker_inspect(dockerd, live):
    assert sorted(live) == sorted(NAMES)
    data = str(dockerd.data)
    layerdb = os.path.join(data, "image/overlay2/layerdb")
    for name in NAMES:
        found, insp = live[name], dockerd.inspect(name)
        assert found.engine == "docker" and found.id == insp["Id"]
        assert found.names == [insp["Name"].lstrip("/")] == [name]
        assert found.image == insp["Config"]["Image"]
        assert found.state == insp["State"]["Status"]
        assert found.created == insp["Created"]
        assert found.store == data
        graph = insp["GraphDriver"]
        assert graph["Name"] == "overlay2"
        assert found.upper.dir == graph["Data"]["UpperDir"]
        assert [layer.dir for layer in found.lowers] == graph["Data"]["LowerDir"].split(":")
        # the ids are layerdb's
        mounts = os.path.join(layerdb, "mounts", found.id)
        assert found.upper.role == "upper" and found.upper.id == _read(f"{mounts}/mount-id")
        init = found.lowers[0]
        assert init.role == "init" and init.id == _read(f"{mounts}/init-id") == found.upper.id + "-init"
        image = found.lowers[1:]
        assert all(layer.role == "image" for layer in image)
        diff_ids = dockerd.inspect(insp["Image"])["RootFS"]["Layers"]  # bottom first
        assert [layer.diff_id for layer in reversed(image)] == diff_ids
        assert [layer.image_index for layer in reversed(image)] == list(range(len(diff_ids)))
        chain = None
        for layer, diff_id in zip(reversed(image), diff_ids):  # ChainID(L0..n), as the spec says
            chain = diff_id if chain is None else \
                "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
            assert layer.chain_id == chain
            assert layer.id == _read(os.path.join(layerdb, "sha256", chain[7:], "cache-id"))
        assert image[0].chain_id == _read(f"{mounts}/parent")
        for layer in [found.upper, *found.lowers]:
            assert layer.link == _read(os.path.join(os.path.dirname(layer.dir), "link"))
            assert os.path.realpath(os.path.join(data, "overlay2/l", layer.link)) == layer.dir
    assert {n: live[n].state for n in NAMES} == {"c1": "exited", "c2": "exited", "c3": "created",
                                                 "c4": "running", "c5": "exited"}
    assert len(live["c1"].lowers) == 1 + 4 and len(live["c2"].lowers) == 1 + 1
    # the same through the package's entry point (the CLI's path)
    assert ovforensics.find_container("c1", engine="docker", data_root=data).upper == live["c1"].upper


def test_image_name_falls_back_to_the_id_when_the_tag_moved(dockerd, live, tmp_path):
    """repositories.json gives the name; a name that now points elsewhere is not shown."""
    store = _copy_store(dockerd, tmp_path / "docker")
    repos = os.path.join(store, "image/overlay2/repositories.json")
    data = json.loads(_read(repos))
    # retag busybox:1 onto the multi image, as `docker tag` would
    data["Repositories"]["ovf-test/busybox"][BUSYBOX] = data["Repositories"]["ovf-test/multi"][MULTI]
    _write(repos, json.dumps(data))
    found = _containers(docker.find(Root("/"), data_root=store))
    busybox_id = dockerd.inspect(BUSYBOX)["Id"]
    assert found["c2"].image == busybox_id
    assert found["c1"].image == MULTI  # Config.Image is one of the image's names: kept


# -- 2. scan vs docker diff --------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_scan_accounts_for_docker_diff(dockerd, live, name):
    found = live[name]
    changes = list(ovforensics.scan(found.upper.dir, [layer.dir for layer in found.lowers]))
    theirs = ed.parse_diff(dockerd.text("diff", name))
    problems, explained = ed.account(changes, theirs)
    assert problems == []
    assert explained == EXPLAINED[name]
    if name == "c1":  # the odd names went through both sides intact
        assert ("A", ODD) in theirs and ("A", "/bad\ufffdname") in theirs
        paths = {c.path for c in changes}
        assert ODD.encode() in paths and b"/bad\xffname" in paths


# -- 3. evidence re-rooting --------------------------------------------------------------------
def _records(found: Container) -> list[str]:
    return [json.dumps(c.to_dict(), sort_keys=True)
            for c in ovforensics.scan(found.upper.dir, [layer.dir for layer in found.lowers])]


def _same_stack(mine: Container, ref: Container, old: str, new: str) -> None:
    moved = lambda p: new + p[len(old):] if p.startswith(old + "/") else p  # noqa: E731
    assert (mine.id, mine.names, mine.image, mine.state, mine.created) == \
        (ref.id, ref.names, ref.image, ref.state, ref.created)
    assert mine.store == new
    for a, b in zip([mine.upper, *mine.lowers], [ref.upper, *ref.lowers], strict=True):
        assert a.dir == moved(b.dir) and a.dir.startswith(new + "/overlay2/")
        assert (a.role, a.id, a.diff_id, a.chain_id, a.link, a.image_index) == \
            (b.role, b.id, b.diff_id, b.chain_id, b.link, b.image_index)


@pytest.mark.parametrize("layout", ["default", "data-root", "graph"])
def test_evidence_copy_reads_the_same(dockerd, live, tmp_path, layout):
    evidence = tmp_path / "evidence"
    if layout == "default":  # /var/lib/docker, no daemon.json
        store = _copy_store(dockerd, evidence / "var/lib/docker")
    else:  # daemon.json names /srv/docker; /srv is an absolute link inside the evidence
        store = _copy_store(dockerd, evidence / "mnt/disk2/docker")
        os.symlink("/mnt/disk2", evidence / "srv")
        (evidence / "etc/docker").mkdir(parents=True)
        _write(evidence / "etc/docker/daemon.json", json.dumps({layout: "/srv/docker"}))
    items = list(docker.find(Root(str(evidence))))
    assert _broken(items) == []
    found = _containers(items)
    assert sorted(found) == sorted(live)
    for name, ref in live.items():
        _same_stack(found[name], ref, str(dockerd.data), store)
        assert [r.replace(store, str(dockerd.data)) for r in _records(found[name])] == _records(ref)


def _c1_lower(store, c1: Container) -> tuple[str, list[str]]:
    lower = os.path.join(store, "overlay2", c1.upper.id, "lower")
    return lower, _read(lower).split(":")


@pytest.mark.parametrize("how", ["evidence", "live-root"])
def test_l_link_out_of_the_store_is_refused(dockerd, live, tmp_path, how):
    evidence = tmp_path / "evidence"
    store = _copy_store(dockerd, evidence / "var/lib/docker")
    c1 = live["c1"]
    _lower, entries = _c1_lower(store, c1)
    short = entries[1][2:]  # the image's top layer
    link = os.path.join(store, "overlay2/l", short)
    os.unlink(link)
    if how == "evidence":  # climbs above the evidence root
        os.symlink("../../../../../../etc", link)
        items = list(docker.find(Root(str(evidence))))
    else:  # read as a live host: exactly enough ".." to reach the host's /etc
        depth = len(os.path.dirname(link).strip("/").split("/"))
        os.symlink("../" * depth + "etc", link)
        assert os.path.realpath(link) == "/etc"
        items = list(docker.find(Root("/"), data_root=store))
    found = _containers(items)
    assert sorted(found) == sorted(NAMES)
    for item in found.values():
        for layer in [item.upper, *item.lowers]:
            assert layer.dir.startswith(store + "/overlay2/") and layer.dir != "/etc"
    _same_stack(found["c1"], c1, str(dockerd.data), store)  # layerdb's stack, intact
    broken = _broken(items)
    assert [b.where for b in broken] == [link]
    assert "refused" in broken[0].why and "taken from layerdb" in broken[0].why


def test_lower_entry_out_of_the_store_is_refused(dockerd, live, tmp_path):
    evidence = tmp_path / "evidence"
    store = _copy_store(dockerd, evidence / "var/lib/docker")
    c1 = live["c1"]
    lower, entries = _c1_lower(store, c1)
    entries[1] = "l/../../../../etc"
    _write(lower, ":".join(entries))
    for items in (list(docker.find(Root(str(evidence)))),
                  list(docker.find(Root("/"), data_root=store))):
        broken = _broken(items)
        assert [b.where for b in broken] == [lower]
        assert "'l/../../../../etc'" in broken[0].why and "refused" in broken[0].why
        _same_stack(_containers(items)["c1"], c1, str(dockerd.data), store)


def test_layer_dir_that_is_a_symlink_is_refused(dockerd, live, tmp_path):
    evidence = tmp_path / "evidence"
    store = _copy_store(dockerd, evidence / "var/lib/docker")
    upper = os.path.join(store, "overlay2", live["c2"].upper.id, "diff")
    shutil.rmtree(upper)
    os.symlink("/etc", upper)
    items = list(docker.find(Root(str(evidence))))
    assert sorted(_containers(items)) == ["c1", "c3", "c4", "c5"]
    broken = _broken(items)
    assert [b.where for b in broken] == [upper] and "a symlink" in broken[0].why


# -- 4. damaged stores ---------------------------------------------------------------------
def test_damaged_containers_are_broken_the_others_listed(dockerd, live, tmp_path):
    store = _copy_store(dockerd, tmp_path / "docker")
    config = lambda name: os.path.join(store, "containers", live[name].id, "config.v2.json")  # noqa: E731
    text = _read(config("c1"))
    _write(config("c1"), text[: len(text) // 2])  # truncated
    with open(config("c2"), "wb") as fh:
        fh.write(b"\x00\xff garbage \x8f")
    mount_id = os.path.join(store, "image/overlay2/layerdb/mounts", live["c3"].id, "mount-id")
    os.unlink(mount_id)
    cfg5 = json.loads(_read(config("c5")))
    cfg5["Driver"] = "vfs"
    _write(config("c5"), json.dumps(cfg5))

    items = list(docker.find(Root("/"), data_root=store))
    found = _containers(items)
    assert sorted(found) == ["c4"]
    _same_stack(found["c4"], live["c4"], str(dockerd.data), store)
    why = {b.where: b.why for b in _broken(items)}
    assert sorted(why) == sorted([config("c1"), config("c2"), mount_id, config("c5")])
    assert why[config("c1")].startswith("not valid JSON (")
    assert why[config("c2")] == "not text: expected the container's configuration (JSON)"
    assert why[mount_id].startswith("missing: expected the id of the container's overlay2 directory")
    assert why[config("c5")] == ("storage driver 'vfs': only overlay2 and the containerd snapshotter "
                                  "overlayfs are read here")


def test_layerdb_and_lower_file_disagree(dockerd, live, tmp_path):
    """The lower file (what the kernel mounted) gives the directories; layerdb the ids it knows."""
    c1 = live["c1"]
    moved = lambda store, p: store + p[len(str(dockerd.data)):]  # noqa: E731
    # the lower file lost a layer: the stack the lower file gives, layerdb's ids, and a warning
    store = _copy_store(dockerd, tmp_path / "a")
    lower, entries = _c1_lower(store, c1)
    _write(lower, ":".join(entries[:2] + entries[3:]))
    kept = c1.lowers[:2] + c1.lowers[3:]
    items = list(docker.find(Root("/"), data_root=store))
    found = _containers(items)
    assert sorted(found) == sorted(NAMES)
    assert [x.dir for x in found["c1"].lowers] == [moved(store, x.dir) for x in kept]
    assert [(x.role, x.id, x.diff_id, x.chain_id, x.image_index) for x in found["c1"].lowers] == \
        [(x.role, x.id, x.diff_id, x.chain_id, x.image_index) for x in kept]
    broken = _broken(items)
    assert [b.where for b in broken] == [lower]
    assert "using the lower file (what the kernel mounted)" in broken[0].why

    # layerdb lost the top image layer's cache-id: the lower file supplies the directories;
    # ids come from the directory names, diff/chain ids and image positions are unknown
    store = _copy_store(dockerd, tmp_path / "b")
    cache_id = os.path.join(store, "image/overlay2/layerdb/sha256", c1.lowers[1].chain_id[7:],
                            "cache-id")
    os.unlink(cache_id)
    items = list(docker.find(Root("/"), data_root=store))
    found = _containers(items)
    assert sorted(found) == sorted(NAMES)
    got = found["c1"].lowers
    assert [x.dir for x in got] == [moved(store, x.dir) for x in c1.lowers]
    assert [(x.role, x.id) for x in got] == [(x.role, x.id) for x in c1.lowers]
    assert got[0].link == c1.lowers[0].link
    assert all(x.diff_id is None and x.chain_id is None and x.image_index is None for x in got[1:])
    broken = _broken(items)
    assert [b.where for b in broken] == [cache_id]
    assert broken[0].why.startswith("missing: expected the layer's overlay2 directory id")
    lower_b = os.path.join(store, "overlay2", c1.upper.id, "lower")
    assert broken[0].why.endswith(f"the lower layers are taken from {lower_b}")


# -- without a daemon ------------------------------------------------------------------------
def test_no_data_root_yields_nothing(tmp_path):
    assert list(docker.find(Root(str(tmp_path)))) == []
    assert list(docker.find(Root(str(tmp_path)), data_root="/srv/nothing")) == []


def test_containers_as_a_file_is_a_store_error(tmp_path):
    (tmp_path / "var/lib/docker").mkdir(parents=True)
    (tmp_path / "var/lib/docker/containers").write_text("not a directory")
    with pytest.raises(StoreError, match="containers: not a directory"):
        list(docker.find(Root(str(tmp_path))))


def test_garbage_daemon_json_warns_and_uses_the_default(tmp_path):
    (tmp_path / "etc/docker").mkdir(parents=True)
    (tmp_path / "etc/docker/daemon.json").write_text("{\"data-root\": ")
    items = list(docker.find(Root(str(tmp_path))))
    assert [b.where for b in items] == [str(tmp_path / "etc/docker/daemon.json")]
    assert "using /var/lib/docker" in items[0].why


def test_data_root_link_out_of_the_evidence_is_a_store_error(tmp_path):
    (tmp_path / "var/lib").mkdir(parents=True)
    os.symlink("../../../../../../../../srv", tmp_path / "var/lib/docker")
    with pytest.raises(StoreError, match="leaves the evidence root"):
        list(docker.find(Root(str(tmp_path))))


def test_image_name_choice():
    names = {"sha256:aa": ["x/y:1", "x/y@sha256:dd"], "sha256:bb": ["busybox:latest"]}
    assert docker._image_name("sha256:aa", "x/y@sha256:dd", names) == "x/y@sha256:dd"
    assert docker._image_name("sha256:aa", "something/else:2", names) == "x/y:1"
    assert docker._image_name("sha256:cc", "gone:1", names) == "gone:1"
    assert docker._image_name("sha256:cc", "busybox", names) == "sha256:cc"  # busybox moved on
    assert docker._image_name("sha256:bb", "busybox", names) == "busybox:latest"
    assert docker._image_name("sha256:" + "c" * 64, "cccccc", {}) == "sha256:" + "c" * 64
    assert docker._image_name(None, None, names) is None


# -- 5. the CLI on real containers -------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovforensics", *args], capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cli_containers_lists_every_docker_container(dockerd, live):
    proc = _cli("containers", "--engine", "docker", "--data-root", str(dockerd.data), "-f", "jsonl")
    assert proc.returncode == 0, proc.stderr
    rows = {row["names"][0]: row for row in map(json.loads, proc.stdout.splitlines())}
    assert sorted(rows) == sorted(NAMES)
    c1 = rows["c1"]
    assert (c1["engine"], c1["id"], c1["state"], c1["upperdir"]) == \
           ("docker", live["c1"].id, "exited", live["c1"].upper.dir)
    assert c1["layers"] == 1 + len(live["c1"].lowers)
    assert c1["upper_entries"] > 0 and c1["upper_bytes"] >= 0


def test_cli_diff_by_name_and_by_id_prefix(dockerd, live):
    base = ("--engine", "docker", "--data-root", str(dockerd.data), "-f", "jsonl")
    by_name = _cli("diff", "c1", *base)
    by_prefix = _cli("diff", live["c1"].id[:12], *base)
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout == by_prefix.stdout
    records = [json.loads(line) for line in by_name.stdout.splitlines()]
    expected = [r.to_dict() for r in ovforensics.scan_container(live["c1"])]
    assert records == json.loads(json.dumps(expected))
    shadowed = [r["lower_layer"] for r in records if r["lower_layer"]]
    assert shadowed and all(layer["role"] in ("init", "image") and layer["id"] for layer in shadowed)
    assert any(layer.get("diff_id", "").startswith("sha256:") for layer in shadowed)


def test_cli_layers_shows_the_stack(dockerd, live):
    proc = _cli("layers", "c1", "--engine", "docker", "--data-root", str(dockerd.data), "-f", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    c1 = live["c1"]
    assert [r["role"] for r in rows] == ["upper", "init"] + ["image"] * (len(c1.lowers) - 1)
    assert [r["dir"] for r in rows] == [c1.upper.dir] + [layer.dir for layer in c1.lowers]
    assert all(r["entries"] >= 0 for r in rows)


def test_cli_diff_on_evidence_root(dockerd, live, tmp_path):
    evidence = tmp_path / "evidence"
    _copy_store(dockerd, evidence / "var/lib/docker")
    proc = _cli("diff", "c1", "--root", str(evidence), "--engine", "docker", "-f", "jsonl")
    assert proc.returncode == 0, proc.stderr
    live_out = _cli("diff", "c1", "--engine", "docker", "--data-root", str(dockerd.data), "-f", "jsonl")
    assert proc.stdout.replace(str(evidence / "var/lib/docker"), str(dockerd.data)) == live_out.stdout
    report = evidence / "report.jsonl"
    refused = _cli("diff", "c1", "--root", str(evidence), "-o", str(report))
    assert refused.returncode == 2 and "evidence" in refused.stderr and not report.exists()


def test_cli_unknown_container_is_one_line(dockerd):
    proc = _cli("diff", "no-such-container", "--engine", "docker", "--data-root", str(dockerd.data))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "ovforensics: error: no-such-container: no such container (looked in: docker)"]


# -- 6. the evidence stays untouched ------------------------------------------------------------
def _every_command(store: str, scratch) -> list[list[str]]:
    """Every command with every option, over every container of the store."""
    sel = ["--engine", "docker", "--data-root", store]
    out = [["containers", *sel, "-f", f] for f in ("table", "csv", "json", "jsonl")]
    for name in NAMES:
        out.append(["layers", name, *sel, "-f", "json"])
        for fmt in ("table", "csv", "json", "jsonl", "docker"):
            out.append(["diff", name, *sel, "-f", fmt])
        out.append(["diff", name, *sel, "-f", "jsonl", "--hash", "md5,sha1,sha256,sha512",
                    "--magic", "--meta", "--only", "added,modified,deleted,anomaly",
                    "--include", "/*", "--exclude", "/proc*", "--whiteouts", "kernel",
                    "--xattr-ns", "trusted"])
        out.append(["diff", name, *sel, "-f", "csv", "--hash", "sha256", "--magic", "--meta",
                    "-o", str(scratch / f"{name}.csv")])
        out.append(["deleted", name, *sel, "--hash", "sha256,md5", "--meta", "-f", "jsonl"])
        out.append(["deleted", name, *sel, "-o", str(scratch / f"{name}-deleted.csv")])
        out += [cmd(name, sel, scratch) for cmd in EXTRA_COMMANDS]
    return out


#: further commands run over each container by the untouched-evidence tests
EXTRA_COMMANDS: list = [
    lambda name, sel, scratch: ["timeline", name, *sel, "-f", "bodyfile", "--hash", "md5"],
    lambda name, sel, scratch: ["timeline", name, *sel, "-f", "timesketch", "--meta",
                                "-o", str(scratch / f"{name}.ts.jsonl")],
    lambda name, sel, scratch: ["timeline", name, *sel, "-f", "timesketch-csv"],
    lambda name, sel, scratch: ["recover", name, "/etc", "--all-deleted", "--all-modified",
                                *sel, "--to", str(scratch / f"rec-{name}-{len(os.listdir(scratch))}")],
]


def _run_all(store: str, scratch) -> None:
    for args in _every_command(store, scratch):
        proc = _cli(*args)
        assert proc.returncode == 0, (args, proc.stderr)


def test_live_store_is_untouched(dockerd, live, tmp_path):
    """On the live (rw, relatime) store: no inode's mtime or ctime moves (no write, no xattr
    change), and no file's or directory's atime. Only a symlink's atime can move: readlink(2)
    updates it on a relatime mount and has no O_NOATIME (docs/evidence.md). The daemon is
    paused for the run: its own containerd writes meta.db on its own schedule (seen in CI)."""
    from evidence import changed, snapshot

    store = str(dockerd.data)
    with dockerd.paused():
        before = snapshot(store)
        _run_all(store, tmp_path)
        moved = changed(before, snapshot(store))
    assert moved["mtime"] == [] and moved["ctime"] == []
    assert moved["added"] == [] and moved["gone"] == []
    assert [path for path, is_link in moved["atime"] if not is_link] == []


def test_noatime_evidence_mount_is_untouched_entirely(dockerd, live, tmp_path):
    """Evidence mounted the way docs/evidence.md says (read-only, noatime): every inode's
    atime, mtime and ctime stay exactly as they were, symlinks included (the daemon paused, as
    above)."""
    from evidence import changed, snapshot

    view = tmp_path / "evidence"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(dockerd.data), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro,noatime", str(view)], check=True)
        with dockerd.paused():
            before = snapshot(str(dockerd.data))
            _run_all(str(view), tmp_path)
            after = snapshot(str(dockerd.data))
        assert changed(before, after) == \
            {"atime": [], "mtime": [], "ctime": [], "added": [], "gone": []}
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def test_evidence_run_never_opens_a_path_outside_the_evidence(dockerd, live, tmp_path):
    """The copy's config files and LowerDir strings still name the live store's paths (the
    "host" here): under strace, not one file-system call of a whole `--root` run reaches the live
    store, and every store path touched lies inside the evidence."""
    import re

    need(shutil.which("strace") is not None, "needs strace (Debian package strace)")
    evidence = tmp_path / "evidence"
    store_copy = _copy_store(dockerd, evidence / str(dockerd.data).lstrip("/"))  # same path inside
    (evidence / "etc/docker").mkdir(parents=True)
    _write(evidence / "etc/docker/daemon.json", json.dumps({"data-root": str(dockerd.data)}))
    log = tmp_path / "strace.log"
    for args in (["containers", "--root", str(evidence), "-f", "jsonl"],
                 ["diff", "c1", "--root", str(evidence), "--engine", "docker", "-f", "jsonl",
                  "--hash", "sha256", "--magic"],
                 ["layers", "c1", "--root", str(evidence), "-f", "json"],
                 ["deleted", "c5", "--root", str(evidence)]):
        proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=%file,%desc", "-o", str(log),
                               sys.executable, "-m", "ovforensics", *args],
                              capture_output=True, text=True, cwd=str(tmp_path))
        assert proc.returncode == 0, (args, proc.stderr)
        touched = set(re.findall(r'"(/[^"]*)"', log.read_text()))
        live_store = str(dockerd.data)
        assert not [p for p in touched if p == live_store or p.startswith(live_store + "/")], args
        assert any(p.startswith(store_copy) for p in touched), "the run did read the evidence"


# -- a disk image's store (--root disk.img): read through evidence/fs.py -----------------------
def _image_records(container) -> list[str]:
    import ovforensics

    return sorted(f"{r.change} {r.path_text} {r.via or ''} {r.anomaly or ''}"
                  for r in ovforensics.scan_container(container))


def test_a_store_attached_as_an_image_reads_as_the_directory(dockerd, live, tmp_path):
    evidence = tmp_path / "evidence"
    store = _copy_store(dockerd, evidence / "var/lib/docker")
    from test_diskimage_plumbing import DirFS
    from ovforensics.evidence import fs

    dir_fs = DirFS(str(evidence))
    prefix = fs.attach(dir_fs, str(tmp_path / "no-such-disk.img"))
    assert not os.path.lexists(prefix.rstrip("!"))  # nothing on the host answers to it
    try:
        items = list(docker.find(Root(prefix)))
        assert [b for b in items if isinstance(b, Broken)] == []
        found = {c.names[0]: c for c in items if isinstance(c, Container)}
        direct = {c.names[0]: c for c in docker.find(Root(str(evidence)))
                  if isinstance(c, Container)}
        assert sorted(found) == sorted(direct) == sorted(live)
        for name, ref in direct.items():
            got = found[name]
            assert got.upper.dir == got.upper.dir.replace(str(evidence), "")  # no host path
            assert got.upper.dir.startswith(prefix)
            assert got.upper.dir[len(prefix):] == ref.upper.dir[len(str(evidence)):]
            assert _image_records(got) == _image_records(ref), name
        assert dir_fs.calls > 0
    finally:
        fs.detach(prefix)
    assert os.path.isdir(store)


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_a_docker_store_in_a_disk_image_reads_as_the_kernel_mounts_it(dockerd, live, tmp_path,
                                                                      fstype):
    """``--root disk.qcow2``: the store copied into an ext4 filesystem (mkfs.ext4 -d, no mount)
    or an XFS one (written through a loop mount in a private mount namespace: mkfs.xfs makes no
    filesystem from a directory) inside a GPT qcow2; every container and every record as from
    the same filesystem mounted read-only by the kernel (in a private mount namespace), paths
    mapped."""
    from test_diskimage import _need_tools

    _need_tools("mkfs.ext4", "mkfs.xfs", "sfdisk", "qemu-img", "unshare")
    need_loop_mount()
    evidence = tmp_path / "evidence"
    _copy_store(dockerd, evidence / "var/lib/docker")
    fs_image, raw, image = tmp_path / f"fs.{fstype}", tmp_path / "disk.raw", tmp_path / "disk.qcow2"
    if fstype == "ext4":
        subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "256", "-d", str(evidence), str(fs_image),
                        "320M"], check=True, capture_output=True)
    else:
        with open(fs_image, "wb") as fh:
            fh.truncate(320 << 20)
        subprocess.run(["mkfs.xfs", "-q", "-f", str(fs_image)], check=True, capture_output=True)
        (tmp_path / "rw").mkdir()
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               f"mount -o loop -t xfs {fs_image} {tmp_path}/rw && "
                               f"cp -a {evidence}/. {tmp_path}/rw/; rc=$?; "
                               f"umount {tmp_path}/rw && exit $rc"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    with open(raw, "wb") as fh:
        fh.truncate(330 << 20)
    subprocess.run(["sfdisk", "-q", str(raw)], input="label: gpt\nstart=2048, type=L\n",
                   text=True, check=True, capture_output=True)
    with open(fs_image, "rb") as src, open(raw, "r+b") as dst:
        dst.seek(2048 * 512)
        shutil.copyfileobj(src, dst)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image)],
                   check=True)
    cmds = ("containers -f jsonl", "diff c1 -f jsonl", "diff c5 -f jsonl", "deleted c1 -f jsonl",
            "layers c1 -f jsonl", "timeline c1 -f timesketch")
    ours = {cmd: _cli(*cmd.split(), "--root", str(image), "--engine", "docker") for cmd in cmds}
    for cmd, proc in ours.items():
        assert proc.returncode == 0, (cmd, proc.stderr)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    ro = "ro,noload" if fstype == "ext4" else "ro,norecovery"
    script = (f"mount -o {ro},loop -t {fstype} {fs_image} {mnt} && cd {ROOT_DIR} && " + " && ".join(
        f"{sys.executable} -m ovforensics {cmd} --root {mnt} --engine docker "
        f"> {tmp_path}/{cmd.replace(' ', '_')}.kernel" for cmd in ours) + f"; umount {mnt}")
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    prefix = str(image) + "!"

    def mapped(text: str) -> list:
        rows = []
        for line in text.replace(prefix, str(mnt)).splitlines():
            row = json.loads(line)
            for key, value in list(row.items()):  # physical paths' exact bytes, mapped too
                if key.endswith("_b64") and isinstance(value, str):
                    raw = base64.b64decode(value).replace(os.fsencode(prefix), os.fsencode(mnt))
                    row[key] = base64.b64encode(raw).decode()
            rows.append(row)
        return rows

    for cmd, mine in ours.items():
        kernel = (tmp_path / f"{cmd.replace(' ', '_')}.kernel").read_text()
        assert kernel, cmd
        assert mapped(mine.stdout) == mapped(kernel), cmd
    assert '"c1"' in ours["containers -f jsonl"].stdout
    # no privilege needed: with every capability dropped (no mount, no loop device, no reading
    # past file modes) the same report
    proc = subprocess.run(["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--",
                           sys.executable, "-m", "ovforensics", "diff", "c1", "--root",
                           str(image), "--engine", "docker", "-f", "jsonl"],
                          capture_output=True, text=True, cwd=ROOT_DIR)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ours["diff c1 -f jsonl"].stdout
    # --image-hash: the image's file hashed into the run record (and refused without one)
    proc = _cli("diff", "c1", "--root", str(image), "--engine", "docker", "-f", "jsonl", "--meta",
                "--image-hash", "sha256,md5")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout.splitlines()[0])["meta"]
    images = [s["image"] for s in meta["stores"] if s.get("image")]
    assert images and images[0]["filesystem"] == fstype, meta
    with open(image, "rb") as fh:
        want = hashlib.file_digest(fh, "sha256").hexdigest()
    assert images[0]["files"] == [{"file": str(image), "size": image.stat().st_size,
                                   "sha256": want, "md5": images[0]["files"][0]["md5"]}]
    assert "files" not in json.loads(ours["diff c1 -f jsonl"].stdout.splitlines()[0]).get(
        "meta", {})
    proc = _cli("diff", "c1", "--root", str(image), "--image-hash", "sha256")
    assert proc.returncode == 2 and "add --meta" in proc.stderr
    proc = _cli("diff", "c1", "--root", str(evidence), "--image-hash", "sha256", "--meta")
    assert proc.returncode == 2 and "not a disk image" in proc.stderr, proc.stderr
    to = tmp_path / "recovered"
    proc = _cli("recover", "c1", "/data/a", "--root", str(image), "--engine", "docker",
                "--to", str(to))
    assert proc.returncode == 0, proc.stderr
    manifest = [json.loads(line) for line in (to / "manifest.jsonl").read_text().splitlines()]
    assert [(r["path"], r["status"]) for r in manifest] == [("/data/a", "recovered")]
    assert hashlib.sha256((to / "data/a").read_bytes()).hexdigest() == manifest[0]["sha256"]


ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -- -f docker: what docker diff prints -----------------------------------------------------------
#: the lines ``-f docker`` prints and docker diff does not, and why (docker is wrong there)
DOCKER_FORMAT_BETTER = {
    "c5": {"D /data/a", "D /data/sub"},  # /data replaced by a symlink: what it held is gone
}


@pytest.mark.parametrize("name", NAMES)
def test_docker_format_prints_what_docker_diff_prints(dockerd, live, name):
    """``diff -f docker`` against ``docker diff`` on the same container, line for line: one D
    for a deleted directory, a C for the parent of each A and D. Left: docker's C for a
    directory whose only difference is its st_size (a tmpfs or btrfs directory's size follows
    its entry count; no record says that), and the lines where docker is wrong."""
    proc = _cli("diff", name, "--engine", "docker", "--data-root", str(dockerd.data), "-f", "docker")
    assert proc.returncode == 0, proc.stderr
    ours = ed.parse_diff(proc.stdout)
    theirs = ed.parse_diff(dockerd.text("diff", name))
    as_theirs = [(k, p.replace("\\xff", "\ufffd").replace("\\n", "\n")) for k, p in ours]
    better = DOCKER_FORMAT_BETTER.get(name, set())
    extra = [f"{k} {p}" for k, p in as_theirs if (k, p) not in theirs and f"{k} {p}" not in better]
    assert extra == [], extra
    ours_set = set(as_theirs)
    missing = [(k, p) for k, p in theirs if (k, p) not in ours_set]
    # docker's C for a directory that holds a change (ours has it, or a change below it)
    noise = [(k, p) for k, p in missing
             if k == "C" and any(q.startswith(p + "/") for _, q in as_theirs)]
    assert [m for m in missing if m not in noise] == [], missing
    if name == "c1":  # a deleted directory is one line, as docker prints it
        assert ("D", "/opt/app/lib") in as_theirs and not any(
            p.startswith("/opt/app/lib/") for _, p in as_theirs)
        assert ("C", "/data") in as_theirs  # the parent of the deleted /data/a
    if name == "c1":  # a newline in a name stays on one line, escaped
        assert [line for line in proc.stdout.splitlines() if line.startswith("A /odd")] == \
            ["A /odd\\nname"]


def test_a_near_miss_container_name_gets_did_you_mean(dockerd, live):
    proc = _cli("diff", "c11", "--engine", "docker", "--data-root", str(dockerd.data))
    assert proc.returncode == 2 and "did you mean c1" in proc.stderr, proc.stderr


def test_containers_quiet_prints_ids_newest_first(dockerd, live):
    proc = _cli("containers", "-q", "--engine", "docker", "--data-root", str(dockerd.data))
    assert proc.returncode == 0, proc.stderr
    by_id = {c.id: c for c in live.values()}
    ids = proc.stdout.split()
    assert sorted(ids) == sorted(by_id)
    created = [by_id[i].created for i in ids]
    assert created == sorted(created, reverse=True)  # as docker ps -a
