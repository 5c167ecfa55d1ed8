"""The containerd reader against a real, hermetic containerd (its own config, root, state, socket).

One containerd serves the whole session (:func:`shared_env`, also used by ``test_bbolt.py``). An
OCI image archive is built here in Python (two layers from busybox-static; the second has a
``.wh.`` whiteout and an opaque directory), imported with ``--snapshotter overlayfs`` into three
namespaces, and containers make known changes. Then:

* :func:`ovforensics.stores.containerd.find` gives exactly the overlayfs containers, with the
  upper and lowers that containerd itself mounts (``ctr snapshots mounts``, and the live
  ``/proc/self/mountinfo`` of a running task), the names, image, creation time, layer ids;
* ``ovforensics.scan`` over those dirs gives exactly what the kernel shows between the read-only
  views ``lowerdir=L...`` and ``lowerdir=UPPER:L...`` (and the known changes, spelled out);
* a copy of the data root as evidence gives the same containers with every dir inside it;
* damaged databases give :class:`Broken` records naming the file, never a traceback.

Needs root, overlayfs, containerd, ctr and runc (skips on a laptop, fails under OVF_REQUIRE_REAL=1).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import need  # noqa: E402
from engine_docker import cgroups_writable, terminate, unmount_under  # noqa: E402

import ovforensics  # noqa: E402
from ovforensics.stores import bbolt  # noqa: E402
from ovforensics.stores import containerd  # noqa: E402
from ovforensics.stores.base import Broken, Container  # noqa: E402
from ovforensics.evidence.rootfs import Root  # noqa: E402

IMAGE = "docker.io/ovf-test/busybox:1"
NS_OTHER = "ovf-other"
NS_BULK = "ovf-bulk"
BULK = 60  # containers in NS_BULK: enough for branch pages in the bbolt files
BIG_ENV = 9000  # bytes of one environment variable: the spec overflows a 4 KiB page

#: the changes container c1 makes (busybox sh), and what they must give
C1_SCRIPT = "; ".join([
    "echo new > /etc/new",
    "rm /etc/motd",
    "rm -rf /data/tree", "mkdir /data/tree", "echo fresh > /data/tree/a",  # rm -rf + recreate
    "chmod 600 /data/keep",
    "mv /etc/added /etc/moved",
    "echo more >> /etc/conf",
    "ln -s /etc/conf /etc/link",
    "mkdir -p /new/dir", "echo deep > /new/dir/f",
    "rm -rf /data/sub",
])
C1_KNOWN = {
    b"/etc/new": ("added", ()),
    b"/etc/motd": ("deleted", ()),
    b"/data/tree/a": ("modified", ("content", "mtime")),
    b"/data/tree/b": ("deleted", ()),
    b"/data/tree/b/c": ("deleted", ()),
    b"/data/keep": ("modified", ("mode",)),
    b"/etc/added": ("deleted", ()),
    b"/etc/moved": ("added", ()),
    b"/etc/conf": ("modified", ("content", "mtime")),
    b"/etc/link": ("added", ()),
    b"/new": ("added", ()),
    b"/new/dir": ("added", ()),
    b"/new/dir/f": ("added", ()),
    b"/data/sub": ("deleted", ()),
    b"/data/sub/y": ("deleted", ()),
}
#: mount points runc makes in every rootfs
RUNC_DIRS = {b"/dev", b"/proc", b"/sys", b"/run"}
O1_SCRIPT = "echo other > /etc/motd; rm /bin/ls"
O1_KNOWN = {b"/etc/motd": ("modified", ("content", "mtime")), b"/bin/ls": ("deleted", ())}


# -- the image ---------------------------------------------------------------------------------
def _tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e[0])
            ti.mtime, ti.uid, ti.gid = 1_700_000_000, 0, 0
            if e[1] == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, e[2] if len(e) > 2 else 0o755
                tf.addfile(ti)
            elif e[1] == "symlink":
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, e[2], 0o777
                tf.addfile(ti)
            else:
                data = e[2] if len(e) > 2 else b""
                ti.size, ti.mode = len(data), e[3] if len(e) > 3 else 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def make_oci_archive(path: str) -> list[str]:
    """An OCI image layout tar of a two-layer busybox image; returns the layers' diff IDs."""
    with open(shutil.which("busybox") or "/bin/busybox", "rb") as fh:
        busybox = fh.read()
    l0 = [("bin", "dir"), ("bin/busybox", "file", busybox, 0o755)]
    l0 += [(f"bin/{a}", "symlink", "busybox") for a in
           "sh echo rm mkdir chmod cat ls mv ln touch sleep mkfifo true".split()]
    l0 += [("etc", "dir"), ("etc/motd", "file", b"hello\n"), ("etc/gone", "file", b"bye\n"),
           ("etc/conf", "file", b"a=1\n"), ("data", "dir"), ("data/keep", "file", b"k\n"),
           ("data/sub", "dir"), ("data/sub/x", "file", b"x\n"), ("data/tree", "dir"),
           ("data/tree/a", "file", b"a\n"), ("data/tree/b", "dir"), ("data/tree/b/c", "file", b"c\n"),
           ("tmp", "dir", 0o1777)]
    l1 = [("etc", "dir"), ("etc/.wh.gone", "file"), ("etc/added", "file", b"layer1\n"),
          ("data", "dir"), ("data/sub", "dir"), ("data/sub/.wh..wh..opq", "file"),
          ("data/sub/y", "file", b"y\n")]
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return "sha256:" + digest

    layers = [_tar(l0), _tar(l1)]
    diff_ids = [put(layer) for layer in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(b)}
                   for d, b in zip(diff_ids, layers)]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
        "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "1"}}]}).encode()
    with tarfile.open(path, "w") as tf:
        for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)] + \
                [(f"blobs/sha256/{d}", b) for d, b in blobs.items()]:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tf.addfile(ti, io.BytesIO(data))
    return diff_ids


