"""The bloat audit: a container's upper layer (``container``) and an image's layers (``image``),
the report they make (``model``), its gates (``gates``), its formats (``output``) and the
self-contained HTML page (``report_html``).

May import: evidence, layers, records, scanner, writers
"""
from __future__ import annotations

from ovforensics.bloat.container import audit_container
from ovforensics.bloat.gates import (BloatError, Gates, load_config, make_gates, parse_bytes,
    parse_fraction, parse_percent)
from ovforensics.bloat.image import audit_image
from ovforensics.bloat.model import Report, SCHEMA
from ovforensics.bloat.output import FORMATS, ROWS, rows_of, write_report


