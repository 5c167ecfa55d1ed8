"""The commands about what the changes mean: ``packages`` (the packages installed, removed,
upgraded and altered) and ``triage`` (what a responder looks at first)."""
from __future__ import annotations

import os
import typer
from typing import List, Optional

from ovforensics.cli.app import _warn, app, fail
from ovforensics.cli.options import (_name, _force_opt, _partition_opt, Stack, _F, _S, _Y, _data_root_opt, _emit_rows, _engine_opt,
    _format_opt, _namespace_opt, _output_opt, _pick_format, _root_opt)
from ovforensics.layers.layer import LayerError
from ovforensics.writers.output import OutputError, refuse_inside, report_stream


@app.command("packages")
def packages_cmd(
    container: Optional[str] = _S["container"],
    upper: Optional[str] = _S["upper"],
    lowers: List[str] = _S["lowers"],
    lower: List[str] = _S["lower"],
    root: str = _root_opt(),
    partition: Optional[int] = _partition_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = _format_opt(),
    output: Optional[str] = _output_opt(),
    force: bool = _force_opt(),
    whiteouts: str = _F["whiteouts"],
    xattr_ns: str = _F["xattr_ns"],
    every: bool = typer.Option(False, "--all", help="List unchanged packages too."),
) -> None:
    """Packages installed, removed and upgraded in a container (its package databases against
    the image's), per manager, each with the count of its files altered or missing."""
    from ovforensics.packages.changes import COLUMNS, package_rows

    fmt = _pick_format(fmt, output)
    stack = Stack(container, upper, lowers, lower, root, engine, data_root, namespace)
    holder: list = []
    try:
        for record in stack.records(whiteouts, xattr_ns, packages=holder):
            if record.change == "anomaly" and record.anomaly == "package-db":
                _warn(record.detail)
    except (LayerError, ValueError) as exc:
        raise fail(str(exc)) from None
    checker = holder[0]
    if not checker.base and not checker.merged:
        _warn("no package database (dpkg, rpm, apk) in the image or the container")
    _emit_rows(fmt, package_rows(checker.base, checker.merged, checker.tally, every), COLUMNS,
               output, stack.evidence)


@app.command("triage")
def triage_cmd(
    container: Optional[str] = _S["container"],
    upper: Optional[str] = _S["upper"],
    lowers: List[str] = _S["lowers"],
    lower: List[str] = _S["lower"],
    root: str = _root_opt(),
    partition: Optional[int] = _partition_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", metavar="FORMAT", callback=_name,
                                      help="table, json or html. Default: from -o's extension "
                                           "(.html, .json), else table."),
    output: Optional[str] = _output_opt(),
    force: bool = _force_opt(),
    whiteouts: str = _F["whiteouts"],
    xattr_ns: str = _F["xattr_ns"],
    yara: Optional[str] = _Y["yara"],
    yara_originals: bool = _Y["yara_originals"],
) -> None:
    """What to look at first: altered packaged files, unowned executables, rule matches and
    changed packages; then every other change."""
    from ovforensics.writers import triage

    if fmt is None:
        ext = os.path.splitext(output or "")[1].lower()
        fmt = {".html": "html", ".htm": "html", ".json": "json"}.get(ext, "table")
    if fmt not in triage.FORMATS:
        raise fail(f"--format: unknown triage format {fmt!r}; expected one of "
                   f"{', '.join(triage.FORMATS)}")
    stack = Stack(container, upper, lowers, lower, root, engine, data_root, namespace)
    holder: list = []
    if stack.container is not None:
        f = stack.container
        target = {"engine": f.engine, "id": f.id, "name": ",".join(f.names) or f.id,
                  "upper": f.upper.dir}
    else:
        target = {"engine": None, "name": stack.upper, "upper": stack.upper}
    try:
        records = stack.records(whiteouts, xattr_ns, packages=holder, yara=yara,
                                yara_originals=yara_originals)
        summary = triage.build(records, holder[0], target)
        if output and output != "-":
            refuse_inside(output, stack.evidence)
        with report_stream(output) as stream:
            triage.write(fmt, summary, stream)
    except (LayerError, OutputError, ValueError) as exc:
        raise fail(str(exc)) from None
