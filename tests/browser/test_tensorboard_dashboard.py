"""TensorBoard's own Images dashboard, in headless Chromium, shows what featurewatch logged.

The TensorBoard sink's tests read event files back with ``EventAccumulator``; this checks the last
step a user sees: a real run logs through ``TensorBoardLogger``, the ``tensorboard`` server serves
it on loopback, and Chromium opens the Images dashboard. The dashboard is a web-components app
(its cards live in shadow roots, which ``--dump-dom`` does not serialize), so the page is driven
over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no port, no extra package): a
script walks every shadow root and reports the tag names shown and each image's decoded size.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from featurewatch import ActivationGrid, FilterWeights
from tests._models import LitClassifier, SmallCNN, digits_loaders
from tests.loggers.conftest import chromium_path

#: The image tags the run below logs (FilterWeights: the first conv; ActivationGrid: two layers and
#: its probe images).
TAGS = [
    "featurewatch/filters/net.features.0",
    "featurewatch/activations/net.features.2",
    "featurewatch/activations/net.features.6",
    "featurewatch/activations/probe",
]

#: Every element of the page, shadow roots included: the text shown, the <img> elements' decoded
#: sizes, and the top-level elements.
DEEP_DOM = """
(() => {
  const texts = [], images = [];
  const walk = (root) => {
    for (const node of root.childNodes) {
      if (node.nodeType === Node.TEXT_NODE) { texts.push(node.textContent); continue; }
      if (node.nodeType !== Node.ELEMENT_NODE) continue;
      if (node.tagName === 'IMG') {
        images.push({src: node.src, w: node.naturalWidth, h: node.naturalHeight,
                     complete: node.complete});
      }
      if (node.shadowRoot) walk(node.shadowRoot);
      walk(node);
    }
  };
  walk(document);
  const top = Array.from(document.body ? document.body.children : []).map(e => e.tagName);
  return JSON.stringify({text: texts.join(' ').split(/\\s+/).join(' '), images, top});
})()
"""


def fit(root: Path) -> Path:
    """A tiny real run: 2 epochs of 4 steps, both callbacks at the start and every epoch end."""
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders(n=128, batch_size=32)
    logger = TensorBoardLogger(root, name="tb")
    trainer = pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=logger,
        callbacks=[
            FilterWeights(at_start=True),
            ActivationGrid(
                layers=["net.features.2", "net.features.6"], num_images=2, at_start=True
            ),
        ],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(LitClassifier(SmallCNN()), train, val)
    return Path(logger.log_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


@pytest.fixture
def tensorboard(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``(base URL, log dir)`` of a ``tensorboard`` server on loopback, killed at the end."""
    logdir = fit(tmp_path / "run")
    port = free_port()
    log = open(tmp_path / "tensorboard.log", "w")  # noqa: SIM115 - closed in the finally below
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("tensorboard")),
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast=false",
            "--samples_per_plugin",
            "images=100",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, tags = time.monotonic() + 40, None
        while True:  # until the images plugin has read every tag of the run
            if server.poll() is not None:
                pytest.fail(f"tensorboard exited: {(tmp_path / 'tensorboard.log').read_text()}")
            try:
                tags = json.loads(get(f"{url}/data/plugin/images/tags"))
                if sorted(tags.get(".", {})) == sorted(TAGS):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"tensorboard did not serve the images in 40 s: {tags!r}")
            time.sleep(0.3)
        yield url, logdir
    finally:
        server.kill()
        server.wait(timeout=10)
        log.close()


class DevTools:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (DevTools messages on fds 3/4,
    each ended by a NUL byte)."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds() -> None:  # in the child: the pipe ends where Chromium expects them
            # via fresh copies: a pipe end that already is fd 3 or 4 would stay close-on-exec
            # (dup2 onto itself changes nothing), and one copy could overwrite the other
            ends = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        self.process = subprocess.Popen(
            [
                chromium_path(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--force-color-profile=srgb",
                "--hide-scrollbars",
                "--window-size=1366,1000",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            # the fds os.pipe() makes are close-on-exec, their dup2 copies are not: only 3 and 4
            # (and what the parent marked inheritable) reach Chromium
            close_fds=False,
            preexec_fn=fds,  # noqa: PLW1509 - dup2 only, no locks taken
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)[
            "sessionId"
        ]

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events in between are dropped)."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise AssertionError(f"chromium closed the pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, self.session, **params)

    def evaluate(self, script: str) -> Any:
        result = self.page("Runtime.evaluate", expression=script, returnByValue=True)
        return result["result"].get("value")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def test_the_images_dashboard_lists_and_renders_every_featurewatch_tag(tensorboard, tmp_path):
    url, logdir = tensorboard
    browser = DevTools(tmp_path / "profile")
    try:
        browser.page("Page.navigate", url=f"{url}/#images")
        deadline = time.monotonic() + 30
        while True:  # until every tag's card shows a decoded image
            seen = json.loads(browser.evaluate(DEEP_DOM) or '{"text": "", "images": []}')
            served = [
                i for i in seen["images"] if "/data/plugin/images/individualImage" in i["src"]
            ]
            decoded = [i for i in served if i["complete"] and i["w"] > 0 and i["h"] > 0]
            if all(t in seen["text"] for t in TAGS) and len(decoded) >= len(TAGS):
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the Images dashboard did not show every tag with its image in 30 s: "
                    f"missing {[t for t in TAGS if t not in seen['text']]}, "
                    f"{len(decoded)} of {len(served)} images decoded"
                )
            time.sleep(0.5)
        shot = tmp_path / "tensorboard_images.png"
        shot.write_bytes(base64.b64decode(browser.page("Page.captureScreenshot")["data"]))
    finally:
        browser.close()
    assert "TB-WEBAPP" in seen["top"]  # TensorBoard's app, not an error page
    # each tag's card shows a decoded image served for that tag, of the logged image's size
    # (TensorBoard names an image by a blob key: base64 JSON [experiment, plugin, run, tag, ...])
    shown: dict[str, tuple[int, int]] = {}
    for image in decoded:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(image["src"]).query)
        blob = query["blob_key"][0]
        tag = json.loads(base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4)))[3]
        shown[tag] = (image["w"], image["h"])
    accumulator = EventAccumulator(str(logdir), size_guidance={"images": 0})
    accumulator.Reload()
    logged = {
        tag: (accumulator.Images(tag)[-1].width, accumulator.Images(tag)[-1].height)
        for tag in accumulator.Tags()["images"]
    }
    assert sorted(logged) == sorted(TAGS)
    assert shown == logged  # the last step of every tag (the slider starts at the end)
    assert "step 8" in seen["text"]  # the last epoch end: 2 epochs of 4 steps
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[1] == 1366
    assert pixels.std() > 20  # a drawn dashboard, not a blank or an error screen
