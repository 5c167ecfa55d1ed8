"""Shell completion (issue 14), tested through the shells themselves: the script ``ovforensics
completion SHELL`` prints is loaded into bash, zsh and fish, which then run the installed
``ovforensics`` for candidates: subcommands, options, and container and image names read from a
hand-made Docker store under ``--root``."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need

BIN = Path(sys.executable).parent
OVF = shutil.which("ovforensics", path=str(BIN)) or "ovforensics"
CID = hashlib.sha256(b"completion-web").hexdigest()
CID2 = hashlib.sha256(b"completion-db").hexdigest()
IMAGE_HEX = hashlib.sha256(b"completion-image").hexdigest()


def _container(d: Path, cid: str, name: str) -> None:
    mount, layer, chain = (hashlib.sha256(f"{cid}-{x}".encode()).hexdigest()
                           for x in ("mount", "layer", "chain"))
    (d / "containers" / cid).mkdir(parents=True)
    (d / "containers" / cid / "config.v2.json").write_text(json.dumps({
        "ID": cid, "Name": f"/{name}", "Driver": "overlay2", "Image": f"sha256:{IMAGE_HEX}",
        "Config": {"Image": "registry.example.com/team/web:1"},
        "Created": "2024-10-01T12:00:00Z", "State": {"Status": "exited", "ExitCode": 0}}))
    mounts = d / "image/overlay2/layerdb/mounts" / cid
    mounts.mkdir(parents=True)
    (mounts / "mount-id").write_text(mount)
    (mounts / "init-id").write_text(mount + "-init")
    (mounts / "parent").write_text("sha256:" + chain)
    ldb = d / "image/overlay2/layerdb/sha256" / chain
    ldb.mkdir(parents=True)
    (ldb / "cache-id").write_text(layer)
    (ldb / "diff").write_text("sha256:" + chain)
    for x in (mount, mount + "-init", layer):
        (d / "overlay2" / x / "diff").mkdir(parents=True)


@pytest.fixture(scope="module")
def evidence(tmp_path_factory) -> Path:
    """A seized host's root: a Docker overlay2 store with two containers and one image."""
    root = tmp_path_factory.mktemp("evidence")
    d = root / "var/lib/docker"
    _container(d, CID, "web-frontend")
    _container(d, CID2, "db-primary")
    content = d / "image/overlay2/imagedb/content/sha256"
    content.mkdir(parents=True)
    (content / IMAGE_HEX).write_text(json.dumps({"rootfs": {"type": "layers", "diff_ids": []}}))
    (d / "image/overlay2/repositories.json").write_text(json.dumps({"Repositories": {
        "registry.example.com/team/web": {
            "registry.example.com/team/web:1": f"sha256:{IMAGE_HEX}"}}}))
    return root


def _script(shell: str, tmp_path: Path) -> Path:
    out = subprocess.run([OVF, "completion", shell], capture_output=True, text=True, check=True)
    assert out.stderr == ""
    path = tmp_path / f"ovforensics.{shell}"
    path.write_text(out.stdout)
    return path


def _env() -> dict:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("_OVFORENSICS_COMPLETE", None)
    return env


def _shell(name: str) -> str:
    exe = shutil.which(name)
    need(exe is not None, f"{name} is not installed (apt-get install {name})")
    return exe


# bash ------------------------------------------------------------------------------------------

