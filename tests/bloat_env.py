"""What the bloat tests share: images with known waste, built by a real, hermetic dockerd.

One dockerd per session (:class:`engine_docker.DockerD`: own data root, exec root, socket and
pid file; stopped by its pid file) builds, with ``docker build --network none``:

* ``APP``: a 30 MiB file chmod-ed in a later layer, a directory of known size ``rm -rf``-ed,
  a file overwritten, a directory recreated over its old self (opaque); every wasted byte is
  in :data:`APP_WASTE`;
* ``CTR`` and the container ``web-1`` on it, which chmods, chowns, touches and hard-links
  files of known sizes, appends to one, adds one and makes a sparse one (:data:`WEB_FILES`);
* ``HOSTILE``: files whose names are HTML, script, bidi, newline and non-UTF-8 attacks, deleted
  again (so they show up as waste in every report).

The same ``APP`` is then written three more ways from ``docker save``: an OCI layout directory
(gzip layers), a tar of that layout, and a Docker >= 25 style archive (``manifest.json``
naming ``blobs/sha256/...``), and, on request, loaded into a hermetic Podman store and a hermetic
containerd (``ctr images import``, once unpacked into snapshots and once ``--no-unpack``).

:func:`write_example` writes the worked example of docs/bloat.md as an OCI layout from Python
alone (no root, no engine).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import engine_docker as ed
from conftest import need, need_container_runtime

ROOT = Path(__file__).resolve().parents[1]

BUSYBOX = "ovf-bloat/busybox:1"
APP = "ovf-bloat/app:1"
CTR = "ovf-bloat/ctr:1"
HOSTILE = "ovf-bloat/hostile:1"
WEB = "web-1"
HEAD = "/bin/busybox head -c"

BIG = 30 * 2**20  # the 30 MiB file chmod-ed later
JUNK = {"/junk/a/one": 1_000_000, "/junk/a/b/two": 234_567}  # rm -rf /junk
CONF_OLD, CONF_NEW = 5_000, 7_000  # /etc/conf overwritten
CACHE = {"/cache/x/old": 70_000, "/cache/keep0": 3_000}  # rm -rf /cache; mkdir /cache/x (opaque)
CACHE_NEW = 1_234

APP_DOCKERFILE = f"""\
FROM {BUSYBOX}
RUN {HEAD} {BIG} /dev/urandom > /big && mkdir -p /junk/a/b && {HEAD} {JUNK['/junk/a/one']} /dev/urandom > /junk/a/one && {HEAD} {JUNK['/junk/a/b/two']} /dev/urandom > /junk/a/b/two && {HEAD} {CONF_OLD} /dev/urandom > /etc/conf && mkdir -p /cache/x && {HEAD} {CACHE['/cache/x/old']} /dev/urandom > /cache/x/old && {HEAD} {CACHE['/cache/keep0']} /dev/urandom > /cache/keep0
RUN chmod 600 /big
RUN rm -rf /junk
RUN {HEAD} {CONF_NEW} /dev/urandom > /etc/conf
RUN rm -rf /cache && mkdir -p /cache/x && {HEAD} {CACHE_NEW} /dev/urandom > /cache/x/new
"""
#: the RUN lines, as the image history records them (layer 1 .. 5)
APP_COMMANDS = ["/bin/sh -c " + line[4:] for line in APP_DOCKERFILE.splitlines() if line.startswith("RUN ")]

#: every wasted file of APP: path -> (bytes, layer that stored it, layer that made it waste, reason)
APP_WASTE = {
    "/big": (BIG, 1, 2, "unchanged-copy"),
    "/junk/a/one": (1_000_000, 1, 3, "deleted-dir"),
    "/junk/a/b/two": (234_567, 1, 3, "deleted-dir"),
    "/etc/conf": (CONF_OLD, 1, 4, "overwritten"),
    "/cache/x/old": (70_000, 1, 5, "opaque"),
    "/cache/keep0": (3_000, 1, 5, "opaque"),
}
APP_WASTED = sum(v[0] for v in APP_WASTE.values())

#: CTR's files, and what web-1 does to them: path -> (size in the image, category, what, bytes after)
CTR_FILES = {"/c/chmod.bin": 2_000_000, "/c/chown.bin": 300_000, "/c/touch.bin": 40_000,
             "/c/link.bin": 5_000, "/c/edit.bin": 6_000}
CTR_DOCKERFILE = f"FROM {BUSYBOX}\nRUN mkdir /c && " + " && ".join(
    f"{HEAD} {size} /dev/urandom > {path}" for path, size in CTR_FILES.items()) + "\n"
NEW_BIN, SPARSE = 12_345, 50_000_000
WEB_SCRIPT = (f"chmod 600 /c/chmod.bin && /bin/busybox chown 1:1 /c/chown.bin && touch /c/touch.bin "
              f"&& ln /c/link.bin /c/hard && echo more >> /c/edit.bin && {HEAD} {NEW_BIN} /dev/urandom "
              f"> /new.bin && /bin/busybox truncate -s {SPARSE} /sparse.img")
#: path -> (category, what, bytes counted)
WEB_FILES = {
    "/c/chmod.bin": ("copy_unchanged", ["mode"], 2_000_000),
    "/c/chown.bin": ("copy_unchanged", ["owner"], 300_000),
    "/c/touch.bin": ("copy_unchanged", ["mtime"], 40_000),
    "/c/link.bin": ("copy_unchanged", ["hard-link"], 5_000),
    "/c/hard": ("link", [], 0),
    "/c/edit.bin": ("copy_changed", ["content", "mtime"], 6_005),
    "/new.bin": ("added", [], NEW_BIN),
    "/sparse.img": ("added", [], SPARSE),
}

#: HOSTILE's names (under /h), each with its size: all deleted by the next layer
HOSTILE_NAMES = {
    b"<img src=x onerror=alert(1)>": 1_000,
    b"<" + b"/script>alert(2)<": 2_000,  # a directory "<" holding "script>alert(2)<"
    b"\"'><svg onload=alert(3)>": 3_000,
    b"bad\xffname": 4_000,
    b"new\nline": 5_000,
    b"\xe2\x80\xaeRTL": 6_000,
    b"=cmd|' -C calc'!A0": 7_000,
}


class Env:
    """The session's dockerd, its images and the archives written from them."""

    def __init__(self, base: Path):
        self.base = base
        self.dockerd = ed.DockerD(base / "dockerd")
        self.data = str(self.dockerd.data)
        self.rootfs_bytes = 0
        self.app_id = ""
        self.save = base / "app.tar"
        self.oci_dir = base / "app-oci"
        self.oci_tar = base / "app-oci.tar"
        self.docker25 = base / "app-docker25.tar"
        self.two = base / "two.tar"
        self._podman = None
        self._containerd = None
        self.cleanups: list = []

    def build(self) -> None:
        d = self.dockerd
        rootfs = ed.busybox_rootfs(self.base / "rootfs")
        self.rootfs_bytes = sum(p.stat().st_size for p in rootfs.rglob("*")
                                if p.is_file() and not p.is_symlink())
        tar = subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],
                             capture_output=True, check=True)
        d.cli("import", "-", BUSYBOX, input=tar.stdout)
        for tag, dockerfile, extra in ((APP, APP_DOCKERFILE, None), (CTR, CTR_DOCKERFILE, None),
                                       (HOSTILE, f"FROM {BUSYBOX}\nCOPY h /h\nRUN rm -rf /h\n",
                                        _hostile_tree)):
            ctx = self.base / ("ctx-" + tag.split("/")[-1].replace(":", "-"))
            ctx.mkdir()
            (ctx / "Dockerfile").write_text(dockerfile)
            if extra is not None:
                extra(ctx)
            d.cli("build", "--network", "none", "-t", tag, str(ctx))
        proc = d.cli("run", "--name", WEB, "--network", "none", CTR, "sh", "-c", WEB_SCRIPT,
                     check=False)
        assert proc.returncode == 0, proc.stderr
        self.app_id = d.inspect(APP)["Id"]
        d.cli("save", "-o", str(self.save), APP)
        d.cli("save", "-o", str(self.two), APP, CTR)
        write_oci(self.save, self.oci_dir, gzip_layers=True)
        _tar_dir(self.oci_dir, self.oci_tar)
        write_docker25(self.save, self.docker25, APP)

    def podman(self):
        """A hermetic Podman store with APP loaded (``localhost/ovf-bloat/app:1``), and a
        different image also answering to the unqualified name ``ovf-bloat/app:1``."""
        if self._podman is None:
            import engine_podman as ep

            why = ep.missing()
            need(why is None, why or "")
            traces = ep.host_traces()
            pm = ep.Podman(self.base / "podman")
            self.cleanups.append(lambda: (pm.cleanup(), ep.remove_traces(traces)))
            pm("load", "-i", str(self.save))
            busybox = self.base / "busybox.tar"
            self.dockerd.cli("save", "-o", str(busybox), BUSYBOX)
            pm("load", "-i", str(busybox))
            pm("tag", "localhost/" + BUSYBOX, "quay.io/" + APP)
            self._podman = pm
        return self._podman

    def containerd(self):
        """A hermetic containerd with APP imported in namespace ``default`` (unpacked into
        overlayfs snapshots) and ``nounpack`` (``--no-unpack``: layers only as content blobs)."""
        if self._containerd is None:
            missing = [t for t in ("containerd", "ctr") if shutil.which(t) is None]
            need(not missing, f"needs {', '.join(missing)} (apt-get install -y docker.io)")
            ctrd = Containerd(self.base / "containerd")
            self.cleanups.append(ctrd.stop)
            ctrd.start()
            ctrd.ctr("images", "import", "--snapshotter", "overlayfs", str(self.save))
            ctrd.ctr("images", "import", "--no-unpack", str(self.save), ns="nounpack")
            self._containerd = ctrd
        return self._containerd

    def stop(self) -> None:
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - cleaning up as much as we can
                pass
        self.dockerd.stop()


