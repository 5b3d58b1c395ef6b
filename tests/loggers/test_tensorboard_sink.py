"""TensorBoardSink, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from featurewatch.loggers import Event, SinkWriteError, TensorBoardSink
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

STEPS = (0, 5, 10)


def read(log_dir: str) -> EventAccumulator:
    acc = EventAccumulator(
        log_dir, size_guidance={"images": 0, "scalars": 0, "histograms": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def text_of(acc: EventAccumulator, key: str) -> list[tuple[int, str]]:
    """Text entries of ``key`` (``SummaryWriter.add_text`` stores them as "
    "``<key>/text_summary``)."""
    return [
        (e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(f"{key}/text_summary")
    ]


@pytest.fixture
def logged(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    sink = TensorBoardSink(logger.experiment)
    for epoch, step in enumerate(STEPS):
        sink.write(sample_event(step, epoch))  # no close(): write() itself must flush
    return read(logger.log_dir)


def test_images_round_trip_exactly(logged):
    assert set(IMAGE_KEYS) <= set(logged.Tags()["images"])
    for key, shift, shape in ((IMAGE_KEYS[0], 0, (6, 5)), (IMAGE_KEYS[1], 1, (4, 7))):
        events = logged.Images(key)
        assert [e.step for e in events] == list(STEPS)
        for e in events:
            png = Image.open(io.BytesIO(e.encoded_image_string))
            assert (png.width, png.height) == (shape[1], shape[0]) == (e.width, e.height)
            np.testing.assert_array_equal(
                np.asarray(png.convert("RGB")), pattern(e.step + shift, *shape)
            )


def test_scalars_histograms_and_texts(logged):
    assert [(s.step, round(s.value, 6)) for s in logged.Scalars(SCALAR_KEY)] == [
        (s, s / 10) for s in STEPS
    ]

    histograms = logged.Histograms(HISTOGRAM_KEY)
    assert [h.step for h in histograms] == list(STEPS)
    assert [
        (h.histogram_value.num, h.histogram_value.min, h.histogram_value.max) for h in histograms
    ] == [(10, s, s + 9) for s in STEPS]

    notes = text_of(logged, TEXT_KEY)
    assert [step for step, _ in notes] == list(STEPS)
    # Preformatted (indented) so Markdown keeps the line breaks and the indentation.
    assert notes[0][1] == "    note at step 0\n        indented line\n    </script><b>not bold</b>"


def test_captions_are_one_table_per_callback_and_step(logged):
    # One text tag for the callback's captions, not one per image.
    # (and the Custom Scalars layout, tests/loggers/test_tensorboard_layout.py)
    assert sorted(logged.Tags()["tensors"]) == [
        "custom_scalars__config__",
        *(f"featurewatch/probe/{t}/text_summary" for t in ("captions", "note")),
    ]
    tables = text_of(logged, "featurewatch/probe/captions")
    assert [step for step, _ in tables] == list(STEPS)
    step, table = tables[1]
    assert table.startswith("epoch 1 · step 5\n")
    for key in IMAGE_KEYS:
        escaped = caption(key, step).replace("|", "\\|")
        assert f"| `{key.rsplit('/', 1)[1]}` | {escaped} |" in table


def test_non_finite_values_are_left_out_of_histograms(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    event = Event(step=3, epoch=0)
    event.add_histogram("with_nan", [1.0, float("nan"), 2.0, float("inf")])
    event.add_histogram("all_nan", [float("nan")])
    event.add_scalar("nan_scalar", float("nan"))
    TensorBoardSink(logger.experiment).write(event)

    acc = read(logger.log_dir)
    assert acc.Tags()["histograms"] == ["with_nan"]
    assert acc.Histograms("with_nan")[0].histogram_value.num == 2
    assert np.isnan(acc.Scalars("nan_scalar")[0].value)


def test_rejects_what_is_not_a_writer_or_not_uint8(tmp_path):
    with pytest.raises(TypeError, match="pass TensorBoardLogger.experiment"):
        TensorBoardSink(object())
    sink = TensorBoardSink(TensorBoardLogger(tmp_path).experiment)
    bad = Event(step=0, epoch=0, images=[LoggedImage("k", np.zeros((4, 4, 3), np.float32))])
    with pytest.raises(
        SinkWriteError, match=r"expected an \(H, W, 3\) uint8 array, got ndarray float32"
    ) as raised:
        sink.write(bad)
    assert isinstance(raised.value.failed[0].error, TypeError) and sink.healthy
