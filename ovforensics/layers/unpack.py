"""Compressed evidence (a layer tar, an image archive), decompressed into a capped temporary file.

A compressed archive is decompressed once, into an anonymous file in the system temp dir
(``$TMPDIR``), so that members can be read later by ``pread``. Two things an attacker controls are
bounded here:

- **memory**: every format is streamed in chunks of at most :data:`CHUNK` bytes of output. zstd
  is read through ``zstandard``'s stream reader (``read(CHUNK)`` never returns more); a
  ``decompressobj().decompress(chunk)`` would hand back the whole output of a chunk at once, and
  1 MiB of zstd can stand for 32 GiB of zeros. The stream reader is silent about a stream that
  stops inside a frame, so the frames' structure (headers, block sizes, checksums) is walked
  first, without decompressing, and a truncated stream is an error;
- **disk**: the decompressed copy may not grow past :func:`limit` bytes (default
  :data:`DEFAULT_LIMIT`, ``--max-decompressed`` on the command line, ``OVF_MAX_DECOMPRESSED`` in
  the environment); past it the archive is refused with an error naming the limit and the option.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import os
import tempfile
from typing import BinaryIO

CHUNK = 1 << 20
DEFAULT_LIMIT = 64 << 30  # 64 GiB: past any real layer, below filling an analyst's disk unseen
ENV = "OVF_MAX_DECOMPRESSED"
OPTION = "--max-decompressed"

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_limit: int | None = None


class UnpackError(Exception):
    """The stream cannot be decompressed (the message says why, without the file name)."""


def set_limit(value: int | None) -> None:
    """The cap on a decompressed copy, in bytes (None: back to the environment or default)."""
    global _limit
    if value is not None and value <= 0:
        raise ValueError(f"{OPTION}: expected a positive byte count, got {value}")
    _limit = value


def limit() -> int:
    if _limit is not None:
        return _limit
    text = os.environ.get(ENV)
    if text:
        from ovforensics.units import parse_bytes

        try:
            value = parse_bytes(text, ENV)
        except Exception as exc:  # BloatError: a bad setting is an error, never ignored
            raise ValueError(str(exc)) from None
        if value > 0:
            return value
    return DEFAULT_LIMIT


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.4g} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def compression(head: bytes) -> str | None:
    """The compression of a stream from its first bytes (never from a file name)."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    # "BZh" is printable and could start a tar member name: also require a block/end magic.
    if (head[:3] == b"BZh" and head[3:4] in b"123456789" and len(head) >= 10
            and head[4:10] in (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")):
        return "bzip2"
    return None


# -- zstd framing (RFC 8878, section 3.1) -----------------------------------------------------------

def zstd_frames_complete(src: BinaryIO) -> None:
    """Walk the frames of a zstd stream from its current position to its end, reading headers
    and block headers only; raise EOFError when it ends inside a frame, UnpackError for bytes
    that are no frame. The position is left at the end."""
    def take(n: int) -> bytes:
        data = src.read(n)
        if len(data) < n:
            raise EOFError("zstd stream ends inside a frame")
        return data

    def skip(n: int) -> None:
        if n:
            here = src.tell()
            end = src.seek(0, os.SEEK_END)
            if here + n > end:
                raise EOFError("zstd stream ends inside a frame")
            src.seek(here + n)

    first = True
    while True:
        magic = src.read(4)
        if not magic:
            if first:
                raise EOFError("empty zstd stream")
            return
        first = False
        if len(magic) < 4:
            raise EOFError("zstd stream ends inside a frame")
        if magic[1:] == b"\x2a\x4d\x18" and 0x50 <= magic[0] <= 0x5F:  # skippable frame
            skip(int.from_bytes(take(4), "little"))
            continue
        if magic != ZSTD_MAGIC:
            raise UnpackError(f"bytes after a zstd frame are no zstd frame (magic {magic.hex()})")
        fhd = take(1)[0]
        if fhd & 0x08:
            raise UnpackError("zstd frame header has its reserved bit set")
        single = bool(fhd & 0x20)
        fcs = {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[fhd >> 6]
        skip((0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs)
        while True:
            header = int.from_bytes(take(3), "little")
            last, kind, size = header & 1, (header >> 1) & 3, header >> 3
            if kind == 3:
                raise UnpackError("zstd block of the reserved type")
            skip(1 if kind == 1 else size)
            if last:
                break
        if fhd & 0x04:
            skip(4)  # content checksum (checked by the decompressor)


def _zstd_stream(raw: BinaryIO):
    import zstandard

    start = raw.tell()
    zstd_frames_complete(raw)
    raw.seek(start)
    return zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK, read_across_frames=True,
                                                      closefd=False)


def decompress(raw: BinaryIO, kind: str, cap: int | None = None) -> BinaryIO:
    """``raw`` (a seekable stream of ``kind``), decompressed into an anonymous temporary file,
    positioned at 0. Raises UnpackError (or EOFError for a truncated stream, OSError for the
    temporary file: ``No space left on device``)."""
    cap = limit() if cap is None else cap
    tmp = tempfile.TemporaryFile(prefix="ovforensics-")  # unlinked at once, system temp dir
    try:
        if kind == "zstd":
            stream = _zstd_stream(raw)
        else:
            opener = {"gzip": gzip.GzipFile, "xz": lzma.LZMAFile, "bzip2": bz2.BZ2File}[kind]
            stream = opener(fileobj=raw, mode="rb")
        total = 0
        with stream:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > cap:
                    raise UnpackError(
                        f"decompresses to more than {human(cap)} ({cap} bytes), the cap on a "
                        f"decompressed copy in {tempfile.gettempdir()}; raise it with {OPTION} "
                        f"SIZE (or {ENV}) if this archive is really that large")
                tmp.write(chunk)
        tmp.flush()
        tmp.seek(0)
        return tmp
    except BaseException:
        tmp.close()
        raise


def why(exc: BaseException, kind: str) -> str:
    """A decompression failure in words: truncated, too large, no space, corrupt."""
    if isinstance(exc, UnpackError):
        return str(exc)
    if isinstance(exc, EOFError):
        return f"truncated {kind} stream"
    if isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile) and exc.strerror:
        return f"{exc.strerror} (decompressing into {tempfile.gettempdir()})"
    return f"corrupt {kind} stream ({exc})"
