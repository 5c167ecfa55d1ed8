"""Today's engines, for real: Docker 26 (overlay2 and the containerd image store, Docker 29's
default), containerd 1.7 with CRI-style pods, Podman 5, all from Debian 13's packages in a
chroot (tests/engine_trixie.py), read offline with ``--root CHROOT`` as a seized disk would be.

Every container is made by the engine itself; stopped ones are compared with the kernel's own
merged view of their layers (a read-only overlay mount of upper + lowers), running ones with the
engine's own diff.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import ovforensics
from ovforensics.stores.base import Broken, Container

import engine_docker
import engine_trixie
import oracle
from conftest import need

DOCKERFILE = engine_docker.DOCKERFILE
POD = {"io.kubernetes.pod.name": "web-7f9c", "io.kubernetes.pod.namespace": "shop",
       "io.kubernetes.pod.uid": "3c1e9d2a-uid"}


#: mount points runc makes in a container's upper when they are missing from the image
RUNC_DIRS = {"/run", "/proc", "/sys", "/dev"}


def _labels(flag: str, items: dict) -> list[str]:
    return [arg for k, v in items.items() for arg in (flag, f"{k}={v}")]


@pytest.fixture(scope="module")
def today(tmp_path_factory):
    why = engine_trixie.missing() or oracle.overlay_missing()
    need(why is None, why or "")
    t = engine_trixie.Trixie(tmp_path_factory.mktemp("today"))
    try:
        t.start_containerd()
        # Docker 26 with overlay2 first: one container, then the containerd image store
        t.start_dockerd(snapshotter=False)
        t.import_busybox("docker")
        t.docker("run", "--name", "classic", "--network", "none", "ovf-test/busybox:1",
                 "sh", "-c", "echo c > /classic; rm /etc/issue")
        # Docker in containerd-store mode no longer shows overlay2 containers: inspect it now
        t.classic = json.loads(t.docker("inspect", "classic"))[0]
        t.stop("dockerd")
        # dockerd with no system containerd starts its own, rooted in its data root
        t.stop("containerd")
        t.start_dockerd(snapshotter=True, own_containerd=True, data_root="/var/lib/docker-own")
        t.import_busybox("docker")
        t.docker("run", "--name", "own1", "--network", "none", "ovf-test/busybox:1",
                 "sh", "-c", "echo o > /own")
        t.own1 = json.loads(t.docker("inspect", "own1"))[0]
        t.stop("dockerd")
        t.start_containerd()
        t.start_dockerd(snapshotter=True)
        assert "io.containerd.snapshotter" in t.docker("info", "-f", "{{json .DriverStatus}}")
        t.import_busybox("docker")
        t.write("/srv/build/Dockerfile", DOCKERFILE)
        t.docker("build", "--network", "none", "-t", "ovf-test/built:1", "/srv/build")
        t.docker("run", "-d", "--name", "running", "--network", "none", "ovf-test/built:1",
                 "sh", "-c", "echo x > /etc/motd2; rm /etc/issue; sleep 1000")
        t.docker("run", "--name", "stopped", "--network", "none", "ovf-test/built:1", "sh", "-c",
                 "rm -rf /opt/app; mkdir -p /opt/app/new; echo n > /opt/app/new/f; "
                 "rm /data/a; echo y > /srv/tree/1/f; exit 3", check=False)
        # Kubernetes through containerd's CRI plugin, as ctr makes the same records
        t.sh("docker save ovf-test/busybox:1 -o /srv/bb.tar && "
             "ctr -n k8s.io images import --snapshotter overlayfs /srv/bb.tar && "
             "ctr -n default images import --snapshotter overlayfs /srv/bb.tar")
        image = "docker.io/ovf-test/busybox:1"
        t.ctr("-n", "k8s.io", "run", "-d", "--snapshotter", "overlayfs",
              *_labels("--label", {**POD, "io.cri-containerd.kind": "sandbox"}),
              *_labels("--annotation", {"io.kubernetes.cri.container-type": "sandbox"}),
              image, "sb7f9c", "sleep", "1000")
        t.ctr("-n", "k8s.io", "run", "--snapshotter", "overlayfs",
              *_labels("--label", {**POD, "io.cri-containerd.kind": "container",
                                   "io.kubernetes.container.name": "nginx"}),
              *_labels("--annotation", {"io.kubernetes.cri.container-type": "container",
                                        "io.kubernetes.cri.sandbox-id": "sb7f9c"}),
              image, "nginx7f9c", "sh", "-c", "echo k > /k8s; rm /etc/motd")
        t.ctr("-n", "default", "run", "--snapshotter", "overlayfs", image, "plain1",
              "sh", "-c", "echo p > /p")
        # Podman 5: one exited with a code, one running, one CRI-O-style (annotations)
        t.import_busybox("podman")
        t.podman("run", "--name", "p-exit", "--network", "none", "ovf-test/busybox:1",
                 "sh", "-c", "rm /etc/motd; echo n > /n; exit 4", check=False)
        t.podman("run", "-d", "--name", "p-run", "--network", "none", "ovf-test/busybox:1",
                 "sleep", "1000")
        # (the OCI spec holding the annotations is written when a container first starts)
        t.podman("run", "--name", "p-crio", "--network", "none",
                 *_labels("--annotation", {**POD, "io.kubernetes.container.name": "side",
                                           "io.kubernetes.cri-o.ContainerType": "container"}),
                 "ovf-test/busybox:1", "true")
        t.podman("create", "--name", "p-new", "--network", "none", "ovf-test/busybox:1", "true")
        yield t
    finally:
        t.close()


@pytest.fixture(scope="module")
def found(today):
    items = list(ovforensics.containers(str(today.root)))
    return ({c.names[0] if c.names else c.id: c for c in items if isinstance(c, Container)},
            [b for b in items if isinstance(b, Broken)])


def _inspect(today, tool: str, name: str) -> dict:
    return json.loads(getattr(today, tool)("inspect", name))[0]


def _cli(today, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovforensics", *args, "--root", str(today.root)],
                          capture_output=True, text=True, timeout=300)


def _kernel_check(c: Container, tmp_path) -> list:
    """The scan of a stopped container is exactly the kernel's merged view of its layers."""
    d = str(tmp_path)
    lowers = [layer.dir for layer in c.lowers]
    try:
        if len(lowers) == 1:  # the kernel needs two lowers for a view: one is its own view
            base = oracle.walk_view(lowers[0])
        else:
            with oracle.mounted(os.path.join(d, "base"), lowers, ro=True) as v:
                base = oracle.walk_view(v)
        with oracle.mounted(os.path.join(d, "merged"), [c.upper.dir] + lowers, ro=True) as v:
            merged = oracle.walk_view(v)
    finally:
        oracle.umount_all()
    records = list(ovforensics.scan_container(c))
    built = oracle.Built(oracle.Case(l2=[], l1=None, upper=[]), "default", os.fsencode(c.upper.dir),
                         [os.fsencode(x) for x in lowers], {}, base, merged)
    report = oracle.compare(built, records)
    assert report is None, report
    return records


