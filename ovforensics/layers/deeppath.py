"""Deep layer paths that share their prefixes, so a 10,000-deep tree costs linear memory.

A path inside a layer is a tuple of name components (``layer.Path``). Each level of a
depth-first walk holds its own path, and a tuple copies its whole prefix: a chain of depth *d*
holds d²/2 references in each layer and in the differ (~1.3 GB for 10,000 levels, measured).
Past :data:`DEEP` components, :func:`child` makes a :class:`DeepPath` instead: a node holding its
parent and its last name, which behaves as the tuple it stands for: ``len``, indexing,
``[:-1]`` (the parent itself, no copy), ``+ (name,)``, iteration, ``b"/".join``, ordering, and
equality **and hash** with tuples (the hash is CPython's own tuple hash, carried from node to
node, so a ``DeepPath`` and the equal tuple find each other in a dict). Short paths stay tuples:
nothing changes for ordinary trees.
"""
from __future__ import annotations

DEEP = 32  # components kept as a plain tuple; deeper levels are DeepPath nodes

_M = (1 << 64) - 1
_P1, _P2, _P5 = 11400714785074694791, 14029467366897019727, 2870177450012600261


def _lane(acc: int, item) -> int:
    acc = (acc + (hash(item) & _M) * _P2) & _M
    acc = ((acc << 31) | (acc >> 33)) & _M
    return (acc * _P1) & _M


def _final(acc: int, n: int) -> int:
    acc = (acc + (n ^ (_P5 ^ 3527539))) & _M
    if acc == _M:
        return 1546275796
    return acc - (1 << 64) if acc >= 1 << 63 else acc


class DeepPath:
    """A path of more than :data:`DEEP` components: ``parent`` (a tuple or a DeepPath) + ``name``."""

    __slots__ = ("parent", "name", "depth", "_acc", "_hash")

    def __init__(self, parent, name: bytes):
        self.parent = parent
        self.name = name
        self.depth = len(parent) + 1
        self._acc: int | None = None
        self._hash: int | None = None

    # -- the tuple protocol ---------------------------------------------------------------------
    def __len__(self) -> int:
        return self.depth

    def __bool__(self) -> bool:
        return True

    def _names(self) -> list:
        """The components, leaf first, down to the tuple base (appended last, as a tuple)."""
        out = []
        node = self
        while type(node) is DeepPath:
            out.append(node.name)
            node = node.parent
        out.append(node)
        return out

    def __iter__(self):
        names = self._names()
        yield from names[-1]
        for i in range(len(names) - 2, -1, -1):
            yield names[i]

    def __contains__(self, item) -> bool:
        return any(part == item for part in self)

    def prefix(self, k: int):
        """The first ``k`` components: an ancestor node (no copy), or a tuple."""
        if k >= self.depth:
            return self
        node = self
        while type(node) is DeepPath and node.depth > k:
            node = node.parent
        return node if len(node) == k else node[:k]

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(self.depth)
            if start == 0 and step == 1:
                return self.prefix(max(stop, 0))
            return tuple(self)[index]
        if index < 0:
            index += self.depth
        if not 0 <= index < self.depth:
            raise IndexError("path index out of range")
        node = self
        while type(node) is DeepPath:
            if node.depth - 1 == index:
                return node.name
            node = node.parent
        return node[index]

    def __add__(self, other):
        node = self
        for name in other:
            node = DeepPath(node, name)
        return node

    def __radd__(self, other):
        node = other
        for name in self:
            node = child(node, name)
        return node

    # -- hash and comparisons -------------------------------------------------------------------
    def _accumulated(self) -> int:
        """tuplehash's running value after this node's component (before the length is mixed)."""
        if self._acc is not None:
            return self._acc
        pending = []
        node = self
        while type(node) is DeepPath and node._acc is None:
            pending.append(node)
            node = node.parent
        if type(node) is DeepPath:
            acc = node._acc
        else:
            acc = _P5
            for item in node:
                acc = _lane(acc, item)
        for item in reversed(pending):
            acc = item._acc = _lane(acc, item.name)
        return acc

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = _final(self._accumulated(), self.depth) if _EXACT else hash(tuple(self))
        return self._hash

    def __eq__(self, other) -> bool:
        if other is self:
            return True
        if type(other) is DeepPath:
            a, b = self, other
            while a is not b:
                if type(a) is not DeepPath or type(b) is not DeepPath:
                    return a == b
                if a.depth != b.depth or a.name != b.name:
                    return False
                if a._hash is not None and b._hash is not None and a._hash != b._hash:
                    return False
                a, b = a.parent, b.parent
            return True
        if isinstance(other, tuple):
            return len(other) == self.depth and tuple(self) == other
        return NotImplemented

    def __ne__(self, other) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __lt__(self, other):
        return tuple(self) < tuple(other)

    def __le__(self, other):
        return tuple(self) <= tuple(other)

    def __gt__(self, other):
        return tuple(self) > tuple(other)

    def __ge__(self, other):
        return tuple(self) >= tuple(other)

    def __repr__(self) -> str:
        return f"DeepPath({self.depth} components, ...{self.name!r})"


_JOINED: dict[int, tuple[DeepPath, bytes]] = {}  # id(node) -> (node, b"/".join(node))
_JOINED_MAX = 64


def join(path) -> bytes:
    """``b"/".join(path)``. A DeepPath reuses the bytes of an ancestor joined recently (a
    depth-first walk joins each level's parent just before it), so it costs one copy in C, not a
    walk of every component in Python."""
    if type(path) is tuple:
        return b"/".join(path)
    names = []
    node = path
    base = None
    while type(node) is DeepPath:
        hit = _JOINED.get(id(node))
        if hit is not None and hit[0] is node:
            base = hit[1]
            break
        names.append(node.name)
        node = node.parent
    if base is None:
        base = b"/".join(node)
    names.append(base)
    names.reverse()
    out = b"/".join(names)
    if len(_JOINED) >= _JOINED_MAX:
        del _JOINED[next(iter(_JOINED))]
    _JOINED[id(path)] = (path, out)
    return out


def child(path, name: bytes):
    """``path + (name,)``: a tuple while short, a :class:`DeepPath` sharing ``path`` past DEEP."""
    if type(path) is tuple and len(path) < DEEP:
        return path + (name,)
    return DeepPath(path, name)


def deep(parts: tuple):
    """A long tuple as the DeepPath chain of the same components (short ones unchanged)."""
    if len(parts) <= DEEP:
        return parts
    node = parts[:DEEP]
    for name in parts[DEEP:]:
        node = DeepPath(node, name)
    return node


def _check() -> bool:
    """Whether the carried hash is this interpreter's tuple hash (else: hash a tuple copy)."""
    sample = tuple(bytes([i % 251]) * (i % 3 + 1) for i in range(DEEP + 5))
    node = deep(sample)
    return _final(node._accumulated(), node.depth) == hash(sample)


_EXACT = True
_EXACT = _check()