def _bash(tmp_path: Path, line: str) -> list[str]:
    """What bash offers for TAB at the end of ``line``: the script sourced, COMP_* set as
    readline sets them, the registered function called, COMPREPLY printed one a line."""
    bash = _shell("bash")
    script = _script("bash", tmp_path)
    words = line.split(" ")  # the tests' lines hold no quotes
    program = (f"source {script}\n"
               "fn=$(complete -p ovforensics | sed -E 's/.*-F ([^ ]+).*/\\1/')\n"
               f"COMP_LINE={_q(line)}; COMP_POINT=${{#COMP_LINE}}\n"
               f"COMP_WORDS=({' '.join(_q(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
               f"\"$fn\" ovforensics {_q(words[-1])} {_q(words[-2])}\n"
               "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    out = subprocess.run([bash, "--norc", "--noprofile", "-c", program], capture_output=True,
                         text=True, env=_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr  # nothing into the shell but candidates
    return [x for x in out.stdout.splitlines() if x]


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_bash_completes_subcommands(tmp_path):
    assert _bash(tmp_path, "ovforensics di") == ["diff"]
    offered = _bash(tmp_path, "ovforensics ")
    assert {"diff", "containers", "layers", "recover", "completion", "image"} <= set(offered)


def test_bash_completes_options_and_their_values(tmp_path):
    assert {"--format", "--force"} <= set(_bash(tmp_path, "ovforensics diff --fo"))
    assert "--no-trunc" in _bash(tmp_path, "ovforensics containers --no")
    assert _bash(tmp_path, "ovforensics containers --format js") == ["json", "jsonl"]
    assert _bash(tmp_path, "ovforensics completion f") == ["fish"]


def test_bash_completes_container_names_under_root(tmp_path, evidence):
    offered = _bash(tmp_path, f"ovforensics diff --root {evidence} ")
    assert {"web-frontend", "db-primary", CID[:12], CID2[:12]} <= set(offered)
    assert _bash(tmp_path, f"ovforensics layers --root {evidence} web") == ["web-frontend"]
    assert _bash(tmp_path, f"ovforensics recover --root {evidence} db") == ["db-primary"]
    # after the container, recover's paths: no candidates (bash completes files itself)
    assert _bash(tmp_path, f"ovforensics recover --root {evidence} db-primary ") == []


def test_bash_completes_image_names_across_the_colon(tmp_path, evidence):
    offered = _bash(tmp_path, f"ovforensics image --root {evidence} registry")
    assert offered == ["registry.example.com/team/web:1"]
    # bash breaks words at ':' (COMP_WORDBREAKS): the candidate is what follows it
    assert _bash(tmp_path, f"ovforensics image --root {evidence} registry.example.com/team/web:") \
        == ["1"]
    assert IMAGE_HEX[:12] in _bash(tmp_path, f"ovforensics image --root {evidence} ")


def test_bash_unreadable_stores_offer_nothing_and_say_nothing(tmp_path):
    bad = tmp_path / "not-a-root"
    bad.write_bytes(b"\0" * 4096)  # neither a directory nor a disk image
    assert _bash(tmp_path, f"ovforensics diff --root {bad} ") == []
    assert _bash(tmp_path, "ovforensics diff --root /nonexistent/x ") == []
    assert _bash(tmp_path, "ovforensics diff --partition 0 ") == []


def test_completion_requests_never_print_a_traceback(evidence):
    """The protocol itself, malformed: nothing on stderr, exit 0."""
    for env in ({"COMP_LINE": "ovforensics diff --root", "COMP_POINT": "999"},
                {"COMP_WORDS": "ovforensics diff", "COMP_CWORD": "not-a-number"},
                {}):
        out = subprocess.run([OVF], capture_output=True, text=True,
                             env=dict(_env(), _OVFORENSICS_COMPLETE="complete_bash", **env))
        assert out.stderr == "" and "Traceback" not in out.stdout
        assert out.returncode == 0
    out = subprocess.run([OVF], capture_output=True, text=True,
                         env=dict(_env(), _OVFORENSICS_COMPLETE="complete_tcsh"))
    assert out.stderr == "" and out.stdout == ""


def test_completion_command_refuses_an_unknown_shell():
    out = subprocess.run([OVF, "completion", "tcsh"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("ovforensics: error: completion: unknown shell 'tcsh'")
    assert out.stdout == ""


# zsh -------------------------------------------------------------------------------------------

def _zsh(tmp_path: Path, line: str) -> list[str]:
    """zsh's completion widgets run only inside the line editor: here compdef, _describe and
    _files are stand-ins that print what they were given, and the script's function is called
    with ``words`` and ``CURRENT`` as compsys sets them."""
    zsh = _shell("zsh")
    script = _script("zsh", tmp_path)
    words = line.split(" ")
    program = ("compdef() { print -r -- \"compdef $*\" >&2 }\n"
               "_describe() { print -rl -- \"${(@P)2}\" }\n"
               "_files() { print -r -- '<files>' }\n"
               f"source {script}\n"
               f"words=({' '.join(_q(w) for w in words)}); CURRENT={len(words)}\n"
               "_ovforensics_completion\n")
    out = subprocess.run([zsh, "-f", "-c", program], capture_output=True, text=True,
                         env=_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "compdef _ovforensics_completion ovforensics\n", out.stderr
    return [x for x in out.stdout.splitlines() if x]


def test_zsh_completes_subcommands_options_and_containers(tmp_path, evidence):
    offered = _zsh(tmp_path, "ovforensics di")
    assert len(offered) == 1 and offered[0].startswith("diff:")  # with its help as description
    assert any(x.startswith("--format:") for x in _zsh(tmp_path, "ovforensics diff --fo"))
    names = [x.split(":")[0] for x in _zsh(tmp_path, f"ovforensics diff --root {evidence} ")]
    assert {"web-frontend", "db-primary", CID[:12]} <= set(names)
    assert _zsh(tmp_path, f"ovforensics image --root {evidence} regis") == \
        ["registry.example.com/team/web\\:1"]  # _describe's colon, escaped
    assert _zsh(tmp_path, f"ovforensics diff --root {evidence}x ") == ["<files>"]


# fish ------------------------------------------------------------------------------------------

def _fish(tmp_path: Path, line: str) -> list[str]:
    fish = _shell("fish")
    script = _script("fish", tmp_path)
    out = subprocess.run([fish, "--no-config", "-c", f"source {script}; complete -C {_q(line)}"],
                         capture_output=True, text=True, env=_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr
    return [x.split("\t")[0] for x in out.stdout.splitlines() if x]


def test_fish_completes_subcommands_options_and_containers(tmp_path, evidence):
    assert _fish(tmp_path, "ovforensics dif") == ["diff"]
    assert {"--format", "--force"} <= set(_fish(tmp_path, "ovforensics diff --fo"))
    offered = _fish(tmp_path, f"ovforensics layers --root {evidence} ")
    assert {"web-frontend", "db-primary", CID[:12]} <= set(offered)
    assert _fish(tmp_path, f"ovforensics image --root {evidence} regis") == \
        ["registry.example.com/team/web:1"]
    # no candidate: fish's own path completion
    (tmp_path / "disk.qcow2").write_bytes(b"")
    assert _fish(tmp_path, f"ovforensics diff --root {tmp_path}/disk.q") == \
        [f"{tmp_path}/disk.qcow2"]


# the library under it ----------------------------------------------------------------------------

def test_library_lists_names_for_completion(evidence):
    import ovforensics.api as api

    assert {"web-frontend", "db-primary", CID[:12], CID2[:12]} <= set(api.container_names(str(evidence)))
    assert api.image_names(str(evidence)) == sorted(["registry.example.com/team/web:1", IMAGE_HEX[:12]])
    assert api.container_names(str(evidence), engine="podman") == []
