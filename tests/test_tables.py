"""Tables fit the terminal (issue 14): at 80 columns on a real terminal (a pty) no line of
``containers``, ``layers``, ``diff``, ``image`` and ``bloat`` is longer than 80; ids are 12
characters and sizes human unless ``--no-trunc``; the summary comes after the table; every
column asked for (``--hash``, ``--magic``) is shown."""
from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import bloat_env as be  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CID = hashlib.sha256(b"web").hexdigest()
MOUNT = hashlib.sha256(b"mount").hexdigest()
LAYER = hashlib.sha256(b"layer").hexdigest()
CHAIN = hashlib.sha256(b"chain").hexdigest()
IMAGE_ID = "sha256:" + hashlib.sha256(b"image").hexdigest()
DEEP = "/srv/" + "/".join(["a-rather-long-directory-name"] * 4) + "/webshell.php"


def _tty_run(*args: str, columns: int = 80, env_columns: bool = True) -> tuple[int, str]:
    """Run the CLI with its stdout on a pty of ``columns`` columns; its exit status and output."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    if env_columns:
        env["COLUMNS"] = str(columns)
    proc = subprocess.Popen([sys.executable, "-m", "ovforensics", *args], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            proc.kill()
            raise AssertionError("no output in 120 s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    proc.wait(timeout=60)
    return proc.returncode, b"".join(chunks).decode("utf-8").replace("\r\n", "\n")


def _column(text: str, header: str) -> str:
    """Every value of one column, continuation lines included, run together."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if f" {header} " in f" {line} ")
    rule = lines[head + 1] if set(lines[head + 1]) <= {"-", " "} else lines[head + 2]
    spans, start = [], None
    for i, ch in enumerate(rule + " "):
        if ch == "-" and start is None:
            start = i
        elif ch != "-" and start is not None:
            spans.append((start, i))
            start = None
    col = next(span for span in spans if lines[head][span[0]:span[1]].strip().startswith(header))
    out = []
    for line in lines[lines.index(rule) + 1:]:
        if not line.strip() or line.startswith("Summary:"):
            break
        out.append(line[col[0]:col[1]].rstrip())
    return "".join(out)


