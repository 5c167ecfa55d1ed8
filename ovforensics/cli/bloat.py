"""The bloat commands: ``bloat`` (a container's upper layer) and ``image`` (an image's layers)."""
from __future__ import annotations

import os
import typer
from typing import List, Optional

from ovforensics.cli.app import app, fail, say
from ovforensics.cli.options import (_name, complete_image, _force_opt, _partition_opt, Stack, _F, _S, _data_root_opt, _engine_opt,
    _max_decompressed_opt, _namespace_opt, _no_trunc_opt, _root_opt)
from ovforensics.layers.layer import LayerError
from ovforensics.writers import progress
from ovforensics.writers.output import OutputError, default_format, refuse_inside, report_stream


# -- bloat audit: `bloat` (a container's upper layer) and `image` (an image's layers) ----------------
EXIT_GATE = 3  # a CI gate failed (errors stay 2)


def _bloat_opts():
    """The report and gate options `bloat` and `image` share."""
    return dict(
        fmt=typer.Option(None, "--format", "-f", metavar="FORMAT", callback=_name,
                         help="table, json, jsonl, csv or html. Default: table on a terminal, "
                              "else from -o's extension (.html, .json, .jsonl, .csv), else jsonl."),
        output=typer.Option(None, "--output", "-o", metavar="FILE",
                            help="Write the report to FILE (it appears only when complete)."),
        max_wasted=typer.Option(None, "--max-wasted", metavar="BYTES",
                                help="Gate: fail (exit 3) when more bytes than this are wasted "
                                     "(50MB = 50*10^6, 1.5GiB = 1.5*2^30, or plain bytes)."),
        max_wasted_percent=typer.Option(None, "--max-wasted-percent", metavar="P",
                                        help="Gate: fail when more than P percent of the stored "
                                             "bytes are wasted."),
        min_efficiency=typer.Option(None, "--min-efficiency", metavar="F",
                                    help="Gate: fail when the efficiency is below F (0..1, or 95%)."),
        ignore=typer.Option([], "--exclude", "--ignore", metavar="GLOB",
                            help="Wasted paths matching GLOB do not count as waste: listed, "
                                 "marked ignored (repeatable; a directory takes its subtree; "
                                 "--ignore, dive's name, is the same option)."),
        config=typer.Option(None, "--config", metavar="FILE",
                            help="Read gates from FILE's \\[bloat] table (default: ./.ovforensics.toml "
                                 "when it exists)."),
        no_config=typer.Option(False, "--no-config", help="Do not read ./.ovforensics.toml."),
        top=typer.Option(None, "--top", metavar="N", help="How many paths the top list shows "
                                                          "(default 20)."),
        depth=typer.Option(None, "--depth", metavar="N",
                           help="Directory depth of the by-directory rollup (default 2)."),
        rows=typer.Option(None, "--rows", metavar="ROWS",
                          help="Which rows CSV writes: image: waste (default), layers, dirs, "
                               "changes; container: files (default), waste, dirs."),
    )


_B = _bloat_opts()


def _bloat_format(fmt: Optional[str], output: Optional[str]) -> str:
    from ovforensics.bloat import FORMATS as BLOAT_FORMATS

    if fmt is None and output and output != "-" and \
            os.path.splitext(output)[1].lower() in (".html", ".htm"):
        fmt = "html"
    fmt = fmt or default_format(output)
    if fmt not in BLOAT_FORMATS:
        raise fail(f"--format: unknown format {fmt!r}; expected one of {', '.join(BLOAT_FORMATS)}")
    return fmt


def _bloat_gates(kind: str, rows, max_wasted, max_wasted_percent, min_efficiency, ignore, config,
                 no_config, top, depth):
    from ovforensics.bloat import ROWS, BloatError, make_gates

    if rows is not None and rows not in ROWS[kind]:
        raise fail(f"--rows: expected one of {', '.join(ROWS[kind])} for {'an image' if kind == 'image' else 'a container'}, got {rows!r}")
    try:
        return make_gates(max_wasted=max_wasted, max_wasted_percent=max_wasted_percent,
                          min_efficiency=min_efficiency, ignore=ignore, top=top, depth=depth,
                          config=config, use_default=not no_config)
    except BloatError as exc:
        raise fail(str(exc)) from None


def _bloat_emit(report, fmt: str, output: Optional[str], evidence: list, rows: Optional[str],
                no_trunc: bool = False) -> None:
    from ovforensics.bloat import BloatError, write_report

    try:
        if output and output != "-":
            refuse_inside(output, evidence)
        with report_stream(output) as stream:
            write_report(fmt, report, stream, rows, no_trunc=no_trunc)
    except (OutputError, BloatError, ValueError) as exc:
        raise fail(str(exc)) from None
    line = progress.wrote(output, f"the {fmt} report")
    if line:
        say(line)
    for warning in report.warnings:
        say(f"ovforensics: warning: {warning}")
    failed = report.failed
    if failed:
        for gate in failed:
            say(f"ovforensics: gate failed: {gate['message']}")
        raise typer.Exit(EXIT_GATE)


