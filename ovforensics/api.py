"""The library's entry points: scan a stack, list and find containers, scan a container.
``ovforensics/__init__.py`` re-exports them; the CLI calls them."""
from __future__ import annotations

import os
from typing import Iterable, Iterator

from ovforensics.layers.layer import Layer
from ovforensics.layers.markers import Namespaces
from ovforensics.layers.stack import container_layers
from ovforensics.scanner.globs import compile_globs, matches
from ovforensics.records.record import CHANGE_KINDS, Change


def open_layer(spec, index: int = -1, rules: str = "auto") -> Layer:
    from ovforensics.layers.stack import open_layer as _open

    return _open(spec, index=index, rules=rules)


def scan(upper: str | os.PathLike | Layer, lowers: Iterable[str | os.PathLike | Layer] = (), *,
         whiteouts: str = "auto", xattr_ns: str = "auto", only: Iterable[str] | None = None,
         include: Iterable[str] = (), exclude: Iterable[str] = (),
         hashes: Iterable[str] | str = (), magic: bool = False, run=None, packages=False,
         yara: str | None = None, yara_originals: bool = False) -> Iterator[Change]:
    """Yield a :class:`Change` for every difference between the lowers and upper-over-lowers.

    ``upper`` and ``lowers`` are directories or tar archives (or :class:`Layer` objects);
    ``lowers`` is topmost first, as in ``lowerdir=``. ``whiteouts`` picks the marker rules
    (``auto``: kernel rules for directories, OCI rules for archives); ``xattr_ns`` which control
    xattr namespace is honoured (``auto``, ``both``, ``trusted``, ``user``). ``only`` keeps some change
    kinds; ``include``/``exclude`` are shell globs matched against the container path.
    ``hashes`` (e.g. ``("sha256", "md5")``) adds digests of both versions of each changed file
    (``sha256``, ``lower_sha256``, ...) to ``extra``; ``magic`` adds libmagic's ``magic`` and
    ``mime`` and ``exec_flags``/``new_executable``. ``run`` (a :class:`~ovforensics.writers.runrecord.RunRecord`)
    is told the layers read and sees every record. ``packages`` (True, or a list
    the :class:`~ovforensics.packages.PackageChecker` is appended to) adds ``package``/``package_status``
    from the stack's dpkg, rpm and apk databases (docs/packages.md); ``yara`` (a rules file or
    directory) adds ``yara``, the rules matching each added/modified file (and with
    ``yara_originals`` ``lower_yara`` for the shadowed originals).
    Raises :class:`LayerError` when a layer cannot be opened; a damaged entry inside a layer is
    reported as an ``anomaly`` record instead.
    """
    from ovforensics.scanner.diff import Differ
    from ovforensics.scanner.enrich import Enricher, parse_hashes

    algorithms = parse_hashes(hashes)
    only_set = _only(only)
    include, exclude = compile_globs("--include", include), compile_globs("--exclude", exclude)
    upper_layer, lower_layers, ns = _open_stack(upper, lowers, whiteouts, xattr_ns)
    if run is not None:
        run.add_layers([upper_layer, *lower_layers])
    records = _filtered(Differ(upper_layer, lower_layers, ns).changes(), only_set, include, exclude)
    records = Enricher(algorithms, magic, ns).run(records)
    if yara:
        from ovforensics.scanner.yarascan import YaraScanner

        records = YaraScanner(yara, yara_originals).run(records)
    if packages or isinstance(packages, list):
        from ovforensics.packages import PackageChecker, load_stack_databases

        checker = PackageChecker(*load_stack_databases(upper_layer, lower_layers, ns))
        if isinstance(packages, list):
            packages.append(checker)  # the caller reads its databases and tally afterwards
        records = checker.run(records)
    return run.watch(records) if run is not None else records


def _only(only) -> set | None:
    only_set = set(only) if only is not None else None
    if only_set is not None and not only_set <= set(CHANGE_KINDS):
        bad = ", ".join(sorted(only_set - set(CHANGE_KINDS)))
        raise ValueError(f"--only: unknown change kind {bad}; expected {', '.join(CHANGE_KINDS)}")
    return only_set


def _open_stack(upper, lowers, whiteouts: str, xattr_ns: str):
    from ovforensics.scanner.resolve import layer_roots

    upper_layer = open_layer(upper, index=-1, rules=whiteouts)
    lower_layers = [open_layer(spec, index=i, rules=whiteouts) for i, spec in enumerate(lowers)]
    ns = Namespaces.parse(xattr_ns, roots=layer_roots([upper_layer, *lower_layers]))
    return upper_layer, lower_layers, ns


