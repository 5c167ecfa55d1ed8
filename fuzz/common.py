"""Shared plumbing of the fuzz harnesses: the input formats, the crafted trees, the contracts.

Nothing here needs atheris: the regression tests (tests/test_fuzz_regressions.py) import it to
replay a crashing input without a fuzzer.

Input formats
-------------
Store harnesses (docker, podman, containerd) read the fuzz input as a list of *records*::

    record := tag:u8  length:u16le  body[length]

A record whose tag is below 0x80 makes one entry of the crafted store tree: ``tag >> 5`` picks the
kind (:data:`KINDS`: regular file, symlink, directory, FIFO, removal), ``tag & 31`` the path: one of
the harness's *slots* (the files an engine reads: ``config.v2.json``, ``layers.json``, ``lower``,
``l/SHORT``, ...), or with 31 a literal path: the body is then ``path NUL content``. A file's body
is its content, a symlink's its target (anything: absolute, ``../../..``, a loop). Tags from 0x80 up
are the harness's own (bbolt records: below). Entries are made strictly inside a fresh temporary
directory: every path component is created, never followed.

A *bolt record* describes one key of a bbolt database the harness writes with :func:`write_bolt`
(a correct writer, so the fuzzer explores what the engine reader makes of the *contents* rather
than dying at the checksum; raw damaged files come through the file slots)::

    body := component (0x1f component)* [0x1e value]

The components are nested bucket names; with a value, the last one is a key holding that value,
without, an (empty) bucket.
"""
from __future__ import annotations

import os
import shutil
import stat
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for _where in (REPO, os.path.join(REPO, "tests")):
    if _where not in sys.path:
        sys.path.insert(0, _where)

from ovforensics.stores import bbolt  # noqa: E402
import ovforensics.scanner.diff
import ovforensics.scanner.enrich
import ovforensics.layers.tarlayer  # noqa: E402,F401  (imported before any audit)
from ovforensics.stores.base import Broken, Container  # noqa: E402
from boltwriter import craft  # noqa: E402  (tests/boltwriter.py: the one bbolt writer)

KINDS = ("file", "symlink", "dir", "fifo", "remove", "file", "file", "symlink")
LITERAL = 31
MAX_RECORDS = 96
MAX_PARTS = 24


# -- records -----------------------------------------------------------------------------------
def records(data: bytes) -> list[tuple[int, bytes]]:
    """``(tag, body)`` records of a store harness's input (a short tail is ignored)."""
    out, pos = [], 0
    while pos + 3 <= len(data) and len(out) < MAX_RECORDS:
        tag = data[pos]
        n = int.from_bytes(data[pos + 1:pos + 3], "little")
        out.append((tag, data[pos + 3:pos + 3 + n]))
        pos += 3 + n
    return out


def record(tag: int, body: bytes | str) -> bytes:
    body = body.encode() if isinstance(body, str) else body
    return bytes([tag]) + len(body).to_bytes(2, "little") + body


def fs(kind: str, slot: int, body: bytes | str = b"") -> bytes:
    """A tree record for ``slot`` (seed writers' helper)."""
    return record((KINDS.index(kind) << 5) | slot, body)


def literal(kind: str, path: str, body: bytes | str = b"") -> bytes:
    body = body.encode() if isinstance(body, str) else body
    return fs(kind, LITERAL, path.encode() + b"\0" + body)


def bolt_record(tag: int, *path: str | bytes, value: bytes | str | None = None) -> bytes:
    parts = [p.encode() if isinstance(p, str) else p for p in path]
    body = b"\x1f".join(parts)
    if value is not None:
        body += b"\x1e" + (value.encode() if isinstance(value, str) else value)
    return record(tag, body)


# -- the crafted tree --------------------------------------------------------------------------
def scratch_dir(prefix: str) -> str:
    """A fresh directory on tmpfs where there is one (fast), else in the temp dir."""
    base = os.environ.get("OVF_FUZZ_TMP")
    if base is None and os.access("/dev/shm", os.W_OK):
        base = "/dev/shm"
    return os.path.realpath(tempfile.mkdtemp(prefix=prefix, dir=base))


def _parts(path: bytes) -> list[bytes]:
    parts = [p[:200] for p in path.split(b"/") if p not in (b"", b".", b"..")]
    return parts[:MAX_PARTS]


def _remove(where: bytes) -> None:
    try:
        st = os.lstat(where)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(where, ignore_errors=True)
    else:
        os.unlink(where)


