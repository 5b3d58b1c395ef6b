"""``featurewatch report``: the page from a files-sink run and from a TensorBoard run of the same
fit, checked in its HTML and in real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurewatch.cli.readers import find_run, read_run
from tests.cli.conftest import STEPS, featurewatch_cli
from tests.loggers.conftest import Dom, run_chromium

#: where the screenshot of the TensorBoard run's page is kept for a human to look at
SCREENSHOT = Path(__file__).resolve().parents[2] / ".pytest_cache" / "featurewatch_report.png"


@pytest.fixture(scope="module")
def pages(fit_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("pages")
    made = {}
    for name, run in (("files", fit_run.csv_dir), ("tensorboard", fit_run.tensorboard_dir)):
        page = out / f"{name}.html"
        done = featurewatch_cli("report", str(run), "-o", str(page))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"wrote {page} (") and done.stderr == ""  # no bar in a pipe
        made[name] = page
    return made


def payload(page: Path) -> dict:
    text = page.read_text()
    (blob,) = re.findall(
        r'<script type="application/json" id="fw-data">(.*?)</script>', text, re.DOTALL
    )
    return json.loads(blob)


def frames_by_key(page: Path) -> dict[str, list[list]]:
    data = payload(page)
    dom = Dom(page.read_text())
    cards = {
        a.attrs["data-key"]: int(a.attrs["data-card"])
        for a in dom.find("article", data_kind="image")
    }
    return {key: data["cards"][i]["frames"] for key, i in cards.items()}


def decode(uri: str) -> np.ndarray:
    head, _, b64 = uri.partition(",")
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


@pytest.mark.parametrize("source", ["files", "tensorboard"])
def test_the_page_holds_every_image_key_and_step(pages, fit_run, source):
    page = pages[source]
    logged = read_run(find_run(fit_run.csv_dir))  # the files sink: what was logged
    frames = frames_by_key(page)
    assert set(frames) == set(logged.images) and len(frames) == 7
    uris = payload(page)["uris"]
    for key, rows in frames.items():
        assert [r[1] for r in rows] == [f.step for f in logged.images[key]], key
        assert [r[2] for r in rows] == [f.epoch for f in logged.images[key]], key
        assert [r[3] for r in rows] == [f.caption for f in logged.images[key]], key
        for row, frame in zip(rows, logged.images[key]):
            expected = np.asarray(Image.open(io.BytesIO(frame.png())).convert("RGB"))
            np.testing.assert_array_equal(decode(uris[row[0]]), expected)
    assert payload(page)["steps"] == STEPS
    html = page.read_text()
    dom = Dom(html)
    groups = [s.attrs["data-group"] for s in dom.find("section") if "data-group" in s.attrs]
    assert groups == ["filters", "activations", "drift", "dead", "complaining"]
    layers = [s.attrs["data-layer"] for s in dom.find("section") if "data-layer" in s.attrs]
    # natural order within a section; filters' image and weights histogram share their layer
    assert layers == [
        "net.features.0",
        "net.features.0",
        "net.features.4",
        "net.features.2",
        "net.features.6",
    ]
    (overlay,) = [
        c for c in dom.find("article", data_kind="overlay") if c.attrs["data-item"] == "cka_first"
    ]
    assert overlay.within(data_group="drift") is not None
    assert len(dom.find("article", data_kind="scalar")) == len(logged.scalars)
    assert len(dom.find("article", data_kind="histogram")) == 3
    (errors,) = dom.find("details", data_kind="text")
    assert "open" not in errors.attrs  # collapsed
    assert errors.attrs["data-key"] == "featurewatch/complaining/error"
    assert "no picture at step 12" in errors.text
    assert '<small class="bad">4 errors</small>' in html  # flagged in the table of contents
    # self-contained: nothing to fetch
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<link" not in html and "<script src" not in html and "url(" not in html
    assert 'data-frames="1"' in html  # the probe: one frame, no slider


def test_files_and_tensorboard_pages_show_the_same_pixels(pages):
    a, b = frames_by_key(pages["files"]), frames_by_key(pages["tensorboard"])
    ua, ub = payload(pages["files"])["uris"], payload(pages["tensorboard"])["uris"]
    assert a.keys() == b.keys()
    for key in a:
        assert [r[1:] for r in a[key]] == [r[1:] for r in b[key]], key
        for ra, rb in zip(a[key], b[key]):
            np.testing.assert_array_equal(decode(ua[ra[0]]), decode(ub[rb[0]]))


def load(page: Path, profile: Path, suffix: str = "") -> Dom:
    return Dom(
        run_chromium(page.as_uri() + suffix, profile, "--dump-dom", "--window-size=1366,900")
    )


def test_in_chromium_every_image_decodes_and_the_slider_changes_the_image(pages, tmp_path):
    page = pages["tensorboard"]
    frames = frames_by_key(page)
    uris = payload(page)["uris"]
    dom = load(page, tmp_path / "profile")
    (body,) = dom.find("body")
    assert body.attrs["data-ready"] == "1" and body.attrs["data-broken-images"] == "0"
    assert body.attrs["data-step"] == "12"
    images = dom.find("img")
    # one shown image per key, plus the filmstrips (every frame here: fewer than 12)
    assert len(images) == len(frames) + sum(len(f) for f in frames.values() if len(f) > 1)
    for img in images:
        assert (
            int(img.attrs["data-natural-width"]) > 0 and int(img.attrs["data-natural-height"]) > 0
        )
        assert img.attrs["src"].startswith("data:image/png;base64,")
    shown = {}
    for img in dom.find("img", **{"class": "shown"}) + dom.find("img", **{"class": "shown px"}):
        card = img.within(data_kind="image")
        shown[card.attrs["data-key"]] = (img, card)
    assert shown.keys() == frames.keys()
    for key, (img, card) in shown.items():
        last = frames[key][-1]
        assert img.attrs["src"] == uris[last[0]]
        assert f"step {last[1]} · epoch {last[2]}" in card.text
    # small images are scaled up without smoothing; the wide drift chart is not scaled up
    assert "px" in shown["featurewatch/filters/net.features.0"][0].attrs["class"].split()
    assert "px" not in shown["featurewatch/drift/cka_previous"][0].attrs["class"].split()
    sections = {s.attrs["data-group"] for s in dom.find("section") if "data-group" in s.attrs}
    assert sections == {"filters", "activations", "drift", "dead", "complaining"}

    # #step=0 moves the bar, which moves every key's slider: each card shows its step-0 frame
    dom = load(page, tmp_path / "profile", "#step=0")
    (body,) = dom.find("body")
    assert body.attrs["data-ready"] == "1" and body.attrs["data-step"] == "0"
    moved = 0
    for img in dom.find("img"):
        card = img.within(data_kind="image")
        if "shown" not in img.attrs.get("class", ""):
            continue
        rows = frames[card.attrs["data-key"]]
        sliders = [e for e in dom.find("input") if e.within(data_card=card.attrs["data-card"])]
        if rows[0][1] == 0:
            assert img.attrs["src"] == uris[rows[0][0]] and card.attrs["data-shown"] == "0"
            assert "later" not in card.attrs["class"]
            if len(rows) > 1:
                assert decode(uris[rows[0][0]]).tobytes() != decode(uris[rows[-1][0]]).tobytes()
                assert len(sliders) == 1
                moved += 1
        else:  # first logged after step 0 (the drift chart, dead-filter heatmaps): greyed out
            assert "later" in card.attrs["class"]
    assert moved == 3  # the filters and both activation grids (the probe has one frame)


def test_screenshot_at_laptop_width(pages, tmp_path):
    shot = tmp_path / "report.png"
    run_chromium(
        pages["tensorboard"].as_uri(),
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1366,2200",
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2200, 1366)
    assert pixels.std() > 20  # a drawn page, not a blank or an error screen
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copy(shot, SCREENSHOT)


def test_max_frames_keeps_the_first_and_last_and_says_so(fit_run):
    from featurewatch.cli.report import build_page

    data = read_run(find_run(fit_run.csv_dir))
    page = build_page(data, title="t", max_frames=2)
    blob = re.findall(
        r'<script type="application/json" id="fw-data">(.*?)</script>', page, re.DOTALL
    )
    cards = json.loads(blob[0])["cards"]
    by_key = {c["key"]: [r[1] for r in c["frames"]] for c in cards}
    assert by_key["featurewatch/activations/net.features.0"] == [0, 12]
    assert by_key["featurewatch/drift/cka_previous"] == [4, 12]
    assert by_key["featurewatch/activations/probe"] == [0]
    assert "(2 of 4 steps shown)" in page


def test_text_from_the_run_cannot_inject_markup(tmp_path):
    from featurewatch.cli.report import build_page

    folder = tmp_path / "featurewatch"
    folder.mkdir()
    evil = '</script><script>document.body.dataset.pwned = 1</script><b class="x">'
    rows = [
        {"kind": "text", "key": "featurewatch/x/error", "step": 0, "epoch": 0, "value": evil},
        {"kind": "scalar", "key": f"featurewatch/x/{evil}", "step": 0, "epoch": 0, "value": 1.0},
    ]
    (folder / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = build_page(read_run(find_run(tmp_path)), title=evil)
    assert evil not in page and "<b class" not in page
    assert page.count("<script") == 2  # the data block and the page's own script
