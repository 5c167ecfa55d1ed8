"""Real-dockerd inputs: a hermetic dockerd (tests/engine_docker.py's), a busybox image with a
data tree, one container that changes >= 20,000 paths, and a store of many created containers.

The daemon has its own data root, exec root and socket under the work directory; it is stopped
by the pid it wrote, and whatever it left mounted under the work directory is unmounted.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import engine_docker as ed  # noqa: E402

IMAGE = "ovf-bench/busybox:1"
DIFF_CONTAINER = "bench-diff"


def missing() -> str | None:
    """Why a hermetic dockerd cannot run containers here, or None."""
    why = ed.missing()
    if why is None:
        ok, cgroups = ed.cgroups_writable()
        why = None if ok else cgroups
    return why


def _rootfs(dest: Path, dirs: int, files: int) -> Path:
    """Static busybox with every applet linked, and /data/dNN/fNNN for the container to change."""
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(ed.BUSYBOX, dest / "bin" / "busybox")
    applets = subprocess.run([ed.BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox" and not (dest / "bin" / applet).exists():
            os.symlink("busybox", dest / "bin" / applet)
    for rel in ("tmp", "proc", "sys", "dev", "etc", "root"):
        (dest / rel).mkdir(exist_ok=True)
    for d in range(dirs):
        where = dest / "data" / f"d{d:03d}"
        where.mkdir(parents=True)
        for f in range(files):
            (where / f"f{f:03d}").write_bytes(b"image %d %d\n" % (d, f))
    return dest


def change_script(dirs: int, files: int, new_dirs: int, new_files: int) -> str:
    """Adds, content and mode changes, deletions and a deleted tree, through the real overlay."""
    part = files // 5
    return f"""
set -e
i=0
while [ $i -lt {new_dirs} ]; do
  mkdir -p /new/n$i; cd /new/n$i; j=0
  while [ $j -lt {new_files} ]; do echo "added $j" > a$j; j=$((j+1)); done
  i=$((i+1))
done
d=0
while [ $d -lt {dirs - 1} ]; do
  cd /data/d$(printf %03d $d); f=0
  while [ $f -lt {part} ]; do n=$(printf %03d $f); echo more >> f$n; f=$((f+1)); done
  while [ $f -lt {2 * part} ]; do n=$(printf %03d $f); rm f$n; f=$((f+1)); done
  while [ $f -lt {3 * part} ]; do n=$(printf %03d $f); chmod 600 f$n; f=$((f+1)); done
  d=$((d+1))
done
rm -rf /data/d$(printf %03d {dirs - 1})
"""


class Docker:
    """The daemon and the inputs built through it."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.daemon = ed.DockerD(self.base / "dockerd")
        self.data_root = str(self.daemon.data)

    def start(self) -> str | None:
        return self.daemon.start()

    def stop(self) -> None:
        self.daemon.stop()

    def image(self, dirs: int, files: int) -> None:
        shutil.rmtree(self.base / "rootfs", ignore_errors=True)
        rootfs = _rootfs(self.base / "rootfs", dirs, files)
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True)
        self.daemon.cli("import", "-", IMAGE, input=tar.stdout, timeout=600)
        shutil.rmtree(rootfs, ignore_errors=True)

    def diff_container(self, dirs: int, files: int, new_dirs: int, new_files: int) -> str:
        """Run the change script once; the exited container keeps its upper."""
        script = change_script(dirs, files, new_dirs, new_files)
        self.daemon.cli("run", "--name", DIFF_CONTAINER, "--network", "none", IMAGE, "sh", "-c",
                        script, timeout=3600)
        return DIFF_CONTAINER

    def many_containers(self, count: int, workers: int = 4) -> None:
        """``docker create`` ``count`` containers (a few at a time)."""
        names = "\n".join(f"bench-c{i:04d}" for i in range(count)) + "\n"
        subprocess.run(["xargs", "-P", str(workers), "-I{}", "docker", "create", "--name", "{}",
                        "--network", "none", IMAGE, "true"], input=names.encode(),
                       env=self.daemon.env, check=True, capture_output=True, timeout=3600)

    def env(self) -> dict:
        return self.daemon.env
