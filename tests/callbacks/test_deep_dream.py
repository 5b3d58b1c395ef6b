"""DeepDream callback in a real Trainer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from featurewatch.callbacks.deep_dream import DeepDream
from tests._models import LitClassifier, SmallCNN, digits_loaders
from tests.callbacks.conftest import hooks_left, make_trainer


def test_dreams_on_fixed_probe_images(tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    model = LitClassifier(SmallCNN())
    train, val = digits_loaders(n=64, size=16, batch_size=32)
    cb = DeepDream("net.features.6", num_images=3, octaves=2, steps=4, min_size=16)
    make_trainer(tmp_path, [cb], max_epochs=2, limit_val_batches=1).fit(model, train, val)
    root = tmp_path / "featurewatch_logs"
    recs = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]
    images = [r for r in recs if r["kind"] == "image"]
    assert {r["key"] for r in images} == {"featurewatch/deepdream/net.features.6"}
    assert len(images) == 2
    assert "3 probe images (top) and their dreams (bottom)" in images[0]["caption"]
    png = np.asarray(Image.open(root / images[0]["path"]))
    assert png.shape[1] > 3 * 16 and png.shape[0] > 2 * 16  # 3 columns, 2 rows
    gains = [r["value"] for r in recs if r["key"] == "featurewatch/deepdream/net.features.6/gain"]
    assert len(gains) == 2 and all(g > 1.0 for g in gains)
    assert hooks_left(model) == []
    # the probe is fixed and checkpointed
    state = cb.state_dict()
    assert state["probe"].shape == (3, 1, 16, 16)


def test_arguments_and_layer_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`octave_scale`"):
        DeepDream("net.features.6", octave_scale=1.0)
    with pytest.raises(TypeError, match="`layer`"):
        DeepDream(6)  # type: ignore[arg-type]
    model = LitClassifier(SmallCNN())
    train, _ = digits_loaders(n=32, size=16)
    with pytest.raises(ValueError, match="not found"):
        make_trainer(tmp_path, [DeepDream("net.features.60")]).fit(model, train)


class _FixedSize(SmallCNN):
    """Flattens its 16 x 16 feature map into the classifier: any other input size fails."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def test_octaves_on_a_model_that_takes_one_input_size_fail_at_the_first_batch(
    tmp_path: Path,
) -> None:
    train, val = digits_loaders(n=32, size=16, batch_size=16)
    dream = DeepDream("net.fc", num_images=2, octaves=3, steps=1)
    trainer = make_trainer(tmp_path, [dream], max_steps=2)
    with pytest.raises(
        ValueError,
        match=r"DeepDream\(octaves=3\) also runs the model on smaller "
        r"images \(down to 8 x 8 for 16 x 16 inputs\).*pass octaves=1",
    ):
        trainer.fit(LitClassifier(_FixedSize()), train, val)
    assert trainer.global_step == 0

    one = DeepDream("net.fc", num_images=2, octaves=1, steps=1)
    make_trainer(tmp_path / "one", [one], max_steps=2).fit(LitClassifier(_FixedSize()), train, val)
    assert one.calls >= 1 and one.failures == 0
