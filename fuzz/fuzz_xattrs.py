#!/usr/bin/env python3
"""Fuzz the overlay marker logic: xattr values (opaque, redirect, metacopy, whiteout, escaped
``overlay.overlay.*``) and marker names, read through ``markers`` and ``resolve`` by a scan.

The input builds a tiny stack in memory (an upper and one to three lowers, :class:`MemLayer`):
byte 0 picks the marker rules (kernel, oci, fuse), the control namespace (auto, both, trusted,
user) and the number of lowers; then records ``tag len body`` each make one entry: ``tag``
picks the layer and the kind (file, dir, symlink, 0/0 char device = whiteout, another char
device, FIFO); the body is a path (from a table of names that matter: ``.wh.*``,
``.wh..wh..opq``, ``.wh..opq``, nested names, or literal), a content, and xattrs (a name from
a table of every control xattr under ``trusted.overlay.``, ``user.overlay.``,
``user.fuseoverlayfs.``, escaped ones, plus a literal value). The stack is then scanned.

Contract: ``parse_redirect`` returns a single name without ``/`` or a path of components that
are never empty, ``.`` or ``..``, or raises BadRedirect (a ValueError); ``scan`` raises nothing
and ends; every record serialises; every deleted or modified record names a lower entry that
exists in a lower layer; every path is absolute, with no ``.``/``..``/empty component.

    python fuzz/run.py xattrs 3600
"""
from __future__ import annotations

import io
import json
import os
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import ovforensics  # noqa: E402
from ovforensics.layers import markers  # noqa: E402
from ovforensics.layers.layer import Entry, EntryError, join  # noqa: E402
from ovforensics.records.record import CHANGE_KINDS, VIA_KINDS  # noqa: E402
from ovforensics.scanner.resolve import BadRedirect, parse_redirect  # noqa: E402

RULES = ("kernel", "oci", "fuse")
NS = ("auto", "both", "trusted", "user")
KINDS = ("file", "dir", "symlink", "whiteout", "char", "fifo", "file", "dir")
PATHS = [b"a", b"a/b", b"a/b/c", b"b", b"c", b"a/c", b".wh.a", b"a/.wh.b", b".wh..wh..opq",
         b"a/.wh..wh..opq", b".wh..opq", b"a/.wh..opq", b"d", b"d/e", b"b/x", b".wh..wh.plnk",
         b"a/b/.wh.c", b"e", b"e/f/g", b"a/d"]
CONTROL = ["opaque", "redirect", "metacopy", "whiteout", "whiteouts", "origin", "impure", "uuid",
           "nlink", "upper", "protattr", "overlay.opaque", "overlay.x"]
XATTRS = ([markers.TRUSTED + c for c in CONTROL] + [markers.USER + c for c in CONTROL]
          + ["user.fuseoverlayfs.opaque", "user.containers.override_stat", "security.capability",
             "user.x", "trusted.overlay", "trusted.overlay.", "user.overlay.overlay."])
PREDICATES = ("opaque_value", "xattr_opaque", "redirect", "is_metacopy", "is_xwhiteout",
              "visible_xattrs")
ANOMALIES = ("orphan-whiteout", "whiteout-lookalike", "bad-redirect", "metacopy-without-data",
             "unreadable")


class _Node:
    __slots__ = ("kind", "content", "xattrs", "children", "rdev", "target")

    def __init__(self, kind: str):
        self.kind = kind
        self.content = b""
        self.xattrs: dict[str, bytes] = {}
        self.children: dict[bytes, None] = {}
        self.rdev = 0
        self.target = b"x"


