"""W&B rows carry the epoch and the trainer's step; captions say them once, in one order.

Read back from a real offline run (``WANDB_MODE=offline``) with W&B's own ``.wandb`` reader.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

from featurewatch.callbacks.base import FeatureWatchCallback
from featurewatch.loggers import Event, WandbSink, sinks_for
from featurewatch.loggers._shared import context_caption, strip_context
from featurewatch.loggers.wandb import wandb_row
from tests._wandb import finish, offline_wandb, wandb_records
from tests.loggers.conftest import fit, pattern
from tests.loggers.test_wandb_sink import EPOCHS, STEPS

KEYS = ("featurewatch/ctx/a", "featurewatch/ctx/b", "featurewatch/ctx/c")


class Contextual(FeatureWatchCallback):
    """Captions as callbacks write them: context first, in either order, or none."""

    default_name = "ctx"

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        s, e = event.step, event.epoch
        event.add_image(KEYS[0], pattern(s), caption=f"step {s}, epoch {e}: on-rate")
        event.add_image(KEYS[1], pattern(s), caption=f"epoch {e}, step {s}: on-rate")
        event.add_image(KEYS[2], pattern(s), caption="channels 0, 1")
        event.add_scalar("featurewatch/ctx/layer/value", float(s))


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """The records of one offline run: a 2-epoch fit with Lightning's rows and Contextual's."""
    root = tmp_path_factory.mktemp("wandb_rows")
    with offline_wandb(root):
        logger = WandbLogger(save_dir=root, project="featurewatch-tests")
        trainer = fit(root, logger, [Contextual(at_start=True, every_n_epochs=1)])
        assert [type(s) for s in sinks_for(trainer)] == [WandbSink]
        run_file = finish(logger)
    return wandb_records(run_file)


def history(records: list[dict]) -> list[dict]:
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def test_every_featurewatch_row_carries_epoch_and_trainer_global_step(records):
    rows = history(records)
    ours = [r for r in rows if any(k.startswith("featurewatch/") for k in r)]
    assert len(ours) == len(STEPS)  # one row per call, and every featurewatch key is in it
    assert [(r["trainer/global_step"], r["epoch"]) for r in ours] == list(zip(STEPS, EPOCHS))
    for row in ours:
        assert row["featurewatch/ctx/layer/value"] == row["trainer/global_step"]
    # Lightning's own rows carry the same two fields, so both line up on either axis.
    lightning = [r for r in rows if "train_loss" in r]
    assert lightning and all({"epoch", "trainer/global_step"} <= r.keys() for r in lightning)


def test_captions_say_epoch_and_step_once_in_one_order(records):
    ours = [r for r in history(records) if f"{KEYS[0]}._type" in r]
    assert len(ours) == len(STEPS)
    for row, step, epoch in zip(ours, STEPS, EPOCHS):
        head = f"epoch {epoch} · step {step} · "
        assert [row[f"{key}.caption"] for key in KEYS] == [
            head + "on-rate",
            head + "on-rate",
            head + "channels 0, 1",
        ]
        for key in KEYS:
            assert row[f"{key}.caption"].count("epoch") == row[f"{key}.caption"].count("step") == 1


def test_featurewatch_keys_are_defined_on_the_trainer_step(records):
    metrics = [r["metric"] for r in records if r["type"] == "metric"]
    ours = [m for m in metrics if m.get("glob_name") == "featurewatch/*"]
    assert ours and all(m["step_metric"] == "trainer/global_step" for m in ours)
    assert any(m.get("name") == "trainer/global_step" for m in metrics)


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("step 24, epoch 0: on-rate", "on-rate"),
        ("epoch 0, step 24: on-rate", "on-rate"),
        ("epoch 0 · step 24 · on-rate", "on-rate"),
        ("Step 24 - on-rate", "on-rate"),
        ("step 24", ""),
        ("epoch 0", ""),
        ("step 10: first seen", "step 10: first seen"),  # another step: part of the message
        ("epoch 1, step 24: later", "epoch 1, step 24: later"),
        ("step 240: more", "step 240: more"),
        ("step 24 of 30", "step 24 of 30"),
        ("channels 0, 1", "channels 0, 1"),
        ("", ""),
    ],
)
def test_context_is_said_once(caption, expected):
    assert strip_context(caption, 24, 0) == expected
    head = "epoch 0 · step 24"
    assert context_caption(caption, 24, 0) == (f"{head} · {expected}" if expected else head)


def test_an_item_named_epoch_is_moved_aside():
    event = Event(step=9, epoch=1)
    event.add_scalar("epoch", 5.0)
    row = wandb_row(event)
    assert row["epoch"] == 1 and row["epoch/scalar"] == 5.0 and row["trainer/global_step"] == 9
