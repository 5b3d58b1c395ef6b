"""AttributionMaps in a real Trainer: keys, steps, pictures read back from disk, early errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from featurewatch.callbacks.attribution import AttributionMaps, _empty_note
from tests._models import LitClassifier, SmallCNN, digits_loaders
from tests.callbacks.conftest import hooks_left, make_trainer

ALL = ("saliency", "smoothgrad", "occlusion", "gradcam", "cam")


def fit(
    root: Path, cb: AttributionMaps, model: LitClassifier, **trainer: Any
) -> list[dict[str, Any]]:
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders(n=64, size=16, batch_size=32)  # 2 optimizer steps per epoch
    make_trainer(root, [cb], limit_val_batches=1, **trainer).fit(model, train, val)
    lines = (root / "featurewatch_logs" / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def png(root: Path, record: dict[str, Any]) -> np.ndarray:
    with Image.open(root / "featurewatch_logs" / record["path"]) as im:
        return np.asarray(im.convert("RGB"))


def test_every_method_is_logged_at_the_scheduled_steps(tmp_path: Path) -> None:
    model = LitClassifier(SmallCNN())
    cb = AttributionMaps(
        ALL,
        num_images=3,
        smooth_samples=4,
        every_n_epochs=None,
        every_n_train_steps=2,
        at_start=True,
    )
    recs = fit(tmp_path, cb, model, max_epochs=2)
    images = [r for r in recs if r["kind"] == "image"]
    # at start (step 0), after steps 2 and 4; the run's end is step 4 again, not logged twice
    assert sorted((r["key"], r["step"]) for r in images) == sorted(
        (f"featurewatch/attribution/{m}", s) for m in ALL for s in (0, 2, 4)
    )
    seconds = [r for r in recs if r["key"] == "featurewatch/attribution/seconds"]
    assert [r["step"] for r in seconds] == [0, 2, 4]
    assert not [r for r in recs if r["kind"] == "text"]  # no failure was reported
    captions = {r["key"]: r["caption"] for r in images if r["step"] == 4}
    assert "Grad-CAM (layer net.features.4)" in captions["featurewatch/attribution/gradcam"]
    assert (
        "CAM (layer net.features.6)" in captions["featurewatch/attribution/cam"]
    )  # the pooled map
    assert "4 noisy copies" in captions["featurewatch/attribution/smoothgrad"]
    for caption in captions.values():
        assert "epoch 1, step 4" in caption and "3 probe images (top)" in caption
        for i in range(3):  # target = predicted class
            part = caption.split(f"#{i}: target ")[1]
            target, rest = part.split(", predicted ", 1)
            assert rest.startswith(target + " (p=")
    for r in images:
        pixels = png(tmp_path, r)
        # 3 tiles per row, 16 px probes enlarged 4x to 64 px, 2 px padding
        assert pixels.shape == (2 * 64 + 3 * 2, 3 * 64 + 4 * 2, 3)
        top, bottom = pixels[2:66].astype(int), pixels[68:132].astype(int)
        assert (top[..., 0] == top[..., 2]).all(), "the probe images are grey digits"
        assert np.abs(bottom[..., 0] - bottom[..., 2]).max() > 60, "the heatmap adds colour"
    assert hooks_left(model) == []
    _, val = digits_loaders(n=64, size=16, batch_size=32)
    assert torch.equal(cb.state_dict()["probe"], next(iter(val))[0][:3])  # first validation images


def test_fixed_probe_and_targets(tmp_path: Path) -> None:
    probe = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    cb = AttributionMaps(["occlusion", "gradcam"], probe, target=[3, 7], window=4, stride=2)
    recs = fit(tmp_path, cb, LitClassifier(SmallCNN()), max_epochs=1)
    images = [r for r in recs if r["kind"] == "image"]
    assert sorted(r["key"] for r in images) == [
        "featurewatch/attribution/gradcam",
        "featurewatch/attribution/occlusion",
    ]
    assert {r["step"] for r in images} == {2}  # end of epoch 0 = end of training
    for r in images:
        assert (
            "#0: target 3, predicted" in r["caption"] and "#1: target 7, predicted" in r["caption"]
        )
        assert png(tmp_path, r).shape == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2, 3)
    assert "set to 0" in next(r["caption"] for r in images if r["key"].endswith("occlusion"))
    resumed = AttributionMaps(["occlusion", "gradcam"], target=[3, 7], num_images=2)
    resumed.load_state_dict(cb.state_dict())
    assert torch.equal(resumed._probe.get(), probe)


def test_caption_says_when_a_map_has_no_positive_evidence() -> None:
    maps = torch.zeros(3, 4, 4)
    maps[0, 1, 1] = 0.5
    maps[2] = -1.0
    assert (
        _empty_note(maps)
        == "; no positive evidence for the target in image(s) #1, #2 (uniform tile)"
    )
    assert _empty_note(maps[:1]) == ""


def test_bad_arguments_fail_in_init_listing_what_is_valid() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown attribution method 'gradient'.*'saliency', 'smoothgrad', 'occlusion', 'gradcam', 'cam'",
    ):
        AttributionMaps(["saliency", "gradient"])
    with pytest.raises(ValueError, match="at least one"):
        AttributionMaps([])
    with pytest.raises(ValueError, match="'predicted', a class index.*probe images have no labels"):
        AttributionMaps(target="label")
    with pytest.raises(ValueError, match="`target` gives 3 classes for 4 probe images"):
        AttributionMaps(target=[1, 2, 3])
    with pytest.raises(ValueError, match="`cmap`"):
        AttributionMaps(cmap="rainbowz")
    with pytest.raises(ValueError, match="`window`"):
        AttributionMaps(window=0)
    with pytest.raises(ValueError, match="either `every_n_epochs` or `every_n_train_steps`"):
        AttributionMaps(every_n_train_steps=5)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"layer": "net.features.60"},
            ValueError,
            r"'net\.features\.60' not found.*did you mean 'net\.features\.6'",
        ),
        (
            {"target": 10},
            ValueError,
            r"target class 10 out of range; the model outputs 10 scores \(valid: 0\.\.9\)",
        ),
        (
            {"methods": "gradcam", "layer": "net.fc"},
            ValueError,
            r"outputs shape \(1, 10\); pass `layer=` naming a conv",
        ),
        (
            {"methods": "cam", "layer": "net.features.0"},
            ValueError,
            r"8 channels but classifier 'net\.fc' takes 16.*'gradcam'",
        ),
        (
            {"methods": "cam", "layer": "net.features.4"},
            ValueError,
            r"use layer='net\.features\.6' for CAM, or 'gradcam'",
        ),
        ({"methods": "cam", "classifier": "net.features.4"}, TypeError, r"must name an nn\.Linear"),
        (
            {"methods": "occlusion", "window": 17},
            ValueError,
            r"`window` \(17, 17\) is larger than the images \(16, 16\)",
        ),
    ],
)
def test_bad_configuration_fails_before_the_first_training_step(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    model = LitClassifier(SmallCNN())
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(error, match=message):
        fit(tmp_path, AttributionMaps(**kwargs), model, max_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "training started"
    assert hooks_left(model) == []
