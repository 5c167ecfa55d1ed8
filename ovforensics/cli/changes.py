"""The commands about a container's changes: ``diff``, ``deleted``, ``timeline``, ``recover``."""
from __future__ import annotations

import os
import typer
from typing import List, Optional

from ovforensics.cli.app import EXIT_NOTHING, app, fail, say
from ovforensics.cli.options import (_name, complete_container_then_paths, _force_opt, _partition_opt, _image_hash_opt,
    _needs_run_record, Stack, _F, _S, _Y, _data_root_opt, _emit, _engine_opt,
    _extra_columns, _format_opt, _hash_opt, _max_decompressed_opt, _meta_opt, _more_columns,
    _namespace_opt, _no_trunc_opt, _output_opt, _packages_opt, _pick_format, _root_opt,
    _split_list)
from ovforensics.layers.layer import LayerError
from ovforensics.writers.formats import FORMATS
from ovforensics.writers.output import OutputError


@app.command("diff")
def diff_cmd(
    container: Optional[str] = _S["container"],
    upper: Optional[str] = _S["upper"],
    lowers: List[str] = _S["lowers"],
    lower: List[str] = _S["lower"],
    root: str = _root_opt(),
    partition: Optional[int] = _partition_opt(),
    image_hash: Optional[str] = _image_hash_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = _format_opt(),
    output: Optional[str] = _output_opt(),
    force: bool = _force_opt(),
    only: List[str] = _F["only"],
    include: List[str] = _F["include"],
    exclude: List[str] = _F["exclude"],
    whiteouts: str = _F["whiteouts"],
    xattr_ns: str = _F["xattr_ns"],
    hashes: Optional[str] = _hash_opt(),
    magic: bool = typer.Option(False, "--magic", help="Add libmagic's file type and MIME type, and "
                                                      "flag new executables (ELF, scripts with an "
                                                      "exec bit, setuid/setgid, capabilities)."),
    meta: bool = _meta_opt(),
    packages: bool = _packages_opt(),
    yara: Optional[str] = _Y["yara"],
    yara_originals: bool = _Y["yara_originals"],
    max_decompressed: Optional[str] = _max_decompressed_opt(),
    no_trunc: bool = _no_trunc_opt(),
) -> None:
    """Report every added, modified and deleted path of a container or an overlay stack."""
    from ovforensics.writers import native

    fmt = _pick_format(fmt, output)
    _needs_run_record(image_hash, meta)
    stack = Stack(container, upper, lowers, lower, root, engine, data_root, namespace)
    run = None
    if meta:
        from ovforensics.writers.runrecord import RunRecord

        run = RunRecord()
    extra = _extra_columns(hashes, magic) + _more_columns(packages, yara, yara_originals)
    try:
        direct = native.applies(fmt, hashes=hashes, magic=magic, include=include,
                                exclude=exclude, run=run, packages=packages, yara=yara,
                                hide=stack.diff_hides if fmt == "docker" else ())
    except native.NativeError as exc:
        raise fail(str(exc)) from None
    if direct:  # the compiled differ writes the report itself, straight to the output's fd
        only_kinds = _split_list(only) or None
        _emit(fmt, (), output, stack.evidence,
              write=lambda f, _records, stream: stack.write(f, stream, whiteouts, xattr_ns,
                                                            only=only_kinds))
        return
    try:
        records = stack.records(whiteouts, xattr_ns, run=run, only=_split_list(only) or None,
                                include=include, exclude=exclude, hashes=hashes or (), magic=magic,
                                packages=packages, yara=yara, yara_originals=yara_originals)
    except (LayerError, ValueError) as exc:
        raise fail(str(exc)) from None
    _emit(fmt, records, output, stack.evidence, run=run, extra_columns=extra,
          hide=stack.diff_hides, no_trunc=no_trunc)


