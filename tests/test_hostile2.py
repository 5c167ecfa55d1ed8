"""Hostile input, round 2 (issue 15): what an intruder plants in stores, archives and names.

Every input is built by the test. Bombs stay small on disk and are proven harmless by running the
CLI in a child whose address space is capped (``RLIMIT_AS``): streaming code fits, code that
holds a whole decompressed chunk or header does not.
"""
from __future__ import annotations

import base64
import errno
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import need

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def _cap(limit: int):
    def preexec():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return preexec


def cli(*args, mem: int | None = None, timeout: float = 300, env=None, **kw):
    """The CLI in a child (its address space capped at ``mem`` bytes when given)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "ovforensics", *map(os.fspath, args)],
                          capture_output=True, cwd=ROOT, timeout=timeout, env=full_env,
                          preexec_fn=_cap(mem) if mem else None, **kw)


def one_error_line(proc) -> str:
    """The child failed cleanly: exit 2, one ``ovforensics: error:`` line, no traceback."""
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ovforensics: error: "), err
    return lines[0]


def jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


# -- 2. zstd is streamed; the decompressed copy is capped --------------------------------------------

def zstd_zero_tar(path: Path, size: int, name: str = "zeros") -> Path:
    """A zstd tar holding one member of ``size`` zero bytes (~33 KB of zstd per GiB)."""
    import zstandard

    with open(path, "wb") as out:
        writer = zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False)
        info = tarfile.TarInfo(name)
        info.size = size
        writer.write(info.tobuf(format=tarfile.GNU_FORMAT))
        zeros = bytes(MiB)
        for _ in range(size // MiB):
            writer.write(zeros)
        writer.write(bytes(size % MiB) + bytes(-size % 512) + bytes(1024))
        writer.flush(zstandard.FLUSH_FRAME)
        writer.close()
    return path


BOMB = 640 * MiB   # decompressed; the child may map 384 MiB in all
MEM = 384 * MiB


@pytest.fixture(scope="module")
def zbomb(tmp_path_factory) -> Path:
    return zstd_zero_tar(tmp_path_factory.mktemp("zbomb") / "bomb.tar.zst", BOMB)


def test_zstd_layer_is_streamed_under_a_memory_cap(zbomb, tmp_path):
    """640 MiB of zeros from 20 KB of zstd, read by a child that may map 384 MiB: before, one
    decompress() call held the whole output ("corrupt zstd stream ()", a MemoryError)."""
    assert zbomb.stat().st_size < 64 * 1024
    proc = cli("diff", "--upper", zbomb, "-f", "jsonl", mem=MEM, env={"TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    (record,) = jsonl(proc.stdout)
    assert (record["path"], record["change"], record["size"]) == ("/zeros", "added", BOMB)


def test_decompressed_copy_is_capped_with_a_clear_error(zbomb, tmp_path):
    proc = cli("diff", "--upper", zbomb, "--max-decompressed", "100MiB", mem=MEM,
               env={"TMPDIR": str(tmp_path)})
    line = one_error_line(proc)
    assert str(zbomb) in line and "--max-decompressed" in line and "100 MiB" in line, line
    assert list(tmp_path.iterdir()) == []  # the temporary copy went with the error
    # the environment sets the same cap; the default (64 GiB) lets it through
    proc = cli("diff", "--upper", zbomb, env={"TMPDIR": str(tmp_path), "OVF_MAX_DECOMPRESSED": "1MB"})
    assert "more than 976.6 KiB" in one_error_line(proc)
    proc = cli("diff", "--upper", zbomb, "--max-decompressed", "lots")
    assert proc.returncode == 2 and b"--max-decompressed" in proc.stderr


def _docker_save(path: Path, layer: Path) -> Path:
    """An old-layout ``docker save`` archive around one layer file."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
                         "history": [{"created_by": "bomb"}]}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["bomb:1"],
                            "Layers": ["l0/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tf:
        tf.add(layer, arcname="l0/layer.tar")
        for name, data in (("config.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_zstd_image_layer_and_zstd_image_archive_are_streamed(zbomb, tmp_path):
    import zstandard

    archive = _docker_save(tmp_path / "image.tar", zbomb)
    packed = tmp_path / "image.tar.zst"
    with open(archive, "rb") as src, open(packed, "wb") as dst:
        zstandard.ZstdCompressor(level=1).copy_stream(src, dst)
    work = tmp_path / "tmp"
    work.mkdir()
    for image in (archive, packed):
        proc = cli("image", image, "-f", "json", "--no-config", mem=MEM,
                   env={"TMPDIR": str(work)})
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        report = json.loads(proc.stdout)
        assert report["totals"]["stored_bytes"] == BOMB, report["totals"]
        proc = cli("image", image, "--no-config", "--max-decompressed", "10MiB",
                   env={"TMPDIR": str(work)})
        assert "--max-decompressed" in one_error_line(proc)


@pytest.mark.parametrize("cut", [9, 40, -3])
def test_truncated_zstd_is_an_error_not_a_short_layer(tmp_path, cut):
    """zstandard's stream reader says nothing when a stream stops inside a frame: the frames'
    structure is checked first. A complete tar in frame one, then zero padding (which tar
    readers skip) in a second frame cut short: a silent reader would see a whole layer."""
    import zstandard

    whole = zstd_zero_tar(tmp_path / "small.tar.zst", 3 * MiB).read_bytes()
    padding = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(bytes(MiB))
    cut_file = tmp_path / "cut.tar.zst"
    cut_file.write_bytes(whole + padding[:cut])
    line = one_error_line(cli("diff", "--upper", cut_file))
    assert "truncated zstd stream" in line, line
    (tmp_path / "ok.tar.zst").write_bytes(whole + padding)
    assert cli("diff", "--upper", tmp_path / "ok.tar.zst").returncode == 0


def test_zstd_frames_and_skippable_frames(tmp_path):
    import zstandard

    from ovforensics.layers.tarlayer import TarLayer

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("f0")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    raw = buf.getvalue()
    # one tar split over two frames, with a skippable frame between
    half = len(raw) // 2
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"12345"
    path = tmp_path / "frames.tar.zst"
    path.write_bytes(zstandard.compress(raw[:half]) + skippable + zstandard.compress(raw[half:]))
    with TarLayer(path) as layer:
        assert set(layer.listdir(())) == {b"f0"}


# -- 5. PAX / GNU long-name headers are bounded ---------------------------------------------------

def _huge_extended(path: Path, kind: bytes, size: int = 1 << 40) -> Path:
    """A 3 KB archive whose first header claims ``size`` bytes of extended header."""
    ext = tarfile.TarInfo("././@LongLink" if kind in (b"L", b"K") else "PaxHeader/victim")
    ext.type = kind
    ext.size = size
    victim = tarfile.TarInfo("victim")
    victim.size = 5
    path.write_bytes(ext.tobuf(format=tarfile.GNU_FORMAT) + victim.tobuf(format=tarfile.GNU_FORMAT)
                     + b"hello".ljust(512, b"\0") + bytes(1024))
    return path


@pytest.mark.parametrize("kind", [b"x", b"g", b"L", b"K"])
def test_terabyte_extended_header_is_refused_naming_the_member(tmp_path, kind):
    """Before: tarfile read(1 TiB) -> MemoryError traceback, exit 1."""
    archive = _huge_extended(tmp_path / "huge.tar", kind)
    assert archive.stat().st_size < 4096
    line = one_error_line(cli("diff", "--upper", archive, mem=512 * MiB))
    assert str(archive) in line and "1099511627776 bytes" in line and "header" in line, line
    assert "'././@LongLink'" in line or "'PaxHeader/victim'" in line, line
    # the image reader refuses it the same way
    line = one_error_line(cli("image", archive, "--no-config", mem=512 * MiB))
    assert "1099511627776 bytes" in line, line


def test_oversized_pax_header_names_the_member_it_precedes(tmp_path):
    """A 17 MiB PAX header (past the 16 MiB bound, present in full): the member it describes
    is named."""
    from ovforensics.layers.tarlayer import MAX_EXTENDED

    big = "x" * (MAX_EXTENDED + MiB)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("evil\x1b]52;c;aGk=\x07name")
        info.pax_headers = {"comment": big}
        tf.addfile(info)
    path = tmp_path / "pax.tar"
    path.write_bytes(buf.getvalue())
    line = one_error_line(cli("diff", "--upper", path))
    assert "member 'evil\\x1b]52;c;aGk=\\x07name'" in line, line


def test_large_but_real_extended_headers_still_read(tmp_path):
    """A 60,000-byte name (GNU long name) and a 1 MiB PAX record are within the bound."""
    name = "/".join(["d" * 20] * 3_000) + "/leaf"
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            info = tarfile.TarInfo(name)
            info.size = 2
            if fmt == tarfile.PAX_FORMAT:
                info.pax_headers = {"SCHILY.xattr.user.big": "v" * MiB}
            tf.addfile(info, io.BytesIO(b"hi"))
        path = tmp_path / f"deep-{fmt}.tar"
        path.write_bytes(buf.getvalue())
        from ovforensics.layers.tarlayer import TarLayer

        with TarLayer(path) as layer:
            assert not layer.errors
            parts = tuple(name.encode().split(b"/"))
            listing = layer.listdir(parts[:-1])
            assert listing[b"leaf"].size == 2


# -- 6. sparse tar members are compared by their data regions ---------------------------------------

PiB = 1 << 50


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(name, **opts)`` mounts a small tmpfs under tmp_path; unmounted after."""
    need(os.geteuid() == 0, "mounting a tmpfs needs root")
    mounted = []

    def mount(name="fs", **opts):
        target = tmp_path / name
        target.mkdir()
        options = ",".join(f"{k}={v}" for k, v in opts.items()) or "size=16m"
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True)
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def _sparse_file(path: Path, size: int, data: dict[int, bytes]) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, chunk in data.items():
            fh.seek(offset)
            fh.write(chunk)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    return path


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_petabyte_sparse_members_compare_by_their_sparse_maps(tmpfs, tmp_path, fmt):
    """Two same-size 1 PiB sparse members (GNU tar --sparse, old GNU and PAX 1.0 maps): before,
    a plain diff compared a petabyte of zeros (and old-GNU maps, padded with empty slots, were
    read as corrupt)."""
    need(subprocess.run(["tar", "--version"], capture_output=True).returncode == 0, "GNU tar")
    fs = tmpfs("sparse", size="16m")
    tars = {}
    for name, tail in (("a", b"tail"), ("same", b"tail"), ("b", b"tAil")):
        (fs / name).mkdir()
        _sparse_file(fs / name / "big", PiB, {4096: b"head", PiB // 2: tail, PiB - 3: b"end"})
        tars[name] = tmp_path / f"{name}.tar"
        subprocess.run(["tar", "--sparse", f"--format={fmt}", "-C", str(fs / name), "-cf",
                        str(tars[name]), "big"], check=True)
        assert tars[name].stat().st_size < 64 * 1024
    proc = cli("diff", "--upper", tars["a"], "--lower", tars["b"], "-f", "jsonl", timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    (record,) = jsonl(proc.stdout)
    assert (record["change"], record["what"], record["size"]) == ("modified", ["content"], PiB)
    proc = cli("diff", "--upper", tars["a"], "--lower", tars["same"], "-f", "jsonl", timeout=120)
    assert proc.returncode == 0 and jsonl(proc.stdout) == [], proc.stdout[:500]
    # a sparse member over a sparse file on disk: the tar's map beside SEEK_DATA
    proc = cli("diff", "--upper", tars["b"], "--lower", fs / "a", "-f", "jsonl", timeout=120)
    (record,) = jsonl(proc.stdout)
    assert record["what"] == ["content"], record
    proc = cli("diff", "--upper", tars["a"], "--lower", fs / "same", "-f", "jsonl", timeout=120)
    assert jsonl(proc.stdout) == [], proc.stdout[:500]
    # and the bytes read back through the map are the file's
    from ovforensics.layers.tarlayer import TarLayer

    with TarLayer(tars["b"]) as layer:
        entry = layer.listdir(())[b"big"]
        with entry.open() as fh:
            fh.seek(PiB // 2 - 2)
            assert fh.read(8) == b"\0\0tAil\0\0"
            fh.seek(PiB - 4)
            assert fh.read(10) == b"\0end"


# -- hand-made containers-storage stores (the files podman writes, built here) ----------------------

STORE = "var/lib/containers/storage"


def lid(n: int) -> str:
    return f"{n:064x}"


def podman_store(root: Path, chain: int, containers: list[dict], mangle=None,
                 dirs: bool = True) -> Path:
    """A containers-storage overlay store under ``root``: an image of ``chain`` layers (each
    the parent of the next), one read-write layer per container on top of it. ``mangle``
    rewrites containers.json's text (to plant what ``json.dumps`` would not write)."""
    store = root / STORE
    for sub in ("overlay-containers", "overlay-layers", "overlay-images", "overlay"):
        (store / sub).mkdir(parents=True, exist_ok=True)
    layers = [{"id": lid(n), **({"parent": lid(n - 1)} if n else {})} for n in range(chain)]
    for n, c in enumerate(containers):
        c.setdefault("layer", lid(1_000_000 + n))
        layers.append({"id": c["layer"], **({"parent": lid(chain - 1)} if chain else {})})
    (store / "overlay-layers/layers.json").write_text(json.dumps(layers))
    for layer in layers if dirs else layers[chain:]:
        (store / "overlay" / layer["id"] / "diff").mkdir(parents=True, exist_ok=True)
    text = json.dumps(containers)
    (store / "overlay-containers/containers.json").write_bytes(
        mangle(text) if mangle is not None else text.encode())
    return store


def cid(n: int) -> str:
    return f"{n:04x}" + "c" * 60


# -- 9. a podman parent chain is walked in linear time, capped at 4,096 ------------------------------

def test_podman_parent_chain_is_capped_with_a_warning(tmp_path):
    """A 100,000-layer chain (a 10 MB layers.json): before, a quadratic walk (~150 s here) and
    no cap. Now the container past the cap is a warning naming layers.json, the others listed."""
    podman_store(tmp_path, 100_000, [{"id": cid(1), "names": ["deep"]}], dirs=False)
    store = tmp_path / STORE
    # a second store file lists a sane container beside it: a short chain of its own
    layers = json.loads((store / "overlay-layers/layers.json").read_text())
    layers.append({"id": lid(2_000_000)})
    (store / "overlay" / lid(2_000_000) / "diff").mkdir(parents=True)
    (store / "overlay-layers/layers.json").write_text(json.dumps(layers))
    (store / "overlay-containers/volatile-containers.json").write_text(json.dumps(
        [{"id": cid(2), "names": ["fine"], "layer": lid(2_000_000)}]))
    proc = cli("containers", "--root", tmp_path, "-f", "jsonl", timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert [row["names"] for row in jsonl(proc.stdout)] == [["fine"]]
    err = proc.stderr.decode()
    assert "overlay-layers/layers.json" in err and "longer than 4096 layers" in err, err
    assert err.count("\n") == 1, err


def test_podman_parent_chain_under_the_cap_is_read_whole(tmp_path):
    podman_store(tmp_path, 4095, [{"id": cid(1), "names": ["tall"]}])
    proc = cli("layers", "tall", "--root", tmp_path, "-f", "jsonl", timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    rows = jsonl(proc.stdout)
    assert len(rows) == 4096 and rows[-1]["id"] == lid(0) and rows[1]["id"] == lid(4094)


# -- 3. messages that quote evidence never reach a terminal raw --------------------------------------

HOSTILE = ["\x1b]52;c;b3ducWQ=\x07", "\x1b[2J", "a\rb", "\u202eevil", "\x9b31m", "bell\x07"]
RAW = [b"\x1b", b"\x07", "\u202e".encode(), "\x9b".encode(), b"\x00"]


def on_a_pty(*args, env=None) -> tuple[int, bytes]:
    """Run the CLI with stderr on a real pseudo-terminal; what the terminal received."""
    import pty
    import select

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "ovforensics", *map(os.fspath, args)],
                                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=slave, env=dict(os.environ, **(env or {})))
        os.close(slave)
        slave = -1
        out = b""
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                proc.kill()
                raise AssertionError("no output from the CLI on the pty in 60 s")
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: the child closed its side
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(60), out
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)


def assert_escaped(out: bytes) -> str:
    for raw in RAW:
        assert raw not in out, (raw, out)
    # the pty turns each "\n" into "\r\n" (onlcr): any other "\r" came from the evidence
    assert b"\r" not in out.replace(b"\r\n", b""), out
    return out.decode()


def test_store_names_and_ids_in_errors_and_warnings_are_escaped_on_a_pty(tmp_path):
    containers = [{"id": cid(1), "names": ["dup", HOSTILE[0], HOSTILE[1]]},
                  {"id": cid(2), "names": ["dup", HOSTILE[2], HOSTILE[3]]},
                  # a damaged entry: its id and name are quoted in the warning
                  {"id": HOSTILE[1] + "x" * 20, "names": [HOSTILE[4] + HOSTILE[5]],
                   "layer": "not/a/layer"}]
    podman_store(tmp_path, 2, containers)
    rc, out = on_a_pty("diff", "dup", "--root", tmp_path)
    assert rc == 2
    text = assert_escaped(out)
    assert "ambiguous" in text and "\\x1b]52;c;b3ducWQ=\\x07" in text and "\\u202eevil" in text, text
    rc, out = on_a_pty("containers", "--root", tmp_path, "-f", "jsonl")
    assert rc == 0
    text = assert_escaped(out)
    assert "warning" in text and "not/a/layer" in text, text
    rc, out = on_a_pty("diff", HOSTILE[0] + "nope", "--root", tmp_path)  # the analyst's own query
    assert rc == 2 and "no such container" in assert_escaped(out)


def test_archive_tags_and_member_names_in_errors_are_escaped_on_a_pty(tmp_path):
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tf:
        info = tarfile.TarInfo("f")
        tf.addfile(info)
    archive = tmp_path / "image.tar"
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
                         "history": [{"created_by": "x"}]}).encode()
    manifest = json.dumps([{"Config": "c.json", "RepoTags": [f"{HOSTILE[0]}:1", f"{HOSTILE[3]}:2"],
                            "Layers": ["l.tar"]},
                           {"Config": "c.json", "RepoTags": [f"{HOSTILE[2]}{HOSTILE[1]}:3"],
                            "Layers": ["l.tar"]}]).encode()
    with tarfile.open(archive, "w") as tf:
        tf.add(layer, arcname="l.tar")
        for name, data in (("c.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    rc, out = on_a_pty("image", archive, "--no-config")
    assert rc == 2
    text = assert_escaped(out)
    assert "holds 2 images" in text and "\\x1b[2J" in text, text
    # a bad member name quoted in a tar layer's error
    bad = tmp_path / "bad.tar"
    ext = tarfile.TarInfo(HOSTILE[0] + HOSTILE[2])
    ext.type, ext.size = b"L", 1 << 40
    bad.write_bytes(ext.tobuf(format=tarfile.GNU_FORMAT) + bytes(1024))
    rc, out = on_a_pty("diff", "--upper", bad)
    assert rc == 2 and "GNU long-name header" in assert_escaped(out)


# -- 4. store strings that are no valid text: carried exactly, never fatal -----------------------------

def _bad_names_store(root: Path) -> Path:
    """Three podman containers: a fine one, one named with a lone surrogate escape (as the JSON
    text holds it), one whose name holds a raw 0xff byte (no UTF-8 writer makes that)."""
    containers = [{"id": cid(1), "names": ["good"]}, {"id": cid(2), "names": ["SURR"]},
                  {"id": cid(3), "names": ["RAWB"]}]
    return podman_store(root, 2, containers, mangle=lambda text: text.replace(
        "SURR", "/bad\\ud800name").encode().replace(b"RAWB", b"raw\xffbyte"))


@pytest.mark.parametrize("env", [{}, {"LC_ALL": "C", "LANG": "C"},
                                 {"PYTHONIOENCODING": "utf-8:surrogateescape"},
                                 {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}])
def test_surrogate_and_undecodable_names_in_every_format(tmp_path, env):
    """Before: one such name hid every container from ``containers`` (an encode error) and,
    where stdout's error handler is surrogateescape (the C locale), wrote a raw 0xff."""
    _bad_names_store(tmp_path)
    for fmt in ("jsonl", "json", "csv", "table"):
        proc = cli("containers", "--root", tmp_path, "-f", fmt, env=env)
        assert proc.returncode == 0 and not proc.stderr, (fmt, proc.stderr)
        assert proc.stdout.isascii(), (fmt, proc.stdout)  # exact, and nothing a locale can mangle
        text = proc.stdout.decode("ascii")
        assert all(f"{cid(n)[:12]}" in text for n in (1, 2, 3)), (fmt, text)
        if fmt == "jsonl":
            rows = {r["id"][:4]: r for r in jsonl(proc.stdout)}
            assert rows["0002"]["names"] == ["/bad\ud800name"]  # the same code units come back
            assert rows["0003"]["names"] == ["raw\udcffbyte"]
            assert [base64.b64decode(b) for b in rows["0002"]["names_b64"]] == [b"/bad\xed\xa0\x80name"]
            assert [base64.b64decode(b) for b in rows["0003"]["names_b64"]] == [b"raw\xffbyte"]
            assert "names_b64" not in rows["0001"]
        else:
            assert "/bad\\ud800name" in text and "raw\\udcffbyte" in text, (fmt, text)


def test_surrogate_names_do_not_break_diff_meta_bloat_layers(tmp_path):
    _bad_names_store(tmp_path)
    for args in (("diff", "0002", "--meta", "-f", "jsonl"), ("diff", "good", "--meta", "-f", "json"),
                 ("bloat", "0002", "-f", "json", "--no-config"), ("bloat", "0003", "-f", "table", "--no-config"),
                 ("bloat", "0002", "-f", "html", "--no-config"), ("layers", "0002", "-f", "csv"),
                 ("layers", b"/bad\xed\xa0\x80name", "-f", "jsonl"), ("layers", b"raw\xffbyte")):
        proc = cli(*args, "--root", tmp_path, env={"LC_ALL": "C"})
        assert proc.returncode == 0 and not proc.stderr, (args, proc.stderr)
        assert proc.stdout.isascii() or b"\xff" not in proc.stdout, args
        proc.stdout.decode("utf-8")
    meta = jsonl(cli("diff", "0002", "--meta", "-f", "jsonl", "--root", tmp_path).stdout)[0]["meta"]
    assert "/bad\ud800name" in json.dumps(meta, ensure_ascii=False)


def test_image_history_with_a_lone_surrogate_gets_its_report(tmp_path):
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tf:
        info = tarfile.TarInfo("f")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    archive = _docker_save(tmp_path / "image.tar", layer)
    # rewrite config.json with a surrogate escape and a raw 0xff in the history
    with tarfile.open(archive) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
    members["config.json"] = members["config.json"].replace(
        b'"created_by": "bomb"', b'"created_by": "/bin/sh -c #(nop) \\ud800 \xff"')
    with tarfile.open(archive, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    for fmt in ("json", "jsonl", "csv", "table", "html"):
        rows = ("--rows", "layers") if fmt == "csv" else ()
        proc = cli("image", archive, "-f", fmt, "--no-config", *rows, env={"LC_ALL": "C"})
        assert proc.returncode == 0 and not proc.stderr, (fmt, proc.stderr)
        assert b"\xff" not in proc.stdout and b"\\ud800" in proc.stdout, (fmt, proc.stdout[:3000])


# -- 7. recover onto a full disk, or one out of inodes ------------------------------------------------

def _manifest_rows(to: Path) -> tuple[list[dict], list[dict]]:
    import csv

    with open(to / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows, jsonl((to / "manifest.jsonl").read_bytes())


@pytest.mark.parametrize("limits, files, size", [
    ({"size": "256k", "nr_inodes": "64"}, 20, 32 * 1024),   # out of blocks
    ({"size": "16m", "nr_inodes": "24"}, 40, 100),          # out of inodes
])
def test_recover_onto_a_full_destination(tmpfs, tmp_path, limits, files, size):
    """Before: an OSError traceback (exit 1) and truncated .ovf-manifest-*.partial files, the
    files already recovered in no manifest. Now: exit 2 naming the cause, a complete manifest of
    what was written (the failed entry's row included), no partial file of any kind."""
    low, up = tmp_path / "low", tmp_path / "up"
    (low / "d").mkdir(parents=True)
    up.mkdir()
    for n in range(files):
        (low / "d" / f"f{n:02d}").write_bytes(os.urandom(size))
    dest = tmpfs("dest", **limits)
    to = dest / "out"
    proc = cli("recover", "--upper", up, "--lower", low, "/d", "--to", to)
    line = one_error_line(proc)
    assert "No space left on device" in line and "recovery stopped at /d/f" in line, line
    assert sorted(p.name for p in to.iterdir()) == ["d", "manifest.csv", "manifest.jsonl"]
    rows, records = _manifest_rows(to)
    assert [r["path"] for r in rows] == [r["path"] for r in records]
    on_disk = {f"/d/{p.name}": p for p in (to / "d").iterdir()}
    recovered = {r["path"]: r for r in rows if r["status"] == "recovered" and r["type"] == "file"}
    assert set(on_disk) == set(recovered) and 0 < len(recovered) < files, (sorted(on_disk), rows)
    import hashlib

    for path, row in recovered.items():  # every file written is whole and in the manifest
        assert hashlib.sha256(on_disk[path].read_bytes()).hexdigest() == row["sha256"]
        assert on_disk[path].read_bytes() == (low / path.lstrip("/")).read_bytes()
    assert rows[-1]["status"] == "error" and "No space left on device" in rows[-1]["detail"], rows[-1]
    # a destination full before anything is written: exit 2, nothing left behind
    proc = cli("recover", "--upper", up, "--lower", low, "/d", "--to", dest / "again")
    assert "No space left on device" in one_error_line(proc)
    assert not any(p.name.startswith(".ovf-") for p in dest.rglob("*"))


def test_recover_keeps_holes_of_a_sparse_original(tmp_path):
    """Before: a sparse original was written dense (a 1 TiB one would fill --to)."""
    low, up, to = tmp_path / "low", tmp_path / "up", tmp_path / "to"
    low.mkdir()
    up.mkdir()
    _sparse_file(low / "sparse", 256 * MiB, {5 * MiB: b"data", 256 * MiB - 4: b"tail"})
    _sparse_file(low / "endhole", 64 * MiB + 7, {0: b"head"})
    proc = cli("recover", "--upper", up, "--lower", low, "/sparse", "/endhole", "--to", to)
    assert proc.returncode == 0, proc.stderr.decode()
    for name in ("sparse", "endhole"):
        copy, orig = to / name, low / name
        assert copy.stat().st_size == orig.stat().st_size
        assert copy.stat().st_blocks * 512 <= 2 * MiB, (name, copy.stat().st_blocks)  # 1 MiB grain
        with open(copy, "rb") as a, open(orig, "rb") as b:
            while True:
                ca, cb = a.read(MiB), b.read(MiB)
                assert ca == cb
                if not ca:
                    break


# -- OCI-form directory layers under --whiteouts auto ------------------------------------------------

def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _changes(stdout: bytes) -> list[tuple]:
    return [(r["change"], r["path"], r["via"] or r.get("anomaly") or "") for r in jsonl(stdout)
            if "meta" not in r]


def test_hand_made_oci_layer_is_read_as_oci_in_auto_and_the_run_record_says_so(tmp_path):
    """A directory layer in OCI/AUFS form (``.wh.`` files, ``.wh..wh..opq``; no 0/0 device, no
    overlay xattr). Before: whiteout-lookalike anomalies, and a hint naming ``fuse``."""
    lower = _tree(tmp_path / "lower", {"a/x": b"x", "b/y": b"y", "keep": b"k"})
    upper = _tree(tmp_path / "upper", {".wh.a": b"", "b/.wh..wh..opq": b"", "b/new": b"n"})
    want = [("deleted", "/a", "wh-file"), ("deleted", "/a/x", "parent"), ("added", "/b/new", ""),
            ("deleted", "/b/y", "opaque")]
    proc = cli("diff", "--upper", upper, "--lower", lower, "-f", "jsonl", "--meta")
    assert proc.returncode == 0, proc.stderr
    assert _changes(proc.stdout) == want
    meta = jsonl(proc.stdout)[0]["meta"]
    assert meta["layers"][0]["rules"] == "oci" and "OCI/AUFS" in meta["layers"][0]["rules_auto"]
    assert meta["layers"][1]["rules"] == "kernel" and "rules_auto" not in meta["layers"][1]
    assert b"note: " + os.fsencode(upper) + b": auto: OCI/AUFS markers" in proc.stderr
    # the same layer as a tar gives the same records (tar layers are OCI in auto already)
    with tarfile.open(tmp_path / "upper.tar", "w") as tf:
        tf.add(upper, arcname=".")
    proc = cli("diff", "--upper", tmp_path / "upper.tar", "--lower", lower, "-f", "jsonl")
    assert _changes(proc.stdout) == want
    # --whiteouts kernel reads the files as the kernel would, with a hint naming oci
    proc = cli("diff", "--upper", upper, "--lower", lower, "-f", "jsonl", "--whiteouts", "kernel")
    records = jsonl(proc.stdout)
    assert ("anomaly", "/.wh.a", "whiteout-lookalike") in _changes(proc.stdout)
    assert any("--whiteouts oci" in (r.get("detail") or "") for r in records), records


def test_kernel_made_upper_with_wh_names_stays_kernel(tmp_path, overlay):
    """The kernel is the judge: a container that creates ``.wh.a`` through a real overlay mount
    makes an ordinary file, and the mount marks the upper root (``trusted.overlay.uuid``), so
    auto keeps kernel rules and the merged view agrees."""
    lower = _tree(tmp_path / "lower", {"a/x": b"x", "keep": b"k"})
    upper = tmp_path / "upper"
    upper.mkdir()
    merged = overlay.mount([lower], upper=upper)
    (merged / ".wh.a").write_bytes(b"")
    (merged / "new").write_bytes(b"n")
    overlay.umount(merged)
    assert sorted(os.listdir(upper)) == [".wh.a", "new"]
    proc = cli("diff", "--upper", upper, "--lower", lower, "-f", "jsonl", "--meta")
    assert _changes(proc.stdout) == [("added", "/.wh.a", ""), ("anomaly", "/.wh.a", "whiteout-lookalike"),
                                     ("added", "/new", "")]
    assert jsonl(proc.stdout)[0]["meta"]["layers"][0]["rules"] == "kernel"
    assert b"note:" not in proc.stderr
    merged = overlay.mount([upper, lower], ro=True)  # the kernel's view of the same stack
    assert sorted(os.listdir(merged)) == [".wh.a", "a", "keep", "new"]


def test_fuse_marks_in_a_hand_made_layer_are_read_with_fuse_rules(tmp_path):
    lower = _tree(tmp_path / "lower", {"b/y": b"y", "c": b"c"})
    upper = _tree(tmp_path / "upper", {".wh.c": b"", "b/n": b"n"})
    os.setxattr(upper / "b", "user.fuseoverlayfs.opaque", b"y")
    proc = cli("diff", "--upper", upper, "--lower", lower, "-f", "jsonl", "--meta")
    assert _changes(proc.stdout) == [("added", "/b/n", ""), ("deleted", "/b/y", "opaque"),
                                     ("deleted", "/c", "wh-file")]
    assert jsonl(proc.stdout)[0]["meta"]["layers"][0]["rules"] == "fuse"


# -- 8. deep paths: memory linear in depth, in directories and in tars --------------------------------

from test_hostile import chain, deep_tmp, rmtree_deep  # noqa: E402,F401  (deep_tmp: a fixture)

DEPTH = 10_000


def test_10000_deep_directories_under_a_memory_cap(deep_tmp):
    """A 10,000-deep chain in an upper and a lower, the bottom file changed: before, each level
    held its path as a tuple of its components (1.3 GB peak here, docs/evidence.md's "still
    open"); now deep paths share their prefixes and the child may map 384 MiB."""
    for layer, data in (("lower", b"old"), ("upper", b"new")):
        with chain(deep_tmp / layer, [b"d"] * DEPTH) as fd:
            with open(os.open(b"leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as fh:
                fh.write(data)
            os.utime(b"leaf", ns=(10**18, 10**18), dir_fd=fd)
    proc = cli("diff", "--upper", deep_tmp / "upper", "--lower", deep_tmp / "lower", "-f", "jsonl",
               mem=384 * MiB)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    (record,) = jsonl(proc.stdout)
    assert record["path"] == "/d" * DEPTH + "/leaf" and record["what"] == ["content"], record["what"]


def test_20000_deep_tar_member_under_a_memory_cap(tmp_path):
    """One member 20,000 directories deep (a 51 KB archive, 234 bytes gzipped): before, the index
    held a tuple per ancestor (3.2 GB peak, 26 s here)."""
    import gzip

    depth = 20_000
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("/".join(["d"] * depth) + "/leaf")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    archive = tmp_path / "deep.tar.gz"
    archive.write_bytes(gzip.compress(buf.getvalue()))
    assert archive.stat().st_size < 4096
    proc = cli("diff", "--upper", archive, "-f", "jsonl", mem=512 * MiB)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == depth + 1
    last = json.loads(lines[-1])
    assert last["path"] == "/d" * depth + "/leaf" and last["size"] == 2
    assert json.loads(lines[123])["path"] == "/d" * 124 and json.loads(lines[123])["type"] == "dir"


def test_deep_paths_behave_as_the_tuples_they_stand_for():
    from ovforensics.layers.deeppath import DEEP, DeepPath, child, deep, join

    parts = tuple(b"n%d" % i for i in range(3 * DEEP))
    node = ()
    for name in parts:
        node = child(node, name)
    assert type(node) is DeepPath and node == parts and parts == node
    assert hash(node) == hash(parts) and {parts: 1}[node] == 1 and {node: 2}[parts] == 2
    assert node[:-1] is node.parent and node[:DEEP] == parts[:DEEP] and node[:5] == parts[:5]
    assert node[7] == parts[7] and node[-1] == parts[-1] and node[DEEP + 3] == parts[DEEP + 3]
    assert list(node) == list(parts) and node[2:9] == parts[2:9] and b"n40" in node
    assert join(node) == b"/".join(parts) and join(node[:-1]) == b"/".join(parts[:-1])
    assert node + (b"x",) == parts + (b"x",) and sorted([node, parts[:40]]) == [parts[:40], node]
    other = deep(parts[:-1] + (b"zz",))
    assert other != node and node != other and not (other == parts)


@pytest.mark.parametrize("make, rules", [
    (lambda d: os.mkfifo(d / ".wh.a"), "kernel"),            # the oracle's case: a FIFO named .wh.a
    (lambda d: (d / ".wh.d").mkdir(), "kernel"),             # a directory named .wh.d
    (lambda d: (d / ".wh.f").write_bytes(b"data"), "kernel"),  # a .wh. file with data
    (lambda d: (d / ".wh.f").write_bytes(b""), "oci"),       # what an OCI marker is
    (lambda d: (d / ".wh..wh.plnk").mkdir(), "kernel"),      # AUFS bookkeeping alone: no marker
])
def test_only_empty_regular_wh_files_make_a_layer_oci(tmp_path, make, rules):
    """Found by the kernel oracle (tests/test_kernel_oracle.py): a plain lower holding a FIFO
    named ``.wh.a`` was read as OCI, and the kernel's whiteout over it went unreported."""
    from ovforensics.layers.formguess import guess_rules

    layer = _tree(tmp_path / "layer", {"keep": b"k"})
    make(layer)
    assert guess_rules(os.fsencode(layer))[0] == rules


def test_undecodable_bytes_in_a_layer_digest_are_no_crash(tmp_path):
    """Found by fuzz/fuzz_podman.py once store files kept bad bytes: a ``diff-digest`` holding
    one went into the ChainID's ``.encode()`` (an exception out of ``find``). A digest that is
    not ASCII is no digest: the container is listed without it."""
    podman_store(tmp_path, 2, [{"id": cid(1), "names": ["web"]}])
    path = tmp_path / STORE / "overlay-layers/layers.json"
    layers = json.loads(path.read_text())
    layers[0]["diff-digest"] = "sha256:BAD"
    layers[1]["diff-digest"] = "sha256:" + "5" * 64
    path.write_bytes(json.dumps(layers).encode().replace(b"BAD", b"\xb3\xff"))
    from ovforensics import containers
    from ovforensics.stores.base import Container

    (found,) = [c for c in containers(str(tmp_path)) if isinstance(c, Container)]
    assert [info.diff_id for info in found.lowers] == ["sha256:" + "5" * 64, None]
    proc = cli("layers", "web", "--root", tmp_path, "-f", "jsonl")
    assert proc.returncode == 0, proc.stderr


# -- Also: a tar of very many members ----------------------------------------------------------------

def test_200000_member_tar_is_indexed_compactly(tmp_path):
    """200,000 members in one directory (1.9 MB gzipped), read by a child that may map
    288 MiB. Before: every member's TarInfo (PAX dict, strings) stayed in the index and the
    directory was listed as 200,000 Entry objects at once (322 MB peak; MemoryError under the
    cap). Now: a compact record per member, siblings share their parent's components, and a
    directory of more than bigdir.BIG members makes its entries when looked up (170 MB peak)."""
    import gzip

    count = 200_000
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(count):
            info = tarfile.TarInfo("big/f%06d" % i)
            info.mtime = 1_700_000_000
            tf.addfile(info)
    archive = tmp_path / "many.tar.gz"
    archive.write_bytes(gzip.compress(buf.getvalue(), 1))
    proc = cli("diff", "--upper", archive, "-f", "jsonl", mem=288 * MiB,
               env={"TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == count + 1
    assert json.loads(lines[1])["path"] == "/big/f000000"
    assert json.loads(lines[-1])["path"] == "/big/f%06d" % (count - 1)
