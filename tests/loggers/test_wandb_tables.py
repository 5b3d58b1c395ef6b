"""Tables reach W&B as ``wandb.Table`` (image cells as images); other sinks skip them.

Read back from a real offline run: the history row names the table file, and the table file
W&B wrote holds the columns, the numbers and one image file per image cell, with the pixels logged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
from PIL import Image
from pytorch_lightning.loggers import WandbLogger

from featurewatch.callbacks.base import FeatureWatchCallback
from featurewatch.loggers import Event, FilesSink
from tests._wandb import finish, offline_wandb, wandb_records
from tests.loggers.conftest import fit, pattern

KEY = "featurewatch/tab/layer/table"


class Tabular(FeatureWatchCallback):
    default_name = "tab"

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        rows = [[i, float(event.step + i) / 2, pattern(event.step + i)] for i in range(3)]
        event.add_table(KEY, ["pool index", "activation", "image"], rows)


def test_a_table_is_a_wandb_table_with_its_images(tmp_path: Path) -> None:
    with offline_wandb(tmp_path):
        logger = WandbLogger(save_dir=tmp_path, project="featurewatch-tests")
        fit(tmp_path, logger, [Tabular(at_start=True, every_n_epochs=1)])
        run_file = finish(logger)
    records = wandb_records(run_file)
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    rows = [r for r in history if f"{KEY}._type" in r]
    assert rows and all(r[f"{KEY}._type"] == "table-file" for r in rows), rows
    # with its images, the table travels as a run_table artifact; its manifest names the files
    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]
    assert artifacts and all(a["type"] == "run_table" for a in artifacts)
    files = {e["path"]: Path(e["local_path"]) for e in artifacts[-1]["manifest"]["contents"]}
    table = json.loads(files[f"{KEY}.table.json"].read_text())
    assert table["columns"] == ["pool index", "activation", "image"]
    assert [r[0] for r in table["data"]] == [0, 1, 2]
    steps = [r[1] * 2 for r in table["data"]]
    last = int(steps[0])
    assert steps == [last, last + 1, last + 2] and last == rows[-1]["trainer/global_step"]
    for i, (_, _, image) in enumerate(table["data"]):
        assert image["_type"] == "image-file"
        with Image.open(files[image["path"]]) as png:
            np.testing.assert_array_equal(np.asarray(png.convert("RGB")), pattern(last + i))


def test_other_sinks_skip_tables(tmp_path: Path) -> None:
    event = Event(step=3, epoch=0)
    event.add_table(KEY, ["a", "image"], [[1, pattern(1)]])
    assert event  # a table alone is something to write
    sink = FilesSink(tmp_path)
    sink.write(event)
    sink.close()
    assert not any(
        r.get("kind") == "table"
        for r in map(json.loads, (tmp_path / "events.jsonl").read_text().splitlines() or [])
    )


def test_a_row_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="a row of 1 cells for 2 columns"):
        Event(step=0, epoch=0).add_table(KEY, ["a", "b"], [[1]])