def place(root: str, path: bytes | str, kind: str, body: bytes = b"") -> None:
    """Make ``path`` (relative to ``root``) of ``kind``; parents are made, never followed: a
    record whose parent is not a real directory is skipped."""
    parts = _parts(path.encode() if isinstance(path, str) else path)
    if not parts:
        return
    cur = os.fsencode(root)
    for p in parts[:-1]:
        cur += b"/" + p
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            try:
                os.mkdir(cur)
            except OSError:
                return
            continue
        except OSError:
            return
        if not stat.S_ISDIR(st.st_mode):
            return
    where = cur + b"/" + parts[-1]
    try:
        if kind == "dir":
            if os.path.isdir(where) and not os.path.islink(where):
                return
            _remove(where)
            os.mkdir(where)
            return
        _remove(where)
        if kind == "file":
            fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
        elif kind == "symlink":
            os.symlink(body.split(b"\0")[0] or b".", where)
        elif kind == "fifo":
            os.mkfifo(where)
    except OSError:
        pass  # a name too long and the like: the record is skipped


def build_tree(root: str, recs: list[tuple[int, bytes]], slots: list[str]) -> None:
    """Apply the tree records (tags < 0x80) in order."""
    for tag, body in recs:
        if tag >= 0x80:
            continue
        kind, slot = KINDS[tag >> 5], tag & 31
        if slot == LITERAL:
            path, _, body = body.partition(b"\0")
        elif slot < len(slots):
            path = slots[slot].encode()
        else:
            continue
        place(root, path, kind, body)


# -- bbolt files from records ------------------------------------------------------------------
def bolt_tree(bodies: list[bytes]) -> dict:
    """Nested dicts (buckets) and bytes (values) from bolt-record bodies."""
    tree: dict = {}
    for body in bodies:
        path, sep, value = body.partition(b"\x1e")
        comps = path.split(b"\x1f")[:16]
        node = tree
        last = len(comps) - 1 if sep else len(comps)
        for comp in comps[:last]:
            child = node.get(comp)
            if not isinstance(child, dict):
                child = node[comp] = {}
            node = child
        if sep:
            node[comps[-1]] = value
    return tree


def write_bolt(tree: dict, page_size: int = 512, per_leaf: int = 8, per_branch: int = 8,
               inline_limit: int | None = None) -> bytes:
    """A valid bbolt file holding ``tree`` (tests/boltwriter.py); a bucket with no nested bucket
    whose page fits in a quarter page (``inline_limit``) is stored inline, as bbolt does."""
    return craft(tree, page_size=page_size, per_leaf=per_leaf, per_branch=per_branch, txid=7,
                 inline_limit=page_size // 4 if inline_limit is None else inline_limit)


def fix_checksums(data: bytes) -> bytes:
    """``data`` with the FNV-1a checksum of each meta page recomputed (page 0 at offset 0, page 1
    at the page size page 0 names), so mutations past the meta pages are not all refused there."""
    buf = bytearray(data)
    offsets = [0]
    if len(buf) >= 16 + bbolt.META.size:
        ps = struct.unpack_from("<I", buf, 16 + 8)[0]
        if 512 <= ps <= bbolt.MAX_PAGE_SIZE and not ps & (ps - 1):
            offsets.append(ps)
    for off in offsets:
        start = off + 16
        if start + bbolt.META.size <= len(buf):
            body = bytes(buf[start:start + bbolt.CHECKSUMMED])
            struct.pack_into("<Q", buf, start + bbolt.CHECKSUMMED, bbolt.fnv1a64(body))
    return bytes(buf)


# -- contracts ---------------------------------------------------------------------------------
class Escape(AssertionError):
    """The code under test opened or listed something outside the crafted tree."""


def inside(path: str, root: str) -> bool:
    path = os.path.abspath(path)
    return path == root or path.startswith(root.rstrip("/") + "/")


class PathAudit:
    """Fails (raises :class:`Escape`) on any file open, directory listing or SQLite connect
    outside ``root`` while active, symlinks resolved (so a lexical path under the root that
    goes through a link out of it counts). Python's own imports are let through."""

    _installed = False
    root: str | None = None
    seen: list[str] = []

    _ALLOWED = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, REPO)})

    @classmethod
    def install(cls) -> None:
        if not cls._installed:
            sys.addaudithook(cls._hook)
            cls._installed = True

    @classmethod
    def _hook(cls, event: str, args) -> None:
        root = cls.root
        if root is None or event not in ("open", "os.listdir", "os.scandir", "sqlite3.connect",
                                         "os.chdir", "shutil.copyfile"):
            return
        target = args[0] if args else None
        if target is None or isinstance(target, int):
            return
        text = os.fsdecode(target)
        if event == "sqlite3.connect":
            if text.startswith("file:"):
                import urllib.parse

                text = urllib.parse.unquote(text[5:].split("?", 1)[0])
            elif text == ":memory:":
                return
        real = os.path.realpath(text)
        if inside(real, root):
            return
        if real.startswith(cls._ALLOWED) and (event == "os.listdir" or text.endswith(
                (".py", ".pyc", ".so", ".pth"))):
            return  # Python importing a module (the store's files are never there)
        cls.root = None  # the report below must not trip the hook again
        raise Escape(f"{event} outside the crafted tree: {text!r} (really {real!r})")

    def __init__(self, root: str):
        self.root_ = root

    def __enter__(self):
        PathAudit.install()
        PathAudit.root = self.root_
        return self

    def __exit__(self, *exc):
        PathAudit.root = None


