"""WandbSink in a real offline W&B run next to Lightning's own logging, read back with W&B's reader.

W&B's offline start-up takes seconds, so the whole suite uses a single run (one module fixture).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import wandb
from PIL import Image
from pytorch_lightning.loggers import WandbLogger

from featurewatch.loggers import Event, WandbSink, sinks_for
from featurewatch.loggers.base import LoggedImage
from featurewatch.loggers.wandb import wandb_row
from tests._wandb import finish, offline_wandb, wandb_records
from tests.loggers.conftest import (
    HISTOGRAM_KEY,
    IMAGE_KEYS,
    SCALAR_KEY,
    TEXT_KEY,
    Probe,
    caption,
    fit,
    pattern,
)

# Probe(at_start=True, every_n_epochs=1) in a fit of 2 epochs of 2 steps runs at these global
# steps, in these epochs (an epoch-end hook still sees the epoch that is ending).
STEPS = [0, 2, 4]
EPOCHS = [0, 0, 1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One offline run: a 2-epoch fit logging Lightning's train_loss and the Probe's events."""
    root = tmp_path_factory.mktemp("wandb")
    with offline_wandb(root):
        logger = WandbLogger(save_dir=root, project="featurewatch-tests")
        trainer = fit(root, logger, [Probe(at_start=True, every_n_epochs=1)])
        assert [type(s) for s in sinks_for(trainer)] == [WandbSink]
        run_file = finish(logger)
    rows = [r["history"]["item"] for r in wandb_records(run_file) if r["type"] == "history"]
    return run_file.parent, rows


def test_one_row_per_event_with_every_item_and_the_trainer_step(run):
    run_dir, rows = run
    ours = [r for r in rows if f"{IMAGE_KEYS[0]}._type" in r]
    assert [r["trainer/global_step"] for r in ours] == STEPS
    for row in ours:
        assert row[SCALAR_KEY] == pytest.approx(row["trainer/global_step"] / 10)
        assert row["featurewatch/probe/seconds"] >= 0
        assert (
            row[f"{HISTOGRAM_KEY}._type"] == "histogram"
            and sum(row[f"{HISTOGRAM_KEY}.values"]) == 10
        )
        assert row[f"{TEXT_KEY}._type"] == "html-file"
        html = (run_dir / "files" / row[f"{TEXT_KEY}.path"]).read_text()
        assert "&lt;/script&gt;&lt;b&gt;not bold&lt;/b&gt;" in html  # escaped, shown as text
    # Lightning's own rows were not displaced: train_loss at every step, on the same step axis.
    assert sorted({r["trainer/global_step"] for r in rows if "train_loss" in r}) == [0, 1, 2, 3]


def test_images_are_exact_pngs_with_epoch_and_step_captions(run):
    run_dir, rows = run
    ours = [r for r in rows if f"{IMAGE_KEYS[0]}._type" in r]
    assert len(ours) == len(STEPS)
    for epoch, row in zip(EPOCHS, ours):
        step = row["trainer/global_step"]
        for key, expected in (
            (IMAGE_KEYS[0], pattern(step)),
            (IMAGE_KEYS[1], pattern(step + 1, 4, 7)),
        ):
            path = row[f"{key}.path"]
            # W&B names media <key>_<its own _step>_<hash>.png
            assert re.fullmatch(rf"media/images/{key}_{row['_step']}_[0-9a-f]+\.png", path)
            np.testing.assert_array_equal(
                np.asarray(Image.open(run_dir / "files" / path)), expected
            )
            assert row[f"{key}.caption"] == f"epoch {epoch} · step {step} · {caption(key, step)}"


def test_payload_guards_the_per_key_image_limit_and_key_clashes():
    event = Event(step=9, epoch=1)
    for i in range(110):
        event.images.append(LoggedImage("many", np.full((2, 2, 3), i, np.uint8)))
    event.add_scalar("clash", 1.0)
    event.add_text("clash", "text under the same key")
    event.add_histogram("empty", [float("nan")])
    event.add_scalar("trainer/global_step", 123.0)

    with pytest.warns(UserWarning, match="W&B shows at most 108 per key"):
        row = wandb_row(event)

    assert len(row["many"]) == 108 and all(isinstance(i, wandb.Image) for i in row["many"])
    assert row["clash"] == 1.0 and isinstance(row["clash/text"], wandb.Html)
    assert "empty" not in row
    assert row["trainer/global_step"] == 9 and row["trainer/global_step/scalar"] == 123.0


def test_rejects_what_is_not_a_run():
    with pytest.raises(TypeError, match="pass WandbLogger.experiment"):
        WandbSink(object())