# -- the hermetic containerd -------------------------------------------------------------------
class ContainerdEnv:
    """A containerd with its own config, root, state and socket under ``base``."""

    def __init__(self, base: str):
        self.base = base
        self.root = os.path.join(base, "root")
        self.state = os.path.join(base, "state")
        self.sock = os.path.join(base, "containerd.sock")
        self.runc_root = os.path.join(base, "runc")
        self.proc: subprocess.Popen | None = None
        self.namespaces_used: set[str] = set()
        self.running: list[tuple[str, str]] = []
        self.diff_ids: list[str] = []

    def ctr(self, *args, ns: str = "default", check: bool = True, timeout: float = 60) -> str:
        self.namespaces_used.add(ns)
        proc = subprocess.run(["ctr", "-a", self.sock, "-n", ns, *args], capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ctr -n {ns} {' '.join(args)[:300]}: exit {proc.returncode}: "
                                 f"{proc.stderr.strip()}\ncontainerd log: {self.log_tail()}")
        return proc.stdout

    def log_tail(self) -> str:
        try:
            with open(os.path.join(self.base, "log"), errors="replace") as fh:
                return " | ".join(fh.read().splitlines()[-5:])
        except OSError:
            return "?"

    def start(self) -> None:
        with open(os.path.join(self.base, "config.toml"), "w") as fh:
            fh.write(f'version = 2\nroot = "{self.root}"\nstate = "{self.state}"\n'
                     f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                     f'[grpc]\n  address = "{self.sock}"\n')
        log = open(os.path.join(self.base, "log"), "w")
        self.proc = subprocess.Popen(["containerd", "--config", os.path.join(self.base, "config.toml")],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"containerd exited {self.proc.returncode}: {self.log_tail()}")
            if os.path.exists(self.sock) and subprocess.run(
                    ["ctr", "-a", self.sock, "version"], capture_output=True, timeout=10).returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"containerd did not answer in 30 s: {self.log_tail()}")

    def run(self, ns: str, cid: str, *cmd, detach: bool = False, snapshotter: str = "overlayfs",
            extra=()) -> str:
        args = ["run", "--snapshotter", snapshotter, "--runc-root", self.runc_root, *extra]
        if detach:
            args.append("-d")
            self.running.append((ns, cid))
        return self.ctr(*args, IMAGE, cid, *cmd, ns=ns)

    def build(self) -> None:
        archive = os.path.join(self.base, "img.tar")
        self.diff_ids = make_oci_archive(archive)
        for ns in ("default", NS_OTHER, NS_BULK):
            self.ctr("images", "import", "--snapshotter", "overlayfs", archive, ns=ns)
        self.run("default", "c1", "sh", "-c", C1_SCRIPT)
        self.run("default", "c2", "sh", "-c", "echo live > /live; exec sleep 600", detach=True)
        self.run("default", "cnative", "true", snapshotter="native")
        self.run(NS_OTHER, "o1", "sh", "-c", O1_SCRIPT)
        # rootfs directories of their own, no snapshot: reported in "default", skipped in "moby"
        # (Docker's graph-driver containers look like that; the docker reader lists them)
        plain = os.path.join(self.base, "plain-rootfs")
        os.makedirs(plain, exist_ok=True)
        self.ctr("containers", "create", "--rootfs", plain, "crootfs", "true")
        self.ctr("containers", "create", "--label", "com.docker/engine.bundle.path=/x", "--rootfs",
                 plain, "mobyish", "true", ns="moby")
        for i in range(BULK):
            self.ctr("containers", "create", "--snapshotter", "overlayfs", IMAGE, f"b{i:03d}", ns=NS_BULK)
        self.ctr("containers", "create", "--snapshotter", "overlayfs", "--env", "BIG=" + "x" * BIG_ENV,
                 "--label", "nerdctl/name=web", "--label", "io.kubernetes.pod.name=pod1",
                 IMAGE, "big", ns=NS_BULK)
        # wait until c2 has written its marker (it runs on)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "RUNNING" not in self.ctr("tasks", "ls"):
            time.sleep(0.1)

    def stop(self) -> None:
        for ns, cid in self.running:
            self.ctr("tasks", "kill", "-s", "KILL", cid, ns=ns, check=False)
        for ns, cid in self.running:
            for _ in range(100):
                self.ctr("tasks", "delete", cid, ns=ns, check=False, timeout=20)
                if cid not in self.ctr("tasks", "ls", "-q", ns=ns, check=False).split():
                    break
                time.sleep(0.1)
        if self.proc is not None and self.proc.poll() is None:
            for ns in sorted(self.namespaces_used):
                ids = self.ctr("containers", "ls", "-q", ns=ns, check=False).split()
                if ids:
                    self.ctr("containers", "rm", *ids, ns=ns, check=False)
            terminate(self.proc)
        unmount_under(self.base)  # whatever is still mounted below our base
        for ns in self.namespaces_used - {"default"}:  # the shim keeps runc state here too
            for d in (f"/run/containerd/runc/{ns}",):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


