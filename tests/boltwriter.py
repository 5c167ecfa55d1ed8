"""A small, correct bbolt writer for crafted test files (tests/test_bbolt.py, the fuzz harnesses).

Pages are written as bbolt lays them out: meta pages 0 and 1 (FNV-1a checksummed), a freelist,
then leaf, branch and overflow pages; buckets nest, and are stored inline where asked
(:class:`Inline`) or, with ``inline_limit``, wherever bbolt itself would inline them.
"""
from __future__ import annotations

import struct

from ovforensics.stores import bbolt


class Inline(dict):
    """A bucket to be stored inline, in its parent's leaf."""


def _b(k) -> bytes:
    return k.encode() if isinstance(k, str) else bytes(k)


def craft(tree: dict, *, page_size: int = 4096, per_leaf: int = 64, per_branch: int = 64,
          older: dict | None = None, txid: int = 7, version: int = 2,
          inline_limit: int | None = None) -> bytes:
    """A bbolt file holding ``tree`` (nested dicts: buckets; bytes/str: values).

    With ``older``, meta page 0 holds that tree at ``txid - 1`` and meta page 1 ``tree`` at
    ``txid``; without, both point at ``tree`` (txids ``txid - 1`` and ``txid``). Leaves hold
    ``per_leaf`` elements and branches ``per_branch``, so a tree of more keys gets branch pages;
    a large value gets overflow pages. With ``inline_limit``, a bucket with no nested bucket
    whose leaf fits in that many bytes is stored inline, as bbolt does."""
    pages: dict[int, bytes] = {}
    next_id = [3]  # 0, 1: meta; 2: freelist

    def page_bytes(pid: int, flags: int, items, overflow: int = 0) -> bytes:
        n = len(items)
        elems, data = b"", b""
        for i, item in enumerate(items):
            pos = (n - i) * 16 + len(data)
            if flags == bbolt.BRANCH:
                key, child = item
                elems += struct.pack("<IIQ", pos, len(key), child)
                data += key
            else:
                fl, key, value = item
                elems += struct.pack("<IIII", fl, pos, len(key), len(value))
                data += key + value
        return struct.pack("<QHHI", pid, flags, n, overflow) + elems + data

    def write_page(flags: int, items) -> int:
        size = len(page_bytes(0, flags, items))
        npages = -(-size // page_size)
        pid = next_id[0]
        next_id[0] += npages
        raw = page_bytes(pid, flags, items, npages - 1)
        pages[pid] = raw + b"\0" * (npages * page_size - len(raw))
        return pid

    def inline_page(v: dict) -> bytes | None:
        if isinstance(v, Inline):
            return page_bytes(0, bbolt.LEAF, items_of(v))
        if inline_limit is None or any(isinstance(x, dict) for x in v.values()):
            return None
        page = page_bytes(0, bbolt.LEAF, items_of(v))
        return page if len(page) <= inline_limit else None

    def items_of(d: dict):
        out = []
        for k in sorted(d, key=_b):
            v = d[k]
            if isinstance(v, dict):
                inline = inline_page(v)
                if inline is not None:
                    out.append((1, _b(k), struct.pack("<QQ", 0, 0) + inline))
                else:
                    out.append((1, _b(k), struct.pack("<QQ", write_tree(v), 0)))
            else:
                out.append((0, _b(k), _b(v)))
        return out

    def write_tree(d: dict) -> int:
        items = items_of(d)
        level = [(c[0][1] if c else b"", write_page(bbolt.LEAF, c))
                 for c in ([items[i:i + per_leaf] for i in range(0, len(items), per_leaf)] or [[]])]
        while len(level) > 1:
            level = [(c[0][0], write_page(bbolt.BRANCH, c))
                     for c in [level[i:i + per_branch] for i in range(0, len(level), per_branch)]]
        return level[0][1]

    root_old = write_tree(older) if older is not None else None
    root_new = write_tree(tree)
    hw = next_id[0]

    def meta(pid: int, root: int, tx: int) -> bytes:
        body = struct.pack("<IIIIQQQQQ", bbolt.MAGIC, version, page_size, 0, root, 0, 2, hw, tx)
        raw = struct.pack("<QHHI", pid, bbolt.META_PAGE, 0, 0) + body + struct.pack("<Q", bbolt.fnv1a64(body))
        return raw + b"\0" * (page_size - len(raw))

    out = bytearray(meta(0, root_old if root_old is not None else root_new, txid - 1))
    out += meta(1, root_new, txid)
    free = struct.pack("<QHHI", 2, bbolt.FREELIST, 0, 0)
    out += free + b"\0" * (page_size - len(free))
    for pid in sorted(pages):  # ids were handed out in order; overflow runs are padded in
        out += pages[pid]
    assert len(out) == hw * page_size
    return bytes(out)