def _paths(records, change: str) -> set[str]:
    return {r.path.decode() for r in records if r.change == change}


# -- Docker's containerd image store --------------------------------------------------------------
def test_docker_containerd_store_containers_are_listed(today, found):
    containers, broken = found
    for name, state in (("running", "running"), ("stopped", "exited"), ("classic", "exited")):
        c = containers[name]
        insp = today.classic if name == "classic" else _inspect(today, "docker", name)
        assert (c.engine, c.id, c.state) == ("docker", insp["Id"], state)
        assert c.image_id == insp["Image"]  # what `docker inspect`/`docker images` show
    assert containers["stopped"].exit_code == 3 and containers["stopped"].finished
    assert containers["running"].exit_code == 0 and containers["running"].finished is None
    assert containers["running"].image == "ovf-test/built:1"
    # the stack is containerd's: upper, the container's -init, the image's chain (with the
    # build steps' -init snapshots between its layers, as the kernel mounts it)
    c = containers["running"]
    assert "io.containerd.snapshotter.v1.overlayfs/snapshots/" in c.upper.dir
    assert c.upper.id == c.id and c.lowers[0].id == c.id + "-init" and c.lowers[0].role == "init"
    images = [layer for layer in c.lowers if layer.role == "image"]
    assert [layer.image_index for layer in images] == [3, 2, 1, 0]
    assert all(layer.diff_id and layer.diff_id.startswith("sha256:") for layer in images)
    # a docker build leaves no container behind, and BuildKit-style leftovers are not listed
    assert {n for n, x in containers.items() if x.engine == "docker"} == {"running", "stopped", "classic"}
    assert not [b for b in broken if b.engine == "docker"], broken
    # the overlay2 container is still on disk, and still Docker's, though `docker ps -a` of the
    # daemon in containerd-store mode no longer shows it
    assert "classic" not in today.docker("ps", "-a", "--format", "{{.Names}}").split()
    assert "/overlay2/" in containers["classic"].upper.dir


