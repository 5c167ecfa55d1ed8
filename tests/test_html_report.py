"""The HTML bloat report in a real browser: Debian's headless Chromium, driven over the DevTools
protocol on a pipe (``--remote-debugging-pipe``: no port, no websocket package needed).

For the image report (gates failing), the container report and the report of an image whose
file names attack HTML (script tags, event handlers, bidi overrides, newlines, bytes that are
not UTF-8), the page must load with no console message of level warning or error, no uncaught
exception, no dialog and no request other than the file itself; its script must have run
(``data-ready``), both charts must be drawn (SVG bars and treemap cells in the DOM, and the
waste colour in the screenshot's pixels), and every hostile name must come out as text.
"""
from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import bloat_env as be  # noqa: E402
from bloat_env import run  # noqa: E402
from conftest import need  # noqa: E402

from ovforensics.bloat.report_html import CSP, SCRIPT, STYLE  # noqa: E402

WASTE_RGB = (0xC8, 0x37, 0x2D)  # --waste in the style sheet
CAUSED_RGB = (0xE8, 0x91, 0x2D)  # --caused


@pytest.fixture(scope="session")
def env(request):
    return be.session_env(request)


# -- Chromium over the DevTools pipe ------------------------------------------------------------------
class Chromium:
    """Headless Chromium; DevTools commands go in on fd 3, answers and events come out on fd 4,
    each message a JSON text ended by a NUL byte."""

    def __init__(self, width: int, height: int):
        self.profile = tempfile.mkdtemp(prefix="ovf-chromium-")
        to_read, self._to = os.pipe()
        self._from, from_write = os.pipe()

        def child():
            os.dup2(to_read, 3)
            os.dup2(from_write, 4)

        self.proc = subprocess.Popen(
            [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
             f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=child, start_new_session=True)
        os.close(to_read)
        os.close(from_write)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self._from], [], [], left)
            if ready:
                chunk = os.read(self._from, 1 << 20)
                if not chunk:
                    raise EOFError(f"chromium closed the pipe (exit {self.proc.poll()})")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait(self, method: str, timeout: float = 30) -> dict:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            event = self._message(deadline)
            if event.get("method") == method:
                return event
            self.events.append(event)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # the process we started, by its handle
            self.proc.wait()
        os.close(self._to)
        os.close(self._from)
        shutil.rmtree(self.profile, ignore_errors=True)


PROBE = """JSON.stringify({
  ready: document.documentElement.getAttribute('data-ready'),
  bars: Array.prototype.map.call(document.querySelectorAll('#layer-chart rect.bar'),
        function (r) { return r.getBBox().width; }),
  cells: Array.prototype.map.call(document.querySelectorAll('#dir-chart rect.cell'),
        function (r) { var b = r.getBBox(); return b.width * b.height; }),
  text: document.body.innerText,
  scripts: document.scripts.length,
  images: document.images.length,
  title: document.title
})"""


def render(path: Path, width: int = 1200, height: int = 1600) -> tuple[dict, bytes, list, list]:
    """Load ``path``; return (DOM probe, PNG screenshot, problems, requests)."""
    browser = Chromium(width, height)
    try:
        page = next(t for t in browser.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        session = browser.send("Target.attachToTarget", {"targetId": page["targetId"],
                                                         "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                            "deviceScaleFactor": 1, "mobile": False},
                     session=session)
        browser.send("Page.navigate", {"url": path.as_uri()}, session=session)
        browser.wait("Page.loadEventFired")
        probe = json.loads(browser.send("Runtime.evaluate", {"expression": PROBE, "returnByValue": True},
                                        session=session)["result"]["value"])
        shot = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"},
                                             session=session)["data"])
        time.sleep(0.3)  # late console messages
        browser.send("Runtime.evaluate", {"expression": "0"}, session=session)
        problems, requests = [], []
        for event in browser.events:
            method, params = event.get("method"), event.get("params", {})
            if method in ("Runtime.exceptionThrown", "Page.javascriptDialogOpening") or \
                    (method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert")) or \
                    (method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning")):
                problems.append(event)
            if method == "Network.requestWillBeSent":
                requests.append(params["request"]["url"])
        return probe, shot, problems, requests
    finally:
        browser.close()


# -- PNG, decoded by hand (zlib + the five scanline filters) --------------------------------------------
def png_pixels(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, scanlines) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 2:  # up: the common case, and mostly a row like the one above
            line = bytearray(prev) if line.count(0) == stride else \
                bytearray((x + p) & 0xFF for x, p in zip(line, prev))
        elif kind == 1:  # sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind in (3, 4):  # average, paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                if kind == 3:
                    line[i] = (line[i] + (a + b) // 2) & 0xFF
                    continue
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def count_colour(rows: list[bytes], bpp: int, rgb: tuple[int, int, int]) -> int:
    return sum(sum(1 for px in zip(row[0::bpp], row[1::bpp], row[2::bpp]) if px == rgb) for row in rows)


def need_chromium() -> None:
    need(shutil.which("chromium") is not None, "needs Debian's chromium (apt-get install -y chromium)")


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "main", "h1", "h2", "p",
                "section", "div", "span", "table", "thead", "tbody", "tr", "th", "td", "ul", "li",
                "svg", "rect", "text", "script"}


