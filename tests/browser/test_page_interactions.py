"""FilesSink's index.html used as a person would: real clicks and typing in headless Chromium.

The page is opened from ``file://`` and driven over the DevTools protocol (``DevTools``, from the
TensorBoard dashboard test): mouse events at an element's centre, text typed into the filter box,
Escape pressed; what is checked is read back from the live page (layout boxes, computed styles,
decoded image sizes), not from the script's own state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pytorch_lightning.loggers import CSVLogger

from featurewatch.loggers import Event, FilesSink
from tests.browser.test_tensorboard_dashboard import DevTools
from tests.loggers.conftest import Probe, fit

SMALL = "featurewatch/channels/features.2"  # 6 x 5 px: upscaled on the page and in the zoom view
WIDE = "featurewatch/examples/features.2"  # 1600 x 120 px: shown smaller, zoomed at 1:1
TALL = "featurewatch/attribution/cam"  # 40 x 400 px: a tall heatmap
#: Every key of the run below (images, then scalars) and where the page puts it.
IMAGES = {
    SMALL: (5, 6),
    "featurewatch/channels/features.13": (5, 6),
    WIDE: (1600, 120),
    TALL: (40, 400),
}
SCALARS = [
    "featurewatch/channels/features.2/steps",
    "featurewatch/channels/seconds",
    "featurewatch/channel_visualization/seconds",  # an older run's key
    "featurewatch/dead/features.10/dead",
    "featurewatch/dead/features.9/dead",
    "custom/loss",  # not featurewatch's scheme
]
STEPS = (0, 5, 10)


def image(step: int, width: int, height: int) -> np.ndarray:
    """A ``(H, W, 3)`` image unique to ``step``, every pixel different from its neighbours."""
    y, x = np.mgrid[0:height, 0:width]
    values = np.stack([x * 37 + step * 11, y * 53 + step * 7, (x + y) * 29], axis=-1)
    return (values % 256).astype(np.uint8)


def write_run(folder: Path, metrics_csv: str | None) -> Path:
    sink = FilesSink(folder / "featurewatch")
    for epoch, step in enumerate(STEPS):
        event = Event(step=step, epoch=epoch)
        for key, (width, height) in IMAGES.items():
            event.add_image(key, image(step, width, height), caption=f"{key} at {step}")
        for n, key in enumerate(SCALARS):
            event.add_scalar(key, step + n / 10)
        sink.write(event)
    sink.close()
    if metrics_csv is not None:
        (folder / "metrics.csv").write_text(metrics_csv)
        sink._catch_up()  # re-draw the page now that the run has a metrics.csv
        sink._flush_page()
    return sink.index_html


METRICS_CSV = "epoch,step,train/loss,val/acc\n0,1,2.0,\n0,4,1.5,0.5\n1,7,1.2,\n1,9,1.0,0.75\n"


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "plain": write_run(root / "plain", None),
        "metrics": write_run(root / "with_metrics", METRICS_CSV),
    }


@pytest.fixture
def browser(tmp_path) -> Iterator[Browser]:
    driver = Browser(tmp_path / "profile")
    try:
        yield driver
    finally:
        driver.close()


class Browser(DevTools):
    """DevTools plus what a person does on a page."""

    def open(self, page: Path, suffix: str = "") -> None:
        self.page("Page.navigate", url=page.as_uri() + suffix)
        self.wait_for("document.body && document.body.dataset.ready", "1")

    def wait_for(self, script: str, value: Any, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while (seen := self.evaluate(script)) != value:
            if time.monotonic() > deadline:
                pytest.fail(f"{script} is {seen!r}, not {value!r}, after {timeout} s")
            time.sleep(0.1)

    def read(self, script: str) -> Any:
        """The JSON value of ``script`` (an expression) evaluated in the page."""
        return json.loads(self.evaluate(f"JSON.stringify({script})"))

    def click(self, selector: str) -> None:
        x, y = self.read(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type(self, text: str) -> None:
        self.page("Input.insertText", text=text)

    def press(self, key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            self.page(
                "Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code
            )


CARDS = """[...document.querySelectorAll('.card')].map((c) => ({
  key: c.dataset.key, kind: c.dataset.kind, shown: c.offsetParent !== null,
  section: c.closest('section').dataset.section, layer: c.closest('.layer').dataset.layer}))"""
IMAGE_BOXES = """[...document.querySelectorAll('.card[data-kind=image] img')].map((i) => ({
  key: i.closest('.card').dataset.key, w: i.getBoundingClientRect().width,
  h: i.getBoundingClientRect().height, nw: i.naturalWidth, nh: i.naturalHeight,
  rendering: getComputedStyle(i).imageRendering}))"""
ZOOM = """[...document.querySelectorAll('#zoom img')].map((i) => ({
  src: i.getAttribute('src'), w: i.getBoundingClientRect().width,
  h: i.getBoundingClientRect().height, nw: i.naturalWidth, nh: i.naturalHeight,
  rendering: getComputedStyle(i).imageRendering,
  step: i.closest('.zpane').dataset.step, shown: i.offsetParent !== null}))"""


def test_sections_per_callback_and_layer_in_natural_order(pages, browser):
    browser.open(pages["plain"])
    cards = browser.read(CARDS)

    assert [c["key"] for c in cards] == [
        TALL,
        "featurewatch/channel_visualization/seconds",
        SMALL,
        "featurewatch/channels/features.2/steps",
        "featurewatch/channels/features.13",  # 2 before 13
        "featurewatch/channels/seconds",  # the callback's timing after its layers
        "custom/loss",
        "featurewatch/dead/features.9/dead",
        "featurewatch/dead/features.10/dead",
        WIDE,
    ]
    where = {c["key"]: (c["section"], c["layer"]) for c in cards}
    assert (
        where[SMALL]
        == where["featurewatch/channels/features.2/steps"]
        == ("channels", "features.2")
    )
    assert where["featurewatch/channels/seconds"] == ("channels", "")
    assert where["featurewatch/dead/features.10/dead"] == ("dead", "features.10")
    assert where["custom/loss"] == ("custom", "loss")
    assert all(c["shown"] for c in cards)
    toc = browser.read("[...document.querySelectorAll('#toc button')].map((b) => b.textContent)")
    assert toc == [
        "attribution (1)", "channel_visualization (1)", "channels (4)", "custom (1)", "dead (2)",
        "examples (1)",
    ]  # fmt: skip
    # no metrics.csv next to the sink's folder: no metrics section
    assert not browser.read(
        "document.querySelectorAll('[data-kind=metric], [data-section=\"metrics.csv\"]').length"
    )


def test_images_keep_their_aspect_ratio_and_small_ones_are_upscaled_crisply(pages, browser):
    browser.open(pages["plain"])
    boxes = {b["key"]: b for b in browser.read(IMAGE_BOXES)}

    assert sorted(boxes) == sorted(IMAGES)
    for key, (width, height) in IMAGES.items():
        box = boxes[key]
        assert (box["nw"], box["nh"]) == (width, height)
        assert box["w"] / box["h"] == pytest.approx(width / height, rel=0.02), key
    small, tall, wide = boxes[SMALL], boxes[TALL], boxes[WIDE]
    assert small["w"] >= 8 * 5 and small["w"] % 5 == 0  # a whole factor
    assert small["rendering"] == "pixelated"
    assert tall["h"] >= 400  # not squeezed into a short frame
    assert wide["w"] >= 900 and wide["rendering"] != "pixelated"  # scaled down: smooth


def test_filter_box_hides_the_cards_whose_key_does_not_match(pages, browser):
    browser.open(pages["plain"])
    browser.click("#filter")
    browser.type("features.2")

    cards = browser.read(CARDS)
    shown = sorted(c["key"] for c in cards if c["shown"])
    assert shown == sorted([SMALL, "featurewatch/channels/features.2/steps", WIDE])
    sections = browser.read(
        "[...document.querySelectorAll('section.callback')].filter((s) => s.offsetParent)"
        ".map((s) => s.dataset.section)"
    )
    assert sections == ["channels", "examples"]  # a section without a match is hidden too
    assert browser.evaluate("document.getElementById('shown').textContent") == "3 of 10 cards"

    browser.type(" STEPS")  # every word must match, in any case
    assert [c["key"] for c in browser.read(CARDS) if c["shown"]] == [
        "featurewatch/channels/features.2/steps"
    ]
    browser.press("Escape", 27)  # clears the box: everything is back
    assert all(c["shown"] for c in browser.read(CARDS))


def test_zoom_shows_the_image_at_native_size_or_larger_without_smoothing(pages, browser):
    browser.open(pages["plain"])
    browser.click(f'.card[data-key="{SMALL}"] img')
    browser.wait_for("document.body.dataset.ready", "1")

    (small,) = browser.read(ZOOM)
    assert small["shown"] and small["src"].endswith("/step_00000010.png")
    assert (small["nw"], small["nh"]) == (5, 6)
    scale = small["w"] / small["nw"]
    assert scale >= 8 and scale == int(scale) and small["h"] == 6 * scale  # whole factor, on screen
    assert small["rendering"] == "pixelated"
    browser.press("Escape", 27)
    assert browser.read(ZOOM) == [] and browser.evaluate("document.getElementById('zoom').hidden")

    browser.click(f'.card[data-key="{WIDE}"] .zoom-button')  # larger than the window: 1:1, scrolls
    browser.wait_for("document.body.dataset.ready", "1")
    (wide,) = browser.read(ZOOM)
    assert (wide["w"], wide["h"]) == (1600, 120) == (wide["nw"], wide["nh"])
    assert "zoom=" in browser.evaluate("location.hash")  # a link to this view


def test_two_steps_side_by_side(pages, browser):
    browser.open(pages["plain"])
    browser.click(f'.card[data-key="{TALL}"] .compare-button')
    browser.wait_for("document.body.dataset.ready", "1")

    panes = browser.read(ZOOM)
    assert [p["step"] for p in panes] == ["5", "10"]  # the card's step and the one before
    assert [p["src"].rsplit("/", 1)[1] for p in panes] == ["step_00000005.png", "step_00000010.png"]
    left, right = panes
    assert all(p["shown"] and (p["nw"], p["nh"]) == (40, 400) for p in panes)
    assert left["w"] == right["w"] >= 40 and left["rendering"] == "pixelated"
    assert browser.read(
        "(() => { const [a, b] = document.querySelectorAll('#zoom img');"
        " return b.getBoundingClientRect().left >= a.getBoundingClientRect().right; })()"
    )  # side by side, not stacked

    # pick another step for the left pane in its list
    browser.evaluate(
        "(() => { const s = document.querySelector('#zoom select'); s.value = '0';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    browser.wait_for("document.body.dataset.ready", "1")
    assert [p["step"] for p in browser.read(ZOOM)] == ["0", "10"]
    assert browser.read(ZOOM)[0]["nw"] == 40
    hash_ = browser.evaluate("decodeURIComponent(location.hash)")
    assert "at=0" in hash_ and "vs=10" in hash_


def test_metrics_csv_curves_are_drawn_when_the_run_has_one(pages, browser):
    browser.open(pages["metrics"])
    metric = browser.read(
        """[...document.querySelectorAll('.card[data-kind=metric]')].map((c) => ({
          key: c.dataset.key,
          points: c.querySelector('polyline').getAttribute('points').split(' ').length,
          value: c.querySelector('.value').textContent,
          section: c.closest('section').dataset.section,
          top: c.getBoundingClientRect().top}))"""
    )

    assert [m["key"] for m in metric] == ["train/loss", "val/acc"]
    assert [m["points"] for m in metric] == [4, 2]  # empty cells left out
    assert {m["section"] for m in metric} == {"metrics.csv"}
    # at the latest featurewatch step (10) each shows its last value
    assert [m["value"] for m in metric] == ["1", "0.75"]
    first_callback = browser.read(
        "document.querySelector('section.callback[data-section=attribution]').getBoundingClientRect().top"
    )
    assert all(m["top"] < first_callback for m in metric)  # the run's own curves come first


def test_a_real_csv_logger_run_shows_its_metrics_beside_the_images(tmp_path, browser):
    logger = CSVLogger(tmp_path, name="csv")
    fit(tmp_path, logger, [Probe(at_start=True, every_n_epochs=1)])
    page = Path(logger.log_dir) / "featurewatch" / "index.html"
    assert (Path(logger.log_dir) / "metrics.csv").is_file()

    browser.open(page)
    cards = browser.read(CARDS)
    keys = [c["key"] for c in cards if c["kind"] == "metric"]
    assert "train_loss" in keys  # TinyModule's own self.log
    assert any(c["kind"] == "image" and c["section"] == "probe" for c in cards)
    points = browser.read(
        "document.querySelector('.card[data-key=train_loss] polyline').getAttribute('points')"
        ".split(' ').length"
    )
    assert points == 4  # 2 epochs of 2 steps, one row per step
