"""Images read every way they come, never extracted: the same image gives the same numbers.

The image a real dockerd built (tests/bloat_env.py) is read from the docker store offline
(``repositories.json`` -> imagedb -> layerdb -> ``overlay2/<cache-id>/diff``), from its
``docker save`` archive (old layout), from a Docker >= 25 style archive (OCI blobs named by
``manifest.json``), from an OCI layout directory (gzip layers) and a tar of it, from a Podman
store (``podman load``) and from containerd (``ctr images import``; once unpacked into
snapshots, once only as content blobs). Names resolve like the engines resolve them.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import bloat_env as be  # noqa: E402

from ovforensics.bloat import audit_image  # noqa: E402
from ovforensics.stores.images import ImageError, open_image, parse_ref, ref_matches  # noqa: E402
from ovforensics.layers.layer import DirLayer  # noqa: E402
from ovforensics.layers.tarlayer import TarLayer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovforensics", *args], capture_output=True,
                          text=True, cwd=ROOT)


@pytest.fixture(scope="session")
def env(request):
    return be.session_env(request)


def numbers(img) -> dict:
    """What must not depend on where the image was read from."""
    report = audit_image(img)
    return {
        "totals": report.totals,
        "layers": [{k: r[k] for k in ("stored_files", "stored_bytes", "visible_files", "visible_bytes",
                                      "wasted_files", "wasted_bytes", "caused_files", "caused_bytes",
                                      "added", "modified", "deleted", "copied", "command", "diff_id")}
                   for r in report.layers],
        "waste": [{k: w[k] for k in ("path", "bytes", "layer", "made_by", "reason", "what")}
                  for w in report.waste],
        "id": img.id,
    }


# -- references ------------------------------------------------------------------------------------
@pytest.mark.parametrize("query, stored, match", [
    ("app:1", "app:1", True),
    ("app:1", "docker.io/library/app:1", True),
    ("docker.io/library/app:1", "app:1", True),
    ("library/app:1", "app:1", True),
    ("app", "app:latest", True),
    ("app:1", "app:2", False),
    ("app:1", "localhost/app:1", True),  # podman's short names
    ("localhost/app:1", "app:1", False),
    ("ovf-bloat/app:1", "docker.io/ovf-bloat/app:1", True),
    ("ovf-bloat/app:1", "quay.io/ovf-bloat/app:1", True),  # unqualified: any registry
    ("docker.io/ovf-bloat/app:1", "quay.io/ovf-bloat/app:1", False),
    ("registry:5000/x/y:2", "registry:5000/x/y:2", True),
    ("app@sha256:" + "a" * 64, "docker.io/library/app@sha256:" + "a" * 64, True),
    ("App:1", "app:1", False),  # not a reference
])
def test_ref_matches(query, stored, match):
    assert ref_matches(query, stored) is match


def test_parse_ref():
    assert parse_ref("registry:5000/x/y") .domain == "registry:5000"
    assert parse_ref("x/y").domain is None and parse_ref("x/y").tag == "latest"
    assert parse_ref("bad name") is None and parse_ref("") is None


# -- one image, every way --------------------------------------------------------------------------
def test_store_archive_and_oci_layout_give_the_same_numbers(env):
    ways = {
        "docker store": dict(ref=be.APP, engine="docker", data_root=env.data),
        "docker save": dict(ref=str(env.save)),
        "docker 25 save": dict(ref=str(env.docker25)),
        "OCI layout dir": dict(ref=str(env.oci_dir)),
        "OCI layout tar": dict(ref=str(env.oci_tar)),
    }
    results = {}
    kinds = {}
    for way, kw in ways.items():
        with open_image(**kw) as img:
            results[way] = numbers(img)
            kinds[way] = (img.kind, {type(item.layer) for item in img.layers})
    first = results["docker store"]
    assert first["totals"]["wasted_bytes"] == be.APP_WASTED
    assert first["id"] == env.app_id
    for way, got in results.items():
        assert got == first, way
    assert {way: kind for way, (kind, _) in kinds.items()} == {
        "docker store": "docker", "docker save": "docker-archive", "docker 25 save": "docker-archive",
        "OCI layout dir": "oci-layout", "OCI layout tar": "oci-archive"}
    assert kinds["docker store"][1] == {DirLayer} and kinds["OCI layout dir"][1] == {TarLayer}
    for way in ("docker save", "docker 25 save", "OCI layout tar"):  # layers read inside the archive
        assert all(issubclass(t, TarLayer) for t in kinds[way][1]), way


def test_nothing_is_extracted(env, tmp_path):
    """Reading an archive writes nothing next to it (a gzip layer goes to an anonymous temp file)."""
    before = sorted(os.listdir(env.base))
    with open_image(str(env.oci_tar)) as img:
        numbers(img)
        assert all(item.source.startswith(str(env.oci_tar) + ":blobs/sha256/") for item in img.layers)
    assert sorted(os.listdir(env.base)) == before


def test_history_commands_and_ids(env):
    with open_image(str(env.save)) as img:
        assert img.name == be.APP and img.tags == [be.APP] and img.id == env.app_id
        assert [item.command for item in img.layers][1:] == be.APP_COMMANDS
        assert img.layers[0].comment == "Imported from -"
        diff_ids = env.dockerd.inspect(be.APP)["RootFS"]["Layers"]
        assert [item.diff_id for item in img.layers] == diff_ids
    with open_image(be.APP, engine="docker", data_root=env.data) as img:
        assert [item.diff_id for item in img.layers] == diff_ids
        assert all(item.source.startswith(os.path.join(env.data, "overlay2")) for item in img.layers)
        assert [item.command for item in img.layers][1:] == be.APP_COMMANDS


def test_podman_store(env):
    pm = env.podman()
    with open_image("localhost/" + be.APP, engine="podman", data_root=str(pm.storage)) as img:
        assert img.kind == "podman" and img.name == "localhost/" + be.APP
        got = numbers(img)
    with open_image(str(env.save)) as img:
        assert got == numbers(img)
    # an unqualified name two different images answer to is ambiguous
    with pytest.raises(ImageError, match="ambiguous"):
        open_image(be.APP, engine="podman", data_root=str(pm.storage))
    # an id prefix
    with open_image(env.app_id.split(":")[1][:12], engine="podman", data_root=str(pm.storage)) as img:
        assert img.id == env.app_id


def test_containerd_snapshots_and_blobs(env):
    ctrd = env.containerd()
    with open_image(str(env.save)) as img:
        want = numbers(img)
    with open_image(be.APP, engine="containerd", data_root=str(ctrd.root)) as img:
        # the unpacked namespace's snapshots and the --no-unpack namespace's blobs are the same
        # image (one id): the first copy is read, and the other is named in a warning
        assert img.namespace == "default" and img.kind == "containerd"
        assert {type(item.layer) for item in img.layers} == {DirLayer}
        got = numbers(img)
        # the id is what `ctr images ls` shows: the target (manifest) digest, not the config's
        listed = {line.split()[0]: line.split()[2] for line in ctrd.ctr("images", "ls").splitlines()[1:]}
        assert got.pop("id") == listed["docker.io/" + be.APP] != want["id"]
        assert got == {k: v for k, v in want.items() if k != "id"}
        assert any("namespace nounpack" in w for w in img.warnings)
    # both ids are accepted: the one ctr shows and the config digest (crictl's, docker's)
    for query in (listed["docker.io/" + be.APP][7:19], want["id"][7:19]):
        with open_image(query, engine="containerd", data_root=str(ctrd.root)) as img:
            assert img.name == "docker.io/" + be.APP
    # only blobs: make the snapshots unreachable by reading a copy of the store without them,
    # taken once containerd has stopped (its garbage collector removes import leftovers)
    ctrd.stop()
    copy = env.base / "ctrd-blobs-only"
    for rel in ("io.containerd.metadata.v1.bolt", "io.containerd.content.v1.content/blobs"):
        shutil.copytree(ctrd.root / rel, copy / rel)
    (copy / "io.containerd.snapshotter.v1.overlayfs").mkdir()
    shutil.copy2(ctrd.root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db",
                 copy / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db")
    with open_image("docker.io/" + be.APP, engine="containerd", data_root=str(copy)) as img:
        assert {type(item.layer) for item in img.layers} == {TarLayer}
        got = numbers(img)
        assert got.pop("id") == listed["docker.io/" + be.APP]
        assert got == {k: v for k, v in want.items() if k != "id"}


# -- names and errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [be.APP, "docker.io/" + be.APP, "ID12", "ID", "sha256:ID"])
def test_docker_names(env, name):
    name = name.replace("ID12", env.app_id[7:19]).replace("ID", env.app_id[7:])
    with open_image(name, engine="docker", data_root=env.data) as img:
        assert img.id == env.app_id


@pytest.mark.parametrize("args, words", [
    (["nope:1", "--engine", "docker", "--data-root", "DATA"], "nope:1: no such image (looked in: docker)"),
    (["ovf-bloat/app:2", "--engine", "docker", "--data-root", "DATA"], "no such image"),
    (["TWO"], "holds 2 images"),
    (["TWO", "--select", "ovf-bloat/nope:1"], "no image 'ovf-bloat/nope:1'"),
    (["README"], "README.md: not a readable tar archive"),
    (["LAYER"], "build.tar: neither a docker save archive (manifest.json) nor an OCI layout"),
    (["app:1", "--data-root", "DATA"], "--data-root needs --engine"),
    (["app:1", "--engine", "rkt"], "--engine"),
    (["Not A Name"], "neither an image archive, an OCI layout nor an image reference"),
])
def test_errors_are_one_line_exit_2(env, args, words):
    args = [a.replace("DATA", env.data).replace("TWO", str(env.two))
            .replace("README", str(ROOT / "README.md"))
            .replace("LAYER", str(ROOT / "samples/experiment/build.tar")) for a in args]
    proc = run("image", *args, "--no-config")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr


def test_multi_image_archive_select(env):
    with open_image(str(env.two), select=be.CTR) as img:
        assert img.name == be.CTR and len(img.layers) == 2
    with open_image(str(env.two), select="docker.io/" + be.APP) as img:
        assert img.id == env.app_id


def test_truncated_archive_is_an_error(env, tmp_path):
    cut = tmp_path / "cut.tar"
    with open(env.save, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(os.path.getsize(env.save) // 2))
    with pytest.raises(ImageError):
        with open_image(str(cut)) as img:
            audit_image(img)


def _linked_archive(tmp_path: Path, target: str) -> Path:
    """The worked example as an old-layout docker save whose bottom layer is a symlink."""
    base = tmp_path / "ex"
    if not base.exists():
        be.write_example(base)
    index = json.loads((base / "index.json").read_text())
    manifest = json.loads((base / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    layers = [d["digest"][7:] for d in manifest["layers"]]
    out = tmp_path / f"linked-{len(list(tmp_path.iterdir()))}.tar"
    with tarfile.open(out, "w") as tf:
        for n, digest in enumerate(layers):
            tf.add(base / "blobs/sha256" / digest, arcname=f"l{n}/layer.tar")
        link = tarfile.TarInfo("dup/layer.tar")
        link.type, link.linkname = tarfile.SYMTYPE, target
        tf.addfile(link)
        tf.add(base / "blobs/sha256" / manifest["config"]["digest"][7:], arcname="config.json")
        doc = json.dumps([{"Config": "config.json", "RepoTags": ["x:1"],
                           "Layers": ["dup/layer.tar"] + [f"l{n}/layer.tar" for n in range(1, len(layers))]}])
        info = tarfile.TarInfo("manifest.json")
        info.size = len(doc)
        tf.addfile(info, io.BytesIO(doc.encode()))
    return out


def test_layer_symlinks_stay_inside_the_archive(tmp_path):
    """Old docker save links a repeated layer to the first one's layer.tar: followed inside the
    archive only; a link that climbs out of it is refused, never followed on the host."""
    with open_image(str(_linked_archive(tmp_path, "../l0/layer.tar"))) as img:
        assert audit_image(img).totals["wasted_bytes"] == be.EXAMPLE["wasted"]
    for target in ("../../l0/layer.tar", "/etc/passwd", "../../../../../etc/passwd"):
        with pytest.raises(ImageError, match="no layer member 'dup/layer.tar'"):
            open_image(str(_linked_archive(tmp_path, target)))
