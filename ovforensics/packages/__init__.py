"""Package databases read from the layers themselves, and what a change means against them.

This folder owns: reading dpkg, rpm and apk databases out of a view of a layer stack
(:mod:`.viewfs`, :mod:`.dpkg`, :mod:`.rpm`, :mod:`.apk`; one :class:`~.db.Database` each),
checking each changed file against the digest its package manager recorded (:mod:`.verify`:
``package``/``package_status`` on records), and the packages installed, removed and upgraded
in a container (:mod:`.changes`). Nothing here runs the image's tools or code the evidence chose.

Nothing outside this folder imports it but the pipeline's entry points (``ovforensics.scan``,
the CLI, recovery's manifest, the triage report).
May import: evidence, layers, records, scanner
"""
from __future__ import annotations

from ovforensics.packages.db import Database, Package
from ovforensics.packages.verify import PackageChecker, load_stack_databases

__all__ = ["Database", "Package", "PackageChecker", "load_stack_databases"]
