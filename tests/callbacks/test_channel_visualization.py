"""ChannelVisualization in a real Trainer: logged content read back from the files sink."""

from __future__ import annotations

import copy
import io
import json
import re
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
from tests._files import records
from tests._models import LitClassifier, SmallCNN, digits_loaders
from tests.callbacks.conftest import hooks_left, make_trainer
from tests.callbacks.test_class_model import has_text, labelled_cells, strip_of


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
    png = np.asarray(Image.open(tmp_path / "featurewatch_logs" / first["path"]).convert("RGB"))
    assert png.std() > 1
    # 2 x 2 tiles of 16 px shown at 32 px, each under its title strip, under a header
    cells = labelled_cells(png, 4, 32, 2)
    assert has_text(png[2 : png.shape[0] - 2 * (len(cells[0][0]) + 32 + 2)])  # the header
    shown = cb._previous["net.features.6"][2].reshape(4, 16, 16)  # the last call's images
    last = next(r for r in reversed(images) if r["key"].endswith("features.6"))
    png = np.asarray(Image.open(tmp_path / "featurewatch_logs" / last["path"]).convert("RGB"))
    for c, (strip, tile) in enumerate(labelled_cells(png, 4, 32, 2)):
        assert has_text(strip) and np.array_equal(strip, strip_of(f"ch {c}", 32)), c
        expected = (shown[c].numpy() * 255).round()
        assert np.abs(tile[::2, ::2, 0].astype(float) - expected).max() <= 1, c  # intact pixels
        assert (tile[::2, ::2] == tile[1::2, 1::2]).all()  # nearest neighbour, 2 x
    scalars = {r["key"] for r in recs if r["kind"] == "scalar"}
    assert "featurewatch/channels/net.features.6/mean_activation" in scalars
    for layer in ("net.features.2", "net.features.6"):  # a count only once it is nonzero
        weak = [
            r for r in images if r["key"].endswith(layer) and "could not be excited" in r["caption"]
        ]
        assert (f"featurewatch/channels/{layer}/weak_units" in scalars) == bool(weak)
    assert "featurewatch/channels/seconds" in scalars
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
    png = np.asarray(Image.open(tmp_path / "featurewatch_logs" / rec["path"]).convert("RGB"))
    # 6 tiles of 16 px shown at 32 px: 2 channels (4 tiles) per row, 2 rows, each under a title
    cells = labelled_cells(png, 6, 32, 4)
    assert png.shape[1] >= 4 * 34 + 2
    titles = ["ch 1", "1 · 2", "ch 4", "4 · 2", "ch 6", "6 · 2"]  # "ch 1 · 2" is too wide
    for (strip, _), title in zip(cells, titles):
        assert has_text(strip) and np.array_equal(strip, strip_of(title, 32)), title
    tile = lambda i: cells[i][1].astype(int)
    assert np.abs(tile(0) - tile(1)).mean() > 5, "the two variants of channel 1 look alike"
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


class Reinit(LitClassifier):
    """Learns nothing (lr 0); at the first step of epoch 1 the filter of channel 2 of the first
    conv is drawn anew (its old value is kept in ``before``)."""

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        if self.current_epoch == 1 and batch_idx == 0:
            conv = self.net.features[0]
            self.before = conv.weight.detach().clone()
            with torch.no_grad():
                conv.weight[2] = torch.randn(conv.weight[2].shape) * conv.weight[2].std() * 3
        return super().training_step(batch, batch_idx)


