"""Issue 19: one file to ship, a Velociraptor artifact, a Kubernetes node scan.

- The single file (scripts/build-single) runs in a Debian 12 root that has no Python and no
  libmagic: ``--version`` (the compiled differ inside), and the README's sample diff byte for
  byte as the pip-installed tool writes it, ``--magic`` too.
- The artifacts and the manifest parse as YAML, and the command lines they run are taken from
  the files and run against a real Docker store, so they cannot drift from the CLI.
No Velociraptor server or cluster is reachable here (docs: contrib/*/README.md).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import need
from test_engine_docker import _copy_store, dockerd  # noqa: F401 (the hermetic dockerd fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOKWORM = "/var/cache/ovforensics/bookworm"
SAMPLE = ["diff", "--upper", "samples/experiment/build.tar", "--lower",
          "samples/experiment/material2.tar", "--lower", "samples/experiment/material.tar"]
ARTIFACTS = [os.path.join(ROOT, "contrib/velociraptor", n)
             for n in ("Linux.Forensics.OverlayDiff.yaml", "Linux.Forensics.ContainerBloat.yaml")]
DAEMONSET = os.path.join(ROOT, "contrib/kubernetes/daemonset.yaml")


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    need(os.geteuid() == 0, "needs root (chroot)")
    for tool in ("cargo", "ldconfig"):
        need(shutil.which(tool) is not None, f"needs {tool}")
    out = tmp_path_factory.mktemp("single")
    proc = subprocess.run([os.path.join(ROOT, "scripts/build-single"), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(out / "ovforensics-linux-x86_64")


@pytest.fixture(scope="module")
def bare_debian(tmp_path_factory, single):
    """A copy of the cached Debian 12 minbase root (tests/bookworm/build.sh), the single file
    and the samples in it; no Python, no libmagic."""
    if not os.path.exists(os.path.join(BOOKWORM, ".ovf-ready")):
        proc = subprocess.run([os.path.join(ROOT, "tests/bookworm/build.sh"), BOOKWORM],
                              capture_output=True, text=True)
        need(proc.returncode == 0, f"no Debian 12 root: {proc.stderr.strip()[-300:]}")
    top = tmp_path_factory.mktemp("bookworm") / "root"
    subprocess.run(["cp", "-a", BOOKWORM, str(top)], check=True)
    work = top / "work"
    work.mkdir()
    shutil.copy2(single, work / "ovforensics")
    shutil.copytree(os.path.join(ROOT, "samples"), work / "samples")
    return top


def _in(root, *argv) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(root), "/bin/sh", "-c",
                           "cd /work && ./ovforensics " + " ".join(argv)],
                          capture_output=True, timeout=300)


def test_the_debian_root_has_no_python(bare_debian):
    for name in ("usr/bin/python3", "usr/bin/python", "usr/local/bin/python3"):
        assert not os.path.lexists(bare_debian / name)
    assert not list((bare_debian / "usr/lib/x86_64-linux-gnu").glob("libmagic.so*"))


def test_single_file_version_names_the_compiled_differ(bare_debian):
    proc = _in(bare_debian, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"ovforensics ") and b"differ: native" in proc.stdout


@pytest.mark.parametrize("extra", [[], ["--magic"], ["-f", "csv"]])
def test_single_file_sample_diff_is_the_pip_tools(bare_debian, extra):
    fmt = [] if "-f" in extra else ["-f", "jsonl"]
    mine = _in(bare_debian, *SAMPLE, *fmt, *extra)
    assert mine.returncode == 0, mine.stderr
    pip = subprocess.run([sys.executable, "-m", "ovforensics", *SAMPLE, *fmt, *extra],
                         capture_output=True, cwd=ROOT)
    assert mine.stdout == pip.stdout and mine.stdout
    if "--magic" in extra:
        assert b'"mime":"text/plain"' in mine.stdout  # libmagic and its database, inside


# -- the artifacts and the manifest: their command lines, run --------------------------------------
def _yaml(path):
    yaml = pytest.importorskip("yaml") if not os.environ.get("OVF_REQUIRE_REAL") else __import__("yaml")
    with open(path) as fh:
        return yaml.safe_load(fh)


def _argvs(vql: str) -> list[list[str]]:
    """Every ``execve(argv=[...] + ...)`` of a VQL query: its items, quoted strings as they are,
    variables by name."""
    out = []
    for m in re.finditer(r"execve\(argv=\[(.*?)\]((?:\s*\+\s*\w+)*)", vql):
        items = [t.strip() for t in m.group(1).split(",")]
        items += [v.strip() for v in m.group(2).split("+") if v.strip()]
        out.append(items)
    return out


def test_the_artifacts_parse_and_declare_the_tool():
    for path in ARTIFACTS:
        doc = _yaml(path)
        assert doc["type"] == "CLIENT" and doc["name"] == os.path.basename(path)[:-5]
        assert [t["name"] for t in doc["tools"]] == ["ovforensics"]
        queries = [s["query"] for s in doc["sources"]]
        assert all("Generic.Utils.FetchBinary" in q for q in queries)
        assert all(_argvs(q) for q in queries)


def _expand(items, values) -> list[str]:
    argv = []
    for item in items:
        if item.startswith('"'):
            argv.append(json.loads(item))
        else:
            value = values[item]
            argv += value if isinstance(value, list) else [value]
    return argv


def _docker_store(daemon, tmp_path):
    evidence = tmp_path / "evidence"
    _copy_store(daemon, evidence / "var/lib/docker")
    return evidence


def test_the_artifacts_command_lines_run_against_a_real_store(tmp_path, dockerd):  # noqa: F811
    daemon = dockerd
    evidence = _docker_store(daemon, tmp_path)
    binary = [sys.executable, "-m", "ovforensics"]
    ran = 0
    for path in ARTIFACTS:
        for source in _yaml(path)["sources"]:
            for items in _argvs(source["query"]):
                values = {"Binary": binary, "Root": str(evidence), "Id": "c1", "Engine": "docker",
                          "Out": str(tmp_path / f"out{ran}.jsonl"),
                          "OnlyArgs": ["--only", "deleted,added"], "HashArgs": ["--hash", "sha256"],
                          "PackagesArgs": ["--packages"]}
                argv = _expand(items, values)
                proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
                assert proc.returncode == 0, (argv, proc.stderr)
                if "containers" in argv:
                    rows = [json.loads(line) for line in proc.stdout.splitlines()]
                    assert {"c1"} <= {n for r in rows for n in r["names"]}
                ran += 1
    assert ran >= 4
    report = [json.loads(line) for line in (tmp_path / "out2.jsonl").read_text().splitlines()]
    assert "meta" in report[0]  # the run record first (--meta)
    assert {r["change"] for r in report[1:]} <= {"added", "deleted"}  # --only
    assert any(r.get("sha256") for r in report[1:])  # --hash


def test_the_node_scan_runs_its_script_against_a_real_store(tmp_path, dockerd):  # noqa: F811
    doc = _yaml(DAEMONSET)
    assert doc["kind"] == "DaemonSet"
    spec = doc["spec"]["template"]["spec"]
    assert {"operator": "Exists"} in spec["tolerations"]
    (container,) = spec["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["host"]["mountPath"] == "/host" and mounts["host"]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["out"]["hostPath"]["path"] != "/" and not mounts["out"]["mountPath"].startswith("/host")
    assert "SYS_ADMIN" in container["securityContext"]["capabilities"]["add"]
    script = container["args"][0].replace("sleep infinity", "true")
    evidence = _docker_store(dockerd, tmp_path)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "ovforensics"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m ovforensics \"$@\"\n")
    shim.chmod(0o755)
    script = (script.replace("/usr/local/bin/ovforensics", str(shim))
              .replace("/host", str(evidence)).replace("/out/", str(tmp_path / "out") + "/"))
    proc = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "NODE_NAME": "node-1", "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = list((tmp_path / "out/node-1").iterdir())
    reports = sorted(p.name for p in run_dir.iterdir())
    assert "containers.jsonl" in reports and len(reports) >= 3
    assert "failed" not in proc.stderr
