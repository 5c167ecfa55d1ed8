"""Kernel oracle for the scanner: build overlay stacks through real mounts and ask the kernel what changed.

A :class:`Case` describes a whole stack, bottom up:

* ``l2``: operations applied to a plain directory, the bottom lower layer (parents made on demand);
* ``l1``: operations applied through a read-write overlay mount ``upper=L1, lower=L2`` (``None``: no
  such layer), so L1 holds real kernel whiteouts, opaque dirs, redirects, metacopy files;
* ``l0``: the same one level up (``upper=L0, lower=L1:L2``; only with ``l1``);
* ``upper``: operations applied through a read-write overlay mount ``upper=UPPER, lower=L0:L1:L2``.

Then two read-only views are mounted: *base* (``lowerdir=L0:L1:L2``, or ``L2:EMPTY`` with one lower)
and *merged* (``lowerdir=UPPER:L0:L1:L2``), with the flavour's options (``metacopy=on`` to follow
metacopy files, ``userxattr`` for user.overlay.* markers; redirects are followed by default).
Both are walked (lstat, readlink, xattrs, bytes) and :func:`expected_changes` turns the two trees
into the records the scanner must report.

Operations are plain tuples such as ``("write", "a/b", b"x")``; a :class:`Pick` argument stands for
an existing entry and is made concrete when the operation runs. :func:`format_case` renders a case
with the outcome (``ok`` or the errno) of each operation and a pasteable ``Case(...)`` line.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field

# -- vocabulary ----------------------------------------------------------------------------------
NAMES = ("a", "b", "c")
DATA = (b"", b"1", b"22", b"hello\n")
MODES = (0o644, 0o755, 0o600, 0o4755, 0o1777)
OWNERS = ((0, 0), (1000, 1000), (0, 1000))
TIMES = (1_000_000_000_123_456_789, 1_500_000_000_000_000_000)  # ns
#: an xattr in the mount's own marker namespace is escaped on disk (trusted.overlay.x is stored as
#: trusted.overlay.overlay.x); one in the other namespace (user.overlay.opaque on a trusted mount,
#: trusted.overlay.x on a userxattr mount) is stored as is and is plain user data, never a marker
XATTR_NAMES = ("user.a", "user.b", "trusted.overlay.x", "user.overlay.opaque", "trusted.a")
XATTR_VALUES = (b"1", b"y")
#: odd names a container can create: OCI whiteout lookalikes (ordinary files for the kernel),
#: bytes that are not UTF-8, a newline
ODD_NAMES = (".wh.a", ".wh..wh..opq", "n\udcff\n")
TARGETS = ("a", "b/c", "../a", "/abs/x", ".")
DEVICES = ((1, 3), (1, 5), (0, 0))  # 0/0 is a whiteout: the kernel refuses it through a mount
L2_MTIME = TIMES[0]  # every non-directory in the bottom layer gets this mtime


def _acl(*entries) -> bytes:
    """A POSIX ACL xattr value: version 2, then (tag, perm, id) little-endian entries."""
    import struct

    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i) for t, p, i in entries)


#: an extended ACL (user:1000:r--), as setfacl writes it to system.posix_acl_access (or _default)
ACL_USER_1000 = _acl((0x01, 6, 0xFFFFFFFF), (0x02, 4, 1000), (0x04, 4, 0xFFFFFFFF),
                     (0x10, 4, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF))
#: file capabilities (cap_net_bind_service+ep), as setcap writes them: VFS_CAP_REVISION_2
CAP_NET_BIND = (0x02000000 | 1).to_bytes(4, "little") + (1 << 10).to_bytes(4, "little") + bytes(12)

FLAVOURS = {
    # name: (options of the read-write mounts, options of the read-only views)
    "default": ((), ()),
    "redirect_metacopy": (("redirect_dir=on", "metacopy=on"), ("redirect_dir=follow", "metacopy=on")),
    # rootless-style markers: user.overlay.* instead of trusted.overlay.*
    "userxattr": (("userxattr",), ("userxattr",)),
}

WHAT_ORDER = ("type", "content", "target", "mode", "owner", "mtime", "xattrs")

# -- mounting ------------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
MS_RDONLY = 1
MNT_DETACH = 2
_MOUNTED: list[bytes] = []


class OracleError(Exception):
    """The oracle itself could not do its job (mount failed, a view could not be read)."""


def _b(path) -> bytes:
    return os.fsencode(path)


def mount_overlay(target, lowers, upper=None, work=None, options=(), ro=False) -> None:
    opts = ["lowerdir=" + ":".join(os.fsdecode(p) for p in lowers)]
    if upper is not None:
        opts += [f"upperdir={os.fsdecode(upper)}", f"workdir={os.fsdecode(work)}"]
    opts += list(options)
    data = ",".join(opts)
    if _libc.mount(b"overlay", _b(target), b"overlay", MS_RDONLY if ro else 0, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OracleError(f"mount -t overlay -o {'ro,' if ro else ''}{data} {os.fsdecode(target)}: "
                          f"{os.strerror(err)}; dmesg: {_dmesg_tail()}")
    _MOUNTED.append(_b(target))


def umount(target, detach=False) -> None:
    t = _b(target)
    if _libc.umount2(t, MNT_DETACH if detach else 0) != 0:
        err = ctypes.get_errno()
        if not detach:
            # never leave a mount behind: detach it, then complain
            _libc.umount2(t, MNT_DETACH)
            with contextlib.suppress(ValueError):
                _MOUNTED.remove(t)
            raise OracleError(f"umount {os.fsdecode(t)}: {os.strerror(err)}")
    with contextlib.suppress(ValueError):
        _MOUNTED.remove(t)


def umount_all() -> None:
    """Detach every mount this module made and has not unmounted yet (newest first)."""
    for t in reversed(list(_MOUNTED)):
        umount(t, detach=True)


atexit.register(umount_all)


@contextlib.contextmanager
def mounted(target, lowers, upper=None, work=None, options=(), ro=False):
    for d in (target, upper, work):
        if d is not None:
            os.makedirs(d, exist_ok=True)
    mount_overlay(target, lowers, upper, work, options, ro)
    try:
        yield _b(target)
    except BaseException:
        umount(target, detach=True)
        raise
    else:
        umount(target)


def _dmesg_tail() -> str:
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return " | ".join(out.strip().splitlines()[-2:])


def overlay_missing() -> str | None:
    """Why overlayfs cannot be mounted here at all (not root, not in the kernel), or None."""
    if os.geteuid() != 0:
        return "needs root to mount overlayfs"
    try:
        with open("/proc/filesystems") as fh:
            if "overlay" not in fh.read():
                return "kernel has no overlayfs"
    except OSError:
        return "cannot read /proc/filesystems"
    return None


def probe(where=None) -> tuple[bool, str]:
    """Can we mount overlays of every flavour in ``where``, with user.* and trusted.* xattrs?"""
    missing = overlay_missing()
    if missing is not None:
        return False, missing
    d = tempfile.mkdtemp(prefix="ovf-probe-", dir=where)
    try:
        f = os.path.join(d, "f")
        open(f, "w").close()
        for name in ("user.probe", "trusted.probe"):
            try:
                os.setxattr(f, name, b"1")
            except OSError as exc:
                return False, f"{d}: filesystem has no {name.split('.')[0]}.* xattrs ({exc})"
        for flavour, (rw_opts, view_opts) in FLAVOURS.items():
            sub = os.path.join(d, flavour)
            low = os.path.join(sub, "l")
            os.makedirs(low)
            try:
                with mounted(os.path.join(sub, "m"), [low], os.path.join(sub, "u"), os.path.join(sub, "w"),
                             rw_opts):
                    pass
                with mounted(os.path.join(sub, "v"), [os.path.join(sub, "u"), low], options=view_opts, ro=True):
                    pass
            except (OracleError, OSError) as exc:
                return False, f"cannot mount a {flavour} overlay: {exc}"
        return True, ""
    finally:
        umount_all()
        shutil.rmtree(d, ignore_errors=True)


# -- operations ----------------------------------------------------------------------------------
def is_whiteout(path) -> bool:
    """A kernel whiteout: a 0/0 character device."""
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lkind(path: bytes) -> int | None:
    try:
        return stat.S_IFMT(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None


def _write(p: bytes, data: bytes, flags: int) -> None:
    kind = _lkind(p)
    if kind not in (None, stat.S_IFREG):
        raise OSError(errno.EINVAL, "not a regular file (skipped)")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | flags, 0o644)
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)


def _rmtree(p: bytes) -> None:
    if _lkind(p) == stat.S_IFDIR:
        shutil.rmtree(p)
    else:
        os.unlink(p)


def apply_op(root: bytes, op: tuple, mkparents: bool = False) -> None:
    """Apply one operation below ``root``; raise OSError when it cannot be done. Never follows links."""
    kind, *args = op

    def P(rel: str) -> bytes:
        p = os.path.join(root, os.fsencode(rel)) if rel else root
        if mkparents and rel:
            os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    if kind == "nop":
        return
    if kind == "write":
        _write(P(args[0]), args[1], os.O_TRUNC)
    elif kind == "append":
        _write(P(args[0]), args[1], os.O_APPEND)
    elif kind == "truncate":
        p = P(args[0])
        if _lkind(p) != stat.S_IFREG:
            raise OSError(errno.EINVAL, "not a regular file (skipped)")
        os.truncate(p, args[1])
    elif kind == "chmod":
        p = P(args[0])
        if _lkind(p) in (None, stat.S_IFLNK):
            raise OSError(errno.EINVAL, "missing or a symlink (skipped)")
        os.chmod(p, args[1])
    elif kind == "chown":
        os.lchown(P(args[0]), args[1], args[2])
    elif kind == "touch":
        os.utime(P(args[0]), ns=(args[1], args[1]), follow_symlinks=False)
    elif kind == "setxattr":
        os.setxattr(P(args[0]), args[1], args[2], follow_symlinks=False)
    elif kind == "rmxattr":
        os.removexattr(P(args[0]), args[1], follow_symlinks=False)
    elif kind == "rm":
        p = P(args[0])
        if _lkind(p) == stat.S_IFDIR:
            os.rmdir(p)
        else:
            os.unlink(p)
    elif kind == "rmtree":
        _rmtree(P(args[0]))
    elif kind == "mkdir":
        os.mkdir(P(args[0]), args[1])
    elif kind == "replace_dir":  # rm -rf d; mkdir d
        p = P(args[0])
        _rmtree(p)
        os.mkdir(p, 0o755)
    elif kind == "rename":
        os.rename(P(args[0]), P(args[1]))
    elif kind == "symlink":
        os.symlink(os.fsencode(args[0]), P(args[1]))
    elif kind == "link":
        os.link(P(args[0]), P(args[1]), follow_symlinks=False)
    elif kind == "mkfifo":
        os.mkfifo(P(args[0]), 0o644)
    elif kind == "setacl":
        p = P(args[0])
        if _lkind(p) in (None, stat.S_IFLNK):
            raise OSError(errno.EINVAL, "missing or a symlink (skipped)")
        which = "default" if tuple(args[1:]) == ("default",) else "access"
        os.setxattr(p, f"system.posix_acl_{which}", ACL_USER_1000)
    elif kind == "setcap":
        p = P(args[0])
        if _lkind(p) != stat.S_IFREG:
            raise OSError(errno.EINVAL, "not a regular file (skipped)")
        os.setxattr(p, "security.capability", CAP_NET_BIND)
    elif kind == "socket":
        import socket

        p = P(args[0])
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            cwd = os.open(".", os.O_RDONLY)  # bind relative to the parent: sun_path is short
            try:
                os.chdir(os.path.dirname(p) or b"/")
                sock.bind(os.path.basename(p))
            finally:
                os.fchdir(cwd)
                os.close(cwd)
        finally:
            sock.close()
    elif kind == "mknod":
        fmt = stat.S_IFCHR if args[1] == "c" else stat.S_IFBLK
        os.mknod(P(args[0]), fmt | 0o600, os.makedev(*args[2]))
    else:
        raise ValueError(f"unknown op {op!r}")


class Pick(int):
    """A path argument meaning "the n-th existing entry (sorted, modulo their number)"."""

    def __repr__(self) -> str:
        return f"Pick({int(self)})"


def _existing(root: bytes) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.append(os.fsdecode(os.path.relpath(os.path.join(dirpath, name), root)))
    return sorted(out)


def resolve(root: bytes, op: tuple) -> tuple:
    """Replace every :class:`Pick` in ``op`` by a concrete existing path (or "" if nothing exists:
    the operation will then act on the root or fail)."""
    if not any(isinstance(a, Pick) for a in op):
        return op
    paths = _existing(root)
    return tuple((paths[a % len(paths)] if paths else "") if isinstance(a, Pick) else a for a in op)


def apply_ops(root: bytes, ops, mkparents: bool = False, resolved: list | None = None) -> list[str]:
    """Apply ``ops`` in order; return each one's outcome ("ok" or the errno name).

    ``resolved`` (if given) receives each operation with its :class:`Pick` arguments made concrete.
    """
    out = []
    for op in ops:
        op = resolve(root, op)
        if resolved is not None:
            resolved.append(op)
        try:
            apply_op(root, op, mkparents)
        except OSError as exc:
            out.append(errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else str(exc))
        else:
            out.append("ok")
    return out


def settle_l2(root: bytes) -> None:
    """Give every non-directory of the bottom layer a fixed mtime (so touch can restore it)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            os.utime(os.path.join(dirpath, name), ns=(L2_MTIME, L2_MTIME), follow_symlinks=False)


