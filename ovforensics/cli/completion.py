"""Shell completion: ``ovforensics completion bash|zsh|fish`` prints the script, and the shell
then runs ``ovforensics`` with ``_OVFORENSICS_COMPLETE=complete_<shell>`` to ask for candidates.

Why a command and not typer's ``--install-completion``/``--show-completion``: those guess the
shell (shellingham walks the process tree) and write into the user's dot files; a command that
prints the script needs no guess, works offline and on a seized host's copy of the tool, and
adds nothing to every start-up (the completion classes below are registered only when the
shell asks, see :func:`app.run`). The scripts and classes are ours, on click's public
``ShellComplete``: one run per TAB, bash's ``:``/``=`` word breaks handled (``app:1``), and
the shell's own file completion whenever no candidate is offered (``--root``, ``-o``, paths).

CONTAINER and IMAGE arguments complete with the names and short ids the library lists from the
engines' files (:func:`ovforensics.api.container_names`, :func:`ovforensics.api.image_names`,
wired in ``options``: ``complete_container``, ``complete_image``),
under a ``--root`` (``--engine``, ``--data-root``, ``--namespace``) already on the command line.
Nothing ever reaches the shell but candidates: any exception lists nothing, and stderr is
closed while completing."""
from __future__ import annotations

import os
import re
import sys

import typer

from ovforensics.cli import app as _app
from ovforensics.cli.app import COMPLETE_VAR, app, fail
from ovforensics.cli.options import choices

try:
    from typer import _click as click  # typer 0.2x vendors click
except ImportError:  # pragma: no cover - older typer: click itself
    import click

SHELLS = ("bash", "zsh", "fish")

_BASH = r"""# ovforensics completion for bash: eval "$(ovforensics completion bash)"
_ovforensics_completion() {
    local IFS=$'\n'
    COMPREPLY=( $(env COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD="$COMP_CWORD" \
                      COMP_LINE="$COMP_LINE" COMP_POINT="$COMP_POINT" \
                      COMP_WORDBREAKS="$COMP_WORDBREAKS" \
                      %(var)s=complete_bash "$1" 2>/dev/null) )
    return 0
}
complete -o default -F _ovforensics_completion ovforensics
"""

_ZSH = r"""#compdef ovforensics
# ovforensics completion for zsh: eval "$(ovforensics completion zsh)" (after compinit), or save
# it as _ovforensics in a directory of $fpath
_ovforensics_completion() {
    local -a reply
    reply=( "${(@f)$(env _OVF_COMPLETE_ARGS="${words[1,CURRENT-1]}" \
                         _OVF_COMPLETE_WORD="${words[CURRENT]}" \
                         %(var)s=complete_zsh "${words[1]}" 2>/dev/null)}" )
    if [[ -n "${reply[1]}" ]]; then
        _describe 'ovforensics' reply
    else
        _files
    fi
}
compdef _ovforensics_completion ovforensics
"""

_FISH = r"""# ovforensics completion for fish: ovforensics completion fish | source, or save it as
# ~/.config/fish/completions/ovforensics.fish
function __ovforensics_complete
    set -l tokens (commandline -opc)
    set -l current (commandline -ct)
    set -l reply (env _OVF_COMPLETE_ARGS=(string join \x1f -- $tokens) _OVF_COMPLETE_WORD="$current" %(var)s=complete_fish $tokens[1] 2>/dev/null)
    if test -n "$reply[1]"  # none: one empty line
        printf '%%s\n' $reply
    else
        __fish_complete_path $current
    end
end
complete -c ovforensics -f -a '(__ovforensics_complete)'
"""

_SCRIPTS = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}


def script(shell: str) -> str:
    """The completion script for ``shell`` (bash, zsh, fish)."""
    return _SCRIPTS[shell] % {"var": COMPLETE_VAR}


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


