"""Today's engines for the tests: Docker 26, containerd 1.7 and Podman 5 from a Debian 13 chroot.

The chroot is built once by ``tests/trixie/build.sh`` (debootstrap + Debian's packages; ~45 s)
into ``$OVF_TRIXIE_CACHE`` (default ``/var/cache/ovforensics/trixie``) and kept there. Each test
session copies it into a temporary directory, so the engines write fresh stores at their
**default data roots inside the copy** (``/var/lib/docker``, ``/var/lib/containerd``,
``/var/lib/containers/storage``): the copy is an evidence root exactly like a seized host's disk
(``--root COPY``).

The daemons run in one private mount namespace held by a ``sleep`` of ours (the recipe in
shared/reference/engines.md): the chroot's ``/proc``, ``/sys``, ``/dev``, ``/run`` and the
containers' rootfs mounts live there and vanish with it, so nothing stays mounted on the host.
Every daemon is stopped by its own pid, then every process left in the namespace (shims,
conmon, container processes), then the holder.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import engine_docker

HERE = Path(__file__).resolve().parent
BUILD = HERE / "trixie" / "build.sh"
CACHE = Path(os.environ.get("OVF_TRIXIE_CACHE", "/var/cache/ovforensics/trixie"))
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def missing() -> str | None:
    """Why today's engines cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to build the trixie chroot and run its engines"
    for tool in ("debootstrap", "unshare", "nsenter"):
        if not shutil.which(tool) and not (CACHE / ".ovf-ready").exists():
            return f"needs {tool} (apt-get install -y debootstrap util-linux)"
    ok, why = engine_docker.cgroups_writable()
    if not ok:
        return why
    if not engine_docker._is_static(engine_docker.BUSYBOX):
        return f"needs a static {engine_docker.BUSYBOX} (apt-get install -y busybox-static)"
    return None


def build_cache() -> Path:
    """The cached chroot, built on first use. Raises RuntimeError with build.sh's words."""
    if not (CACHE / ".ovf-ready").exists():
        done = subprocess.run(["bash", str(BUILD), str(CACHE)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building the trixie chroot failed: {done.stderr.strip()[-800:]}")
    return CACHE


def versions() -> dict[str, str]:
    """Package -> version of the engines in the cached chroot (from build.sh's .ovf-versions)."""
    out = {}
    for line in (CACHE / ".ovf-versions").read_text().splitlines():
        name, _, version = line.partition(" ")
        out[name] = version
    return out


class Trixie:
    """A fresh copy of the chroot with its own mount namespace; :meth:`run` runs a command in it."""

    def __init__(self, base: Path):
        build_cache()
        self.base = Path(base)
        self.root = self.base / "trixie"
        subprocess.run(["cp", "-a", "--reflink=auto", str(CACHE), str(self.root)], check=True)
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                        "sleep", "infinity"], start_new_session=True)
        self.daemons: dict[str, subprocess.Popen] = {}
        r = str(self.root)
        time.sleep(0.2)
        self._ns(["sh", "-ec", f"mount --bind {r} {r}; mount -t proc proc {r}/proc; "
                               f"mount --rbind /sys {r}/sys; mount --rbind /dev {r}/dev; "
                               f"mount -t tmpfs tmpfs {r}/dev/shm; mount -t tmpfs tmpfs {r}/run; "
                               f"mount -t tmpfs tmpfs {r}/tmp"])
        # a busybox image's rootfs, for `docker import` / `podman import` inside the chroot
        engine_docker.busybox_rootfs(self.root / "srv" / "busybox")

    # -- running things ------------------------------------------------------------------------
    def _ns(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv],
                              check=True, capture_output=True, **kw)

    def argv(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--", "chroot", str(self.root),
                "/usr/bin/env", "-i", f"PATH={PATH}", "HOME=/root", *argv]

    def run(self, *argv: str, check: bool = True, input: bytes | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(self.argv(*argv), capture_output=True, input=input, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: "
                               f"{done.stderr.decode(errors='replace').strip()[-1500:]}")
        return done

    def sh(self, script: str, **kw) -> str:
        return self.run("sh", "-ec", script, **kw).stdout.decode()

    def write(self, inside: str, text: str) -> None:
        path = self.root / inside.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    # -- daemons -------------------------------------------------------------------------------
    def start(self, name: str, *argv: str, ready: list[str], timeout: float = 60) -> None:
        with open(self.base / f"{name}.log", "ab") as log:  # the daemon keeps its own copy
            self.daemons[name] = subprocess.Popen(self.argv(*argv), stdout=log, stderr=log,
                                                  stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.daemons[name].poll() is not None:
                raise RuntimeError(f"{name} exited: {(self.base / f'{name}.log').read_text()[-1500:]}")
            if self.run(*ready, check=False, timeout=30).returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"{name} did not answer in {timeout} s: "
                           f"{(self.base / f'{name}.log').read_text()[-1500:]}")

    def stop(self, name: str) -> None:
        engine_docker.terminate(self.daemons.pop(name, None), timeout=30)

    def start_containerd(self) -> None:
        self.start("containerd", "containerd", ready=["ctr", "version"])

    def start_dockerd(self, snapshotter: bool, own_containerd: bool = False,
                      data_root: str | None = None) -> None:
        """dockerd on the chroot's containerd (or, ``own_containerd``, on the one dockerd starts
        itself, whose root is ``<data root>/containerd/daemon``); ``snapshotter``: Docker's
        containerd image store."""
        self.write("/etc/docker/daemon.json",
                   '{"features": {"containerd-snapshotter": true}}\n' if snapshotter else "{}\n")
        extra = [] if own_containerd else ["--containerd=/run/containerd/containerd.sock"]
        extra += ["--data-root", data_root] if data_root else []
        self.start("dockerd", "dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                   "--exec-opt", "native.cgroupdriver=cgroupfs", *extra, ready=["docker", "info"])

    def docker(self, *args: str, **kw) -> str:
        return self.run("docker", *args, **kw).stdout.decode()

    def podman(self, *args: str, **kw) -> str:
        return self.run("podman", *args, **kw).stdout.decode()

    def ctr(self, *args: str, **kw) -> str:
        return self.run("ctr", *args, **kw).stdout.decode()

    def import_busybox(self, tool: str, ref: str = "ovf-test/busybox:1") -> None:
        """``docker import`` / ``podman import`` of the busybox rootfs under /srv/busybox."""
        self.sh(f"tar -C /srv/busybox -c . | {tool} import - {ref}")

    def merged_of(self, pid: int) -> str:
        """The kernel's own merged view of a running container: its init's root, as a host path."""
        return f"/proc/{pid}/root"

    # -- the end -------------------------------------------------------------------------------
    def close(self) -> None:
        for name in list(self.daemons)[::-1]:
            self.stop(name)
        try:
            ns = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        except OSError:
            ns = None
        for _ in range(3):  # shims, conmon, container processes: everything left in the namespace
            left = [pid for pid in _pids() if pid != self.holder.pid and _ns_of(pid) == ns]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        self.holder.kill()
        self.holder.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ns_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None
