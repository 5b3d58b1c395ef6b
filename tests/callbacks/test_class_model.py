"""ClassModelVisualization in a real Trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl

from featurewatch.callbacks.class_model import ClassModelVisualization
from tests._models import LitClassifier, SmallCNN, digits_loaders
from tests.callbacks.conftest import hooks_left, make_trainer

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class NamedClassifier(LitClassifier):
    class_names = WORDS


def fit(root: Path, cb: ClassModelVisualization, model: LitClassifier) -> list[dict]:
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders(n=64, size=16, batch_size=32)
    make_trainer(root, [cb], max_epochs=1, limit_val_batches=1).fit(model, train, val)
    return [json.loads(line) for line in (root / "featurewatch_logs" / "events.jsonl").read_text().splitlines()]


def test_one_image_per_class_with_names_from_the_module(tmp_path: Path) -> None:
    model = NamedClassifier(SmallCNN())
    recs = fit(tmp_path, ClassModelVisualization(classes=[3, 7], steps=8), model)
    image = next(r for r in recs if r["kind"] == "image")
    assert image["key"] == "featurewatch/class_model/output"
    assert "3: three" in image["caption"] and "7: seven" in image["caption"]
    scalars = {r["key"]: r["value"] for r in recs if r["kind"] == "scalar"}
    assert 0.0 <= scalars["featurewatch/class_model/output/self_classified"] <= 1.0
    assert "featurewatch/class_model/output/mean_logit" in scalars
    assert hooks_left(model) == []


def test_default_renders_every_output_and_explicit_names_win(tmp_path: Path) -> None:
    cb = ClassModelVisualization(class_names=[f"digit {d}" for d in range(10)], steps=4)
    recs = fit(tmp_path, cb, NamedClassifier(SmallCNN()))
    caption = next(r["caption"] for r in recs if r["kind"] == "image")
    assert "0: digit 0" in caption and "9: digit 9" in caption and "three" not in caption


def test_bad_class_fails_at_the_first_batch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"class 10 out of range; the model outputs 10 scores \(valid: 0\.\.9\)"):
        fit(tmp_path, ClassModelVisualization(classes=[10], steps=2), LitClassifier(SmallCNN()))
    with pytest.raises(TypeError, match="`class_names`"):
        ClassModelVisualization(class_names="0123456789")