class MemLayer:
    """A layer held in memory: the Layer protocol, nothing on disk."""

    def __init__(self, label: str, index: int, rules: str):
        self.label = label
        self.index = index
        self.rules = rules
        self.errors: list = []
        self.nodes: dict[tuple, _Node] = {(): _Node("dir")}
        self._entries: dict[tuple, Entry] = {}

    def add(self, path: tuple, kind: str) -> _Node | None:
        for i in range(len(path)):
            parent = self.nodes.get(path[:i])
            if parent is None:
                parent = self.nodes[path[:i]] = _Node("dir")
                self.nodes[path[:i - 1]].children[path[i - 1]] = None
            if parent.kind != "dir":
                return None
        if path in self.nodes and self.nodes[path].kind == "dir" and kind != "dir":
            return None  # keep the tree a tree: never replace a directory
        node = self.nodes[path] = _Node(kind)
        self.nodes[path[:-1]].children[path[-1]] = None
        return node

    def _entry(self, path: tuple) -> Entry:
        entry = self._entries.get(path)
        if entry is None:
            node = self.nodes[path]
            kind = "char" if node.kind in ("whiteout", "char") else node.kind
            fmt = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
                   "char": stat.S_IFCHR, "fifo": stat.S_IFIFO}[kind]
            entry = self._entries[path] = Entry(
                layer=self, path=path, kind=kind, mode=fmt | 0o644, uid=0, gid=0,
                size=len(node.content) if kind == "file" else 0, mtime_ns=1,
                rdev=node.rdev, target=node.target if kind == "symlink" else None, ino=len(self._entries) + 1)
        return entry

    def root_entry(self) -> Entry:
        return self._entry(())

    def listdir(self, path):
        node = self.nodes.get(path)
        if node is None or node.kind != "dir":
            return None
        return {name: self._entry(path + (name,)) for name in node.children}

    def read_xattrs(self, entry: Entry) -> dict[str, bytes]:
        return dict(self.nodes[entry.path].xattrs)

    def open(self, entry: Entry):
        if entry.kind != "file":
            raise EntryError(f"{self.label}: not a regular file")
        return io.BytesIO(self.nodes[entry.path].content)

    def physical(self, path) -> bytes:
        return self.label.encode() + (b"/" + join(path) if path else b"")


def build(data: bytes):
    head = data[0] if data else 0
    rules, ns = RULES[head % 3], NS[(head >> 2) % 4]
    layers = [MemLayer("/up", -1, rules)] + [MemLayer(f"/low{i}", i, rules)
                                             for i in range(1 + (head >> 4) % 3)]
    for tag, body in common.records(data[1:]):
        layer = layers[(tag & 3) % len(layers)]
        kind = KINDS[(tag >> 2) % len(KINDS)]
        if not body:
            continue
        if body[0] < len(PATHS):
            raw, rest = PATHS[body[0]], body[1:]
        else:
            raw, _, rest = body[1:].partition(b"\0")
        path = tuple(p for p in raw.split(b"/") if p not in (b"", b".", b".."))[:8]
        if not path:
            continue
        node = layer.add(path, kind)
        if node is None:
            continue
        n = rest[0] if rest else 0
        node.content, rest = rest[1:1 + n], rest[1 + n:]
        if kind == "symlink":
            node.target = node.content or b"x"
        if kind == "char":
            node.rdev = os.makedev(1 + (n % 7), n)
        while len(rest) >= 2:  # xattr: name id, value length, value
            name_id, vlen = rest[0], rest[1]
            value, rest = rest[2:2 + vlen], rest[2 + vlen:]
            name = XATTRS[name_id] if name_id < len(XATTRS) else "user.fz" + str(name_id)
            node.xattrs[name] = value
    return layers, ns


def check_redirect(value: bytes, parent: tuple) -> None:
    try:
        got = parse_redirect(value, parent)
    except BadRedirect:
        return
    if isinstance(got, tuple):
        assert got and all(p not in (b"", b".", b"..") for p in got), (value, got)
    else:
        assert isinstance(got, bytes) and got and b"/" not in got and got not in (b".", b".."), (value, got)


