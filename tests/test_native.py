"""The compiled differ (native/, ovforensics.writers.native) against the Python differ: byte for byte.

The Python differ is the reference (test_kernel_oracle.py holds it to the kernel); here both
run on the same raw layers and must write the same bytes in every format the compiled one
writes (jsonl, csv, docker), on random stacks built through real overlay mounts (the
kernel-oracle's cases, every flavour: real whiteouts, opaque dirs, redirects, metacopy files,
escaped and user-namespace xattrs), on the samples unpacked as the kernel has them on disk, and
on hand-made trees for what the kernel does not make. Each native run must really be native
(no hand-back). Under ``OVF_REQUIRE_REAL=1`` a missing library fails the run: CI cannot pass
on the Python fallback alone.

``OVF_NATIVE_EXAMPLES`` sets the random cases per flavour (default 400: 1,200 stacks).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
import oracle  # noqa: E402
from conftest import need, need_whiteout_devices  # noqa: E402
from test_kernel_oracle import cases, oracle_dir  # noqa: E402,F401  (the fixture is used)

import ovforensics  # noqa: E402
import ovforensics.api  # noqa: E402
from ovforensics.writers import native  # noqa: E402
from ovforensics.writers.formats import write_all  # noqa: E402

EXAMPLES = int(os.environ.get("OVF_NATIVE_EXAMPLES", "400"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = native.FORMATS
ONLY = (None, ("deleted",), ("added", "anomaly"))


@pytest.fixture(scope="module", autouse=True)
def built_library():
    need(native.library() is not None, f"the compiled differ is not built: {native.status()}")


def outputs(upper, lowers, fmt: str, only=None, **options) -> tuple[bytes, bytes]:
    """(Python differ's bytes, compiled differ's bytes) for one report."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as f:
        write_all(fmt, ovforensics.scan(upper, lowers, only=only, **options), f)
        f.flush()
        f.seek(0)
        py = f.buffer.read()
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as f:
        up, lows, ns = ovforensics.api._open_stack(upper, lowers, options.get("whiteouts", "auto"),
                                               options.get("xattr_ns", "auto"))
        counts = native.write(fmt, up, lows, ns, f, set(only) if only else None)
        assert counts is not None, "the compiled differ handed this scan back"
        f.seek(0)
        nat = f.buffer.read()
    return py, nat


def same(upper, lowers, formats=FORMATS, only_sets=(None,), **options) -> None:
    for fmt in formats:
        for only in only_sets:
            py, nat = outputs(upper, lowers, fmt, only, **options)
            if py != nat:
                pl, nl = py.splitlines(), nat.splitlines()
                first = next((i for i, (a, b) in enumerate(zip(pl, nl)) if a != b), min(len(pl), len(nl)))
                raise AssertionError(
                    f"{fmt} (only={only}) differs at line {first + 1}:\n"
                    f"  python: {pl[first] if first < len(pl) else '<end>'!r}\n"
                    f"  native: {nl[first] if first < len(nl) else '<end>'!r}\n"
                    f"  ({len(pl)} vs {len(nl)} lines)")


# -- random kernel-made stacks ---------------------------------------------------------------
@pytest.mark.parametrize("flavour", list(oracle.FLAVOURS))
@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(case=cases, fmt=st.sampled_from(FORMATS), only=st.sampled_from(ONLY))
def test_native_matches_python_on_kernel_stacks(flavour, case, fmt, only, oracle_dir):  # noqa: F811
    d = tempfile.mkdtemp(dir=oracle_dir)
    try:
        built = oracle.build(case, flavour, d)
        upper, lowers = os.fsdecode(built.upper), [os.fsdecode(p) for p in built.lowers]
        same(upper, lowers, formats=(fmt, "jsonl") if fmt != "jsonl" else ("jsonl",),
             only_sets=(only,) if only is None else (None, only))
    finally:
        oracle.umount_all()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("big", [0, 2])