# -- views ---------------------------------------------------------------------------------------
KIND_BY_FMT = {
    stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket", stat.S_IFCHR: "char", stat.S_IFBLK: "block",
}


@dataclass(frozen=True)
class Node:
    kind: str
    perm: int
    uid: int
    gid: int
    mtime_ns: int
    content: bytes | None = None
    rdev: int | None = None
    target: bytes | None = None
    xattrs: tuple = ()

    def brief(self) -> str:
        bits = [self.kind, f"mode={self.perm:04o}", f"owner={self.uid}:{self.gid}", f"mtime={self.mtime_ns}"]
        if self.content is not None:
            bits.append(f"content={self.content!r}")
        if self.rdev is not None:
            bits.append(f"dev={os.major(self.rdev)},{os.minor(self.rdev)}")
        if self.target is not None:
            bits.append(f"target={self.target!r}")
        if self.xattrs:
            bits.append("xattrs={" + ", ".join(f"{k}={v!r}" for k, v in self.xattrs) + "}")
        return " ".join(bits)


def read_node(p: bytes) -> Node:
    st = os.lstat(p)
    kind = KIND_BY_FMT.get(stat.S_IFMT(st.st_mode), "unknown")
    content = rdev = target = None
    if kind == "file":
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            content = b"".join(chunks)
        finally:
            os.close(fd)
    elif kind in ("char", "block"):
        rdev = st.st_rdev
    elif kind == "symlink":
        target = os.readlink(p)
    xattrs = tuple(sorted((name, os.getxattr(p, name, follow_symlinks=False))
                          for name in os.listxattr(p, follow_symlinks=False)))
    return Node(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
                content, rdev, target, xattrs)


