"""Marker forms the kernel does not make (or makes only through userspace tools), on hand-made trees.

Most use the ``user.overlay.`` namespace (``xattr_ns="user"``), which an unprivileged user can
set, so they run without root. Forms that also matter to the kernel are cross-checked against a
real mount in test_kernel_forms.py.
"""
from __future__ import annotations

import base64
import os

import pytest

import ovforensics
from conftest import need, need_whiteout_devices


def tree(root, spec: dict) -> str:
    """Make files/dirs from ``{"path": content | None(dir) | ("xattrs", {...})}``."""
    os.makedirs(root, exist_ok=True)
    for rel, value in spec.items():
        path = os.path.join(os.fsencode(root), os.fsencode(rel))
        xattrs = {}
        if isinstance(value, tuple):
            value, xattrs = value
        if value is None:
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(value)
        for name, val in xattrs.items():
            os.setxattr(path, name, val, follow_symlinks=False)
    return str(root)


def changes(upper, lowers, **kw):
    return [(r.change, r.path_text, r.via or ",".join(r.what) or r.anomaly or "")
            for r in ovforensics.scan(upper, lowers, **kw)]


@pytest.fixture
def lower(tmp_path):
    return tree(tmp_path / "lower", {"a/x": b"x", "b/y": b"y", "b/z": b"z", "keep": b"k"})


def test_oci_wh_files(tmp_path, lower):
    upper = tree(tmp_path / "upper", {".wh.a": b"", "b/.wh..wh..opq": b"", "b/new": b"n",
                                      ".wh..wh.plnk": None})
    assert changes(upper, [lower], whiteouts="oci") == [
        ("deleted", "/a", "wh-file"),
        ("deleted", "/a/x", "parent"),
        ("added", "/b/new", ""),
        ("deleted", "/b/y", "opaque"),
        ("deleted", "/b/z", "opaque"),
    ]


def test_wh_files_are_plain_files_under_kernel_rules(tmp_path, lower):
    upper = tree(tmp_path / "upper", {".wh.a": b""})
    # (auto reads a hand-made tree with only OCI markers as OCI: test_hostile2.py)
    assert changes(upper, [lower], whiteouts="kernel") == [
        ("added", "/.wh.a", ""),
        ("anomaly", "/.wh.a", "whiteout-lookalike"),
    ]


def test_xwhiteout_in_upper_deletes(tmp_path, lower):
    upper = tree(tmp_path / "upper", {
        "keep": (b"", {"user.overlay.whiteout": b""}),
        "a/x": (b"not empty", {"user.overlay.whiteout": b""}),  # not zero-size: a plain file
    })
    assert changes(upper, [lower], xattr_ns="user") == [
        ("modified", "/a/x", "content,mtime"),
        ("deleted", "/keep", "xwhiteout"),
    ]


@pytest.mark.parametrize("value, opaque", [(b"y", True), (b"x", False), (b"yy", False),
                                           (b"Y", False), (b"", False)])
def test_only_y_is_opaque(tmp_path, lower, value, opaque):
    upper = tree(tmp_path / "upper", {"b": (None, {"user.overlay.opaque": value}), "b/new": b"n"})
    os.utime(os.path.join(upper, "b"), ns=(0, os.stat(os.path.join(lower, "b")).st_mtime_ns))
    got = changes(upper, [lower], xattr_ns="user")
    hidden = [("deleted", "/b/y", "opaque"), ("deleted", "/b/z", "opaque")] if opaque else []
    assert got == [("added", "/b/new", "")] + hidden


def test_fuseoverlayfs_opaque_needs_fuse_rules(tmp_path, lower):
    upper = tree(tmp_path / "upper", {"b": (None, {"user.fuseoverlayfs.opaque": b"y"})})
    assert changes(upper, [lower], whiteouts="fuse") == [
        ("deleted", "/b/y", "opaque"), ("deleted", "/b/z", "opaque")]
    assert changes(upper, [lower], whiteouts="kernel") == [
        ("modified", "/b", "xattrs")]  # under kernel rules it is just a user xattr


def test_orphan_whiteout_is_an_anomaly_not_a_deletion(tmp_path, lower):
    upper = tree(tmp_path / "upper", {".wh.ghost": b""})
    assert changes(upper, [lower], whiteouts="oci") == [("anomaly", "/ghost", "orphan-whiteout")]


def test_escaped_xattrs_are_user_data_and_control_xattrs_are_not(tmp_path, lower):
    upper = tree(tmp_path / "upper", {
        "a/x": (b"x", {"user.overlay.overlay.foo": b"1"}),
        "keep": (b"k", {"user.overlay.origin": b"\0fh", "user.overlay.impure": b"y"}),
    })
    for rel in ("a/x", "keep"):
        st = os.stat(os.path.join(lower, rel))
        os.utime(os.path.join(upper, rel), ns=(st.st_atime_ns, st.st_mtime_ns))
    records = list(ovforensics.scan(upper, [lower], xattr_ns="user"))
    assert [(r.path, r.what) for r in records] == [(b"/a/x", ("xattrs",))]


