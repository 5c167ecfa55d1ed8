"""A named container path resolved as the merged view resolves it: symlinks among its parent
directories followed *inside the stack*, never out of it.

``/bin/ls`` where the image's ``/bin`` is a symlink to ``usr/bin`` is ``/usr/bin/ls``: a
relative target is read from the link's directory, an absolute one from the stack's root (the
container's ``/``, never the analyst's host), ``..`` stops at the root, and after
:data:`MAX_LINKS` links (the kernel's 40) the path is a loop. The last component is never
followed: a symlink named is recovered as a symlink.
"""
from __future__ import annotations

from ovforensics.layers.layer import Path
from ovforensics.records.record import escape_bytes

#: How many symlinks one path may pass through (the kernel's MAXSYMLINKS).
MAX_LINKS = 40


class LinkLoop(Exception):
    """More than :data:`MAX_LINKS` symlinks on the way: the kernel's ELOOP."""


def resolve_parents(view, parts: Path) -> tuple[Path, list[str]]:
    """``parts`` with every symlink among its parents followed in ``view`` (a
    :class:`~ovforensics.scanner.resolve.View`); and the links followed, as ``/bin -> usr/bin``
    texts. A component that does not exist ends the walk: the rest is kept as named."""
    done: list[bytes] = []
    todo = list(parts)
    links: list[str] = []
    frames = view.root_frames
    while todo:
        name = todo.pop(0)
        if name in (b"", b"."):
            continue
        if name == b"..":
            done = done[:-1]  # clamped at the root
            frames = _frames(view, done)
            continue
        found = view.lookup(frames, name) if frames else None
        if found is not None and found.top.kind == "symlink" and todo:
            if len(links) >= MAX_LINKS:
                raise LinkLoop(f"/{escape_bytes(b'/'.join(parts))}: more than {MAX_LINKS} "
                               "symbolic links on the way (a loop?)")
            target = found.top.target or b""
            links.append(f"/{escape_bytes(b'/'.join([*done, name]))} -> {escape_bytes(target)}")
            if target.startswith(b"/"):
                done = []  # the stack's root, not the host's
            todo = [p for p in target.split(b"/") if p] + todo
            frames = _frames(view, done)
            continue
        done.append(name)
        frames = found.frames if found is not None and found.top.is_dir else []
    return tuple(done), links


def _frames(view, parts: list[bytes]) -> list:
    """The frames of the directory ``parts`` (no symlink among them: already resolved)."""
    frames = view.root_frames
    for name in parts:
        found = view.lookup(frames, name) if frames else None
        frames = found.frames if found is not None and found.top.is_dir else []
    return frames
