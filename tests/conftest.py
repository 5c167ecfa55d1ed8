"""Shared test plumbing: real-system requirements that skip on a laptop and fail in CI.

With ``OVF_REQUIRE_REAL=1`` (set by ``.ci/run``) a test that needs root, the kernel's overlayfs
or an engine fails instead of skipping, so CI can never go green by skipping the real tests.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

REQUIRE_REAL = os.environ.get("OVF_REQUIRE_REAL") == "1"


def need(condition: bool, reason: str) -> None:
    """Skip (or, under OVF_REQUIRE_REAL=1, fail) when a real-system requirement is missing."""
    if condition:
        return
    if REQUIRE_REAL:
        pytest.fail(f"OVF_REQUIRE_REAL=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@functools.cache
def _overlay_works() -> tuple[bool, str]:
    """Root, overlayfs in the kernel, and a test mount that really works (not in every container)."""
    from oracle import overlay_missing

    missing = overlay_missing()
    if missing is not None:
        return False, missing
    with tempfile.TemporaryDirectory(prefix="ovf-probe-") as d:
        for sub in ("l1", "l2", "m"):
            os.mkdir(os.path.join(d, sub))
        proc = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                               f"ro,lowerdir={d}/l1:{d}/l2", f"{d}/m"], capture_output=True, text=True)
        if proc.returncode != 0:
            return False, f"cannot mount overlayfs here: {proc.stderr.strip()}"
        subprocess.run(["umount", f"{d}/m"], check=False)
    return True, ""


@functools.cache
def _loop_mount_works() -> tuple[bool, str]:
    """Root, a loop device and a loop mount that really works (a container usually has no
    /dev/loop-control, or may not mount a block device)."""
    if os.geteuid() != 0:
        return False, "needs root (a loop mount to have the kernel read or write the image)"
    for tool in ("losetup", "mkfs.ext4", "unshare", "mount"):
        if shutil.which(tool) is None:
            return False, f"needs {tool} for a loop mount"
    if not os.path.exists("/dev/loop-control"):
        return False, "no /dev/loop-control here: the kernel cannot be asked to loop-mount an image"
    with tempfile.TemporaryDirectory(prefix="ovf-loop-probe-") as d:
        image, mnt = os.path.join(d, "probe.ext4"), os.path.join(d, "m")
        os.mkdir(mnt)
        with open(image, "wb") as fh:
            fh.truncate(4 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True)
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", "mount", "-o",
                               "ro,noload,loop", "-t", "ext4", image, mnt],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return False, f"cannot loop-mount an image here: {proc.stderr.strip()}"
    return True, ""


def need_loop_mount() -> None:
    """Skip (fail under OVF_REQUIRE_REAL=1) where the kernel cannot loop-mount an image."""
    ok, why = _loop_mount_works()
    need(ok, why)


@pytest.fixture
def overlay(tmp_path):
    """Mount helper: ``overlay.mount(lowers, upper=None, **opts) -> merged dir``; unmounts after."""
    ok, why = _overlay_works()
    need(ok, why)
    mounted: list[str] = []

    class Mounter:
        def mount(self, lowers, upper=None, work=None, options=(), ro=False):
            target = tmp_path / f"mnt-{uuid.uuid4().hex[:8]}"
            target.mkdir()
            opts = ["lowerdir=" + ":".join(str(p) for p in lowers)]
            if upper is not None:
                work = work or tmp_path / f"work-{uuid.uuid4().hex[:8]}"
                os.makedirs(work, exist_ok=True)
                opts += [f"upperdir={upper}", f"workdir={work}"]
            if ro:
                opts.insert(0, "ro")
            opts += list(options)
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o", ",".join(opts), str(target)],
                           check=True, capture_output=True)
            mounted.append(str(target))
            return target

        def umount(self, target):
            subprocess.run(["umount", str(target)], check=True)
            mounted.remove(str(target))

    yield Mounter()
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", target], check=False)


def need_whiteout_devices(where) -> None:
    """Skip (fail under OVF_REQUIRE_REAL=1) where 0/0 devices cannot be made, e.g. when the test
    directory is itself on an overlay (the suite run inside a container)."""
    probe = os.path.join(str(where), ".ovf-mknod-probe")
    try:
        os.mknod(probe, 0o600 | 0o020000, os.makedev(0, 0))
    except OSError as exc:
        need(False, f"cannot make a 0/0 whiteout device in {where}: {exc.strerror}")
    else:
        os.unlink(probe)


@functools.cache
def need_container_runtime() -> None:
    """Skip (fail under OVF_REQUIRE_REAL=1) where no engine could start a container."""
    need(os.geteuid() == 0, "needs root to run the engines hermetically")
    from engine_docker import cgroups_writable

    ok, why = cgroups_writable()
    need(ok, why)
