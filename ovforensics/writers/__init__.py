"""Reports from records: the formats (``formats``: table, csv, json, jsonl, docker), timelines
(``timeline``: bodyfile, Timesketch), the run record (``runrecord``), progress on a terminal
(``progress``) and safe report files (``output``). A writer knows no engine.

May import: evidence, layers, records, scanner
"""
