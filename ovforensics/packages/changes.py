"""Packages installed, removed and upgraded in a container: the container's databases (upper
over lowers) against the image's (lowers alone), per package manager, with the count of each
package's files found altered (and missing) by :class:`~.verify.PackageChecker`."""
from __future__ import annotations

import re

from ovforensics.packages.db import Database

COLUMNS = ("manager", "package", "change", "version_before", "version_after", "arch", "altered",
           "missing", "state")


def _installed(db: Database) -> dict[str, object]:
    return {key: p for key, p in db.packages.items()
            if p.state not in ("not-installed", "config-files")}


def package_rows(base: list[Database], merged: list[Database], tally=None, all_packages=False):
    """One row per package that changed (or, with ``all_packages``, every package)."""
    tally = tally or {}
    managers = list(dict.fromkeys([db.manager for db in base] + [db.manager for db in merged]))
    for manager in managers:
        before: dict = {}
        after: dict = {}
        for db in base:
            if db.manager == manager:
                before.update(_installed(db))
        for db in merged:
            if db.manager == manager:
                after.update(_installed(db))
        for key in sorted(set(before) | set(after)):
            old, new = before.get(key), after.get(key)
            pkg = new or old
            altered = tally.get((manager, pkg.name, "altered"), 0)
            missing = tally.get((manager, pkg.name, "missing"), 0)
            if old is None:
                change = "installed"
            elif new is None:
                change = "removed"
            elif old.version != new.version:
                order = compare_versions(manager, new.version, old.version)
                change = "upgraded" if order > 0 else "downgraded" if order < 0 else "reinstalled"
            elif altered or missing:
                change = "altered"
            else:
                change = "unchanged"
            if change == "unchanged" and not all_packages:
                continue
            yield {"manager": manager, "package": pkg.name, "change": change,
                   "version_before": old.version if old else None,
                   "version_after": new.version if new else None, "arch": pkg.arch or None,
                   "altered": altered, "missing": missing, "state": pkg.state}


# -- version order: dpkg's verrevcmp (lib/dpkg/version.c) and rpm's rpmvercmp ----------------
def _dpkg_order(ch: str) -> int:
    if ch == "~":
        return -1
    if ch.isdigit():
        return 0
    if not ch:
        return 0
    if ch.isalpha():
        return ord(ch)
    return ord(ch) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _dpkg_order(a[i]) if i < len(a) else 0
            bc = _dpkg_order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split_evr(version: str) -> tuple[int, str, str]:
    epoch, sep, rest = version.partition(":")
    if not sep or not epoch.isdigit():
        epoch, rest = "0", version
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch), upstream, revision


def _rpmvercmp(a: str, b: str) -> int:
    if a == b:
        return 0
    sa = re.findall(r"~|\^|\d+|[A-Za-z]+", a)
    sb = re.findall(r"~|\^|\d+|[A-Za-z]+", b)
    for x, y in zip(sa, sb):
        if x != y:
            if x == "~" or y == "~":
                return -1 if x == "~" else 1
            if x.isdigit() and y.isdigit():
                return (int(x) > int(y)) - (int(x) < int(y))
            if x.isdigit() != y.isdigit():
                return 1 if x.isdigit() else -1
            return (x > y) - (x < y)
    if len(sa) == len(sb):
        return 0
    longer = sa if len(sa) > len(sb) else sb
    nxt = longer[min(len(sa), len(sb))]
    sign = 1 if longer is sa else -1
    return -sign if nxt == "~" else sign


def compare_versions(manager: str, a: str, b: str) -> int:
    """<0, 0, >0 as version ``a`` is older than, equal to or newer than ``b``."""
    ea, ua, ra = _split_evr(a)
    eb, ub, rb = _split_evr(b)
    if ea != eb:
        return ea - eb
    cmp = _verrevcmp if manager == "dpkg" else _rpmvercmp
    return cmp(ua, ub) or cmp(ra, rb)