def test_docker_containerd_store_diff_matches_the_kernel(found, tmp_path):
    records = _kernel_check(found[0]["stopped"], tmp_path)
    assert {"/opt/app/keep", "/opt/app/lib/y", "/data/a"} <= _paths(records, "deleted")
    assert {r.via for r in records if r.path == b"/opt/app/keep"} == {"opaque"}  # rm -rf + mkdir
    assert "/opt/app/new/f" in _paths(records, "added")
    assert "/srv/tree/1/f" in _paths(records, "modified")


def test_docker_running_container_matches_docker_diff(today, found):
    records = list(ovforensics.scan_container(found[0]["running"]))
    peer = engine_docker.parse_diff(today.docker("diff", "running"))
    assert {p for k, p in peer if k == "A"} == _paths(records, "added") == {"/etc/motd2"}
    assert {p for k, p in peer if k == "D"} == _paths(records, "deleted") == {"/etc/issue"}


def test_docker_cli_by_name_and_image_id(today, found):
    done = _cli(today, "diff", "running", "--engine", "docker", "-f", "jsonl")
    assert done.returncode == 0, done.stderr
    assert {json.loads(line)["path"] for line in done.stdout.splitlines()} == {"/etc/motd2", "/etc/issue"}
    for cmd in (["layers", "running"], ["deleted", "stopped"], ["timeline", "stopped"],
                ["bloat", "stopped", "-f", "json"]):
        done = _cli(today, *cmd)
        assert done.returncode == 0, (cmd, done.stderr)
    # the image: by the id `docker images` shows (full and prefix) and by name, engine docker
    image_id = found[0]["running"].image_id
    for query in ("ovf-test/built:1", image_id, image_id[7:19]):
        done = _cli(today, "image", query, "--engine", "docker", "-f", "json")
        assert done.returncode == 0, (query, done.stderr)
        report = json.loads(done.stdout)
        assert report["image"]["id"] == image_id and report["image"]["namespace"] == "moby"


def test_docker_with_its_own_containerd(today, tmp_path):
    """No system containerd: dockerd's own keeps the snapshots under <data root>/containerd/daemon."""
    assert (today.root / "var/lib/docker-own/containerd/daemon/io.containerd.metadata.v1.bolt/meta.db").is_file()
    items = list(ovforensics.containers(str(today.root), engine="docker", data_root="/var/lib/docker-own"))
    own = [c for c in items if isinstance(c, Container)]
    assert [(c.id, c.names, c.state) for c in own] == [(today.own1["Id"], ["own1"], "exited")], items
    assert "/var/lib/docker-own/containerd/daemon/" in own[0].upper.dir
    records = _kernel_check(own[0], tmp_path)
    assert _paths(records, "added") - RUNC_DIRS == {"/own"}


def test_docker_recover_from_the_containerd_store(today, tmp_path):
    dest = tmp_path / "out"
    done = _cli(today, "recover", "stopped", "/data/a", "/srv/tree/1/f", "--to", str(dest))
    assert done.returncode == 0, done.stderr
    assert (dest / "data/a").read_text() == "a\n" and (dest / "srv/tree/1/f").read_text() == "f\n"


def test_docker_container_whose_snapshot_is_gone_is_reported(today, found, tmp_path):
    # a copy of one container's config under a new id: its snapshot does not exist
    store = today.root / "var/lib/docker/containers"
    src = store / found[0]["stopped"].id / "config.v2.json"
    fake = "f" * 64
    (store / fake).mkdir()
    try:
        (store / fake / "config.v2.json").write_text(
            src.read_text().replace(found[0]["stopped"].id, fake).replace('"/stopped"', '"/ghost"'))
        items = list(ovforensics.containers(str(today.root), engine="docker"))
        ghost = [b for b in items if isinstance(b, Broken) and fake[:12] in b.why]
        assert len(ghost) == 1 and "ghost" in ghost[0].why and "no overlayfs snapshot" in ghost[0].why
        assert {c.names[0] for c in items if isinstance(c, Container)} == {"running", "stopped", "classic"}
    finally:
        (store / fake / "config.v2.json").unlink()
        (store / fake).rmdir()


# -- Kubernetes (containerd CRI) ----------------------------------------------------------------
def test_k8s_pod_fields(found):
    containers = {c.id: c for c in found[0].values()}
    sandbox, nginx = containers["sb7f9c"], containers["nginx7f9c"]
    for c, role in ((sandbox, "sandbox"), (nginx, "container")):
        assert (c.namespace, c.pod, c.pod_namespace, c.pod_uid, c.role) == \
            ("k8s.io", "web-7f9c", "shop", "3c1e9d2a-uid", role)
    assert nginx.container_name == "nginx" and "web-7f9c" not in nginx.names
    assert containers["plain1"].pod is None and containers["plain1"].namespace == "default"
    assert nginx.state is None and "/run/containerd" in nginx.state_note


