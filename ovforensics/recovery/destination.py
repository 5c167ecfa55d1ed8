"""The destination of a recovery, written safely: never inside the evidence (by path and by
device/inode), nothing in it overwritten or followed (``O_EXCL | O_NOFOLLOW`` relative to
directory fds)."""
from __future__ import annotations

import errno
import os
import stat

from ovforensics.layers.layer import Path
from ovforensics.records.record import escape_bytes
from ovforensics.writers.output import OutputError


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


_FULL = (errno.ENOSPC, errno.EDQUOT)  # no blocks, no inodes, over quota


class RecoverError(OutputError):
    """The recovery cannot start: a bad path, a destination inside the evidence, a manifest
    already there. Nothing has been written when it is raised (but ``TO`` itself, if made)."""


# -- the destination ---------------------------------------------------------------------------
class _Blocked(Exception):
    """A directory of the destination path exists and is not a directory (or a link): skip."""


class _Dest:
    """Directories of ``TO``, opened relative to each other with ``O_NOFOLLOW``.

    Keeps the last directory chain (records come in path order, so most lookups share a long
    prefix with the previous one), but an fd only for every :data:`WAYPOINT`-th directory and
    the deepest one: a 10,000-deep path must not need 10,000 fds. Going back up to a directory
    whose fd was let go re-opens it from the waypoint above, one ``O_NOFOLLOW`` step at a time.
    """

    WAYPOINT = 64

    def __init__(self, to_fd: int):
        self.to_fd = to_fd
        self.chain: list[tuple[bytes, int | None]] = []
        self.made: set[Path] = set()  # directories this run created

    def close(self) -> None:
        for _, fd in self.chain:
            if fd is not None:
                os.close(fd)
        self.chain = []

    def dir(self, parts: Path, create: bool = True) -> int:
        keep = 0
        while (keep < len(self.chain) and keep < len(parts)
               and self.chain[keep][0] == parts[keep]):
            keep += 1
        for _, fd in self.chain[keep:]:
            if fd is not None:
                os.close(fd)
        del self.chain[keep:]
        if self.chain and self.chain[-1][1] is None:
            self._reopen_last(parts)
        for depth in range(keep, len(parts)):
            parent = self.chain[-1][1] if self.chain else self.to_fd
            name = parts[depth]
            if create:
                try:
                    os.mkdir(name, 0o755, dir_fd=parent)
                    self.made.add(parts[:depth + 1])
                except FileExistsError:
                    pass
            fd = self._open(name, parent, parts[:depth + 1])
            if self.chain and len(self.chain) % self.WAYPOINT:  # the parent is no waypoint
                os.close(parent)
                self.chain[-1] = (self.chain[-1][0], None)
            self.chain.append((name, fd))
        return self.chain[-1][1] if self.chain else self.to_fd

    def _open(self, name: bytes, parent: int, where: Path) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                raise _Blocked(f"{escape_bytes(b'/'.join(where))} in the destination "
                               f"{_what_is(name, parent)}; not followed") from None
            raise

    def _reopen_last(self, parts: Path) -> None:
        """Open the chain's deepest directory again, from the nearest waypoint above it."""
        last = len(self.chain) - 1
        base = last - 1
        while base >= 0 and self.chain[base][1] is None:
            base -= 1
        fd = self.chain[base][1] if base >= 0 else self.to_fd
        for depth in range(base + 1, last + 1):
            try:
                child = self._open(self.chain[depth][0], fd, parts[:depth + 1])
            finally:
                if depth > base + 1:
                    os.close(fd)  # an intermediate step, not the waypoint
            fd = child
        self.chain[last] = (self.chain[last][0], fd)


def _what_is(name: bytes, dir_fd: int) -> str:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return "is missing"
    return "is a symbolic link" if stat.S_ISLNK(st.st_mode) else "is not a directory"


def _identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _ancestry(where: str | bytes | int) -> list[tuple[int, int]]:
    """(dev, ino) of a directory and of each directory above it, up to ``/``, by ``..``.

    Walking ``..`` (not the path text) sees through symlinks and bind mounts."""
    flags = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
    fd = os.open(".", flags, dir_fd=where) if isinstance(where, int) else os.open(where, flags)
    out: list[tuple[int, int]] = []
    try:
        while True:
            ident = _identity(os.fstat(fd))
            if ident in out:
                return out
            out.append(ident)
            parent = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = parent
    finally:
        os.close(fd)


def _check_destination(to: str, where: str | int, evidence: list[str], itself: bool = True) -> None:
    """Refuse a destination inside the evidence, or one that holds the evidence. ``where`` is
    the destination's fd, or, before it exists (``itself`` false), the nearest directory above
    it that does (then only "inside" is checked: a new directory holds nothing)."""
    mine = _ancestry(where)
    for item in evidence:
        try:
            if not os.path.isdir(item):
                continue  # an archive: nothing can be written inside it
            theirs = _ancestry(item)
        except OSError:
            continue
        if theirs[0] in mine:
            raise RecoverError(f"{to}: refusing to write inside the evidence ({item})")
        if itself and mine[0] in theirs:
            raise RecoverError(f"{to}: refusing to write into a directory that holds the "
                               f"evidence ({item})")


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
