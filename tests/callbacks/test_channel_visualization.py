"""ChannelVisualization in a real Trainer: logged content read back from the files sink."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from featurewatch.callbacks.channel_visualization import ChannelVisualization
from featurewatch.core.hygiene import isolated
from featurewatch.loggers import Event
from tests._models import LitClassifier, SmallCNN, digits_loaders
from tests.callbacks.conftest import hooks_left, make_trainer


def records(root: Path) -> list[dict[str, Any]]:
    path = root / "featurewatch_logs" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def fit(
    root: Path, callbacks: list, epochs: int = 2, seed: int = 0
) -> tuple[pl.Trainer, LitClassifier]:
    pl.seed_everything(seed, verbose=False)
    model = LitClassifier(SmallCNN())
    train, val = digits_loaders(n=64, size=16, batch_size=32)
    trainer = make_trainer(root, callbacks, max_epochs=epochs, limit_val_batches=1)
    trainer.fit(model, train, val)
    return trainer, model


def test_one_grid_per_layer_per_epoch_with_channel_captions(tmp_path: Path) -> None:
    cb = ChannelVisualization(
        ["net.features.2", "net.features.6"], max_channels=4, steps=8, min_size=32
    )
    trainer, model = fit(tmp_path, [cb])
    recs = records(tmp_path)
    images = [r for r in recs if r["kind"] == "image" and not r["key"].endswith("/filmstrip")]
    keys = sorted({r["key"] for r in images})
    assert keys == ["featurewatch/channels/net.features.2", "featurewatch/channels/net.features.6"]
    steps = sorted({r["step"] for r in images})
    assert len(steps) == 2  # one call per epoch (at_end coincides with the last epoch's step)
    # one filmstrip per layer, at the end of training (the last call's step)
    strips = [(r["key"], r["step"]) for r in recs if r["key"].endswith("/filmstrip")]
    assert sorted(strips) == [(f"{k}/filmstrip", steps[-1]) for k in keys]
    first = next(r for r in images if r["key"].endswith("features.6"))
    assert "channels 0, 1, 2, 3" in first["caption"]
    png = np.asarray(Image.open(tmp_path / "featurewatch_logs" / first["path"]))
    assert png.shape[0] >= 64 and png.std() > 1  # 2x2 tiles of >= 32 px, not blank
    scalars = {r["key"] for r in recs if r["kind"] == "scalar"}
    assert "featurewatch/channels/net.features.6/mean_activation" in scalars
    assert "featurewatch/channels/net.features.6/weak_units" in scalars
    assert "featurewatch/channel_visualization/seconds" in scalars
    assert not [r for r in recs if r["kind"] == "text"], "no errors logged"
    assert hooks_left(model) == []

    # same weights -> the same pictures: each channel starts from the same noise and transforms
    events = [Event(step=0, epoch=0), Event(step=0, epoch=0)]
    for event in events:
        with isolated(model):
            cb.visualize(trainer, model, event)
    assert np.array_equal(events[0].images[0].pixels, events[1].images[0].pixels)


def test_training_is_unchanged_by_the_callback(tmp_path: Path) -> None:
    _, plain = fit(tmp_path / "a", [], epochs=1)
    cb = ChannelVisualization(
        "net.features.6",
        max_channels=4,
        steps=4,
        negative=True,
        unit="neuron",
        variants=2,
        at_start=True,
    )
    _, watched = fit(tmp_path / "b", [cb], epochs=1)
    for (name, p), q in zip(plain.named_parameters(), watched.parameters()):
        assert torch.equal(p, q), f"{name} differs when ChannelVisualization watched the run"
    for (name, b), c in zip(plain.named_buffers(), watched.buffers()):
        assert torch.equal(b, c), f"buffer {name} differs"
    keys = {r["key"] for r in records(tmp_path / "b") if r["kind"] == "image"}
    assert keys == {
        "featurewatch/channels/net.features.6",
        "featurewatch/channels/net.features.6/negative",
        "featurewatch/channels/net.features.6/filmstrip",
    }


def test_variants_of_a_channel_are_side_by_side_on_one_row(tmp_path: Path) -> None:
    cb = ChannelVisualization(
        "net.features.6", channels=[1, 4, 6], variants=2, steps=8, min_size=32
    )
    fit(tmp_path, [cb], epochs=1)
    rec = next(r for r in records(tmp_path) if r["kind"] == "image")
    assert (
        "channels 1, 4, 6 (row-major, 2 diverse images per channel side by side)" in rec["caption"]
    )
    png = np.asarray(Image.open(tmp_path / "featurewatch_logs" / rec["path"]))
    # 6 tiles of 16 px shown at 32 px: 2 channels (4 tiles) per row, 2 rows, 2 px padding
    assert png.shape[:2] == (2 * 34 + 2, 4 * 34 + 2)
    tile = lambda r, c: png[2 + 34 * r : 34 * (r + 1), 2 + 34 * c : 34 * (c + 1)].astype(int)
    assert np.abs(tile(0, 0) - tile(0, 1)).mean() > 5, "the two variants of channel 1 look alike"
    with pytest.raises(ValueError, match="`variants`"):
        ChannelVisualization("a", variants=0)
    with pytest.raises(ValueError, match="`diversity`"):
        ChannelVisualization("a", diversity=-1.0)


def test_bad_channel_fails_at_the_first_batch_listing_valid_ones(tmp_path: Path) -> None:
    cb = ChannelVisualization("net.features.2", channels=[0, 8], steps=2)
    with pytest.raises(
        ValueError,
        match=r"channel 8 out of range for layer 'net.features.2' with 8 channels "
        r"\(valid: 0\.\.7\)",
    ):
        fit(tmp_path, [cb], epochs=1)


def test_unknown_layer_fails_at_setup_naming_the_layers(tmp_path: Path) -> None:
    cb = ChannelVisualization("net.features.9", steps=2)
    with pytest.raises(ValueError, match=r"not found in LitClassifier.*net\.features\.6"):
        fit(tmp_path, [cb], epochs=1)


def test_arguments_are_validated_with_named_messages() -> None:
    with pytest.raises(ValueError, match="`steps`"):
        ChannelVisualization("a", steps=0)
    with pytest.raises(ValueError, match="`unit`"):
        ChannelVisualization("a", unit="pixel")
    with pytest.raises(ValueError, match="`normalize`"):
        ChannelVisualization("a", normalize="imagenet")
    with pytest.raises(TypeError, match="`layers`"):
        ChannelVisualization([])
    with pytest.raises(ValueError, match="`polish_steps`"):
        ChannelVisualization("a", steps=4, polish_steps=8)


def test_time_budget_and_state_round_trip(tmp_path: Path) -> None:
    cb = ChannelVisualization("net.features.6", max_channels=4, steps=100_000, time_budget=0.5)
    fit(tmp_path, [cb], epochs=1)
    recs = records(tmp_path)
    steps = [r["value"] for r in recs if r["key"] == "featurewatch/channels/net.features.6/steps"]
    assert steps and max(steps) < 100_000
    caption = next(r["caption"] for r in recs if r["kind"] == "image")
    assert "time budget" in caption
    state = cb.state_dict()
    again = ChannelVisualization("net.features.6", max_channels=4, steps=100_000, time_budget=0.5)
    again.load_state_dict(state)
    assert again._input_shape == cb._input_shape and again._norm == cb._norm
    assert again._stats is not None and torch.equal(again._stats.color, cb._stats.color)
