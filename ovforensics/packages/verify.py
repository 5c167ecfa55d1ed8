"""What each changed file means against the package databases of the stack's two views.

``package`` names the owner from the database of the view the path belongs to (the container's
for added files, the image's for modified and deleted ones); ``package_status`` says:

- ``intact``: the content matches the digest its manager recorded (mode, owner or mtime may
  still differ: ``what`` says so); ``altered``: it does not (a replaced binary, an edited
  conffile, a file that became a symlink);
- ``unowned``: no package owns the path; ``unknown``: no readable database owns it but one
  could not be read whole (e.g. an rpm Berkeley DB), so it may be owned;
- ``dir``: an owned directory (managers record no digest for directories); ``no-digest``: an
  owned non-directory the manager records no digest for (dpkg symlinks, rpm ghosts);
- deleted paths: ``missing`` (the container's database still lists the path: what ``dpkg
  --verify`` reports as missing), ``removed`` (it no longer does: the package was removed or
  upgraded away from it);
- ``no-database``: that view holds no package database at all; ``unreadable``: the file
  could not be read.

A modified file is checked against the container's database where that owns the path (an
upgrade inside the container is then ``intact``, and ``package_now`` names the new version),
else against the image's: the comparison ``dpkg --verify`` would make inside the container.
"""
from __future__ import annotations

import collections
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

from ovforensics.records.record import ADDED, ANOMALY, DELETED, MODIFIED, Change
from ovforensics.packages.db import Database, FileInfo

STATUSES = ("intact", "altered", "unowned", "unknown", "dir", "no-digest", "missing", "removed",
            "no-database", "unreadable")
COLUMNS = ("package", "package_status", "package_manager")


def load_view_databases(view) -> list[Database]:
    """Every package database the view holds (dpkg, rpm, apk)."""
    from ovforensics.packages import apk
    from ovforensics.packages import dpkg
    from ovforensics.packages import rpm
    from ovforensics.packages import viewfs

    aliases = viewfs.usr_aliases(view)
    out = []
    for reader in (dpkg, rpm, apk):
        db = reader.load(view, aliases)
        if db is not None:
            out.append(db)
    return out


def load_stack_databases(upper, lowers, ns) -> tuple[list[Database], list[Database]]:
    """(the image's databases: lowers alone, the container's: upper over lowers)."""
    from ovforensics.scanner.resolve import View

    base = View(list(lowers), ns)
    merged = View([upper, *lowers], ns, upper=upper)
    return load_view_databases(base), load_view_databases(merged)


