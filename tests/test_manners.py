"""Issue 14: input that is not what it seems is refused or warned about, never reported as if
normal; one rule for patterns and output files in every command."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import overlay  # noqa: F401 (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "ovforensics", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def _write(path, data="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(data)


def _paths(proc):
    return [json.loads(line)["path"] for line in proc.stdout.splitlines()]


def test_an_empty_upper_is_an_error_not_the_working_directory(tmp_path):
    _write(tmp_path / "cwd/secret")
    for args in (["--upper", ""], ["--upper", tmp_path / "cwd", "--lower", ""]):
        proc = cli("diff", *args, "-f", "jsonl", cwd=tmp_path / "cwd")
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert "empty" in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_an_upper_with_no_lower_warns_once_written(tmp_path):
    _write(tmp_path / "up/f")
    proc = cli("diff", "--upper", tmp_path / "up", "-f", "jsonl")
    assert proc.returncode == 0 and _paths(proc) == ["/f"]
    assert "has no lower layer" in proc.stderr and "whiteouts delete nothing" in proc.stderr


def test_an_overlay2_layer_directory_is_read_at_its_diff(tmp_path):
    layer, lower = tmp_path / "overlay2/abc", tmp_path / "low"
    _write(layer / "diff/etc/new")
    _write(layer / "link", "SHORTID")
    _write(layer / "lower", "l/OTHER")
    _write(lower / "etc/old")
    proc = cli("diff", "--upper", layer, "--lower", lower, "-f", "jsonl")
    assert proc.returncode == 0, proc.stderr
    assert _paths(proc) == ["/etc/new"]  # not /diff/etc/new, /link, /lower
    assert "overlay2 layer directory" in proc.stderr and "diff" in proc.stderr


def test_the_l_directory_is_refused(tmp_path):
    store = tmp_path / "overlay2"
    _write(store / "abc/diff/f")
    (store / "l").mkdir()
    os.symlink("../abc/diff", store / "l/SHORTID")
    proc = cli("diff", "--upper", store / "l", "--lower", store / "abc/diff", "-f", "jsonl")
    assert proc.returncode == 2 and "l/ directory of short links" in proc.stderr, proc.stderr


def test_a_mounted_overlay_is_refused_naming_its_upperdir(tmp_path, overlay):  # noqa: F811
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _write(lower / "f")
    upper.mkdir()
    merged = overlay.mount([lower], upper=upper)
    proc = cli("diff", "--upper", merged, "--lower", lower, "-f", "jsonl")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "mounted overlay" in proc.stderr and str(upper) in proc.stderr, proc.stderr


def test_a_directory_pattern_takes_its_subtree_and_relative_ones_are_anchored(tmp_path):
    up, low = tmp_path / "up", tmp_path / "low"
    for name in ("usr/share/doc/a/1", "usr/share/doc/b", "usr/bin/x", "etc/y"):
        _write(up / name)
    low.mkdir()
    both = ["--upper", up, "--lower", low, "-f", "jsonl"]
    kept = _paths(cli("diff", *both, "--include", "/usr/share/doc"))
    assert kept == ["/usr/share/doc", "/usr/share/doc/a", "/usr/share/doc/a/1", "/usr/share/doc/b"]
    assert _paths(cli("diff", *both, "--include", "usr/share/doc")) == kept  # anchored
    gone = _paths(cli("diff", *both, "--exclude", "/usr/share/doc/"))
    assert not any(p.startswith("/usr/share/doc") for p in gone) and "/usr/bin/x" in gone
    for option in ("--include", "--exclude"):
        proc = cli("diff", *both, option, "")
        assert proc.returncode == 2 and option in proc.stderr and "empty" in proc.stderr


def test_output_extension_and_existing_file(tmp_path):
    up, low = tmp_path / "up", tmp_path / "low"
    _write(up / "f")
    low.mkdir()
    both = ["--upper", up, "--lower", low]
    for name in ("out.xlsx", "out.body", "report"):
        proc = cli("diff", *both, "-o", tmp_path / name)
        assert proc.returncode == 2 and "-f" in proc.stderr and not (tmp_path / name).exists()
    out = tmp_path / "out.jsonl"
    assert cli("diff", *both, "-o", out).returncode == 0
    first = out.read_text()
    out.write_text("the analyst's notes\n")
    proc = cli("diff", *both, "-o", out)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert out.read_text() == "the analyst's notes\n"  # refused: nothing replaced
    assert cli("diff", *both, "-o", out, "--force").returncode == 0
    assert out.read_text() == first
    proc = cli("diff", *both, "-f", "csv", "-o", tmp_path / "t.body")  # -f says the format
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("text, want", [
    ("[blot]\nmax-wasted = '1MB'\n", "unknown table [blot] (did you mean [bloat]?)"),
    ("max-wasted = '1MB'\n", "outside any table: put it under [bloat]"),
    ("# nothing\n", "no [bloat] table"),
])
def test_a_misspelt_config_table_is_an_error(tmp_path, text, want):
    up, low = tmp_path / "up", tmp_path / "low"
    _write(up / "f")
    low.mkdir()
    config = tmp_path / "gates.toml"
    config.write_text(text)
    proc = cli("bloat", "--upper", up, "--lower", low, "--config", config, "-f", "json")
    assert proc.returncode == 2 and want in proc.stderr, proc.stderr


def test_no_store_says_where_stores_were_looked_for(tmp_path):
    empty = tmp_path / "evidence"
    empty.mkdir()
    proc = cli("containers", "--root", empty, "-f", "jsonl")
    assert proc.returncode == 0 and proc.stdout == ""
    notes = proc.stderr.splitlines()
    assert notes == ["ovforensics: note: no container: docker: /var/lib/docker: not there",
                     "ovforensics: note: no container: podman: /var/lib/containers/storage: not there",
                     "ovforensics: note: no container: containerd: /var/lib/containerd: not there"]
    proc = cli("diff", "web-1", "--root", empty)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "docker: /var/lib/docker: not there" in proc.stderr


def test_a_store_this_user_may_not_read_says_so_once():
    import pathlib
    import shutil
    import tempfile

    top = pathlib.Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's tmp_path is root's alone
    try:
        store = top / "evidence/var/lib/docker"
        store.mkdir(parents=True)
        for d in (top, top / "evidence", top / "evidence/var", top / "evidence/var/lib"):
            os.chmod(d, 0o755)
        os.chmod(store, 0o700)
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               sys.executable, "-m", "ovforensics", "containers", "--root",
                               str(top / "evidence")], capture_output=True, text=True, cwd=ROOT)
    finally:
        shutil.rmtree(top)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert any("docker: /var/lib/docker: cannot be read: permission denied (run as root" in line
               for line in lines), lines
    assert all(line.count("Permission denied") + line.count("permission denied") <= 1
               for line in lines)  # no errno said twice in a line


@pytest.mark.parametrize("args, want", [
    (["diff", "--bogus"], "No such option: --bogus"),
    (["dif"], "Did you mean 'diff'?"),
    (["diff", "--whiteouts"], "requires an argument"),
])
def test_usage_errors_are_one_line(args, want):
    proc = cli(*args)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ovforensics: error: ") and want in lines[0], \
        proc.stderr
    assert "╭" not in proc.stderr  # no boxed panel


def test_an_inventory_refuses_the_docker_format(tmp_path):
    proc = cli("containers", "--root", tmp_path, "-f", "docker")
    assert proc.returncode == 2 and "valid formats: table, csv, json, jsonl" in proc.stderr


# -- one rule for names, one name for a job ------------------------------------------------------
SAMPLE = [os.path.join(ROOT, "samples/rich", n) for n in ("upper.tar", "mid.tar", "base.tar")]
STACK = ["--upper", SAMPLE[0], "--lower", SAMPLE[1], "--lower", SAMPLE[2]]


@pytest.mark.parametrize("args", [["--hash", ""], ["--format", ""], ["--engine", ""],
                                  ["--whiteouts", " "], ["--only", ""], ["--xattr-ns", ""]])
def test_an_empty_name_is_refused_by_every_option(args):
    proc = cli("diff", *STACK, *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "empty" in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_names_are_read_alike_whatever_their_case():
    want = cli("diff", *STACK, "-f", "jsonl", "--hash", "sha256", "--whiteouts", "oci")
    assert want.returncode == 0 and want.stdout, want.stderr
    got = cli("diff", *STACK, "-f", "JSONL", "--hash", "SHA256", "--whiteouts", "OCI")
    assert (got.returncode, got.stdout) == (0, want.stdout), got.stderr


def test_timeline_takes_diffs_format_names_and_only():
    csv = cli("timeline", *STACK, "-f", "csv")
    assert csv.returncode == 0 and csv.stdout == cli("timeline", *STACK, "-f",
                                                     "timesketch-csv").stdout
    jsonl = cli("timeline", *STACK, "-f", "jsonl", "--only", "added")
    assert jsonl.returncode == 0, jsonl.stderr
    events = [json.loads(line) for line in jsonl.stdout.splitlines()]
    everything = [json.loads(line) for line in cli("timeline", *STACK, "-f", "jsonl").stdout
                  .splitlines()]
    assert events and {e["change"] for e in events} == {"added"}
    assert len(events) < len(everything)


def test_exclude_and_ignore_are_one_option():
    runs = {}
    for name in ("--exclude", "--ignore"):
        proc = cli("diff", *STACK, "-f", "jsonl", name, "/home")
        assert proc.returncode == 0, proc.stderr
        runs[name] = _paths(proc)
        bloat = cli("bloat", *STACK, "-f", "json", name, "/etc")
        assert bloat.returncode == 0, bloat.stderr
        runs[name + " bloat"] = json.loads(bloat.stdout)["gates"]["ignore"]
    assert runs["--exclude"] == runs["--ignore"] and "/etc/passwd" in runs["--exclude"]
    assert not [p for p in runs["--exclude"] if p.startswith("/home")]
    assert runs["--exclude bloat"] == runs["--ignore bloat"] and runs["--ignore bloat"]


def test_top_level_help_never_breaks_mid_sentence():
    proc = subprocess.run([sys.executable, "-m", "ovforensics", "--help"], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ, COLUMNS="200"))
    assert proc.returncode == 0
    recover = [line for line in proc.stdout.splitlines() if " recover " in line]
    # the docstring's own line breaks (after "(and with", after "if nothing") are gone: rich
    # wraps one paragraph at the terminal's width
    assert recover and "(and with --all-added the container's own files" in recover[0] and \
        "exit 1 if nothing was" in recover[0], proc.stdout


# -- feedback on long work: progress and the last line, on a terminal only -----------------------
def _on_a_pty(*args, cwd=ROOT):
    """The CLI with its stderr on a pty (stdout a pipe): exit status, stdout, what the terminal
    got."""
    import pty

    master, slave = pty.openpty()
    env = dict(os.environ, OVF_PROGRESS_DELAY="0", COLUMNS="120")
    proc = subprocess.Popen([sys.executable, "-m", "ovforensics", *map(str, args)], cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                            env=env)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out = proc.stdout.read()
    proc.wait()
    return proc.returncode, out, seen.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    """An upper of 3,000 files (the display updates every 256 items) over the sample's lower."""
    import tarfile

    top = tmp_path_factory.mktemp("many")
    upper = top / "upper.tar"
    with tarfile.open(upper, "w") as tf:
        for i in range(3000):
            info = tarfile.TarInfo(f"data/f{i:04d}")
            payload = b"%d\n" % i
            info.size = len(payload)
            import io

            tf.addfile(info, io.BytesIO(payload))
    return top, upper


