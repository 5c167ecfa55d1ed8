"""Re-rooting: resolve paths found inside evidence under ``--root``, never on the analyst's host.

A seized host's files name absolute paths (``/var/lib/docker/overlay2/...``), relative links
(``l/ABC -> ../<id>/diff``) and symlinks that may point anywhere. :class:`Root` resolves every
such path component by component *inside* the root: an absolute symlink target restarts at the
root, ``..`` never climbs above it (refused, not clamped: a path that tries is reported), and
nothing is ever opened outside. With ``Root("/")`` the same code serves a live host.
"""
from __future__ import annotations

import os
import stat

MAX_LINKS = 40  # as the kernel's MAXSYMLINKS


class RootEscape(Exception):
    """A path (or a link met on the way) tried to leave the evidence root."""


class Root:
    def __init__(self, root: str = "/"):
        self.root = os.path.abspath(root)
        self.live = self.root == "/"

    def __repr__(self) -> str:
        return f"Root({self.root!r})"

    def host_path(self, inside: str) -> str:
        """The host path of an already-resolved path inside the root (no link resolution)."""
        inside = "/" + inside.lstrip("/")
        return inside if self.live else self.root + inside if inside != "/" else self.root

    def inside(self, host: str) -> str:
        """The evidence path of a host path under the root (for messages)."""
        if self.live:
            return host
        rel = os.path.relpath(host, self.root)
        return "/" if rel == "." else "/" + rel

    def resolve(self, path: str, base: str = "/", follow_last: bool = True) -> str:
        """Resolve ``path`` (absolute, or relative to ``base``, both inside the root) to a host path.

        Symlinks met on the way are read and followed *inside* the root. Raises
        :class:`RootEscape` when ``..`` or a link would leave the root, and ``OSError`` for a
        loop or a missing component.
        """
        if not path.startswith("/"):
            path = base.rstrip("/") + "/" + path
        todo = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        links = 0
        while todo:
            name = todo.pop(0)
            if name == "..":
                if not done:
                    raise RootEscape(f"{path}: climbs above the root {self.root}")
                done.pop()
                continue
            candidate = self.host_path("/".join(done + [name]))
            try:
                st = os.lstat(candidate)
            except FileNotFoundError:
                done.append(name)
                done.extend(p for p in todo if p not in ("", "."))
                if ".." in todo:
                    raise RootEscape(f"{path}: '..' after a missing component") from None
                return self.host_path("/".join(done))
            if stat.S_ISLNK(st.st_mode) and (todo or follow_last):
                links += 1
                if links > MAX_LINKS:
                    raise OSError(40, f"{path}: too many levels of symbolic links")
                target = os.readlink(candidate)
                parts = [p for p in target.split("/") if p not in ("", ".")]
                if target.startswith("/"):
                    done = []
                todo = parts + todo
                continue
            done.append(name)
        return self.host_path("/".join(done))
