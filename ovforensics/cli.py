"""The ``ovforensics`` command: a thin layer over :func:`ovforensics.scan` and the writers.

Exit status: 0 done; 2 bad arguments or unreadable input (one line on stderr, no traceback).
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer

from ovforensics.version import __version__
from ovforensics.layers.layer import LayerError
from ovforensics.layers.markers import RULES
from ovforensics.writers.output import OutputError, default_format, refuse_inside, report_stream
from ovforensics.layers.stack import split_lowerdir
from ovforensics.writers.formats import FORMATS, open_writer, visible, write_rows

EXIT_OK, EXIT_ERROR = 0, 2

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Container layer forensics: what changed in an overlayfs container, what was deleted, "
         "and where the original is.",
)


def say(message: str) -> None:
    """One line on stderr, through the escaping the tables use: messages quote evidence (names,
    ids, namespaces, tags, paths), and no byte of it may reach the analyst's terminal raw (OSC 52
    writes the clipboard, ``ESC[2J`` clears the screen, ``\r`` and U+202E rewrite the line)."""
    typer.echo(visible(message), err=True)


def fail(message: str) -> "typer.Exit":
    say(f"ovforensics: error: {message}")
    return typer.Exit(EXIT_ERROR)


def _version(value: bool) -> None:
    if value:
        from ovforensics.writers import native

        typer.echo(f"ovforensics {__version__}\ndiffer: {native.status()}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Container layer forensics."""


