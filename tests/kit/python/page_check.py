#!/usr/bin/python3
"""Looks at tillgate's status page in headless Chromium (Debian's `chromium`), over the
DevTools protocol (Debian's python3-websocket): loads the page, gives it the API token
when it asks, follows the first alert's clip link, waits until the video element can
play, saves a screenshot and prints what the page showed as JSON.

usage: page_check.py URL TOKEN SCREENSHOT.png
"""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Page:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def js(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, what, expression, within=30.0):
        deadline = time.time() + within
        while time.time() < deadline:
            if self.js(expression):
                return
            time.sleep(0.25)
        shown = self.js("document.getElementById('error').textContent")
        raise TimeoutError(f"{what} within {within} s; the page says {shown!r}")


def main():
    url, token, screenshot = sys.argv[1:4]
    port = free_port()
    profile = tempfile.mkdtemp(prefix="tillgate-chromium-")
    chromium = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio",
         f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
         "--autoplay-policy=no-user-gesture-required", "--window-size=1200,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # Its own process group: chromium's helpers go with it.
        start_new_session=True,
    )
    try:
        deadline = time.time() + 30
        targets = []
        while not targets:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    targets = [t for t in json.load(r) if t.get("type") == "page"]
            except OSError:
                pass
            if not targets:
                if time.time() > deadline or chromium.poll() is not None:
                    sys.exit("chromium did not start its DevTools endpoint with a page")
                time.sleep(0.2)
        page = Page(websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=30))
        page.call("Page.enable")
        page.call("Page.navigate", url=url)
        page.wait("the page", "document.readyState === 'complete' && !!document.getElementById('alerts')")
        page.wait("the page asking for the token or loading", "document.body.dataset.loaded === 'yes' || "
                  "getComputedStyle(document.getElementById('token-form')).display === 'block'")
        if page.js("document.body.dataset.loaded !== 'yes'"):
            page.js(f"document.getElementById('token-input').value = {json.dumps(token)}; "
                    "document.getElementById('token-form').requestSubmit(); true")
        page.wait("an alert with a clip link", "document.querySelectorAll('a.clip').length > 0")
        page.js("document.querySelector('a.clip').click(); true")
        page.wait("the clip playing", "(() => { const v = document.getElementById('clip'); "
                  "return v.readyState >= 2 && v.duration > 0; })()")
        seen = page.js("""(() => {
            const v = document.getElementById('clip');
            const rows = (id) => [...document.querySelectorAll('#' + id + ' tbody tr')]
                .map((r) => [...r.cells].map((c) => c.textContent));
            return {
                ready_state: v.readyState, duration: v.duration, video_width: v.videoWidth,
                asked_for_token: !!sessionStorage.getItem('tillgate-token'),
                per_minute: document.getElementById('per-minute').textContent,
                alerts: rows('alerts'), sinks: rows('sinks'), cameras: rows('cameras'),
                player: document.getElementById('player-title').textContent,
                error: document.getElementById('error').textContent,
            };
        })()""")
        png = page.call("Page.captureScreenshot", format="png")["data"]
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(png))
        print(json.dumps(seen))
    finally:
        try:
            os.killpg(chromium.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        chromium.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