class PackageChecker:
    def __init__(self, base: list[Database], merged: list[Database], workers: int | None = None):
        self.base = base
        self.merged = merged
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.tally: collections.Counter = collections.Counter()  # (manager, name, status) -> n
        self._lock = threading.Lock()

    # -- lookups ----------------------------------------------------------------------------
    @staticmethod
    def owners(dbs: list[Database], path: bytes) -> list[FileInfo]:
        out: list[FileInfo] = []
        for db in dbs:
            out.extend(db.files.get(path, ()))
        return out

    @staticmethod
    def _nobody(dbs: list[Database]) -> str:
        if not dbs:
            return "no-database"
        return "unknown" if any(not db.complete for db in dbs) else "unowned"

    def problems(self) -> Iterator[Change]:
        """One ``package-db`` anomaly per damaged or unread part of a database."""
        for view, dbs in (("image", self.base), ("container", self.merged)):
            for db in dbs:
                for problem in db.problems:
                    yield Change(path=db.source.encode(), change=ANOMALY, anomaly="package-db",
                                 detail=f"{view} view, {db.manager}: {problem}")

    # -- one record ---------------------------------------------------------------------------
    def check(self, record: Change) -> Change:
        if record.change == ANOMALY:
            return record
        path = record.path
        now = self.owners(self.merged, path)
        if record.change == ADDED:
            owners, dbs = now, self.merged
        else:
            owners, dbs = self.owners(self.base, path), self.base
            if not owners and record.change == MODIFIED:
                owners, dbs = now, self.merged
        extra = record.extra
        if not owners:
            extra["package"], extra["package_manager"] = None, None
            extra["package_status"] = self._nobody(dbs)
            return record
        extra["package"] = ", ".join(dict.fromkeys(o.package.label for o in owners))
        extra["package_manager"] = ",".join(dict.fromkeys(o.package.manager for o in owners))
        if any(o.conffile for o in owners):
            extra["package_conffile"] = True
        if record.change == DELETED:
            extra["package_status"] = "missing" if now else "removed"
            self._count(owners, extra["package_status"])
            return record
        if record.change == MODIFIED and now:
            later = ", ".join(dict.fromkeys(o.package.label for o in now))
            if later != extra["package"]:
                extra["package_now"] = later
            owners = now  # what dpkg --verify inside the container compares with
        extra["package_status"] = self._status(record, owners)
        self._count(owners, extra["package_status"])
        return record

    def _count(self, owners: list[FileInfo], status: str) -> None:
        with self._lock:
            for name in dict.fromkeys((o.package.manager, o.package.name) for o in owners):
                self.tally[(*name, status)] += 1

    def check_original(self, path: bytes, top, data) -> dict:
        """An original in the image (what ``recover`` copies) against the image's databases."""
        owners = self.owners(self.base, path)
        if not owners:
            return {"package": None, "package_status": self._nobody(self.base),
                    "package_manager": None}
        probe = Change(path=path, change=MODIFIED, type=top.kind, target=top.target, entry=top,
                       data=data)
        status = self._status(probe, owners)
        out = {"package": ", ".join(dict.fromkeys(o.package.label for o in owners)),
               "package_status": status,
               "package_manager": ",".join(dict.fromkeys(o.package.manager for o in owners))}
        if probe.extra.get("read_errors"):
            out["read_errors"] = probe.extra["read_errors"]
        return out

    def _status(self, record: Change, owners: list[FileInfo]) -> str:
        kind = record.type
        with_digest = [o for o in owners if o.digest and o.algorithm]
        if kind == "dir":
            if any(o.kind not in (None, "dir") for o in owners) or with_digest:
                return "altered"  # a packaged file is now a directory
            return "dir"
        if kind == "symlink":
            links = [o.link_target for o in owners if o.link_target is not None]
            if with_digest or any(o.kind in ("file", "dir") for o in owners):
                return "altered"
            if links:
                return "intact" if (record.target or b"") in links else "altered"
            return "no-digest"
        if kind != "file":
            return "altered" if with_digest or any(o.kind for o in owners) else "no-digest"
        if any(o.kind in ("dir", "symlink") for o in owners):
            return "altered"
        if not with_digest:
            return "no-digest"
        from ovforensics.scanner.enrich import read_digest
        from ovforensics.layers.layer import EntryError

        algorithms = tuple(dict.fromkeys(o.algorithm for o in with_digest))
        known = {a: record.extra[a] for a in algorithms if isinstance(record.extra.get(a), str)}
        if len(known) == len(algorithms):  # --hash already read the file: no second read
            return "intact" if any(known[o.algorithm] == o.digest for o in with_digest) \
                else "altered"
        source = record.data or record.entry
        if source is None:
            return "unreadable"
        try:
            digests, _ = read_digest(source, algorithms)
        except (EntryError, OSError, ValueError) as exc:
            record.extra.setdefault("read_errors", []).append(f"package check: {exc}")
            return "unreadable"
        return "intact" if any(digests.get(o.algorithm) == o.digest for o in with_digest) \
            else "altered"

    # -- the stream ---------------------------------------------------------------------------
    def run(self, records: Iterable[Change]) -> Iterator[Change]:
        """The records in order, each checked (files are read on a thread pool); then one
        ``package-db`` anomaly per database problem (as the differ's unreadable entries, last)."""
        window: collections.deque = collections.deque()
        limit = self.workers * 8
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ovf-pkg") as pool:
            for record in records:
                window.append(pool.submit(self.check, record))
                while len(window) >= limit or (window and window[0].done()):
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        yield from self.problems()