def walk_view(root) -> dict[bytes, Node]:
    """Every entry of a mounted view: container path (``b"/"``, ``b"/a/b"``) -> :class:`Node`."""
    root = _b(root)
    out: dict[bytes, Node] = {}

    def visit(disk: bytes, rel: bytes) -> None:
        try:
            node = read_node(disk)
        except OSError as exc:
            raise OracleError(f"cannot read {rel!r} in view {root!r}: {exc}; dmesg: {_dmesg_tail()}") from exc
        out[rel] = node
        if node.kind == "dir":
            try:
                names = sorted(os.listdir(disk))
            except OSError as exc:
                raise OracleError(f"cannot list {rel!r} in view {root!r}: {exc}") from exc
            for name in names:
                visit(os.path.join(disk, name), (rel.rstrip(b"/") + b"/" + name))

    visit(root, b"/")
    return out


def dump_raw(root) -> list[str]:
    """The raw on-disk listing of a layer directory, with every xattr (for failure messages)."""
    root = _b(root)
    found = [(b"/", root)]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            found.append((b"/" + os.path.relpath(p, root), p))
    lines = []
    for rel, p in sorted(found):
        try:
            st = os.lstat(p)
            kind = KIND_BY_FMT.get(stat.S_IFMT(st.st_mode), "?")
            desc = f"{kind} {stat.S_IMODE(st.st_mode):04o} {st.st_uid}:{st.st_gid} size={st.st_size}"
            if kind in ("char", "block"):
                desc += f" dev={os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
            if kind == "symlink":
                desc += f" -> {os.readlink(p)!r}"
            xs = {n: os.getxattr(p, n, follow_symlinks=False) for n in os.listxattr(p, follow_symlinks=False)}
            if xs:
                desc += " " + " ".join(f"{k}=<{len(v)} bytes>" if k.endswith(".origin") else f"{k}={v!r}"
                                       for k, v in sorted(xs.items()))
        except OSError as exc:
            desc = f"<{exc}>"
        lines.append(f"{rel.decode(errors='backslashreplace')}: {desc}")
    return lines