def write_scan(fmt: str, stream, upper, lowers=(), *, whiteouts: str = "auto",
               xattr_ns: str = "auto", only: Iterable[str] | None = None, extra_columns=(),
               hide: Iterable[str] = (), **options) -> dict:
    """:func:`scan` written to ``stream`` in ``fmt`` (a :mod:`ovforensics.writers.formats` format);
    returns the counts per change kind. A stack of directory layers in ``jsonl``, ``csv`` or
    ``docker`` with no enrichment or filter but ``only`` asked is diffed and written by the
    compiled differ (:mod:`ovforensics.writers.native`), straight to ``stream``'s file descriptor;
    anything else, or where it hands the scan back, by :func:`scan` and the writers: the
    output is the same bytes either way. ``hide``: paths ``docker`` lines leave out."""
    from ovforensics.writers import native
    from ovforensics.writers.formats import open_writer

    hide = tuple(hide) if fmt == "docker" else ()
    if native.applies(fmt, hide=hide, **options):
        only_set = _only(only)
        upper_layer, lower_layers, ns = _open_stack(upper, lowers, whiteouts, xattr_ns)
        counts = native.write(fmt, upper_layer, lower_layers, ns, stream, only_set)
        if counts is not None:
            return counts
        upper, lowers = upper_layer, lower_layers  # hand back: the Python differ reads them
    writer = open_writer(fmt, stream, tuple(extra_columns), hide=hide)
    for record in scan(upper, lowers, whiteouts=whiteouts, xattr_ns=xattr_ns, only=only,
                       **options):
        writer.write(record)
    return writer.close()


def _filtered(records, only_set, include, exclude) -> Iterator[Change]:
    for record in records:
        if only_set is not None and record.change not in only_set:
            continue
        if include or exclude:
            text = record.path_text
            if include and not matches(text, include):
                continue
            if exclude and matches(text, exclude):
                continue
        yield record


def containers(root: str = "/", engine: str | None = None, data_root: str | None = None):
    """Every container of every engine found under ``root`` (a live host: ``/``; evidence: its
    mount point), from the engines' files alone. Yields ``Container`` and ``Broken`` records."""
    from ovforensics.stores.registry import find_all
    from ovforensics.evidence.rootfs import open_root

    return find_all(open_root(root), engine=engine, data_root=data_root)


def find_container(query: str, root: str = "/", engine: str | None = None,
                   data_root: str | None = None, namespace: str | None = None):
    """The one container a name, full id, id prefix or (Kubernetes) ``POD/CONTAINER`` names;
    ``namespace`` keeps one containerd namespace. Raises on none or several."""
    from ovforensics.stores.base import Container
    from ovforensics.stores.registry import select

    found = [c for c in containers(root, engine, data_root) if isinstance(c, Container)]
    if not found:
        from ovforensics.evidence.rootfs import open_root
        from ovforensics.stores.registry import LookupError_
        from ovforensics.stores.survey import summary, survey

        raise LookupError_(f"{query}: no such container: no container in any store "
                           f"({summary(survey(open_root(root), engine, data_root))})")
    return select(query, found, namespace=namespace)


def container_names(root: str = "/", engine: str | None = None, data_root: str | None = None,
                    namespace: str | None = None) -> list[str]:
    """The names and short ids (12 characters, as ``docker ps``) of every container found under
    ``root``, sorted: what a shell completes a CONTAINER with (``ovforensics completion``).
    Unreadable entries (``Broken``) add nothing."""
    from ovforensics.stores.base import Container

    found: set[str] = set()
    for c in containers(root, engine, data_root):
        if not isinstance(c, Container) or (namespace is not None and c.namespace != namespace):
            continue
        found.update(n for n in c.names if n)
        if c.pod and c.container_name and c.role != "sandbox":
            found.add(f"{c.pod}/{c.container_name}")
        found.add(c.id[:12])
    return sorted(found)


def image_names(root: str = "/", engine: str | None = None, data_root: str | None = None,
                namespace: str | None = None) -> list[str]:
    """The names (``repo:tag``) and short ids of every image in the local stores under ``root``,
    sorted: what a shell completes an IMAGE with."""
    from ovforensics.stores.images import image_names as _names

    return _names(root, engine, data_root, namespace)


def scan_container(container, **options) -> Iterator[Change]:
    """:func:`scan` over a container's stack; records carry the engine's layer ids."""
    layers = container_layers(container, options.pop("whiteouts", None))
    options.setdefault("xattr_ns", container.xattr_ns)
    return scan(layers[0], layers[1:], **options)


def write_scan_container(container, fmt: str, stream, **options) -> dict:
    """:func:`write_scan` over a container's stack (``docker`` lines leave out what the
    engine's own diff does)."""
    options.setdefault("hide", getattr(container, "diff_hides", ()))
    layers = container_layers(container, options.pop("whiteouts", None))
    options.setdefault("xattr_ns", container.xattr_ns)
    return write_scan(fmt, stream, layers[0], layers[1:], **options)
