#!/usr/bin/env python3
"""ovforensics benchmark: every case against its baseline, measured in the same run.

    .venv/bin/python bench/run.py            # the full run (builds ~1.4M files; root for dockerd)
    .venv/bin/python bench/run.py --quick    # tiny sizes, one round: proves it still runs
    .venv/bin/python bench/run.py --only mixed,deep --rounds 3

Prints the machine, then one row per case: the ratio of ovforensics to its baseline (median,
min, max over the rounds), both median wall times, ovforensics' peak RSS, and whether the
target holds. Synthetic inputs are kept under ``--workdir`` between runs (rebuilt when their
sizes change); the dockerd is started for the run and stopped by its own pid file at the end.
See bench/README.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import measure  # noqa: E402
import synth  # noqa: E402
from measure import Cmd, Result, at_least, at_most, compare, rss_at_most  # noqa: E402

OVF = [sys.executable, "-m", "ovforensics"]
FORMATS = ("table", "csv", "json", "jsonl", "docker")
GROUPS = ("docker", "stack", "mixed", "deep", "memory", "hashing", "containers", "packages",
          "single", "diskimage")
# Measured as a user's install runs: this machine sets PYTHONUNBUFFERED=1 (every record its own
# write(2) in the Python writers) and PYTHONDONTWRITEBYTECODE=1 (an editable checkout would
# recompile every module on each run); main() compiles the package once, as pip does.
os.environ.pop("PYTHONUNBUFFERED", None)
PYTHON_DIFFER = {**os.environ, "OVF_DIFFER": "python"}  # the Python differ, for comparison


@dataclass
class Sizes:
    rounds: int
    warm: bool
    mixed: synth.MixedSize
    deep_layers: tuple[int, ...]
    deep: synth.DeepSize
    big: synth.BigSize
    hashing: synth.HashSize
    image: tuple[int, int]  # /data dirs x files in the busybox image
    changes: tuple[int, int]  # new dirs x files the container adds
    containers: int
    mem_rounds: int
    one_dir: int = 1_000_000  # entries in the one-directory memory case
    stack: synth.StackSize = synth.StackSize()


FULL = Sizes(rounds=5, warm=True, mixed=synth.MixedSize(), deep_layers=(1, 10, 50, 100),
             deep=synth.DeepSize(upper_files=400), big=synth.BigSize(), hashing=synth.HashSize(),
             image=(50, 200), changes=(100, 150), containers=500, mem_rounds=1)
QUICK = Sizes(rounds=1, warm=False,
              mixed=synth.MixedSize(lower_dirs=8, lower_files=30, touched=3, new_dirs=3, new_files=20),
              deep_layers=(1, 3), deep=synth.DeepSize(layers=3, own_entries=50, shared_dirs=2,
                                                      upper_files=10),
              big=synth.BigSize(dirs=10, per_dir=49), hashing=synth.HashSize(2, 1, 1),
              image=(3, 10), changes=(3, 10), containers=3, mem_rounds=1, one_dir=500,
              stack=synth.StackSize(l2_dirs=8, files=30, l1_touched=2, l1_dirs=3, touched=3,
                                    new_dirs=3, new_files=20))


def find_upper(upper: str) -> Cmd:
    """One bare walk of the upper that stats every entry (no tool that reads the lowers can
    reach it: the stack cases use :func:`find_stack`)."""
    return Cmd(["find", upper, "-printf", "%y %m %s %p\n"])


def find_stack(built) -> Cmd:
    """The floor for any differ: one bare walk of every layer of the stack, each entry stat-ed."""
    return Cmd(["find", built.upper, *built.lowers, "-printf", "%p %y %m %s\n"])


def ovf_diff(upper: str, lowers: list[str], *extra: str) -> Cmd:
    args = [*OVF, "diff", "--upper", upper]
    for lower in lowers:
        args += ["--lower", lower]
    return Cmd([*args, *extra])


@dataclass
class Bench:
    sizes: Sizes
    work: Path
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, result: Result) -> None:
        self.results.append(result)
        print(f"  {result.name}: {result.median:.2f}x" if result.ratios else
              f"  {result.name}: {result.note}", file=sys.stderr, flush=True)

    def skip(self, name: str, target: str, why: str) -> None:
        # one table row: a tool's stderr may hold several lines
        self.add(Result(name, target, note="skipped: " + " ".join(why.split())))

    # -- cases ---------------------------------------------------------------------------------
    def stack(self) -> None:
        """The compiled differ on U over L1 over L2 (~500k entries) against find over the stack."""
        s = self.sizes
        built = synth.stack3(str(self.work / "stack3"), s.stack)
        total = built.upper_entries + built.lower_entries
        base = find_stack(built)
        cmd = ovf_diff(built.upper, built.lowers, "-f", "jsonl")
        self.add(compare(f"native differ, 3 layers / {total:,} entries vs find U L1 L2", "<= 1.30x",
                         cmd, base, s.rounds, warm=s.warm, check=at_most(1.3)))
        self.add(compare("  the same, -f csv vs find U L1 L2", "info",
                         ovf_diff(built.upper, built.lowers, "-f", "csv"), base, s.rounds,
                         warm=s.warm))
        self.add(compare("  the same, Python differ (OVF_DIFFER=python) vs find U L1 L2", "info",
                         Cmd(cmd.argv, env=PYTHON_DIFFER), base, s.rounds, warm=s.warm))

    def mixed(self) -> None:
        s = self.sizes
        built = synth.mixed(str(self.work / "mixed"), s.mixed)
        name = f"synthetic {built.upper_entries:,} upper / {built.lower_entries:,} lower vs find U L"
        self.add(compare(name, "<= 2.00x", ovf_diff(built.upper, built.lowers, "-f", "jsonl"),
                         find_stack(built), s.rounds, warm=s.warm, check=at_most(2.0)))
        self.add(compare("  CPython floor (bench/floor.py: walk + lstat + one line) vs find U", "info",
                         Cmd([sys.executable, str(HERE / "floor.py"), built.upper]),
                         find_upper(built.upper), s.rounds, warm=s.warm))

    def deep(self) -> None:
        s = self.sizes
        stacks = {n: synth.deep(str(self.work / f"deep-{n}"),
                                synth.DeepSize(n, s.deep.own_entries, s.deep.shared_dirs,
                                               s.deep.upper_files))
                  for n in s.deep_layers}
        first = s.deep_layers[0]
        one = stacks[first]
        cmd = {n: ovf_diff(b.upper, b.lowers, "-f", "jsonl") for n, b in stacks.items()}
        self.add(compare(f"deep {first} layer, {one.upper_entries:,} upper vs find", "info",
                         cmd[first], find_upper(one.upper), s.rounds, warm=s.warm))
        for n in s.deep_layers[1:]:
            grow = stacks[n].lower_entries / one.lower_entries
            self.add(compare(f"deep {n} layers vs {first} ({grow:.0f}x lower entries)", "<= 3.00x",
                             cmd[n], cmd[first], s.rounds, warm=s.warm, check=at_most(3.0)))
        self.notes.append(self._curve(stacks))

    def _curve(self, stacks) -> str:
        """Median time per depth, and the paired ratio to the shallowest stack."""
        lines = ["deep stacks (the upper touches the same directories; ratio paired per round):",
                 f"  {'layers':>6}  {'lower entries':>13}  {'ours s':>7}  {'vs first':>8}"]
        rows = {r.name.split(" layer")[0]: r for r in self.results if r.name.startswith("deep ")}
        for i, (n, built) in enumerate(stacks.items()):
            r = rows[f"deep {n}"]
            ratio = 1.0 if i == 0 else r.median
            ours = statistics.median(r.ours)
            lines.append(f"  {n:>6}  {built.lower_entries:>13,}  {ours:>7.3f}  {ratio:>7.2f}x")
        return "\n".join(lines)

    def memory(self) -> None:
        s = self.sizes
        built = synth.big(str(self.work / "big"), s.big)
        for fmt in FORMATS:
            name = f"memory {built.upper_entries:,} upper, --format {fmt} (time vs find)"
            self.add(compare(name, "RSS <= 150 MB", ovf_diff(built.upper, built.lowers, "-f", fmt),
                             find_upper(built.upper), s.mem_rounds, warm=False,
                             check=rss_at_most(150)))
        flat = synth.one_dir(str(self.work / "one-dir"), s.one_dir)
        self.add(compare(f"memory {flat.upper_entries:,} entries in one directory, jsonl (vs find)",
                         "RSS <= 150 MB", ovf_diff(flat.upper, flat.lowers, "-f", "jsonl"),
                         find_upper(flat.upper), s.mem_rounds, warm=False, check=rss_at_most(150)))

    def hashing(self) -> None:
        s = self.sizes
        built = synth.hashing(str(self.work / "hashing"), s.hashing)
        listing = self.work / "hashing-files"
        listing.write_bytes(b"\0".join(os.fsencode(f) for f in built.files))
        per_worker = str(max(len(built.files) // 2, 1))
        base = Cmd(["xargs", "-0", "-P", "2", "-n", per_worker, "sha256sum"], stdin=str(listing))
        mib = len(built.files) * s.hashing.mib
        self.add(compare(f"--hash sha256, {len(built.files)} files / {mib} MiB vs sha256sum -P2",
                         ">= 0.80x", ovf_diff(built.upper, built.lowers, "--hash", "sha256",
                                              "-f", "jsonl"),
                         base, s.rounds, throughput=True, warm=True, check=at_least(0.8)))

    def single(self) -> None:
        """The single file (scripts/build-single): its size, and its start-up (``--version``,
        which unpacks the bundle to a temporary directory each run) and the sample diff,
        against the pip-installed tool."""
        out = self.work / "single"
        binary = out / "ovforensics-linux-x86_64"
        if not binary.exists():
            proc = subprocess.run([str(HERE.parent / "scripts" / "build-single"), str(out)],
                                  capture_output=True, text=True, timeout=1200,
                                  env={**os.environ, "PYTHON": sys.executable})
            if proc.returncode != 0:
                self.skip("single file", "info", f"build-single failed: {proc.stderr[-200:]}")
                return
        size = binary.stat().st_size
        self.add(compare(f"single file ({size / 2**20:.1f} MiB), start-up (--version) vs "
                         "pip-installed --version", "info",
                         Cmd([str(binary), "--version"]), Cmd(OVF + ["--version"]),
                         self.sizes.rounds, warm=self.sizes.warm))
        sample = ["diff", "--upper", "samples/experiment/build.tar", "--lower",
                  "samples/experiment/material2.tar", "--lower", "samples/experiment/material.tar",
                  "-f", "jsonl"]
        os.chdir(HERE.parent)
        self.add(compare("  single file, the README's sample diff vs pip-installed", "info",
                         Cmd([str(binary), *sample]), Cmd(OVF + sample), self.sizes.rounds,
                         warm=self.sizes.warm))

    def diskimage(self) -> None:
        """``--root disk-image``: one container's diff out of an ext4 and an XFS image (read by
        our own readers, nothing mounted) against the same store as a directory."""
        size = self.sizes.mixed if self.sizes is QUICK else synth.MixedSize(
            lower_dirs=100, lower_files=200, touched=25, new_dirs=20, new_files=100)
        built = synth.mixed(str(self.work / "image-mixed"), size)
        evidence = self.work / "image-evidence"
        name = synth.docker_store(str(evidence), built.upper, built.lowers[0])
        entries = built.upper_entries + built.lower_entries
        images = {}
        why = {"ext4": "needs mkfs.ext4", "xfs": "needs root and mkfs.xfs"}
        ext4 = self.work / "image.ext4"
        if shutil.which("mkfs.ext4"):
            ext4.unlink(missing_ok=True)
            subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "256", "-d", str(evidence), str(ext4),
                            "1G"], check=True, capture_output=True)
            images["ext4"] = ext4
        xfs = self.work / "image.xfs"
        if os.geteuid() == 0 and shutil.which("mkfs.xfs") and shutil.which("unshare"):
            xfs.unlink(missing_ok=True)
            with open(xfs, "wb") as fh:
                fh.truncate(1 << 30)
            subprocess.run(["mkfs.xfs", "-q", "-f", str(xfs)], check=True, capture_output=True)
            mnt = self.work / "image-mnt"
            mnt.mkdir(exist_ok=True)
            proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                   f"mount -o loop -t xfs {xfs} {mnt} && cp -a {evidence}/. "
                                   f"{mnt}/; rc=$?; umount {mnt}; exit $rc"],
                                  capture_output=True, text=True)
            if proc.returncode == 0:
                images["xfs"] = xfs
            else:  # a container may not loop-mount (no /dev/loop-control): say so, go on
                why["xfs"] = ("cannot loop-mount the XFS image here: "
                             + (proc.stderr.strip().splitlines() or ["?"])[0][-200:])
        base = Cmd([*OVF, "diff", name, "--root", str(evidence), "-f", "jsonl"], env=PYTHON_DIFFER)
        for fs, image in images.items():
            self.add(compare(f"diff out of an {fs} image ({entries:,} entries) vs the store as "
                             "a directory (Python differ both)", "info",
                             Cmd([*OVF, "diff", name, "--root", str(image), "-f", "jsonl"]),
                             base, self.sizes.rounds, warm=self.sizes.warm))
        for fs in ("ext4", "xfs"):
            if fs not in images:
                self.skip(f"diff out of an {fs} image", "info", why[fs])

    def packages(self) -> None:
        """The price of --packages: a debootstrapped Debian 12 root (tests/bookworm/build.sh's
        cache) as the lower, an upper replacing packaged files (each one altered)."""
        cache = Path(os.environ.get("OVF_BOOKWORM_CACHE", "/var/cache/ovforensics/bookworm"))
        name = "diff --packages vs diff, altered packaged files over Debian 12"
        if not (cache / ".ovf-ready").exists() and os.geteuid() == 0 and shutil.which("debootstrap"):
            subprocess.run([str(HERE.parent / "tests" / "bookworm" / "build.sh"), str(cache)],
                           capture_output=True, timeout=900)  # once per machine, ~30 s
        if not (cache / ".ovf-ready").exists():
            self.skip(name, "info", f"no {cache} (tests/bookworm/build.sh builds it, as root)")
            return
        upper = self.work / "packages-upper"
        shutil.rmtree(upper, ignore_errors=True)
        limit = 20 if self.sizes is QUICK else 10 ** 9
        count = 0
        for sub in ("usr/bin", "usr/lib/x86_64-linux-gnu"):
            for entry in sorted(os.scandir(cache / sub), key=lambda e: e.name):
                if count >= limit or not entry.is_file(follow_symlinks=False):
                    continue
                target = upper / sub / entry.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(entry.path, target)
                with open(target, "ab") as fh:
                    fh.write(b"\0")
                count += 1
        label = f"diff --packages vs diff, {count} altered packaged files over Debian 12"
        self.add(compare(label, "info",
                         ovf_diff(str(upper), [str(cache)], "--packages", "-f", "jsonl"),
                         ovf_diff(str(upper), [str(cache)], "-f", "jsonl"),
                         self.sizes.rounds, warm=self.sizes.warm))

    def engines(self, groups: set[str]) -> None:
        import dockerbench

        wanted = [g for g in ("docker", "containers") if g in groups]
        targets = {"docker": "<= 0.50x", "containers": "< 2.00x"}
        labels = {"docker": "docker diff", "containers": "containers"}  # as the measured rows start
        why = dockerbench.missing()
        if why is not None:
            for g in wanted:
                self.skip(f"{labels[g]} (real dockerd)", targets[g], why)
            return
        d = dockerbench.Docker(self.work / "docker")
        try:
            error = d.start()
            if error is not None:
                for g in wanted:
                    self.skip(f"{labels[g]} (real dockerd)", targets[g], f"dockerd: {error[:120]}")
                return
            self._engines(d, wanted)
        finally:
            d.stop()
            shutil.rmtree(self.work / "docker", ignore_errors=True)

    def _engines(self, d, wanted: list[str]) -> None:
        s = self.sizes
        docker = shutil.which("docker")
        select = ["--engine", "docker", "--data-root", d.data_root]
        d.image(*s.image)
        if "docker" in wanted:
            name = d.diff_container(*s.image, *s.changes)
            lines = subprocess.run([docker, "diff", name], env=d.env(), capture_output=True,
                                   check=True).stdout.count(b"\n")
            ours = [*OVF, "diff", name, *select, "-f", "jsonl"]
            self.add(compare(f"docker diff, {lines:,} lines (real dockerd) vs docker diff",
                             "<= 0.30x", Cmd(ours), Cmd([docker, "diff", name], env=d.env()),
                             s.rounds, warm=s.warm, check=at_most(0.3)))
            self.add(compare("  the same, -f docker vs docker diff", "info",
                             Cmd([*OVF, "diff", name, *select, "-f", "docker"]),
                             Cmd([docker, "diff", name], env=d.env()), s.rounds, warm=s.warm))
            self.add(compare("  the same, Python differ (OVF_DIFFER=python) vs docker diff", "info",
                             Cmd(ours, env=PYTHON_DIFFER),
                             Cmd([docker, "diff", name], env=d.env()), s.rounds, warm=s.warm))
            empty = self.work / "empty"
            for sub in ("u", "l"):
                (empty / sub).mkdir(parents=True, exist_ok=True)
            self.add(compare("ovforensics start-up (empty stack) vs docker diff", "info",
                             ovf_diff(str(empty / "u"), [str(empty / "l")], "-f", "jsonl"),
                             Cmd([docker, "diff", name], env=d.env()), s.rounds, warm=s.warm))
        if "containers" in wanted:
            d.many_containers(s.containers)
            total = len(subprocess.run([docker, "ps", "-aq"], env=d.env(), capture_output=True,
                                       check=True).stdout.split())
            self.add(compare(f"containers, {total} in the store vs docker ps -a", "< 2.00x",
                             Cmd([*OVF, "containers", *select, "-f", "jsonl"]),
                             Cmd([docker, "ps", "-a"], env=d.env()), s.rounds, warm=s.warm,
                             check=lambda r: r.median < 2.0))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    return (f"machine: {os.cpu_count()} x {cpu}; Linux {platform.release()}; "
            f"Python {platform.python_version()}; {now}; load {load:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one round (CI)")
    ap.add_argument("--rounds", type=int, help="rounds per case (default 5; quick: 1)")
    ap.add_argument("--only", default=",".join(GROUPS),
                    help=f"comma list of case groups: {', '.join(GROUPS)}")
    ap.add_argument("--workdir", help="where inputs are built (default: a temp dir for --quick, "
                                      "else $TMPDIR/ovf-bench, kept between runs)")
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes.rounds = args.rounds
    groups = {g.strip() for g in args.only.split(",") if g.strip()}
    unknown = groups - set(GROUPS)
    if unknown:
        ap.error(f"--only: unknown group(s) {', '.join(sorted(unknown))}")
    scratch = None
    if args.workdir:
        work = Path(args.workdir)
    elif args.quick:
        work = Path(scratch := tempfile.mkdtemp(prefix="ovf-bench-quick-"))
    else:
        work = Path(tempfile.gettempdir()) / "ovf-bench"
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(sizes, work)
    import compileall

    compileall.compile_dir(str(HERE.parent / "ovforensics"), quiet=1)
    print(machine(), flush=True)
    try:
        if groups & {"docker", "containers"}:
            bench.engines(groups)
        for group in ("stack", "mixed", "deep", "memory", "hashing", "packages", "single",
                      "diskimage"):
            if group in groups:
                getattr(bench, group)()
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print(measure.table(bench.results))
    for note in bench.notes:
        print()
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
