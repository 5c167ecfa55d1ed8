"""The single file's entry point (scripts/build-single): libmagic's database from inside the
bundle, then the command line as the pip-installed tool runs it."""
import os
import sys

if getattr(sys, "frozen", False):
    here = getattr(sys, "_MEIPASS", os.path.dirname(sys.executable))
    database = os.path.join(here, "magic.mgc")
    if os.path.exists(database):
        os.environ.setdefault("MAGIC", database)
    os.environ["OVF_SINGLE_FILE"] = "1"

from ovforensics.cli import run  # noqa: E402

run()
