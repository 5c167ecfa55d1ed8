"""Reading evidence safely: the one place that opens files of a layer or store (read-only,
``O_NOFOLLOW``, ``O_NOATIME``, never a FIFO or device, paths of any length through directory
fds: ``safeio``), and paths found inside the evidence resolved under ``--root`` without ever
leaving it (``rootfs``).

May import: nothing
"""