# -- the contract --------------------------------------------------------------------------------
def node_diff(old: Node, new: Node) -> tuple[str, ...]:
    if old.kind != new.kind:
        return ("type",)
    what = set()
    if old.kind == "file" and old.content != new.content:
        what.add("content")
    if old.kind in ("char", "block") and old.rdev != new.rdev:
        what.add("content")
    if old.kind == "symlink" and old.target != new.target:
        what.add("target")
    if old.perm != new.perm:
        what.add("mode")
    if (old.uid, old.gid) != (new.uid, new.gid):
        what.add("owner")
    if old.kind != "dir" and old.mtime_ns != new.mtime_ns:
        what.add("mtime")
    if old.xattrs != new.xattrs:
        what.add("xattrs")
    return tuple(w for w in WHAT_ORDER if w in what)


def expected_changes(base: dict[bytes, Node], merged: dict[bytes, Node]) -> dict[bytes, tuple[str, tuple]]:
    """path -> (change, what) for every path that differs between the two views."""
    out: dict[bytes, tuple[str, tuple]] = {}
    for path in sorted(set(base) | set(merged)):
        old, new = base.get(path), merged.get(path)
        if old is None:
            out[path] = ("added", ())
        elif new is None:
            out[path] = ("deleted", ())
        else:
            what = node_diff(old, new)
            if what:
                out[path] = ("modified", what)
    return out


