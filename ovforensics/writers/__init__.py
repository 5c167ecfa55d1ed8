"""Reports from records: the formats (``formats``: table, csv, json, jsonl, docker), timelines
(``timeline``: bodyfile, Timesketch), the run record (``runrecord``), progress on a terminal
(``progress``), safe report files (``output``), the pieces of a self-contained HTML page
(``html``), the triage summary (``triage``) and the compiled differ (``native``: a stack of
directory layers diffed and written as jsonl, csv or docker in one pass, by the Rust library
built from native/; byte for byte what the Python differ and ``formats`` write). A writer knows
no engine.

May import: evidence, layers, records, scanner, packages
"""
from ovforensics.writers.formats import FORMATS, write_all  # noqa: F401 (the documented API)
