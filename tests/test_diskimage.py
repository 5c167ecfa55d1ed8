"""Disk images read without mounting them: every field against the kernel's own reading.

Images are built with no mount (``mkfs.ext4 -d`` copies a tree with its xattrs, devices and
owners; ``sfdisk`` partitions a raw file; ``qemu-img`` converts it to qcow2, VMDK, VHD and VHDX;
``ewfacquire`` makes E01). The truth is the kernel: the same image loop-mounted read-only in a
private mount namespace (``unshare -m``), walked with ``os.lstat``/``os.listxattr``. Our run
itself mounts nothing (the mount table does not change) and leaves the image's bytes as they
were.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import need, need_loop_mount

from ovforensics.evidence.diskimage import DiskImageError, open_filesystem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ("mkfs.ext4", "debugfs", "sfdisk", "qemu-img", "unshare", "ewfacquire")


def _need_tools(*tools):
    missing = [t for t in tools if not shutil.which(t)]
    need(not missing, f"needs {', '.join(missing)} (apt-get install -y e2fsprogs fdisk "
                      "qemu-utils ewf-tools util-linux)")
    need(os.geteuid() == 0, "needs root (devices and trusted.* xattrs in the source tree)")


def _tree(top: str) -> None:
    """An upper's kinds of entries, with the fields that matter to a scan."""
    os.makedirs(f"{top}/etc/sub")
    os.makedirs(f"{top}/opaque")
    with open(f"{top}/etc/passwd", "w") as fh:
        fh.write("root:x:0:0\n")
    os.mknod(f"{top}/gone", 0o20000 | 0o600, os.makedev(0, 0))  # a whiteout
    os.mknod(f"{top}/dev300", 0o20000 | 0o640, os.makedev(300, 700))  # new encoding
    os.mknod(f"{top}/blk", 0o60000 | 0o600, os.makedev(8, 1))  # old encoding
    os.setxattr(f"{top}/opaque", "trusted.overlay.opaque", b"y")
    with open(f"{top}/xw", "w"):
        pass
    os.setxattr(f"{top}/xw", "user.overlay.whiteout", b"")
    os.setxattr(f"{top}/etc/passwd", "security.capability", b"\x01\x00\x00\x02" + bytes(16))
    with open(f"{top}/big-uid", "w") as fh:
        fh.write("u")
    os.chown(f"{top}/big-uid", 100000, 165536)
    os.symlink("../etc/passwd", f"{top}/etc/sub/rel")
    os.symlink("/" + "t" * 200, f"{top}/slow-link")  # longer than i_block: a slow symlink
    os.link(f"{top}/etc/passwd", f"{top}/hard")
    with open(f"{top}/sparse", "wb") as fh:
        fh.seek(5 << 20)
        fh.write(b"end")
    with open(f"{top}/big", "wb") as fh:
        fh.write(os.urandom(300_000))
    with open(os.fsencode(top) + b"/bad\xffname", "w") as fh:
        fh.write("b")
    os.makedirs(f"{top}/many")
    for i in range(300):  # a directory of several blocks (an htree)
        with open(f"{top}/many/entry-{i:04d}-" + "x" * 40, "w"):
            pass
    os.mkfifo(f"{top}/fifo")


def _mkfs(tree: str, image: str, size: str = "64M") -> None:
    subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "256", "-d", tree, image, size], check=True,
                   capture_output=True)


def _walk_kernel(image: str, offset: int = 0, fstype: str = "ext4") -> dict:
    """The kernel's reading: the image mounted read-only in a private mount namespace."""
    need_loop_mount()
    script = r"""
import hashlib, json, os, stat, subprocess, sys, tempfile
image, offset, fstype = sys.argv[1], int(sys.argv[2]), sys.argv[3]
mnt = tempfile.mkdtemp()
ro = "ro,noload" if fstype == "ext4" else "ro,norecovery"
subprocess.run(["mount", "-o", f"{ro},loop,offset={offset}", "-t", fstype, image, mnt], check=True)
out = {}
try:
    for d, dirs, files in os.walk(os.fsencode(mnt)):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            rel = "/" + os.fsdecode(os.path.relpath(p, os.fsencode(mnt)))
            if rel.startswith("/lost+found"):
                continue
            x = {n: os.getxattr(p, n, follow_symlinks=False).hex()
                 for n in os.listxattr(p, follow_symlinks=False)}
            row = [st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink, st.st_mtime_ns,
                   st.st_ctime_ns, os.major(st.st_rdev), os.minor(st.st_rdev), x, st.st_ino]
            if stat.S_ISLNK(st.st_mode):
                row.append(os.fsdecode(os.readlink(p)))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    row.append(hashlib.sha256(fh.read()).hexdigest())
            out[rel] = row
finally:
    subprocess.run(["umount", mnt], check=True)
    os.rmdir(mnt)
print(json.dumps(out))
"""
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                           script, image, str(offset), fstype], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _walk_ours(fs) -> dict:
    import stat

    out = {}
    stack = ["/"]
    while stack:
        d = stack.pop()
        for name in fs.listdir(d):
            p = d.rstrip("/") + "/" + name
            if p.startswith("/lost+found"):
                continue
            st = fs.lstat(p)
            row = [st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink, st.st_mtime_ns,
                   st.st_ctime_ns, os.major(st.st_rdev), os.minor(st.st_rdev),
                   {n: v.hex() for n, v in fs.xattrs(p).items()}, st.st_ino]
            if stat.S_ISLNK(st.st_mode):
                row.append(fs.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                with fs.open(p) as fh:
                    row.append(hashlib.sha256(fh.read()).hexdigest())
            elif stat.S_ISDIR(st.st_mode):
                stack.append(p)
            out[p] = row
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    _need_tools(*TOOLS)
    top = tmp_path_factory.mktemp("diskimage")
    tree = str(top / "tree")
    _tree(tree)
    fs_image = str(top / "fs.ext4")
    _mkfs(tree, fs_image)
    # odd fields mkfs -d does not make: nanosecond times, a 32-bit gid, a new-encoding device
    subprocess.run(["debugfs", "-w", "-R", "sif /etc/passwd mtime_extra 0x75bcd15", fs_image],
                   check=True, capture_output=True)
    disk = str(top / "disk.raw")
    with open(disk, "wb") as fh:
        fh.truncate(80 << 20)
    subprocess.run(["sfdisk", "-q", disk], input="label: gpt\nstart=2048, size=8192, type=L\n"
                   "start=10240, type=L\n", text=True, check=True, capture_output=True)
    with open(fs_image, "rb") as src, open(disk, "r+b") as dst:
        dst.seek(10240 * 512)
        shutil.copyfileobj(src, dst)
    out = {"fs": fs_image, "raw": disk, "top": str(top)}
    for fmt, qfmt in (("qcow2", "qcow2"), ("vmdk", "vmdk"), ("vhdx", "vhdx"), ("vhd", "vpc")):
        path = str(top / f"disk.{fmt}")
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", qfmt, disk, path], check=True)
        out[fmt] = path
    # a qcow2 overlay on a backing file beside it
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "disk.qcow2",
                    str(top / "overlay.qcow2")], check=True, cwd=str(top))
    out["backed"] = str(top / "overlay.qcow2")
    e01 = str(top / "disk")
    subprocess.run(["ewfacquire", "-u", "-q", "-t", e01, "-f", "encase6", "-c", "none", disk],
                   check=True, capture_output=True)
    out["e01"] = e01 + ".E01"
    return out


