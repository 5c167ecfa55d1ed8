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
