"""All engines at once: list every container found, pick one by name or id prefix."""
from __future__ import annotations

import difflib
import importlib
import os
from typing import Iterator

from ovforensics.evidence import storetext
from ovforensics.evidence.rootfs import Root
from ovforensics.stores.base import Broken, Container, StoreError

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
            where, _, why = str(exc).partition(": ")
            yield Broken(engine=name, where=where, why=why or where)


def _same_bytes(name: str, names: list[str]) -> bool:
    """A store name that is no valid text (storetext.py) answers to the bytes it stands for, as
    a shell passes them (``$'/bad\\xed\\xa0\\x80name'`` for ``"/bad\\ud800name"``)."""
    if not any(storetext.has_surrogates(n) for n in names):
        return False
    wanted = os.fsencode(name)
    return any(storetext.exact_bytes(n.lstrip("/")) == wanted for n in names)


def _label(c: Container) -> str:
    where = f" namespace {c.namespace}" if c.namespace else ""
    pod = f" pod {c.pod_namespace + '/' if c.pod_namespace else ''}{c.pod}" if c.pod else ""
    return f"{c.engine}{where}{pod} {c.id[:12]} {','.join(c.names)}"


def _hint(matches: list[Container]) -> str:
    """What tells these apart: the engine, the containerd namespace, the pod, a longer id."""
    hints = []
    if len({c.engine for c in matches}) > 1:
        hints.append("--engine")
    if len({c.namespace for c in matches}) > 1:
        hints.append("--namespace")
    if len({(c.pod_namespace, c.pod) for c in matches}) > 1:
        hints.append("POD/CONTAINER")
    return " or ".join(hints + ["a longer id"])


def _pod_path(query: str) -> tuple[str | None, str, str] | None:
    """``POD/CONTAINER`` or ``K8S_NAMESPACE/POD/CONTAINER`` as (namespace, pod, container)."""
    parts = query.split("/")
    if query.startswith("/") or len(parts) not in (2, 3) or not all(parts):
        return None
    return (None, *parts) if len(parts) == 2 else tuple(parts)  # type: ignore[return-value]


def select(query: str, candidates: list[Container], namespace: str | None = None) -> Container:
    """Full id, unique id prefix, or name (Docker's ``/name`` accepted); for Kubernetes,
    ``POD/CONTAINER`` or ``K8S_NAMESPACE/POD/CONTAINER``. ``namespace`` keeps only that
    containerd namespace's containers. A pod's name alone, no match, or several: an error."""
    if namespace is not None:
        candidates = [c for c in candidates if c.namespace == namespace]
    if not query:
        raise LookupError_("the container name is empty: give a name, an id or an id prefix")
    name = query.lstrip("/")
    pod_path = _pod_path(query)
    if pod_path is not None:
        pod_ns, pod, cname = pod_path
        in_pod = [c for c in candidates if c.pod == pod and c.role != "sandbox"
                  and (pod_ns is None or c.pod_namespace == pod_ns) and c.container_name == cname]
        if len(in_pod) == 1:
            return in_pod[0]
        if len(in_pod) > 1:
            listed = "; ".join(_label(c) for c in in_pod)
            raise LookupError_(f"{query}: ambiguous, matches {listed} (use {_hint(in_pod)})")
    exact = [c for c in candidates if c.id == query or name in c.names or _same_bytes(name, c.names)]
    if len(exact) == 1:
        return exact[0]
    matches = exact or [c for c in candidates if c.id.startswith(query)]
    if not matches:
        pods = [c for c in candidates if c.pod == name]
        if pods:
            members = sorted(f"{c.pod_namespace + '/' if c.pod_namespace else ''}{c.pod}/{c.container_name}"
                             for c in pods if c.role != "sandbox" and c.container_name)
            sandbox = [c.id[:12] for c in pods if c.role == "sandbox"]
            raise LookupError_(f"{query}: a pod, not a container: name one of its containers "
                               f"({', '.join(members) or 'none'})"
                               + (f"; its sandbox is {', '.join(sandbox)}" if sandbox else ""))
        where = ", ".join(sorted({c.engine for c in candidates})) or "no engine store found"
        if namespace is not None:
            where += f"; containerd namespace {namespace} only"
        near = difflib.get_close_matches(name, [n.lstrip("/") for c in candidates for n in c.names],
                                         n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise LookupError_(f"{query}: no such container (looked in: {where}){hint}")
    if len(matches) > 1:
        listed = "; ".join(_label(c) for c in matches)
        raise LookupError_(f"{query}: ambiguous, matches {listed} (use {_hint(matches)})")
    return matches[0]


#: ``containers --filter KEY=VALUE`` keys: the field each one tests
FILTER_KEYS = ("engine", "state", "name", "image", "namespace", "pod", "pod_namespace", "role")


def parse_filters(values: list[str]) -> dict[str, set[str]]:
    """``KEY=VALUE`` filters (as ``docker ps --filter``): the same key twice is either value,
    different keys must all hold. An unknown key or a missing ``=`` is a ValueError."""
    out: dict[str, set[str]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or key not in FILTER_KEYS:
            raise ValueError(f"--filter: expected KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}, "
                             f"got {item!r}")
        out.setdefault(key, set()).add(value)
    return out


def matches(c: Container, filters: dict[str, set[str]]) -> bool:
    """Does a container pass every filter? ``name`` is a part of any of its names; the others
    the whole value (``image`` its name or its id)."""
    for key, wanted in filters.items():
        if key == "name":
            ok = any(w in n for w in wanted for n in c.names)
        elif key == "image":
            ok = bool({c.image, c.image_id} & wanted)
        else:
            ok = getattr(c, key) in wanted
        if not ok:
            return False
    return True