def _split_list(values: List[str]) -> List[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


ROOT_HELP = "Evidence root: a mounted image of a seized host; every path found is resolved under it."
ENGINE_HELP = "Only this engine: docker, podman, containerd (default: all found)."
DATA_ROOT_HELP = "The engine's data root inside --root (default: from the engine's config, else its default)."


def _root_opt():
    return typer.Option("/", "--root", metavar="DIR", help=ROOT_HELP)


def _engine_opt():
    return typer.Option(None, "--engine", metavar="ENGINE", help=ENGINE_HELP)


def _namespace_opt():
    return typer.Option(None, "--namespace", metavar="NS",
                        help="containerd namespace (default, k8s.io, moby, ...): only that "
                             "namespace's containers and images are looked at.")


def _data_root_opt():
    return typer.Option(None, "--data-root", metavar="DIR", help=DATA_ROOT_HELP)


def _format_opt():
    return typer.Option(None, "--format", "-f", metavar="FORMAT",
                        help=f"One of {', '.join(FORMATS)}. Default: table on a terminal, else from "
                             "-o's extension, else jsonl.")


def _output_opt():
    return typer.Option(None, "--output", "-o", metavar="FILE",
                        help="Write the report to FILE (it appears only when complete).")


def _pick_format(fmt: Optional[str], output: Optional[str]) -> str:
    fmt = fmt or default_format(output)
    if fmt not in FORMATS:
        raise fail(f"--format: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def _container(query: str, root: str, engine: Optional[str], data_root: Optional[str],
               namespace: Optional[str] = None):
    from ovforensics import find_container
    from ovforensics.stores.registry import LookupError_

    if not os.path.isdir(root):
        raise fail(f"--root: {root}: not a directory")
    try:
        return find_container(query, root=root, engine=engine, data_root=data_root,
                              namespace=namespace)
    except (LookupError_, ValueError) as exc:
        raise fail(str(exc)) from None


def _stack_args():
    """The options every stack-reading command shares, as typer parameters."""
    return dict(
        container=typer.Argument(None, metavar="[CONTAINER]",
                                 help="Container name, id or id prefix (found offline in the engines' "
                                      "files); or name the layers with --upper."),
        upper=typer.Option(None, "--upper", metavar="PATH",
                           help="The upperdir (a directory, or a tar archive of one)."),
        lowers=typer.Option([], "--lowers", metavar="DIR:DIR...",
                            help="Lower layers as a colon list, topmost first (as lowerdir= and "
                                 "docker inspect's LowerDir give it)."),
        lower=typer.Option([], "--lower", metavar="PATH",
                           help="One lower layer (directory or tar); repeat, topmost first. Comes "
                                "after the --lowers entries."),
    )


_S = _stack_args()


def Stack(container, upper, lowers, lower, root, engine, data_root, namespace=None):
    """The library's :func:`~ovforensics.target.open_target` for a command's options (``--lowers``
    colon lists first, then each ``--lower``); its refusal is a one-line error."""
    from ovforensics.target import TargetError, open_target

    try:
        target = open_target(container, upper=upper, root=root, engine=engine,
                             data_root=data_root, namespace=namespace,
                             lowers=[item for value in lowers for item in split_lowerdir(value)]
                             + list(lower))
    except TargetError as exc:
        raise fail(str(exc)) from None
    target.on_note = lambda text: say(f"ovforensics: note: {text}")
    return target


def _emit(fmt: str, records, output: Optional[str], evidence: list, *, run=None,
          extra_columns: tuple = (), write=None) -> None:
    """Write a report; with a run record: JSON/JSONL get it first, other formats a side file."""
    import shutil
    import tempfile

    from ovforensics.writers import progress
    from ovforensics.writers.formats import json_line

    records = progress.tracked(records, progress.wanted(fmt, output))  # stderr, on a terminal

    def write_records(stream) -> None:
        if write is not None:
            write(fmt, records, stream)
            return
        writer = open_writer(fmt, stream, extra_columns)
        for record in records:
            writer.write(record)
        writer.close()

    inline_meta = run is not None and fmt in ("json", "jsonl") and write is None
    if run is not None and not inline_meta and (not output or output == "-"):
        raise fail(f"--meta with --format {fmt} writes a side file FILE.meta.json: give -o FILE")
    try:
        if output and output != "-":
            refuse_inside(output, evidence)
        with report_stream(output) as stream:
            if not inline_meta:
                write_records(stream)
            else:  # the run record comes first, but is complete only at the end: spool
                with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as spool:
                    write_records(spool)
                    spool.seek(0)
                    meta = json_line({"meta": run.to_dict()})
                    if fmt == "json":
                        spool.read(1)  # the document's opening brace
                        stream.write("{" + meta[1:-1] + ", ")
                    else:
                        stream.write(meta + "\n")
                    shutil.copyfileobj(spool, stream)
        if run is not None and not inline_meta:
            with report_stream(output + ".meta.json") as side:
                side.write(json_line({"meta": run.to_dict()}) + "\n")
    except (LayerError, OutputError, ValueError) as exc:
        raise fail(str(exc)) from None


def _set_max_decompressed(value: Optional[str]) -> Optional[str]:
    from ovforensics.layers import unpack
    from ovforensics.units import parse_bytes

    if value is not None:
        try:
            unpack.set_limit(parse_bytes(value, unpack.OPTION))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _max_decompressed_opt():
    from ovforensics.layers.unpack import DEFAULT_LIMIT, ENV

    return typer.Option(None, "--max-decompressed", metavar="SIZE", callback=_set_max_decompressed,
                        help=f"Cap on a compressed archive's decompressed copy in $TMPDIR (default "
                             f"{DEFAULT_LIMIT >> 30}GiB, or ${ENV}); past it the archive is refused.")


def _meta_opt():
    return typer.Option(False, "--meta", help="Add the run record (tool, command line, host, times, "
                                              "layers read, counts, entries not read): first record "
                                              "in JSON/JSONL, else a side file FILE.meta.json.")


def _hash_opt():
    return typer.Option(None, "--hash", metavar="ALGOS",
                        help="Hash both versions of each changed file: md5, sha1, sha256, sha512 "
                             "(comma list).")


def _packages_opt():
    return typer.Option(False, "--packages",
                        help="Check each change against the stack's package databases (dpkg, "
                             "rpm, apk): package, package_status (intact, altered, unowned, ...).")


def _yara_opts():
    return dict(
        yara=typer.Option(None, "--yara", metavar="RULES",
                          help="Match YARA rules (a file, or a directory of *.yar) against every "
                               "added and modified file: the yara field (needs yara-python)."),
        yara_originals=typer.Option(False, "--yara-originals",
                                    help="With --yara, match the shadowed originals too "
                                         "(lower_yara)."),
    )


_Y = _yara_opts()


def _more_columns(packages: bool, yara: Optional[str], originals: bool) -> tuple:
    from ovforensics.packages.verify import COLUMNS

    cols = COLUMNS if packages else ()
    if yara:
        cols += ("yara", "lower_yara") if originals else ("yara",)
    return cols


def _filter_opts():
    return dict(
        include=typer.Option([], "--include", metavar="GLOB",
                             help="Keep only paths matching GLOB (repeatable)."),
        exclude=typer.Option([], "--exclude", metavar="GLOB",
                             help="Drop paths matching GLOB (repeatable)."),
        whiteouts=typer.Option("auto", "--whiteouts", metavar="RULES",
                               help="Marker rules: auto (oci for tar; kernel for directories, unless "
                                    "one carries only OCI/AUFS or fuse-overlayfs marks; the "
                                    f"store's own for a container), {', '.join(RULES)}."),
        xattr_ns=typer.Option("auto", "--xattr-ns", metavar="NS",
                              help="Control xattr namespace honoured: auto (from the layer roots), "
                                   "both, trusted (root mounts), user (userxattr mounts)."),
    )


_F = _filter_opts()


def _extra_columns(hashes, magic: bool, deleted_only: bool = False) -> tuple:
    if not hashes and not magic:
        return ()
    from ovforensics.scanner.enrich import parse_hashes

    try:
        algorithms = parse_hashes(hashes)
    except ValueError as exc:
        raise fail(str(exc)) from None
    cols = []
    for algorithm in algorithms:
        cols += [f"lower_{algorithm}"] if deleted_only else [algorithm, f"lower_{algorithm}"]
    if magic:
        cols += ["magic", "mime", "exec_flags", "new_executable"]
    return tuple(cols)


@app.command("diff")
def diff_cmd(
    container: Optional[str] = _S["container"],
    upper: Optional[str] = _S["upper"],
    lowers: List[str] = _S["lowers"],
    lower: List[str] = _S["lower"],
    root: str = _root_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = _format_opt(),
    output: Optional[str] = _output_opt(),
    only: List[str] = typer.Option([], "--only", metavar="KINDS",
                                   help="Keep only these change kinds: added, modified, deleted, anomaly "
                                        "(comma list or repeated)."),
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
) -> None:
    """Report every added, modified and deleted path of a container or an overlay stack."""
    from ovforensics.writers import native

    fmt = _pick_format(fmt, output)
    stack = Stack(container, upper, lowers, lower, root, engine, data_root, namespace)
    run = None
    if meta:
        from ovforensics.writers.runrecord import RunRecord

        run = RunRecord()
    extra = _extra_columns(hashes, magic) + _more_columns(packages, yara, yara_originals)
    try:
        direct = native.applies(fmt, hashes=hashes, magic=magic, include=include,
                                exclude=exclude, run=run, packages=packages, yara=yara)
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
    _emit(fmt, records, output, stack.evidence, run=run, extra_columns=extra)


@app.command("deleted")
def deleted_cmd(
    container: Optional[str] = _S["container"],
    upper: Optional[str] = _S["upper"],
    lowers: List[str] = _S["lowers"],
    lower: List[str] = _S["lower"],
    root: str = _root_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", metavar="FORMAT",
                                      help=f"One of {', '.join(FORMATS)}. Default: csv."),
    output: Optional[str] = _output_opt(),
    include: List[str] = _F["include"],
    exclude: List[str] = _F["exclude"],
    whiteouts: str = _F["whiteouts"],
    xattr_ns: str = _F["xattr_ns"],
    hashes: Optional[str] = _hash_opt(),
    meta: bool = _meta_opt(),
    packages: bool = _packages_opt(),
    max_decompressed: Optional[str] = _max_decompressed_opt(),
) -> None:
    """Every deleted path, with the lower layer and on-disk path of its recoverable original."""
    from ovforensics.writers.runrecord import RunRecord

    fmt = _pick_format(fmt or (None if output and output != "-" else "csv"), output)
    stack = Stack(container, upper, lowers, lower, root, engine, data_root, namespace)
    run = RunRecord() if meta else None
    extra = ("atime", "ctime") + _extra_columns(hashes, False, deleted_only=True) + \
        _more_columns(packages, None, False)
    try:
        records = stack.records(whiteouts, xattr_ns, run=run, only=["deleted"], include=include,
                                exclude=exclude, hashes=hashes or (), packages=packages)
    except (LayerError, ValueError) as exc:
        raise fail(str(exc)) from None
    _emit(fmt, _with_times(records), output, stack.evidence, run=run, extra_columns=extra)


