"""Gates on an audit (max wasted bytes or percent, min efficiency, ignored paths), from options or a
repository's ``.ovforensics.toml``; sizes and ratios as users write them."""
from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from ovforensics.scanner.globs import compile_globs
from ovforensics.units import SizeError, human, parse_bytes as _parse_bytes


CONFIG_NAME = ".ovforensics.toml"


CONFIG_KEYS = ("max-wasted", "max-wasted-percent", "min-efficiency", "ignore", "exclude", "top",
               "depth")


DEFAULT_TOP = 20


DEFAULT_DEPTH = 2


class BloatError(ValueError):
    """Bad gate values or configuration: a one-line message naming the option or file."""


# -- numbers ---------------------------------------------------------------------------------------
def parse_bytes(value, what: str = "--max-wasted") -> int:
    """``50MB`` (10^6), ``1.5GiB`` (2^30), ``1200``, ``10k``: a byte count (:func:`ovforensics.units.parse_bytes`)."""
    try:
        return _parse_bytes(value, what)
    except SizeError as exc:
        raise BloatError(str(exc)) from None


def _number(value, what: str) -> Decimal:
    text = str(value).strip()
    if isinstance(value, bool):
        raise BloatError(f"{what}: expected a number, got {value!r}")
    percent = text.endswith("%")
    try:
        number = Decimal(text.rstrip("%").strip())
    except InvalidOperation:
        raise BloatError(f"{what}: expected a number, got {value!r}") from None
    if not number.is_finite() or number < 0:
        raise BloatError(f"{what}: expected a number >= 0, got {value!r}")
    return number / 100 if percent else number


def parse_percent(value, what: str = "--max-wasted-percent") -> Decimal:
    """``5``, ``5%`` or ``2.5``: a percentage (0..100)."""
    text = str(value).strip()
    number = _number(text.rstrip("%"), what)
    if number > 100:
        raise BloatError(f"{what}: a percentage is at most 100, got {value!r}")
    return number


def parse_fraction(value, what: str = "--min-efficiency") -> Decimal:
    """``0.95`` or ``95%``: a fraction (0..1)."""
    number = _number(value, what)
    if number > 1:
        raise BloatError(f"{what}: an efficiency is between 0 and 1 (or a percentage such as "
                         f"95%), got {value!r}")
    return number


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


# -- gates and configuration ------------------------------------------------------------------------
@dataclass
class Gates:
    max_wasted: int | None = None
    max_wasted_percent: Decimal | None = None
    min_efficiency: Decimal | None = None
    ignore: list[str] = field(default_factory=list)
    top: int = DEFAULT_TOP
    depth: int = DEFAULT_DEPTH
    config: str | None = None  # the configuration file read, if any

    @property
    def any(self) -> bool:
        return (self.max_wasted, self.max_wasted_percent, self.min_efficiency) != (None, None, None)


