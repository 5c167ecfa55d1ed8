"""The CLI end to end on the shipped samples: formats, errors, exit statuses, the man page."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from ovforensics.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "samples" / "experiment"
EXP_ARGS = ["--upper", str(EXP / "build.tar"), "--lower", str(EXP / "material2.tar"),
            "--lower", str(EXP / "material.tar")]


def run(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "ovforensics", *args], capture_output=True,
                          text=True, cwd=ROOT)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_experiment_sample_docker_format():
    proc = run("diff", *EXP_ARGS, "--format", "docker", check=True)
    assert proc.stdout.splitlines() == ["A /frame", "D /marble"]


def test_experiment_sample_jsonl_names_the_shadowed_layer():
    proc = run("diff", *EXP_ARGS, "--format", "jsonl", check=True)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["path"], r["change"]) for r in records] == [("/frame", "added"), ("/marble", "deleted")]
    marble = records[1]
    assert marble["via"] == "whiteout"
    assert marble["lower_layer"] == {"index": 0, "dir": str(EXP / "material2.tar")}
    assert marble["lower_path"] == f"{EXP / 'material2.tar'}:marble"
    assert records[0]["size"] == len("main structure\n")


def test_lowers_colon_list_equals_repeated_lower():
    a = run("diff", "--upper", str(EXP / "build.tar"), "--lowers",
            f"{EXP / 'material2.tar'}:{EXP / 'material.tar'}", "-f", "jsonl", check=True)
    b = run("diff", *EXP_ARGS, "-f", "jsonl", check=True)
    assert a.stdout == b.stdout


def test_table_has_rows_then_summary():
    proc = run("diff", *EXP_ARGS, "--format", "table", check=True)
    lines = proc.stdout.splitlines()
    assert lines[-1] == "Summary: 1 added, 0 modified, 1 deleted, 0 anomaly"
    assert any(line.startswith("added") and "/frame" in line for line in lines)


def test_only_and_output_file_csv(tmp_path):
    out = tmp_path / "deleted.csv"
    run("diff", *EXP_ARGS, "--only", "deleted", "-o", str(out), check=True)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["path"], r["via"], r["lower_layer"]) for r in rows] == [("/marble", "whiteout", "0")]
    assert not list(tmp_path.glob(".ovf-*")), "temporary file left behind"


def test_include_exclude_globs():
    proc = run("diff", *EXP_ARGS, "-f", "docker", "--exclude", "/m*", check=True)
    assert proc.stdout.splitlines() == ["A /frame"]
    proc = run("diff", *EXP_ARGS, "-f", "docker", "--include", "/m*", check=True)
    assert proc.stdout.splitlines() == ["D /marble"]


@pytest.mark.parametrize("args, names", [
    (["diff", "--upper", "/nonexistent/upper"], "/nonexistent/upper"),
    (["diff", *EXP_ARGS, "--format", "xml"], "--format"),
    (["diff", *EXP_ARGS, "--only", "renamed"], "--only"),
    (["diff", *EXP_ARGS, "--whiteouts", "aufs"], "--whiteouts"),
    (["diff", *EXP_ARGS, "--xattr-ns", "system"], "--xattr-ns"),
    (["diff", "--upper", str(ROOT / "README.md")], "README.md"),
    (["diff", "--upper", str(EXP / "build.tar"), "--lowers", "a::b"], "--lowers"),
])
def test_bad_input_is_one_line_exit_2(args, names):
    proc = run(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_required_option_is_exit_2():
    proc = run("diff")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_refuses_to_write_into_the_evidence(tmp_path):
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "f").write_text("x")
    proc = run("diff", "--upper", str(upper), "-o", str(upper / "report.jsonl"))
    assert proc.returncode == 2 and "evidence" in proc.stderr
    assert sorted(os.listdir(upper)) == ["f"]


def test_broken_pipe_is_quiet(tmp_path):
    upper = tmp_path / "upper"
    upper.mkdir()
    for i in range(20000):
        (upper / f"f{i:05d}").touch()
    proc = subprocess.run(f"{sys.executable} -m ovforensics diff --upper {upper} -f jsonl | head -1",
                          shell=True, capture_output=True, text=True, cwd=ROOT)
    assert len(proc.stdout.splitlines()) == 1
    assert proc.stderr == "", proc.stderr


def test_version():
    """--version names the differ in use; OVF_DIFFER=python forces the Python one."""
    from ovforensics.writers import native

    proc = run("--version", check=True)
    head, differ = proc.stdout.splitlines()
    assert re.fullmatch(r"ovforensics \d+\.\d+\.\d+", head)
    assert differ.startswith("differ: native (" if native.library() else "differ: python ("), differ
    forced = subprocess.run([sys.executable, "-m", "ovforensics", "--version"], capture_output=True,
                            text=True, cwd=ROOT, env={**os.environ, "OVF_DIFFER": "python"})
    assert forced.stdout.splitlines()[1] == "differ: python (OVF_DIFFER=python)"


def _cli_options() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    out = {"": {opt for p in group.params for opt in p.opts + p.secondary_opts}}
    out[""] |= {"-h", "--help"}
    for name, cmd in group.commands.items():
        out[name] = {opt for p in cmd.params if p.opts[0].startswith("-") for opt in p.opts}
        out[name] |= {"-h", "--help"}
    return out


def _man_options() -> set[str]:
    text = (ROOT / "man" / "ovforensics.1").read_text()
    text = text.replace("\\-", "-")
    return set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", text))


def test_man_page_documents_every_command_and_option():
    man = (ROOT / "man" / "ovforensics.1").read_text()
    man_opts = _man_options()
    for command, opts in _cli_options().items():
        if command:
            assert f".SS {command}" in man, f"man page lacks command {command}"
        missing = opts - man_opts
        assert not missing, f"man page lacks options of {command or 'ovforensics'}: {missing}"


def test_man_page_has_no_options_the_cli_lacks():
    known = set().union(*_cli_options().values())
    stale = {opt for opt in _man_options() if opt.startswith("--")} - known
    assert not stale, f"man page documents options the CLI does not have: {stale}"


def test_deleted_defaults_to_csv_with_original_times():
    proc = run("deleted", *EXP_ARGS, "--hash", "sha256", check=True)
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [(r["path"], r["via"], r["lower_layer"]) for r in rows] == [("/marble", "whiteout", "0")]
    import hashlib
    assert rows[0]["lower_sha256"] == hashlib.sha256(b"marble\n").hexdigest()
    assert rows[0]["mtime"] and "atime" in rows[0]


def test_diff_meta_record_comes_first_in_jsonl():
    proc = run("diff", *EXP_ARGS, "-f", "jsonl", "--meta", "--hash", "md5", check=True)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    meta = lines[0]["meta"]
    assert meta["counts"] == {"added": 1, "modified": 0, "deleted": 1, "anomaly": 0}
    assert meta["argv"][-5:] == ["-f", "jsonl", "--meta", "--hash", "md5"]
    assert [layer["dir"] for layer in meta["layers"]] == [EXP_ARGS[1], EXP_ARGS[3], EXP_ARGS[5]]
    assert meta["times"] == "UTC" and meta["started"] <= meta["ended"]
    assert [r["path"] for r in lines[1:]] == ["/frame", "/marble"]


def test_meta_side_file_for_csv(tmp_path):
    out = tmp_path / "changes.csv"
    run("diff", *EXP_ARGS, "--meta", "-o", str(out), check=True)
    assert json.loads((tmp_path / "changes.csv.meta.json").read_text())["meta"]["counts"]["added"] == 1
    proc = run("diff", *EXP_ARGS, "--meta", "-f", "csv")
    assert proc.returncode == 2 and "-o FILE" in proc.stderr


def test_timeline_bodyfile_and_recover_round_trip(tmp_path):
    body = run("timeline", *EXP_ARGS, check=True)
    names = [line.split("|")[1] for line in body.stdout.splitlines()]
    assert names == ["/frame", "/marble (deleted)"]
    assert "UTC" in body.stderr
    to = tmp_path / "recovered"
    proc = run("recover", *EXP_ARGS, "--all-deleted", "--to", str(to), check=True)
    assert (to / "marble").read_bytes() == b"marble\n"
    rows = list(csv.DictReader(io.StringIO((to / "manifest.csv").read_text())))
    assert [(r["path"], r["status"], r["source_layer"]) for r in rows] == [("/marble", "recovered", "0")]
    again = run("recover", *EXP_ARGS, "--all-deleted", "--to", str(to))
    assert again.returncode == 2 and (to / "marble").read_bytes() == b"marble\n"
