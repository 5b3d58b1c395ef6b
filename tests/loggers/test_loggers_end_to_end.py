"""A real fit with a featurewatch callback and two loggers: every logger gets every event."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from featurewatch.loggers import sinks_for
from tests.loggers.conftest import IMAGE_KEYS, Probe, fit, pattern

STEPS = [0, 2, 4]  # at_start, then the end of each of the 2 epochs of 2 steps


def test_fit_logs_every_event_to_tensorboard_and_next_to_the_csv_logs(tmp_path):
    tb, csv = TensorBoardLogger(tmp_path / "tb"), CSVLogger(tmp_path / "csv")
    probe = Probe(at_start=True, every_n_epochs=1)

    trainer = fit(tmp_path, [tb, csv], [probe])

    assert probe.calls == 3 and probe.failures == 0
    acc = EventAccumulator(tb.log_dir, size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    for event in acc.Images(IMAGE_KEYS[0]):
        np.testing.assert_array_equal(
            np.asarray(Image.open(io.BytesIO(event.encoded_image_string))), pattern(event.step)
        )
    assert [e.step for e in acc.Images(IMAGE_KEYS[0])] == STEPS
    assert [e.step for e in acc.Scalars("featurewatch/probe/seconds")] == STEPS
    assert len(acc.Scalars("train_loss")) == 4  # Lightning's own logging is untouched

    files = Path(csv.log_dir) / "featurewatch"
    records = [json.loads(line) for line in (files / "events.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in records}) == STEPS
    for step in STEPS:
        png = files / "images" / "featurewatch" / "probe" / "layer1" / f"step_{step:08d}.png"
        np.testing.assert_array_equal(np.asarray(Image.open(png)), pattern(step))
    assert (files / "index.html").is_file()
    assert not (tmp_path / "featurewatch").exists()  # the CSV logger's folder, not default_root_dir
    assert not (Path(tb.log_dir) / "featurewatch").exists()
    assert len(sinks_for(trainer)) == 2
