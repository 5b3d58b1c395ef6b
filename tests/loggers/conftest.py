"""Shared pieces for the logger adapter tests: known events, a tiny fit, headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from featurewatch.callbacks.base import FeatureWatchCallback
from featurewatch.loggers import Event, registry

IMAGE_KEYS = ("featurewatch/probe/layer1", "featurewatch/probe/layer2")
SCALAR_KEY = "featurewatch/probe/value"
HISTOGRAM_KEY = "featurewatch/probe/acts"
TEXT_KEY = "featurewatch/probe/note"


def pattern(step: int, height: int = 6, width: int = 5) -> np.ndarray:
    """A ``(H, W, 3)`` ``uint8`` image unique to ``step`` (every byte value matters)."""
    values = np.arange(height * width * 3, dtype=np.int64).reshape(height, width, 3)
    return ((values * 7 + step * 13) % 256).astype(np.uint8)


def caption(key: str, step: int) -> str:
    return f"channels 0, 1 of {key.rsplit('/', 1)[1]} | at {step}"


def fill(event: Event) -> None:
    """Add one item of every kind to ``event``; contents are a function of ``event.step``."""
    s = event.step
    event.add_image(IMAGE_KEYS[0], pattern(s), caption=caption(IMAGE_KEYS[0], s))
    event.add_image(IMAGE_KEYS[1], pattern(s + 1, 4, 7), caption=caption(IMAGE_KEYS[1], s))
    event.add_scalar(SCALAR_KEY, s / 10)
    event.add_histogram(HISTOGRAM_KEY, np.arange(10.0) + s)
    event.add_text(TEXT_KEY, f"note at step {s}\n    indented line\n</script><b>not bold</b>")


def sample_event(step: int, epoch: int = 0) -> Event:
    event = Event(step=step, epoch=epoch)
    fill(event)
    return event


class Probe(FeatureWatchCallback):
    """The smallest real featurewatch callback: logs :func:`fill`'s items."""

    default_name = "probe"

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        fill(event)


class TinyModule(pl.LightningModule):
    """A linear classifier on random data that logs ``train_loss`` itself (Lightning's own rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 2)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def tiny_loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g))
    return DataLoader(data, batch_size=4)


def fit(root: Path, logger: Any, callbacks: list[pl.Callback], epochs: int = 2) -> pl.Trainer:
    """Two epochs of two steps each: a callback with ``at_start`` and ``every_n_epochs=1`` runs at
    global steps 0, 2 and 4."""
    trainer = pl.Trainer(
        default_root_dir=root,
        logger=logger,
        callbacks=callbacks,
        max_epochs=epochs,
        limit_train_batches=2,
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TinyModule(), tiny_loader())
    return trainer


@pytest.fixture
def clean_registry():
    """Restore the sink table after a test that registers adapters."""
    saved = dict(registry._FACTORIES)
    yield
    registry._FACTORIES.clear()
    registry._FACTORIES.update(saved)


# ---------------------------------------------------------------------------------------- Chromium
def chromium_path() -> str:
    """The headless browser for page tests: ``$FEATUREWATCH_CHROMIUM`` or ``chromium`` on PATH.

    Fails (never skips) when missing: the page is a feature and must be checked in a real browser.
    """
    path = os.environ.get("FEATUREWATCH_CHROMIUM") or shutil.which("chromium")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(
            "Chromium is needed to test FilesSink's index.html: install it "
            "(`apt-get install -y chromium`, as scripts/test.sh does) or point "
            "FEATUREWATCH_CHROMIUM at a chromium/chrome binary"
        )
    return path


def run_chromium(url: str, profile: Path, *args: str) -> str:
    """Load ``url`` in headless Chromium with ``args`` (e.g. ``--dump-dom``); return stdout.

    ``--virtual-time-budget`` lets the page's scripts and image loads finish before the dump or
    screenshot, without sleeping in real time.
    """
    command = [
        chromium_path(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--force-color-profile=srgb",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        *args,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"chromium exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


class DomElement:
    def __init__(self, tag: str, attrs: dict[str, str], parents: list[DomElement]) -> None:
        self.tag, self.attrs, self.parents, self.text = tag, attrs, parents, ""

    def within(self, **attrs: str) -> DomElement | None:
        """The nearest ancestor having all of ``attrs`` (``data_key`` means ``data-key``)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        for parent in reversed(self.parents):
            if all(parent.attrs.get(k) == v for k, v in wanted.items()):
                return parent
        return None


class Dom(HTMLParser):
    """A flat list of the elements of a dumped page, each knowing its ancestors and own text."""

    VOID = frozenset({"img", "input", "br", "meta", "link", "hr", "source", "wbr"})

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[DomElement] = []
        self._stack: list[DomElement] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = DomElement(tag, {k: v or "" for k, v in attrs}, list(self._stack))
        self.elements.append(element)
        if tag not in self.VOID:
            self._stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            if self._stack.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self._stack:
            element.text += data

    def find(self, tag: str, **attrs: str) -> list[DomElement]:
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [
            e
            for e in self.elements
            if e.tag == tag and all(e.attrs.get(k) == v for k, v in wanted.items())
        ]
