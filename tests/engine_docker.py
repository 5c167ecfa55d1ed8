"""Hermetic dockerd for the engine tests: data root, exec root, socket and CLI config in a temp dir.

Nothing here touches a system daemon: dockerd gets its own ``--data-root``, ``--exec-root``,
``-H unix://...`` and ``--pidfile`` (see shared/reference/engines.md), every ``docker`` call gets
``DOCKER_HOST`` and ``DOCKER_CONFIG`` pointing at them, and the daemon is stopped by the pid
it wrote, never by name.

:func:`parse_diff` reads ``docker diff`` output (a name with a newline spans two lines there);
:func:`account` holds a ``docker diff`` against ``ovforensics.scan`` records and returns what it
had to explain, for the tests to pin down exactly.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

#: busybox applets the test images get as /bin links
APPLETS = ("sh", "echo", "rm", "mkdir", "chmod", "cat", "ls", "mv", "ln", "touch", "mkfifo",
           "printf", "sleep", "true", "cp")

BUSYBOX = "/bin/busybox"


def _is_static(path: str) -> bool:
    """An ELF executable with no PT_INTERP (no dynamic loader needed inside the image)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
                return False
            endian = "<" if head[5] == 1 else ">"
            phoff, = struct.unpack_from(endian + "Q", head, 0x20)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 0x36)
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    return all(struct.unpack_from(endian + "I", table, i * phentsize)[0] != 3 for i in range(phnum))


