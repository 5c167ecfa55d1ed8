"""Reading evidence safely: the one place that opens files of a layer or store (read-only,
``O_NOFOLLOW``, ``O_NOATIME``, never a FIFO or device, paths of any length through directory
fds: ``safeio``), paths found inside the evidence resolved under ``--root`` without ever
leaving it (``rootfs``), SQLite databases read as data, never run (``sqlitedb``), and store
strings that are no valid text kept exactly (``storetext``), and where a path lives: on the
host or inside a disk image read without mounting it (``fs``; the image formats, partitions and
ext4 in ``diskimage``).

May import: nothing
"""
