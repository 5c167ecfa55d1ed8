"""Engine stores read offline, one module per engine: Docker (``docker``: overlay2 and the
containerd image store), Podman/CRI-O (``podman``), containerd and Kubernetes (``containerd``),
the record types they return (``base``), all engines at once (``registry``), the on-disk
database formats (``bbolt``: read as data; SQLite through ``evidence.sqlitedb``), inventories for
``containers``/``layers`` (``inventory``), and images by source (``images``). A store reader
knows no output format.

May import: evidence, layers
"""
