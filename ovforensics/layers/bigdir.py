"""Directories too big to hold: a sorted list of names, each entry stat-ed when it is asked for.

A directory's listing is normally held whole while the scan is inside it: ~1.1 KB an entry
(the stat result, the entry, the listing and its interpreted view, the walk's name set). A
directory of a million entries, which anyone who can write to a layer can make, would take
over a gigabyte. Past :data:`BIG` entries a :class:`DirLayer` keeps only the names, sorted
(~60 bytes each), and an ``O_NOATIME`` fd of the directory; an entry is ``fstatat``-ed relative
to that fd when a lookup asks for its name (a few recent ones are kept, as the merged and the
base view ask for the same name one after the other). The differ walks such a directory by
merging the sorted name lists of its layers (:func:`merged_names`) instead of building a set.
"""
from __future__ import annotations

import bisect
import heapq
import os
import stat
from typing import Iterable, Iterator

from ovforensics.layers.deeppath import child
from ovforensics.layers.entry import KIND_BY_FMT, DiskEntry, Entry, Path

#: Entries past which a directory is listed by name only. ``OVF_BIG_DIR`` overrides it, so the
#: kernel-oracle tests can run every directory through this path.
BIG = int(os.environ.get("OVF_BIG_DIR", "20000"))
RECENT = 256  # entries kept after their lookup


class NameListing:
    """A directory of a :class:`~ovforensics.layers.layer.DirLayer`, as a read-only mapping from
    name to :class:`Entry` that stats an entry only when asked for it."""

    lazy = True

    def __init__(self, layer, path: Path, fd: int, names: list[bytes]):
        self.layer = layer
        self.path = path
        self.names = sorted(names)
        self._fd = fd
        self._recent: dict[bytes, Entry | None] = {}

    @classmethod
    def take_over(cls, layer, path: Path, fd: int, seen: Iterable[bytes], current: os.DirEntry,
                  rest: Iterator[os.DirEntry]) -> "NameListing":
        """Finish a listing that grew past :data:`BIG`: the names already seen, the entry in
        hand and the rest of the ``scandir`` iterator (names only, nothing more is stat-ed);
        ``fd`` is dup-ed."""
        names = list(seen)
        names.append(os.fsencode(current.name))
        names.extend(os.fsencode(dent.name) for dent in rest)
        if getattr(layer, "guess_rules", False):
            layer.check_rules(names)
        return cls(layer, path, os.dup(fd), names)

    # -- the mapping --------------------------------------------------------------------------
    def __contains__(self, name: bytes) -> bool:
        i = bisect.bisect_left(self.names, name)
        return i < len(self.names) and self.names[i] == name

    def get(self, name: bytes, default=None) -> Entry | None:
        try:
            entry = self._recent[name]
        except KeyError:
            entry = self._recent[name] = self._stat(name) if name in self else None
            if len(self._recent) > RECENT:
                del self._recent[next(iter(self._recent))]
        return default if entry is None else entry

    def __getitem__(self, name: bytes) -> Entry:
        entry = self.get(name)
        if entry is None:
            raise KeyError(name)
        return entry

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def keys(self) -> Iterator[bytes]:
        return iter(self.names)

    def items(self) -> Iterator[tuple[bytes, Entry]]:
        for name in self.names:
            entry = self.get(name)
            if entry is not None:
                yield name, entry

    def values(self) -> Iterator[Entry]:
        return (entry for _, entry in self.items())

    def prefixed(self, prefix: bytes) -> list[bytes]:
        """The names that start with ``prefix``, in order (a slice of the sorted list)."""
        lo = bisect.bisect_left(self.names, prefix)
        hi = lo
        while hi < len(self.names) and self.names[hi].startswith(prefix):
            hi += 1
        return self.names[lo:hi]

    # -- reading ------------------------------------------------------------------------------
    def _stat(self, name: bytes) -> Entry | None:
        try:
            st = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
        except OSError as exc:  # vanished or unreadable since the listing: record and go on
            self.layer.errors.append((self.layer.physical(child(self.path, name)),
                                      exc.strerror or str(exc)))
            return None
        kind = KIND_BY_FMT.get(stat.S_IFMT(st.st_mode), "unknown")
        return DiskEntry(self.layer, child(self.path, name), kind, st)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        self.close()


def merged_names(sorted_lists: Iterable[Iterable[bytes]]) -> Iterator[bytes]:
    """The union of sorted name lists, in order, each name once, without building a set."""
    last = None
    for name in heapq.merge(*sorted_lists):
        if name != last:
            yield name
            last = name
