"""The kernel is the oracle: random overlay stacks built through real mounts, checked against the scanner.

Each generated case builds a stack with real kernel markers in every layer but the bottom one:

* L2, the bottom lower: a plain directory with a random small tree;
* L1 (and sometimes L0 above it): the upper of an overlay mounted over the layers below, after
  random operations through the mount, so the lowers hold kernel whiteouts, opaque dirs,
  redirects, metacopy files, escaped xattrs;
* UPPER: the container's upper, over L0:L1:L2, after more random operations through the mount.

Then the kernel mounts two read-only views, *base* (the lowers alone) and *merged* (UPPER on top),
both are walked, and the expected report is their difference (:func:`oracle.expected_changes`:
every added, deleted and modified path, with ``what``). ``ovforensics.scan`` reads only the raw
directories and must report exactly that: no missing, extra or different record, and no anomaly
at a path the kernel shows unchanged. (The oracle checks itself too: each read-only view must
equal what the read-write mount showed.)

Three mount flavours run: kernel defaults; ``redirect_dir=on,metacopy=on`` (real redirects and
metacopy files); ``userxattr`` (``user.overlay.*`` markers, as rootless engines write them).
Operations are tuples such as ``("rename", "a", "b/c")``; ``Pick(n)`` means "the n-th existing
entry". A failing case shrinks to a few operations (``("nop",)`` marks a dropped one); the
failure message lists each operation with its outcome (``ok`` or the errno), a ``reproduce:``
line, the expected and reported records with both kernel views of each path, and the raw layers.
Replay a reported case with ``oracle.build(Case(...), flavour, workdir)``.

``OVF_ORACLE_EXAMPLES`` sets the number of generated cases per flavour (default 400).
Needs root and overlayfs (skips on a laptop, fails under ``OVF_REQUIRE_REAL=1``).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
import oracle  # noqa: E402
from conftest import need  # noqa: E402
from oracle import (DATA, DEVICES, FLAVOURS, MODES, NAMES, ODD_NAMES, OWNERS, TARGETS,  # noqa: E402
                    TIMES, XATTR_NAMES, XATTR_VALUES, Case, Pick)

EXAMPLES_PER_FLAVOUR = int(os.environ.get("OVF_ORACLE_EXAMPLES", "400"))


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory):
    """A scratch directory on a filesystem with user.* and trusted.* xattrs, overlay mounts work."""
    base = tmp_path_factory.mktemp("oracle")
    ok, why = oracle.probe(base)
    need(ok, why)
    yield base
    oracle.umount_all()


@pytest.fixture
def workdir(oracle_dir):
    d = tempfile.mkdtemp(dir=oracle_dir)
    try:
        yield d
    finally:
        oracle.umount_all()
        shutil.rmtree(d, ignore_errors=True)


def scan(built: oracle.Built) -> list:
    import ovforensics

    return list(ovforensics.scan(upper=os.fsdecode(built.upper),
                                 lowers=[os.fsdecode(p) for p in built.lowers]))


def check(built: oracle.Built) -> list:
    """Scan the raw layers of ``built``; fail with a full report if the scanner and kernel disagree."""
    records = scan(built)
    report = oracle.compare(built, records)
    if report:
        pytest.fail(report, pytrace=False)
    return records


def by_path(records) -> dict:
    out = {}
    for r in records:
        if r.change != "anomaly":
            out[r.path] = r
    return out


# -- strategies ----------------------------------------------------------------------------------
def _weighted_paths() -> list[str]:
    """Short paths are the likeliest, so that operations keep colliding with what exists."""
    one = list(NAMES)
    two = [f"{x}/{y}" for x in NAMES for y in NAMES]
    three = [f"{x}/{y}/{z}" for x in NAMES[:2] for y in NAMES[:2] for z in NAMES[:2]]
    odd = list(ODD_NAMES) + [f"a/{n}" for n in ODD_NAMES]
    return one * 4 + two + three + odd


rel = st.sampled_from(_weighted_paths())
#: an entry that exists when the operation runs (the n-th one, sorted), or else a literal path
some = st.one_of(st.integers(0, 63).map(Pick), st.integers(0, 63).map(Pick), rel)
some_or_root = st.one_of(some, st.just(""))  # attribute changes may hit the root directory too

write = st.tuples(st.just("write"), st.one_of(rel, some), st.sampled_from(DATA))
mkdir = st.tuples(st.just("mkdir"), rel, st.sampled_from((0o755, 0o700)))
symlink = st.tuples(st.just("symlink"), st.sampled_from(TARGETS), rel)
mkfifo = st.tuples(st.just("mkfifo"), rel)
chmod = st.tuples(st.just("chmod"), some_or_root, st.sampled_from(MODES))
chown = st.builds(lambda p, o: ("chown", p, *o), some_or_root, st.sampled_from(OWNERS))
setxattr = st.tuples(st.just("setxattr"), some_or_root, st.sampled_from(XATTR_NAMES),
                     st.sampled_from(XATTR_VALUES))
link = st.tuples(st.just("link"), some, rel)

#: does nothing: the shrinker turns operations a failure does not need into this (lists have a
#: minimum length so that generated stacks are not trivial); reports leave it out
NOP = st.just(("nop",))

#: the bottom layer: a plain directory, mostly creations (parents are made on demand)
l2_write = st.tuples(st.just("write"), rel, st.sampled_from(DATA[1:]))
l2_ops = st.one_of(
    NOP, l2_write, l2_write, l2_write, l2_write, l2_write, mkdir, mkdir,
    symlink, mkfifo, chmod, chown, setxattr, setxattr, link,
    st.tuples(st.just("setacl"), some), st.tuples(st.just("setacl"), some, st.just("default")),
    st.tuples(st.just("setcap"), some), st.tuples(st.just("socket"), rel),
    st.tuples(st.just("mknod"), rel, st.sampled_from("cb"), st.sampled_from(DEVICES[:2])),
)

#: operations through a read-write overlay mount (failures, e.g. EXDEV or ENOENT, are ignored)
touch = st.tuples(st.just("touch"), some_or_root, st.sampled_from(TIMES))
rename = st.tuples(st.just("rename"), some, st.one_of(rel, some))
mount_ops = st.one_of(
    NOP, write, mkdir,
    st.tuples(st.just("rm"), some),
    st.tuples(st.just("rmtree"), some),
    # metadata-only changes (metacopy copy-ups) and renames (redirects) count twice
    chmod, chmod, chown, chown, touch, touch, setxattr, setxattr, rename, rename, rename,
    st.tuples(st.just("rmxattr"), some_or_root, st.sampled_from(XATTR_NAMES)),
    st.tuples(st.just("append"), some, st.sampled_from(DATA[1:])),
    st.tuples(st.just("truncate"), some, st.sampled_from((0, 1, 3))),
    st.tuples(st.just("replace_dir"), some),  # rm -rf d; mkdir d
    symlink, link, mkfifo,
    st.tuples(st.just("mknod"), rel, st.sampled_from("cb"), st.sampled_from(DEVICES)),
    st.tuples(st.just("setacl"), some_or_root),
    st.tuples(st.just("setacl"), some_or_root, st.just("default")),
    st.tuples(st.just("setcap"), some),
    st.tuples(st.just("socket"), rel),
)

cases = st.builds(
    Case,
    l2=st.lists(l2_ops, min_size=4, max_size=16),
    l1=st.one_of(st.none(), st.lists(mount_ops, min_size=2, max_size=10)),
    upper=st.lists(mount_ops, min_size=3, max_size=14),
    l0=st.one_of(st.none(), st.none(), st.lists(mount_ops, min_size=2, max_size=8)),
)


# -- the property --------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", list(FLAVOURS))
@settings(max_examples=EXAMPLES_PER_FLAVOUR, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(case=cases)
def test_scanner_matches_kernel(flavour, case, oracle_dir):
    check_case(case, flavour, oracle_dir)


def check_case(case, flavour: str, oracle_dir) -> None:
    """Build ``case`` through the kernel, scan it, and fail with the oracle's report."""
    d = tempfile.mkdtemp(dir=oracle_dir)
    try:
        built = oracle.build(case, flavour, d)
        target(float(len(built.expected)), label="expected changes")
        report = oracle.compare(built, scan(built))
        if report:
            raise AssertionError(report)
    finally:
        oracle.umount_all()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("big", [0, 2])
