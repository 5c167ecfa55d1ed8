"""Copying the originals a container's changes shadow out of the evidence into a destination of
the analyst's (``recover``; a named path's parent symlinks resolved inside the stack by
``within``; each entry written by ``copying``), with its manifest (``manifest``) and run record
(``runfile``), into a destination written safely (``destination``).

May import: evidence, layers, records, scanner, packages, writers
"""
from __future__ import annotations

from ovforensics.recovery.destination import RecoverError
from ovforensics.recovery.manifest import MANIFEST_COLUMNS, ManifestRow, RecoverResult, STATUSES
from ovforensics.recovery.recover import parse_path, recover, recover_container