@app.command("timeline")
def timeline_cmd(
    container: Optional[str] = _S["container"],
    upper: Optional[str] = _S["upper"],
    lowers: List[str] = _S["lowers"],
    lower: List[str] = _S["lower"],
    root: str = _root_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", metavar="FORMAT",
                                      help="bodyfile (TSK 3, for mactime), timesketch (JSONL) or "
                                           "timesketch-csv. Default: from -o's extension (.body, "
                                           ".jsonl, .csv), else bodyfile."),
    output: Optional[str] = _output_opt(),
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
    if fmt not in timeline.FORMATS:
        raise fail(f"--format: unknown timeline format {fmt!r}; expected one of "
                   f"{', '.join(timeline.FORMATS)}")
    _extra_columns(hashes, False)  # validates --hash
    stack = Stack(container, upper, lowers, lower, root, engine, data_root, namespace)
    run = RunRecord() if meta else None
    try:
        records = stack.records(whiteouts, xattr_ns, run=run, include=include, exclude=exclude,
                                hashes=hashes or (), packages=packages)
    except (LayerError, ValueError) as exc:
        raise fail(str(exc)) from None
    say(f"ovforensics: {timeline.UTC_NOTE[fmt]}")
    _emit(fmt, records, output, stack.evidence, run=run,
          write=lambda f, recs, stream: timeline.write_timeline(
              f, recs, stream, extra_columns=_more_columns(packages, None, False)))


