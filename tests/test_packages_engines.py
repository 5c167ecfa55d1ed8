"""Package databases against a real dockerd and a real podman: a debootstrapped Debian 12 image, a layer that
installs two .debs, and a container doing what an intruder and an admin do. Every expectation
is held against ``dpkg --verify`` run inside the committed container itself (the engine's own
truth), minus what the image alone already reports.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import engine_docker as ed  # noqa: E402
import packages_env as pe  # noqa: E402
from conftest import need, need_container_runtime  # noqa: E402

import ovforensics  # noqa: E402

BASE, PKGS, CHECK = "ovf-bookworm:base", "ovf-bookworm:pkgs", "ovf-bookworm:check"
SHELL = b'<?php system($_GET["c"]); ?>\n'
PREP = "set -e; cd /tmp; tar -xf -; dpkg -i ovf-old_1.0_all.deb ovf-up_1.0_all.deb; rm -f /tmp/*.deb"
INTRUDE = r"""set -e
cd /tmp; tar -xf -
dpkg -i ovf-tool_1.0_all.deb ovf-up_2.0_all.deb >/dev/null
dpkg -r ovf-old >/dev/null
rm -f /tmp/*.deb
cp /usr/bin/true /usr/bin/ls                       # a replaced packaged binary
chmod 4755 /usr/bin/cat                            # a chmod of a packaged file
rm /usr/bin/tail                                   # a deleted packaged file
echo '# admin was here' >> /etc/login.defs         # an edited conffile of the image
echo 'listen=0.0.0.0' >> /etc/ovf-tool.conf        # an edited conffile of a new package
echo tampered >> /usr/bin/ovf-tool                 # an altered file of a new package
printf '#!/bin/sh\nexec /bin/sh -i\n' > /usr/local/bin/backdoor; chmod 755 /usr/local/bin/backdoor
mkdir -p /var/www/html; cat > /var/www/html/shell.php <<'EOS'
<?php system($_GET["c"]); ?>
EOS
"""


class DockerEngine:
    name = "docker"

    def __init__(self, base):
        self.daemon = ed.DockerD(base / "d")
        self.data_root = str(self.daemon.data)

    def start(self):
        why = ed.missing()
        need(why is None, why or "")
        error = self.daemon.start()
        need(error is None, f"dockerd does not come up here: {error}")

    def import_tar(self, tar: bytes, tag: str):
        self.daemon.cli("import", "-", tag, input=tar, timeout=300)

    def run_i(self, name, image, script, data: bytes):
        self.daemon.cli("run", "-i", "--name", name, "--network", "none", image, "sh", "-c",
                        script, input=data)

    def commit(self, name, tag):
        self.daemon.cli("commit", name, tag)

    def run_rm(self, image, *cmd) -> subprocess.CompletedProcess:
        return self.daemon.cli("run", "--rm", "--network", "none", image, *cmd, check=False)

    def stop(self):
        self.daemon.stop()


class PodmanEngine:
    name = "podman"

    def __init__(self, base):
        import engine_podman as ep

        self.ep = ep
        self.base = base / "pm"
        self.pm = None

    def start(self):
        from conftest import _overlay_works

        ok, why = _overlay_works()
        need(ok, why)
        why = self.ep.missing()
        need(why is None, why or "")
        self.pm = self.ep.Podman(self.base)
        self.data_root = str(self.pm.storage)

    def _run(self, *args, data: bytes | None = None, check=True):
        proc = subprocess.run(self.pm.argv(*args), env=self.pm.env(), input=data,
                              capture_output=True, timeout=300, cwd=self.pm.base)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {args[:3]}: {proc.stderr.decode(errors='replace')}")
        return proc

    def import_tar(self, tar: bytes, tag: str):
        path = self.base / "rootfs.tar"
        path.write_bytes(tar)
        self._run("import", str(path), tag)
        path.unlink()

    def run_i(self, name, image, script, data: bytes):
        self._run("run", "-i", "--name", name, "--network", "none", image, "sh", "-c", script,
                  data=data)
        self.pm.started.append(name)
        self.pm.wait_state(name, "exited")

    def commit(self, name, tag):
        self._run("commit", name, tag)

    def run_rm(self, image, *cmd) -> subprocess.CompletedProcess:
        return self._run("run", "--rm", "--network", "none", image, *cmd, check=False)

    def stop(self):
        if self.pm is not None:
            self.pm.cleanup()


@pytest.fixture(scope="module", params=["docker", "podman"])
def world(request, tmp_path_factory):
    need_container_runtime()
    need(shutil.which("dpkg-deb") is not None, "needs dpkg-deb")
    root, why = pe.bookworm_root()
    need(root is not None, why)
    base = tmp_path_factory.mktemp(f"pkg-{request.param}")
    base.chmod(0o755)
    engine = (DockerEngine if request.param == "docker" else PodmanEngine)(base)
    try:
        engine.start()
        tar = subprocess.run(["tar", "-C", str(root), "--exclude=./.ovf-ready", "-c", "."],
                             capture_output=True, check=True)
        engine.import_tar(tar.stdout, BASE)
        debs = base / "debs"
        debs.mkdir()
        old = pe.build_deb(debs, "ovf-old", "1.0", {"/usr/share/ovf-old/file": b"old\n"})
        up1 = pe.build_deb(debs, "ovf-up", "1.0", {"/usr/share/ovf-up/VERSION": b"1.0\n"})
        up2 = pe.build_deb(debs, "ovf-up", "2.0", {"/usr/share/ovf-up/VERSION": b"2.0\n"})
        tool = pe.build_deb(debs, "ovf-tool", "1.0",
                            {"/usr/bin/ovf-tool": b"#!/bin/sh\necho tool\n",
                             "/etc/ovf-tool.conf": b"listen=127.0.0.1\n"},
                            conffiles=("/etc/ovf-tool.conf",), modes={"/usr/bin/ovf-tool": 0o755})

        def bundle(*paths) -> bytes:
            out = io.BytesIO()
            with tarfile.open(fileobj=out, mode="w") as tf:
                for p in paths:
                    tf.add(p, arcname=p.name)
            return out.getvalue()

        engine.run_i("prep", BASE, PREP, bundle(old, up1))
        engine.commit("prep", PKGS)
        engine.run_i("intruder", PKGS, INTRUDE, bundle(tool, up2))
        engine.commit("intruder", CHECK)

        def verify(image: str) -> dict[str, str]:
            proc = engine.run_rm(image, "dpkg", "--verify")
            assert proc.returncode in (0, 1), proc.stderr
            return pe.parse_dpkg_verify(proc.stdout.decode())

        image_truth, container_truth = verify(PKGS), verify(CHECK)
        found = ovforensics.find_container("intruder", engine=engine.name,
                                           data_root=engine.data_root)
        yield {"engine": engine, "found": found, "truth": container_truth,
               "image_truth": image_truth, "base": base}
    finally:
        engine.stop()
        shutil.rmtree(base, ignore_errors=True)


def _canonical(path: str) -> str:
    """dpkg names /bin/ls where merged /usr keeps usr/bin/ls (bookworm's /bin -> usr/bin)."""
    for alias in ("/bin/", "/sbin/", "/lib/", "/lib64/"):
        if path.startswith(alias):
            return "/usr" + path
    return path


@pytest.fixture(scope="module")
def records(world):
    return {r.path_text: r for r in ovforensics.scan_container(world["found"], packages=True)}


def test_altered_and_missing_are_what_dpkg_verify_says_inside_the_container(world, records):
    truth = {_canonical(p): s for p, s in world["truth"].items() if p not in world["image_truth"]}
    ours = {p: r.extra["package_status"] for p, r in records.items()
            if r.extra.get("package_status") in ("altered", "missing")}
    assert ours == truth
    # and dpkg --verify did see each planted change (the oracle is not vacuous)
    for path in ("/usr/bin/ls", "/usr/bin/tail", "/etc/login.defs", "/etc/ovf-tool.conf",
                 "/usr/bin/ovf-tool"):
        assert path in truth, (path, sorted(truth))


def test_each_planted_change(records):
    def rec(path):
        r = records[path]
        return r.change, r.extra.get("package"), r.extra.get("package_status")

    assert rec("/usr/bin/ls")[0::2] == ("modified", "altered")
    assert rec("/usr/bin/ls")[1].startswith("coreutils ")
    cat = records["/usr/bin/cat"]
    assert (cat.change, cat.extra["package_status"]) == ("modified", "intact")
    assert "mode" in cat.what and "content" not in cat.what
    assert rec("/usr/bin/tail")[0::2] == ("deleted", "missing")
    assert rec("/etc/login.defs")[0::2] == ("modified", "altered")
    assert records["/etc/login.defs"].extra.get("package_conffile") is True
    assert rec("/etc/ovf-tool.conf") == ("added", "ovf-tool 1.0", "altered")
    assert rec("/usr/bin/ovf-tool") == ("added", "ovf-tool 1.0", "altered")
    assert rec("/usr/local/bin/backdoor") == ("added", None, "unowned")
    assert rec("/var/www/html/shell.php") == ("added", None, "unowned")
    # an upgrade inside the container is legitimate: intact against the container's database
    version = records["/usr/share/ovf-up/VERSION"]
    assert (version.change, version.extra["package"], version.extra["package_status"]) == \
        ("modified", "ovf-up 1.0", "intact")
    assert version.extra["package_now"] == "ovf-up 2.0"
    assert rec("/usr/share/ovf-old/file") == ("deleted", "ovf-old 1.0", "removed")
    assert records["/usr/share/ovf-old"].extra["package_status"] == "removed"
    # dpkg's own files are nobody's
    assert records["/var/lib/dpkg/status"].extra["package_status"] == "unowned"


def test_a_diff_without_packages_is_unchanged(world, records):
    plain = {r.path_text: r.to_dict() for r in ovforensics.scan_container(world["found"])}
    assert set(plain) == set(records)
    keys = ("package", "package_status", "package_manager", "package_now", "package_conffile")
    for path, d in plain.items():
        assert not set(keys) & set(d)
        mine = {k: v for k, v in records[path].to_dict().items() if k not in keys}
        assert mine == d


def _cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "ovforensics", *args], capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


EXPECTED_PACKAGES = {
    ("ovf-tool", "installed", None, "1.0", 2, 0),
    ("ovf-old", "removed", "1.0", None, 0, 0),
    ("ovf-up", "upgraded", "1.0", "2.0", 0, 0),
}


def test_packages_command_every_format(world):
    engine = world["engine"]
    common = ["intruder", "--engine", engine.name, "--data-root", engine.data_root]
    rows = [json.loads(line) for line in _cli("packages", *common, "-f", "jsonl").stdout.splitlines()]
    got = {(r["package"], r["change"], r["version_before"], r["version_after"], r["altered"],
            r["missing"]) for r in rows}
    assert EXPECTED_PACKAGES <= got
    by_name = {r["package"]: r for r in rows}
    assert by_name["coreutils"]["change"] == "altered"
    assert (by_name["coreutils"]["altered"], by_name["coreutils"]["missing"]) == (1, 1)
    assert by_name["login"]["altered"] == 1
    assert {r["manager"] for r in rows} == {"dpkg"}
    assert json.loads(_cli("packages", *common, "-f", "json").stdout) == rows
    table = list(csv.DictReader(io.StringIO(_cli("packages", *common, "-f", "csv").stdout)))
    assert [r["package"] for r in table] == [r["package"] for r in rows]
    assert table[0]["altered"] == str(rows[0]["altered"])
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "400"  # the table fits the terminal: a wide one, no wrapping
    try:
        text = _cli("packages", *common, "-f", "table").stdout
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    assert "ovf-tool" in text and "upgraded" in text and "removed" in text
    refused = _cli("packages", *common, "-f", "docker", check=False)
    assert refused.returncode == 2 and "valid formats" in refused.stderr  # diff's lines only
    every = _cli("packages", *common, "--all", "-f", "jsonl").stdout.splitlines()
    assert len(every) > len(rows) + 50  # minbase has ~90 packages


def test_diff_packages_csv_and_table(world):
    engine = world["engine"]
    common = ["intruder", "--engine", engine.name, "--data-root", engine.data_root, "--packages"]
    rows = list(csv.DictReader(io.StringIO(_cli("diff", *common, "-f", "csv").stdout)))
    by_path = {r["path"]: r for r in rows}
    assert by_path["/usr/bin/ls"]["package_status"] == "altered"
    assert by_path["/usr/bin/ls"]["package_manager"] == "dpkg"
    table = _cli("diff", *common, "-f", "table", "--no-trunc").stdout  # one line per row
    line = next(ln for ln in table.splitlines() if "/usr/local/bin/backdoor" in ln)
    assert line.split()[-1] == "unowned"
    deleted = list(csv.DictReader(io.StringIO(_cli("deleted", *common[:-1], "--packages").stdout)))
    assert {r["path"]: r["package_status"] for r in deleted}["/usr/bin/tail"] == "missing"


def test_triage_puts_what_matters_first(world, tmp_path):
    if os.environ.get("OVF_REQUIRE_REAL") != "1":
        pytest.importorskip("yara")
    rules = tmp_path / "web.yar"
    rules.write_text('rule php_webshell { strings: $a = "system($_GET" condition: $a }\n')
    engine = world["engine"]
    common = ["triage", "intruder", "--engine", engine.name, "--data-root", engine.data_root,
              "--yara", str(rules)]
    summary = json.loads(_cli(*common, "-f", "json").stdout)
    truth = {_canonical(p) for p in world["truth"] if p not in world["image_truth"]}
    assert {r["path"] for r in summary["altered"]} == truth
    assert {r["path"] for r in summary["unowned_executables"]} == {"/usr/local/bin/backdoor"}
    assert summary["unowned_executables"][0]["exec_flags"] == ["script", "exec-bit"]
    assert [(r["path"], r["yara"]) for r in summary["yara"]] == [("/var/www/html/shell.php",
                                                                   ["php_webshell"])]
    assert {"ovf-tool", "ovf-old", "ovf-up", "coreutils", "login"} <= \
        {r["package"] for r in summary["packages"]}
    first = {r["path"] for k in ("altered", "unowned_executables", "yara") for r in summary[k]}
    assert not first & {r["path"] for r in summary["rest"]}
    assert summary["rest_count"] == len(summary["rest"]) > 0
    html_out = tmp_path / "triage.html"
    _cli(*common, "-o", str(html_out))
    page = html_out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in page
    order = [page.index(t) for t in ("Packaged files altered", "Unowned executables",
                                     "YARA rule matches", "Packages changed", "Everything else")]
    assert order == sorted(order)
    assert "/usr/local/bin/backdoor" in page
    table = _cli(*common).stdout
    assert table.index("/usr/bin/ls") < table.index("Everything else")


def test_recover_checks_the_originals(world, tmp_path):
    engine = world["engine"]
    common = ["recover", "intruder", "--engine", engine.name, "--data-root", engine.data_root,
              "--all-deleted", "--all-modified"]
    _cli(*common, "--packages", "--to", str(tmp_path / "with"))
    rows = {r["path"]: r for r in csv.DictReader(open(tmp_path / "with" / "manifest.csv"))}
    # the image's copies are what their packages shipped: the originals of the altered files
    for path in ("/usr/bin/ls", "/usr/bin/tail", "/etc/login.defs", "/usr/bin/cat"):
        assert (rows[path]["status"], rows[path]["package_status"]) == ("recovered", "intact"), path
    assert rows["/usr/bin/ls"]["package"].startswith("coreutils ")
    assert rows["/usr/share/ovf-up/VERSION"]["package"] == "ovf-up 1.0"
    assert rows["/var/lib/dpkg/status"]["package_status"] == "unowned"
    jsonl = [json.loads(line) for line in open(tmp_path / "with" / "manifest.jsonl")]
    assert {r["path"]: r["package_status"] for r in jsonl} == \
        {p: r["package_status"] for p, r in rows.items()}
    _cli(*common, "--to", str(tmp_path / "without"))
    header = open(tmp_path / "without" / "manifest.csv").readline()
    assert "package" not in header
