"""The bloat arithmetic (docs/bloat.md), held against bytes the tests put there.

* the worked example of docs/bloat.md, written as an OCI layout from Python (no root);
* a real dockerd's image with a 30 MiB file chmod-ed later, a directory rm -rf-ed, a file
  overwritten and a directory recreated over itself (opaque): every wasted byte, the layer
  that stored it and the layer that made it waste, exactly;
* a real container that chmods, chowns, touches, hard-links, appends, adds and makes a sparse
  file: every category's bytes exactly, allocated beside apparent;
* the CI gates: exit 3 with the failed gate and by how much, the JSON carrying the results,
  .ovforensics.toml, --ignore; errors stay exit 2.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import bloat_env as be  # noqa: E402
from bloat_env import run  # noqa: E402

from ovforensics.bloat import BloatError, Gates, audit_container, audit_image, make_gates, parse_bytes, parse_fraction, parse_percent
from ovforensics.stores.images import open_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def env(request):
    return be.session_env(request)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("example") / "oci"
    be.write_example(path)
    return path


def _waste(report) -> dict:
    return {w["path"]: (w["bytes"], w["layer"], w["made_by"], w["reason"]) for w in report.waste}


# -- numbers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [
    ("1200", 1200), ("50MB", 50_000_000), ("50mb", 50_000_000), ("1.5GiB", 1_610_612_736),
    ("10k", 10_000), ("10KiB", 10_240), ("2M", 2_000_000), ("1Ti", 2**40), (" 7 B ", 7), (1234, 1234),
])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "12XB", "-5MB", "MB", "1.5.2G", True])
def test_parse_bytes_refuses(text):
    with pytest.raises(BloatError, match="--max-wasted"):
        parse_bytes(text)


def test_parse_percent_and_fraction():
    assert parse_percent("5%") == parse_percent(5) == 5
    assert float(parse_fraction("95%")) == 0.95 == float(parse_fraction("0.95"))
    for bad in ("101", "x"):
        with pytest.raises(BloatError):
            parse_percent(bad)
    with pytest.raises(BloatError, match="between 0 and 1"):
        parse_fraction("1.5")


# -- the worked example (docs/bloat.md), no root needed -------------------------------------------------
def test_worked_example_numbers(example):
    with open_image(str(example)) as img:
        report = audit_image(img, gates=Gates(depth=1))
    t, x = report.totals, be.EXAMPLE
    assert (t["stored_bytes"], t["visible_bytes"], t["wasted_bytes"]) == (x["stored"], x["visible"], x["wasted"])
    assert t["stored_bytes"] == t["visible_bytes"] + t["wasted_bytes"]
    assert (t["efficiency"], t["wasted_percent"]) == (x["efficiency"], x["wasted_percent"])
    assert _waste(report) == x["waste"]
    assert [(r["wasted_bytes"], r["caused_bytes"]) for r in report.layers] == \
        [(900, 0), (6300, 0), (0, 5000), (0, 1300), (0, 200), (0, 700)]
    assert [r["command"] for r in report.layers] == [cmd for cmd, _ in be.EXAMPLE_LAYERS]
    assert [(d["dir"], d["bytes"]) for d in report.by_directory] == [("/data", 6300), ("/var", 700),
                                                                     ("/etc", 200)]
    with open_image(str(example)) as img:
        deeper = audit_image(img, gates=Gates(depth=2))
    assert [(d["dir"], d["bytes"]) for d in deeper.by_directory] == [
        ("/data", 5000), ("/data/tmp", 1300), ("/var/cache", 700), ("/etc", 200)]
    # what the layer that made /data/big waste changed
    big = next(w for w in report.waste if w["path"] == "/data/big")
    assert big["what"] == ["mode"]


def test_worked_example_is_what_the_docs_say(example):
    doc = (ROOT / "docs" / "bloat.md").read_text()
    for needle in ("**13500**", "**6300**", "**7200**", "**0.466667**", "**53.3333**",
                   "0: 900 / 0; 1: 6300 / 0; 2: 0 / 5000; 3: 0 / 1300", "wasted 5900, ignored 1300",
                   "0.562963", "**2 345 000**", "0.955217"):
        assert needle in doc, needle
    with open_image(str(example)) as img:
        report = audit_image(img, gates=Gates(ignore=["/data/tmp/*"]))
    t = report.totals
    assert (t["wasted_bytes"], t["ignored_bytes"], t["efficiency"]) == (5900, 1300, 0.562963)
    assert sorted(w["path"] for w in report.waste if w["ignored"]) == ["/data/tmp/x", "/data/tmp/y"]


def test_worked_example_changes_name_the_shadowed_layer(example):
    with open_image(str(example)) as img:
        report = audit_image(img)
    rows = {(c["layer"], c["path"]): c for c in report.changes}
    assert rows[(2, "/data/big")]["change"] == "modified" and rows[(2, "/data/big")]["shadows"] == 1
    assert (rows[(3, "/data/tmp/x")]["change"], rows[(3, "/data/tmp/x")]["via"],
            rows[(3, "/data/tmp/x")]["shadows"], rows[(3, "/data/tmp/x")]["shadow_size"]) == \
        ("deleted", "parent", 1, 600)
    assert rows[(5, "/var/cache/a")]["via"] == "opaque" and rows[(5, "/var/cache/a")]["shadows"] == 0
    assert report.layers[3]["deleted"] == {"count": 3, "bytes": 1300}  # /data/tmp and its two files
    assert report.layers[5]["added"] == {"count": 1, "bytes": 50}


def test_unchanged_copy_with_nothing_different_is_found(tmp_path):
    """A later layer storing the very same file again (mode, owner, mtime too): the scanner
    reports nothing, the audit still counts the lower copy as waste."""
    same = [("data/", None, 0o755), ("data/big", be._fill(5000, "big"), 0o644)]
    layers = [("base", [("bin/", None, 0o755), ("bin/app", be._fill(10, "a"), 0o755)]),
              ("RUN write", same), ("RUN copy again", same)]
    saved = be.EXAMPLE_LAYERS
    try:
        be.EXAMPLE_LAYERS = layers
        be.write_example(tmp_path / "oci")
    finally:
        be.EXAMPLE_LAYERS = saved
    with open_image(str(tmp_path / "oci")) as img:
        report = audit_image(img)
    assert _waste(report) == {"/data/big": (5000, 1, 2, "unchanged-copy")}
    assert report.layers[2]["copied"] == {"count": 1, "bytes": 5000}
    assert report.layers[2]["modified"]["count"] == 0
    assert report.totals["visible_bytes"] == 5010


def test_metacopy_files_count_zero_bytes():
    """The rich sample was made with metacopy=on: /etc/passwd's chmod is a metacopy copy-up."""
    from ovforensics import open_layer

    rich = ROOT / "samples" / "rich"
    report = audit_container(open_layer(str(rich / "upper.tar")),
                             [open_layer(str(rich / "mid.tar"), 0), open_layer(str(rich / "base.tar"), 1)])
    files = {f["path"]: f for f in report.files}
    assert (files["/etc/passwd"]["category"], files["/etc/passwd"]["bytes"]) == ("metacopy", 0)
    assert files["/etc/passwd"]["size"] == 30  # the lower file's size, shown, not counted
    assert files["/var/log/app.log"]["category"] == "copy_unchanged"
    assert report.totals["metacopy_files"] == 1
    assert report.totals["allocated_bytes"] is None  # archives: unknown
    assert report.totals["stored_bytes"] == sum(f["bytes"] for f in report.files)