@pytest.mark.parametrize("flavour", list(oracle.FLAVOURS))
@settings(max_examples=max(EXAMPLES // 4, 1), deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(case=cases)
def test_native_matches_python_with_names_only_listings(flavour, big, case, oracle_dir):  # noqa: F811
    """Directories listed by name only (bigdir, past 20,000 entries; here every directory, or
    all but those of one or two entries): both differs read them that way."""
    from ovforensics.layers import bigdir

    d = tempfile.mkdtemp(dir=oracle_dir)
    saved, bigdir.BIG = bigdir.BIG, big
    try:
        built = oracle.build(case, flavour, d)
        same(os.fsdecode(built.upper), [os.fsdecode(p) for p in built.lowers], formats=("jsonl",))
    finally:
        bigdir.BIG = saved
        oracle.umount_all()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("xattr_ns", ["both", "trusted", "user"])
@settings(max_examples=max(EXAMPLES // 8, 1), deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(case=cases)
def test_native_matches_python_with_forced_namespaces(xattr_ns, case, oracle_dir):  # noqa: F811
    """--xattr-ns given: markers of the other namespace become data (or are honoured)."""
    d = tempfile.mkdtemp(dir=oracle_dir)
    try:
        built = oracle.build(case, "userxattr" if xattr_ns == "user" else "redirect_metacopy", d)
        same(os.fsdecode(built.upper), [os.fsdecode(p) for p in built.lowers], formats=("jsonl",),
             xattr_ns=xattr_ns)
    finally:
        oracle.umount_all()
        shutil.rmtree(d, ignore_errors=True)


# -- the samples, unpacked as the kernel keeps them --------------------------------------------
@pytest.mark.parametrize("sample", ["rich", "experiment"])
def test_native_matches_python_on_the_samples(tmp_path, sample):
    need(os.geteuid() == 0, "needs root to unpack whiteout devices and trusted.* xattrs")
    need_whiteout_devices(tmp_path)
    names = {"rich": ["upper", "mid", "base"], "experiment": ["build", "material2", "material"]}[sample]
    for name in names:
        (tmp_path / name).mkdir()
        subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf",
                        os.path.join(ROOT, "samples", sample, f"{name}.tar"), "-C",
                        str(tmp_path / name)], check=True)
    layers = [str(tmp_path / n) for n in names]
    same(layers[0], layers[1:], only_sets=ONLY)


# -- forms the kernel does not make --------------------------------------------------------------
def _tree(root, spec: dict) -> None:
    for rel, value in spec.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if value is None:
            os.makedirs(path, exist_ok=True)
        elif isinstance(value, tuple):
            kind, arg = value
            if kind == "link":
                os.symlink(arg, path)
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "dev":
                os.mknod(path, 0o600 | __import__("stat").S_IFCHR, os.makedev(*arg))
            elif kind == "xattr":
                os.makedirs(path, exist_ok=True) if arg[0] == "dir" else open(path, "wb").close()
                for name, val in arg[1]:
                    os.setxattr(path, name, val, follow_symlinks=False)
        else:
            with open(path, "wb") as fh:
                fh.write(value)


@pytest.mark.parametrize("big", [20000, 0])
def test_native_matches_python_on_hand_made_forms(tmp_path, monkeypatch, big):
    """Names that are not UTF-8, formula-looking and newline names, xwhiteouts, bad redirects,
    metacopy without data, orphan whiteouts, opaque=x, .wh. look-alikes, sparse files."""
    from ovforensics.layers import bigdir

    need(os.geteuid() == 0, "needs root for trusted.* xattrs and devices")
    need_whiteout_devices(tmp_path)
    monkeypatch.setattr(bigdir, "BIG", big)
    up, mid, low = (str(tmp_path / n) for n in ("U", "M", "L"))
    _tree(low, {"d/f": b"1", "d/g": b"2", "keep": b"k", "=cmd": b"x", "x,y\n\"z": b"q",
                "mc": b"data" * 100, "e/h": b"h", "n\udcff": b"1", "deep/a/b/c": b"c", "lnk": ("link", "\u202etxt"),
                "dev": ("dev", (1, 3)), "fifo": ("fifo", None)})
    _tree(mid, {"d/g": ("dev", (0, 0)), "newmid": b"m", "e": ("xattr", ("dir", [("trusted.overlay.opaque", b"y")]))})
    _tree(up, {
        "d/f": b"changed", "keep": b"k", "=cmd": b"y", "-minus": b"", "@at": ("link", "=x"),
        "orphan": ("dev", (0, 0)), "d/gone-x": ("xattr", ("file", [("trusted.overlay.whiteout", b"")])),
        "mc": ("xattr", ("file", [("trusted.overlay.metacopy", b"")])),
        "nodata": ("xattr", ("file", [("trusted.overlay.metacopy", b"")])),
        "ren": ("xattr", ("dir", [("trusted.overlay.redirect", b"/deep/a")])),
        "bad": ("xattr", ("dir", [("trusted.overlay.redirect", b"x/../y")])),
        "bad2": ("xattr", ("dir", [("trusted.overlay.redirect", b"/a//b")])),
        "rel": ("xattr", ("dir", [("trusted.overlay.redirect", b"e")])),
        "opx": ("xattr", ("dir", [("trusted.overlay.opaque", b"x")])),
        ".wh.keep": b"", "line\u2028sep\x85": b"1", "tab\there": b"t", "lnk": ("link", "new\nline"),
        "dev": ("dev", (1, 5)), "fifo": ("fifo", None),
        "esc": ("xattr", ("file", [("trusted.overlay.overlay.x", b"1"), ("user.overlay.opaque", b"y")])),
    })
    with open(os.path.join(up, "sparse"), "wb") as fh:
        fh.truncate(1 << 30)
    with open(os.path.join(low, "sparse"), "wb") as fh:
        fh.truncate(1 << 30)
        fh.seek(1 << 29)
        fh.write(b"x")
    os.utime(os.path.join(up, "keep"), ns=(0, -1_500_000_000_123))
    os.utime(os.path.join(low, "keep"), ns=(0, 253402300800 * 10**9))
    same(up, [mid, low], only_sets=ONLY)
    same(up, [mid, low], formats=("jsonl",), xattr_ns="both")
    same(up, [], formats=FORMATS)


def test_native_refuses_what_it_does_not_cover(tmp_path):
    """Archives and OCI/fuse rules go to the Python differ (write() returns None, writes
    nothing); write_scan() then writes the Python differ's report."""
    up = tmp_path / "U"
    up.mkdir()
    (up / ".wh.x").write_bytes(b"")
    low = tmp_path / "L"
    low.mkdir()
    (low / "x").write_bytes(b"1")
    for rules in ("oci", "fuse"):
        u, lows, ns = ovforensics.api._open_stack(str(up), [str(low)], rules, "auto")
        with tempfile.TemporaryFile("w+") as f:
            assert native.write("jsonl", u, lows, ns, f) is None
            assert f.tell() == 0
            counts = ovforensics.write_scan("jsonl", f, str(up), [str(low)], whiteouts=rules)
            assert counts["deleted"] == 1
    tar = tmp_path / "l.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(low), "."], check=True)
    u, lows, ns = ovforensics.api._open_stack(str(up), [str(tar)], "auto", "auto")
    assert native.write("jsonl", u, lows, ns, open(os.devnull, "w")) is None


def test_cli_uses_the_native_differ_and_python_gives_the_same(tmp_path):
    """Through the CLI: OVF_DIFFER=native (an error if it is missing) and OVF_DIFFER=python
    write the same file, in each native format, and -o or stdout alike."""
    up, low = tmp_path / "U", tmp_path / "L"
    _tree(str(low), {"a": b"1", "d/x": b"2"})
    _tree(str(up), {"a": b"22", "n\u2028ew": b"3", "d/y": b"4"})
    for fmt in FORMATS:
        got = {}
        for mode in ("native", "python"):
            env = {**os.environ, "OVF_DIFFER": mode}
            out = tmp_path / f"{mode}.{fmt}"
            subprocess.run([sys.executable, "-m", "ovforensics", "diff", "--upper", str(up), "--lower",
                            str(low), "-f", fmt, "-o", str(out)], check=True, env=env, cwd=ROOT)
            piped = subprocess.run([sys.executable, "-m", "ovforensics", "diff", "--upper", str(up),
                                    "--lower", str(low), "-f", fmt], check=True, env=env, cwd=ROOT,
                                   capture_output=True).stdout
            assert piped == out.read_bytes()
            got[mode] = piped
        assert got["native"] == got["python"], fmt
        assert got["native"].count(b"\n") >= 3


def test_ovf_differ_native_fails_without_the_library(tmp_path):
    env = {**os.environ, "OVF_DIFFER": "native", "OVF_NATIVE_LIB": str(tmp_path / "missing.so")}
    proc = subprocess.run([sys.executable, "-m", "ovforensics", "diff", "--upper", str(tmp_path),
                           "-f", "jsonl"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "OVF_DIFFER=native" in proc.stderr and "Traceback" not in proc.stderr


def test_write_scan_takes_any_text_stream(tmp_path):
    """A stream without a file descriptor, or one that does not encode UTF-8, gets the Python
    writers (the library writes UTF-8 bytes to an fd): the same text either way."""
    import io

    up, low = tmp_path / "U", tmp_path / "L"
    _tree(str(low), {"a": b"1"})
    _tree(str(up), {"a": b"22", "caf\u00e9": b"3"})
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as f:
        counts = ovforensics.write_scan("csv", f, str(up), [str(low)])
        f.seek(0)
        direct = f.read()
    text = io.StringIO(newline="")
    assert ovforensics.write_scan("csv", text, str(up), [str(low)]) == counts
    assert text.getvalue() == direct
    with tempfile.TemporaryFile("w+", encoding="latin-1", newline="") as f:
        u, lows, ns = ovforensics.api._open_stack(str(up), [str(low)], "auto", "auto")
        assert native.write("csv", u, lows, ns, f) is None
        ovforensics.write_scan("csv", f, str(up), [str(low)])
        f.seek(0)
        assert f.read() == direct


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "per-component"])
def test_native_matches_python_on_long_paths(tmp_path, openat2):
    """Paths past PATH_MAX (255-byte names, 20 deep) in several branches, files at many depths,
    on both sides: the walker's fds, by openat2 steps or one openat per component (in a child
    process: the library's choice is process-wide)."""
    code = f"""
import os, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_hostile import LONG_NAMES, _branchy, chain, write_at, whiteout_at
from test_native import same
up, low = {str(tmp_path / "U")!r}, {str(tmp_path / "L")!r}
files = {{(b, d): b"%d/%d" % (b, d) for b in range(3) for d in range(0, 20, 4)}}
_branchy(low, files)
_branchy(up, {{k: v + b"!" for k, v in files.items() if k[1] % 8 == 0}})
with chain(up, [b"a" * 255] + LONG_NAMES[:12]) as fd:
    whiteout_at(fd, b"f12")
    write_at(fd, b"new", b"n")
same(up, [low])
same(up, [])
print("ok")
"""
    env = {**os.environ}
    if not openat2:
        env["OVF_NATIVE_NO_OPENAT2"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_native_matches_python_on_a_chained_redirect(oracle_dir):  # noqa: F811
    from test_kernel_oracle import CHAINED_REDIRECT

    d = tempfile.mkdtemp(dir=oracle_dir)
    try:
        built = oracle.build(CHAINED_REDIRECT, "redirect_metacopy", d)
        same(os.fsdecode(built.upper), [os.fsdecode(p) for p in built.lowers])
    finally:
        oracle.umount_all()
        shutil.rmtree(d, ignore_errors=True)


# -- --whiteouts auto: the rules decided natively, the output held until then ----------------------
def _write(path: str, data: bytes = b"") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def _native(upper, lowers, fmt="jsonl", stream=None, env_cap=None):
    """(counts or None, the bytes written) of the compiled differ under --whiteouts auto."""
    up, lows, ns = ovforensics.api._open_stack(upper, lowers, "auto", "auto")
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as f:
        counts = native.write(fmt, up, lows, ns, stream or f, None)
        f.seek(0)
        return counts, f.buffer.read(), up


def _python(upper, lowers, fmt="jsonl") -> bytes:
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as f:
        write_all(fmt, ovforensics.scan(upper, lowers), f)
        f.seek(0)
        return f.buffer.read()


def _oci(tmp_path):
    lower, upper = str(tmp_path / "L"), str(tmp_path / "U")
    for name in ("a/x", "b/y", "keep"):
        _write(f"{lower}/{name}", b"v")
    _write(f"{upper}/.wh.a")
    _write(f"{upper}/b/.wh..wh..opq")
    _write(f"{upper}/b/new", b"n")
    return upper, lower


def test_auto_oci_layer_is_handed_back_with_nothing_written(tmp_path):
    upper, lower = _oci(tmp_path)
    counts, written, up = _native(upper, [lower])
    assert counts is None and written == b""  # held, then discarded: Python writes it all
    assert up.rules == "oci" and "OCI/AUFS" in up.rules_auto  # decided once, kept on the layer
    out = tmp_path / "report.jsonl"
    with open(out, "w", encoding="utf-8", newline="") as f:
        counts = ovforensics.write_scan("jsonl", f, upper, [lower])
    assert out.read_bytes() == _python(upper, [lower])  # one report, not two
    assert counts["deleted"] == 3 and counts["anomaly"] == 0


def test_auto_oci_layer_into_a_pipe_writes_one_report(tmp_path):
    upper, lower = _oci(tmp_path)
    code = (f"import sys, ovforensics; ovforensics.write_scan('jsonl', sys.stdout, {upper!r}, "
            f"[{lower!r}])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _python(upper, [lower])


def test_auto_kernel_layer_with_wh_names_is_decided_natively(tmp_path):
    lower, upper = str(tmp_path / "L"), str(tmp_path / "U")
    _write(f"{lower}/gone", b"g")
    _write(f"{lower}/d/f", b"f")
    _write(f"{upper}/.wh.data", b"not empty: a file the container made")
    os.mknod(f"{upper}/gone", 0o20000 | 0o600, os.makedev(0, 0))
    _write(f"{upper}/d/new", b"n")
    for fmt in FORMATS:
        counts, written, up = _native(upper, [lower], fmt)
        assert counts is not None, fmt  # the kernel's form: the compiled differ wrote it
        assert up.rules == "kernel"
        assert written == _python(upper, [lower], fmt), fmt


def test_auto_fuse_layer_is_handed_back(tmp_path):
    lower, upper = str(tmp_path / "L"), str(tmp_path / "U")
    _write(f"{lower}/d/old", b"o")
    _write(f"{upper}/d/.wh..opq")  # fuse-overlayfs' opaque marker
    _write(f"{upper}/d/new", b"n")
    counts, written, up = _native(upper, [lower])
    assert counts is None and written == b"" and up.rules == "fuse"


def test_auto_held_output_past_the_cap_is_decided_at_once(tmp_path):
    """More held output than OVF_NATIVE_HOLD_CAP before any .wh. name: every undecided layer is
    decided then (the guess walk), and the scan goes on natively or is handed back whole."""
    lower, upper = str(tmp_path / "L"), str(tmp_path / "U")
    for i in range(200):
        _write(f"{upper}/a{i:03d}", b"x")  # added, listed before the .wh. name below
    _write(f"{lower}/zz/old", b"o")
    _write(f"{upper}/zz/.wh.old")  # OCI form, met last
    code = f"""
import os, sys, tempfile
sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
import ovforensics, ovforensics.api
from ovforensics.writers import native
up, lows, ns = ovforensics.api._open_stack({upper!r}, [{lower!r}], "auto", "auto")
with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as f:
    counts = native.write("jsonl", up, lows, ns, f, None)
    f.seek(0)
    print(counts is None, len(f.read()), up.rules)
"""
    for cap, want in (("100", "True 0 oci"), ("100000000", "True 0 oci")):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "OVF_NATIVE_HOLD_CAP": cap})
        assert proc.returncode == 0 and proc.stdout.split() == want.split(), proc.stderr
    os.unlink(f"{upper}/zz/.wh.old")
    os.mknod(f"{upper}/zz/old", 0o20000 | 0o600, os.makedev(0, 0))  # now the kernel's form
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OVF_NATIVE_HOLD_CAP": "100"})
    assert proc.returncode == 0, proc.stderr
    handed_back, size, rules = proc.stdout.split()
    assert handed_back == "False" and int(size) > 100 and rules == "kernel"
