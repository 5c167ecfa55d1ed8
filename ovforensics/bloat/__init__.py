"""The bloat audit: a container's upper layer and an image's layers (``audit``), their gates and
text report, and the self-contained HTML page (``report_html``).

May import: evidence, layers, records, scanner, writers
"""