# -- a real dockerd's image -----------------------------------------------------------------------------
def test_image_waste_is_exactly_what_the_layers_put_there(env):
    with open_image(be.APP, engine="docker", data_root=env.data) as img:
        report = audit_image(img)
    assert _waste(report) == be.APP_WASTE
    t = report.totals
    visible = env.rootfs_bytes + be.BIG + be.CONF_NEW + be.CACHE_NEW
    assert t["wasted_bytes"] == be.APP_WASTED == 32_769_847
    assert t["visible_bytes"] == visible
    assert t["stored_bytes"] == visible + be.APP_WASTED
    assert t["by_reason"] == {"deleted": 0, "deleted-dir": 1_234_567, "opaque": 73_000,
                              "overwritten": 5_000, "unchanged-copy": be.BIG, "type-change": 0,
                              "hidden": 0}
    layers = report.layers
    assert [r["stored_bytes"] for r in layers] == [
        env.rootfs_bytes, be.BIG + 1_234_567 + be.CONF_OLD + 73_000, be.BIG, 0, be.CONF_NEW, be.CACHE_NEW]
    assert [r["caused_bytes"] for r in layers] == [0, 0, be.BIG, 1_234_567, be.CONF_OLD, 73_000]
    assert [r["wasted_bytes"] for r in layers] == [0, be.APP_WASTED, 0, 0, 0, 0]
    assert [r["command"] for r in layers[1:]] == be.APP_COMMANDS
    assert not report.anomalies