_ENV: dict[str, object] = {}


def shared_env(request) -> ContainerdEnv:
    """The session's one containerd (built on first use, stopped at the end of the session)."""
    if "env" in _ENV:
        return _ENV["env"]  # type: ignore[return-value]
    if "error" in _ENV:
        need(False, _ENV["error"])  # type: ignore[arg-type]
    problems = [f"needs {tool} (apt-get install docker.io busybox-static)"
                for tool in ("containerd", "ctr", "runc", "busybox") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        problems.insert(0, "needs root to run containerd")
    else:
        import oracle

        ok, why = oracle.probe()  # containerd's overlayfs snapshotter and the kernel views need it
        if not ok:
            problems.insert(0, why)
        ok, why = cgroups_writable()
        if not ok:
            problems.insert(0, why)
    if problems:
        _ENV["error"] = problems[0]
        need(False, problems[0])
    base = tempfile.mkdtemp(prefix="ovf-ctrd-")
    os.chmod(base, 0o711)
    env = ContainerdEnv(base)

    def finish():
        env.stop()
        shutil.rmtree(base, ignore_errors=True)

    request.addfinalizer(finish)  # a session-scoped fixture's request: at the end of the session
    try:
        env.start()
        env.build()
    except BaseException:
        _ENV["error"] = f"hermetic containerd failed: {env.log_tail()}"
        raise
    _ENV["env"] = env
    return env


@pytest.fixture(scope="session")
def ctrd(request) -> ContainerdEnv:
    return shared_env(request)


@pytest.fixture(scope="session")
def found(ctrd):
    """find() over the live data root: (containers by (namespace, id), broken records)."""
    items = list(containerd.find(Root("/"), data_root=ctrd.root))
    return ({(c.namespace, c.id): c for c in items if isinstance(c, Container)},
            [b for b in items if isinstance(b, Broken)])


@pytest.fixture(scope="session")
def evidence(ctrd, tmp_path_factory):
    """The data root copied (cp -a: xattrs, whiteout devices) to <evidence>/var/lib/containerd."""
    ev = tmp_path_factory.mktemp("evidence")
    target = ev / "var/lib/containerd"
    target.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", ctrd.root, str(target)], check=True)
    return ev


def parse_mount_options(opts: str) -> tuple[str, list[str]]:
    fields = dict(o.split("=", 1) for o in opts.split(",") if "=" in o)
    return fields["upperdir"], fields["lowerdir"].split(":")


def snapshot_mount(ctrd: ContainerdEnv, ns: str, key: str) -> tuple[str, list[str]]:
    out = ctrd.ctr("snapshots", "--snapshotter", "overlayfs", "mounts", "/mnt/x", key, ns=ns)
    m = re.search(r"-o (\S+)", out)
    assert m, out
    return parse_mount_options(m[1])


# -- find(): the containers and their stacks ---------------------------------------------------
def test_find_lists_exactly_the_overlayfs_containers(ctrd, found):
    containers, broken = found
    expected = {("default", "c1"), ("default", "c2"), (NS_OTHER, "o1"), (NS_BULK, "big")}
    expected |= {(NS_BULK, f"b{i:03d}") for i in range(BULK)}
    assert set(containers) == expected
    # what ctr lists, namespace by namespace, is what we list (cnative, crootfs aside)
    for ns in ("default", NS_OTHER, NS_BULK):
        listed = set(ctrd.ctr("containers", "ls", "-q", ns=ns).split())
        assert listed - {"cnative", "crootfs"} == {cid for n, cid in containers if n == ns}
    # the native-snapshotter and the plain-rootfs containers are reported, not dropped
    assert len(broken) == 2, broken
    native, plain = sorted(broken, key=lambda b: "crootfs" in b.why)
    assert native.engine == "containerd" and "cnative" in native.why and "'native'" in native.why
    assert native.where == os.path.join(ctrd.root, containerd.META_DB)
    assert "crootfs" in plain.why and "--rootfs" in plain.why and "default" in plain.why
    assert "moby" in ctrd.ctr("namespaces", "ls", "-q").split()  # mobyish exists, silently skipped


def test_stacks_are_the_mounts_containerd_makes(ctrd, found):
    containers, _ = found
    for (ns, cid), c in containers.items():
        upper, lowers = snapshot_mount(ctrd, ns, cid)
        assert c.upper.dir == upper, (ns, cid)
        assert [l.dir for l in c.lowers] == lowers, (ns, cid)
        assert c.upper.role == "upper" and c.upper.id == cid
    # the running task: the kernel's own mount of c2's rootfs
    with open("/proc/self/mountinfo") as fh:
        task = os.path.join(ctrd.state, "io.containerd.runtime.v2.task/default/c2/rootfs")
        lines = [line for line in fh if f" {task} " in line]  # this containerd's, not another's
    assert len(lines) == 1, lines
    upper, lowers = parse_mount_options(lines[0].split(" - ", 1)[1].split()[2])
    c2 = containers[("default", "c2")]
    assert (c2.upper.dir, [l.dir for l in c2.lowers]) == (upper, lowers)
    assert os.path.exists(os.path.join(c2.upper.dir, "live"))


def test_container_fields(ctrd, found):
    containers, _ = found
    chain = containerd.chain_ids(ctrd.diff_ids)
    for (ns, cid), c in containers.items():
        info = json.loads(ctrd.ctr("containers", "info", cid, ns=ns))
        assert c.engine == "containerd" and c.namespace == ns
        assert c.image == info["Image"] == IMAGE
        assert c.created == info["CreatedAt"]
        assert c.state is None
        assert c.store == ctrd.root
        assert c.whiteouts == "kernel"
        # lowers: immediate parent first, ids are the chain IDs, image_index 0 = bottom layer
        assert [l.id for l in c.lowers] == chain[::-1]
        assert [l.chain_id for l in c.lowers] == chain[::-1]
        assert [l.diff_id for l in c.lowers] == ctrd.diff_ids[::-1]
        assert [l.image_index for l in c.lowers] == [1, 0]
        assert all(l.role == "image" for l in c.lowers)
        assert c.upper.id == info["SnapshotKey"] == cid
    # a pod's name is not the container's (a pod holds several): it is the container's `pod`
    assert containers[(NS_BULK, "big")].names == ["big", "web"]
    assert containers[(NS_BULK, "big")].pod == "pod1"
    assert containers[("default", "c1")].names == ["c1"]


def test_created_is_go_rfc3339nano():
    # 2026-11-28T02:12:33.392593971Z as containerd stored it (Go time.MarshalBinary, UTC)
    raw = bytes.fromhex("010000000ee29c2f9117668233ffff")
    assert containerd.go_time(raw) == "2026-11-28T02:12:33.392593971Z"
    # trailing zeros of the fraction dropped, a zone offset kept (+01:00 = 60 minutes)
    sec = 62135596800 + 1_700_000_000
    raw = b"\x01" + sec.to_bytes(8, "big") + (500_000_000).to_bytes(4, "big") + (60).to_bytes(2, "big", signed=True)
    assert containerd.go_time(raw) == "2023-11-14T23:13:20.5+01:00"
    with pytest.raises(ValueError):
        containerd.go_time(b"\x01\x02")


# -- scan(): the changes, against the kernel ---------------------------------------------------
def _kernel_check(c: Container, known: dict, tmp_path):
    import oracle

    d = str(tmp_path)
    try:
        with oracle.mounted(os.path.join(d, "base"), [l.dir for l in c.lowers], ro=True) as v:
            base = oracle.walk_view(v)
        with oracle.mounted(os.path.join(d, "merged"), [c.upper.dir] + [l.dir for l in c.lowers], ro=True) as v:
            merged = oracle.walk_view(v)
    finally:
        oracle.umount_all()
    records = list(ovforensics.scan(c.upper.dir, [l.dir for l in c.lowers]))
    built = oracle.Built(oracle.Case(l2=[], l1=None, upper=[]), "default", os.fsencode(c.upper.dir),
                         [os.fsencode(l.dir) for l in c.lowers], {}, base, merged)
    report = oracle.compare(built, records)
    assert report is None, report
    got = {r.path: (r.change, tuple(sorted(r.what)) if r.change == "modified" else ())
           for r in records if r.change != "anomaly"}
    assert {p: got.get(p) for p in known} == {p: (k, tuple(sorted(w))) for p, (k, w) in known.items()}
    assert set(got) - set(known) <= RUNC_DIRS
    assert not [r for r in records if r.change == "anomaly"]
    return records


def test_scan_c1_matches_the_kernel(ctrd, found, tmp_path):
    _kernel_check(found[0][("default", "c1")], C1_KNOWN, tmp_path)


def test_scan_other_namespace_matches_the_kernel(ctrd, found, tmp_path):
    _kernel_check(found[0][(NS_OTHER, "o1")], O1_KNOWN, tmp_path)


def test_deleted_records_name_the_lower_layer(found):
    c = found[0][("default", "c1")]
    recs = {r.path: r for r in ovforensics.scan(c.upper.dir, [l.dir for l in c.lowers])}
    assert recs[b"/etc/motd"].lower_path is not None
    assert recs[b"/etc/motd"].lower_layer.dir == c.lowers[1].dir  # /etc/motd came with the bottom layer
    assert recs[b"/etc/added"].lower_layer.dir == c.lowers[0].dir  # /etc/added with the top layer


# -- evidence ----------------------------------------------------------------------------------
def _strip(c: Container, prefix: str) -> tuple:
    def rel(p: str) -> str:
        assert p.startswith(prefix + "/"), (p, prefix)
        return p[len(prefix):]

    return (c.namespace, c.id, c.names, c.image, c.created, rel(c.upper.dir),
            [(l.id, l.diff_id, l.image_index, rel(l.dir)) for l in c.lowers])


def test_evidence_copy_gives_the_same_containers(ctrd, found, evidence):
    live = {k: _strip(c, ctrd.root) for k, c in found[0].items()}
    items = list(containerd.find(Root(str(evidence))))
    copied = [c for c in items if isinstance(c, Container)]
    store = str(evidence / "var/lib/containerd")
    assert {(c.namespace, c.id): _strip(c, store) for c in copied} == live
    assert all(c.store == store for c in copied)
    assert [b.why for b in items if isinstance(b, Broken)] == [b.why for b in found[1]]
    # and the copy scans like the original
    c1 = next(c for c in copied if c.id == "c1")
    orig = found[0][("default", "c1")]
    strip = lambda recs: [(r.path, r.change, tuple(r.what)) for r in recs]  # noqa: E731
    assert strip(ovforensics.scan(c1.upper.dir, [l.dir for l in c1.lowers])) == \
        strip(ovforensics.scan(orig.upper.dir, [l.dir for l in orig.lowers]))


def test_evidence_config_root_and_escapes(ctrd, evidence, tmp_path):
    """root = from etc/containerd/config.toml inside the evidence; a link out of it is refused."""
    ev = tmp_path / "ev2"
    (ev / "srv").mkdir(parents=True)
    subprocess.run(["cp", "-al", str(evidence / "var/lib/containerd"), str(ev / "srv/ctrd")], check=True)
    (ev / "etc/containerd").mkdir(parents=True)
    os.rename(ev / "srv/ctrd" / containerd.OVERLAY_PLUGIN, ev / "srv/snaps")
    (ev / "etc/containerd/config.toml").write_text(
        'version = 2\nroot = "/srv/ctrd"\nstate = "/run/x"\n'
        f'[plugins."{containerd.OVERLAY_PLUGIN}"]\n  root_path = "/srv/snaps"\n')
    base = list(containerd.find(Root(str(ev))))
    c1 = next(c for c in base if isinstance(c, Container) and c.id == "c1")
    assert c1.upper.dir.startswith(str(ev / "srv/snaps/snapshots") + "/")
    assert c1.store == str(ev / "srv/ctrd")
    assert len([c for c in base if isinstance(c, Container)]) == 4 + BULK
    # c1's upper becomes a link that climbs out of the evidence: refused, the rest still listed
    fs = c1.upper.dir
    os.rename(fs, fs + ".moved")
    os.symlink("../" * 30 + "etc", fs)
    items = list(containerd.find(Root(str(ev))))
    bad = [b for b in items if isinstance(b, Broken) and "c1" in b.why]
    assert len(bad) == 1 and "refused" in bad[0].why and "root" in bad[0].why, bad
    assert len([c for c in items if isinstance(c, Container)]) == len(
        [c for c in base if isinstance(c, Container)]) - 1
    # an absolute link stays inside the evidence: /etc here is <ev>/etc (no layer there)
    os.unlink(fs)
    os.symlink("/etc", fs)
    c1b = next(c for c in containerd.find(Root(str(ev))) if isinstance(c, Container) and c.id == "c1")
    assert c1b.upper.dir == str(ev / "etc")


def test_missing_data_root_yields_nothing(tmp_path):
    assert list(containerd.find(Root(str(tmp_path)))) == []
    assert list(containerd.find(Root(str(tmp_path)), data_root="/nowhere")) == []
    (tmp_path / "var/lib/containerd").mkdir(parents=True)
    assert list(containerd.find(Root(str(tmp_path)))) == []


def test_bad_config_is_reported_and_default_used(tmp_path):
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / "etc/containerd/config.toml").write_text("root = [unclosed\n")
    items = list(containerd.find(Root(str(tmp_path))))
    assert len(items) == 1 and isinstance(items[0], Broken) and "TOML" in items[0].why
    assert items[0].where == str(tmp_path / "etc/containerd/config.toml")


