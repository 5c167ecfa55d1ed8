#!/usr/bin/env python3
"""Fuzz the Podman / CRI-O (containers-storage overlay) store reader: ``engines.podman.find``.

The input is a list of tree records (fuzz/common.py) making the store's files (slots below:
storage.conf, /etc/passwd, a user's storage.conf, containers.json, layers.json, images.json and
their volatile twins, ``overlay/<id>/lower`` and ``link``, ``l/`` links, ``.has-mount-program``,
libpod's ``bolt_state.db`` and ``db.sql`` as raw bytes) or any other path; records tagged 0x80
and up are keys of a *valid* ``libpod/bolt_state.db`` the harness writes (overridden by a raw
slot-19 record). Contract (the module's own words: "damage never raises"): ``find`` yields only
Container and Broken records and raises nothing; every layer directory is a real directory
inside the crafted tree; nothing outside the tree is opened, listed or connected to; each
container found scans without an exception.

    python fuzz/run.py podman 3600
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import bolt_record, fs  # noqa: E402

from ovforensics.stores import podman  # noqa: E402

CID, CID2 = "c" * 64, "d" * 64
UP, L1, L2 = "a" * 64, "1" * 64, "2" * 64
IMG = "9" * 64
S = "var/lib/containers/storage"
BOLT_TAG = 0x80

SLOTS = [
    "etc/containers/storage.conf",  # 0
    "etc/passwd",  # 1
    "root/.config/containers/storage.conf",  # 2
    f"{S}/overlay-containers/containers.json",  # 3
    f"{S}/overlay-containers/volatile-containers.json",  # 4
    f"{S}/overlay-layers/layers.json",  # 5
    f"{S}/overlay-layers/volatile-layers.json",  # 6
    f"{S}/overlay-images/images.json",  # 7
    f"{S}/overlay/{UP}/diff",  # 8
    f"{S}/overlay/{UP}/lower",  # 9
    f"{S}/overlay/{UP}/link",  # 10
    f"{S}/overlay/{L1}/diff",  # 11
    f"{S}/overlay/{L1}/link",  # 12
    f"{S}/overlay/{L2}/diff",  # 13
    f"{S}/overlay/{L2}/link",  # 14
    f"{S}/overlay/l/UPSHORT",  # 15
    f"{S}/overlay/l/L1SHORT",  # 16
    f"{S}/overlay/l/L2SHORT",  # 17
    f"{S}/overlay/.has-mount-program",  # 18
    f"{S}/libpod/bolt_state.db",  # 19
    f"{S}/libpod/db.sql",  # 20
    "home/u/.local/share/containers/storage/overlay-containers/containers.json",  # 21
    "home/u/.local/share/containers/storage/overlay-layers/layers.json",  # 22
    "home/u/.local/share/containers/storage/overlay/" + UP + "/diff",  # 23
    "home/u/.config/containers/storage.conf",  # 24
    f"{S}",  # 25
    f"{S}/overlay",  # 26
    f"{S}/overlay-layers",  # 27
    f"{S}/overlay/{UP}/diff/etc/hostname",  # 28
]


def containers_json(*entries) -> str:
    return "[" + ",".join(entries) + "]"


def entry(cid: str = CID, layer: str = UP, name: str = "web") -> str:
    meta = '{\\"image-name\\":\\"docker.io/library/nginx:latest\\",\\"name\\":\\"%s\\"}' % name
    return ('{"id":"%s","names":["%s"],"image":"%s","layer":"%s","metadata":"%s",'
            '"created":"2024-01-01T00:00:00Z"}' % (cid, name, IMG, layer, meta))


LAYERS = ('[{"id":"%s","parent":"%s","diff-digest":"sha256:%s"},'
          '{"id":"%s","parent":"%s","diff-digest":"sha256:%s"},'
          '{"id":"%s","diff-digest":"sha256:%s"}]' % (UP, L1, "e" * 64, L1, L2, "5" * 64, L2, "6" * 64))


def state_db() -> bytes:
    return (bolt_record(BOLT_TAG, "ctr", CID, "state", value='{"state":3}')
            + bolt_record(BOLT_TAG, "ctr", CID, "config", value="{}")
            + bolt_record(BOLT_TAG, "ctr", CID2, "state", value='{"state":6}')
            + bolt_record(BOLT_TAG, "pod"))


def store() -> bytes:
    return b"".join([
        fs("file", 3, containers_json(entry())),
        fs("file", 5, LAYERS),
        fs("file", 7, '[{"id":"%s","names":["docker.io/library/nginx:latest"]}]' % IMG),
        fs("dir", 8), fs("dir", 11), fs("dir", 13),
        fs("file", 9, "l/L1SHORT:l/L2SHORT"),
        fs("file", 10, "UPSHORT"), fs("file", 12, "L1SHORT"), fs("file", 14, "L2SHORT"),
        fs("symlink", 15, f"../{UP}/diff"), fs("symlink", 16, f"../{L1}/diff"),
        fs("symlink", 17, f"../{L2}/diff"),
        fs("file", 28, "web\n"),
        state_db(),
    ])


def seeds() -> list[bytes]:
    base = store()
    return [
        base,
        base + fs("file", 0, '[storage]\ndriver = "overlay"\ngraphroot = "/srv/containers"\n'
                             '[storage.options.overlay]\nmount_program = "/usr/bin/fuse-overlayfs"\n'),
        base + fs("file", 1, "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n")
        + fs("file", 21, containers_json(entry(CID2))) + fs("file", 22, LAYERS) + fs("dir", 23),
        base + fs("symlink", 16, "/etc") + fs("symlink", 17, "../../../../../../.."),
        base + fs("file", 5, "not json") + fs("file", 18, "true"),
        base + fs("file", 9, "l/../../x:l/") + fs("file", 4, containers_json(entry(CID2, "../x"))),
        base + fs("file", 5, LAYERS.replace(f'"parent":"{L2}"', f'"parent":"{UP}"')),
        base + fs("file", 19, b"\0" * 600) + fs("file", 20, b"SQLite format 3\0" + b"\0" * 100),
        base + fs("file", 3, '[1, {"id": 5}, {"id": "x", "layer": null}, {"id":"y","names":"z"}]'),
        base + fs("symlink", 3, "/etc/shadow") + fs("symlink", 26, "/var"),
        base + fs("file", 24, "[storage]\ngraphroot = 5\n") + fs("file", 2, "[[[bad toml"),
        base + fs("file", 3, containers_json(*[entry(f"{i:064x}") for i in range(30)])),
        # written after review, not found by mutation: nesting deeper than Python's recursion
        # limit in each file the reader parses (JSON, TOML, the metadata string, bolt values)
        base + fs("file", 5, "[" * 1200),
        base + fs("file", 3, '[{"id":"x","layer":"%s","metadata":"%s"}]' % (UP, "[" * 1200)),
        base + fs("file", 0, "a = " + "[" * 1200) + fs("file", 24, "b = " + "{c = " * 600),
        base + bolt_record(BOLT_TAG, "ctr", CID, "state", value="[" * 1200),
    ]


def TestOneInput(data: bytes) -> None:
    common.run_store(podman.find, data, SLOTS, bolts={BOLT_TAG: SLOTS[19]})


if __name__ == "__main__":
    common.fuzz_main(TestOneInput)
