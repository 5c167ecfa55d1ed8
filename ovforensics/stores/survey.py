"""Where each engine's store was looked for, and what was found there: for the analyst when no
container comes back (``containers`` lists none, ``diff NAME`` finds none), so that "no store
here", "a store this user may not read" and "the wrong --root" are told apart, one line each.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from ovforensics.evidence import fs
from ovforensics.evidence.rootfs import Root, RootEscape


@dataclass
class Seen:
    engine: str
    path: str  # the store's path inside the evidence
    state: str  # "found", "absent", "unreadable"
    why: str | None = None

    def line(self) -> str:
        where = f"{self.engine}: {self.path}"
        if self.state == "found":
            return f"{where}: a store is there"
        if self.state == "absent":
            return f"{where}: not there"
        return f"{where}: cannot be read: {self.why}"


def _places(root: Root, engine: str, data_root: str | None) -> list[str]:
    if data_root is not None:
        return ["/" + data_root.strip("/")]
    if engine == "docker":
        from ovforensics.stores.docker import _pick_data_root

        return [_pick_data_root(root, None, [])]
    if engine == "podman":
        from ovforensics.stores.podman import _Spec, _store_specs

        return list(dict.fromkeys(s.path for s in _store_specs(root) if isinstance(s, _Spec)))
    from ovforensics.stores.containerd import system_data_root

    return [system_data_root(root)[0]]


def _look(root: Root, engine: str, inside: str) -> Seen:
    try:
        host = root.resolve(inside)
    except (RootEscape, OSError, ValueError) as exc:
        return Seen(engine, inside, "unreadable", str(getattr(exc, "strerror", None) or exc))
    if not fs.lexists(host):
        return Seen(engine, inside, "absent")
    try:
        fs.list_dir(host)
    except PermissionError:
        hint = "" if os.geteuid() == 0 else " (run as root: the stores are root's)"
        return Seen(engine, inside, "unreadable", f"permission denied{hint}")
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            return Seen(engine, inside, "unreadable", "not a directory")
        return Seen(engine, inside, "unreadable", exc.strerror or str(exc))
    return Seen(engine, inside, "found")


def survey(root: Root, engine: str | None = None, data_root: str | None = None) -> list[Seen]:
    """One :class:`Seen` per place an engine keeps a store (the configured or default data
    roots; Podman's rootless stores too), rootless ones only where they exist."""
    from ovforensics.stores.registry import ENGINES

    out = []
    for name in (engine,) if engine else ENGINES:
        try:
            places = _places(root, name, data_root)
        except Exception as exc:  # noqa: BLE001 - a config that cannot be read is said, not raised
            out.append(Seen(name, "?", "unreadable", f"{type(exc).__name__}: {exc}"))
            continue
        for i, inside in enumerate(places):
            seen = _look(root, name, inside)
            if i and seen.state == "absent":
                continue  # a user's rootless store that is not there: not worth a line
            out.append(seen)
    return out


def summary(seen: list[Seen]) -> str:
    """``docker /var/lib/docker: not there; podman ...`` for a one-line error."""
    return "; ".join(s.line() for s in seen) or "no engine"