# -- damage ------------------------------------------------------------------------------------
def _damaged_root(evidence, tmp_path, name: str, damage) -> tuple[str, str]:
    """A hard-link copy of the evidence with a fresh, damaged copy of ``name`` (a data-root path)."""
    ev = tmp_path / "ev"
    subprocess.run(["cp", "-al", str(evidence), str(ev)], check=True)
    path = ev / "var/lib/containerd" / name
    data = path.read_bytes()
    path.unlink()  # break the hard link: the shared evidence stays intact
    path.write_bytes(damage(bytearray(data)))
    return str(ev), str(path)


def _flip_meta(data: bytearray) -> bytearray:
    page = int.from_bytes(data[24:28], "little")
    for off in (16 + 40, page + 16 + 40):  # the high-water mark of both meta pages
        data[off] ^= 0xFF
    return data


@pytest.mark.parametrize("kind,damage,words", [
    ("truncated-tiny", lambda d: d[:40], "too short"),
    ("truncated-meta-only", lambda d: d[:8192], "truncated"),
    ("empty", lambda d: bytearray(), "too short"),
    ("both-metas-bad-checksum", _flip_meta, "bad checksum"),
    ("garbage", lambda d: bytearray(os.urandom(len(d))), "bad magic"),
])
def test_damaged_meta_db(evidence, tmp_path, kind, damage, words):
    root, path = _damaged_root(evidence, tmp_path, containerd.META_DB, damage)
    items = list(containerd.find(Root(root)))
    assert len(items) == 1 and isinstance(items[0], Broken), items
    assert items[0].where == path and words in items[0].why, items[0]
    # the CLI prints one warning naming the file, no traceback
    proc = subprocess.run([sys.executable, "-m", "ovforensics", "containers", "--root", root,
                           "--engine", "containerd", "-f", "jsonl"], capture_output=True, text=True)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert path in proc.stderr and words in proc.stderr, proc.stderr