def test_the_copy_the_image_shows_is_never_waste(env):
    """dive's #684: the chmod-ed /big of layer 2 is what the image shows; only layer 1's is waste."""
    with open_image(be.APP, engine="docker", data_root=env.data) as img:
        report = audit_image(img)
    assert [w["layer"] for w in report.waste if w["path"] == "/big"] == [1]
    assert report.layers[2]["visible_bytes"] == be.BIG
    assert report.totals["efficiency"] == round(report.totals["visible_bytes"] / report.totals["stored_bytes"], 6)


def test_image_cli_formats(env, tmp_path):
    args = ["image", be.APP, "--engine", "docker", "--data-root", env.data, "--no-config"]
    doc = json.loads(run(*args, "-f", "json").stdout)
    assert doc["report"] == "image-bloat" and doc["totals"]["wasted_bytes"] == be.APP_WASTED
    assert {w["path"] for w in doc["waste"]} == set(be.APP_WASTE)
    assert doc["gates"] == {"passed": True, "results": [], "config": None, "ignore": []}
    assert doc["by_directory"]["depth"] == 2
    lines = [json.loads(line) for line in run(*args, "-f", "jsonl").stdout.splitlines()]
    assert lines[0]["record"] == "summary" and lines[0]["totals"] == doc["totals"]
    assert {line["record"] for line in lines} == {"summary", "layer", "directory", "waste", "change"}
    rows = list(csv.DictReader(io.StringIO(run(*args, "-f", "csv").stdout)))
    assert {r["path"]: (int(r["bytes"]), int(r["layer"]), int(r["made_by"]), r["reason"]) for r in rows} \
        == be.APP_WASTE
    layer_rows = list(csv.DictReader(io.StringIO(run(*args, "-f", "csv", "--rows", "layers").stdout)))
    assert [int(r["caused_bytes"]) for r in layer_rows] == [0, 0, be.BIG, 1_234_567, be.CONF_OLD, 73_000]
    table = run(*args, "-f", "table", "--top", "2", "--depth", "1")
    assert table.returncode == 0
    assert f"wasted {be.APP_WASTED}" in table.stdout and "Top 2 wasted paths" in table.stdout
    assert "(depth 1)" in table.stdout
    bad = run(*args, "-f", "csv", "--rows", "files")
    assert bad.returncode == 2 and "--rows" in bad.stderr and len(bad.stderr.splitlines()) == 1


