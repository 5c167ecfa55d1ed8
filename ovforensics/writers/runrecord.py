"""The run record: what a report was made from, by what, when, and what could not be read.

It travels with a report (JSON/JSONL: the first record, ``{"meta": {...}}``; other formats: a
side file ``FILE.meta.json``) so a case file shows how each result came about.
"""
from __future__ import annotations

import datetime as _dt
import os
import socket
import sys
from typing import Iterable, Iterator

from ovforensics.version import __version__
from ovforensics.records.record import ANOMALY, CHANGE_KINDS, Change, escape_bytes


def _image(path: str) -> dict | None:
    """The disk image a store was read out of (``--root disk.qcow2``): its file, format,
    partition and filesystem; None for a store on a directory."""
    from ovforensics.evidence import fs

    found = fs.image_of(path)
    if found is None:
        return None
    from ovforensics.evidence.diskimage import describe

    image_fs, _inside = found
    prefix = os.fsdecode(path)[:len(os.fsdecode(path)) - len(_inside.rstrip("/") or "")]
    out = {"path": prefix.rstrip("/").removesuffix(fs.SEP), **describe(image_fs)}
    try:
        st = os.stat(out["path"])
        out.update(size=st.st_size, mtime=_dt.datetime.fromtimestamp(
            st.st_mtime, _dt.timezone.utc).isoformat())
    except OSError:
        pass
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


class RunRecord:
    def __init__(self, argv: list[str] | None = None):
        self.argv = list(sys.argv if argv is None else argv)
        self.started = _now()
        self.ended: str | None = None
        self.layers: list[dict] = []
        self._layers: list = []  # the layer objects: rules chosen by auto are known at the end
        self.stores: list[dict] = []
        self.counts = {kind: 0 for kind in CHANGE_KINDS}
        self.unread: list[dict] = []

    def add_layers(self, layers) -> None:
        for position, layer in enumerate(layers):
            info = getattr(layer, "info", None)
            row = {"position": position, "role": "upper" if position == 0 else "lower",
                   "dir": layer.label, "rules": layer.rules}
            if position:
                row["index"] = position - 1
            if info is not None:
                row.update({k: v for k, v in (("role", info.role), ("id", info.id),
                                              ("diff_id", info.diff_id)) if v is not None})
            self.layers.append(row)
            self._layers.append(layer)

    def add_store(self, container) -> None:
        row = {"engine": container.engine, "store": container.store,
               "container": container.id, "names": list(container.names),
               "namespace": container.namespace}
        image = _image(container.store)
        if image is not None:
            row["image"] = image
        self.stores.append(row)

    def watch(self, records: Iterable[Change]) -> Iterator[Change]:
        """Pass records through, counting them and noting every entry that could not be read."""
        for record in records:
            self.counts[record.change] = self.counts.get(record.change, 0) + 1
            if record.change == ANOMALY and record.anomaly in ("unreadable", "vanished"):
                self.unread.append({"path": escape_bytes(record.path), "why": record.detail})
            for why in record.extra.get("read_errors", ()):
                self.unread.append({"path": escape_bytes(record.path), "why": why})
            yield record
        self.ended = _now()

    def to_dict(self) -> dict:
        for row, layer in zip(self.layers, self._layers):
            row["rules"] = layer.rules
            if getattr(layer, "rules_auto", None):
                row["rules_auto"] = layer.rules_auto  # why --whiteouts auto chose these rules
        return {
            "tool": "ovforensics", "version": __version__, "argv": self.argv,
            "cwd": os.getcwd(), "host": socket.gethostname(), "uid": os.geteuid(),
            "started": self.started, "ended": self.ended or _now(), "times": "UTC",
            "stores": self.stores, "layers": self.layers, "counts": self.counts,
            "unread": self.unread,
        }
