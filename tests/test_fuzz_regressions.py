"""Every crash the fuzz harnesses (fuzz/, see fuzz/README.md) found, as a small test.

Each test inlines the input that crashed (cut down to what matters) and states the contract the
harness checks: the reader returns normally, or raises only its documented errors. A crash in a
module this change may not touch is pinned with ``xfail(strict=True)``: it fails loudly (XPASS)
the day the fix lands, and then the marker goes.

No root, no engine, no fuzzer needed; runs in well under a second.
"""
from __future__ import annotations

import os
import signal
import struct
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz"))
import common  # noqa: E402  (fuzz/common.py: the bbolt writer and the tree records)

from ovforensics.stores import bbolt  # noqa: E402
from ovforensics.stores import containerd
from ovforensics.stores import docker
from ovforensics.stores import podman  # noqa: E402
from ovforensics.stores.base import Broken, Container, StoreError  # noqa: E402
from ovforensics.evidence.rootfs import Root  # noqa: E402


@pytest.fixture
def deadline():
    """Fail (instead of hanging the suite) when the code under test loops: SIGALRM after 5 s."""

    def expire(signum, frame):
        raise TimeoutError("still running after 5 s: an endless loop")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _write(tmp_path, rel: str, data: bytes | str) -> str:
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


# -- containerd: a Go binary time out of datetime's range ----------------------------------------
# fuzz_containerd, 20 s into its first run: a container's ``createdat`` with a huge seconds field
# made go_time() raise OverflowError out of containerd.find() (its docstring: "nothing the
# evidence holds makes this raise").
HUGE_GO_TIME = b"\x01" + (1 << 62).to_bytes(8, "big") + b"\0\0\0\0" + b"\xff\xff"


@pytest.mark.parametrize("value", [
    HUGE_GO_TIME,
    b"\x01" + (-1 << 62).to_bytes(8, "big", signed=True) + b"\0\0\0\0\xff\xff",
    b"\x01" + (62135596800 + 253402300800).to_bytes(8, "big") + b"\0\0\0\0\xff\xff",  # year 10000
])
def test_go_time_out_of_range_is_a_value_error(value):
    with pytest.raises(ValueError, match="out of range"):
        containerd.go_time(value)


def test_go_time_pads_the_year_as_go_does():
    year5 = b"\x01" + (5 * 365 * 86400).to_bytes(8, "big") + b"\0\0\0\0\xff\xff"
    assert containerd.go_time(year5) == "0005-12-31T00:00:00Z"


def test_containerd_container_with_huge_createdat_is_listed(tmp_path):
    sys.path.insert(0, os.path.dirname(common.__file__))
    import fuzz_containerd as fc

    data = fc.store() + common.bolt_record(fc.META, "v1", "default", "containers", "c1", "createdat",
                                           value=HUGE_GO_TIME)
    results = common.run_store(containerd.find, data, fc.SLOTS, bolts={fc.META: fc.SLOTS[1], fc.SNAP: fc.SLOTS[2]},
                               scan=False)
    found = [c for c in results if isinstance(c, Container)]
    assert len(found) == 1 and found[0].id == "c1" and found[0].created is None, results


# -- bbolt: Bucket.pages() on a branch page that points at itself ----------------------------------
def _looping_branch(tmp_path) -> str:
    """20 keys, 4 per leaf: a root branch page over 5 leaves; its first child made the root itself."""
    data = bytearray(common.write_bolt({b"k%02d" % i: b"v" for i in range(20)}, page_size=512,
                                       per_leaf=4, per_branch=8))
    root = struct.unpack_from("<Q", data, 16 + 16)[0]  # meta page 0: magic, version, psize, flags, root
    assert struct.unpack_from("<QHHI", data, root * 512)[1] == bbolt.BRANCH
    struct.pack_into("<Q", data, root * 512 + 16 + 8, root)  # first branch element's child pgid
    return _write(tmp_path, "loop.db", bytes(data))


def test_bbolt_pages_of_a_looping_tree_is_a_bolt_error(tmp_path, deadline):
    with bbolt.open_db(_looping_branch(tmp_path)) as db:
        with pytest.raises(bbolt.BoltError, match="reached twice"):
            db.root.pages()
        with pytest.raises(bbolt.BoltError):  # the other walks already said so
            db.dump()


def test_bbolt_pages_of_a_sound_tree(tmp_path):
    data = common.write_bolt({b"k%02d" % i: b"v" for i in range(20)}, page_size=512, per_leaf=4)
    with bbolt.open_db(_write(tmp_path, "ok.db", data)) as db:
        assert len(db.root.pages()) == 6  # one branch, five leaves