# -- a real container -----------------------------------------------------------------------------------
def _web_report(env, *args):
    proc = run("bloat", *args, "-f", "json", "--no-config")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_container_copy_ups_exactly(env):
    doc = _web_report(env, be.WEB, "--engine", "docker", "--data-root", env.data)
    files = {f["path"]: (f["category"], f["what"], f["bytes"]) for f in doc["files"]}
    assert files == be.WEB_FILES
    t = doc["totals"]
    unchanged = 2_000_000 + 300_000 + 40_000 + 5_000
    assert (t["copy_unchanged_bytes"], t["copy_unchanged_files"]) == (unchanged, 4)
    assert (t["copy_changed_bytes"], t["added_bytes"]) == (6_005, be.NEW_BIN + be.SPARSE)
    assert t["stored_bytes"] == unchanged + 6_005 + be.NEW_BIN + be.SPARSE == 52_363_350
    assert t["wasted_bytes"] == unchanged and t["efficiency"] == 0.955217
    assert t["link_names"] == 1 and t["metacopy_files"] == 0
    assert {w["path"] for w in doc["waste"]} == {p for p, v in be.WEB_FILES.items() if v[0] == "copy_unchanged"}
    # allocated beside apparent: st_blocks * 512 of the upper files themselves
    found = next(f for f in doc["files"] if f["path"] == "/sparse.img")
    upper = doc["container"]["upper"]
    st = os.lstat(os.path.join(upper, "sparse.img"))
    assert found["allocated"] == st.st_blocks * 512 < found["size"] == be.SPARSE
    assert t["allocated_bytes"] == sum(f["allocated"] for f in doc["files"])
    link = next(f for f in doc["files"] if f["path"] == "/c/link.bin")
    assert link["links"] == ["/c/hard"] and link["shadow_layer"] is not None


def test_container_by_layers_named_by_hand(env):
    graph = env.dockerd.inspect(be.WEB)["GraphDriver"]["Data"]
    doc = _web_report(env, "--upper", graph["UpperDir"], "--lowers", graph["LowerDir"])
    assert {f["path"]: (f["category"], f["what"], f["bytes"]) for f in doc["files"]} == be.WEB_FILES
    assert doc["container"]["upper"] == graph["UpperDir"]


def test_container_formats(env):
    args = ["bloat", be.WEB, "--engine", "docker", "--data-root", env.data, "--no-config"]
    rows = list(csv.DictReader(io.StringIO(run(*args, "-f", "csv").stdout)))
    assert {r["path"]: (r["category"], int(r["bytes"])) for r in rows} == \
        {p: (v[0], v[2]) for p, v in be.WEB_FILES.items()}
    dirs = list(csv.DictReader(io.StringIO(run(*args, "-f", "csv", "--rows", "dirs").stdout)))
    c = next(r for r in dirs if r["dir"] == "/c")
    assert (int(c["copy_unchanged"]), int(c["copy_changed"]), int(c["added"])) == (2_345_000, 6_005, 0)
    lines = [json.loads(line) for line in run(*args, "-f", "jsonl").stdout.splitlines()]
    assert lines[0]["record"] == "summary" and lines[0]["totals"]["wasted_bytes"] == 2_345_000
    assert {line["record"] for line in lines} == {"summary", "category", "directory", "upper_directory",
                                                  "waste", "file"}
    table = run(*args, "-f", "table").stdout
    assert "Wasted (unchanged copies): 2345000" in table and "/sparse.img" in table


# -- gates ----------------------------------------------------------------------------------------------
def _image_args(env):
    return ["image", be.APP, "--engine", "docker", "--data-root", env.data, "--no-config"]


def test_gates_pass_exit_0(env):
    proc = run(*_image_args(env), "--max-wasted", "50MB", "--max-wasted-percent", "50",
               "--min-efficiency", "0.5", "-f", "json")
    assert proc.returncode == 0, proc.stderr
    gates = json.loads(proc.stdout)["gates"]
    assert gates["passed"] is True
    assert [(g["gate"], g["passed"]) for g in gates["results"]] == [
        ("max-wasted", True), ("max-wasted-percent", True), ("min-efficiency", True)]


