"""``man ovforensics`` after ``pip install`` (issue 14): the wheel carries man/ovforensics.1 as a
data file, pip puts it in ``<prefix>/share/man/man1``, and man-db finds a virtual environment's
``share/man`` from its ``bin`` on PATH. Built once: a wheel of this checkout (the compiled
differ included, where cargo is; pip fetches the build requirements, as ``pip install`` does),
installed into a fresh venv with ``--no-deps``, read through ``man`` itself."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import need

ROOT = Path(__file__).resolve().parents[1]
PAGE = "share/man/man1/ovforensics.1"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the venv it is installed in, --no-deps)."""
    work = tmp_path_factory.mktemp("manpage")
    src = work / "src"  # a copy: the build's build/ and egg-info stay out of the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "target", "*.so", "*.egg-info")
    for name in ("ovforensics", "man", "native"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    dist = work / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(dist), str(src)], capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("ovforensics-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"),
                              "install", "--no-deps", "--no-index", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    return wheel, venv


def _man_env(venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT", "MANPAGER", "PAGER")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}/usr/local/bin:/usr/bin:/bin", MANPAGER="cat",
               PAGER="cat", COLUMNS="100", LANG="C.UTF-8")
    return env


def test_wheel_carries_the_man_page(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as z:
        pages = [n for n in z.namelist() if n.endswith(f".data/data/{PAGE}")]
        assert len(pages) == 1, z.namelist()
        assert pages[0].startswith("ovforensics-")
        assert z.read(pages[0]) == (ROOT / "man/ovforensics.1").read_bytes()


def test_pip_install_puts_it_under_the_prefix(installed):
    _, venv = installed
    assert (venv / PAGE).read_bytes() == (ROOT / "man/ovforensics.1").read_bytes()


def test_man_finds_and_shows_it(installed):
    _, venv = installed
    man = shutil.which("man")
    need(man is not None, "man is not installed (apt-get install man-db)")
    need(shutil.which("col") is not None, "col is not installed (apt-get install bsdextrautils)")
    where = subprocess.run([man, "-w", "ovforensics"], capture_output=True, text=True,
                           env=_man_env(venv), timeout=60)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve() == (venv / PAGE).resolve()
    shown = subprocess.run(f"{man} ovforensics | col -b", shell=True, capture_output=True,
                           text=True, env=_man_env(venv), timeout=60)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "NAME ovforensics - container layer forensics for overlayfs" in text
    assert "COMPLETION ovforensics completion SHELL prints a script" in text
