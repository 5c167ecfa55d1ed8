"""All engines at once: list every container found, pick one by name or id prefix."""
from __future__ import annotations

import importlib
import os
from typing import Iterator

from .. import storetext
from ..rootfs import Root
from .base import Broken, Container, StoreError

ENGINES = ("docker", "podman", "containerd")


class LookupError_(Exception):
    """No such container, or a name that several containers answer to."""


def _module(engine: str):
    return importlib.import_module(f".{engine}", __package__)


def find_all(root: Root, engine: str | None = None,
             data_root: str | None = None) -> Iterator[Container | Broken]:
    """Every container of every engine (or of ``engine``) under ``root``; broken entries too."""
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if data_root is not None and engine is None:
        raise ValueError("--data-root needs --engine (whose data root it is)")
    for name in (engine,) if engine else ENGINES:
        try:
            yield from _module(name).find(root, data_root=data_root)
        except StoreError as exc:
            yield Broken(engine=name, where=str(exc).split(":", 1)[0], why=str(exc))


def _same_bytes(name: str, names: list[str]) -> bool:
    """A store name that is no valid text (storetext.py) answers to the bytes it stands for, as
    a shell passes them (``$'/bad\\xed\\xa0\\x80name'`` for ``"/bad\\ud800name"``)."""
    if not any(storetext.has_surrogates(n) for n in names):
        return False
    wanted = os.fsencode(name)
    return any(storetext.exact_bytes(n.lstrip("/")) == wanted for n in names)


def select(query: str, candidates: list[Container]) -> Container:
    """Full id, unique id prefix, or name (Docker's ``/name`` accepted); ambiguity is an error."""
    name = query.lstrip("/")
    exact = [c for c in candidates if c.id == query or name in c.names or _same_bytes(name, c.names)]
    if len(exact) == 1:
        return exact[0]
    matches = exact or [c for c in candidates if c.id.startswith(query)]
    if not matches:
        raise LookupError_(f"{query}: no such container (looked in: "
                           f"{', '.join(sorted({c.engine for c in candidates})) or 'no engine store found'})")
    if len(matches) > 1:
        listed = "; ".join(f"{c.engine} {c.id[:12]} {','.join(c.names)}" for c in matches)
        raise LookupError_(f"{query}: ambiguous, matches {listed} (use --engine or a longer id)")
    return matches[0]
