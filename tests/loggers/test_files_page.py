"""FilesSink's index.html, rendered by real headless Chromium from file://."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featurewatch.loggers import Event, FilesSink
from tests.loggers.conftest import (
    HISTOGRAM_KEY,
    IMAGE_KEYS,
    SCALAR_KEY,
    TEXT_KEY,
    Dom,
    caption,
    run_chromium,
    sample_event,
)

LATE_KEY = "featurewatch/late/first_at_10"
SOLID = (255, 0, 128)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A page with steps 0, 5, 10; one image key appears only at step 10."""
    sink = FilesSink(tmp_path_factory.mktemp("run") / "featurewatch")
    for epoch, step in enumerate((0, 5, 10)):
        event = sample_event(step, epoch)
        if step == 10:
            event.add_image(LATE_KEY, np.full((16, 16, 3), SOLID, np.uint8), caption="solid")
        sink.write(event)
    sink.close()  # as at the end of fit: the page is throttled while events arrive
    return sink.index_html


def load(page, tmp_path, suffix: str = "") -> Dom:
    return Dom(run_chromium(page.as_uri() + suffix, tmp_path / "profile", "--dump-dom"))


def image_cards(dom: Dom) -> dict[str, tuple]:
    """key -> (img element, card element) for every image card."""
    return {
        img.within(data_kind="image").attrs["data-key"]: (img, img.within(data_kind="image"))
        for img in dom.find("img")
    }


def test_every_key_is_drawn_and_every_image_loads(page, tmp_path):
    dom = load(page, tmp_path)

    (body,) = dom.find("body")
    assert body.attrs["data-ready"] == "1" and body.attrs["data-step"] == "10"
    cards = image_cards(dom)
    assert sorted(cards) == sorted([*IMAGE_KEYS, LATE_KEY])
    sizes = {IMAGE_KEYS[0]: ("5", "6"), IMAGE_KEYS[1]: ("7", "4"), LATE_KEY: ("16", "16")}
    for key, (img, card) in cards.items():
        assert (img.attrs["data-natural-width"], img.attrs["data-natural-height"]) == sizes[key]
        assert img.attrs["src"].endswith("/step_00000010.png")
        assert card.attrs["data-step"] == "10" and "later" not in card.attrs["class"]
        assert "step 10 · epoch 2" in card.text
    assert caption(IMAGE_KEYS[0], 10) in cards[IMAGE_KEYS[0]][1].text

    for kind, key in (("scalar", SCALAR_KEY), ("histogram", HISTOGRAM_KEY), ("text", TEXT_KEY)):
        assert [c.attrs["data-key"] for c in dom.find("div", data_kind=kind)] == [key]
    (chart,) = dom.find("polyline")
    assert len(chart.attrs["points"].split()) == 3  # one point per step
    assert len(dom.find("rect", **{"class": "bin"})) == 30
    (note,) = dom.find("pre")
    assert (
        note.text == "note at step 10\n    indented line\n</script><b>not bold</b>"
    )  # shown, not parsed
    assert not dom.find("b")


@pytest.mark.parametrize("suffix", ["#step=5", "?step=7"])
def test_step_parameter_selects_the_latest_step_at_or_before_it(page, tmp_path, suffix):
    dom = load(page, tmp_path, suffix)

    (body,) = dom.find("body")
    assert body.attrs["data-ready"] == "1" and body.attrs["data-step"] == "5"
    cards = image_cards(dom)
    for key in IMAGE_KEYS:
        img, card = cards[key]
        assert (
            img.attrs["src"].endswith("/step_00000005.png")
            and int(img.attrs["data-natural-width"]) > 0
        )
        assert "step 5 · epoch 1" in card.text and caption(key, 5) in card.text
    _, late_card = cards[LATE_KEY]  # not logged yet at step 5: its first image, greyed out
    assert "later" in late_card.attrs["class"] and "first logged at step 10" in late_card.text
    assert (dom.find("pre")[0].text).startswith("note at step 5\n")


def test_screenshot_shows_the_images(page, tmp_path):
    shot = tmp_path / "page.png"
    run_chromium(
        page.as_uri(), tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,900"
    )

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (900, 1200)
    # The 16x16 solid image is scaled up into its card without smoothing: many exact pixels.
    assert (pixels == SOLID).all(axis=2).sum() > 50 * 50
    assert pixels.std() > 20  # a real page, not a blank or error screen


def test_keys_of_any_shape_are_drawn(tmp_path):
    """Keys outside the ``featurewatch/<name>/<layer>`` scheme (older runs, other writers) each get
    a card; the page does not break on them."""
    keys = ["featurewatch", "featurewatch/x", "a//b", "/lead", "plain", "featurewatch/n/l/m/deep"]
    sink = FilesSink(tmp_path / "run" / "featurewatch")
    event = Event(step=3, epoch=1)
    for n, key in enumerate(keys):
        event.add_scalar(key, float(n))
    event.add_image("featurewatch/odd/ünïcode layer", np.zeros((3, 2, 3), np.uint8))
    sink.write(event)
    sink.close()

    dom = load(sink.index_html, tmp_path)
    (body,) = dom.find("body")
    assert body.attrs["data-ready"] == "1"  # the script ran to the end
    drawn = [c.attrs["data-key"] for c in dom.find("div", **{"class": "card"})]
    assert sorted(drawn) == sorted([*keys, "featurewatch/odd/ünïcode layer"])