@pytest.mark.parametrize("flavour", list(FLAVOURS))
@settings(max_examples=max(EXAMPLES_PER_FLAVOUR // 4, 1), deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(case=cases)
def test_names_only_listings_match_kernel(flavour, big, case, oracle_dir):
    """The same property with directories listed by name only (ovforensics.layers.bigdir, used past
    20,000 entries): every directory (big=0), or all but those of one or two entries (big=2)."""
    from ovforensics.layers import bigdir

    saved, bigdir.BIG = bigdir.BIG, big
    try:
        check_case(case, flavour, oracle_dir)
    finally:
        bigdir.BIG = saved


# -- pinned classic cases ------------------------------------------------------------------------
def _mkfile(path, data: bytes, mtime=TIMES[0], mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime, mtime))


def _lower(workdir, name, files: dict) -> str:
    root = os.path.join(workdir, name)
    os.makedirs(root)
    os.chmod(root, 0o755)
    for rel_path, data in files.items():
        if data is None:
            os.makedirs(os.path.join(root, rel_path), exist_ok=True)
        else:
            _mkfile(os.path.join(root, rel_path), data)
    return root


def _build(workdir, lowers, ops, flavour="default"):
    built = oracle.build_upper(lowers, ops, flavour, workdir)
    failed = [(op, res) for op, res in zip(ops, built.outcomes["upper"]) if res != "ok"]
    assert not failed, f"setup operations failed: {failed}"
    return built


def test_docker_walkthrough(workdir):
    material = _lower(workdir, "material", {"concrete": b"bad concrete", "rebar": b"rebar"})
    material2 = _lower(workdir, "material2", {"concrete": b"good concrete", "marble": b"marble"})
    built = _build(workdir, [material2, material],
                   [("write", "frame", b"main structure"), ("rm", "marble")])
    assert built.expected == {b"/frame": ("added", ()), b"/marble": ("deleted", ())}
    recs = by_path(check(built))
    assert set(recs) == {b"/frame", b"/marble"}
    assert recs[b"/frame"].change == "added"
    marble = recs[b"/marble"]
    assert (marble.change, marble.via) == ("deleted", "whiteout")
    assert marble.lower_layer is not None and marble.lower_layer.index == 0
    assert marble.lower_path == os.path.join(os.fsencode(material2), b"marble")


def test_rm_rf_lower_dir_reports_every_path(workdir):
    low = _lower(workdir, "low", {"keep": b"k", "d/g": b"g", "d/x/f": b"f", "d/x/y/z": b"z", "d/e": None})
    built = _build(workdir, [low], [("rmtree", "d")])
    subtree = {b"/d", b"/d/g", b"/d/x", b"/d/x/f", b"/d/x/y", b"/d/x/y/z", b"/d/e"}
    assert built.expected == {p: ("deleted", ()) for p in subtree}
    recs = by_path(check(built))
    assert recs[b"/d"].via == "whiteout"
    for p in subtree - {b"/d"}:
        assert recs[p].via == "parent", (p, recs[p].via)
        assert recs[p].lower_layer is not None and recs[p].lower_layer.index == 0
        assert recs[p].lower_path == os.fsencode(low) + p


def test_rm_rf_then_mkdir_is_opaque(workdir):
    low = _lower(workdir, "low", {"d/f": b"f", "d/sub/g": b"g", "other": b"o"})
    built = _build(workdir, [low], [("rmtree", "d"), ("mkdir", "d", 0o755), ("write", "d/new", b"n")])
    assert os.getxattr(os.path.join(built.upper, b"d"), "trusted.overlay.opaque") == b"y"
    assert built.expected == {b"/d/f": ("deleted", ()), b"/d/sub": ("deleted", ()),
                              b"/d/sub/g": ("deleted", ()), b"/d/new": ("added", ())}
    recs = by_path(check(built))
    assert b"/d" not in recs  # same mode/owner/xattrs: an opaque dir that looks the same is no change
    assert recs[b"/d/f"].via == "opaque"
    assert recs[b"/d/sub"].via == "opaque"
    assert recs[b"/d/sub/g"].via in ("opaque", "parent")


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_chmod_only_copy_up(workdir, flavour):
    low = _lower(workdir, "low", {"f": b"data" * 1000, "d/g": b"g"})
    built = _build(workdir, [low], [("chmod", "f", 0o600), ("chmod", "d", 0o700)], flavour)
    upper_f = os.path.join(built.upper, b"f")
    assert os.path.exists(upper_f)
    if flavour == "redirect_metacopy":  # the copy-up really is metadata-only
        assert "trusted.overlay.metacopy" in os.listxattr(upper_f)
    assert built.expected == {b"/f": ("modified", ("mode",)), b"/d": ("modified", ("mode",))}
    recs = by_path(check(built))
    assert recs[b"/f"].what == ("mode",)
    assert recs[b"/d"].what == ("mode",)


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_touch_only(workdir, flavour):
    low = _lower(workdir, "low", {"f": b"x", "d/g": b"g"})
    built = _build(workdir, [low], [("touch", "f", TIMES[1]), ("touch", "d", TIMES[1])], flavour)
    # a directory's mtime alone is never a change
    assert built.expected == {b"/f": ("modified", ("mtime",))}
    assert by_path(check(built))[b"/f"].what == ("mtime",)


def test_same_content_rewrite_is_mtime_only(workdir):
    low = _lower(workdir, "low", {"f": b"same bytes"})
    built = _build(workdir, [low], [("write", "f", b"same bytes")])
    assert built.expected == {b"/f": ("modified", ("mtime",))}
    assert by_path(check(built))[b"/f"].what == ("mtime",)


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_copy_up_with_nothing_different_is_no_change(workdir, flavour):
    low = _lower(workdir, "low", {"f": b"x", "g": b"y", "h": b"z", "d/e": b"e"})
    ops = [("chown", "f", 0, 0),  # same owner: copy-up, nothing changes
           ("setxattr", "g", "user.tmp", b"1"), ("rmxattr", "g", "user.tmp"),
           ("link", "h", "d/h2"),  # copies h up, then links it
           ("touch", "d/e", TIMES[1]), ("touch", "d/e", TIMES[0])]
    built = _build(workdir, [low], ops, flavour)
    for name in (b"f", b"g", b"h", b"d/e"):
        assert os.path.lexists(os.path.join(built.upper, name)), name
    assert built.expected == {b"/d/h2": ("added", ())}
    assert set(by_path(check(built))) == {b"/d/h2"}


def test_type_changes(workdir):
    low = _lower(workdir, "low", {"d/f": b"f", "d/s/g": b"g", "x": b"x"})
    built = _build(workdir, [low], [("rmtree", "d"), ("write", "d", b"now a file"),
                                    ("rm", "x"), ("mkdir", "x", 0o755), ("write", "x/y", b"y")])
    assert built.expected == {b"/d": ("modified", ("type",)), b"/d/f": ("deleted", ()),
                              b"/d/s": ("deleted", ()), b"/d/s/g": ("deleted", ()),
                              b"/x": ("modified", ("type",)), b"/x/y": ("added", ())}
    recs = by_path(check(built))
    assert recs[b"/d"].what == ("type",) and recs[b"/x"].what == ("type",)


def test_escaped_overlay_xattr(workdir):
    low = _lower(workdir, "low", {"f": b"x"})
    built = _build(workdir, [low], [("setxattr", "f", "trusted.overlay.x", b"1")])
    raw = os.listxattr(os.path.join(built.upper, b"f"))
    assert "trusted.overlay.overlay.x" in raw  # the kernel escaped it
    assert built.merged[b"/f"].xattrs == (("trusted.overlay.x", b"1"),)
    assert built.expected == {b"/f": ("modified", ("xattrs",))}
    assert by_path(check(built))[b"/f"].what == ("xattrs",)


def test_renamed_dir_with_redirect(workdir):
    low = _lower(workdir, "low", {"d/f": b"f", "d/sub/g": b"g"})
    built = _build(workdir, [low], [("rename", "d", "e")], "redirect_metacopy")
    assert os.getxattr(os.path.join(built.upper, b"e"), "trusted.overlay.redirect") == b"d"
    old = {b"/d", b"/d/f", b"/d/sub", b"/d/sub/g"}
    new = {b"/e", b"/e/f", b"/e/sub", b"/e/sub/g"}
    assert built.expected == {**{p: ("deleted", ()) for p in old}, **{p: ("added", ()) for p in new}}
    recs = by_path(check(built))
    assert recs[b"/e"].renamed_from == b"/d"
    assert recs[b"/d"].via == "whiteout"


def test_rename_of_lower_dir_without_redirect_is_exdev(workdir):
    low = _lower(workdir, "low", {"d/f": b"f"})
    built = oracle.build_upper([low], [("rename", "d", "e")], "default", workdir)
    assert built.outcomes["upper"] == ["EXDEV"]
    assert built.expected == {}
    assert by_path(check(built)) == {}


def test_whiteout_inside_renamed_dir_is_not_an_orphan(workdir):
    # the whiteout b/a -> a/a hides L2's b/a through a's redirect: no anomaly
    low = _lower(workdir, "low", {"b/a": b"1"})
    built = _build(workdir, [low], [("rm", "b/a"), ("rename", "b", "a")], "redirect_metacopy")
    assert oracle.is_whiteout(os.path.join(built.upper, b"a", b"a"))
    assert built.expected == {b"/a": ("added", ()), b"/b": ("deleted", ()), b"/b/a": ("deleted", ())}
    records = check(built)
    assert [r for r in records if r.change == "anomaly"] == []


def test_user_overlay_xattrs_are_data_on_a_root_mount(workdir):
    # trusted.overlay.* markers: a user.overlay.* xattr is data, even on a layer's root
    low = _lower(workdir, "low", {"b/f": b"1"})
    os.setxattr(low, "user.overlay.opaque", b"1")
    built = _build(workdir, [low], [("setxattr", "b", "user.overlay.opaque", b"y")])
    assert built.expected == {b"/": ("modified", ("xattrs",)), b"/b": ("modified", ("xattrs",))}
    check(built)


def test_userxattr_mount_markers(workdir):
    # userxattr: user.overlay.opaque is the marker, a user's user.overlay.x is escaped on disk
    low = _lower(workdir, "low", {"b/f": b"1", "c": b"c"})
    built = _build(workdir, [low], [("replace_dir", "b"), ("setxattr", "c", "user.overlay.x", b"1")],
                   "userxattr")
    assert os.getxattr(os.path.join(built.upper, b"b"), "user.overlay.opaque") == b"y"
    assert "user.overlay.overlay.x" in os.listxattr(os.path.join(built.upper, b"c"))
    assert built.expected == {b"/b/f": ("deleted", ()), b"/c": ("modified", ("xattrs",))}
    assert by_path(check(built))[b"/b/f"].via == "opaque"


def test_userxattr_mount_with_trusted_data_on_the_root(workdir):
    # on a userxattr mount trusted.overlay.* is plain data (a root process may set it): the
    # user.overlay.* markers still rule
    low = _lower(workdir, "low", {"b/f": b"1"})
    built = _build(workdir, [low], [("setxattr", "", "trusted.overlay.x", b"1"), ("replace_dir", "b")],
                   "userxattr")
    assert built.expected == {b"/": ("modified", ("xattrs",)), b"/b/f": ("deleted", ())}
    check(built)


#: a renamed directory moved into a renamed directory (found by the property): the upper's /a
#: redirects to /b/b/b/b, and L0's /b/b/b, on the way, redirects to /a, so the layers below L0
#: look up /a/b (the kernel's ovl_lookup_layer rewrites the path at each redirect it passes)
CHAINED_REDIRECT = Case(
    l2=[("write", "c", b"1"), ("write", "a/b/a", b"1"), ("write", "b/b/a", b"1"),
        ("mknod", "a/b/b", "c", (1, 3))],
    l1=[], l0=[("rename", "a", "b/b/b"), ("mkdir", "a", 0o755), ("mkdir", "b/a", 0o755)],
    upper=[("rename", "b/b/b/b", "a")])


def test_redirect_on_the_way_of_an_absolute_redirect(workdir):
    built = oracle.build(CHAINED_REDIRECT, "redirect_metacopy", workdir)
    assert os.getxattr(os.path.join(built.upper, b"a"), "trusted.overlay.redirect") == b"/b/b/b/b"
    assert os.getxattr(os.path.join(built.lowers[0], b"b/b/b"), "trusted.overlay.redirect") == b"/a"
    assert built.expected[b"/a/a"] == ("added", ()) and built.expected[b"/a/b"] == ("added", ())
    recs = by_path(check(built))
    assert b"/a" not in recs  # a directory in both views, alike: its contents differ
    assert recs[b"/a/b"].lower_layer is not None and recs[b"/a/b"].lower_layer.index == 2
