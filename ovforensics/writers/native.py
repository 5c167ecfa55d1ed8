"""The compiled differ: ``native/`` (Rust, std only), loaded through ctypes where it was built.

``pip install`` builds it with setuptools-rust when cargo is present (the library lands beside
this module as ``_ovfdiff*.so``); without cargo the install still succeeds and the Python
differ (:mod:`ovforensics.scanner.diff`) runs, with the same output. The library is the kernel rule set
of diff.py/resolve.py/markers.py/compare.py over directory layers, and writes jsonl, csv or
docker lines itself, straight to the output's file descriptor; :func:`write` hands the scan
back (returns None, nothing written) for what it does not cover: archives, OCI or fuse rules,
a layer named by a path that is not UTF-8, a layer that already recorded an error.

``OVF_DIFFER=python`` forces the Python differ; ``OVF_DIFFER=native`` makes a missing library
an error (CI uses it to prove the native path ran). ``OVF_NATIVE_LIB`` names the library file
to load instead of the one beside this module.
"""
from __future__ import annotations

import codecs
import ctypes
import glob
import os
import stat
import threading

FORMATS = ("jsonl", "csv", "docker")
ABI = 2
_KINDS = ("added", "modified", "deleted", "anomaly")

_lib = None
_why = ""


class NativeError(Exception):
    """The compiled differ failed in a way the Python differ cannot take over from."""


def _candidates() -> list[str]:
    forced = os.environ.get("OVF_NATIVE_LIB")
    if forced:
        return [forced]
    here = os.path.dirname(os.path.abspath(__file__))
    return sorted(glob.glob(os.path.join(here, "_ovfdiff*.so")))


#: ``guess(layer index) -> 1`` when the layer is in the kernel's form (lib.rs): the library asks
#: it for a --whiteouts auto layer the first time a listing of it holds a ``.wh.`` name
GUESS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)


def library():
    """The loaded library, or None (:func:`status` says why)."""
    global _lib, _why
    if _lib is None:
        _lib = False
        found = _candidates()
        if not found:
            _why = "not built (no cargo at install time)"
        else:
            try:
                lib = ctypes.CDLL(found[0])
                if lib.ovf_abi() != ABI:
                    raise OSError(f"ABI {lib.ovf_abi()}, expected {ABI}")
                lib.ovf_diff.restype = ctypes.c_int
                lib.ovf_diff.argtypes = (ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int,
                                         ctypes.POINTER(ctypes.c_int), GUESS, ctypes.c_char_p,
                                         ctypes.c_size_t)
                _lib = lib
                _why = found[0]
            except (OSError, AttributeError) as exc:
                _why = f"{found[0]}: cannot load: {exc}"
    return _lib or None


def mode() -> str:
    """``auto``, ``python`` or ``native`` (``OVF_DIFFER``)."""
    value = os.environ.get("OVF_DIFFER", "auto").strip().lower() or "auto"
    return value if value in ("auto", "python", "native") else "auto"


def enabled() -> bool:
    """Whether scans should try the compiled differ (raises under OVF_DIFFER=native when it
    cannot be loaded)."""
    if mode() == "python":
        return False
    lib = library()
    if lib is None and mode() == "native":
        raise NativeError(f"OVF_DIFFER=native but the compiled differ is {_why}")
    return lib is not None


def status() -> str:
    """What ``ovforensics --version`` says about the differ."""
    if mode() == "python":
        return "python (OVF_DIFFER=python)"
    if library() is None:
        return f"python (compiled differ {_why})"
    return f"native ({_why}; directory layers, {', '.join(FORMATS)})"


def applies(fmt: str, *, hashes=(), magic=False, include=(), exclude=(), run=None,
            packages=False, yara=None, hide=()) -> bool:
    """Whether a report with these options is one the compiled differ can write (the layers
    are checked by :func:`write`): none of the columns it does not compute is asked for."""
    return (fmt in FORMATS and not hashes and not magic and not include and not exclude
            and run is None and not packages and not yara and not hide and enabled())


def _field(out: list, value) -> None:
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    out.append(len(raw).to_bytes(4, "little") + raw)


def _refusal(layers) -> str | None:
    from ovforensics.layers.layer import DirLayer

    for layer in layers:
        if type(layer) is not DirLayer:
            return f"{getattr(layer, 'label', layer)}: not a directory layer"
        if layer.rules != "kernel":
            return f"{layer.label}: {layer.rules} rules"
        if layer.errors:
            return f"{layer.label}: errors already recorded"
        try:
            layer.label.encode("utf-8")
        except UnicodeEncodeError:
            return "a layer path that is not UTF-8"
    return None