def test_drift_is_zero_for_an_unchanged_channel_and_equals_recomputed_renders(
    tmp_path: Path,
) -> None:
    layer, key = "net.features.0", "featurewatch/channels/net.features.0"
    cb = ChannelVisualization(layer, channels=[0, 1, 2, 3], steps=8)
    pl.seed_everything(0, verbose=False)
    model = Reinit(SmallCNN(), lr=0.0)
    train, val = digits_loaders(n=64, size=16, batch_size=32)
    trainer = make_trainer(tmp_path, [cb], max_epochs=2, limit_val_batches=1)
    trainer.fit(model, train, val)
    recs = records(tmp_path)
    drift = [r for r in recs if r["key"] == f"{key}/drift"]
    steps = [r["step"] for r in recs if r["key"] == key]
    assert steps == [2, 4] and [r["step"] for r in drift] == [4]  # nothing at the first call
    (image,) = [r for r in recs if r["key"] == key and r["step"] == 4]
    per_channel = {
        int(c): float(v)
        for c, v in re.findall(r"(\d+): ([\d.]+)", image["caption"].split("r): ")[1])
    }
    assert per_channel[0] == per_channel[1] == per_channel[3] == 0.0  # same weights, same seed
    assert per_channel[2] > 0.05, per_channel  # its filter was drawn anew
    (hist,) = [r for r in recs if r["key"] == f"{key}/drift_units"]
    assert hist["count"] == 4

    # recomputed: the renders of the model before and after the re-draw, at the callback's seeds
    old = copy.deepcopy(model)
    with torch.no_grad():
        old.net.features[0].weight.copy_(model.before)
    renders = []
    for net in (old, model):
        again = copy.deepcopy(cb)
        again._previous = {}
        with isolated(net):
            again.visualize(trainer, net, Event(step=0, epoch=0))
        renders.append(again._previous[layer][2])
    expected = [
        1 - np.corrcoef(renders[0][c].numpy(), renders[1][c].numpy())[0, 1] for c in range(4)
    ]
    assert drift[0]["value"] == pytest.approx(float(np.mean(expected)), abs=1e-6)
    assert [per_channel[c] for c in range(4)] == pytest.approx(expected, abs=1e-3)

    # a resume goes on from the checkpointed images: the next call compares with step 4
    state = torch.load(_saved(trainer, tmp_path), weights_only=True)["callbacks"][cb.state_key]
    resumed = ChannelVisualization(layer, channels=[0, 1, 2, 3], steps=8)
    resumed.load_state_dict(state)
    assert resumed._previous[layer][1] == 4
    assert torch.equal(resumed._previous[layer][2], cb._previous[layer][2])
    assert len(resumed._films[key].frames) == 2


def _saved(trainer: pl.Trainer, root: Path) -> Path:
    path = root / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_filmstrip_every_and_at_end_read_back_from_tensorboard_and_files(tmp_path: Path) -> None:
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    key = "featurewatch/channels/net.features.6/filmstrip"
    cb = ChannelVisualization(
        "net.features.6", max_channels=3, steps=4, min_size=16, filmstrip_every=2, at_start=True
    )
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders(n=64, size=16, batch_size=32)
    tb, csv = TensorBoardLogger(tmp_path, name="tb"), CSVLogger(tmp_path, name="csv")
    trainer = make_trainer(tmp_path, [cb], max_epochs=3, limit_val_batches=1, logger=[tb, csv])
    trainer.fit(LitClassifier(SmallCNN()), train, val)
    # calls at steps 0 (start), 2, 4, 6: filmstrips after the 2nd and 4th call; the end adds
    # none (the 4th call's filmstrip is the end's)
    acc = EventAccumulator(tb.log_dir, size_guidance={"images": 0})
    acc.Reload()
    strips = acc.Images(key)
    assert [e.step for e in strips] == [2, 6]
    files = Path(csv.log_dir) / "featurewatch"
    recs = [json.loads(line) for line in (files / "events.jsonl").read_text().splitlines()]
    film = [r for r in recs if r["key"] == key]
    assert [r["step"] for r in film] == [2, 6]
    assert "columns: 4 of 4 calls" in film[-1]["caption"]
    assert "from epoch 0 step 0 to epoch 2 step 6" in film[-1]["caption"]
    for event, rec in zip(strips, film):
        tb_png = Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")
        fs_png = Image.open(files / rec["path"]).convert("RGB")
        assert tb_png.tobytes() == fs_png.tobytes()  # the same picture in both
    last = np.asarray(Image.open(files / film[-1]["path"]).convert("RGB"))
    # 4 columns of 3 channels: each call's 16 px tiles (min_size 16 -> kept at 32 by the strip)
    assert last.shape[0] > 3 * 32 and last.shape[1] > 4 * 32
    with Image.open(files / film[-1]["animation"]) as gif:
        assert gif.format == "GIF" and gif.n_frames == 4  # one frame per stored call


