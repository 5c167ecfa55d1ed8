"""Hermetic Podman for the engine tests: stores, run dirs and configuration in a temporary dir.

Nothing here touches a system store: every call passes ``--root``/``--runroot``, and
``CONTAINERS_CONF``/``CONTAINERS_STORAGE_CONF``/``CONTAINERS_REGISTRIES_CONF`` point at files
written here (``default_ulimits = []`` because the kernel refuses podman's setrlimit(NOFILE);
``lock_type = "file"`` so no lock segment in /dev/shm is shared with other podman users; runc
because crun refuses hybrid cgroups here). Podman 4.3 still writes two things on the host, with
no setting to move them: its blob-info cache ``/var/lib/containers/cache/blob-info-cache-v1.boltdb``
and an empty ``/run/containers/networks``; :func:`host_traces` removes them again when they were
not there before (neither ever holds containers or layers).

:class:`Podman` runs rootful podman, or rootless podman as another user (``setpriv``, a single
uid mapping: no /etc/subuid needed), optionally with fuse-overlayfs as the mount program.
:func:`account` holds a ``podman diff`` against ``ovforensics.scan`` and returns what it had to
explain, for the tests to pin down exactly.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine_docker import unmount_under  # one clean-up for every engine

#: busybox applets the test images get as /bin links
APPLETS = ("sh", "echo", "rm", "mkdir", "chmod", "cat", "ls", "mv", "ln", "touch", "mkfifo",
           "printf", "sleep", "true", "cp")

#: podman's libpod/diff.go ``initInodes``: mount-point stubs that podman creates in the
#: container's own upper layer (podman has no init layer) and that `podman diff` never prints
INIT_INODES = frozenset({"/dev", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/proc", "/run",
                         "/run/notify", "/run/.containerenv", "/run/secrets", "/run/podman-init",
                         "/sys", "/etc/mtab"})

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def missing() -> str | None:
    """Why the real-podman tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to run podman hermetically"
    for tool in ("podman", "runc", "busybox", "conmon", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install podman runc busybox-static)"
    busybox = shutil.which("busybox")
    with open(busybox, "rb") as fh:
        head = fh.read(1 << 16)
    if b"ld-linux" in head or b"/lib64/" in head:
        return "busybox is dynamically linked: install busybox-static"
    return None


