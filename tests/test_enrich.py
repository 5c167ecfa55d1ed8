"""--hash and --magic: digests equal coreutils' on the same files, both versions of a change,
metacopy data read from the lower layer, file types and new-executable flags."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import ovforensics
from conftest import need


def _sum(tool: str, path) -> str:
    return subprocess.run([tool, "--", str(path)], capture_output=True, text=True,
                          check=True).stdout.split()[0]


@pytest.fixture
def stack(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d in (lower / "bin", upper / "bin", lower / "etc", upper / "etc"):
        d.mkdir(parents=True)
    (lower / "etc" / "passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n" * 1000)
    (upper / "etc" / "passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\nevil:x:0:0::/:/bin/sh\n")
    (lower / "etc" / "gone").write_bytes(os.urandom(3 << 20))  # several hash chunks
    (upper / "etc" / ".wh.gone").write_bytes(b"")
    shutil.copy("/bin/true", upper / "bin" / "dropper")  # an ELF
    (upper / "bin" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(upper / "bin" / "run.sh", 0o755)
    (upper / "bin" / "notes.sh").write_text("#!/bin/sh\n")  # a script without exec bit
    os.mkfifo(upper / "bin" / "pipe")  # must never be opened (it would hang)
    return upper, lower


def test_hashes_equal_coreutils_for_both_versions(stack):
    upper, lower = stack
    records = {r.path: r for r in ovforensics.scan(
        str(upper), [str(lower)], whiteouts="oci", hashes="md5,sha1,sha256,sha512")}
    passwd = records[b"/etc/passwd"].extra
    for algorithm, tool in (("md5", "md5sum"), ("sha1", "sha1sum"), ("sha256", "sha256sum"),
                            ("sha512", "sha512sum")):
        assert passwd[algorithm] == _sum(tool, upper / "etc" / "passwd")
        assert passwd["lower_" + algorithm] == _sum(tool, lower / "etc" / "passwd")
    gone = records[b"/etc/gone"]
    assert gone.change == "deleted" and gone.extra["lower_sha256"] == _sum("sha256sum", lower / "etc/gone")
    assert "sha256" not in gone.extra
    assert "sha256" not in records[b"/bin/pipe"].extra  # a FIFO: listed, never opened


def test_magic_and_new_executables(stack):
    upper, lower = stack
    records = {r.path: r.extra for r in ovforensics.scan(str(upper), [str(lower)], whiteouts="oci",
                                                         magic=True)}
    dropper = records[b"/bin/dropper"]
    assert dropper["magic"].startswith("ELF") and "elf" in dropper["exec_flags"]
    assert dropper["new_executable"] is True
    assert records[b"/bin/run.sh"]["mime"] == "text/x-shellscript"
    assert records[b"/bin/run.sh"]["new_executable"] is True
    assert records[b"/bin/notes.sh"]["exec_flags"] == ["script"]
    assert records[b"/bin/notes.sh"]["new_executable"] is False
    assert records[b"/etc/passwd"]["mime"] == "text/plain"
    assert records[b"/etc/passwd"]["new_executable"] is False


def test_setuid_and_capabilities_are_flagged(stack):
    need(os.geteuid() == 0, "needs root to set security.capability")
    upper, lower = stack
    os.chmod(upper / "bin" / "dropper", 0o4755)
    # VFS_CAP_REVISION_2, effective, cap_net_raw (bit 13) permitted
    os.setxattr(upper / "bin" / "run.sh", "security.capability",
                bytes.fromhex("0100000200200000000000000000000000000000"))
    records = {r.path: r.extra for r in ovforensics.scan(str(upper), [str(lower)], whiteouts="oci",
                                                         magic=True)}
    assert "setuid" in records[b"/bin/dropper"]["exec_flags"]
    assert "capability" in records[b"/bin/run.sh"]["exec_flags"]


def test_metacopy_is_hashed_from_the_lower_layer(tmp_path, overlay):
    """A real metacopy copy-up (chmod with metacopy=on): its hash is the lower file's bytes."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    (lower / "data").write_bytes(os.urandom(100_000))
    merged = overlay.mount([lower], upper=upper, options=("metacopy=on",))
    os.chmod(merged / "data", 0o600)
    overlay.umount(merged)
    assert os.stat(upper / "data").st_blocks == 0 or os.stat(upper / "data").st_blocks < 200
    (record,) = ovforensics.scan(str(upper), [str(lower)], hashes="sha256")
    assert record.metacopy and record.what == ("mode",)
    assert record.extra["sha256"] == record.extra["lower_sha256"] == _sum("sha256sum", lower / "data")


def test_unknown_hash_is_a_clear_error(stack):
    upper, lower = stack
    with pytest.raises(ValueError, match="crc32"):
        list(ovforensics.scan(str(upper), [str(lower)], hashes="sha256,crc32"))