def test_bloat_and_recover_show_progress_and_say_what_they_wrote(many_files):
    top, upper = many_files
    rc, out, seen = _on_a_pty("bloat", "--upper", upper, "--lower", SAMPLE[1], "-o",
                              top / "b.json", "--force")
    assert rc == 0 and out == b""
    assert "reading the upper layer" in seen and "items" in seen, seen[-500:]
    assert seen.rstrip().endswith(f"ovforensics: wrote the json report to {top / 'b.json'}"), \
        seen[-300:]
    rc, out, seen = _on_a_pty("recover", "--upper", upper, "--lower", SAMPLE[1], "--all-added",
                              "--to", top / "to")
    assert rc == 0, seen[-500:]
    assert "recovering" in seen and "/data/f" in seen, seen[-500:]
    assert len(os.listdir(top / "to/data")) == 3000


def test_diff_says_what_it_wrote_on_a_terminal_and_nothing_elsewhere(many_files, tmp_path):
    _top, upper = many_files
    rc, _out, seen = _on_a_pty("diff", "--upper", upper, "-o", tmp_path / "r.csv", "--meta")
    assert rc == 0
    last = seen.strip().splitlines()[-1].rpartition("\x1b[2K")[2]  # after the display's erase
    assert last == (f"ovforensics: wrote 3,001 records (csv) to {tmp_path / 'r.csv'}; run "
                    f"record: {tmp_path / 'r.csv'}.meta.json"), seen[-400:]
    proc = cli("diff", "--upper", upper, "-o", tmp_path / "s.csv", "--meta")
    assert proc.returncode == 0 and "wrote" not in proc.stderr