def test_ext4_fields_are_the_kernels(images):
    truth = _walk_kernel(images["fs"])
    fs = open_filesystem(images["fs"])
    ours = _walk_ours(fs)
    assert sorted(ours) == sorted(truth)
    for path, row in truth.items():
        assert ours[path] == row, path
    assert "/bad\udcffname" in ours  # a name that is not UTF-8, byte for byte
    assert truth["/dev300"][7:9] == [300, 700] and truth["/gone"][7:9] == [0, 0]
    assert truth["/big-uid"][1:3] == [100000, 165536]
    assert truth["/etc/passwd"][5] % 10**9 == 0x75bcd15 >> 2  # nanoseconds from the extra field


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "vmdk", "vhdx", "vhd", "backed", "e01"])
def test_every_container_format_reads_the_same(images, fmt):
    want = _walk_ours(open_filesystem(images["fs"]))
    fs = open_filesystem(images[fmt])  # the ext4 partition: the only readable one
    assert fs.partition.number == (2 if fmt != "fs" else 0)
    assert _walk_ours(fs) == want


def test_partition_choice_and_refusals(images, tmp_path):
    assert open_filesystem(images["raw"], 2).partition.number == 2
    with pytest.raises(DiskImageError, match="partition 1: no filesystem"):
        open_filesystem(images["raw"], 1)
    with pytest.raises(DiskImageError, match="no partition 7"):
        open_filesystem(images["raw"], 7)
    fake = tmp_path / "btrfs.img"
    with open(fake, "wb") as fh:
        fh.truncate(1 << 20)
        fh.seek(0x10040)
        fh.write(b"_BHRfS_M")
    with pytest.raises(DiskImageError, match="btrfs is not read"):
        open_filesystem(str(fake))
    xfs = tmp_path / "xfs.img"
    xfs.write_bytes(b"XFSB" + bytes(4096))
    with pytest.raises(DiskImageError, match="xfs.img: damaged superblock"):
        open_filesystem(str(xfs))  # an XFS magic and nothing sane after it


def test_a_backing_file_outside_the_images_directory_is_refused(images, tmp_path):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    images["qcow2"], str(tmp_path / "elsewhere.qcow2")], check=True)
    with pytest.raises(DiskImageError, match="backing file"):
        open_filesystem(str(tmp_path / "elsewhere.qcow2"))


def _sha(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def test_the_cli_reads_an_image_and_leaves_it_as_it_was(images):
    """No root needed, nothing mounted, nothing written: ``diff --upper IMAGE!/path`` is not a
    thing users type, so the run goes through ``layers`` of a stack inside the image by
    ``containers``: here, just that --root IMAGE is accepted and the image untouched."""
    before = {k: _sha(v) for k, v in images.items() if k not in ("top",)}
    with open("/proc/self/mountinfo") as fh:
        mounts = fh.read()
    proc = subprocess.run([sys.executable, "-m", "ovforensics", "containers", "--root",
                           images["qcow2"], "-f", "jsonl"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # no engine store in this filesystem: no container
    with open("/proc/self/mountinfo") as fh:
        new = set(fh.read().splitlines()) - set(mounts.splitlines())
    # nothing of ours mounted (other work on the machine may mount its own things meanwhile)
    assert not [m for m in new if images["top"] in m or "/dev/loop" in m or " ext4 " in m
                and images["qcow2"] in m], new
    assert {k: _sha(v) for k, v in images.items() if k not in ("top",)} == before


def test_a_damaged_image_is_one_line(tmp_path):
    bad = tmp_path / "bad.img"
    raw = bytearray(4 << 20)
    raw[1080:1082] = b"\x53\xef"  # an ext magic and nothing sane around it
    raw[1024 + 24] = 9  # block size 1024 << 9
    bad.write_bytes(bytes(raw))
    proc = subprocess.run([sys.executable, "-m", "ovforensics", "containers", "--root", str(bad)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.img" in lines[0] and "superblock" in lines[0], proc.stderr
