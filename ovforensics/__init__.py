"""ovforensics: what changed in a container's overlayfs layers, what was deleted, and where the
original is. The CLI (``ovforensics.cli``) is a thin layer over this library: :func:`scan` a
stack, :func:`containers` and :func:`find_container` in the engines' stores,
:func:`open_target` for what a command reads (a container or layers named by path). The map of
the package is docs/architecture.md."""
from __future__ import annotations

from ovforensics.api import (containers, find_container, open_layer, scan, scan_container,
                             write_scan, write_scan_container)
from ovforensics.layers.layer import Layer, LayerError
from ovforensics.layers.stack import container_layers
from ovforensics.records.record import Change, LayerRef
from ovforensics.target import Target, TargetError, open_target
from ovforensics.version import __version__

__all__ = ["scan", "scan_container", "write_scan", "write_scan_container", "containers",
           "find_container", "open_target", "Target", "TargetError", "Change", "LayerRef",
           "Layer", "LayerError", "open_layer", "container_layers", "__version__"]