# -- a whole case --------------------------------------------------------------------------------
@dataclass
class Case:
    """A stack: ops for the bottom layer L2, for L1 and L0 (None: no such layer; L0 needs L1),
    and for the UPPER. Lowers are L0:L1:L2 (topmost first)."""

    l2: list = field(default_factory=list)
    l1: list | None = None
    upper: list = field(default_factory=list)
    l0: list | None = None


@dataclass
class Built:
    """A built stack: raw layer dirs plus what the kernel says about it."""

    case: Case
    flavour: str
    upper: bytes
    lowers: list[bytes]
    outcomes: dict[str, list[str]]
    base: dict[bytes, Node]
    merged: dict[bytes, Node]
    raw: dict[str, list[str]] = field(default_factory=dict)
    resolved: dict[str, list] = field(default_factory=dict)  # the ops with Pick()s made concrete

    @property
    def expected(self):
        return expected_changes(self.base, self.merged)


def build(case: Case, flavour: str, workdir) -> Built:
    """Build the stack of ``case`` under ``workdir`` with real mounts and read both views.

    Every mount is gone when this returns (or raises). The raw layers stay in ``workdir``.
    """
    rw_opts, _ = FLAVOURS[flavour]
    w = _b(workdir)
    l2 = os.path.join(w, b"L2")
    os.mkdir(l2)
    os.chmod(l2, 0o755)
    outcomes: dict[str, list[str]] = {}
    resolved: dict[str, list] = {}
    rw_base = None
    lowers = [l2]
    try:
        outcomes["l2"] = apply_ops(l2, case.l2, mkparents=True, resolved=resolved.setdefault("l2", []))
        settle_l2(l2)
        # the middle layers, bottom up: each is the upper of a mount over the layers below it
        for name, ops in (("l1", case.l1), ("l0", case.l0 if case.l1 is not None else None)):
            if ops is None:
                continue
            layer = os.path.join(w, name.upper().encode())
            os.mkdir(layer)
            os.chmod(layer, 0o755)
            with mounted(os.path.join(w, b"M" + name.encode()), lowers, layer,
                         os.path.join(w, b"W" + name.encode()), rw_opts) as m:
                outcomes[name] = apply_ops(m, ops, resolved=resolved.setdefault(name, []))
                rw_base = walk_view(m)
            lowers = [layer] + lowers
    finally:
        umount_all()
    built = build_upper(lowers, case.upper, flavour, workdir, case=case, outcomes=outcomes, resolved=resolved)
    if rw_base is not None and _strip_dir_mtime(rw_base) != _strip_dir_mtime(built.base):
        raise OracleError("ORACLE SELF-CHECK FAILED\nbase view differs from the read-write mount that made "
                          "the top lower layer:\n" + _tree_diff(rw_base, built.base) + "\n"
                          + format_case(built))
    return built


