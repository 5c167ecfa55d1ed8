"""The typer application, its exit statuses, and the console entry point (no traceback for a closed
pipe or Ctrl-C)."""
from __future__ import annotations

import os
import sys
import typer

from ovforensics.version import __version__
from ovforensics.writers.formats import visible


EXIT_OK, EXIT_ERROR = 0, 2
EXIT_NOTHING = 1  # recover: no row recovered (every one not-found, skipped or error)
#: set by the scripts ``ovforensics completion SHELL`` prints, when the shell asks for candidates
COMPLETE_VAR = "_OVFORENSICS_COMPLETE"
#: answers such a request; set by ``cli/completion.py`` (imported with the commands), so that
#: start-up without the variable imports and registers nothing of it
answer_completion = None


app = typer.Typer(
    add_completion=False,  # no --install-completion: `ovforensics completion SHELL` (cli/completion.py)
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Container layer forensics: what changed in an overlayfs container, what was deleted, "
         "and where the original is.",
)


def say(message: str) -> None:
    """One line on stderr, through the escaping the tables use: messages quote evidence (names,
    ids, namespaces, tags, paths), and no byte of it may reach the analyst's terminal raw (OSC 52
    writes the clipboard, ``ESC[2J`` clears the screen, ``\r`` and U+202E rewrite the line)."""
    typer.echo(visible(message), err=True)


def fail(message: str) -> "typer.Exit":
    say(f"ovforensics: error: {message}")
    return typer.Exit(EXIT_ERROR)


def _version(value: bool) -> None:
    if value:
        from ovforensics.writers import native

        typer.echo(f"ovforensics {__version__}\ndiffer: {native.status()}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Container layer forensics."""


def _warn(text: str) -> None:
    from ovforensics.writers.formats import visible

    typer.echo(f"ovforensics: warning: {visible(text or '')}", err=True)


def _usage_error(exc) -> None:
    """A usage error is one line on stderr, as every other error is (docs/evidence.md), not
    click's usage block and rich's boxed panel; click's own "Did you mean" stays in it."""
    ctx = getattr(exc, "ctx", None)
    where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
    say(f"ovforensics: error: {exc.format_message()}{where}")


def _one_line_usage_errors() -> None:
    try:
        from typer import rich_utils

        rich_utils.rich_format_error = _usage_error
    except ImportError:  # typer without rich: click's own rendering, made one line below
        pass
    try:
        from typer import _click as click  # typer 0.2x vendors click
    except ImportError:
        import click
    click.exceptions.UsageError.show = lambda self, file=None: _usage_error(self)


def _unwrap_help() -> None:
    """A command's docstring is wrapped for the source; --help wraps it again for the terminal.
    Lines of one paragraph are joined first, so the help never breaks mid-sentence."""
    import inspect
    import re

    for command in app.registered_commands:
        doc = command.help or (command.callback.__doc__ if command.callback else None)
        if doc:
            command.help = re.sub(r"(?<!\n)\n(?!\n)", " ", inspect.cleandoc(doc))


def run() -> None:
    """Console entry point: no tracebacks for a closed pipe or Ctrl-C; usage errors in one
    line."""
    if os.environ.get(COMPLETE_VAR) and answer_completion is not None:
        answer_completion()
    _one_line_usage_errors()
    _unwrap_help()
    try:
        app()
    except BrokenPipeError:
        _reader_gone()
    except SystemExit as exc:
        # typer itself turns a write to a closed pipe (EPIPE) into exit 1; a reader that left
        # (`ovforensics diff ... | head`) is not an error here, so that one exit becomes 0.
        if exc.code == 1 and _reader_left():
            _reader_gone()
        raise
    except KeyboardInterrupt:
        sys.exit(130)


def _reader_left() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports POLLERR)."""
    import select
    import stat

    try:
        if not stat.S_ISFIFO(os.fstat(1).st_mode):
            return False
        poller = select.poll()
        poller.register(1, 0)  # POLLERR and POLLHUP are reported whatever is asked
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _reader_gone() -> None:
    """Stop quietly once the reader has left (Python's documented recipe for SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.exit(EXIT_OK)