def _hostile_tree(ctx: Path) -> None:
    top = os.fsencode(ctx / "h")
    os.makedirs(top + b"/<")
    for name, size in HOSTILE_NAMES.items():
        with open(top + b"/" + name, "wb") as fh:
            fh.write(b"x" * size)


class Containerd:
    """containerd with its own config, root, state and socket (stopped by the process we started)."""

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "root"
        self.sock = base / "containerd.sock"
        self.proc: subprocess.Popen | None = None

    def ctr(self, *args: str, ns: str = "default") -> str:
        proc = subprocess.run(["ctr", "-a", str(self.sock), "-n", ns, *args], capture_output=True,
                              text=True, timeout=120)
        if proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def start(self) -> None:
        self.base.mkdir(parents=True)
        conf = self.base / "config.toml"
        conf.write_text(f'version = 2\nroot = "{self.root}"\nstate = "{self.base / "state"}"\n'
                        f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                        f'[grpc]\n  address = "{self.sock}"\n')
        with open(self.base / "log", "wb") as log:
            self.proc = subprocess.Popen(["containerd", "--config", str(conf)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                need(False, f"containerd exited: {(self.base / 'log').read_text()[-500:]}")
            if self.sock.exists() and subprocess.run(["ctr", "-a", str(self.sock), "version"],
                                                     capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        need(False, "containerd did not answer within 30 s")

    def stop(self) -> None:
        ed.terminate(self.proc)
        ed.unmount_under(self.base)


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """The CLI in a child process, text output (the bloat and HTML report tests)."""
    return subprocess.run([sys.executable, "-m", "ovforensics", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT)


# -- archives written from `docker save` ------------------------------------------------------------
def _save_parts(save: Path) -> tuple[dict, bytes, list[bytes]]:
    """(manifest entry, config bytes, layer tar bytes bottom first) of a one-image docker save."""
    with tarfile.open(save) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))[0]
        config = tf.extractfile(manifest["Config"]).read()
        layers = [tf.extractfile(name).read() for name in manifest["Layers"]]
    return manifest, config, layers


def _blob(blobs: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}"


def write_oci(save: Path, dest: Path, gzip_layers: bool = True, ref: str = APP) -> None:
    """An OCI image layout directory holding the image of a ``docker save`` archive."""
    manifest, config, layers = _save_parts(save)
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    descs = []
    for data in layers:
        if gzip_layers:
            data = gzip.compress(data, compresslevel=1, mtime=0)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzip_layers else ""),
                      "digest": _blob(blobs, data), "size": len(data)})
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": _blob(blobs, config), "size": len(config)},
           "layers": descs}
    raw = json.dumps(doc).encode()
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": doc["mediaType"], "digest": _blob(blobs, raw), "size": len(raw),
                            "annotations": {"io.containerd.image.name": "docker.io/" + ref,
                                            "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}]}
    (dest / "index.json").write_text(json.dumps(index))
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def write_docker25(save: Path, dest: Path, ref: str) -> None:
    """A ``docker save`` archive as Docker >= 25 writes it: an OCI layout plus a manifest.json
    naming its blobs (layers uncompressed)."""
    with tempfile.TemporaryDirectory(prefix="ovf-d25-") as tmp:
        layout = Path(tmp) / "layout"
        write_oci(save, layout, gzip_layers=False, ref=ref)
        manifest, _config, layers = _save_parts(save)
        index = json.loads((layout / "index.json").read_text())
        doc = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
        (layout / "manifest.json").write_text(json.dumps([{
            "Config": "blobs/sha256/" + doc["config"]["digest"][7:], "RepoTags": [ref],
            "Layers": ["blobs/sha256/" + d["digest"][7:] for d in doc["layers"]]}]))
        _tar_dir(layout, dest)


def _tar_dir(src: Path, dest: Path) -> None:
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        for path in sorted(src.rglob("*")):
            tf.add(path, arcname=str(path.relative_to(src)), recursive=False)


# -- the worked example of docs/bloat.md --------------------------------------------------------------
def _layer_tar(entries: list[tuple[str, bytes | None, int]]) -> bytes:
    """A layer tar from (name, content or None for a directory, mode)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 1_700_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _fill(n: int, seed: str) -> bytes:
    return (hashlib.sha256(seed.encode()).hexdigest().encode() * (n // 64 + 1))[:n]


#: the worked example: (command, [(name, content or None, mode)]) bottom first
EXAMPLE_LAYERS = [
    ("base", [("bin/", None, 0o755), ("bin/app", _fill(1000, "app"), 0o755),
              ("etc/", None, 0o755), ("etc/conf", _fill(200, "conf1"), 0o644),
              ("var/", None, 0o755), ("var/cache/", None, 0o755),
              ("var/cache/a", _fill(300, "a"), 0o644), ("var/cache/b", _fill(400, "b"), 0o644)]),
    ("RUN add data", [("data/", None, 0o755), ("data/big", _fill(5000, "big"), 0o644),
                      ("data/tmp/", None, 0o755), ("data/tmp/x", _fill(600, "x"), 0o644),
                      ("data/tmp/y", _fill(700, "y"), 0o644)]),
    ("RUN chmod 600 /data/big", [("data/", None, 0o755), ("data/big", _fill(5000, "big"), 0o600)]),
    ("RUN rm -rf /data/tmp", [("data/", None, 0o755), ("data/.wh.tmp", b"", 0o644)]),
    ("RUN write /etc/conf", [("etc/", None, 0o755), ("etc/conf", _fill(250, "conf2"), 0o644)]),
    ("RUN rm -rf /var/cache && mkdir /var/cache && write /var/cache/c",
     [("var/", None, 0o755), ("var/cache/", None, 0o755), ("var/cache/.wh..wh..opq", b"", 0o644),
      ("var/cache/c", _fill(50, "c"), 0o644)]),
]
EXAMPLE = {"stored": 13_500, "visible": 6_300, "wasted": 7_200, "efficiency": 0.466667,
           "wasted_percent": 53.3333,
           "waste": {"/data/big": (5000, 1, 2, "unchanged-copy"),
                     "/data/tmp/x": (600, 1, 3, "deleted-dir"),
                     "/data/tmp/y": (700, 1, 3, "deleted-dir"),
                     "/etc/conf": (200, 0, 4, "overwritten"),
                     "/var/cache/a": (300, 0, 5, "opaque"),
                     "/var/cache/b": (400, 0, 5, "opaque")}}


def write_example(dest: Path) -> None:
    """The worked example of docs/bloat.md as an OCI layout (``example:1``)."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    tars = [_layer_tar(entries) for _, entries in EXAMPLE_LAYERS]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for t in tars]},
        "history": [{"created_by": cmd} for cmd, _ in EXAMPLE_LAYERS]}).encode()
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": _blob(blobs, config), "size": len(config)},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _blob(blobs, t),
                       "size": len(t)} for t in tars]}
    raw = json.dumps(doc).encode()
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": doc["mediaType"], "digest": _blob(blobs, raw), "size": len(raw),
         "annotations": {"org.opencontainers.image.ref.name": "example:1"}}]}))
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


# -- the session's one environment --------------------------------------------------------------------
_STATE: dict[str, object] = {}


def session_env(request) -> Env:
    """The session's environment, built on first use and stopped at the end of the session
    (``request`` is a session-scoped fixture's)."""
    if "env" in _STATE:
        return _STATE["env"]  # type: ignore[return-value]
    if "error" in _STATE:
        need(False, str(_STATE["error"]))
    need_container_runtime()  # the images are built by `docker build`, which runs containers
    why = ed.missing()
    if why is not None:
        _STATE["error"] = why
        need(False, why)
    base = Path(tempfile.mkdtemp(prefix="ovf-bloat-"))
    env = Env(base)

    def finish():
        env.stop()
        shutil.rmtree(base, ignore_errors=True)

    request.addfinalizer(finish)
    error = env.dockerd.start()
    if error is not None:
        _STATE["error"] = f"dockerd does not come up here: {error}"
        need(False, str(_STATE["error"]))
    try:
        env.build()
    except BaseException as exc:
        _STATE["error"] = f"building the bloat images failed: {exc}"
        raise
    _STATE["env"] = env
    return env
