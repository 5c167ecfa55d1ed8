"""Images as ordered lists of layers (bottom first), with the commands that made them.

Where an image can come from (:func:`open_image`):

``docker save`` archives (plain, or gzip/zstd compressed as a whole)
    ``manifest.json`` = ``[{"Config", "RepoTags", "Layers"}]``. Docker < 25 writes
    ``<id>/layer.tar`` members (a layer that occurs twice may be a symlink to the other one's
    ``layer.tar``); Docker >= 25 writes an OCI layout inside the archive (``blobs/sha256/...``,
    ``index.json``, ``oci-layout``) and a ``manifest.json`` naming those blobs. Either way the
    ``manifest.json`` paths are taken. A directory holding an unpacked ``docker save`` works too.
OCI image layouts (a directory, or a tar of one)
    ``oci-layout``, ``index.json`` and ``blobs/<alg>/<hex>``; an index entry may itself be an
    index (several platforms): the host's ``linux/<arch>`` is taken, or the only one there is.
Images in a local store, read offline from the engine's files
    Docker overlay2 (``repositories.json`` -> ``imagedb`` config ``rootfs.diff_ids`` -> layerdb
    chain ids -> ``overlay2/<cache-id>/diff``), Podman/CRI-O containers-storage (``images.json``
    -> the top layer -> its ``parent`` chain -> ``overlay/<id>/diff``; the config is the image's
    big-data item ``sha256:<id>``), containerd (``v1/<ns>/images/<name>`` in ``meta.db`` -> the
    manifest and config blobs in the content store -> the committed snapshot whose key is each
    layer's chain id, or, where the image was never unpacked, the layer blobs themselves).

Layers from archives are :class:`~ovforensics.layers.tarlayer.TarLayer` objects (OCI marker rules:
``.wh.NAME``, ``.wh..wh..opq``); a layer inside an archive is read in place through a window
on the archive (a compressed one is decompressed once into an anonymous temporary file, as
``TarLayer`` does): nothing is ever extracted to disk. Layers from stores are
:class:`~ovforensics.layers.layer.DirLayer` objects with kernel rules (the engines store whiteouts as
0/0 devices and opaque directories as xattrs), or fuse rules for a fuse-overlayfs Podman store.

Names are matched the way the engines match them: ``app:1``, ``docker.io/library/app:1`` and
``library/app:1`` are one reference (``latest`` when no tag is given); an unqualified name
also matches Podman's ``localhost/app:1``. A full id, or a unique id prefix, names an image
too. Nothing found, or several different images found, raises :class:`ImageError` with a
one-line message."""
from __future__ import annotations

from ovforensics.stores.images.find import find_image, image_names, open_image
from ovforensics.stores.images.model import (ENGINES, Image, ImageError, ImageLayer, Ref,
    parse_ref, ref_matches)


