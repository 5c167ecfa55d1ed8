"""Engine readers: find containers and their layer stacks from an engine's files alone.

Each engine module offers ``find(root: Root, data_root: str | None = None)``, which yields
:class:`~ovforensics.engines.base.Container` records, and :class:`~ovforensics.engines.base.Broken`
ones for entries it could not read (a warning, never fatal). Nothing here talks to a daemon;
every path found inside the evidence is resolved with :class:`~ovforensics.rootfs.Root`.
"""