def make_rootfs(dest: Path, files: dict[str, bytes | None]) -> Path:
    """A busybox rootfs tar at ``dest``/rootfs.tar; ``files`` maps paths to bytes (None: a dir)."""
    tree = dest / "rootfs"
    (tree / "bin").mkdir(parents=True)
    shutil.copy2(shutil.which("busybox"), tree / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", tree / "bin" / applet)
    for rel, data in files.items():
        path = tree / rel.lstrip("/")
        if data is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(0o644)
    tar = dest / "rootfs.tar"
    subprocess.run(["tar", "-C", str(tree), "--numeric-owner", "--owner=0", "--group=0", "-cf",
                    str(tar), "."], check=True)
    tar.chmod(0o644)
    return tar


@dataclass
class Podman:
    base: Path
    user: tuple[int, int] | None = None  # rootless: (uid, gid); the store is then under base/home
    mount_program: str | None = None
    started: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.base.mkdir(parents=True, exist_ok=True)
        conf = self.base / "containers.conf"
        own = self.base / "home" if self.user else self.base  # where podman (as that user) may write
        engine = ['lock_type = "file"', 'events_logger = "file"', 'cgroup_manager = "cgroupfs"',
                  'runtime = "runc"',
                  f'events_logfile_path = "{own}/events.log"']
        if self.user is None:
            engine += [f'tmp_dir = "{self.base}/run/libpod"',
                       f'static_dir = "{self.base}/storage/libpod"',
                       f'volume_path = "{self.base}/storage/volumes"']
        conf.write_text("[containers]\ndefault_ulimits = []\n[engine]\n" + "\n".join(engine) +
                        f'\n[network]\nnetwork_config_dir = "{own}/net"\n')
        (self.base / "registries.conf").write_text("unqualified-search-registries = []\n")
        storage_conf = '[storage]\ndriver = "overlay"\n'
        if self.user is None:
            self.storage = self.base / "storage"
            self.runroot = self.base / "run"
            storage_conf += f'graphroot = "{self.storage}"\nrunroot = "{self.runroot}"\n'
            (self.base / "storage.conf").write_text(storage_conf)
        else:
            self.home = self.base / "home"
            self.storage = self.home / ".local/share/containers/storage"
            # short: under a longer XDG_RUNTIME_DIR (here 51 characters did it) conmon's exit
            # command (`podman container cleanup`) fails silently, `podman run` waits 20 s for it
            # and the container stays "stopped" instead of "exited"
            self.runroot = self.base / "r"
            cfg = self.home / ".config/containers"
            cfg.mkdir(parents=True)
            (cfg / "storage.conf").write_text(storage_conf)
            self.runroot.mkdir()
            owner = f"{self.user[0]}:{self.user[1]}"
            subprocess.run(["chown", "-R", owner, str(self.home), str(self.runroot)], check=True)
            for path in (self.base, conf, self.base / "registries.conf"):
                path.chmod(0o755 if path.is_dir() else 0o644)

    # running podman ------------------------------------------------------------------------------
    def argv(self, *args: str) -> list[str]:
        argv = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs", "--storage-driver", "overlay"]
        if self.user is None:
            argv += ["--root", str(self.storage), "--runroot", str(self.runroot)]
        if self.mount_program:
            argv += ["--storage-opt", f"overlay.mount_program={self.mount_program}"]
        return argv + list(args)

    def env(self) -> dict[str, str]:
        env = {"PATH": PATH, "CONTAINERS_CONF": str(self.base / "containers.conf"),
               "CONTAINERS_REGISTRIES_CONF": str(self.base / "registries.conf"), "LC_ALL": "C"}
        if self.user is None:
            env["CONTAINERS_STORAGE_CONF"] = str(self.base / "storage.conf")
            env["HOME"] = os.environ.get("HOME", "/root")
        else:
            env["HOME"] = str(self.home)
            env["XDG_RUNTIME_DIR"] = str(self.runroot)
        return env

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        argv = self.argv(*args)
        if self.user is not None:
            argv = ["setpriv", f"--reuid={self.user[0]}", f"--regid={self.user[1]}", "--clear-groups"] + argv
        proc = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=timeout,
                              cwd=self.base)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def run(self, name: str, image: str, script: str, detach: bool = False) -> None:
        self("run", *(["-d"] if detach else []), "--name", name, "--network", "none", image,
             "sh", "-c", script)
        self.started.append(name)
        if not detach:  # conmon's cleanup moves the state from "stopped" to "exited" after run returns
            self.wait_state(name, "exited")

    def wait_state(self, name: str, state: str, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while (now := self.inspect(name)["State"]["Status"]) != state:
            if time.monotonic() > end:
                raise AssertionError(f"{name} stays {now}, never {state}")
            time.sleep(0.1)

    def create(self, name: str, image: str) -> None:
        self("create", "--name", name, "--network", "none", image, "true")
        self.started.append(name)

    def inspect(self, name: str) -> dict:
        return json.loads(self("inspect", "--format", "json", name).stdout)[0]

    def diff(self, name: str) -> dict[str, str]:
        """``podman diff`` as {path: "A"|"C"|"D"} (the JSON form: names with newlines survive).
        Asked as ``podman container diff``: plain ``podman diff c3`` diffs an image whose id
        starts with ``c3`` instead of the container named c3 (docs/engines.md)."""
        raw = json.loads(self("container", "diff", "--format", "json", name).stdout or "{}")
        out: dict[str, str] = {}
        for key, kind in (("added", "A"), ("changed", "C"), ("deleted", "D")):
            for path in raw.get(key) or []:
                assert path not in out, f"podman diff lists {path!r} twice"
                out[path] = kind
        return out

    def wait_for(self, path: Path, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > end:
                raise AssertionError(f"{path} did not appear")
            time.sleep(0.05)

    # cleaning up ---------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Remove our containers, unmount what podman left under base, end a rootless pause process."""
        if self.started:
            self("rm", "-f", "-t", "0", *self.started, check=False)
        # conmon's exit command (`podman container cleanup`) may still be on its way, and would
        # mount the store again after us: wait until no process names our dir
        end = time.monotonic() + 20
        while _processes_naming(self.base, skip_pause=True) and time.monotonic() < end:
            time.sleep(0.1)
        for pidfile in self.base.glob("**/libpod/tmp/pause.pid"):
            try:
                os.kill(int(pidfile.read_text().strip()), 9)
            except (ValueError, OSError):
                pass
        unmount_under(self.base)


def _processes_naming(base: Path, skip_pause: bool = False) -> list[int]:
    """Pids of processes whose command line names ``base`` (podman, conmon: ours)."""
    needle = str(base).encode()
    pause = set()
    if skip_pause:
        for pidfile in base.glob("**/libpod/tmp/pause.pid"):
            try:
                pause.add(int(pidfile.read_text().strip()))
            except (ValueError, OSError):
                pass
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in pause or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if needle in fh.read():
                    out.append(int(entry))
        except OSError:
            continue
    return out


#: what rootful podman 4.3 leaves on the host whatever its --root: {dir: the files it may hold}
HOST_TRACES = {"/var/lib/containers": {"cache", "cache/blob-info-cache-v1.boltdb"},
               "/run/containers": {"networks"}}


def host_traces() -> list[str]:
    """The HOST_TRACES dirs that do not exist yet: give the list to :func:`remove_traces` after."""
    return [d for d in HOST_TRACES if not os.path.lexists(d)]


def remove_traces(new: list[str]) -> None:
    """Remove the trace dirs our podman made, only if they hold nothing but podman's traces."""
    for top in new:
        if not os.path.isdir(top) or os.path.islink(top):
            continue
        found = {os.path.relpath(os.path.join(d, n), top)
                 for d, dirs, files in os.walk(top) for n in dirs + files}
        if found <= HOST_TRACES[top]:
            shutil.rmtree(top, ignore_errors=True)


def copy_tree(src: Path, dest: Path) -> None:
    """``cp -a`` (owners, modes, xattrs, 0/0 devices, links as links)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)


# -- podman diff vs ovforensics.scan -----------------------------------------------------------------

def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _under(path: str, parent: str) -> bool:
    return path.startswith(parent.rstrip("/") + "/")


def account(podman_diff: dict[str, str], changes: list, upper: str) -> dict[str, set[str]]:
    """Hold ``podman diff`` against our records; return what had to be explained, by reason.

    Every path podman prints must be ours with the same kind (A = added, D = deleted, C =
    modified) or be one of: ``C-parent`` (a directory above one of our records: podman prints
    every parent), ``C-copy-up`` (copied up with nothing different: podman does not compare),
    ``D-opaque`` (a directory made opaque: podman prints it as deleted although it exists; we
    report what it hides). Every record of ours must be in podman's list with the same kind or
    be one of: ``init-inode`` (a mount-point stub podman filters out), ``opaque-hidden`` (a
    lower file hidden by an opaque directory: podman never lists those), ``below-deleted`` (inside
    a deleted directory: podman lists only the directory), ``renamed-contents`` (inside a renamed
    directory: podman lists only the directory). Anything else raises AssertionError.
    """
    ours: dict[str, object] = {}
    for change in changes:
        assert change.change != "anomaly", f"unexpected anomaly {change.to_dict()}"
        ours[_text(change.path)] = change
    kind_of = {"added": "A", "deleted": "D", "modified": "C"}
    explained: dict[str, set[str]] = {}

    def note(reason: str, path: str) -> None:
        explained.setdefault(reason, set()).add(path)

    opaque_dirs = {p for p, k in podman_diff.items() if k == "D" and p not in ours}
    for path, kind in podman_diff.items():
        mine = ours.get(path)
        if mine is not None:
            assert kind_of[mine.change] == kind, f"{path!r}: podman {kind}, ours {mine.change}; {podman_diff}"
            continue
        in_upper = os.path.lexists(upper + path)
        if kind == "C":
            assert in_upper, f"podman diff: C {path!r}, not in the upper"
            if any(_under(other, path) for other in ours):
                note("C-parent", path)
            else:
                note("C-copy-up", path)
        elif kind == "D":
            assert os.path.isdir(upper + path) and not os.path.islink(upper + path), \
                f"podman diff: D {path!r}; we report nothing there and it is no directory in the upper"
            note("D-opaque", path)
        else:
            raise AssertionError(f"podman diff: A {path!r}; we report nothing there")
    for path, mine in ours.items():
        if path in podman_diff:
            continue
        if path in INIT_INODES:
            assert mine.change in ("added", "modified"), f"{path!r}: {mine.change}"
            note("init-inode", path)
        elif mine.change == "deleted" and mine.via == "opaque" and any(_under(path, d) for d in opaque_dirs):
            note("opaque-hidden", path)
        elif mine.change == "deleted" and mine.via == "parent" and any(
                _under(path, p) for p, k in podman_diff.items() if k == "D"):
            note("below-deleted", path)
        elif mine.change == "added" and any(
                _under(path, p) and getattr(ours.get(p), "renamed_from", None) is not None
                for p in podman_diff):
            note("renamed-contents", path)
        else:
            raise AssertionError(f"ours: {mine.change} {path!r} ({mine.via or ','.join(mine.what)}); "
                                 f"podman diff does not list it")
    return explained