def build_upper(lowers, ops, flavour: str, workdir, case: Case | None = None,
                outcomes: dict | None = None, resolved: dict | None = None) -> Built:
    """Make ``workdir/U`` the upper of an overlay over ``lowers`` (topmost first), apply ``ops``
    through the mount, unmount, then read the base and merged views read-only."""
    rw_opts, view_opts = FLAVOURS[flavour]
    w = _b(workdir)
    lowers = [_b(p) for p in lowers]
    upper, empty = os.path.join(w, b"U"), os.path.join(w, b"E")
    for d in (upper, empty):
        os.mkdir(d)
        os.chmod(d, 0o755)
    case = case or Case(l2=[], l1=None, upper=list(ops))
    outcomes = dict(outcomes or {})
    resolved = dict(resolved or {})
    try:
        with mounted(os.path.join(w, b"M2"), lowers, upper, os.path.join(w, b"W2"), rw_opts) as m:
            outcomes["upper"] = apply_ops(m, ops, resolved=resolved.setdefault("upper", []))
            rw_merged = walk_view(m)
        base_lowers = lowers if len(lowers) > 1 else lowers + [empty]
        with mounted(os.path.join(w, b"VB"), base_lowers, options=view_opts, ro=True) as v:
            base = walk_view(v)
        with mounted(os.path.join(w, b"VM"), [upper] + lowers, options=view_opts, ro=True) as v:
            merged = walk_view(v)
    finally:
        umount_all()
    built = Built(case, flavour, upper, lowers, outcomes, base, merged, resolved=resolved)
    built.raw = {"UPPER": dump_raw(upper)}
    for i, low in enumerate(lowers):
        built.raw[f"lower {i} ({os.path.basename(low).decode(errors='replace')})"] = dump_raw(low)
    # self-check: the read-only merged view must show what the read-write mount showed
    if _strip_dir_mtime(rw_merged) != _strip_dir_mtime(merged):
        raise OracleError("ORACLE SELF-CHECK FAILED\nmerged view differs from the UPPER read-write mount:\n"
                          + _tree_diff(rw_merged, merged) + "\n" + format_case(built))
    return built


def _strip_dir_mtime(tree):
    # directory mtimes/atime may legitimately move between walks (lookups, copy-ups of parents)
    return {p: (n if n.kind != "dir" else Node(n.kind, n.perm, n.uid, n.gid, 0, xattrs=n.xattrs))
            for p, n in tree.items()}


def _tree_diff(a, b) -> str:
    lines = []
    for p in sorted(set(a) | set(b)):
        x, y = a.get(p), b.get(p)
        if x != y:
            lines.append(f"  {p!r}: {x.brief() if x else None}  vs  {y.brief() if y else None}")
    return "\n".join(lines)


def _fmt_ops(ops, outcomes) -> list[str]:
    outcomes = outcomes or ["not run"] * len(ops)
    lines = [f"    {op!r:64} -> {res}" for op, res in zip(ops, outcomes) if op != ("nop",)]
    return lines or ["    (nothing)"]


def _real(ops):
    return None if ops is None else [op for op in ops if op != ("nop",)]


