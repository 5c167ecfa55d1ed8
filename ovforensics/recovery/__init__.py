"""Copying the originals a container's changes shadow out of the evidence into a destination of
the analyst's (``recover``), with its manifest.

May import: evidence, layers, records, scanner, packages, writers
"""
