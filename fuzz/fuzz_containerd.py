#!/usr/bin/env python3
"""Fuzz the containerd (overlayfs snapshotter) reader: ``engines.containerd.find``.

Records tagged 0x80 are keys of ``meta.db`` (containerd's metadata), 0x81 of the snapshotter's
``metadata.db``: the harness writes both as *valid* bbolt files (fuzz/common.py), so the fuzzer
explores what the reader makes of their contents: snapshot keys, parent chains (loops, missing
parents), ids (bad varints, ids naming a link or a file), labels, Go times. Tree records make
config.toml, content-store blobs (index, manifest, config: JSON), the snapshots' ``fs``
directories, or replace either database with raw bytes (slots 1 and 2). Contract (the module's
words: "nothing the evidence holds makes this raise"): only Container and Broken records; every
layer directory a real directory inside the crafted tree; nothing outside it opened or listed;
each container found scans without an exception.

    python fuzz/run.py containerd 3600
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import bolt_record, fs  # noqa: E402

from ovforensics.stores import containerd  # noqa: E402

META, SNAP = 0x80, 0x81
DR = "var/lib/containerd"
OV = f"{DR}/io.containerd.snapshotter.v1.overlayfs"
BLOBS = f"{DR}/io.containerd.content.v1.content/blobs/sha256"
INDEX, MANIFEST, CONFIG = "a" * 64, "b" * 64, "c" * 64
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
C1, C2 = containerd.chain_ids([D1, D2])

SLOTS = [
    "etc/containerd/config.toml",  # 0
    f"{DR}/io.containerd.metadata.v1.bolt/meta.db",  # 1
    f"{OV}/metadata.db",  # 2
    f"{OV}/snapshots/1/fs",  # 3
    f"{OV}/snapshots/2/fs",  # 4
    f"{OV}/snapshots/3/fs",  # 5
    f"{OV}/snapshots/4/fs",  # 6
    f"{BLOBS}/{INDEX}",  # 7
    f"{BLOBS}/{MANIFEST}",  # 8
    f"{BLOBS}/{CONFIG}",  # 9
    f"{OV}/snapshots",  # 10
    f"{OV}",  # 11
    f"{DR}",  # 12
    f"{OV}/snapshots/3/fs/etc/hostname",  # 13
    f"{OV}/snapshots/3/work",  # 14
]

GO_TIME = bytes([1]) + (63_840_000_000).to_bytes(8, "big") + (123_000_000).to_bytes(4, "big") + b"\xff\xff"


def meta_db(ns: str = "default", cid: str = "c1", key: str = "c1-snap") -> bytes:
    c = ("v1", ns, "containers", cid)
    s = ("v1", ns, "snapshots", "overlayfs")
    return b"".join([
        bolt_record(META, "version", value=b"\x03"),
        bolt_record(META, *c, "image", value="docker.io/library/alpine:latest"),
        bolt_record(META, *c, "snapshotter", value="overlayfs"),
        bolt_record(META, *c, "snapshotKey", value=key),
        bolt_record(META, *c, "createdat", value=GO_TIME),
        bolt_record(META, *c, "labels", "nerdctl/name", value="web"),
        bolt_record(META, *c, "runtime", "name", value="io.containerd.runc.v2"),
        bolt_record(META, *s, key, "name", value=f"{ns}/3/{key}"),
        bolt_record(META, *s, key, "parent", value=C2),
        bolt_record(META, *s, C2, "name", value=f"{ns}/2/{C2}"),
        bolt_record(META, *s, C2, "parent", value=C1),
        bolt_record(META, *s, C1, "name", value=f"{ns}/1/{C1}"),
        bolt_record(META, "v1", ns, "images", "docker.io/library/alpine:latest", "target", "digest",
                    value="sha256:" + INDEX),
    ])


def snap_db(ns: str = "default", key: str = "c1-snap") -> bytes:
    s = ("v1", "snapshots")
    return b"".join([
        bolt_record(SNAP, *s, f"{ns}/1/{C1}", "id", value=b"\x01"),
        bolt_record(SNAP, *s, f"{ns}/1/{C1}", "kind", value=b"\x03"),
        bolt_record(SNAP, *s, f"{ns}/2/{C2}", "id", value=b"\x02"),
        bolt_record(SNAP, *s, f"{ns}/2/{C2}", "kind", value=b"\x03"),
        bolt_record(SNAP, *s, f"{ns}/2/{C2}", "parent", value=f"{ns}/1/{C1}"),
        bolt_record(SNAP, *s, f"{ns}/3/{key}", "id", value=b"\x03"),
        bolt_record(SNAP, *s, f"{ns}/3/{key}", "kind", value=b"\x02"),
        bolt_record(SNAP, *s, f"{ns}/3/{key}", "parent", value=f"{ns}/2/{C2}"),
        bolt_record(SNAP, *s, f"{ns}/3/{key}", "inodes", value=b"\x06"),
        bolt_record(SNAP, "v1", "parents", value=b""),
    ])


def content() -> bytes:
    return b"".join([
        fs("file", 7, '{"manifests":[{"digest":"sha256:%s"}]}' % MANIFEST),
        fs("file", 8, '{"config":{"digest":"sha256:%s"},"layers":[]}' % CONFIG),
        fs("file", 9, '{"rootfs":{"type":"layers","diff_ids":["%s","%s"]}}' % (D1, D2)),
    ])


def store() -> bytes:
    return (meta_db() + snap_db() + content()
            + fs("dir", 3) + fs("dir", 4) + fs("dir", 5) + fs("file", 13, "web\n"))


def seeds() -> list[bytes]:
    base = store()
    # the first bolt record's first byte picks the page size: an odd one means 4096
    return [
        base,
        bolt_record(META, "w") + base,
        base + fs("file", 0, 'version = 2\nroot = "/srv/containerd"\n'
                             '[plugins."io.containerd.snapshotter.v1.overlayfs"]\nroot_path = "/x"\n'),
        base + bolt_record(SNAP, "v1", "snapshots", f"default/1/{C1}", "parent", value="default/3/c1-snap"),
        base + bolt_record(SNAP, "v1", "snapshots", f"default/2/{C2}", "id", value=b"\xff" * 11),
        base + fs("symlink", 4, "/etc") + fs("symlink", 5, "../../../../../../../.."),
        base + fs("file", 1, b"\0" * 100) + fs("file", 2, b"garbage"),
        base + bolt_record(META, "v1", "default", "containers", "c1", "snapshotter", value="native")
        + bolt_record(META, "v1", "k8s.io", "containers", "x", "labels", "l", value="v"),
        base + meta_db("moby", "m1", "") + meta_db("k8s.io", "k1", "k1") + snap_db("k8s.io", "k1"),
        base + fs("file", 9, '{"rootfs":{"diff_ids":[1,2]}}') + fs("file", 7, "[" * 30),
        base + bolt_record(META, "v1", "default", "containers", "c1", "createdat", value=b"\x02" + b"\x80" * 15),
        base + fs("file", 0, "root = [unclosed\n"),
        # written after review, not found by mutation: nesting deeper than Python's recursion
        # limit in config.toml and in a content-store blob
        base + fs("file", 0, "root = " + "[" * 1200),
        base + fs("file", 7, "[" * 1200),
    ]


def TestOneInput(data: bytes) -> None:
    common.run_store(containerd.find, data, SLOTS, bolts={META: SLOTS[1], SNAP: SLOTS[2]})


if __name__ == "__main__":
    common.fuzz_main(TestOneInput)
