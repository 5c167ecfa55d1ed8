#!/usr/bin/env python3
"""Fuzz the bbolt reader (``ovforensics.stores.bbolt``): the input is the database file itself.

Each input is read twice: as it is, and (when that differs) with the FNV-1a checksums of its
meta pages recomputed, so that mutations of the tree pages are not all stopped at the meta
check. Everything a caller can do is done: ``dump()`` (every bucket, nested and inline),
``pages()`` of every bucket, ``get()`` of every key found and of absent ones, ``bucket()``
paths, ``uvarint``/``varint`` of the values. Contract: the file reads, or :class:`BoltError`
is raised (``ValueError`` for a value that is no varint); never another exception, never a
hang (every loop in a damaged file is detected), never memory beyond the file's size.

    python fuzz/run.py bbolt 3600
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from ovforensics.stores import bbolt  # noqa: E402
from ovforensics.stores.bbolt import BoltError  # noqa: E402

MAX_WORK = 5000  # buckets and keys visited per input, so one input stays fast


def exercise(path: str) -> None:
    try:
        db = bbolt.open_db(path)
    except BoltError:
        return
    with db:
        repr(db)
        try:
            db.dump()
        except BoltError:
            pass
        budget = [MAX_WORK]
        todo = [db.root]
        while todo and budget[0] > 0:
            bucket = todo.pop()
            repr(bucket)
            try:
                bucket.pages()
            except BoltError:
                pass
            try:
                for key, value in bucket.items():
                    budget[0] -= 1
                    if budget[0] <= 0:
                        break
                    got = bucket.get(key)
                    bucket.get(key + b"\0")
                    if isinstance(value, bbolt.Bucket):
                        todo.append(value)
                        if not isinstance(got, bbolt.Bucket) and got is not None:
                            pass  # a damaged tree may route get() elsewhere: not a crash
                    else:
                        for decode in (bbolt.uvarint, bbolt.varint):
                            try:
                                decode(value)
                            except ValueError:
                                pass
            except BoltError:
                pass
            for probe in (b"", b"v1", b"\xff" * 8):
                try:
                    bucket.get(probe)
                    bucket.bucket(probe)
                    bucket.value(probe)
                except BoltError:
                    pass
        try:
            db.bucket("v1", "default", "containers")
        except BoltError:
            pass


def TestOneInput(data: bytes) -> None:
    where = common.scratch_dir("ovf-fuzz-bolt-")
    path = os.path.join(where, "x.db")
    try:
        variants = [data]
        fixed = common.fix_checksums(data)
        if fixed != data:
            variants.append(fixed)
        for variant in variants:
            with open(path, "wb") as fh:
                fh.write(variant)
            exercise(path)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.rmdir(where)


def seeds() -> list[bytes]:
    w = common.write_bolt
    tree = {b"v1": {b"default": {b"containers": {b"c%d" % i: {b"image": b"img", b"labels": {b"a": b"1"}}
                                                 for i in range(12)},
                                 b"big": {b"blob": b"x" * 1500}, b"empty": {}},
                    b"version": b"\x06"},
            b"other": {b"k": b"v"}}
    return [
        w(tree),
        w(tree, page_size=1024, per_leaf=3, per_branch=2),
        w({b"ctr": {b"c" * 64: {b"state": b'{"state":3}'}}}, page_size=512),
        w({}, page_size=512),
        w({b"a": {b"b": {b"c": {b"d": b"e"}}}}, page_size=512, inline_limit=0),
        looping_branch(),  # written after review: a branch page whose first child is itself
    ]


def looping_branch() -> bytes:
    import struct

    data = bytearray(common.write_bolt({b"k%02d" % i: b"v" for i in range(20)}, page_size=512,
                                       per_leaf=4, per_branch=8))
    root = struct.unpack_from("<Q", data, 32)[0]
    struct.pack_into("<Q", data, root * 512 + 24, root)
    return bytes(data)


if __name__ == "__main__":
    common.fuzz_main(TestOneInput)
