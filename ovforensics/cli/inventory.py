"""The commands about the stores: ``containers``, ``layers``."""
from __future__ import annotations

import typer
from typing import List, Optional

from ovforensics.cli.app import app, fail, say
from ovforensics.cli.options import (_force_opt, _partition_opt, _container, _data_root_opt, _emit_rows, _engine_opt,
    complete_container, _format_opt, _namespace_opt, _no_trunc_opt, _output_opt, _pick_format, _root_opt)
from ovforensics.writers.tables import CONTAINER_TABLE, LAYER_TABLE


@app.command("containers")
def containers_cmd(
    root: str = _root_opt(),
    partition: Optional[int] = _partition_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = _format_opt(),
    output: Optional[str] = _output_opt(),
    force: bool = _force_opt(),
    filters: List[str] = typer.Option([], "--filter", metavar="KEY=VALUE",
                                      help="Keep containers whose KEY is VALUE: engine, state, name "
                                           "(a part of a name), image (name or id), namespace, pod, "
                                           "pod_namespace, role (sandbox, container). Repeat: the "
                                           "same key is either value, different keys all hold."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="Only the ids, one per line (as docker ps -q)."),
    no_trunc: bool = _no_trunc_opt(),
) -> None:
    """List every container of every engine found, from the engines' files alone (newest
    first, as docker ps -a)."""
    from ovforensics import containers
    from ovforensics.evidence.rootfs import open_root
    from ovforensics.stores.base import Broken
    from ovforensics.stores.registry import matches, parse_filters
    from ovforensics.stores.inventory import CONTAINER_COLUMNS, container_row

    fmt = _pick_format(fmt, output)
    try:
        open_root(root)  # a directory, or a disk image read without mounting it
        wanted = parse_filters(filters + ([f"namespace={namespace}"] if namespace is not None else []))
    except ValueError as exc:
        raise fail(str(exc)) from None

    listed = []

    def rows():
        for item in containers(root, engine, data_root):
            if isinstance(item, Broken):
                say(f"ovforensics: warning: {item.engine}: {item.where}: {item.why}")
                continue
            listed.append(item)
        kept = [c for c in listed if matches(c, wanted)]
        kept.sort(key=lambda c: c.created or "", reverse=True)  # newest first
        for item in kept:
            yield {"id": item.id} if quiet else container_row(item)

    if quiet:
        for row in rows():
            typer.echo(row["id"])
    else:
        _emit_rows(fmt, rows(), CONTAINER_COLUMNS, output, [root] if root != "/" else [],
                   table=CONTAINER_TABLE, no_trunc=no_trunc)
    if not listed:  # say where the stores were looked for, and what was there
        from ovforensics.stores.survey import survey

        for seen in survey(open_root(root), engine, data_root):
            say(f"ovforensics: note: no container: {seen.line()}")


@app.command("layers")
def layers_cmd(
    container: str = typer.Argument(..., metavar="CONTAINER", help="Container name, id or id prefix.",
                                    autocompletion=complete_container),
    root: str = _root_opt(),
    partition: Optional[int] = _partition_opt(),
    engine: Optional[str] = _engine_opt(),
    namespace: Optional[str] = _namespace_opt(),
    data_root: Optional[str] = _data_root_opt(),
    fmt: Optional[str] = _format_opt(),
    output: Optional[str] = _output_opt(),
    force: bool = _force_opt(),
    no_trunc: bool = _no_trunc_opt(),
) -> None:
    """Show a container's stack: upper, init and image layers, with ids, entry counts and sizes."""
    from ovforensics.stores.inventory import LAYER_COLUMNS, layer_rows

    fmt = _pick_format(fmt, output)
    found = _container(container, root, engine, data_root, namespace)
    _emit_rows(fmt, layer_rows(found), LAYER_COLUMNS, output,
               [root] if root != "/" else [found.store], table=LAYER_TABLE, no_trunc=no_trunc)