def test_damaged_namespace_leaves_the_others_listed(ctrd, evidence, tmp_path):
    with bbolt.open_db(os.path.join(ctrd.root, containerd.META_DB)) as db:
        page = db.bucket("v1", NS_OTHER).root_page
        psize = db.page_size
    assert page, "the namespace bucket should not be inline"

    def damage(d):
        d[page * psize + 16:(page + 1) * psize] = os.urandom(psize - 16)
        d[page * psize + 10:page * psize + 12] = (500).to_bytes(2, "little")  # count: past the page
        return d

    root, path = _damaged_root(evidence, tmp_path, containerd.META_DB, damage)
    items = list(containerd.find(Root(root)))
    ok = {(c.namespace, c.id) for c in items if isinstance(c, Container)}
    assert ("default", "c1") in ok and (NS_BULK, "big") in ok
    assert not any(ns == NS_OTHER for ns, _ in ok)
    bad = [b for b in items if isinstance(b, Broken) and NS_OTHER in b.why]
    assert len(bad) == 1 and bad[0].where == path and "damaged" in bad[0].why, bad


def test_damaged_container_bucket_is_one_broken_entry(ctrd, evidence, tmp_path):
    with bbolt.open_db(os.path.join(ctrd.root, containerd.META_DB)) as db:
        page = db.bucket("v1", "default", "containers", "c1").root_page
        psize = db.page_size

    def damage(d):
        d[page * psize:page * psize + 8] = (page + 1).to_bytes(8, "little")  # header names another page
        return d

    root, path = _damaged_root(evidence, tmp_path, containerd.META_DB, damage)
    items = list(containerd.find(Root(root)))
    bad = [b for b in items if isinstance(b, Broken) and "c1" in b.why]
    assert len(bad) == 1 and bad[0].where == path and f"page {page}" in bad[0].why, bad
    ok = {(c.namespace, c.id) for c in items if isinstance(c, Container)}
    assert ("default", "c2") in ok and (NS_OTHER, "o1") in ok and ("default", "c1") not in ok


@pytest.mark.parametrize("damage,words", [
    (lambda d: d[:100], "truncated"),  # meta page 0 survives: the first tree page is past the end
    (lambda d: bytearray(os.urandom(len(d))), "no valid meta page"),
])
def test_damaged_snapshotter_db(evidence, tmp_path, damage, words):
    name = containerd.OVERLAY_PLUGIN + "/metadata.db"
    root, path = _damaged_root(evidence, tmp_path, name, damage)
    items = list(containerd.find(Root(root)))
    assert not [c for c in items if isinstance(c, Container)]
    snap_broken = [b for b in items if b.where == path]
    assert len(snap_broken) == 4 + BULK  # every overlayfs container (c1 c2 o1 big b*) says why
    assert all(words in b.why for b in snap_broken), snap_broken[0]
    assert any("'native'" in b.why for b in items)  # cnative keeps its own reason
    assert any("crootfs" in b.why for b in items)