@pytest.mark.parametrize("option", ["--whiteouts", "--xattr-ns"])
def test_a_bad_rule_is_refused_before_any_container_is_looked_up(tmp_path, option):
    """The same check whatever is scanned: a container (here one that does not exist: the
    option is refused first), an upper, a tar."""
    for target in (["no-such-container", "--root", tmp_path], STACK):
        proc = cli("diff", *target, option, "foo")
        assert proc.returncode == 2 and "expected one of" in proc.stderr, proc.stderr
        assert "no such container" not in proc.stderr


def test_output_to_a_device_or_a_pipe_writes_to_it_and_never_replaces_it(tmp_path):
    """``-o /dev/null`` once renamed a regular file over /dev/null (with --force): a character
    device or a FIFO is now written to as it is, and a directory is refused."""
    import stat
    import threading

    before = os.stat("/dev/null")
    proc = cli("diff", *STACK, "-f", "csv", "-o", "/dev/null")
    assert proc.returncode == 0, proc.stderr
    proc = cli("diff", *STACK, "-f", "csv", "-o", "/dev/null", "--force")
    assert proc.returncode == 0, proc.stderr
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    proc = cli("diff", *STACK, "-f", "csv", "-o", "/dev/null", "--meta")
    assert proc.returncode == 2 and "a regular file" in proc.stderr
    assert not os.path.exists("/dev/null.meta.json")
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    proc = cli("diff", *STACK, "-f", "csv", "-o", fifo)
    reader.join(30)
    assert proc.returncode == 0, proc.stderr
    assert got and got[0].startswith("path,change") and "/etc/passwd" in got[0]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    proc = cli("diff", *STACK, "-f", "csv", "-o", tmp_path)
    assert proc.returncode == 2 and "a directory" in proc.stderr