def missing() -> str | None:
    """Why the real-dockerd tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to run dockerd"
    for tool in ("dockerd", "docker"):
        if not shutil.which(tool):
            return f"needs {tool} (apt-get install -y docker.io)"
    if not _is_static(BUSYBOX):
        return f"needs a static {BUSYBOX} for the test images (apt-get install -y busybox-static)"
    return None


def cgroups_writable() -> tuple[bool, str]:
    """Engines start containers by making cgroups: inside a container the cgroup fs is usually
    read-only, and every engine test would fail for a reason that is not ours."""
    try:
        with open("/proc/self/mountinfo") as fh:
            points = [line.split()[4] for line in fh
                      if " - cgroup " in line or " - cgroup2 " in line]
    except OSError as exc:
        return False, f"cannot read /proc/self/mountinfo: {exc}"
    for point in points:
        probe = os.path.join(point, f"ovf-probe-{os.getpid()}")
        try:
            os.mkdir(probe)
            os.rmdir(probe)
        except OSError as exc:
            return False, f"cannot make a cgroup in {point} ({exc.strerror}): engines cannot start containers here"
    return True, ""


class DockerD:
    """One hermetic dockerd under ``base``; :meth:`cli` runs the docker CLI against it."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.data = self.base / "data"
        self.exec_root = self.base / "exec"
        self.sock = self.base / "docker.sock"
        self.pidfile = self.base / "docker.pid"
        self.log = self.base / "dockerd.log"
        self.pid: int | None = None
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}",
                        DOCKER_CONFIG=str(self.base / "cli"), DOCKER_BUILDKIT="0")
        self.env.pop("DOCKER_CONTEXT", None)
        self.env.pop("DOCKER_TLS_VERIFY", None)

    def start(self, timeout: float = 60.0) -> str | None:
        """Start dockerd and wait for ``docker info``; returns None, or why it did not come up."""
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "cli").mkdir(exist_ok=True)
        with open(self.log, "wb") as log:
            proc = subprocess.Popen(
                ["dockerd", "--data-root", str(self.data), "--exec-root", str(self.exec_root),
                 "-H", f"unix://{self.sock}", "--pidfile", str(self.pidfile),
                 "--iptables=false", "--ip6tables=false", "--bridge=none",
                 "--storage-driver=overlay2", "--exec-opt", "native.cgroupdriver=cgroupfs"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.pid = proc.pid
        self._proc = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return f"dockerd exited with {proc.returncode}: {self.log_tail()}"
            if self.cli("info", check=False).returncode == 0:
                return None
            time.sleep(0.25)
        return f"dockerd did not answer within {timeout:.0f}s: {self.log_tail()}"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cli(self, *args: str, check: bool = True, input: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(["docker", *args], env=self.env, input=input, capture_output=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} -> {proc.returncode}: "
                               f"{proc.stderr.decode(errors='replace').strip()}")
        return proc

    def text(self, *args: str) -> str:
        return self.cli(*args).stdout.decode("utf-8", errors="replace")

    def inspect(self, what: str) -> dict:
        return json.loads(self.text("inspect", what))[0]

    def stop(self) -> None:
        """Remove the containers, stop dockerd by its own pid, unmount what it left, under base only."""
        if self.pid is None:
            return
        if self._proc.poll() is None:
            ids = self.cli("ps", "-aq", check=False).stdout.split()
            if ids:
                self.cli("rm", "-f", *[i.decode() for i in ids], check=False)
            pid = self._dockerd_pid()
            containerd = self._containerd_pid()
            for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while self._proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                if self._proc.poll() is not None:
                    break
            if containerd is not None and _alive(containerd):  # only if dockerd had to be killed
                os.kill(containerd, signal.SIGKILL)
        self.pid = None
        unmount_under(self.base)

    @contextlib.contextmanager
    def paused(self):
        """The daemon stopped (SIGSTOP to dockerd and the containerd it manages) for the block,
        continued after: a live store whose own daemon may write it (containerd's metadata
        GC updates meta.db some seconds after containers change) holds still, so a change seen
        in the block is the reader's. Running containers are left alone."""
        pids = [p for p in (self._dockerd_pid(), self._containerd_pid())
                if p is not None and _alive(p)]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 10
            while not all(_stopped(pid) for pid in pids):  # SIGSTOP lands asynchronously
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dockerd {pids} did not stop")
                time.sleep(0.05)
            yield
        finally:
            for pid in pids:
                if _alive(pid):
                    os.kill(pid, signal.SIGCONT)

    def _dockerd_pid(self) -> int | None:
        """dockerd's own word for its pid (its pidfile), else the pid we started."""
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return self.pid

    def _containerd_pid(self) -> int | None:
        try:
            return int((self.exec_root / "containerd" / "containerd.pid").read_text().strip())
        except (OSError, ValueError):
            return None


def _stopped(pid: int) -> bool:
    """Every thread of ``pid`` is in the stopped state (T)."""
    try:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/stat") as fh:
                states.append(fh.read().rsplit(")", 1)[1].split()[0])
    except OSError:
        return True  # gone: it writes nothing
    return all(state == "T" for state in states)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def terminate(proc: "subprocess.Popen | None", timeout: float = 20) -> None:
    """Stop a daemon this test run started: SIGTERM, then SIGKILL after ``timeout`` s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def unmount_under(base) -> None:
    """Lazily unmount whatever an engine left mounted under ``base``, deepest first."""
    for target in _mounts_under(base):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def _mounts_under(base: Path) -> list[str]:
    """Mount points strictly under ``base``, deepest first (from /proc/self/mountinfo)."""
    prefix = str(base).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix) or point == str(base):
                found.append(point)
    return sorted(set(found), key=len, reverse=True)


# -- images ------------------------------------------------------------------------------------
def busybox_rootfs(dest: Path) -> Path:
    """A tiny rootfs: static busybox and its applet links, plus a few files the tests change."""
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", dest / "bin" / applet)
    files = {"etc/motd": "hi\n", "etc/issue": "ovf test\n", "data/a": "a\n", "data/sub/b": "b\n",
             "srv/tree/1/f": "f\n", "srv/tree/2/g": "g\n", "var/keep/k": "k\n"}
    for rel, body in files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(body)
    for rel in ("tmp", "proc", "sys", "dev", "root"):
        (dest / rel).mkdir(exist_ok=True)
    return dest


#: the multi-layer image: each RUN is a layer; later ones delete what earlier ones made, so
#: the image's own layers hold whiteouts and an opaque directory
DOCKERFILE = """\
FROM ovf-test/busybox:1
RUN mkdir -p /opt/app/lib && echo v1 > /opt/app/lib/x && echo keep > /opt/app/keep && echo gone > /opt/gone
RUN rm /opt/gone && rm -rf /opt/app/lib && mkdir /opt/app/lib && echo v2 > /opt/app/lib/y && rm /etc/motd
RUN echo tmp > /tmp.txt && rm -rf /var/keep
"""


# -- docker diff -------------------------------------------------------------------------------
_ENTRY = re.compile(r"([ACD]) (/.*)")


def parse_diff(text: str) -> list[tuple[str, str]]:
    """``docker diff`` lines -> [(kind, path)]. Docker prints names raw: a newline in a name
    continues the path on the next line (no line of docker's own starts otherwise)."""
    entries: list[tuple[str, str]] = []
    for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        match = _ENTRY.fullmatch(line)
        if match:
            entries.append((match.group(1), match.group(2)))
        elif entries:
            kind, path = entries[-1]
            entries[-1] = (kind, path + "\n" + line)
        elif line:
            raise ValueError(f"docker diff: unexpected line {line!r}")
    return entries


def as_docker(path: bytes) -> str:
    """A name as docker diff prints it: each byte that is not UTF-8 becomes U+FFFD."""
    return path.decode("utf-8", errors="replace")


def _ancestors(path: str):
    while True:
        path = path.rsplit("/", 1)[0]
        if not path:
            return
        yield path


def account(changes, docker: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Hold ovforensics records against ``docker diff``; return (unexplained, explained).

    Docker -> ours: ``A`` must be our added, ``D`` our deleted, ``C`` our modified or a
    directory above one of our changes (docker prints every parent of a change as ``C``).
    Ours -> docker: added must be ``A``, modified ``C``, deleted ``D``, or a deleted path below
    a directory docker printed as ``D`` (docker never lists a deleted directory's contents) or
    below a directory our records show replaced by a non-directory (docker prints ``C``).
    Any anomaly record is unexplained.
    """
    ours = {}
    problems, explained = [], []
    for change in changes:
        if change.change == "anomaly":
            problems.append(f"anomaly {change.anomaly} at {change.path!r}: {change.detail}")
            continue
        ours[as_docker(change.path)] = change
    theirs = {path: kind for kind, path in docker}
    if len(theirs) != len(docker):
        problems.append(f"docker diff lists a path twice: {docker}")
    want = {"added": "A", "modified": "C", "deleted": "D"}
    for path, kind in sorted(theirs.items()):
        mine = ours.get(path)
        if mine is not None and want[mine.change] == kind:
            continue
        if kind == "C" and mine is None and any(p.startswith(path + "/") for p in ours):
            explained.append(f"C {path!r}: docker's parent-directory noise (a change below it)")
            continue
        problems.append(f"docker {kind} {path!r}: ours {mine.change if mine else 'nothing'}")
    for path, mine in sorted(ours.items()):
        kind = theirs.get(path)
        if kind is not None:
            continue  # checked above
        if mine.change == "deleted":
            gone = next((a for a in _ancestors(path) if theirs.get(a) == "D"), None)
            if gone is not None:
                explained.append(f"deleted {path!r} (via {mine.via}): below D {gone!r}; docker "
                                 f"lists a deleted directory alone")
                continue
            swapped = next((a for a in _ancestors(path) if theirs.get(a) == "C" and a in ours
                            and "type" in ours[a].what), None)
            if swapped is not None:
                explained.append(f"deleted {path!r} (via {mine.via}): below C {swapped!r}, a "
                                 f"directory replaced by a {ours[swapped].type}; docker does not "
                                 f"list what it hid")
                continue
        problems.append(f"ours {mine.change} {path!r} ({','.join(mine.what)}): not in docker diff")
    return problems, explained
