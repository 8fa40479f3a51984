#!/usr/bin/python3
"""The playground page at / in a real browser: headless Chromium against a real tcm-server.

Chromium (Debian's `chromium`) is driven over its DevTools protocol with Debian's
python3-websocket. The test opens links to the page, waits for the page to say it is
done, and checks the images it shows: their number, their natural size as the browser
decoded them, that each showed its first-step preview before its final image, and that
the final image has the pixels of the server's own /v1/models/{m}/generate PNG for the
same class, steps and seed. A screenshot of the first link is written to --screenshot.

Usage: playground_test.py --server BIN --models DIR --screenshot FILE.png
"""

import argparse
import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import websocket

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from tcm_server import Server, decode_png, stop_process  # noqa: E402

ARGS = None
SERVER = None
BROWSER = None
WORK_DIR = None

# Records, from the page's first script on, which images were ever shown as a preview.
PREVIEW_RECORDER = """
window.__previews = new Set();
new MutationObserver((changes) => {
  for (const change of changes) {
    const figure = change.target;
    if (figure.tagName === 'FIGURE' && figure.className === 'preview') {
      window.__previews.add([...figure.parentNode.children].indexOf(figure));
    }
  }
}).observe(document, { attributes: true, attributeFilter: ['class'], subtree: true });
"""

# What the page shows, as plain data.
PAGE_STATE = """
JSON.stringify({
  state: document.body.dataset.state || '',
  status: document.getElementById('status').textContent,
  search: location.search,
  previews: window.__previews ? window.__previews.size : -1,
  figures: [...document.querySelectorAll('#images figure')].map((figure) => {
    const img = figure.querySelector('img');
    return { kind: figure.className, caption: figure.querySelector('figcaption').textContent,
             naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
             decodedWidth: Number(img.dataset.naturalWidth || 0), src: img.getAttribute('src') || '' };
  }),
})
"""


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, work_dir):
        self.profile = os.path.join(work_dir, "chromium-profile")
        self.log = open(os.path.join(work_dir, "chromium.log"), "w")
        self.proc = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={self.profile}", "--window-size=1100,800", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 120
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start; see " + self.log.name)
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=60) as response:
            pages = [t for t in json.load(response) if t["type"] == "page"]
        self.socket = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=120)
        self.next_id = 0

    def call(self, method, **params):
        """The result of one DevTools command (events that arrive meanwhile are skipped)."""
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url):
        """Navigates to `url` and returns the page's state once it is done or failed (up to 5 minutes)."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 300
        while True:
            state = json.loads(self.evaluate(PAGE_STATE) or "{}") if self.evaluate("!!document.body") else {}
            if state.get("state") in ("done", "error") or time.monotonic() > deadline:
                return state
            time.sleep(0.1)

    def close(self):
        if getattr(self, "socket", None):
            self.socket.close()
        stop_process(self.proc, 30)
        self.log.close()


def setUpModule():
    global SERVER, BROWSER, WORK_DIR
    WORK_DIR = tempfile.mkdtemp()
    SERVER = Server(ARGS.server, ARGS.models, os.path.join(WORK_DIR, "server.log"))
    BROWSER = Browser(WORK_DIR)
    BROWSER.call("Page.enable")
    BROWSER.call("Emulation.setDeviceMetricsOverride", width=1100, height=800, deviceScaleFactor=1, mobile=False)
    BROWSER.call("Page.addScriptToEvaluateOnNewDocument", source=PREVIEW_RECORDER)


def tearDownModule():
    BROWSER.close()
    SERVER.stop()
    shutil.rmtree(WORK_DIR, ignore_errors=True)


def png_size(data):
    """(width, height) from a PNG's header."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    return struct.unpack(">II", data[16:24])


def page_url(query):
    return f"http://127.0.0.1:{SERVER.http_port}/?{query}"


def server_png(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{SERVER.http_port}{path}", timeout=300) as response:
        return response.read()


class PlaygroundTest(unittest.TestCase):
    def test_a_link_generates_its_images_with_previews_at_once(self):
        state = BROWSER.open(page_url("model=fashion-mnist-tcm&class=3&steps=2&seed=7&num=8"))
        self.assertEqual(state.get("state"), "done", state.get("status"))
        shot = BROWSER.call("Page.captureScreenshot", format="png")
        os.makedirs(os.path.dirname(os.path.abspath(ARGS.screenshot)), exist_ok=True)
        with open(ARGS.screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        self.assertEqual(png_size(base64.b64decode(shot["data"])), (1100, 800))

        figures = state["figures"]
        self.assertEqual(len(figures), 8)
        for figure in figures:
            self.assertEqual(figure["kind"], "final")
            self.assertEqual((figure["naturalWidth"], figure["naturalHeight"]), (32, 32))
            self.assertEqual(figure["decodedWidth"], 32)
            self.assertIn("3 · Dress", figure["caption"])
        self.assertEqual(state["previews"], 8, "every image showed its first step before its final image")
        self.assertIn("seed 7", state["status"])
        self.assertIn("seed=7", state["search"])

        # The image shown is the server's own for that class, steps, seed and index.
        shown = base64.b64decode(figures[0]["src"].split(",", 1)[1])
        reference = server_png("/v1/models/fashion-mnist-tcm/generate?class=3&steps=2&seed=7&num=1")
        self.assertEqual(decode_png(shown), decode_png(reference))
        one_step = server_png("/v1/models/fashion-mnist-tcm/generate?class=3&steps=1&seed=7&num=1")
        self.assertNotEqual(decode_png(shown), decode_png(one_step))

    def test_a_link_without_a_seed_gets_the_servers_seed_into_its_url(self):
        state = BROWSER.open(page_url("model=fashion-mnist-ct&steps=1&num=3&preview=0"))
        self.assertEqual(state.get("state"), "done", state.get("status"))
        self.assertEqual([f["kind"] for f in state["figures"]], ["final"] * 3)
        self.assertEqual(state["previews"], 0)
        seed = [part.split("=")[1] for part in state["search"].lstrip("?").split("&") if part.startswith("seed=")]
        self.assertEqual(len(seed), 1, state["search"])
        self.assertIn(f"seed {seed[0]}", state["status"])
        # Opening that link again shows the same images.
        again = BROWSER.open(page_url(state["search"].lstrip("?")))
        self.assertEqual([f["src"] for f in again["figures"]], [f["src"] for f in state["figures"]])

    def test_a_bad_link_says_what_is_wrong(self):
        state = BROWSER.open(page_url("model=fashion-mnist-tcm&class=3&steps=2&seed=7&num=500"))
        self.assertEqual(state.get("state"), "error")
        self.assertIn("query 'num': must be at most 64, got 500", state["status"])
        self.assertEqual([f["kind"] for f in state["figures"] if f["kind"] != "pending"], [])

    def test_the_page_loads_nothing_from_elsewhere(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{SERVER.http_port}/", timeout=60) as response:
            self.assertEqual(response.headers["Content-Type"], "text/html; charset=utf-8")
            page = response.read().decode()
        for outside in ("http://", "https://", "//cdn", "<link"):
            self.assertNotIn(outside, page)


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="the tcm-server binary")
    parser.add_argument("--models", required=True, help="a model repository holding fashion-mnist-tcm and -ct")
    parser.add_argument("--screenshot", required=True, help="where to write the page's screenshot (PNG)")
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