class _NaNChannel(torch.nn.Module):
    """Channel 1 of its input becomes NaN (its gradient stays 0: the other channels are clean)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.arange(x.shape[1]).reshape(1, -1, 1, 1)
        return torch.where(c == 1, torch.full_like(x, float("nan")), x)


class _NoSteps(LitClassifier):
    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return None  # weights stay as they are: only the NaN layer is unusual


def test_a_unit_with_a_nan_activation_is_flagged_and_left_out_of_the_scalars(
    tmp_path: Path,
) -> None:
    net = SmallCNN()
    net.features.insert(3, _NaNChannel())
    train, val = digits_loaders(n=32, size=16, batch_size=16)
    cb = ChannelVisualization(
        ["net.features.3"], max_channels=4, steps=4, every_n_epochs=None, at_start=True
    )
    make_trainer(tmp_path, [cb], max_steps=1, num_sanity_val_steps=0).fit(_NoSteps(net), train, val)
    recs = {r["key"]: r for r in records(tmp_path) if r["step"] == 0}
    key = "featurewatch/channels/net.features.3"
    assert "activation not finite (NaN/Inf): 1" in recs[key]["caption"]
    assert "could not be excited: 1" not in recs[key]["caption"]
    assert recs[f"{key}/nonfinite_units"]["value"] == 1.0
    # the tile of channel 1 is marked in its title; the others carry the plain channel number
    png = np.asarray(Image.open(tmp_path / "featurewatch_logs" / recs[key]["path"]).convert("RGB"))
    cells = labelled_cells(png, 4, 64, 2)
    found = re.search(r"could not be excited: ([\d, ]+)", recs[key]["caption"])  # unseeded weights
    weak = {int(c) for c in found.group(1).split(", ")} if found else set()
    for c in range(4):
        mark = " (NaN)" if c == 1 else " (weak)" if c in weak else ""
        title = (f"ch {c}{mark}", f"{c}{mark}")  # "ch 0 (weak)" is too wide for 64 px
        assert has_text(cells[c][0]) and np.array_equal(cells[c][0], strip_of(title, 64)), title
    mean = recs[f"{key}/mean_activation"]["value"]
    assert mean is not None and np.isfinite(mean)  # over channels 0, 2, 3 (NaN was logged)
    assert cb.failures == 0


class _Gate(torch.nn.Module):
    """Channel 0 of its input is zero while ``state["dead"]`` holds: a dead filter that recovers."""

    def __init__(self, state: dict[str, bool]) -> None:
        super().__init__()
        self.state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.state["dead"]:
            return x
        c = torch.arange(x.shape[1], device=x.device).reshape(1, -1, 1, 1)
        return torch.where(c == 0, torch.zeros_like(x), x)


class _DeadBetween(pl.Callback):
    """``state["dead"]`` while ``start <= global_step < stop`` (set before the calls of a step)."""

    def __init__(self, state: dict[str, bool], start: int, stop: int) -> None:
        self.state, self.start, self.stop = state, start, stop

    def on_train_batch_end(self, trainer, *args: Any) -> None:  # type: ignore[no-untyped-def]
        self.state["dead"] = self.start <= trainer.global_step < self.stop


def weak_in(caption: str) -> int:
    found = re.search(r"could not be excited: ([\d, ]+)", caption)
    return len(found.group(1).split(", ")) if found else 0


def test_weak_units_are_logged_from_their_first_one_on_down_to_zero(tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    state = {"dead": False}
    net = SmallCNN()
    net.features.insert(3, _Gate(state))
    train, val = digits_loaders(n=96, size=16, batch_size=16)  # 6 steps in one epoch
    cb = ChannelVisualization(
        ["net.features.3"], max_channels=4, steps=8, every_n_epochs=None, every_n_train_steps=2
    )
    gate = _DeadBetween(state, start=3, stop=5)  # channel 0 is dead at the call of step 4 only
    make_trainer(tmp_path, [gate, cb], max_steps=6, num_sanity_val_steps=0).fit(
        _NoSteps(net), train, val
    )
    recs = records(tmp_path)
    key = "featurewatch/channels/net.features.3"
    captions = {r["step"]: r["caption"] for r in recs if r["key"] == key}
    counts = {r["step"]: r["value"] for r in recs if r["key"] == f"{key}/weak_units"}
    assert sorted(captions) == [2, 4, 6]
    assert weak_in(captions[2]) == 0  # healthy: no chart of zeros
    assert re.search(r"could not be excited: 0\b", captions[4])
    assert not re.search(r"could not be excited: 0\b", captions[6])  # recovered
    # logged from the first call with a weak unit on, the recovered one too
    assert counts == {4: float(weak_in(captions[4])), 6: float(weak_in(captions[6]))}
