"""The run record of a recovery: ``TO/run.json`` beside the manifests, as ``--meta`` is for a
report (``writers.runrecord``): the tool and its version, the command line, host, uid, start
and end times (UTC), what was read (the container's engine, store, id, names and layers, or
the layers named), and the rows per status.

It is written once the manifests are, under a temporary name linked to ``run.json`` (never
replacing a file, never through a symlink), inside the destination's directory fd."""
from __future__ import annotations

import os

from ovforensics.recovery.manifest import RUN_RECORD
from ovforensics.writers.formats import json_line


def write_run_record(run, result, target=None) -> str:
    """Write ``run`` (a :class:`~ovforensics.writers.runrecord.RunRecord`) for ``result`` (a
    :class:`~ovforensics.recovery.manifest.RecoverResult`) of ``target`` (what was read, its
    ``describe()``); returns the file's path."""
    container = getattr(target, "container", None)
    if container is not None:
        run.add_store(container)
    record = run.to_dict()
    record["command"] = "recover"
    record["counts"] = dict(result.counts)
    record["target"] = target.describe() if target is not None else None
    record["manifests"] = [os.path.basename(result.manifest_csv),
                           os.path.basename(result.manifest_jsonl)]
    text = json_line({"meta": record}) + "\n"
    fd = os.open(result.to, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        tmp = f".{RUN_RECORD}.{os.getpid()}.tmp"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o644, dir_fd=fd)
        try:
            with os.fdopen(out, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, RUN_RECORD, src_dir_fd=fd, dst_dir_fd=fd)  # fails if run.json exists
        finally:
            try:
                os.unlink(tmp, dir_fd=fd)
            except OSError:
                pass
    finally:
        os.close(fd)
    return os.path.join(result.to, RUN_RECORD)