@app.command("recover")
def recover_cmd(
    args: Optional[List[str]] = typer.Argument(None, metavar="[CONTAINER] [PATH]...",
                                               help="A container (unless --upper is given), then "
                                                    "the container paths whose originals to copy."),
    to: str = typer.Option(..., "--to", metavar="DIR",
                           help="Where the originals go, in the container's path layout, with "
                                "manifest.csv and manifest.jsonl. Never inside the evidence; "
                                "existing files are never overwritten."),
    all_deleted: bool = typer.Option(False, "--all-deleted", help="Recover every deleted path's original."),
    all_modified: bool = typer.Option(False, "--all-modified",
                                      help="Recover every modified path's original."),
    upper: Optional[str] = _S["upper"],
    lowers: List[str] = _S["lowers"],
    lower: List[str] = _S["lower"],
    root: str = _root_opt(),
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
    """Copy the originals of deleted and modified paths out of the lower layers, with a manifest."""
    args = list(args or [])
    container = None if upper is not None else (args.pop(0) if args else None)
    stack = Stack(container, upper, lowers, lower, root, engine, data_root, namespace)
    if not (args or all_deleted or all_modified):
        raise fail("name the paths to recover, or give --all-deleted / --all-modified")
    try:
        result = stack.recover(to=to, paths=args, all_deleted=all_deleted, all_modified=all_modified,
                               include=include, exclude=exclude, whiteouts=whiteouts, xattr_ns=xattr_ns,
                               packages=packages)
    except (LayerError, OutputError, ValueError) as exc:
        raise fail(str(exc)) from None
    counts = ", ".join(f"{n} {status}" for status, n in result.counts.items())
    say(f"ovforensics: {counts}; manifest: {result.manifest_csv}")


def _with_times(records):
    """Deleted originals: add the lower entry's atime and ctime beside the record's mtime."""
    from ovforensics.records.record import format_ns

    for record in records:
        shadow = record.shadow
        if shadow is not None:
            record.extra["atime"] = format_ns(shadow.atime_ns)
            record.extra["ctime"] = format_ns(shadow.ctime_ns)
        yield record


@app.command("packages")
def packages_cmd(
    container: Optional[str] = _S["container"],
    upper: Optional[str] = _S["upper"],
    lowers: List[str] = _S["lowers"],
    lower: List[str] = _S["lower"],
    root: str = _root_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = _format_opt(),
    output: Optional[str] = _output_opt(),
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
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", metavar="FORMAT",
                                      help="table, json or html. Default: from -o's extension "
                                           "(.html, .json), else table."),
    output: Optional[str] = _output_opt(),
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


def _warn(text: str) -> None:
    from ovforensics.writers.formats import visible

    typer.echo(f"ovforensics: warning: {visible(text or '')}", err=True)


@app.command("containers")
def containers_cmd(
    root: str = _root_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = _format_opt(),
    output: Optional[str] = _output_opt(),
    filters: List[str] = typer.Option([], "--filter", metavar="KEY=VALUE",
                                      help="Keep containers whose KEY is VALUE: engine, state, name "
                                           "(a part of a name), image (name or id), namespace, pod, "
                                           "pod_namespace, role (sandbox, container). Repeat: the "
                                           "same key is either value, different keys all hold."),
) -> None:
    """List every container of every engine found, from the engines' files alone."""
    from ovforensics import containers
    from ovforensics.stores.base import Broken
    from ovforensics.stores.registry import matches, parse_filters
    from ovforensics.stores.inventory import CONTAINER_COLUMNS, container_row

    fmt = _pick_format(fmt, output)
    if not os.path.isdir(root):
        raise fail(f"--root: {root}: not a directory")
    try:
        wanted = parse_filters(filters + ([f"namespace={namespace}"] if namespace is not None else []))
    except ValueError as exc:
        raise fail(str(exc)) from None

    def rows():
        for item in containers(root, engine, data_root):
            if isinstance(item, Broken):
                say(f"ovforensics: warning: {item.engine}: {item.where}: {item.why}")
                continue
            if matches(item, wanted):
                yield container_row(item)

    _emit_rows(fmt, rows(), CONTAINER_COLUMNS, output, [root] if root != "/" else [])


@app.command("layers")
def layers_cmd(
    container: str = typer.Argument(..., metavar="CONTAINER", help="Container name, id or id prefix."),
    root: str = _root_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = _format_opt(),
    output: Optional[str] = _output_opt(),
) -> None:
    """Show a container's stack: upper, init and image layers, with ids, entry counts and sizes."""
    from ovforensics.stores.inventory import LAYER_COLUMNS, layer_rows

    fmt = _pick_format(fmt, output)
    found = _container(container, root, engine, data_root, namespace)
    _emit_rows(fmt, layer_rows(found), LAYER_COLUMNS, output,
               [root] if root != "/" else [found.store])


def _emit_rows(fmt: str, rows, columns: tuple, output: Optional[str], evidence: list) -> None:
    """Write an inventory (containers, layers); never inside the evidence."""
    try:
        if output and output != "-":
            refuse_inside(output, evidence)
        with report_stream(output) as stream:
            write_rows(fmt, rows, columns, stream)
    except (OutputError, ValueError) as exc:
        raise fail(str(exc)) from None


def run() -> None:
    """Console entry point: no tracebacks for a closed pipe or Ctrl-C."""
    try:
        app()
    except BrokenPipeError:
        _reader_gone()
    except SystemExit as exc:
        # typer itself turns a write to a closed pipe (EPIPE) into exit 1; a reader that left
        # (`ovforensics diff ... | head`) is not an error here, so that one exit becomes 0.
        if exc.code == 1 and _reader_left():
            _reader_gone()
        raise
    except KeyboardInterrupt:
        sys.exit(130)


def _reader_left() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports POLLERR)."""
    import select
    import stat

    try:
        if not stat.S_ISFIFO(os.fstat(1).st_mode):
            return False
        poller = select.poll()
        poller.register(1, 0)  # POLLERR and POLLHUP are reported whatever is asked
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _reader_gone() -> None:
    """Stop quietly once the reader has left (Python's documented recipe for SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.exit(EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    run()


# -- bloat audit: `bloat` (a container's upper layer) and `image` (an image's layers) ----------------
EXIT_GATE = 3  # a CI gate failed (errors stay 2)


def _bloat_opts():
    """The report and gate options `bloat` and `image` share."""
    return dict(
        fmt=typer.Option(None, "--format", "-f", metavar="FORMAT",
                         help="table, json, jsonl, csv or html. Default: table on a terminal, "
                              "else from -o's extension (.html, .json, .jsonl, .csv), else jsonl."),
        output=typer.Option(None, "--output", "-o", metavar="FILE",
                            help="Write the report to FILE (it appears only when complete)."),
        max_wasted=typer.Option(None, "--max-wasted", metavar="BYTES",
                                help="Gate: fail (exit 3) when more bytes than this are wasted "
                                     "(50MB = 50*10^6, 1.5GiB = 1.5*2^30, or plain bytes)."),
        max_wasted_percent=typer.Option(None, "--max-wasted-percent", metavar="P",
                                        help="Gate: fail when more than P percent of the stored "
                                             "bytes are wasted."),
        min_efficiency=typer.Option(None, "--min-efficiency", metavar="F",
                                    help="Gate: fail when the efficiency is below F (0..1, or 95%)."),
        ignore=typer.Option([], "--ignore", metavar="GLOB",
                            help="Wasted paths matching GLOB do not count as waste (repeatable; "
                                 "* matches / too)."),
        config=typer.Option(None, "--config", metavar="FILE",
                            help="Read gates from FILE's [bloat] table (default: ./.ovforensics.toml "
                                 "when it exists)."),
        no_config=typer.Option(False, "--no-config", help="Do not read ./.ovforensics.toml."),
        top=typer.Option(None, "--top", metavar="N", help="How many paths the top list shows "
                                                          "(default 20)."),
        depth=typer.Option(None, "--depth", metavar="N",
                           help="Directory depth of the by-directory rollup (default 2)."),
        rows=typer.Option(None, "--rows", metavar="ROWS",
                          help="Which rows CSV writes: image: waste (default), layers, dirs, "
                               "changes; container: files (default), waste, dirs."),
    )


_B = _bloat_opts()


def _bloat_format(fmt: Optional[str], output: Optional[str]) -> str:
    from ovforensics.bloat import FORMATS as BLOAT_FORMATS

    if fmt is None and output and output != "-" and \
            os.path.splitext(output)[1].lower() in (".html", ".htm"):
        fmt = "html"
    fmt = fmt or default_format(output)
    if fmt not in BLOAT_FORMATS:
        raise fail(f"--format: unknown format {fmt!r}; expected one of {', '.join(BLOAT_FORMATS)}")
    return fmt


def _bloat_gates(kind: str, rows, max_wasted, max_wasted_percent, min_efficiency, ignore, config,
                 no_config, top, depth):
    from ovforensics.bloat import ROWS, BloatError, make_gates

    if rows is not None and rows not in ROWS[kind]:
        raise fail(f"--rows: expected one of {', '.join(ROWS[kind])} for {'an image' if kind == 'image' else 'a container'}, got {rows!r}")
    try:
        return make_gates(max_wasted=max_wasted, max_wasted_percent=max_wasted_percent,
                          min_efficiency=min_efficiency, ignore=ignore, top=top, depth=depth,
                          config=config, use_default=not no_config)
    except BloatError as exc:
        raise fail(str(exc)) from None


def _bloat_emit(report, fmt: str, output: Optional[str], evidence: list, rows: Optional[str]) -> None:
    from ovforensics.bloat import BloatError, write_report

    try:
        if output and output != "-":
            refuse_inside(output, evidence)
        with report_stream(output) as stream:
            write_report(fmt, report, stream, rows)
    except (OutputError, BloatError, ValueError) as exc:
        raise fail(str(exc)) from None
    for warning in report.warnings:
        say(f"ovforensics: warning: {warning}")
    failed = report.failed
    if failed:
        for gate in failed:
            say(f"ovforensics: gate failed: {gate['message']}")
        raise typer.Exit(EXIT_GATE)


@app.command("bloat")
def bloat_cmd(
    container: Optional[str] = _S["container"],
    upper: Optional[str] = _S["upper"],
    lowers: List[str] = _S["lowers"],
    lower: List[str] = _S["lower"],
    root: str = _root_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    whiteouts: str = _F["whiteouts"],
    xattr_ns: str = _F["xattr_ns"],
    fmt: Optional[str] = _B["fmt"],
    output: Optional[str] = _B["output"],
    max_wasted: Optional[str] = _B["max_wasted"],
    max_wasted_percent: Optional[str] = _B["max_wasted_percent"],
    min_efficiency: Optional[str] = _B["min_efficiency"],
    ignore: List[str] = _B["ignore"],
    config: Optional[str] = _B["config"],
    no_config: bool = _B["no_config"],
    top: Optional[int] = _B["top"],
    depth: Optional[int] = _B["depth"],
    rows: Optional[str] = _B["rows"],
    max_decompressed: Optional[str] = _max_decompressed_opt(),
) -> None:
    """Bytes a container's upper layer holds: added, copies with new content, copies with the
    same content (wasted: chmod, chown, touch, hard link), metacopy; allocated beside apparent."""
    from ovforensics.bloat import BloatError, audit_container
    from ovforensics.layers.markers import Namespaces
    from ovforensics.scanner.resolve import layer_roots

    fmt = _bloat_format(fmt, output)
    gates = _bloat_gates("container", rows, max_wasted, max_wasted_percent, min_efficiency, ignore,
                         config, no_config, top, depth)
    stack = Stack(container, upper, lowers, lower, root, engine, data_root, namespace)
    try:
        layers = stack.layers(whiteouts)
        found = stack.container
        ns_value = found.xattr_ns if found is not None and xattr_ns == "auto" else xattr_ns
        ns = Namespaces.parse(ns_value, roots=layer_roots(layers))
        report = audit_container(layers[0], layers[1:], ns, gates=gates, target=stack.describe())
    except (LayerError, BloatError, ValueError) as exc:
        raise fail(str(exc)) from None
    _bloat_emit(report, fmt, output, stack.evidence, rows)


@app.command("image")
def image_cmd(
    image: str = typer.Argument(..., metavar="IMAGE",
                                help="A docker save archive, an OCI layout (directory or tar), or "
                                     "an image in a local store: name (app:1, "
                                     "docker.io/library/app:1), full id or id prefix."),
    select: Optional[str] = typer.Option(None, "--select", metavar="REF",
                                         help="Which image of an archive or OCI layout that holds "
                                              "several (a name or id prefix)."),
    root: str = _root_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = _B["fmt"],
    output: Optional[str] = _B["output"],
    max_wasted: Optional[str] = _B["max_wasted"],
    max_wasted_percent: Optional[str] = _B["max_wasted_percent"],
    min_efficiency: Optional[str] = _B["min_efficiency"],
    ignore: List[str] = _B["ignore"],
    config: Optional[str] = _B["config"],
    no_config: bool = _B["no_config"],
    top: Optional[int] = _B["top"],
    depth: Optional[int] = _B["depth"],
    rows: Optional[str] = _B["rows"],
    max_decompressed: Optional[str] = _max_decompressed_opt(),
) -> None:
    """Stored, visible and wasted bytes of an image's layers, each wasted byte attributed to a
    path, the layer that stored it and the layer that made it waste."""
    from ovforensics.bloat import BloatError, audit_image
    from ovforensics.stores.images import ImageError, open_image

    fmt = _bloat_format(fmt, output)
    gates = _bloat_gates("image", rows, max_wasted, max_wasted_percent, min_efficiency, ignore,
                         config, no_config, top, depth)
    try:
        with open_image(image, root=root, engine=engine, data_root=data_root, select=select,
                        namespace=namespace) as img:
            report = audit_image(img, gates=gates)
            evidence = list(img.evidence)
    except (ImageError, LayerError, BloatError, ValueError) as exc:
        raise fail(str(exc)) from None
    _bloat_emit(report, fmt, output, evidence, rows)
