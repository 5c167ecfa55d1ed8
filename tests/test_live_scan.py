"""A container that changes while it is scanned: vanished or changed entries are recorded in the
run record, and the scan goes on."""
from __future__ import annotations

import os
import threading

import ovforensics
from ovforensics.layers.layer import DirLayer
from ovforensics.writers.runrecord import RunRecord


def _stack(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "d").mkdir(parents=True)
    (upper / "d").mkdir(parents=True)
    for i in range(5):
        (lower / "d" / f"f{i}").write_text("old")
        (upper / "d" / f"f{i}").write_text(f"new {i}")
    return upper, lower


def test_file_vanishing_between_listing_and_hashing_is_recorded(tmp_path):
    upper, lower = _stack(tmp_path)

    class Vanishing(DirLayer):
        """Deletes d/f2 right after its directory was listed: the scan's worst moment."""

        def listdir(self, path):
            listing = super().listdir(path)
            if path == (b"d",):
                victim = upper / "d" / "f2"
                if victim.exists():
                    victim.unlink()
            return listing

    run = RunRecord(argv=["test"])
    records = list(ovforensics.scan(Vanishing(str(upper)), [str(lower)], hashes="sha256", run=run))
    paths = {r.path: r for r in records if r.change != "anomaly"}
    assert sorted(paths) == [b"/d/f0", b"/d/f1", b"/d/f2", b"/d/f3", b"/d/f4"]
    assert "sha256" in paths[b"/d/f1"].extra
    assert run.counts["modified"] == 5
    unread = [u for u in run.to_dict()["unread"] if u["path"] == "/d/f2"]
    assert unread and "No such file" in " ".join(u["why"] for u in unread)


def test_scan_survives_a_container_writing_all_the_time(tmp_path, overlay):
    """A real overlay, a writer creating and deleting files through it while scans run."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "busy").mkdir(parents=True)
    for i in range(50):
        (lower / "busy" / f"keep{i}").write_text("x")
    upper.mkdir()
    merged = overlay.mount([lower], upper=upper)
    stop = threading.Event()

    def churn():
        n = 0
        while not stop.is_set():
            target = merged / "busy" / f"tmp{n % 40}"
            try:
                if target.exists():
                    target.unlink()
                else:
                    target.write_text("y" * (n % 4096))
                os.rename(merged / "busy" / f"keep{n % 50}", merged / "busy" / f"keep{n % 50}")
            except OSError:
                pass
            n += 1

    writer = threading.Thread(target=churn)
    writer.start()
    try:
        for _ in range(30):
            run = RunRecord(argv=["test"])
            records = list(ovforensics.scan(str(upper), [str(lower)], hashes="sha256", run=run))
            assert run.counts["added"] + run.counts["modified"] + run.counts["deleted"] == \
                len([r for r in records if r.change != "anomaly"])
    finally:
        stop.set()
        writer.join()
