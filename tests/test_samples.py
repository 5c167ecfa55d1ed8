"""The shipped samples: pinned expectations, archives vs unpacked dirs, and the kernel's verdict."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import ovforensics
from conftest import need, need_whiteout_devices

ROOT = Path(__file__).resolve().parents[1]
RICH = ROOT / "samples" / "rich"
RICH_LAYERS = ["upper", "mid", "base"]  # upper first, then lowers topmost first

RICH_EXPECTED = [
    ("modified", "/etc/passwd", ("mode",), None, 1),        # metacopy: metadata-only copy-up
    ("modified", "/etc/tool-link", ("target",), None, 1),
    ("added", "/home/admin", (), None, None),               # renamed from /home/user
    ("added", "/home/admin/notes", (), None, 1),
    ("deleted", "/home/user", (), "whiteout", 1),
    ("deleted", "/home/user/notes", (), "parent", 1),
    ("modified", "/opt/app/a", ("content",), None, 1),
    ("deleted", "/opt/app/lib", (), "opaque", 1),
    ("deleted", "/opt/app/lib/b", (), "parent", 1),
    ("deleted", "/opt/app/lib/c", (), "parent", 1),
    ("deleted", "/srv/www/index.html", (), "whiteout", 0),  # the mid layer's file
    ("added", "/tmp", (), None, None),
    ("added", "/tmp/.x", (), None, None),
    ("added", "/tmp/.x/payload", (), None, None),
    ("modified", "/usr/bin/tool", ("content", "mtime"), None, 1),
    ("modified", "/var/log/app.log", ("mtime",), None, 1),
]


def summary(records):
    return [(r.change, r.path_text, r.what, r.via, r.lower_layer.index if r.lower_layer else None)
            for r in records]


def scan_rich(where: Path, ext: str = ".tar", **kw):
    layers = [str(where / (name + ext)) for name in RICH_LAYERS]
    return list(ovforensics.scan(layers[0], layers[1:], **kw))


def test_rich_sample_from_archives():
    records = scan_rich(RICH)
    assert summary(records) == RICH_EXPECTED
    by_path = {r.path: r for r in records}
    assert by_path[b"/home/admin"].renamed_from == b"/home/user"
    assert by_path[b"/etc/passwd"].metacopy is True
    assert by_path[b"/srv/www/index.html"].lower_path == f"{RICH / 'mid.tar'}:srv/www/index.html".encode()
    assert by_path[b"/tmp/.x/payload"].mode == 0o4755
    assert by_path[b"/etc/tool-link"].target == b"/etc/shadow"


@pytest.fixture
def unpacked(tmp_path):
    """The rich sample unpacked as the kernel would have it on disk (root: devices, trusted.*)."""
    need(os.geteuid() == 0, "needs root to unpack whiteout devices and trusted.* xattrs")
    need_whiteout_devices(tmp_path)
    for name in RICH_LAYERS:
        (tmp_path / name).mkdir()
        subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf",
                        str(RICH / f"{name}.tar"), "-C", str(tmp_path / name)], check=True)
    return tmp_path


def test_archives_and_unpacked_dirs_agree(unpacked):
    from_dirs = scan_rich(unpacked, ext="")
    assert summary(from_dirs) == RICH_EXPECTED
    from_tars = scan_rich(RICH)
    for a, b in zip(from_dirs, from_tars):
        if a.type == "dir":  # a directory's st_size is the filesystem's business; tar says 0
            a.size = b.size
        assert (a.path, a.size, a.mode, a.uid, a.gid, a.mtime_ns, a.target, a.renamed_from,
                a.metacopy) == (b.path, b.size, b.mode, b.uid, b.gid, b.mtime_ns, b.target,
                                b.renamed_from, b.metacopy)


def test_rich_sample_matches_the_kernel(unpacked, overlay):
    from oracle import expected_changes, walk_view

    upper, mid, base = (unpacked / n for n in RICH_LAYERS)
    base_view = overlay.mount([mid, base], ro=True)
    merged_view = overlay.mount([upper, mid, base], ro=True, options=("metacopy=on",))
    expected = expected_changes(walk_view(base_view), walk_view(merged_view))
    got = {r.path: (r.change, r.what) for r in scan_rich(unpacked, ext="")
           if r.change != "anomaly"}
    assert {p: (c, set(w)) for p, (c, w) in got.items()} == \
           {p: (c, set(w)) for p, (c, w) in expected.items()}
