"""``--root`` on a disk image: the stores and layers read through ``evidence/fs.py``.

The plumbing, with no image reader at all: a filesystem object that serves a host directory
(:class:`DirFS`) is attached under a prefix that exists nowhere on the host; a read that
bypassed ``evidence.fs`` would look the prefixed path up on the host and fail.
(test_engine_docker.py attaches a real Docker store this way: every container and record as
from the directory.)
"""
from __future__ import annotations

import os
import subprocess
import sys


from ovforensics.evidence import fs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class DirFS:
    """An attached filesystem that serves a host directory (a stand-in for an image reader)."""

    def __init__(self, top: str):
        self.top = top.rstrip("/")
        self.label = top
        self.calls = 0

    def _host(self, path: str) -> str:
        assert path.startswith("/") and "\x00" not in path
        self.calls += 1
        return self.top + path if path != "/" else self.top

    def lstat(self, path):
        return os.lstat(self._host(path))

    def listdir(self, path):
        return os.listdir(self._host(path))

    def readlink(self, path):
        return os.readlink(self._host(path))

    def open(self, path):
        return open(self._host(path), "rb")

    def xattrs(self, path):
        host = self._host(path)
        return {n: os.getxattr(host, n, follow_symlinks=False)
                for n in os.listxattr(host, follow_symlinks=False)}


def test_an_attached_path_is_never_looked_up_on_the_host(tmp_path):
    host_dir = tmp_path / "disk.img!" / "etc"
    host_dir.mkdir(parents=True)  # a host directory that looks like an image path
    (host_dir / "hostname").write_text("host\n")
    image = tmp_path / "image-tree"
    (image / "etc").mkdir(parents=True)
    (image / "etc/hostname").write_text("image\n")
    prefix = fs.attach(DirFS(str(image)), str(tmp_path / "disk.img"))
    try:
        assert fs.read_file(prefix + "/etc/hostname") == b"image\n"
        assert fs.list_dir(prefix + "/etc") == ["hostname"]
        assert fs.isdir(prefix + "/etc") and not fs.isfile(prefix + "/etc")
        assert not fs.lexists(prefix + "/nothing")
    finally:
        fs.detach(prefix)
    assert fs.image_of(prefix + "/etc/hostname") is None  # detached: a host path again


def test_root_that_is_neither_directory_nor_image_is_one_line(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for root, want in ((str(fifo), "neither a directory nor a disk image"),
                       (str(tmp_path / "missing"), "No such file")):
        proc = subprocess.run([sys.executable, "-m", "ovforensics", "containers", "--root", root],
                              capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and want in lines[0] and "--root" in lines[0], proc.stderr


def test_partition_needs_an_image(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ovforensics", "containers", "--root",
                           str(tmp_path), "--partition", "2"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "--partition" in proc.stderr, proc.stderr
