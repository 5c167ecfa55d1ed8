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
from .writers import FORMATS, open_writer

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


@app.command("diff")
def diff_cmd(
    upper: str = typer.Option(..., "--upper", metavar="PATH",
                              help="The upperdir (a directory, or a tar archive of one)."),
    lowers: List[str] = typer.Option([], "--lowers", metavar="DIR:DIR...",
                                     help="Lower layers as a colon list, topmost first (as lowerdir= "
                                          "and docker inspect's LowerDir give it)."),
    lower: List[str] = typer.Option([], "--lower", metavar="PATH",
                                    help="One lower layer (directory or tar); repeat, topmost first. "
                                         "Comes after the --lowers entries."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", metavar="FORMAT",
                                      help=f"One of {', '.join(FORMATS)}. Default: table on a "
                                           "terminal, else from -o's extension, else jsonl."),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="FILE",
                                         help="Write the report to FILE (appears only when complete)."),
    only: List[str] = typer.Option([], "--only", metavar="KINDS",
                                   help="Keep only these change kinds: added, modified, deleted, anomaly "
                                        "(comma list or repeated)."),
    include: List[str] = typer.Option([], "--include", metavar="GLOB",
                                      help="Keep only paths matching GLOB (repeatable)."),
    exclude: List[str] = typer.Option([], "--exclude", metavar="GLOB",
                                      help="Drop paths matching GLOB (repeatable)."),
    whiteouts: str = typer.Option("auto", "--whiteouts", metavar="RULES",
                                  help="Marker rules: auto (kernel for directories, oci for tar), "
                                       f"{', '.join(RULES)}."),
    xattr_ns: str = typer.Option("auto", "--xattr-ns", metavar="NS",
                                 help="Control xattr namespace honoured: auto (from the layer roots), "
                                      "both, trusted (root mounts), user (userxattr mounts)."),
) -> None:
    """Report every added, modified and deleted path of an overlay stack."""
    layers = [item for value in lowers for item in split_lowerdir(value)] + list(lower)
    if any(not item for item in layers):
        raise fail("--lowers: empty layer in the list (data-only layers after '::' are not supported)")
    fmt = fmt or default_format(output)
    if fmt not in FORMATS:
        raise fail(f"--format: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    try:
        if output and output != "-":
            refuse_inside(output, [upper, *layers])
        records = scan(upper, layers, whiteouts=whiteouts, xattr_ns=xattr_ns,
                       only=_split_list(only) or None, include=include, exclude=exclude)
        with report_stream(output) as stream:
            writer = open_writer(fmt, stream)
            for record in records:
                writer.write(record)
            writer.close()
    except (LayerError, OutputError, ValueError) as exc:
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
