"""Screenshot of TensorBoard's Images tab for the README (docs/tensorboard.png).

Usage: python docs/tensorboard_screenshot.py LOGDIR OUT.png [TAG_REGEX]
(after e.g. ``bash scripts/demo.sh --fast --logger tensorboard --out LOGDIR``). Serves LOGDIR with
the ``tensorboard`` next to this Python on a free loopback port, opens the Images tab in headless
Chromium (the DevTools driver of tests/browser), types the tag filter and saves a 1400 x 1000
screenshot.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.browser.test_tensorboard_dashboard import DevTools, get

DEFAULT_FILTER = "class_model/output$|channels/features.9$|examples/features.13$"


def main(logdir: str, out: str, tags: str = DEFAULT_FILTER) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("tensorboard")),
            "--logdir",
            logdir,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast=false",
            "--samples_per_plugin",
            "images=500",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):  # until the images plugin has read the run
            try:
                if json.loads(get(f"{url}/data/plugin/images/tags")):
                    break
            except OSError:
                pass
            time.sleep(0.3)
        with tempfile.TemporaryDirectory() as profile:
            browser = DevTools(Path(profile))
            try:
                browser.page(
                    "Emulation.setDeviceMetricsOverride",
                    width=1400,
                    height=1000,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                browser.page("Page.navigate", url=f"{url}/#images")
                time.sleep(8)
                for kind in ("mousePressed", "mouseReleased"):  # the tag filter box
                    browser.page(
                        "Input.dispatchMouseEvent",
                        type=kind,
                        x=700,
                        y=93,
                        button="left",
                        clickCount=1,
                    )
                browser.page("Input.insertText", text=tags)
                time.sleep(6)
                shot = browser.page("Page.captureScreenshot")["data"]
                Path(out).write_bytes(base64.b64decode(shot))
            finally:
                browser.close()
    finally:
        server.kill()


if __name__ == "__main__":
    main(*sys.argv[1:])
