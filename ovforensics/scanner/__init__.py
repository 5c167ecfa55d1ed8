"""The differ: the merged and base views of a stack (``resolve``: name resolution through the
layers, redirects, opaque directories), what makes two entries differ (``compare``), the walk
that yields records (``diff``), and the enrichment a record may get (``enrich``: hashes,
libmagic, exec flags; ``yarascan``: YARA rule matches).

May import: evidence, layers, records
"""