class _Complete(click.shell_completion.ShellComplete):
    """What the three shells share: the words before the cursor in, one candidate a line out."""

    def source_vars(self) -> dict:
        return {}

    def source(self) -> str:
        return script(self.name)

    def get_completion_args(self) -> tuple[list[str], str]:
        """zsh and fish: the words before the current one (fish: already unquoted, joined by
        U+001F; zsh: as typed) and the current word."""
        before = os.environ.get("_OVF_COMPLETE_ARGS", "")
        words = before.split("\x1f") if self.name == "fish" else click.shell_completion.split_arg_string(before)
        return [w for w in words[1:]], os.environ.get("_OVF_COMPLETE_WORD", "")

    def candidates(self) -> list:
        args, incomplete = self.get_completion_args()
        # a path or directory asked for: none offered, the shell completes files itself
        return [i for i in self.get_completions(args, incomplete) if i.type == "plain"]

    def complete(self) -> str:
        return "\n".join(self.format_completion(item) for item in self.candidates())


class BashComplete(_Complete):
    name = "bash"

    def get_completion_args(self) -> tuple[list[str], str]:
        """From COMP_LINE up to the cursor (bash's COMP_WORDS splits ``app:1`` at the colon)."""
        line = os.environ.get("COMP_LINE")
        if line is None:
            words = click.shell_completion.split_arg_string(os.environ.get("COMP_WORDS", ""))
            cword = int(os.environ.get("COMP_CWORD", len(words)))
            self._typed = words[cword] if cword < len(words) else ""
            return words[1:cword], self._typed
        line = line[: int(os.environ.get("COMP_POINT", len(line)))]
        words = click.shell_completion.split_arg_string(line)
        self._typed = "" if not line or line[-1].isspace() or len(words) < 2 else words[-1]
        return words[1:len(words) - (1 if self._typed else 0)], self._typed

    def format_completion(self, item) -> str:
        # bash replaces only the part of the word after its last word break (``:`` of
        # ``app:1``, ``=``), so a candidate drops what comes before it
        breaks = set(os.environ.get("COMP_WORDBREAKS", ":=")) & {":", "="}
        typed = getattr(self, "_typed", "")
        cut = max((typed.rfind(b) for b in breaks), default=-1)
        value = item.value
        if cut >= 0 and value.startswith(typed[: cut + 1]):
            value = value[cut + 1:]
        return value


class ZshComplete(_Complete):
    name = "zsh"

    def format_completion(self, item) -> str:
        value = item.value.replace("\\", "\\\\").replace(":", "\\:")
        help_ = _one_line(item.help)
        return f"{value}:{help_}" if help_ else value


class FishComplete(_Complete):
    name = "fish"

    def format_completion(self, item) -> str:
        help_ = _one_line(item.help)
        return f"{item.value}\t{help_}" if help_ else item.value


def register() -> None:
    """Make these the classes the shells' requests are answered by (called by :func:`app.run`
    only when ``_OVFORENSICS_COMPLETE`` is set)."""
    for cls in (BashComplete, ZshComplete, FishComplete):
        click.shell_completion.add_completion_class(cls, cls.name)


def answer() -> None:
    """Answer the shell's request for candidates (``app.run``, when ``_OVFORENSICS_COMPLETE`` is
    set): stdout holds candidates and nothing else, and no error or traceback reaches the shell
    (stderr goes to /dev/null; any failure: no candidates, exit 0)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        register()
        app(complete_var=COMPLETE_VAR)
    except SystemExit as exc:
        sys.exit(exc.code if exc.code in (0, 1) else 0)  # 1: a shell or instruction not known
    except BaseException:
        sys.exit(0)
    sys.exit(0)


_app.answer_completion = answer


# the command ---------------------------------------------------------------------------------

@app.command("completion", epilog='bash: eval "$(ovforensics completion bash)" in ~/.bashrc; '
             'zsh: eval "$(ovforensics completion zsh)" in ~/.zshrc, after compinit; fish: '
             'ovforensics completion fish > ~/.config/fish/completions/ovforensics.fish')
def completion_cmd(
    shell: str = typer.Argument(..., metavar="SHELL", autocompletion=choices(SHELLS),
                                help="bash, zsh or fish."),
) -> None:
    """Print the shell completion script: subcommands, options, container and image names."""
    if shell not in SHELLS:
        raise fail(f"completion: unknown shell {shell!r}; expected one of {', '.join(SHELLS)}")
    typer.echo(script(shell), nl=False)