def _fits(text: str, width: int = 80) -> None:
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, f"{len(long)} lines longer than {width}:\n" + "\n".join(long[:5])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A hand-made Docker overlay2 store (the files ``docker.find`` reads), one container whose
    upper holds an added file deep down, a modified binary and a deletion."""
    root = tmp_path_factory.mktemp("evidence")
    d = root / "var/lib/docker"
    (d / "containers" / CID).mkdir(parents=True)
    (d / "containers" / CID / "config.v2.json").write_text(json.dumps({
        "ID": CID, "Name": "/web-frontend-with-a-long-name", "Driver": "overlay2",
        "Image": IMAGE_ID, "Config": {"Image": "registry.example.com/team/web-frontend:2024.10.1"},
        "Created": "2024-10-01T12:00:00.123456789Z",
        "State": {"Status": "exited", "ExitCode": 0, "StartedAt": "2024-10-01T12:00:01Z",
                  "FinishedAt": "2024-10-01T13:00:00Z"}}))
    mounts = d / "image/overlay2/layerdb/mounts" / CID
    mounts.mkdir(parents=True)
    (mounts / "mount-id").write_text(MOUNT)
    (mounts / "init-id").write_text(MOUNT + "-init")
    (mounts / "parent").write_text("sha256:" + CHAIN)
    ldb = d / "image/overlay2/layerdb/sha256" / CHAIN
    ldb.mkdir(parents=True)
    (ldb / "cache-id").write_text(LAYER)
    (ldb / "diff").write_text("sha256:" + CHAIN)
    for layer in (MOUNT, MOUNT + "-init", LAYER):
        (d / "overlay2" / layer / "diff").mkdir(parents=True)
    lower = d / "overlay2" / LAYER / "diff"
    (lower / "usr/bin").mkdir(parents=True)
    (lower / "usr/bin/find").write_bytes(b"\x7fELF original find" * 100)
    (lower / "etc").mkdir()
    (lower / "etc/gone.conf").write_text("x")
    upper = d / "overlay2" / MOUNT / "diff"
    (upper / "usr/bin").mkdir(parents=True)
    (upper / "usr/bin/find").write_bytes(b"\x7fELF trojaned find" * 200)
    os.chmod(upper / "usr/bin/find", 0o4755)
    (upper / DEEP.lstrip("/")).parent.mkdir(parents=True)
    (upper / DEEP.lstrip("/")).write_text("<?php system($_GET['c']); ?>")
    (upper / "etc").mkdir()
    (upper / "etc/gone.conf.wh").write_text("")  # not a whiteout: an odd name, added
    return root


def test_containers_fit_80_columns_and_no_trunc_shows_full_ids(store):
    code, out = _tty_run("containers", "--root", str(store))
    assert code == 0, out
    _fits(out)
    assert CID[:12] in out and CID not in out  # a short id, as docker ps
    assert _column(out, "names") == "web-frontend-with-a-long-name"  # wrapped, not lost
    assert _column(out, "image") == "registry.example.com/team/web-frontend:2024.10.1"
    code, out = _tty_run("containers", "--root", str(store), "--no-trunc")
    assert code == 0 and CID in out


def test_layers_fit_80_columns(store):
    code, out = _tty_run("layers", CID[:12], "--root", str(store))
    assert code == 0, out
    _fits(out)
    assert _column(out, "id").startswith(MOUNT[:12]) and LAYER[:12] in _column(out, "id")
    assert LAYER not in _column(out, "id")
    assert f"/var/lib/docker/overlay2/{LAYER}/diff" in _column(out, "dir")
    code, out = _tty_run("layers", CID[:12], "--root", str(store), "--no-trunc")
    assert code == 0 and LAYER in out


def test_terminal_width_without_columns_is_the_terminals(store):
    code, out = _tty_run("containers", "--root", str(store), columns=60, env_columns=False)
    assert code == 0
    _fits(out, 60)


def test_diff_fits_summary_last_and_shows_hash_and_magic(store):
    code, out = _tty_run("diff", CID[:12], "--root", str(store), "--hash", "sha256", "--magic")
    assert code == 0, out
    _fits(out)
    lines = out.rstrip("\n").splitlines()
    assert lines[-1].startswith("Summary:")  # after the table, not scrolled away
    assert lines[0].split()[:2] == ["change", "path"]
    # the columns asked for are shown: beside the others, or below each row where too many
    for column in ("sha256:", "lower sha256:", "magic:", "mime:", "exec flags: elf,exec-bit,setuid",
                   "new executable: true"):
        assert column in " ".join(out.split()), column
    digest = hashlib.sha256(b"\x7fELF trojaned find" * 200).hexdigest()
    assert digest[:12] in out and digest not in out
    assert DEEP in _column(out, "path")  # wrapped, nothing dropped
    code, out = _tty_run("diff", CID[:12], "--root", str(store), "--hash", "sha256", "--no-trunc")
    assert code == 0 and digest in out


def test_machine_formats_keep_full_values(store):
    done = subprocess.run([sys.executable, "-m", "ovforensics", "containers", "--root", str(store),
                           "-f", "json"], capture_output=True, text=True, env={**os.environ,
                                                                                "COLUMNS": "80"})
    assert done.returncode == 0
    row = json.loads(done.stdout)[0]
    assert row["id"] == CID and isinstance(row["upper_bytes"], int)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("example") / "oci"
    be.write_example(path)
    return path


def test_image_and_bloat_tables_fit_80_columns(example, store):
    code, out = _tty_run("image", str(example), "--no-config")
    assert code == 0, out
    _fits(out)
    assert "Layers (0 = bottom)" in out
    code, out = _tty_run("bloat", CID[:12], "--root", str(store), "--no-config")
    assert code == 0, out
    _fits(out)


def test_table_writer_fits_given_width():
    import io

    from ovforensics.records.record import ANOMALY, Change
    from ovforensics.writers.formats import TableWriter

    buf = io.StringIO()
    w = TableWriter(buf, width=80)
    w.write(Change(path=b"/x", change=ANOMALY, type="file", anomaly="opaque-mismatch",
                   detail="a very long detail " * 10))
    w.close()
    _fits(buf.getvalue())
    assert ("a very long detail " * 10).strip() in _column(buf.getvalue(), "what").replace("  ", " ") \
        or "a very long detail" in _column(buf.getvalue(), "what")
    assert buf.getvalue().rstrip().splitlines()[-1].startswith("Summary:")