def test_failed_gates_exit_3_and_say_by_how_much(env, tmp_path):
    out = tmp_path / "r.json"
    proc = run(*_image_args(env), "--max-wasted", "30MiB", "--max-wasted-percent", "10",
               "--min-efficiency", "95%", "-o", str(out))
    assert proc.returncode == 3, proc.stderr
    over = be.APP_WASTED - 30 * 2**20
    lines = proc.stderr.splitlines()
    assert lines[0] == (f"ovforensics: gate failed: max-wasted: {be.APP_WASTED} bytes wasted (31.3 MiB), "
                        f"limit {30 * 2**20} (30.0 MiB): over by {over} bytes (1.3 MiB)")
    assert lines[1].startswith("ovforensics: gate failed: max-wasted-percent: 49.")
    assert "over by 39." in lines[1]
    assert lines[2].startswith("ovforensics: gate failed: min-efficiency: efficiency 0.5")
    assert len(lines) == 3
    doc = json.loads(out.read_text())  # the report is complete, gates included
    gates = doc["gates"]
    assert gates["passed"] is False
    first = gates["results"][0]
    assert (first["gate"], first["limit"], first["value"], first["passed"], first["over_by"]) == \
        ("max-wasted", 30 * 2**20, be.APP_WASTED, False, over)
    assert gates["results"][2]["under_by"] == round(0.95 - doc["totals"]["efficiency"], 6)
    # jsonl carries them in its first record, csv still writes its rows
    proc = run(*_image_args(env), "--max-wasted", "1", "-f", "jsonl")
    assert proc.returncode == 3
    assert json.loads(proc.stdout.splitlines()[0])["gates"]["passed"] is False


def test_gate_limit_is_inclusive(env):
    proc = run(*_image_args(env), "--max-wasted", str(be.APP_WASTED), "-f", "json")
    assert proc.returncode == 0
    proc = run(*_image_args(env), "--max-wasted", str(be.APP_WASTED - 1), "-f", "json")
    assert proc.returncode == 3 and "over by 1 bytes" in proc.stderr


def test_ignore_globs(env):
    proc = run(*_image_args(env), "--ignore", "/junk/*", "--ignore", "/big", "--max-wasted", "100k",
               "-f", "json")
    assert proc.returncode == 0, proc.stderr
    t = json.loads(proc.stdout)["totals"]
    assert t["ignored_bytes"] == be.BIG + 1_234_567
    assert t["wasted_bytes"] == be.APP_WASTED - be.BIG - 1_234_567 == 78_000


def test_config_file(env, tmp_path):
    (tmp_path / ".ovforensics.toml").write_text(
        '[bloat]\nmax-wasted = "1.5GiB"\nmin-efficiency = 0.6\nignore = ["/big"]\ntop = 3\n')
    args = ["image", be.APP, "--engine", "docker", "--data-root", env.data, "-f", "json"]
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # /big ignored: efficiency 1 - 1312567/stored
    doc = json.loads(proc.stdout)
    assert doc["gates"]["config"] == ".ovforensics.toml" and doc["gates"]["ignore"] == ["/big"]
    assert len(doc["top"]) == 3 and doc["totals"]["ignored_bytes"] == be.BIG
    # the command line wins over the file; --no-config drops the file
    assert run(*args, "--max-wasted", "1MB", cwd=tmp_path).returncode == 3
    proc = run(*args, "--no-config", "--min-efficiency", "0.6", cwd=tmp_path)
    assert proc.returncode == 3 and "min-efficiency" in proc.stderr
    other = tmp_path / "gates.toml"
    other.write_text('[bloat]\nmax_wasted_percent = "1%"\n')
    proc = run(*args, "--config", str(other), cwd=tmp_path)
    assert proc.returncode == 3 and "max-wasted-percent" in proc.stderr
    (tmp_path / ".ovforensics.toml").write_text('[bloat]\nmax-wastd = "1MB"\n')
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2 and "unknown key 'max-wastd'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("extra, names", [
    (["--max-wasted", "12XB"], "--max-wasted"),
    (["--max-wasted-percent", "120"], "--max-wasted-percent"),
    (["--min-efficiency", "2"], "--min-efficiency"),
    (["--format", "xml"], "--format"),
    (["--depth", "0"], "--depth"),
])
def test_bad_gate_values_exit_2(example, extra, names):
    proc = run("image", str(example), "--no-config", *extra)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0] and "Traceback" not in proc.stderr