def load_config(path: str | None, use_default: bool = True) -> tuple[dict, str | None]:
    """The ``[bloat]`` table of ``path``, or of ``./.ovforensics.toml`` when it exists."""
    if path is None:
        if not use_default or not os.path.isfile(CONFIG_NAME):
            return {}, None
        path = CONFIG_NAME
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise BloatError(f"--config: {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BloatError(f"--config: {path}: not valid TOML ({exc})") from None
    loose = sorted(k for k, v in doc.items() if not isinstance(v, dict))
    if loose:
        raise BloatError(f"--config: {path}: key {loose[0]!r} outside any table: put it under "
                         "[bloat]")
    unknown = sorted(k for k in doc if k != "bloat")
    if unknown:
        near = difflib.get_close_matches(unknown[0], ["bloat"], n=1)
        hint = " (did you mean [bloat]?)" if near else ""
        raise BloatError(f"--config: {path}: unknown table [{unknown[0]}]{hint}; the only table "
                         "is [bloat]")
    if "bloat" not in doc:
        raise BloatError(f"--config: {path}: no [bloat] table: nothing would be configured")
    table = doc["bloat"]
    if not isinstance(table, dict):
        raise BloatError(f"--config: {path}: [bloat] must be a table")
    out = {}
    for key, value in table.items():
        norm = key.replace("_", "-")
        if norm not in CONFIG_KEYS:
            raise BloatError(f"--config: {path}: unknown key {key!r} in [bloat]; known: "
                             f"{', '.join(CONFIG_KEYS)}")
        out[norm] = value
    return out, path


def make_gates(*, max_wasted=None, max_wasted_percent=None, min_efficiency=None, ignore=(),
               top=None, depth=None, config: str | None = None, use_default: bool = True) -> Gates:
    """Gates from the command line over the configuration file (the command line wins;
    ``ignore`` globs add up)."""
    table, source = load_config(config, use_default)
    where = f" (in {source})" if source else ""

    def pick(cli, key):
        return (cli, f"--{key}") if cli is not None else (table.get(key), f"{key}{where}")

    gates = Gates(config=source)
    value, what = pick(max_wasted, "max-wasted")
    if value is not None:
        gates.max_wasted = parse_bytes(value, what)
    value, what = pick(max_wasted_percent, "max-wasted-percent")
    if value is not None:
        gates.max_wasted_percent = parse_percent(value, what)
    value, what = pick(min_efficiency, "min-efficiency")
    if value is not None:
        gates.min_efficiency = parse_fraction(value, what)
    conf_ignore: list = []
    for key in ("exclude", "ignore"):  # one job, two names (ignore: dive's)
        globs = table.get(key, [])
        if isinstance(globs, str):
            globs = [globs]
        if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
            raise BloatError(f"{key}{where}: expected a list of globs")
        conf_ignore += globs
    try:
        gates.ignore = compile_globs("--exclude", list(conf_ignore) + list(ignore))
    except ValueError as exc:
        raise BloatError(str(exc)) from None
    for key, cli in (("top", top), ("depth", depth)):
        value, what = pick(cli, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "top" else 1):
            raise BloatError(f"{what}: expected a whole number >= {0 if key == 'top' else 1}, "
                             f"got {value!r}")
        setattr(gates, key, value)
    return gates


def evaluate(totals: dict, gates: Gates) -> dict:
    """The gate results: every gate given, its limit, the value, passed or not and by how much."""
    results = []
    wasted, stored = totals["wasted_bytes"], totals["stored_bytes"]
    if gates.max_wasted is not None:
        limit = gates.max_wasted
        ok = wasted <= limit
        results.append({
            "gate": "max-wasted", "limit": limit, "value": wasted, "passed": ok,
            "over_by": max(wasted - limit, 0),
            "message": f"max-wasted: {wasted} bytes wasted ({human(wasted)}), limit {limit} "
                       f"({human(limit)})" + ("" if ok else f": over by {wasted - limit} bytes "
                                                             f"({human(wasted - limit)})")})
    if gates.max_wasted_percent is not None:
        limit = gates.max_wasted_percent
        exact = Fraction(100 * wasted, stored) if stored else Fraction(0)
        ok = exact <= Fraction(limit)
        value = float(exact)
        results.append({
            "gate": "max-wasted-percent", "limit": float(limit), "value": round(value, 4),
            "passed": ok, "over_by": round(max(value - float(limit), 0.0), 4),
            "message": f"max-wasted-percent: {value:.2f}% wasted, limit {float(limit):g}%"
                       + ("" if ok else f": over by {value - float(limit):.2f} percentage points")})
    if gates.min_efficiency is not None:
        limit = gates.min_efficiency
        exact = Fraction(stored - wasted, stored) if stored else Fraction(1)
        ok = exact >= Fraction(limit)
        value = float(exact)
        results.append({
            "gate": "min-efficiency", "limit": float(limit), "value": round(value, 6),
            "passed": ok, "under_by": round(max(float(limit) - value, 0.0), 6),
            "message": f"min-efficiency: efficiency {value:.4f}, minimum {float(limit):g}"
                       + ("" if ok else f": under by {float(limit) - value:.4f}")})
    return {"passed": all(r["passed"] for r in results), "results": results,
            "config": gates.config, "ignore": list(gates.ignore)}