def _tags(page: str) -> list[tuple[str, list]]:
    from html.parser import HTMLParser

    found = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    Parser().feed(page)
    return found


# -- the file itself -------------------------------------------------------------------------------
def test_report_is_self_contained(env, tmp_path):
    out = tmp_path / "r.html"
    proc = run("image", be.HOSTILE, "--engine", "docker", "--data-root", env.data, "--no-config",
               "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    tags = _tags(page)
    assert {t for t, _ in tags} <= ALLOWED_TAGS, {t for t, _ in tags} - ALLOWED_TAGS
    for tag, attrs in tags:
        for name, value in attrs:
            assert name not in ("src", "href", "xlink:href", "srcset", "action", "style") and \
                not name.startswith("on"), (tag, name, value)
    for css in (STYLE, SCRIPT):
        assert "url(" not in css and "@import" not in css and "http" not in css
    assert "fetch(" not in SCRIPT and "XMLHttpRequest" not in SCRIPT and "innerHTML" not in SCRIPT
    assert page.count("<script") == 1 and page.count("</script>") == 1
    assert f'content="{CSP}"' in page and "'unsafe-inline'" not in page
    assert f"<style>{STYLE}</style>" in page and f"<script>{SCRIPT}</script>" in page
    assert "/h/&lt;img src=x onerror=alert(1)&gt;" in page
    assert "/h/&lt;/script&gt;alert(2)&lt;" in page
    assert "/h/&quot;&#x27;&gt;&lt;svg onload=alert(3)&gt;" in page
    assert "/h/\\u202eRTL" in page and "\u202e" not in page
    assert "/h/new\\nline" in page and "/h/bad\\xffname" in page


# -- in the browser -----------------------------------------------------------------------------------
def _check_page(path: Path, n_bars: int) -> dict:
    probe, shot, problems, requests = render(path)
    assert problems == [], json.dumps(problems)[:2000]
    assert requests == [path.as_uri()], requests  # nothing but the file itself
    assert probe["ready"] == "2", probe  # the script ran and saw both charts
    assert probe["scripts"] == 1 and probe["images"] == 0
    assert len(probe["bars"]) == n_bars and any(w > 0 for w in probe["bars"]), probe["bars"]
    assert probe["cells"] and all(a > 0 for a in probe["cells"]), probe["cells"]
    width, height, bpp, rows = png_pixels(shot)
    assert (width, height) == (1200, 1600)
    probe["pixels"] = {"waste": count_colour(rows, bpp, WASTE_RGB),
                       "caused": count_colour(rows, bpp, CAUSED_RGB)}
    probe["png"] = shot
    return probe


def test_image_report_in_chromium(env, tmp_path):
    need_chromium()
    out = tmp_path / "app.html"
    proc = run("image", str(env.save), "--no-config", "--max-wasted", "10MB", "-o", str(out))
    assert proc.returncode == 3  # the report is written all the same, gate results in it
    probe = _check_page(out, n_bars=2 * 6)
    (tmp_path / "app.png").write_bytes(probe["png"])
    # layer 1's wasted bar and layer 2's "made waste" bar are drawn in their colours
    assert probe["pixels"]["waste"] > 2000 and probe["pixels"]["caused"] > 2000, probe["pixels"]
    text = probe["text"]
    assert "FAILED" in text and "max-wasted" in text and "over by 22769847 bytes" in text
    for path in be.APP_WASTE:
        assert path in text
    assert be.APP_COMMANDS[1] in text  # the layer's command, from the history


def test_container_report_in_chromium(env, tmp_path):
    need_chromium()
    out = tmp_path / "web.html"
    proc = run("bloat", be.WEB, "--engine", "docker", "--data-root", env.data, "--no-config",
               "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    probe = _check_page(out, n_bars=5)
    assert probe["pixels"]["waste"] > 300, probe["pixels"]  # the copy_unchanged bar
    assert "/c/chmod.bin" in probe["text"] and "copy_unchanged" in probe["text"]


def test_hostile_names_stay_text_in_chromium(env, tmp_path):
    need_chromium()
    out = tmp_path / "hostile.html"
    proc = run("image", be.HOSTILE, "--engine", "docker", "--data-root", env.data, "--no-config",
               "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    probe = _check_page(out, n_bars=2 * 3)
    text = probe["text"]
    for shown in ("/h/<img src=x onerror=alert(1)>", "/h/</script>alert(2)<",
                  "/h/\"'><svg onload=alert(3)>", "/h/bad\\xffname", "/h/new\\nline", "/h/\\u202eRTL",
                  "/h/=cmd|' -C calc'!A0"):
        assert shown in text, shown
    assert probe["title"] == f"Image bloat: {be.HOSTILE}"
    assert re.search(r"wasted\s", text)