def TestOneInput(data: bytes) -> None:
    layers, ns_name = build(data)
    ns = markers.Namespaces.parse(ns_name, roots=[layer.root_entry() for layer in layers])
    for layer in layers:
        for path, node in list(layer.nodes.items()):
            entry = layer._entry(path)
            for value in node.xattrs.values():
                check_redirect(value, path[:-1])
            for name in PREDICATES:
                predicate = getattr(markers, name, None)  # markers.py changes: call what is there
                if predicate is not None:
                    predicate(entry, ns)
    lowers = layers[1:]
    labels = tuple(layer.label.encode() for layer in lowers)
    for change in ovforensics.scan(layers[0], lowers, xattr_ns=ns_name):
        record = change.to_dict()
        json.dumps(record)
        assert change.change in CHANGE_KINDS, record
        if change.change == "anomaly":
            assert change.anomaly in ANOMALIES, record
        assert change.path.startswith(b"/"), record
        parts = change.path.split(b"/")[1:]
        assert change.path == b"/" or all(p not in (b"", b".", b"..") for p in parts), record
        if change.change == "deleted":
            assert change.via in VIA_KINDS, record
        if change.change in ("deleted", "modified"):
            assert change.lower_path is not None and change.lower_path.startswith(labels), record
            assert 0 <= change.lower_layer.index < len(lowers), record
            layer = lowers[change.lower_layer.index]
            inner = tuple(p for p in change.lower_path[len(layer.label):].split(b"/") if p)
            assert inner in layer.nodes, record


def rec(layer: int, kind: str, path: bytes | int, content: bytes = b"", xattrs=()) -> bytes:
    tag = layer | (KINDS.index(kind) << 2)
    body = bytes([path]) if isinstance(path, int) else b"\xff" + path + b"\0"
    body += bytes([len(content)]) + content
    for name, value in xattrs:
        body += bytes([XATTRS.index(name), len(value)]) + value
    return common.record(tag, body)


def seeds() -> list[bytes]:
    T = markers.TRUSTED
    low = (rec(1, "dir", 0) + rec(1, "dir", 1) + rec(1, "file", 2, b"old") + rec(1, "file", 3, b"b")
           + rec(1, "file", 4, b"c") + rec(1, "file", 5, b"ac") + rec(1, "dir", 12)
           + rec(1, "file", 13, b"e"))
    return [
        b"\x10" + low + rec(0, "whiteout", 3) + rec(0, "dir", 1, xattrs=[(T + "opaque", b"y")]),
        b"\x10" + low + rec(0, "dir", 17, xattrs=[(T + "redirect", b"/d")])
        + rec(0, "file", 2, xattrs=[(T + "metacopy", b""), (T + "redirect", b"/c")]),
        b"\x11" + low + rec(0, "file", 6) + rec(0, "file", 9) + rec(0, "file", 10),
        b"\x12" + low + rec(0, "dir", 0, xattrs=[("user.fuseoverlayfs.opaque", b"y")])
        + rec(0, "whiteout", 10),
        b"\x20" + low + rec(2, "dir", 0) + rec(2, "file", 5, b"z")
        + rec(0, "file", 3, xattrs=[(T + "whiteout", b"")])
        + rec(0, "dir", 0, xattrs=[(T + "opaque", b"x"), (T + "overlay.opaque", b"y")]),
        b"\x04" + low + rec(0, "dir", 17, xattrs=[(markers.USER + "redirect", b"../../etc")])
        + rec(0, "dir", 0, xattrs=[(markers.USER + "impure", b"y")])
        + rec(0, "char", 4, b"\x05"),
        b"\x00" + low + rec(0, "dir", 12, xattrs=[(T + "redirect", b"a" * 255)])
        + rec(0, "dir", 17, xattrs=[(T + "redirect", b"")]) + rec(0, "file", 0, xattrs=[(T + "redirect", b"/")]),
    ]


if __name__ == "__main__":
    common.fuzz_main(TestOneInput)