def test_container_gate(env):
    proc = run("bloat", be.WEB, "--engine", "docker", "--data-root", env.data, "--no-config",
               "--max-wasted", "2MB", "-f", "json")
    assert proc.returncode == 3
    assert proc.stderr.strip() == ("ovforensics: gate failed: max-wasted: 2345000 bytes wasted (2.2 MiB), "
                                   "limit 2000000 (1.9 MiB): over by 345000 bytes (336.9 KiB)")
    assert json.loads(proc.stdout)["gates"]["results"][0]["over_by"] == 345_000
    proc = run("bloat", be.WEB, "--engine", "docker", "--data-root", env.data, "--no-config",
               "--ignore", "/c/chmod.bin", "--max-wasted", "2MB", "-f", "json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["totals"]["ignored_bytes"] == 2_000_000


def test_make_gates_api():
    gates = make_gates(max_wasted="1.5GiB", ignore=["/x/*"], use_default=False)
    assert gates.max_wasted == 1_610_612_736 and gates.ignore == ["/x/*"] and gates.top == 20


# -- the HTML report ------------------------------------------------------------------------------
def _bar_rows(svg: str):
    """(label y, [rect centre y]) per row of a bar chart, from the SVG itself."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg)
    labels = [el for el in root if el.tag == "text" and el.find("title") is not None]
    rects = [el for el in root if el.tag == "rect"]
    return labels, rects


@pytest.mark.parametrize("series", [1, 2, 3])
def test_bar_chart_bars_centred_on_their_labels(series):
    from ovforensics.bloat.report_html import bar_chart

    rows = [(f"layer {i}", f"tip {i}", [("keep", 100 * (i + 1) + s, f"s{s}") for s in range(series)])
            for i in range(4)]
    labels, rects = _bar_rows(bar_chart("c", rows))
    assert len(labels) == 4 and len(rects) == 4 * series
    for i, label in enumerate(labels):
        assert label.get("dominant-baseline") == "central"  # y is the text's vertical centre
        group = rects[i * series:(i + 1) * series]
        top = min(float(r.get("y")) for r in group)
        bottom = max(float(r.get("y")) + float(r.get("height")) for r in group)
        assert abs((top + bottom) / 2 - float(label.get("y"))) < 0.51, (i, label.get("y"), top, bottom)
        # each bar stays inside its own row: the next label is below this group
        if i + 1 < len(labels):
            assert bottom < float(labels[i + 1].get("y"))


def test_html_report_says_how_to_read_it(example, tmp_path):
    from ovforensics.bloat.report_html import render

    with open_image(str(example)) as img:
        page = render(audit_image(img, gates=Gates(depth=1)))
    assert "docs/bloat.md" not in page
    assert "How to read this report" in page
    for word in ("stored", "visible", "wasted here", "made waste", "efficiency", "exit with status 3"):
        assert word in page
    from ovforensics import open_layer

    rich = ROOT / "samples" / "rich"
    page = render(audit_container(open_layer(str(rich / "upper.tar")),
                                  [open_layer(str(rich / "mid.tar"), 0),
                                   open_layer(str(rich / "base.tar"), 1)]))
    assert "docs/bloat.md" not in page and "copy_unchanged" in page and "How to read" in page
