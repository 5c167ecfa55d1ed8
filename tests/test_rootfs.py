"""Re-rooting: evidence paths resolve under --root, links included, and never climb out."""
from __future__ import annotations

import os

import pytest

from ovforensics.evidence.rootfs import Root, RootEscape


@pytest.fixture
def evidence(tmp_path):
    ev = tmp_path / "evidence"
    (ev / "var/lib/docker/overlay2/abc/diff").mkdir(parents=True)
    (ev / "var/lib/docker/overlay2/l").mkdir()
    os.symlink("../abc/diff", ev / "var/lib/docker/overlay2/l/SHORT")
    os.symlink("/var/lib/docker", ev / "docker-abs")            # absolute: means the evidence's own
    os.symlink("../../../../../../../etc", ev / "var/lib/docker/overlay2/l/EVIL")
    os.symlink("/etc/shadow", ev / "var/lib/docker/shadow-link")
    os.symlink("loop2", ev / "loop1")
    os.symlink("loop1", ev / "loop2")
    return ev


def test_relative_link_resolves_inside(evidence):
    root = Root(str(evidence))
    got = root.resolve("/var/lib/docker/overlay2/l/SHORT")
    assert got == str(evidence / "var/lib/docker/overlay2/abc/diff")


def test_absolute_link_restarts_at_the_evidence_root(evidence):
    root = Root(str(evidence))
    assert root.resolve("/docker-abs/overlay2") == str(evidence / "var/lib/docker/overlay2")
    # a link to the host's /etc/shadow lands on the evidence's /etc/shadow (which does not exist)
    assert root.resolve("/var/lib/docker/shadow-link") == str(evidence / "etc/shadow")


def test_climbing_out_is_refused(evidence):
    root = Root(str(evidence))
    with pytest.raises(RootEscape):
        root.resolve("/var/lib/docker/overlay2/l/EVIL")
    with pytest.raises(RootEscape):
        root.resolve("/../../etc/passwd")
    with pytest.raises(RootEscape):
        root.resolve("l/../../../../../../../etc", base="/var/lib/docker/overlay2")


def test_loops_end(evidence):
    with pytest.raises(OSError):
        Root(str(evidence)).resolve("/loop1")


def test_live_root_is_the_host(tmp_path):
    assert Root("/").resolve(str(tmp_path)) == str(tmp_path)
