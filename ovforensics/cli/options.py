"""What the commands share: their options, picking a format, opening what a command reads (a call
to the library's ``open_target``), and writing a report or an inventory."""
from __future__ import annotations

import os

import typer
from typing import List, Optional

from ovforensics.cli.app import fail, run, say
from ovforensics.layers.layer import LayerError
from ovforensics.layers.markers import RULES
from ovforensics.layers.stack import split_lowerdir
from ovforensics.writers.formats import FORMATS, open_writer, write_rows
from ovforensics.writers.output import OutputError, default_format, refuse_inside, report_stream


def _split_list(values: List[str]) -> List[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


# shell completion's candidates (cli/completion.py has the scripts) --------------------------

def _store_names(kind: str, ctx, incomplete: str) -> List[str]:
    try:
        from ovforensics import api

        params = getattr(ctx, "params", None) or {}
        lister = api.container_names if kind == "container" else api.image_names
        names = lister(params.get("root") or "/", params.get("engine"), params.get("data_root"),
                       params.get("namespace"))
        return [n for n in names if n.startswith(incomplete)]
    except Exception:  # a store that cannot be read: no candidates, never a traceback
        return []


def complete_container(ctx: typer.Context, incomplete: str) -> List[str]:
    """CONTAINER: the names and short ids of the containers under --root."""
    return _store_names("container", ctx, incomplete)


def complete_image(ctx: typer.Context, incomplete: str) -> List[str]:
    """IMAGE: the names and short ids of the images in the stores under --root (an archive or
    OCI layout path: the shell's file completion, when nothing matches)."""
    return _store_names("image", ctx, incomplete)


def complete_container_then_paths(ctx: typer.Context, incomplete: str) -> List[str]:
    """``[CONTAINER] [PATH]...``: a container first (unless --upper names the layers)."""
    params = getattr(ctx, "params", None) or {}
    if params.get("upper") or params.get("args"):
        return []
    return _store_names("container", ctx, incomplete)


def choices(values) -> callable:
    values = tuple(values)

    def complete(incomplete: str) -> List[str]:
        return [v for v in values if v.startswith(incomplete)]

    return complete



ROOT_HELP = ("Evidence root: a mounted image of a seized host, or a disk image file read without "
             "mounting it (raw, qcow2, VMDK, VHD/VHDX, E01; ext4 or XFS); every path found is "
             "resolved under it.")


ENGINE_HELP = "Only this engine: docker, podman, containerd (default: all found)."


DATA_ROOT_HELP = "The engine's data root inside --root (default: from the engine's config, else its default)."


def _name(value):
    """One rule for every option that names something (a format, an algorithm, an engine, marker
    rules): case does not matter, surrounding blanks neither, and an empty value (an unset
    shell variable) is refused."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)):
        return [_name(v) for v in value]
    if not value.strip():
        raise typer.BadParameter("empty (an unset shell variable?)")
    return value.strip().lower()


def _one_of(*allowed):
    """A callback: :func:`_name`, then one of ``allowed`` whatever is scanned (a container, an
    upper, a tar): the same check in every mode."""
    def check(value):
        value = _name(value)
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"expected one of {', '.join(allowed)}, got {value!r}")
        return value
    return check


def _root_opt():
    return typer.Option("/", "--root", metavar="DIR|IMAGE", help=ROOT_HELP)


def _set_partition(value: Optional[int]) -> Optional[int]:
    from ovforensics.evidence.rootfs import set_partition

    if value is not None and value < 1:
        raise typer.BadParameter("partitions are numbered from 1 (see docs/diskimage.md)")
    set_partition(value)
    return value


def _partition_opt():
    return typer.Option(None, "--partition", metavar="N", callback=_set_partition,
                        help="With --root DISK-IMAGE: the partition to read (1 = the first; "
                             "default: the one holding an engine's store).")


def _set_image_hash(value: Optional[str]) -> Optional[str]:
    from ovforensics.evidence.rootfs import set_image_hash
    from ovforensics.scanner.enrich import parse_hashes

    if value is not None:
        try:
            algorithms = parse_hashes(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc).removeprefix("--hash: ")) from None
        if not algorithms:
            raise typer.BadParameter("no algorithm named (md5, sha1, sha256, sha512)")
        set_image_hash(algorithms)
    return value


def _image_hash_opt():
    return typer.Option(None, "--image-hash", metavar="ALGOS", callback=_set_image_hash,
                        help="With --root DISK-IMAGE: hash the image's files (with its backing "
                             "files, extents or segments) into the run record: md5, sha1, "
                             "sha256, sha512 (comma list). Reads the whole image once.")


def _needs_run_record(image_hash: Optional[str], meta: bool) -> None:
    if image_hash and not meta:
        raise fail("--image-hash: the image's hash goes into the run record: add --meta")


def _engine_opt():
    return typer.Option(None, "--engine", metavar="ENGINE", callback=_name, help=ENGINE_HELP,
                        autocompletion=choices(("docker", "podman", "containerd")))


def _namespace_opt():
    return typer.Option(None, "--namespace", metavar="NS",
                        help="containerd namespace (default, k8s.io, moby, ...): only that "
                             "namespace's containers and images are looked at.")


def _data_root_opt():
    return typer.Option(None, "--data-root", metavar="DIR", help=DATA_ROOT_HELP)


def _format_opt():
    return typer.Option(None, "--format", "-f", metavar="FORMAT", callback=_name, autocompletion=choices(FORMATS),
                        help=f"One of {', '.join(FORMATS)}. Default: table on a terminal, else from "
                             "-o's extension, else jsonl.")


def _output_opt():
    return typer.Option(None, "--output", "-o", metavar="FILE",
                        help="Write the report to FILE (it appears only when complete; an "
                             "existing FILE is refused unless --force).")


def _set_force(value: bool) -> bool:
    from ovforensics.writers.output import set_force

    set_force(value)
    return value


def _force_opt():
    return typer.Option(False, "--force", callback=_set_force,
                        help="Replace an existing -o FILE.")


def _pick_format(fmt: Optional[str], output: Optional[str]) -> str:
    if fmt is None:
        try:
            fmt = default_format(output)
        except ValueError as exc:
            raise fail(str(exc)) from None
    if fmt not in FORMATS:
        raise fail(f"--format: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def _container(query: str, root: str, engine: Optional[str], data_root: Optional[str],
               namespace: Optional[str] = None):
    from ovforensics import find_container
    from ovforensics.stores.registry import LookupError_

    try:
        return find_container(query, root=root, engine=engine, data_root=data_root,
                              namespace=namespace)
    except (LookupError_, ValueError) as exc:
        raise fail(str(exc)) from None


def _stack_args():
    """The options every stack-reading command shares, as typer parameters."""
    return dict(
        container=typer.Argument(None, metavar="[CONTAINER]", autocompletion=complete_container,
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
    target.on_warning = lambda text: say(f"ovforensics: warning: {text}")
    return target


def _preload() -> None:
    """Import what the scan imports lazily, before a report file exists: a Ctrl-C that lands
    inside Python's import machinery can be swallowed there ("Exception ignored in ...
    _get_module_lock") and the run then completes, or dies of the signal; between statements
    of our own it is a KeyboardInterrupt the run turns into exit 130 with the file removed."""
    import ovforensics.layers.formguess  # noqa: F401
    import ovforensics.scanner.diff  # noqa: F401
    import ovforensics.scanner.enrich  # noqa: F401
    import ovforensics.writers.native  # noqa: F401


def _no_trunc_opt():
    return typer.Option(False, "--no-trunc",
                        help="Tables: full ids, hashes and byte counts, no wrapping (tables "
                             "otherwise fit the terminal: $COLUMNS, else the terminal's width, "
                             "else 120). Machine formats are always whole.")


def _emit(fmt: str, records, output: Optional[str], evidence: list, *, run=None,
          extra_columns: tuple = (), write=None, hide=(), no_trunc: bool = False) -> None:
    """Write a report; with a run record: JSON/JSONL get it first, other formats a side file."""
    import shutil
    import tempfile

    from ovforensics.writers import progress
    from ovforensics.writers.formats import json_line

    records = progress.tracked(records, progress.wanted(fmt, output))  # stderr, on a terminal
    counted = [0]

    def counting(items):
        for counted[0], item in enumerate(items, 1):
            yield item

    records = counting(records)
    _preload()

    def write_records(stream) -> None:
        if write is not None:
            write(fmt, records, stream)
            return
        writer = open_writer(fmt, stream, extra_columns, no_trunc=no_trunc, hide=hide)
        for record in records:
            writer.write(record)
        writer.close()

    inline_meta = run is not None and fmt in ("json", "jsonl") and write is None
    if run is not None and not inline_meta and (not output or output == "-" or (
            os.path.exists(output) and not os.path.isfile(output))):
        raise fail(f"--meta with --format {fmt} writes a side file FILE.meta.json: give -o "
                   "FILE, a regular file")
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
    what = f"{counted[0]:,} records" if counted[0] or write is None else "the report"
    side_file = f"; run record: {output}.meta.json" if run is not None and not inline_meta else ""
    line = progress.wrote(output, f"{what} ({fmt})", side_file)
    if line:
        say(line)


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
    return typer.Option(None, "--hash", metavar="ALGOS", callback=_name,
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
        only=typer.Option([], "--only", metavar="KINDS", callback=_name,
                          help="Keep only these change kinds: added, modified, deleted, anomaly "
                               "(comma list or repeated)."),
        include=typer.Option([], "--include", metavar="GLOB",
                             help="Keep only paths matching GLOB (repeatable)."),
        exclude=typer.Option([], "--exclude", "--ignore", metavar="GLOB",
                             help="Drop paths matching GLOB (repeatable; a directory takes its "
                                  "subtree; --ignore is the same option, as in bloat)."),
        whiteouts=typer.Option("auto", "--whiteouts", metavar="RULES",
                               callback=_one_of("auto", *RULES),
                               help="Marker rules: auto (oci for tar; kernel for directories, unless "
                                    "one carries only OCI/AUFS or fuse-overlayfs marks; the "
                                    f"store's own for a container), {', '.join(RULES)}."),
        xattr_ns=typer.Option("auto", "--xattr-ns", metavar="NS",
                              callback=_one_of("auto", "both", "trusted", "user"),
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


def _emit_rows(fmt: str, rows, columns: tuple, output: Optional[str], evidence: list,
               table: tuple | None = None, no_trunc: bool = False) -> None:
    """Write an inventory (containers, layers); never inside the evidence."""
    try:
        if output and output != "-":
            refuse_inside(output, evidence)
        with report_stream(output) as stream:
            count = write_rows(fmt, rows, columns, stream, table=table, no_trunc=no_trunc)
    except (OutputError, ValueError) as exc:
        raise fail(str(exc)) from None
    from ovforensics.writers import progress

    line = progress.wrote(output, f"{count:,} rows ({fmt})")
    if line:
        say(line)


if __name__ == "__main__":  # pragma: no cover
    run()