def test_k8s_names_resolve(today, tmp_path):
    for query in ("web-7f9c/nginx", "shop/web-7f9c/nginx", "nginx"):
        done = _cli(today, "diff", query, "-f", "jsonl")
        assert done.returncode == 0, (query, done.stderr)
        assert {json.loads(x)["path"] for x in done.stdout.splitlines()} - RUNC_DIRS == {"/k8s", "/etc/motd"}
    done = _cli(today, "diff", "web-7f9c")
    assert done.returncode == 2
    assert "a pod, not a container" in done.stderr and "shop/web-7f9c/nginx" in done.stderr
    assert "shop/web-7f9c/side" in done.stderr  # the CRI-O-style one (Podman annotations)
    done = _cli(today, "diff", "other/web-7f9c/nginx")
    assert done.returncode == 2 and "no such container" in done.stderr
    done = _cli(today, "containers", "-f", "json", "--filter", "pod=web-7f9c", "--filter", "role=container")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert sorted(r["container_name"] for r in rows) == ["nginx", "side"]
    assert {r["pod_namespace"] for r in rows} == {"shop"}
    done = _cli(today, "containers", "-f", "json", "--namespace", "k8s.io")
    assert sorted(r["id"] for r in json.loads(done.stdout)) == ["nginx7f9c", "sb7f9c"]


def test_k8s_diff_matches_the_kernel(found, tmp_path):
    c = next(x for x in found[0].values() if x.id == "nginx7f9c")
    records = _kernel_check(c, tmp_path)
    assert _paths(records, "added") - RUNC_DIRS == {"/k8s"} and _paths(records, "deleted") == {"/etc/motd"}


def test_namespace_separates_one_image_in_three_namespaces(today):
    # the same busybox image is in moby (Docker), k8s.io and default: one image, read once
    done = _cli(today, "image", "ovf-test/busybox:1", "--engine", "containerd", "-f", "json")
    assert done.returncode == 0, done.stderr
    for ns, shown in (("k8s.io", "crictl"), ("default", "ctr")):
        done = _cli(today, "image", "ovf-test/busybox:1", "--namespace", ns, "-f", "json")
        assert done.returncode == 0, (ns, done.stderr)
        report = json.loads(done.stdout)["image"]
        assert report["namespace"] == ns
        listed = today.ctr("-n", ns, "images", "ls")
        target = next(line.split()[2] for line in listed.splitlines()
                      if line.startswith("docker.io/ovf-test/busybox:1"))
        if shown == "ctr":
            assert report["id"] == target
        else:  # crictl shows the config digest: the one `docker inspect` gives the image here
            assert report["id"] != target and report["id"].startswith("sha256:")


# -- Podman 5 ---------------------------------------------------------------------------------------
def test_podman5_state_from_db_sql(today, found):
    containers = found[0]
    assert (today.root / "var/lib/containers/storage/db.sql").is_file()
    exited, running = containers["p-exit"], containers["p-run"]
    assert (exited.state, exited.exit_code) == ("exited", 4)
    insp = _inspect(today, "podman", "p-exit")
    assert exited.finished and exited.finished[:19] == insp["State"]["FinishedAt"][:19].replace(" ", "T")
    assert running.state == "running" and running.finished is None
    assert containers["p-new"].state == "created" and containers["p-new"].exit_code is None  # never ran
    assert exited.image_id == insp["Image"]
    # what `podman ps -a` shows
    shown = {line.split()[0]: line.split()[1] for line in
             today.podman("ps", "-a", "--format", "{{.Names}} {{.State}}").splitlines()}
    assert shown == {"p-exit": "exited", "p-run": "running", "p-crio": "exited", "p-new": "created"}


def test_podman5_crio_annotations(found):
    c = found[0]["p-crio"]
    assert (c.pod, c.pod_namespace, c.pod_uid, c.container_name, c.role) == \
        ("web-7f9c", "shop", "3c1e9d2a-uid", "side", "container")
    assert found[0]["p-exit"].pod is None


def test_podman5_diff_matches_the_kernel(found, tmp_path):
    records = _kernel_check(found[0]["p-exit"], tmp_path)
    assert "/etc/motd" in _paths(records, "deleted") and "/n" in _paths(records, "added")


def test_versions_are_todays(today):
    v = engine_trixie.versions()
    assert v["docker.io"].startswith("26.") and v["podman"].startswith("5.") and \
        v["containerd"].startswith("1.7."), v