@pytest.mark.parametrize("redirect", [b"/../../etc", b"../etc", b"a/b", b"", b"//a"])
def test_bad_redirect_never_climbs_out(tmp_path, lower, redirect):
    upper = tree(tmp_path / "upper", {"new": (None, {"user.overlay.redirect": redirect})})
    records = list(ovforensics.scan(upper, [lower], xattr_ns="user"))
    assert [(r.change, r.path, r.anomaly) for r in records] == [
        ("anomaly", b"/new", "bad-redirect"), ("added", b"/new", None)]


def test_absolute_redirect_names_the_old_path(tmp_path, lower):
    upper = tree(tmp_path / "upper", {"moved": (None, {"user.overlay.redirect": b"/b"}),
                                      ".wh.b": b""})
    records = list(ovforensics.scan(upper, [lower], whiteouts="oci", xattr_ns="user"))
    got = [(r.change, r.path_text, r.renamed_from, r.via) for r in records]
    assert got == [
        ("deleted", "/b", None, "wh-file"),
        ("deleted", "/b/y", None, "parent"),
        ("deleted", "/b/z", None, "parent"),
        ("added", "/moved", b"/b", None),
        ("added", "/moved/y", None, None),
        ("added", "/moved/z", None, None),
    ]
    moved_y = records[4]
    assert moved_y.lower_path == os.fsencode(os.path.join(lower, "b/y"))


def test_metacopy_without_data_is_reported(tmp_path, lower):
    upper = tree(tmp_path / "upper", {"ghost": (b"", {"user.overlay.metacopy": b""})})
    records = list(ovforensics.scan(upper, [lower], xattr_ns="user"))
    assert [(r.change, r.anomaly) for r in records] == [("anomaly", "metacopy-without-data"),
                                                        ("added", None)]


def test_metacopy_bytes_are_never_compared(tmp_path, lower):
    # the upper holds a metacopy file whose own bytes differ (they are never data): no content change
    upper = tree(tmp_path / "upper", {"keep": (b"GARBAGE", {"user.overlay.metacopy": b""})})
    os.chmod(os.path.join(upper, "keep"), 0o600)
    st = os.stat(os.path.join(lower, "keep"))
    os.utime(os.path.join(upper, "keep"), ns=(st.st_atime_ns, st.st_mtime_ns))
    records = list(ovforensics.scan(upper, [lower], xattr_ns="user"))
    assert [(r.path, r.what, r.metacopy) for r in records] == [(b"/keep", ("mode",), True)]


def test_dir_replaced_by_file_is_type_change(tmp_path, lower):
    upper = tree(tmp_path / "upper", {"b": b"now a file"})
    assert changes(upper, [lower]) == [
        ("modified", "/b", "type"),
        ("deleted", "/b/y", "type-change"),
        ("deleted", "/b/z", "type-change"),
    ]


def test_file_replaced_by_dir_adds_its_children(tmp_path, lower):
    upper = tree(tmp_path / "upper", {"keep/inner": b"i"})
    assert changes(upper, [lower]) == [("modified", "/keep", "type"), ("added", "/keep/inner", "")]


def test_non_utf8_name_keeps_exact_bytes(tmp_path, lower):
    upper = tree(tmp_path / "upper", {})
    open(os.path.join(os.fsencode(upper), b"bad\xff\nname"), "wb").close()
    (record,) = ovforensics.scan(upper, [lower])
    out = record.to_dict()
    assert out["path"] == "/bad\\xff\nname"
    assert base64.b64decode(out["path_b64"]) == b"/bad\xff\nname"


def test_whiteouts_inside_lower_layers_shape_the_base(tmp_path):
    bottom = tree(tmp_path / "l2", {"x": b"old", "d/f": b"f"})
    middle = tree(tmp_path / "l1", {".wh.x": b"", "d/.wh..wh..opq": b""})
    upper = tree(tmp_path / "up", {"x": b"new", "d/f": b"f2"})
    # x and d/f are not in the base (l1 deleted them), so the upper's are added, not modified
    assert changes(upper, [middle, bottom], whiteouts="oci") == [
        ("added", "/d/f", ""), ("added", "/x", "")]


def test_missing_lower_is_a_clear_error(tmp_path):
    with pytest.raises(ovforensics.LayerError, match="nope"):
        list(ovforensics.scan(tree(tmp_path / "up", {}), [str(tmp_path / "nope")]))


def test_device_other_than_0_0_is_not_a_whiteout(tmp_path, lower):
    need(os.geteuid() == 0, "needs root to mknod")
    need_whiteout_devices(tmp_path)
    upper = tree(tmp_path / "upper", {})
    os.mknod(os.path.join(upper, "keep"), 0o600 | 0o020000, os.makedev(1, 3))
    os.mknod(os.path.join(upper, "a"), 0o000 | 0o020000, os.makedev(0, 0))
    assert changes(upper, [lower]) == [
        ("deleted", "/a", "whiteout"), ("deleted", "/a/x", "parent"), ("modified", "/keep", "type")]