@app.command("deleted")
def deleted_cmd(
    container: Optional[str] = _S["container"],
    upper: Optional[str] = _S["upper"],
    lowers: List[str] = _S["lowers"],
    lower: List[str] = _S["lower"],
    root: str = _root_opt(),
    partition: Optional[int] = _partition_opt(),
    image_hash: Optional[str] = _image_hash_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", metavar="FORMAT", callback=_name,
                                      help=f"One of {', '.join(FORMATS)}. Default: csv."),
    output: Optional[str] = _output_opt(),
    force: bool = _force_opt(),
    include: List[str] = _F["include"],
    exclude: List[str] = _F["exclude"],
    whiteouts: str = _F["whiteouts"],
    xattr_ns: str = _F["xattr_ns"],
    hashes: Optional[str] = _hash_opt(),
    meta: bool = _meta_opt(),
    packages: bool = _packages_opt(),
    max_decompressed: Optional[str] = _max_decompressed_opt(),
    no_trunc: bool = _no_trunc_opt(),
) -> None:
    """Every deleted path, with the lower layer and on-disk path of its recoverable original."""
    from ovforensics.writers.runrecord import RunRecord

    fmt = _pick_format(fmt or (None if output and output != "-" else "csv"), output)
    _needs_run_record(image_hash, meta)
    stack = Stack(container, upper, lowers, lower, root, engine, data_root, namespace)
    run = RunRecord() if meta else None
    extra = ("atime", "ctime") + _extra_columns(hashes, False, deleted_only=True) + \
        _more_columns(packages, None, False)
    try:
        records = stack.records(whiteouts, xattr_ns, run=run, only=["deleted"], include=include,
                                exclude=exclude, hashes=hashes or (), packages=packages)
    except (LayerError, ValueError) as exc:
        raise fail(str(exc)) from None
    _emit(fmt, _with_times(records), output, stack.evidence, run=run, extra_columns=extra,
          no_trunc=no_trunc)


@app.command("timeline")
def timeline_cmd(
    container: Optional[str] = _S["container"],
    upper: Optional[str] = _S["upper"],
    lowers: List[str] = _S["lowers"],
    lower: List[str] = _S["lower"],
    root: str = _root_opt(),
    partition: Optional[int] = _partition_opt(),
    image_hash: Optional[str] = _image_hash_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", metavar="FORMAT", callback=_name,
                                      help="bodyfile (TSK 3, for mactime), timesketch (JSONL; "
                                           "also jsonl) or timesketch-csv (also csv). Default: from -o's extension (.body, "
                                           ".jsonl, .csv), else bodyfile."),
    output: Optional[str] = _output_opt(),
    force: bool = _force_opt(),
    only: List[str] = _F["only"],
    include: List[str] = _F["include"],
    exclude: List[str] = _F["exclude"],
    whiteouts: str = _F["whiteouts"],
    xattr_ns: str = _F["xattr_ns"],
    hashes: Optional[str] = _hash_opt(),
    meta: bool = _meta_opt(),
    packages: bool = _packages_opt(),
    max_decompressed: Optional[str] = _max_decompressed_opt(),
) -> None:
    """One event per timestamp of every changed entry, upper and shadowed original both (UTC)."""
    from ovforensics.writers import timeline
    from ovforensics.writers.runrecord import RunRecord

    if fmt is None:
        ext = os.path.splitext(output or "")[1].lower()
        fmt = {".jsonl": "timesketch", ".csv": "timesketch-csv"}.get(ext, "bodyfile")
    fmt = {"csv": "timesketch-csv", "jsonl": "timesketch"}.get(fmt, fmt)  # diff's names too
    if fmt not in timeline.FORMATS:
        raise fail(f"--format: unknown timeline format {fmt!r}; expected one of "
                   f"{', '.join(timeline.FORMATS)} (csv and jsonl name the last two)")
    _extra_columns(hashes, False)  # validates --hash
    _needs_run_record(image_hash, meta)
    stack = Stack(container, upper, lowers, lower, root, engine, data_root, namespace)
    run = RunRecord() if meta else None
    try:
        records = stack.records(whiteouts, xattr_ns, run=run, include=include, exclude=exclude,
                                hashes=hashes or (), packages=packages,
                                only=_split_list(only) or None)
    except (LayerError, ValueError) as exc:
        raise fail(str(exc)) from None
    say(f"ovforensics: {timeline.UTC_NOTE[fmt]}")
    _emit(fmt, records, output, stack.evidence, run=run,
          write=lambda f, recs, stream: timeline.write_timeline(
              f, recs, stream, extra_columns=_more_columns(packages, None, False)))


