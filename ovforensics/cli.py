"""The ``ovforensics`` command: a thin layer over :func:`ovforensics.scan` and the writers.

Exit status: 0 done; 2 bad arguments or unreadable input (one line on stderr, no traceback).
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer

from . import __version__, scan
from .layer import LayerError
from .markers import RULES
from .output import OutputError, default_format, refuse_inside, report_stream
from .stack import split_lowerdir
from .writers import FORMATS, open_writer, write_rows

EXIT_OK, EXIT_ERROR = 0, 2

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Container layer forensics: what changed in an overlayfs container, what was deleted, "
         "and where the original is.",
)


def fail(message: str) -> "typer.Exit":
    typer.echo(f"ovforensics: error: {message}", err=True)
    return typer.Exit(EXIT_ERROR)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ovforensics {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Container layer forensics."""


def _split_list(values: List[str]) -> List[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


ROOT_HELP = "Evidence root: a mounted image of a seized host; every path found is resolved under it."
ENGINE_HELP = "Only this engine: docker, podman, containerd (default: all found)."
DATA_ROOT_HELP = "The engine's data root inside --root (default: from the engine's config, else its default)."


def _root_opt():
    return typer.Option("/", "--root", metavar="DIR", help=ROOT_HELP)


def _engine_opt():
    return typer.Option(None, "--engine", metavar="ENGINE", help=ENGINE_HELP)


def _data_root_opt():
    return typer.Option(None, "--data-root", metavar="DIR", help=DATA_ROOT_HELP)


def _format_opt():
    return typer.Option(None, "--format", "-f", metavar="FORMAT",
                        help=f"One of {', '.join(FORMATS)}. Default: table on a terminal, else from "
                             "-o's extension, else jsonl.")


def _output_opt():
    return typer.Option(None, "--output", "-o", metavar="FILE",
                        help="Write the report to FILE (it appears only when complete).")


def _pick_format(fmt: Optional[str], output: Optional[str]) -> str:
    fmt = fmt or default_format(output)
    if fmt not in FORMATS:
        raise fail(f"--format: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def _container(query: str, root: str, engine: Optional[str], data_root: Optional[str]):
    from . import find_container
    from .engines.registry import LookupError_

    if not os.path.isdir(root):
        raise fail(f"--root: {root}: not a directory")
    try:
        return find_container(query, root=root, engine=engine, data_root=data_root)
    except (LookupError_, ValueError) as exc:
        raise fail(str(exc)) from None


@app.command("diff")
def diff_cmd(
    container: Optional[str] = typer.Argument(None, metavar="[CONTAINER]",
                                              help="Container name, id or id prefix (found offline "
                                                   "in the engines' files); or name the layers with --upper."),
    upper: Optional[str] = typer.Option(None, "--upper", metavar="PATH",
                                        help="The upperdir (a directory, or a tar archive of one)."),
    lowers: List[str] = typer.Option([], "--lowers", metavar="DIR:DIR...",
                                     help="Lower layers as a colon list, topmost first (as lowerdir= "
                                          "and docker inspect's LowerDir give it)."),
    lower: List[str] = typer.Option([], "--lower", metavar="PATH",
                                    help="One lower layer (directory or tar); repeat, topmost first. "
                                         "Comes after the --lowers entries."),
    root: str = _root_opt(),
    engine: Optional[str] = _engine_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = _format_opt(),
    output: Optional[str] = _output_opt(),
    only: List[str] = typer.Option([], "--only", metavar="KINDS",
                                   help="Keep only these change kinds: added, modified, deleted, anomaly "
                                        "(comma list or repeated)."),
    include: List[str] = typer.Option([], "--include", metavar="GLOB",
                                      help="Keep only paths matching GLOB (repeatable)."),
    exclude: List[str] = typer.Option([], "--exclude", metavar="GLOB",
                                      help="Drop paths matching GLOB (repeatable)."),
    whiteouts: str = typer.Option("auto", "--whiteouts", metavar="RULES",
                                  help="Marker rules: auto (kernel for directories, oci for tar, the "
                                       f"store's own for a container), {', '.join(RULES)}."),
    xattr_ns: str = typer.Option("auto", "--xattr-ns", metavar="NS",
                                 help="Control xattr namespace honoured: auto (from the layer roots), "
                                      "both, trusted (root mounts), user (userxattr mounts)."),
) -> None:
    """Report every added, modified and deleted path of a container or an overlay stack."""
    from . import scan_container

    fmt = _pick_format(fmt, output)
    options = dict(xattr_ns=xattr_ns, only=_split_list(only) or None, include=include,
                   exclude=exclude)
    if container is not None:
        if upper or lowers or lower:
            raise fail("name a container or --upper/--lowers, not both")
        found = _container(container, root, engine, data_root)
        evidence = [root] if root != "/" else [found.store]
        if xattr_ns == "auto":
            options.pop("xattr_ns")
        records_of = lambda: scan_container(found, whiteouts=whiteouts, **options)  # noqa: E731
    else:
        if upper is None:
            raise fail("name a container, or give --upper (and --lowers/--lower)")
        layers = [item for value in lowers for item in split_lowerdir(value)] + list(lower)
        if any(not item for item in layers):
            raise fail("--lowers: empty layer in the list (data-only layers after '::' are not supported)")
        evidence = [upper, *layers]
        records_of = lambda: scan(upper, layers, whiteouts=whiteouts, **options)  # noqa: E731
    try:
        if output and output != "-":
            refuse_inside(output, evidence)
        records = records_of()
        with report_stream(output) as stream:
            writer = open_writer(fmt, stream)
            for record in records:
                writer.write(record)
            writer.close()
    except (LayerError, OutputError, ValueError) as exc:
        raise fail(str(exc)) from None


@app.command("containers")
def containers_cmd(
    root: str = _root_opt(),
    engine: Optional[str] = _engine_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = _format_opt(),
    output: Optional[str] = _output_opt(),
) -> None:
    """List every container of every engine found, from the engines' files alone."""
    from . import containers
    from .engines.base import Broken
    from .inventory import CONTAINER_COLUMNS, container_row

    fmt = _pick_format(fmt, output)
    if not os.path.isdir(root):
        raise fail(f"--root: {root}: not a directory")

    def rows():
        for item in containers(root, engine, data_root):
            if isinstance(item, Broken):
                typer.echo(f"ovforensics: warning: {item.engine}: {item.where}: {item.why}", err=True)
                continue
            yield container_row(item)

    try:
        if output and output != "-" and root != "/":
            refuse_inside(output, [root])
        with report_stream(output) as stream:
            write_rows(fmt, rows(), CONTAINER_COLUMNS, stream)
    except (OutputError, ValueError) as exc:
        raise fail(str(exc)) from None


@app.command("layers")
def layers_cmd(
    container: str = typer.Argument(..., metavar="CONTAINER", help="Container name, id or id prefix."),
    root: str = _root_opt(),
    engine: Optional[str] = _engine_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = _format_opt(),
    output: Optional[str] = _output_opt(),
) -> None:
    """Show a container's stack: upper, init and image layers, with ids, entry counts and sizes."""
    from .inventory import LAYER_COLUMNS, layer_rows

    fmt = _pick_format(fmt, output)
    found = _container(container, root, engine, data_root)
    try:
        if output and output != "-":
            refuse_inside(output, [root] if root != "/" else [found.store])
        with report_stream(output) as stream:
            write_rows(fmt, layer_rows(found), LAYER_COLUMNS, stream)
    except (OutputError, ValueError) as exc:
        raise fail(str(exc)) from None


def run() -> None:
    """Console entry point: no tracebacks for a closed pipe or Ctrl-C."""
    try:
        app()
    except BrokenPipeError:
        # `ovforensics diff ... | head`: the reader left; stop quietly (Python's documented recipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(EXIT_OK)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    run()
