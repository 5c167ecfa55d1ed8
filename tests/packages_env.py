"""Test inputs for the package-database tests: a cached debootstrapped Debian 12 root, and
.deb packages built with ``dpkg-deb --build``."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("OVF_BOOKWORM_CACHE", "/var/cache/ovforensics/bookworm"))


def bookworm_root() -> tuple[Path | None, str]:
    """The cached minbase root (built once per machine by tests/bookworm/build.sh), or why not."""
    if (CACHE / ".ovf-ready").exists():
        return CACHE, ""
    if os.geteuid() != 0:
        return None, "needs root to debootstrap a Debian root"
    if not shutil.which("debootstrap"):
        return None, "needs debootstrap (apt-get install -y debootstrap)"
    proc = subprocess.run([str(HERE / "bookworm" / "build.sh"), str(CACHE)], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        return None, f"debootstrap of bookworm failed: {proc.stderr.strip()[-300:]}"
    return CACHE, ""


def build_deb(where: Path, name: str, version: str, files: dict[str, bytes],
              conffiles: tuple[str, ...] = (), modes: dict[str, int] | None = None) -> Path:
    """A .deb holding ``files`` (container path -> bytes), made by dpkg-deb --build."""
    tree = where / f"{name}_{version}"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: ovf <t@example>\n"
        f"Description: ovforensics test package\n")
    if conffiles:
        (tree / "DEBIAN" / "conffiles").write_text("".join(c + "\n" for c in conffiles))
    for path, body in files.items():
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        os.chmod(target, (modes or {}).get(path, 0o644))
    out = where / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(out)], check=True,
                   capture_output=True)
    return out


def parse_dpkg_verify(text: str) -> dict[str, str]:
    """``dpkg --verify`` lines -> {path: "altered" | "missing"} (deb-verify format: nine check
    characters, ``5`` third where the MD5 differs, or ``missing``; a ``c`` for conffiles; the
    path)."""
    import re

    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+) +(?:c +)?(/.*)$", line)
        if m is None:
            continue
        checks, path = m.groups()
        if checks == "missing":
            out[path] = "missing"
        elif len(checks) == 9 and checks[2] == "5":
            out[path] = "altered"
    return out


def build_rpm(where: Path, name: str, version: str, files: dict[str, bytes],
              config: tuple[str, ...] = (), links: dict[str, str] | None = None) -> Path:
    """A noarch .rpm made by rpmbuild (Debian's rpm package) holding ``files`` and ``links``."""
    lines = [f"Name: {name}", f"Version: {version}", "Release: 1", "Summary: t", "License: MIT",
             "BuildArch: noarch", "%description", "t", "%install"]
    for path, body in files.items():
        lines.append(f"mkdir -p %{{buildroot}}{os.path.dirname(path)}")
        text = body.decode().replace("\n", "\\n")  # plain test bodies: no ' or %
        lines.append(f"printf '{text}' > %{{buildroot}}{path}")
    for path, target in (links or {}).items():
        lines.append(f"mkdir -p %{{buildroot}}{os.path.dirname(path)}")
        lines.append(f"ln -s {target} %{{buildroot}}{path}")
    lines.append("%files")
    lines += [f"%config {p}" if p in config else p for p in [*files, *(links or {})]]
    spec = where / f"{name}-{version}.spec"
    spec.write_text("\n".join(lines) + "\n")
    top = where / "top"
    subprocess.run(["rpmbuild", "--define", f"_topdir {top}", "-bb", str(spec)], check=True,
                   capture_output=True)
    return top / "RPMS" / "noarch" / f"{name}-{version}-1.noarch.rpm"


def rpm(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Debian's rpm on a tree the test made (never on evidence)."""
    return subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", *args],
                          capture_output=True, text=True)


def parse_rpm_verify(text: str) -> dict[str, str]:
    """``rpm -V`` lines -> {path: "altered" | "missing"}: ``5`` (digest) or ``L`` (link target)
    in the 9-character check column is altered; ``missing`` is missing."""
    import re

    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+) +(?:[cdglr] +)?(/.*)$", line)
        if m is None:
            continue
        checks, path = m.groups()
        if checks == "missing":
            out[path] = "missing"
        elif len(checks) == 9 and (checks[2] == "5" or checks[4] == "L"):
            out[path] = "altered"
    return out
