"""Engine readers: find containers and their layer stacks from an engine's files alone.

Each engine module offers ``find(root: Root) -> list[Store]``; a store yields
:class:`~ovforensics.engines.base.Container` records (or :class:`Broken` ones for entries it
could not read). Nothing here talks to a daemon.
"""