# -- podman / containerd / docker: a NUL byte in a path a config names ----------------------------
# fuzz_podman, in its first run: a home directory in /etc/passwd with a NUL byte made
# Root.resolve() (os.lstat) raise ValueError("embedded null byte") out of podman.find(), whose
# docstring says damage never raises. The same holds for graphroot / rootless_storage_path in
# storage.conf (TOML "\u0000"), containerd's ``root``/``root_path`` in config.toml, and Docker's
# ``data-root`` in daemon.json.
def _only_broken(items) -> list[Broken]:
    assert all(isinstance(i, (Broken, Container)) for i in items), items
    return [i for i in items if isinstance(i, Broken)]


def test_podman_passwd_home_with_nul(tmp_path):
    _write(tmp_path, "etc/passwd", "root:x:0:0:root:/roo\0:/bin/sh\nu:x:1000:1000::/h\0me/u:/bin/sh\n")
    broken = _only_broken(list(podman.find(Root(str(tmp_path)))))
    assert broken and all("null byte" in b.why for b in broken), broken


def test_podman_storage_conf_graphroot_with_nul(tmp_path):
    _write(tmp_path, "etc/containers/storage.conf",
           '[storage]\ngraphroot = "/srv\\u0000x"\nrootless_storage_path = "$HOME/\\u0000"\n')
    _write(tmp_path, "etc/passwd", "u:x:1000:1000::/home/u:/bin/sh\n")
    (tmp_path / "home/u").mkdir(parents=True)  # resolving reaches the NUL component (lstat)
    broken = _only_broken(list(podman.find(Root(str(tmp_path)))))
    assert {b.where for b in broken} == {str(tmp_path / "srv\0x"), str(tmp_path / "home/u/\0")}, broken


def test_containerd_config_root_with_nul(tmp_path):
    _write(tmp_path, "etc/containerd/config.toml", 'root = "/\\u0000containerd"\n')
    broken = _only_broken(list(containerd.find(Root(str(tmp_path)))))
    assert len(broken) == 1 and "null byte" in broken[0].why, broken
    _write(tmp_path, "etc/containerd/config.toml",
           '[plugins."io.containerd.snapshotter.v1.overlayfs"]\nroot_path = "/x\\u0000"\n')
    assert list(containerd.find(Root(str(tmp_path)))) == []  # no meta.db: nothing to list


def test_docker_daemon_json_data_root_with_nul(tmp_path):
    _write(tmp_path, "etc/docker/daemon.json", '{"data-root": "/\\u0000docker"}')
    try:  # the documented outcomes: a StoreError (the data root is unusable) or Broken records
        items = list(docker.find(Root(str(tmp_path))))
    except StoreError as exc:
        assert "null byte" in str(exc) or "NUL" in str(exc)
        return
    assert _only_broken(items)


# -- tar: numbers in headers that are no time or no device ----------------------------------------
def _tar(tmp_path, members) -> str:
    import fuzz_tar

    return _write(tmp_path, "layer.tar", fuzz_tar.make_tar(members))


@pytest.mark.parametrize("mtime", ["nan", "inf", "-inf", "1e400", "9" * 5000])
def test_tar_pax_mtime_that_is_no_time(tmp_path, mtime):
    # tarfile reads a PAX mtime as a float: "nan" and "inf" made int() raise out of listdir() and
    # so out of scan(); 5000 digits hit int()'s 4300-digit limit
    from ovforensics.layers.tarlayer import TarLayer

    with TarLayer(_tar(tmp_path, [("f", "file", "x", {"mtime": mtime}), ("g", "file", "y", {})])) as layer:
        listing = layer.listdir(())
        assert listing[b"f"].mtime_ns == 0 and listing[b"g"].mtime_ns == 1700000000 * 10**9
        assert [why for name, why in layer.errors] == [f"mtime {mtime[:40]!r} is not a time: read as 0"]


def test_tar_device_number_past_32_bits(tmp_path):
    # a base-256 devmajor (here 2**32) made os.makedev raise OverflowError
    import tarfile

    import fuzz_tar
    from ovforensics.layers.tarlayer import TarLayer

    raw = bytearray(fuzz_tar.make_tar([("c", "char", (0, 0), {})], fmt=tarfile.GNU_FORMAT))
    raw[329:337] = b"\x80\x00\x00\x01\x00\x00\x00\x00"  # devmajor 2**32, base-256
    raw[148:156] = b"%06o\0 " % tarfile.calc_chksums(bytes(raw[:512]))[0]
    with TarLayer(_write(tmp_path, "dev.tar", bytes(raw))) as layer:
        dev = layer.listdir(())[b"c"]
        assert dev.kind == "char" and dev.rdev != 0  # never taken for a 0/0 whiteout
        assert "out of range" in layer.errors[0][1]


