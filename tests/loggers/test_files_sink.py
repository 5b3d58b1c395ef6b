"""FilesSink on disk: PNG pixels, the JSON-lines log, resume, and the page's embedded data."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from featurewatch.loggers import Event, FilesSink, SinkWriteError
from featurewatch.loggers.base import LoggedImage
from tests.loggers.conftest import (
    HISTOGRAM_KEY,
    IMAGE_KEYS,
    SCALAR_KEY,
    TEXT_KEY,
    caption,
    pattern,
    sample_event,
)


def strict_json(line: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(line, parse_constant=refuse)


def read_jsonl(sink: FilesSink) -> list[dict]:
    return [
        strict_json(line) for line in sink.events_jsonl.read_text(encoding="utf-8").splitlines()
    ]


def page_records(sink: FilesSink) -> list[dict]:
    """The records embedded in index.html (what the page draws)."""
    html = sink.index_html.read_text(encoding="utf-8")
    match = re.search(
        r'<script type="application/json" id="fw-data">(.*?)</script>', html, re.DOTALL
    )
    assert match, "index.html has no embedded data"
    return strict_json(match.group(1))["records"]


def test_writes_pngs_with_exact_pixels_and_one_json_line_per_item(tmp_path):
    sink = FilesSink(tmp_path / "fw")
    assert not (tmp_path / "fw").exists()
    for epoch, step in enumerate((0, 7)):
        sink.write(sample_event(step, epoch))
    sink.close()

    png = tmp_path / "fw" / "images" / "featurewatch" / "probe" / "layer1" / "step_00000007.png"
    np.testing.assert_array_equal(np.asarray(Image.open(png)), pattern(7))

    records = read_jsonl(sink)
    assert [(r["kind"], r["key"], r["step"], r["epoch"]) for r in records[:5]] == [
        ("image", IMAGE_KEYS[0], 0, 0),
        ("image", IMAGE_KEYS[1], 0, 0),
        ("scalar", SCALAR_KEY, 0, 0),
        ("histogram", HISTOGRAM_KEY, 0, 0),
        ("text", TEXT_KEY, 0, 0),
    ]
    assert len(records) == 10
    image = records[6]
    assert image["path"] == "images/featurewatch/probe/layer2/step_00000007.png"
    assert (image["caption"], image["width"], image["height"]) == (caption(IMAGE_KEYS[1], 7), 7, 4)
    np.testing.assert_array_equal(
        np.asarray(Image.open(sink.root / image["path"])), pattern(8, 4, 7)
    )
    assert records[7]["value"] == pytest.approx(0.7)
    histogram = records[8]
    assert histogram["count"] == sum(histogram["counts"]) == 10 and histogram["nonfinite"] == 0
    assert len(histogram["edges"]) == len(histogram["counts"]) + 1 == 31
    assert (histogram["edges"][0], histogram["edges"][-1]) == (7.0, 16.0)
    assert records[9]["value"].startswith("note at step 7\n")
    assert all(isinstance(r["time"], float) for r in records)
    assert page_records(sink) == records


def test_non_finite_values_are_strict_json(tmp_path):
    sink = FilesSink(tmp_path)
    event = Event(step=1, epoch=0)
    event.add_scalar("nan", float("nan"))
    event.add_scalar("inf", float("-inf"))
    event.add_histogram("h", [1.0, float("nan"), 3.0])
    event.add_histogram("empty", [float("nan")])
    sink.write(event)

    nan, inf, h, empty = read_jsonl(sink)
    assert (nan["value"], nan["nonfinite"]) == (None, "nan")
    assert (inf["value"], inf["nonfinite"]) == (None, "-inf")
    assert (h["count"], h["nonfinite"]) == (2, 1)
    assert (empty["counts"], empty["edges"], empty["nonfinite"]) == ([], [], 1)


def test_a_resumed_run_appends_and_the_page_shows_old_and_new(tmp_path):
    FilesSink(tmp_path).write(sample_event(0))
    with open(tmp_path / "events.jsonl", "a", encoding="utf-8") as f:
        f.write('{"kind": "scalar", "key": "cut o')  # a run killed mid-line

    resumed = FilesSink(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        resumed.write(sample_event(3))

    assert [r["step"] for r in page_records(resumed)] == [0] * 5 + [3] * 5
    lines = resumed.events_jsonl.read_text(encoding="utf-8").splitlines()
    assert lines[5] == '{"kind": "scalar", "key": "cut o'  # the remnant stays on its own line
    assert [strict_json(line)["step"] for line in lines[:5] + lines[6:]] == [0] * 5 + [3] * 5


def test_sinks_sharing_a_folder_all_show_up_on_the_page(tmp_path):
    # Two featurewatch callbacks each build their own sink for the same logger folder.
    first, second = FilesSink(tmp_path), FilesSink(tmp_path)
    first.write(Event(step=0, epoch=0, scalars={"first": 1.0}))
    second.write(Event(step=0, epoch=0, scalars={"second": 2.0}))
    first.write(Event(step=1, epoch=0, scalars={"first": 3.0}))
    second.write(Event(step=1, epoch=0, images=[LoggedImage("first", pattern(0))]))
    second.close()
    first.close()  # closes last, though it has not seen second's last event: it catches up

    expected = [("first", 0), ("second", 0), ("first", 1), ("first", 1)]
    assert [(r["key"], r["step"]) for r in read_jsonl(first)] == expected
    assert [(r["key"], r["step"]) for r in page_records(first)] == expected
    assert first.events_jsonl.read_bytes().count(b"\n") == 4


def test_keys_never_overwrite_each_other_or_leave_the_root(tmp_path):
    sink = FilesSink(tmp_path / "fw")
    event = Event(step=2, epoch=0)
    event.add_image("a/b c", pattern(1))
    event.add_image("a/b_c", pattern(2))  # same safe folder name as "a/b c"
    event.add_image("a/b_c", pattern(3))  # same key twice in one event
    event.add_image("../../escape", pattern(4))
    sink.write(event)

    paths = [r["path"] for r in read_jsonl(sink)]
    assert len(set(paths)) == 4
    assert paths[0] == "images/a/b_c/step_00000002.png"
    assert re.fullmatch(r"images/a/b_c_[0-9a-f]{8}/step_00000002\.png", paths[1])
    assert paths[2] == paths[1].replace(".png", "_1.png")
    assert paths[3] == "images/_/_/escape/step_00000002.png"
    for path, seed in zip(paths, (1, 2, 3, 4)):
        np.testing.assert_array_equal(np.asarray(Image.open(sink.root / path)), pattern(seed))
    assert not (tmp_path / "escape").exists()


def test_page_is_self_contained_and_script_safe(tmp_path):
    sink = FilesSink(tmp_path, title="run <7>")
    sink.write(sample_event(0))
    html = sink.index_html.read_text(encoding="utf-8")
    assert "<title>run &lt;7&gt;</title>" in html
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)  # no external resources
    assert "fetch(" not in html and "<link" not in html
    assert html.count("</script>") == 2  # the note's "</script>" is escaped inside the data
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="root must be a path"):
        FilesSink(3)
    bad = Event(step=0, epoch=0, images=[LoggedImage("k", np.zeros((4, 4), np.uint8))])
    sink = FilesSink(tmp_path)
    with pytest.raises(SinkWriteError, match=r"image 'k': expected an \(H, W, 3\) uint8 array"):
        sink.write(bad)
    assert sink.healthy  # a refused value is no reason to stop writing


def test_page_is_rewritten_at_most_every_page_every_seconds_and_on_close(tmp_path):
    sink = FilesSink(tmp_path, page_every=3600)
    sink.write(Event(step=0, epoch=0, scalars={"loss": 1.0}))
    sink.write(Event(step=1, epoch=0, scalars={"loss": 0.5}))
    assert [r["step"] for r in page_records(sink)] == [0]  # the first event at once, then throttled
    assert [r["step"] for r in read_jsonl(sink)] == [0, 1]  # the log itself is never throttled
    sink.close()
    assert [r["step"] for r in page_records(sink)] == [0, 1]
    with pytest.raises(ValueError, match="page_every"):
        FilesSink(tmp_path, page_every=-1)
