"""Synthetic overlay stacks for the benchmark, written straight to disk (no mount needed).

Each builder writes an upperdir and lowerdirs the way the kernel leaves them: whiteouts are 0/0
character devices (as root; without root, zero-size files carrying ``user.overlay.whiteout``,
which the kernel's lookup honours too), opaque directories carry ``<ns>opaque=y``, a copied-up
directory keeps its lower's mode and mtime. A builder is skipped when its stamp file says the
same parameters were built before (building a million files takes a while).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import asdict, dataclass

ROOT = os.geteuid() == 0
NS = "trusted.overlay." if ROOT else "user.overlay."


# -- primitives ------------------------------------------------------------------------------
def write(path: str, data: bytes = b"") -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)


def whiteout(path: str) -> None:
    """A kernel whiteout (0/0 char device) as root, else an xwhiteout (user.overlay.whiteout)."""
    if ROOT:
        os.mknod(path, 0o000 | stat.S_IFCHR, os.makedev(0, 0))
    else:
        write(path)
        os.setxattr(path, NS + "whiteout", b"y")


def opaque_dir(path: str) -> None:
    os.mkdir(path)
    os.setxattr(path, NS + "opaque", b"y")


def copy_up_dir(lower: str, upper: str) -> None:
    """The upper twin of a lower directory: same mode and times (as a kernel copy-up)."""
    os.makedirs(upper, exist_ok=True)
    st = os.lstat(lower)
    os.chmod(upper, stat.S_IMODE(st.st_mode))


def same_times(lower: str, upper: str) -> None:
    st = os.lstat(lower)
    os.utime(upper, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def mark_upper_root(upper: str) -> None:
    """What a mount leaves on the upper root; lets ``--xattr-ns auto`` pick the namespace."""
    os.setxattr(upper, NS + "impure", b"y")


def count_entries(top: str) -> int:
    n = 0
    for _, dirs, files in os.walk(top):
        n += len(dirs) + len(files)
    return n


@dataclass
class Built:
    upper: str
    lowers: list[str]
    upper_entries: int
    lower_entries: int
    files: list[str] | None = None  # for the hashing case: the files both tools hash


def _cached(base: str, params: dict, build) -> Built:
    """Build into ``base`` unless its stamp holds the same parameters."""
    stamp = os.path.join(base, "stamp.json")
    want = dict(params, root=ROOT)
    try:
        with open(stamp) as fh:
            saved = json.load(fh)
        if saved.get("params") == want:
            return Built(**saved["built"])
    except (OSError, ValueError, TypeError, KeyError):
        pass
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    built = build(base)
    with open(stamp, "w") as fh:
        json.dump({"params": want, "built": asdict(built)}, fh)
    return built


# -- the mixed stack: every kind of upper entry over a big lower ------------------------------
@dataclass(frozen=True)
class MixedSize:
    lower_dirs: int = 400  # top directories in the lower
    lower_files: int = 470  # plain files per lower directory
    touched: int = 100  # lower directories the upper changes
    new_dirs: int = 120  # new top directories in the upper
    new_files: int = 250  # files per new directory


def mixed(base: str, size: MixedSize = MixedSize()) -> Built:
    return _cached(base, asdict(size), lambda b: _build_mixed(b, size))


def _lower_dir(where: str, files: int, tag: int) -> None:
    os.mkdir(where)
    for j in range(files):
        write(f"{where}/f{j:04d}", b"lower %d %d\n" % (tag, j))
    for j in range(5):
        os.symlink(f"f{j:04d}", f"{where}/l{j}")
    for k in range(5):
        os.mkdir(f"{where}/s{k}")
        for j in range(4):
            write(f"{where}/s{k}/g{j}", b"sub %d %d %d\n" % (tag, k, j))


def _touch_dir(low: str, up: str, files: int) -> None:
    """Every kind of change in one copied-up directory."""
    copy_up_dir(low, up)
    q = max(files // 12, 1)
    for j in range(0, q * 4):  # content copy-ups (new bytes, new size)
        write(f"{up}/f{j:04d}", b"changed in the upper %d\n" % j)
    for j in range(q * 4, q * 6):  # mode-only copy-ups: same bytes, same mtime
        name = f"f{j:04d}"
        shutil.copyfile(f"{low}/{name}", f"{up}/{name}")
        os.chmod(f"{up}/{name}", 0o600)
        same_times(f"{low}/{name}", f"{up}/{name}")
    for j in range(q * 6, q * 10):  # deleted by whiteouts
        whiteout(f"{up}/f{j:04d}")
    for j in range(q * 5):  # new files
        write(f"{up}/n{j:04d}", b"new %d\n" % j)
    for j in range(q):
        os.symlink(f"f{j:04d}", f"{up}/nl{j}")
    os.symlink("elsewhere", f"{up}/l0")  # retargeted link (a symlink copy-up)
    os.mkfifo(f"{up}/fifo")
    whiteout(f"{up}/s0")  # a deleted directory (and its contents, via parent)
    opaque_dir(f"{up}/s1")  # rm -rf + mkdir: hides the lower's s1
    write(f"{up}/s1/fresh", b"fresh\n")
    copy_up_dir(f"{low}/s2", f"{up}/s2")  # a copied-up subdir with one changed file
    write(f"{up}/s2/g0", b"edited\n")
    same_times(f"{low}/s2", f"{up}/s2")
    os.mkdir(f"{up}/nd")
    for j in range(q):
        write(f"{up}/nd/x{j}", b"x\n")
    same_times(low, up)


def _build_mixed(base: str, size: MixedSize) -> Built:
    lower, upper = f"{base}/lower", f"{base}/upper"
    os.mkdir(lower)
    os.mkdir(upper)
    mark_upper_root(upper)
    for i in range(size.lower_dirs):
        _lower_dir(f"{lower}/t{i:04d}", size.lower_files, i)
    for i in range(size.touched):
        _touch_dir(f"{lower}/t{i:04d}", f"{upper}/t{i:04d}", size.lower_files)
    for i in range(size.new_dirs):
        where = f"{upper}/new{i:04d}"
        os.mkdir(where)
        for j in range(size.new_files):
            write(f"{where}/a{j:04d}", b"added %d\n" % j)
        os.symlink("a0000", f"{where}/link")
        os.mkdir(f"{where}/sub")
    whiteout(f"{upper}/t{size.lower_dirs - 1:04d}")  # a whole lower tree deleted
    same_times(lower, upper)
    return Built(upper, [lower], count_entries(upper), count_entries(lower))


# -- three layers: U over L1 over L2, about half a million entries ---------------------------
@dataclass(frozen=True)
class StackSize:
    l2_dirs: int = 500  # top directories of the bottom layer (each: files + 5 links + 5x4 subdir files)
    files: int = 470  # plain files per directory
    l1_touched: int = 60  # L2 directories the middle layer changes (copy-ups, whiteouts, new files)
    l1_dirs: int = 220  # directories only the middle layer has
    touched: int = 100  # lower directories the upper changes (half of them touched by L1 too)
    new_dirs: int = 120  # new top directories in the upper
    new_files: int = 250  # files per new directory


def stack3(base: str, size: StackSize = StackSize()) -> Built:
    """U over L1 over L2 (the issue's 487k-entry stack): L1 is an upper over L2 (content and
    mode copy-ups, whiteouts, an opaque dir, new directories), U an upper over both."""
    return _cached(base, asdict(size), lambda b: _build_stack3(b, size))


def _build_stack3(base: str, size: StackSize) -> Built:
    l2, l1, upper = f"{base}/L2", f"{base}/L1", f"{base}/U"
    for d in (l2, l1, upper):
        os.mkdir(d)
    mark_upper_root(upper)
    for i in range(size.l2_dirs):
        _lower_dir(f"{l2}/t{i:04d}", size.files, i)
    for i in range(size.l1_touched):
        _touch_dir(f"{l2}/t{i:04d}", f"{l1}/t{i:04d}", size.files)
    for i in range(size.l1_dirs):
        _lower_dir(f"{l1}/m{i:04d}", size.files, 10_000 + i)
    same_times(l2, l1)
    start = size.l1_touched // 2  # half the upper's directories were touched by L1 too
    for i in range(start, start + size.touched):
        _touch_dir(f"{l2}/t{i:04d}", f"{upper}/t{i:04d}", size.files)
    for i in range(size.new_dirs):
        where = f"{upper}/new{i:04d}"
        os.mkdir(where)
        for j in range(size.new_files):
            write(f"{where}/a{j:04d}", b"added %d\n" % j)
        os.symlink("a0000", f"{where}/link")
    whiteout(f"{upper}/m{size.l1_dirs - 1:04d}")  # a whole middle-layer tree deleted
    same_times(l2, upper)
    lower_entries = count_entries(l1) + count_entries(l2)
    return Built(upper, [l1, l2], count_entries(upper), lower_entries)


# -- deep stacks: many lower layers, an upper that touches a fixed set of directories ---------
@dataclass(frozen=True)
class DeepSize:
    layers: int = 100
    own_entries: int = 2000  # entries each layer holds that the upper never touches
    shared_dirs: int = 10  # directories every layer has and the upper changes
    upper_files: int = 200  # new files per shared directory


def deep(base: str, size: DeepSize) -> Built:
    return _cached(base, asdict(size), lambda b: _build_deep(b, size))


def _build_deep(base: str, size: DeepSize) -> Built:
    lowers = []
    per_sub = 100
    for k in range(size.layers):
        layer = f"{base}/L{k:03d}"
        lowers.append(layer)
        os.makedirs(f"{layer}/own{k:03d}")
        for s in range(max(size.own_entries // (per_sub + 1), 1)):
            sub = f"{layer}/own{k:03d}/s{s:03d}"
            os.mkdir(sub)
            for j in range(per_sub):
                write(f"{sub}/f{j}", b"%d\n" % j)
        for d in range(size.shared_dirs):
            where = f"{layer}/shared/d{d:02d}"
            os.makedirs(where, exist_ok=True)
            for j in range(5):
                write(f"{where}/k{k}-{j}", b"layer %d\n" % k)
            write(f"{where}/common", b"layer %d common\n" % k)
    upper = f"{base}/upper"
    os.mkdir(upper)
    mark_upper_root(upper)
    bottom = lowers[-1]
    copy_up_dir(f"{bottom}/shared", f"{upper}/shared")
    for d in range(size.shared_dirs):
        where = f"{upper}/shared/d{d:02d}"
        copy_up_dir(f"{bottom}/shared/d{d:02d}", where)
        write(f"{where}/common", b"upper common\n")
        whiteout(f"{where}/k0-0")
        for j in range(size.upper_files):
            write(f"{where}/new{j}", b"new\n")
    os.mkdir(f"{upper}/fresh")
    for j in range(size.upper_files):
        write(f"{upper}/fresh/f{j}", b"f\n")
    lower_entries = sum(count_entries(layer) for layer in lowers)
    return Built(upper, lowers, count_entries(upper), lower_entries)


# -- one big upper (memory) -------------------------------------------------------------------
@dataclass(frozen=True)
class BigSize:
    dirs: int = 1000
    per_dir: int = 999  # entries per directory (+ the directory itself)


def big(base: str, size: BigSize) -> Built:
    return _cached(base, asdict(size), lambda b: _build_big(b, size))


def _build_big(base: str, size: BigSize) -> Built:
    lower, upper = f"{base}/lower", f"{base}/upper"
    os.makedirs(f"{lower}/d0000")
    for j in range(50):
        write(f"{lower}/d0000/e{j:04d}", b"lower\n")
    os.mkdir(upper)
    mark_upper_root(upper)
    for i in range(size.dirs):
        where = f"{upper}/d{i:04d}"
        os.mkdir(where)
        for j in range(size.per_dir):
            if j % 50 == 49:
                os.symlink("e0000", f"{where}/e{j:04d}")
            else:
                write(f"{where}/e{j:04d}", b"upper\n")
    return Built(upper, [lower], count_entries(upper), count_entries(lower))


def one_dir(base: str, entries: int) -> Built:
    """One upper directory of ``entries`` empty files; the lower holds every tenth name
    (mode 0600, so those are mode copy-ups): the case a flat per-directory listing cannot hold."""
    return _cached(base, {"entries": entries}, lambda b: _build_one_dir(b, entries))


def _build_one_dir(base: str, entries: int) -> Built:
    lower, upper = f"{base}/lower/big", f"{base}/upper/big"
    os.makedirs(lower)
    os.makedirs(upper)
    mark_upper_root(f"{base}/upper")
    for where, step, mode in ((upper, 1, 0o644), (lower, 10, 0o600)):
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(0, entries, step):
                os.mknod(f"f{i:07d}", mode | stat.S_IFREG, 0, dir_fd=fd)
        finally:
            os.close(fd)
    return Built(f"{base}/upper", [f"{base}/lower"], count_entries(f"{base}/upper"),
                 count_entries(f"{base}/lower"))


# -- hashing: big changed files ---------------------------------------------------------------
@dataclass(frozen=True)
class HashSize:
    added: int = 48
    modified: int = 16
    mib: int = 8  # size of each file


def hashing(base: str, size: HashSize) -> Built:
    return _cached(base, asdict(size), lambda b: _build_hashing(b, size))


def _build_hashing(base: str, size: HashSize) -> Built:
    lower, upper = f"{base}/lower", f"{base}/upper"
    for top in (lower, upper):
        os.makedirs(f"{top}/data")
    mark_upper_root(upper)
    block = os.urandom(1 << 20)
    files = []

    def blob(path: str, salt: int) -> None:
        with open(path, "wb") as fh:
            for m in range(size.mib):
                fh.write(salt.to_bytes(8, "little") + block[8:])
        files.append(path)

    for j in range(size.modified):
        blob(f"{lower}/data/m{j:03d}", j)
        blob(f"{upper}/data/m{j:03d}", 1000 + j)
    for j in range(size.added):
        blob(f"{upper}/data/a{j:03d}", 2000 + j)
    same_times(f"{lower}/data", f"{upper}/data")
    return Built(upper, [lower], count_entries(upper), count_entries(lower), files=files)


# -- a Docker overlay2 store holding one container, for the disk-image cases ------------------
def docker_store(root: str, upper: str, lower: str, name: str = "bench") -> str:
    """``root``/var/lib/docker with one container ``name``: ``upper`` its upper layer, ``lower``
    its image's only layer (copied with ``cp -a``: xattrs and whiteouts kept), an empty init
    layer. Returns the container's name."""
    import hashlib
    import json
    import shutil
    import subprocess

    d = os.path.join(root, "var/lib/docker")
    if os.path.exists(d):
        shutil.rmtree(d)
    cid, image, mount, layer, chain = (hashlib.sha256(f"{name}-{x}".encode()).hexdigest()
                                       for x in ("id", "image", "mount", "layer", "chain"))
    os.makedirs(f"{d}/containers/{cid}")
    with open(f"{d}/containers/{cid}/config.v2.json", "w") as fh:
        json.dump({"ID": cid, "Name": f"/{name}", "Driver": "overlay2",
                   "Image": f"sha256:{image}", "Config": {"Image": "bench:1"},
                   "Created": "2026-12-01T12:00:00Z",
                   "State": {"Status": "exited", "ExitCode": 0}}, fh)
    mounts = f"{d}/image/overlay2/layerdb/mounts/{cid}"
    os.makedirs(mounts)
    for key, value in (("mount-id", mount), ("init-id", mount + "-init"),
                       ("parent", "sha256:" + chain)):
        with open(f"{mounts}/{key}", "w") as fh:
            fh.write(value)
    ldb = f"{d}/image/overlay2/layerdb/sha256/{chain}"
    os.makedirs(ldb)
    for key, value in (("cache-id", layer), ("diff", "sha256:" + chain)):
        with open(f"{ldb}/{key}", "w") as fh:
            fh.write(value)
    content = f"{d}/image/overlay2/imagedb/content/sha256"
    os.makedirs(content)
    with open(f"{content}/{image}", "w") as fh:
        json.dump({"rootfs": {"type": "layers", "diff_ids": ["sha256:" + chain]}}, fh)
    os.makedirs(f"{d}/overlay2/{mount}-init/diff")
    for src, dst in ((upper, mount), (lower, layer)):
        os.makedirs(f"{d}/overlay2/{dst}")
        subprocess.run(["cp", "-a", src, f"{d}/overlay2/{dst}/diff"], check=True)
    return name