# -- store files nested deeper than Python's recursion limit --------------------------------------
# Found by review while seeding the store harnesses (mutation alone does not build 1,000 levels
# of brackets): json.loads / tomllib.loads raise RecursionError, which no reader caught.
DEEP = "[" * 1200


@pytest.mark.parametrize("rel,text", [
    ("var/lib/containers/storage/overlay-containers/containers.json", DEEP),
    ("var/lib/containers/storage/overlay-layers/layers.json", DEEP),
    ("var/lib/containers/storage/overlay-images/images.json", DEEP),
    ("var/lib/containers/storage/overlay-containers/containers.json",
     '[{"id": "x", "layer": "a", "metadata": "%s"}]' % DEEP),
    ("etc/containers/storage.conf", "a = " + DEEP),
    ("etc/containers/storage.conf", "[storage]\ngraphroot = " + "{a = " * 600),
])
def test_podman_deeply_nested_store_file(tmp_path, rel, text):
    (tmp_path / "var/lib/containers/storage/overlay-layers").mkdir(parents=True)
    _write(tmp_path, rel, text)
    items = list(podman.find(Root(str(tmp_path))))
    _only_broken(items)


def test_podman_deeply_nested_bolt_state(tmp_path):
    _write(tmp_path, "var/lib/containers/storage/overlay-containers/containers.json", "[]")
    _write(tmp_path, "var/lib/containers/storage/libpod/bolt_state.db",
           common.write_bolt({b"ctr": {b"c1": {b"state": DEEP.encode()}}}))
    assert list(podman.find(Root(str(tmp_path)))) == []


def test_containerd_deeply_nested_config_and_blob(tmp_path):
    _write(tmp_path, "etc/containerd/config.toml", "root = " + DEEP)
    broken = _only_broken(list(containerd.find(Root(str(tmp_path)))))
    assert len(broken) == 1 and "nested deeper" in broken[0].why, broken
    import fuzz_containerd as fc

    data = fc.store() + common.fs("file", 7, DEEP)  # the image index blob
    results = common.run_store(containerd.find, data, fc.SLOTS, bolts={fc.META: fc.SLOTS[1], fc.SNAP: fc.SLOTS[2]},
                               scan=False)
    found = [c for c in results if isinstance(c, Container)]
    assert len(found) == 1 and all(i.diff_id is None for i in found[0].lowers), results


def test_docker_deeply_nested_daemon_json(tmp_path):
    _write(tmp_path, "etc/docker/daemon.json", DEEP)
    broken = _only_broken(list(docker.find(Root(str(tmp_path)))))
    assert len(broken) == 1 and "daemon.json" in broken[0].where


# -- fuzz/fuzz_packages.py ------------------------------------------------------------------------
PACKAGE_CRASHES = {
    # an rpm file digest "80099" (not hex of MD5's length) was used as a digest
    "rpm-short-digest": "AwAAAAgAAABUAAAD6AAAAAYAAAAAAAAAAQAAA+kAAAAGAAAABAAAAAEAAAPqAAAABgAAAAgAAAABAAAEXQAAAAgAAAAKAAAAAgAABF4AAAAIAAAAEgAAAAIAAARcAAAABAAAACIAAAACAAAECwAAAAgAAAAqAAAAAgAABA0AAAAEAAAATAAAAAJwa2cAMS4wADEAbHMAY29uZgAvdXNyL2Jpbi8AL2V0Yy8AAAAAAAAAAAFkNDFkOGNkOThmMDBiMjA0ZTk4MDA5OThlY2Y4NDI3ZQA4MDA5OQAAAAE=",
    # DIRINDEXES stored as a string array: compared with an int (TypeError)
    "rpm-dirindexes-as-strings": "AwAAAAgAAABUAAAD6AAAAAYAAAAAAAAAAAMBAOkAAAAGAAAABAAAAAEAAAPqAAAA3QAAAAgAAAABAAAEXQAAAAgAAAAKAAAAAgAABF4AAAAIAAAACgAAAAIAAAReAAAACAAAABIAAAACAAAEXAAAAAgAAAAqAAAAAgAABA0AAAAEAAAATAAAAAKQlJj/ztHPADEAbHMAY29uZgAvdXNyL2Jpbi8ALwEAAAAAAAAAAAAAAAFkNDFkOGNkOThmMDBiMjA0ZTk4MDA5OThlY2Y4NDI3ZQAAAAAAAAoKAAE=",
}


@pytest.mark.parametrize("name", sorted(PACKAGE_CRASHES))
def test_package_parsers_fuzz_crashes(name, deadline):
    import base64

    import fuzz_packages

    fuzz_packages.TestOneInput(base64.b64decode(PACKAGE_CRASHES[name]))
