"""The command line: options parsed, the library called, a writer picked, nothing else. One
module per command group (``changes``, ``triage``, ``inventory``, ``bloat``), the shared options in
``options``, the application and entry point in ``app``, shell completion in ``completion``.

May import: ovforensics, api, target, version, evidence, records, layers, stores, scanner,
packages, writers, bloat, recovery"""
from __future__ import annotations

from ovforensics.cli import changes, triage, inventory, bloat, completion  # the commands, in --help's order
from ovforensics.cli.app import EXIT_ERROR, EXIT_OK, app, fail, main, run

__all__ = ["EXIT_ERROR", "EXIT_OK", "app", "bloat", "changes", "completion", "fail", "inventory",
           "main", "run", "triage"]