@app.command("bloat")
def bloat_cmd(
    container: Optional[str] = _S["container"],
    upper: Optional[str] = _S["upper"],
    lowers: List[str] = _S["lowers"],
    lower: List[str] = _S["lower"],
    root: str = _root_opt(),
    partition: Optional[int] = _partition_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    whiteouts: str = _F["whiteouts"],
    xattr_ns: str = _F["xattr_ns"],
    fmt: Optional[str] = _B["fmt"],
    output: Optional[str] = _B["output"],
    force: bool = _force_opt(),
    max_wasted: Optional[str] = _B["max_wasted"],
    max_wasted_percent: Optional[str] = _B["max_wasted_percent"],
    min_efficiency: Optional[str] = _B["min_efficiency"],
    ignore: List[str] = _B["ignore"],
    config: Optional[str] = _B["config"],
    no_config: bool = _B["no_config"],
    top: Optional[int] = _B["top"],
    depth: Optional[int] = _B["depth"],
    rows: Optional[str] = _B["rows"],
    max_decompressed: Optional[str] = _max_decompressed_opt(),
    no_trunc: bool = _no_trunc_opt(),
) -> None:
    """Bytes a container's upper layer holds: added, copies with new content, copies with the
    same content (wasted: chmod, chown, touch, hard link), metacopy; allocated beside apparent."""
    from ovforensics.bloat import BloatError, audit_container
    from ovforensics.layers.markers import Namespaces
    from ovforensics.scanner.resolve import layer_roots

    fmt = _bloat_format(fmt, output)
    gates = _bloat_gates("container", rows, max_wasted, max_wasted_percent, min_efficiency, ignore,
                         config, no_config, top, depth)
    stack = Stack(container, upper, lowers, lower, root, engine, data_root, namespace)
    try:
        layers = stack.layers(whiteouts)
        found = stack.container
        ns_value = found.xattr_ns if found is not None and xattr_ns == "auto" else xattr_ns
        ns = Namespaces.parse(ns_value, roots=layer_roots(layers))
        with progress.ticking(progress.on_terminal(), label="reading the layers"):
            report = audit_container(layers[0], layers[1:], ns, gates=gates,
                                     target=stack.describe())
    except (LayerError, BloatError, ValueError) as exc:
        raise fail(str(exc)) from None
    _bloat_emit(report, fmt, output, stack.evidence, rows, no_trunc)


@app.command("image")
def image_cmd(
    image: str = typer.Argument(..., metavar="IMAGE", autocompletion=complete_image,
                                help="A docker save archive, an OCI layout (directory or tar), or "
                                     "an image in a local store: name (app:1, "
                                     "docker.io/library/app:1), full id or id prefix."),
    select: Optional[str] = typer.Option(None, "--select", metavar="REF",
                                         help="Which image of an archive or OCI layout that holds "
                                              "several (a name or id prefix)."),
    root: str = _root_opt(),
    partition: Optional[int] = _partition_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = _B["fmt"],
    output: Optional[str] = _B["output"],
    force: bool = _force_opt(),
    max_wasted: Optional[str] = _B["max_wasted"],
    max_wasted_percent: Optional[str] = _B["max_wasted_percent"],
    min_efficiency: Optional[str] = _B["min_efficiency"],
    ignore: List[str] = _B["ignore"],
    config: Optional[str] = _B["config"],
    no_config: bool = _B["no_config"],
    top: Optional[int] = _B["top"],
    depth: Optional[int] = _B["depth"],
    rows: Optional[str] = _B["rows"],
    max_decompressed: Optional[str] = _max_decompressed_opt(),
    no_trunc: bool = _no_trunc_opt(),
) -> None:
    """Stored, visible and wasted bytes of an image's layers, each wasted byte attributed to a
    path, the layer that stored it and the layer that made it waste."""
    from ovforensics.bloat import BloatError, audit_image
    from ovforensics.stores.images import ImageError, open_image

    fmt = _bloat_format(fmt, output)
    gates = _bloat_gates("image", rows, max_wasted, max_wasted_percent, min_efficiency, ignore,
                         config, no_config, top, depth)
    try:
        with progress.ticking(progress.on_terminal(), label="opening the image"), \
                open_image(image, root=root, engine=engine, data_root=data_root, select=select,
                           namespace=namespace) as img:
            report = audit_image(img, gates=gates)
            evidence = list(img.evidence)
    except (ImageError, LayerError, BloatError, ValueError) as exc:
        raise fail(str(exc)) from None
    _bloat_emit(report, fmt, output, evidence, rows, no_trunc)
