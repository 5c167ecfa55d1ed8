"""What a command reads, opened as a library call: a container found offline in the engines'
files, or layers named by path. The CLI's commands only dress this (as sqlite-utils' CLI dresses
its ``Database``); a Python user does the same in two lines::

    target = ovforensics.open_target("web-1", root="/mnt/evidence")
    for change in target.records(only=["deleted"]):
        ...
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from ovforensics.evidence.rootfs import RootError, open_root
from ovforensics.layers.entry import Layer
from ovforensics.layers.upperform import UpperError, check_upper
from ovforensics.layers.stack import container_layers, open_layer
from ovforensics.records.record import Change


class TargetError(ValueError):
    """What was named cannot be opened: the message names the argument at fault."""


@dataclass
class Target:
    """A container (``container`` set) or a stack named by path (``upper`` and ``lowers``,
    topmost lower first). ``evidence``: directories no output may be written into."""

    container: object | None = None
    upper: str | None = None
    lowers: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    #: told one line per note (e.g. which marker rules ``--whiteouts auto`` chose for a layer)
    on_note: Callable[[str], None] | None = None
    #: told each of :attr:`warnings` once the report is complete (a run that fails says only why)
    on_warning: Callable[[str], None] | None = None
    #: what looked wrong in what was named (an upper with no lower, a layer directory given
    #: for its diff/): the report goes on, the caller shows these
    warnings: list[str] = field(default_factory=list)

    def records(self, whiteouts: str = "auto", xattr_ns: str = "auto", run=None,
                **options) -> Iterator[Change]:
        """The scan's records (:func:`ovforensics.scan`'s options); ``run`` a run record."""
        from ovforensics.api import scan, scan_container

        if self.container is not None:
            if run is not None:
                run.add_store(self.container)
            if xattr_ns != "auto":
                options["xattr_ns"] = xattr_ns
            return scan_container(self.container, whiteouts=whiteouts, run=run, **options)
        layers = self.layers(whiteouts)
        records = scan(layers[0], layers[1:], whiteouts=whiteouts, xattr_ns=xattr_ns, run=run,
                       **options)
        return self._noted(records, layers)

    @property
    def diff_hides(self) -> tuple[str, ...]:
        """Paths the engine's own diff leaves out (``-f docker`` leaves them out too)."""
        return tuple(getattr(self.container, "diff_hides", ()) or ())

    def write(self, fmt: str, stream, whiteouts: str = "auto", xattr_ns: str = "auto",
              **options) -> dict:
        """The report written to ``stream`` (:func:`ovforensics.write_scan`: the compiled
        differ where it applies); the counts per change kind."""
        from ovforensics.api import write_scan, write_scan_container

        if self.container is not None:
            if xattr_ns != "auto":
                options["xattr_ns"] = xattr_ns
            return write_scan_container(self.container, fmt, stream, whiteouts=whiteouts,
                                        **options)
        layers = self.layers(whiteouts)
        counts = write_scan(fmt, stream, layers[0], layers[1:], whiteouts=whiteouts,
                            xattr_ns=xattr_ns, **options)
        self._notes(layers)
        return counts

    def _noted(self, records, layers):
        """The records, then a note for each layer whose rules ``--whiteouts auto`` chose from
        its markers (known once the scan has read them)."""
        yield from records
        self._notes(layers)

    def _notes(self, layers) -> None:
        if self.on_warning is not None:
            for warning in self.warnings:
                self.on_warning(warning)
        for layer in layers:
            if getattr(layer, "rules_auto", None) and self.on_note is not None:
                self.on_note(f"{layer.label}: {layer.rules_auto}")

    def layers(self, whiteouts: str = "auto") -> list[Layer]:
        """The stack as opened layers, upper first (a container's carry the engine's ids)."""
        if self.container is not None:
            return container_layers(self.container, whiteouts)
        return [open_layer(self.upper, -1, whiteouts),
                *(open_layer(spec, i, whiteouts) for i, spec in enumerate(self.lowers))]

    def recover(self, *, to: str, whiteouts: str = "auto", xattr_ns: str = "auto", **options):
        """:func:`ovforensics.recovery.recover.recover` of this stack's originals into ``to``."""
        from ovforensics.recovery import recover, recover_container

        if self.container is not None:
            return recover_container(self.container, to=to, evidence=self.evidence,
                                     whiteouts=None if whiteouts == "auto" else whiteouts,
                                     xattr_ns=None if xattr_ns == "auto" else xattr_ns, **options)
        return recover(self.upper, self.lowers, to=to, evidence=self.evidence,
                       whiteouts=whiteouts, xattr_ns=xattr_ns, **options)

    def describe(self) -> dict:
        """What was read, for reports: the container's engine, id, names, image and layers."""
        c = self.container
        if c is None:
            return {"engine": None, "upper": self.upper, "lowers": list(self.lowers)}
        return {"engine": c.engine, "id": c.id, "names": list(c.names), "image": c.image,
                "upper": c.upper.dir, "lowers": [info.dir for info in c.lowers]}


def open_target(container: str | None = None, *, upper: str | None = None,
                lowers: Iterable[str] = (), root: str = "/", engine: str | None = None,
                data_root: str | None = None, namespace: str | None = None) -> Target:
    """A container by name, id, id prefix or ``POD/CONTAINER`` (under the evidence root
    ``root``), or the layers ``upper`` over ``lowers``. Raises :class:`TargetError` (or
    :class:`~ovforensics.layers.entry.LayerError` later, when a layer cannot be read)."""
    from ovforensics.api import find_container
    from ovforensics.stores.registry import LookupError_

    lowers = list(lowers)
    if container is not None:
        if upper or lowers:
            raise TargetError("name a container or --upper/--lowers, not both")
        try:
            open_root(root)  # a directory, or a disk image read without mounting it
        except RootError as exc:
            raise TargetError(str(exc)) from None
        try:
            found = find_container(container, root=root, engine=engine, data_root=data_root,
                                   namespace=namespace)
        except (LookupError_, ValueError) as exc:
            raise TargetError(str(exc)) from None
        return Target(container=found, evidence=[root] if root != "/" else [found.store])
    if upper is None:
        raise TargetError("name a container, or give --upper (and --lowers/--lower)")
    if any(not item for item in lowers):
        raise TargetError("--lowers: empty layer in the list (data-only layers after '::' are "
                          "not supported, and an empty --lower is an unset variable?)")
    try:
        read, warnings = check_upper(upper, bool(lowers))
    except UpperError as exc:
        raise TargetError(str(exc)) from None
    return Target(upper=read, lowers=lowers, evidence=[upper, read, *lowers], warnings=warnings)