def _csv_ref(ref) -> bytes:
    import csv
    import io

    from ovforensics.writers.formats import CsvWriter

    d = ref.to_dict()
    buf = io.StringIO()
    csv.writer(buf).writerow([CsvWriter._cell(v) for v in
                              (d.get("index"), d.get("dir"), d.get("id"), d.get("role"))])
    return buf.getvalue()[:-2].encode("utf-8")


def spec(fmt: str, upper, lowers, ns, only=None) -> bytes:
    """The scan, as ``ovf_diff`` reads it (lib.rs)."""
    from ovforensics.layers import bigdir
    from ovforensics.scanner.diff import layer_ref
    from ovforensics.layers.markers import TRUSTED, USER
    from ovforensics.writers.formats import json_line

    prefixes = "".join({TRUSTED: "T", USER: "U"}[p] for p in ns.prefixes)
    out: list = []
    for value in ("ovf-diff-1", fmt, "".join("1" if only is None or k in only else "0" for k in _KINDS),
                  prefixes, max(bigdir.BIG, 0), len(lowers) + 1):
        _field(out, value)
    for index, layer in enumerate([upper, *lowers]):
        _field(out, layer.root)
        _field(out, layer.label)
        _field(out, "auto" if getattr(layer, "guess_rules", False) else layer.rules)
        if index == 0:
            _field(out, b"")
            _field(out, b"")
        else:
            ref = layer_ref(layer, index - 1)
            _field(out, json_line(ref.to_dict()))
            _field(out, _csv_ref(ref))
    return b"".join(out)


def write(fmt: str, upper, lowers, ns, stream, only=None) -> dict | None:
    """Scan and write the report to ``stream``'s file descriptor with the compiled differ;
    the counts per change kind, or None when the Python differ must do it (nothing written)."""
    lib = library()
    if lib is None or fmt not in FORMATS or _refusal([upper, *lowers]) is not None:
        return None
    try:  # the library writes UTF-8 bytes to a file descriptor: a text stream that has one
        fd = stream.fileno()
        utf8 = codecs.lookup(stream.encoding).name == "utf-8"
    except (AttributeError, OSError, ValueError, TypeError, LookupError):
        return None
    if not utf8:
        return None
    data = spec(fmt, upper, lowers, ns, only)
    stream.flush()
    start = os.lseek(fd, 0, os.SEEK_CUR) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    cancel = ctypes.c_int(0)
    result = ctypes.create_string_buffer(4096)
    box: dict = {}
    layers = [upper, *lowers]

    def decide(index: int) -> int:
        """--whiteouts auto: the rules of ``layers[index]``, decided as DirLayer.check_rules
        decides them (they stay on the layer: a hand-back reads it with them)."""
        try:
            from ovforensics.layers.formguess import guess_rules

            layer = layers[index]
            layer.guess_rules = False
            layer.rules, layer.rules_auto = guess_rules(layer.root)
            return 1 if layer.rules == "kernel" else 0
        except BaseException:  # never raise through the library: hand the scan back
            return 0

    guess = GUESS(decide)

    def work():
        box["rc"] = lib.ovf_diff(data, len(data), fd, ctypes.byref(cancel), guess, result,
                                 len(result))

    worker = threading.Thread(target=work, name="ovf-native-differ", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.5)
    except BaseException:  # Ctrl-C: the library stops at its next check
        cancel.value = 1
        worker.join()
        raise
    rc, text = box.get("rc", 5), result.value.decode("utf-8", "replace")
    if rc == 0:
        numbers = [int(n) for n in text.split()]
        return dict(zip(_KINDS, numbers[:4]))
    if rc == 1:
        return None
    if rc == 2:
        err = int(text.split()[0])
        raise OSError(err, os.strerror(err))
    if rc == 3:
        raise KeyboardInterrupt
    if rc == 5:  # a bug: start over with the Python differ where the output can be rewound
        written = int(text or 0)
        if written == 0 or start is not None:
            if written:
                os.ftruncate(fd, start)
                os.lseek(fd, start, os.SEEK_SET)
            return None
        raise NativeError("the compiled differ failed after writing part of the report; "
                          "run again with OVF_DIFFER=python")
    raise NativeError(f"the compiled differ refused its input: {text}")
