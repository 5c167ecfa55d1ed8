"""The one record type every writer consumes.

A scan yields :class:`Change` records: one per added, modified or deleted path, and one per
anomaly (a marker that means nothing, an entry that could not be read). The JSON field names
produced by :meth:`Change.to_dict` are a public contract: add fields, never rename them.
"""
from __future__ import annotations

import base64
import datetime as _dt
from dataclasses import dataclass, field

ADDED = "added"
MODIFIED = "modified"
DELETED = "deleted"
ANOMALY = "anomaly"
CHANGE_KINDS = (ADDED, MODIFIED, DELETED, ANOMALY)

#: The order in which ``what`` lists differences.
WHAT_ORDER = ("type", "content", "target", "mode", "owner", "mtime", "xattrs")

#: What a modified record says of its shadowed original (in every format, for modified records).
LOWER_FIELDS = ("lower_size", "lower_mode", "lower_uid", "lower_gid", "lower_mtime", "lower_target")

#: Why a path counts as deleted.
VIA_KINDS = ("whiteout", "xwhiteout", "wh-file", "opaque", "parent", "type-change")


@dataclass(frozen=True)
class LayerRef:
    """Names a lower layer: its index (0 = topmost lower), where it lives, and, when an engine
    reader found it, the engine's names for it (layer id, diff id, image layer index, role)."""

    index: int
    dir: str
    id: str | None = None
    diff_id: str | None = None
    image_index: int | None = None
    role: str | None = None  # "init" or "image" when known

    def to_dict(self) -> dict:
        out = {"index": self.index, "dir": self.dir}
        for key in ("id", "diff_id", "image_index", "role"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass
class Change:
    """One finding. ``path`` is the raw path inside the container (bytes, starts with ``/``)."""

    path: bytes
    change: str
    type: str | None = None
    what: tuple[str, ...] = ()
    via: str | None = None
    lower_path: bytes | None = None
    lower_layer: LayerRef | None = None
    upper_path: bytes | None = None
    size: int | None = None
    mode: int | None = None  # permission bits (st_mode & 0o7777)
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int | None = None
    target: bytes | None = None
    renamed_from: bytes | None = None
    metacopy: bool = False
    anomaly: str | None = None
    detail: str | None = None
    # A modified record's shadowed original, as it was (the fields above are what it is now):
    # set for modified records only; written as lower_size, lower_mode, ... (LOWER_FIELDS).
    lower_size: int | None = None
    lower_mode: int | None = None
    lower_uid: int | None = None
    lower_gid: int | None = None
    lower_mtime_ns: int | None = None
    lower_target: bytes | None = None
    extra: dict = field(default_factory=dict)
    # The entries behind the record, for enrichment (hashes, file types, timelines, recovery);
    # never serialised. ``entry``/``data``: what the merged view shows and where its bytes are
    # (they differ for a metacopy file); ``shadow``/``shadow_data``: the same for the base view.
    entry: object = field(default=None, repr=False, compare=False)
    data: object = field(default=None, repr=False, compare=False)
    shadow: object = field(default=None, repr=False, compare=False)
    shadow_data: object = field(default=None, repr=False, compare=False)

    # -- rendering helpers shared by all writers ------------------------------------------
    @property
    def path_text(self) -> str:
        return escape_bytes(self.path)

    def to_dict(self) -> dict:
        """The stable JSON/JSONL form (also the column source for CSV and table)."""
        out: dict = {
            "path": escape_bytes(self.path),
            "change": self.change,
            "type": self.type,
            "what": list(self.what),
            "via": self.via,
            "lower_path": escape_bytes(self.lower_path) if self.lower_path is not None else None,
            "lower_layer": self.lower_layer.to_dict() if self.lower_layer else None,
            "upper_path": escape_bytes(self.upper_path) if self.upper_path is not None else None,
            "size": self.size,
            "mode": format_mode(self.mode),
            "uid": self.uid,
            "gid": self.gid,
            "mtime": format_ns(self.mtime_ns),
            "target": escape_bytes(self.target) if self.target is not None else None,
            "renamed_from": escape_bytes(self.renamed_from) if self.renamed_from is not None else None,
            "metacopy": self.metacopy,
        }
        if self.change == MODIFIED:
            out.update(lower_size=self.lower_size, lower_mode=format_mode(self.lower_mode),
                       lower_uid=self.lower_uid, lower_gid=self.lower_gid,
                       lower_mtime=format_ns(self.lower_mtime_ns),
                       lower_target=escape_bytes(self.lower_target)
                       if self.lower_target is not None else None)
        if not is_utf8(self.path):
            out["path_b64"] = base64.b64encode(self.path).decode("ascii")
        for key, raw in (("lower_path", self.lower_path), ("target", self.target),
                         ("renamed_from", self.renamed_from), ("lower_target", self.lower_target)):
            if raw is not None and not is_utf8(raw):
                out[key + "_b64"] = base64.b64encode(raw).decode("ascii")
        if self.change == ANOMALY:
            out["anomaly"] = self.anomaly
            out["detail"] = self.detail
        out.update(self.extra)
        return out


def what_text(record: dict, sep: str = ", ") -> str:
    """What changed, before and after, for people: ``mode 0755 -> 4755, owner 0:0 -> 1000:1000,
    content (size 5 -> 10)``. ``record`` is a :meth:`Change.to_dict`; where the original's
    fields are unknown (not a modified record, or one built without them) the bare ``what``
    names stay."""
    what = record.get("what") or ()
    if record.get("change") != MODIFIED:
        return sep.join(what)
    out = []
    for item in what:
        if item == "mode" and record.get("lower_mode") is not None:
            out.append(f"mode {record['lower_mode']} -> {record.get('mode')}")
        elif item == "owner" and record.get("lower_uid") is not None:
            out.append(f"owner {record['lower_uid']}:{record.get('lower_gid')} -> "
                       f"{record.get('uid')}:{record.get('gid')}")
        elif item == "target" and record.get("lower_target") is not None:
            out.append(f"target {record['lower_target']} -> {record.get('target')}")
        elif item == "content" and record.get("lower_size") is not None \
                and record["lower_size"] != record.get("size"):
            out.append(f"content (size {record['lower_size']} -> {record.get('size')})")
        else:
            out.append(item)
    return sep.join(out)


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def escape_bytes(raw: bytes) -> str:
    r"""Decode a name as UTF-8, writing each byte that is not valid UTF-8 as ``\xNN``.

    A literal backslash is left alone; ``path_b64`` carries the exact bytes where needed.
    """
    return raw.decode("utf-8", errors="backslashreplace")


def format_mode(mode: int | None) -> str | None:
    return None if mode is None else format(mode & 0o7777, "04o")


def format_ns(ns: int | None) -> str | None:
    """ISO 8601 UTC with nanoseconds: ``2026-11-28T01:57:14.123456789Z``."""
    if ns is None:
        return None
    secs, frac = divmod(ns, 1_000_000_000)
    try:
        stamp = _dt.datetime.fromtimestamp(secs, tz=_dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"@{ns}ns"
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"
