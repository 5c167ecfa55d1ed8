"""LVM inside a disk image, read without activating it: the logical volumes are numbered after
the partitions, the one holding a readable filesystem is read as a partition would be.

The volume group is written by LVM's own tools (``pvcreate``, ``vgcreate`` on a loop device,
then ``vgcfgrestore`` of its metadata with two linear logical volumes added: this kernel has no
device-mapper, so ``lvcreate`` cannot run, and nothing is activated). An ext4 filesystem
(``mkfs.ext4 -d``) is copied into the first volume's extents. The truth: the kernel's reading
of that same filesystem, loop-mounted read-only at the volume's offset in the image.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from conftest import need, need_loop_mount
from test_diskimage import _mkfs, _tree, _walk_kernel, _walk_ours

from ovforensics.evidence.diskimage import DiskImageError, open_filesystem

LVM_ENV = dict(os.environ, DM_DISABLE_UDEV="1", LVM_SUPPRESS_FD_WARNINGS="1")
LVM_CONFIG = ("activation{udev_sync=0 udev_rules=0} devices{obtain_device_list_from_udev=0 "
              "filter=[\"a|.*|\"]} backup{backup=0 archive=0}")
VOLUMES = """
	logical_volumes {
		data {
			id = "ovfdat-0000-0000-0000-0000-0000-000001"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 18
				type = "striped"
				stripe_count = 1
				stripes = ["pv0", 0]
			}
		}
		spare {
			id = "ovfspa-0000-0000-0000-0000-0000-000002"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 2
				type = "striped"
				stripe_count = 1
				stripes = ["pv0", 18]
			}
		}
	}
"""


def _lvm(*args):
    proc = subprocess.run([args[0], "--config", LVM_CONFIG, *args[1:]], env=LVM_ENV,
                          capture_output=True, text=True)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc


@pytest.fixture(scope="module")
def lvm_image(tmp_path_factory):
    missing = [t for t in ("pvcreate", "vgcreate", "vgcfgbackup", "vgcfgrestore", "losetup",
                           "mkfs.ext4", "sfdisk", "qemu-img") if not shutil.which(t)]
    need(not missing, f"needs {', '.join(missing)} (apt-get install -y lvm2 e2fsprogs fdisk "
                      "qemu-utils)")
    need(os.geteuid() == 0, "needs root (a loop device for pvcreate)")
    need_loop_mount()
    top = tmp_path_factory.mktemp("lvm")
    tree, fs_image, pv = str(top / "tree"), str(top / "fs.ext4"), str(top / "pv.img")
    _tree(tree)
    _mkfs(tree, fs_image, "64M")
    with open(pv, "wb") as fh:
        fh.truncate(200 << 20)
    loop = subprocess.run(["losetup", "-f", "--show", pv], capture_output=True, text=True,
                          check=True).stdout.strip()
    try:
        _lvm("pvcreate", "-q", loop)
        _lvm("vgcreate", "-q", "vgovf", loop)
        _lvm("vgcfgbackup", "-q", "-f", str(top / "vg.txt"), "vgovf")
        text = (top / "vg.txt").read_text()
        pe_start = int(re.search(r"pe_start = (\d+)", text).group(1)) * 512
        end = text.rstrip().rindex("}")  # the volume group's closing brace
        (top / "vg2.txt").write_text(text[:end] + VOLUMES + text[end:])
        proc = subprocess.run(["vgcfgrestore", "--config", LVM_CONFIG, "-f",
                               str(top / "vg2.txt"), "vgovf"], env=LVM_ENV,
                              capture_output=True, text=True)
        assert "Restored volume group" in proc.stdout + proc.stderr, proc.stderr
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    with open(fs_image, "rb") as src, open(pv, "r+b") as dst:  # into the data volume's extents
        dst.seek(pe_start)
        shutil.copyfileobj(src, dst)
    disk = str(top / "disk.raw")  # the same physical volume as partition 2 of a GPT disk
    with open(disk, "wb") as fh:
        fh.truncate(220 << 20)
    subprocess.run(["sfdisk", "-q", disk], input="label: gpt\nstart=2048, size=8192, type=L\n"
                   "start=10240, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n", text=True,
                   check=True, capture_output=True)
    with open(pv, "rb") as src, open(disk, "r+b") as dst:
        dst.seek(10240 * 512)
        shutil.copyfileobj(src, dst)
    qcow = str(top / "disk.qcow2")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk, qcow], check=True)
    return {"pv": pv, "fs": fs_image, "disk": disk, "qcow2": qcow, "pe_start": pe_start}


def test_a_logical_volume_reads_as_the_kernel_reads_its_filesystem(lvm_image):
    fs = open_filesystem(lvm_image["pv"])
    assert fs.partition.volume == "vgovf/data" and fs.partition.number == 1
    truth = _walk_kernel(lvm_image["pv"], offset=lvm_image["pe_start"])
    ours = _walk_ours(fs)
    assert ours == truth
    assert ours == _walk_ours(open_filesystem(lvm_image["fs"]))


@pytest.mark.parametrize("kind", ["disk", "qcow2"])
def test_a_physical_volume_in_a_partition_is_found(lvm_image, kind):
    fs = open_filesystem(lvm_image[kind])
    assert (fs.partition.number, fs.partition.volume) == (3, "vgovf/data")  # after 1 and 2
    assert "LVM vgovf/data" in fs.label
    assert _walk_ours(fs) == _walk_ours(open_filesystem(lvm_image["fs"]))
    assert open_filesystem(lvm_image[kind], 3).partition.volume == "vgovf/data"
    with pytest.raises(DiskImageError, match=r"partition 2: an LVM physical volume"):
        open_filesystem(lvm_image[kind], 2)
    with pytest.raises(DiskImageError, match=r"partition 4: no filesystem"):
        open_filesystem(lvm_image[kind], 4)  # the spare volume: nothing in it
    with pytest.raises(DiskImageError, match=r"4 \(unknown, LVM vgovf/spare\)"):
        open_filesystem(lvm_image[kind], 9)
