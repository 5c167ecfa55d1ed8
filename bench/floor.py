#!/usr/bin/env python3
"""The CPython floor: the least any Python differ must do per upper entry, and nothing more.

    python bench/floor.py UPPER > /dev/null

One ``os.scandir`` walk of the upper, one ``lstat`` per entry (as ``find`` does), and one
orjson line per entry holding what a record minimally carries. No lower layer is read, no
xattr, no overlay rule: a real differ does all of this and more. bench/run.py times it against
``find`` in the same run, to show how far below a CPython program the ``<= 2x find`` target sits.
"""
import os
import sys

from orjson import dumps


def main(upper: str) -> None:
    out = sys.stdout.buffer
    stack = [upper]
    while stack:
        where = stack.pop()
        with os.scandir(where) as it:
            for dent in it:
                st = dent.stat(follow_symlinks=False)
                if dent.is_dir(follow_symlinks=False):
                    stack.append(dent.path)
                out.write(dumps({"path": dent.path, "change": "added", "size": st.st_size,
                                 "mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
                                 "mtime": st.st_mtime_ns}) + b"\n")


if __name__ == "__main__":
    main(sys.argv[1])