def check_results(results: list, root: str) -> None:
    """What a store reader yields: Container and Broken records only; every layer inside root."""
    real_root = os.path.realpath(root)
    for item in results:
        if isinstance(item, Broken):
            if not isinstance(item.where, str) or not isinstance(item.why, str):
                raise AssertionError(f"Broken with non-text fields: {item!r}")
            continue
        if not isinstance(item, Container):
            raise AssertionError(f"reader yielded {type(item).__name__}: {item!r}")
        for info in (item.upper, *item.lowers):
            if not isinstance(info.dir, str):
                raise AssertionError(f"LayerInfo.dir is not a str: {info!r}")
            if not inside(info.dir, root) or not inside(os.path.realpath(info.dir), real_root):
                raise Escape(f"{item.engine} container {item.id!r}: layer dir {info.dir!r} "
                             f"(really {os.path.realpath(info.dir)!r}) is outside {root}")
            if not os.path.isdir(info.dir) or os.path.islink(info.dir):
                raise AssertionError(f"layer dir {info.dir!r} is not a real directory")


class Known:
    """A crash the fuzzers found in code this harness may not fix, reported and pinned by an
    ``xfail(strict=True)`` test in tests/test_fuzz_regressions.py. The harness lets it pass so
    the run goes on to find others; ``OVF_FUZZ_STRICT=1`` makes it a crash again (and once the
    fix lands, its entry here goes)."""

    def __init__(self, name: str, kind: type, words: str, function: str):
        self.name, self.kind, self.words, self.function = name, kind, words, function

    def matches(self, exc: BaseException) -> bool:
        if os.environ.get("OVF_FUZZ_STRICT") == "1" or type(exc) is not self.kind:
            return False
        tb, names = exc.__traceback__, set()
        while tb is not None:
            names.add(tb.tb_frame.f_code.co_qualname)
            tb = tb.tb_next
        return self.words in str(exc) and self.function in names


def run_store(find, data: bytes, slots: list[str], bolts: dict[int, str] | None = None,
              scan: bool = True, allowed: tuple[type, ...] = (), known: tuple[Known, ...] = ()) -> list:
    """Build the tree of ``data`` in a scratch dir, run ``find(Root(dir))`` under the path audit,
    check the results, and scan each container found (at most 3). ``bolts`` maps a tag (0x80
    and up) to the bbolt file its records make. ``allowed``: exceptions ``find`` may raise."""
    from ovforensics import scan_container
    from ovforensics.layers.layer import LayerError
    from ovforensics.evidence.rootfs import Root

    recs = records(data)
    root = scratch_dir("ovf-fuzz-")
    try:
        for tag, rel in (bolts or {}).items():
            bodies = [body for t, body in recs if t == tag]
            if bodies:
                flavour = bodies[0][:1]
                page = 512 if not flavour or flavour[0] % 2 == 0 else 4096
                place(root, rel, "file", write_bolt(bolt_tree(bodies), page_size=page))
        build_tree(root, recs, slots)
        with PathAudit(root):
            try:
                results = list(find(Root(root)))
            except allowed:
                return []
            except Exception as exc:
                if any(k.matches(exc) for k in known):
                    return []
                raise
            check_results(results, root)
            for c in [r for r in results if isinstance(r, Container)][:3]:
                if not scan:
                    break
                try:
                    for change in scan_container(c):
                        change.to_dict()
                except LayerError:
                    pass
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)


def instrument(prefixes: tuple[str, ...] = ("ovforensics",)) -> int:
    """Coverage instrumentation for the code under test only (``atheris.instrument_all`` would
    take minutes over the whole standard library). Returns the number of functions."""
    import gc

    import atheris
    from atheris.instrument_bytecode import _is_instrumentable

    def wanted(module: str) -> bool:
        return any(module == p or module.startswith(p + ".") for p in prefixes)

    funcs = [obj for obj in gc.get_objects()
             if _is_instrumentable(obj) and wanted(getattr(obj, "__module__", "") or "")]
    for func in funcs:
        try:
            atheris.instrument_func(func)
        except Exception as exc:  # noqa: BLE001 - atheris cannot patch a few odd code objects
            print(f"INFO: not instrumented: {func!r}: {exc}", file=sys.stderr)
    return len(funcs)


def fuzz_main(test_one_input, prefixes: tuple[str, ...] = ("ovforensics",)) -> None:
    """``python fuzz/fuzz_X.py [libFuzzer options] [CORPUS_DIR ...]`` under atheris."""
    import atheris

    n = instrument(prefixes)
    print(f"INFO: instrumented {n} functions of {', '.join(prefixes)}", file=sys.stderr)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