def format_case(built: Built) -> str:
    c, r = built.case, built.resolved
    lines = [f"flavour: {built.flavour} (rw mounts: {','.join(FLAVOURS[built.flavour][0]) or 'defaults'})",
             "L2 (plain dir, parents made on demand, non-dir mtimes then set to L2_MTIME):"]
    lines += _fmt_ops(r.get("l2", c.l2), built.outcomes.get("l2"))
    below = "L2"
    l0 = c.l0 if c.l1 is not None else None
    for name, ops in (("L1", c.l1), ("L0", l0)):
        if ops is None:
            lines.append(f"{name}: none")
            continue
        lines.append(f"{name} (ops through overlay upper={name} lower={below}):")
        lines += _fmt_ops(r.get(name.lower(), ops), built.outcomes.get(name.lower()))
        below = f"{name}:{below}"
    lines.append(f"UPPER (ops through overlay upper=UPPER lower={below}):")
    lines += _fmt_ops(r.get("upper", c.upper), built.outcomes.get("upper"))
    args = [f"l2={_real(r.get('l2', c.l2))!r}", f"l1={_real(r.get('l1', c.l1))!r}"]
    if l0 is not None:
        args.append(f"l0={_real(r.get('l0', l0))!r}")
    args.append(f"upper={_real(r.get('upper', c.upper))!r}")
    lines.append(f"reproduce: Case({', '.join(args)}) with flavour {built.flavour!r}")
    return "\n".join(lines)


def format_layers(built: Built) -> str:
    out = []
    for name, lines in built.raw.items():
        out.append(f"raw {name}:")
        out += ["    " + line for line in lines]
    return "\n".join(out)


# -- comparing with the scanner ------------------------------------------------------------------
def compare(built: Built, records) -> str | None:
    """None if the scanner's records match the kernel; else a readable report."""
    expected = built.expected
    got: dict[bytes, tuple[str, tuple]] = {}
    dupes, anomalies = [], []
    for r in records:
        if r.change == "anomaly":
            anomalies.append(r)
            continue
        key = (r.change, tuple(r.what) if r.change == "modified" else ())
        if r.path in got:
            dupes.append(f"  {r.path!r}: {got[r.path]} and {key}")
        got[r.path] = key
    missing = {p: e for p, e in expected.items() if p not in got}
    unexpected = {p: g for p, g in got.items() if p not in expected}
    wrong = {p: (expected[p], got[p]) for p in expected.keys() & got.keys()
             if expected[p][0] != got[p][0] or set(expected[p][1]) != set(got[p][1])}
    stray = [a for a in anomalies if a.path not in expected]
    if not (missing or unexpected or wrong or dupes or stray):
        return None

    def views(p):
        b, m = built.base.get(p), built.merged.get(p)
        return (f"\n        base:   {b.brief() if b else '-'}"
                f"\n        merged: {m.brief() if m else '-'}")

    lines = ["SCANNER DISAGREES WITH THE KERNEL", format_case(built)]
    if missing:
        lines.append("expected but NOT reported:")
        lines += [f"  {p!r}: {c} {list(w)}{views(p)}" for p, (c, w) in sorted(missing.items())]
    if unexpected:
        lines.append("reported but NOT expected (kernel views agree):")
        lines += [f"  {p!r}: {c} {list(w)}{views(p)}" for p, (c, w) in sorted(unexpected.items())]
    if wrong:
        lines.append("reported with the wrong change/what:")
        lines += [f"  {p!r}: expected {e[0]} {list(e[1])}, got {g[0]} {list(g[1])}{views(p)}"
                  for p, (e, g) in sorted(wrong.items())]
    if dupes:
        lines.append("paths reported more than once:")
        lines += dupes
    if stray:
        lines.append("anomaly records at paths the kernel shows UNCHANGED:")
        lines += [f"  {a.path!r}: {a.anomaly}: {a.detail}{views(a.path)}" for a in stray]
    other = [a for a in anomalies if a.path in expected]
    if other:
        lines.append("anomaly records at changed paths (fine):")
        lines += [f"  {a.path!r}: {a.anomaly}: {a.detail}" for a in other]
    lines.append(format_layers(built))
    return "\n".join(lines)
