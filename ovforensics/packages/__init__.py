"""Package databases read from the layers themselves, and what a change means against them.

This folder owns: reading dpkg, rpm and apk databases out of a view of a layer stack
(:mod:`.viewfs`, :mod:`.dpkg`, :mod:`.rpm`, :mod:`.apk`; one :class:`~.db.Database` each),
checking each changed file against the digest its package manager recorded (:mod:`.verify`:
``package``/``package_status`` on records), and the packages installed, removed and upgraded
in a container (:mod:`.changes`). Nothing here runs the image's tools or code the evidence chose.

It may import: :mod:`ovforensics.layers.layer`, :mod:`ovforensics.scanner.resolve`, :mod:`ovforensics.layers.markers`,
:mod:`ovforensics.records.record`, :mod:`ovforensics.scanner.enrich` (``read_digest``) and
:mod:`ovforensics.evidence.sqlitedb`. Nothing outside this folder imports it except the pipeline's entry
points (``ovforensics.scan``, the CLI, the triage report).
"""
from __future__ import annotations

from ovforensics.packages.db import Database, Package
from ovforensics.packages.verify import PackageChecker, load_stack_databases

__all__ = ["Database", "Package", "PackageChecker", "load_stack_databases"]