@app.command("recover")
def recover_cmd(
    args: Optional[List[str]] = typer.Argument(None, metavar="[CONTAINER] [PATH]...",
                                               autocompletion=complete_container_then_paths,
                                               help="A container (unless --upper is given), then "
                                                    "the container paths whose originals to copy."),
    to: str = typer.Option(..., "--to", metavar="DIR",
                           help="Where the originals go, in the container's path layout, with "
                                "manifest.csv, manifest.jsonl and the run record run.json. Never "
                                "inside the evidence; existing files are never overwritten."),
    all_deleted: bool = typer.Option(False, "--all-deleted", help="Recover every deleted path's original."),
    all_modified: bool = typer.Option(False, "--all-modified",
                                      help="Recover every modified path's original."),
    all_added: bool = typer.Option(False, "--all-added",
                                   help="Collect every added path too (the container's own files: "
                                        "a web shell, a dropped binary), from the upper layer."),
    upper: Optional[str] = _S["upper"],
    lowers: List[str] = _S["lowers"],
    lower: List[str] = _S["lower"],
    root: str = _root_opt(),
    partition: Optional[int] = _partition_opt(),
    image_hash: Optional[str] = _image_hash_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    include: List[str] = _F["include"],
    exclude: List[str] = _F["exclude"],
    whiteouts: str = _F["whiteouts"],
    xattr_ns: str = _F["xattr_ns"],
    packages: bool = typer.Option(False, "--packages",
                                  help="Check each original against the image's package "
                                       "databases (manifest: package, package_status)."),
    max_decompressed: Optional[str] = _max_decompressed_opt(),
) -> None:
    """Copy the originals of deleted and modified paths out of the lower layers (and with
    --all-added the container's own files out of the upper), with a manifest; exit 1 if nothing
    was recovered."""
    args = list(args or [])
    container = None if upper is not None else (args.pop(0) if args else None)
    stack = Stack(container, upper, lowers, lower, root, engine, data_root, namespace)
    if not (args or all_deleted or all_modified or all_added):
        raise fail("name the paths to recover, or give --all-deleted / --all-modified / --all-added")
    from ovforensics.recovery.runfile import write_run_record
    from ovforensics.writers.runrecord import RunRecord

    from ovforensics.writers import progress

    run = RunRecord()
    try:
        with progress.ticking(progress.on_terminal(), label="recovering"):
            result = stack.recover(to=to, paths=args, all_deleted=all_deleted,
                                   all_modified=all_modified,
                                   all_added=all_added, include=include, exclude=exclude,
                                   whiteouts=whiteouts, xattr_ns=xattr_ns, packages=packages)
    except (LayerError, OutputError, ValueError) as exc:
        raise fail(str(exc)) from None
    try:
        written = write_run_record(run, result, stack)
    except OSError as exc:
        raise fail(f"{to}: the run record could not be written: {exc.strerror or exc}") from None
    counts = ", ".join(f"{n} {status}" for status, n in result.counts.items())
    say(f"ovforensics: {counts}; manifest: {result.manifest_csv}; run record: {written}")
    if not result.counts.get("recovered"):
        say("ovforensics: nothing was recovered (see the manifest's status and detail)")
        raise typer.Exit(EXIT_NOTHING)


def _with_times(records):
    """Deleted originals: add the lower entry's atime and ctime beside the record's mtime."""
    from ovforensics.records.record import format_ns

    for record in records:
        shadow = record.shadow
        if shadow is not None:
            record.extra["atime"] = format_ns(shadow.atime_ns)
            record.extra["ctime"] = format_ns(shadow.ctime_ns)
        yield record
