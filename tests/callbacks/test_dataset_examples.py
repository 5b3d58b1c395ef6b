"""DatasetExamples in a real Trainer: logged content read back from the files sink."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from featurewatch.callbacks.base import FeatureWatchWarning
from featurewatch.callbacks.dataset_examples import DatasetExamples
from featurewatch.core.examples import top_examples
from featurewatch.core.hygiene import isolated
from featurewatch.core.images import to_uint8
from featurewatch.core.labels import label_font, text_band
from featurewatch.loggers import Event
from tests._files import records
from tests._models import LitClassifier, SmallCNN, digits_loaders
from tests.callbacks.conftest import hooks_left, make_trainer
from tests.callbacks.test_class_model import has_text

# a row title strip (11 px font, 3 px margins) above each row; a header (12 px, 3 px margins, 4 px
# padding above it) over the picture
STRIP = sum(label_font(11).getmetrics()) + 2 * 3
HEADER = sum(label_font(12).getmetrics()) + 2 * 3 + 4

LAYERS = ["net.features.2", "net.features.6", "net.fc"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny nets run as fast on one thread, and a busy neighbour on 2 cores cannot stall them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit(
    root: Path,
    callbacks: list,
    *,
    epochs: int = 2,
    val: bool = True,
    net: nn.Module | None = None,
    ckpt: Path | None = None,
    shuffle_val: bool = False,
) -> tuple[pl.Trainer, LitClassifier]:
    pl.seed_everything(0, verbose=False)
    model = LitClassifier(net if net is not None else SmallCNN())
    # 4 steps per epoch, 64 val images
    train, val_loader = digits_loaders(n=64, size=16, batch_size=16)
    if shuffle_val:
        val_loader = DataLoader(val_loader.dataset, batch_size=16, shuffle=True)
    trainer = make_trainer(root, callbacks, max_epochs=epochs)
    trainer.fit(model, train, val_loader if val else None, ckpt_path=ckpt)
    return trainer, model


def caption_values(caption: str) -> dict[int, list[tuple[int, float]]]:
    """``channel c: #i (v), ...`` lines of a caption -> {c: [(i, v), ...]}."""
    out = {}
    for line in caption.splitlines()[1:]:
        head, _, rest = line.partition(": ")
        out[int(head.split()[1])] = [
            (int(i), float(v)) for i, v in re.findall(r"#(\d+) \(([-+.\deE]+)\)", rest)
        ]
    return out


def test_one_picture_per_layer_at_each_scheduled_step_and_training_is_unchanged(
    tmp_path: Path,
) -> None:
    cb = DatasetExamples(
        LAYERS,
        max_channels=2,
        k=3,
        pool_size=48,
        every_n_epochs=None,
        every_n_train_steps=3,
        at_start=True,
        min_size=32,  # the geometry below
    )
    _, model = fit(tmp_path / "watched", [cb])
    recs = records(tmp_path / "watched")
    assert not [r for r in recs if r["kind"] == "text"], "no errors logged"
    images = [r for r in recs if r["kind"] == "image" and not r["key"].endswith("/filmstrip")]
    # at_start (0), every 3 steps (3, 6), at the end (8 = 2 epochs x 4 steps)
    for layer in LAYERS:
        assert sorted(
            r["step"] for r in images if r["key"] == f"featurewatch/examples/{layer}"
        ) == [0, 3, 6, 8]
    assert {r["key"] for r in images} == {f"featurewatch/examples/{la}" for la in LAYERS}
    seconds = [r for r in recs if r["key"] == "featurewatch/examples/seconds"]
    assert len(seconds) == 4

    # layout: a header, 2 channel rows of 32-px tiles (16 px enlarged twice), 3 per group, each
    # under its title strip; groups: images | crops | projections for conv layers, images |
    # projections for the linear head
    group = 3 * (32 + 1) + 1
    for r in images:
        n_groups = 2 if r["key"].endswith("fc") else 3
        assert (r["height"], r["width"]) == (
            HEADER + 2 * (STRIP + 32 + 2 + 4) + 4,
            n_groups * group + (n_groups - 1) * 6 + 8,
        )
        png = np.asarray(Image.open(tmp_path / "watched" / "featurewatch_logs" / r["path"]))
        assert png.shape == (r["height"], r["width"], 3) and png.std() > 10
        assert has_text(png[4:HEADER])  # "<layer> · epoch E · step S"
        for row in range(2):
            y = HEADER + 4 + row * (STRIP + 32 + 2 + 4)
            strip = png[y : y + STRIP, 4 : 4 + group]
            assert has_text(strip) and (strip == 240).mean() > 0.6  # text on the light strip
            # the row's tiles start right below it: its first image's 1 px white frame, then pixels
            assert (png[y + STRIP, 4 : 4 + group] == 255).all()
            assert png[y + STRIP + 1 : y + STRIP + 33, 5 : 5 + 32].std() > 10

    # the pool: the first 48 validation inputs, fixed at the end of the first validation epoch; the
    # calls before it used the 32 images the sanity check had shown (never the loader drawn by us)
    val_x = torch.cat([x for x, _ in digits_loaders(n=64, size=16, batch_size=16)[1]])
    assert cb._pool.fixed is not None and torch.equal(cb._pool.fixed, val_x[:48])
    for r in images:
        assert f"of {32 if r['step'] < 4 else 48} pool images" in r["caption"], r["caption"]

    # the caption of the last call lists exactly what top_examples finds with the final weights
    last = next(
        r for r in images if r["step"] == 8 and r["key"] == "featurewatch/examples/net.features.6"
    )
    assert "epoch 1, step 8: net.features.6" in last["caption"]  # the last of epochs 0, 1
    assert "guided-backprop projections" in last["caption"]
    assert "plain gradient" not in last["caption"]
    with isolated(model):
        top = top_examples(model, val_x[:48], "net.features.6", [0, 1], k=3)
    listed = caption_values(last["caption"])
    for row, c in enumerate(top.channels):
        assert [i for i, _ in listed[c]] == top.indices[row].tolist()
        assert np.allclose([v for _, v in listed[c]], top.values[row].numpy(), rtol=2e-3)
    assert hooks_left(model) == []

    # the same run without the callback trains to bit-identical weights and BatchNorm statistics
    _, plain = fit(tmp_path / "plain", [])
    for (name, a), b in zip(plain.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs when DatasetExamples watched the run"


def test_unknown_layer_fails_at_setup_listing_the_layers(tmp_path: Path) -> None:
    cb = DatasetExamples("net.features.9")
    with pytest.raises(
        ValueError, match=r"layer 'net.features.9' not found in LitClassifier.*net\.features\.6"
    ):
        fit(tmp_path, [cb], epochs=1)
    assert cb.calls == 0


@pytest.mark.parametrize(
    ("layer", "channel", "message"),
    [
        (
            "net.features.2",
            8,
            r"channel 8 out of range for layer 'net.features.2' with 8 channels \(valid: 0\.\.7\)",
        ),
        (
            "net.fc",
            10,
            r"channel 10 out of range for layer 'net.fc' with 10 channels \(valid: 0\.\.9\)",
        ),
    ],
)
def test_channel_out_of_range_fails_before_the_first_training_step(
    tmp_path: Path, layer: str, channel: int, message: str
) -> None:
    cb = DatasetExamples(layer, channels=[0, channel], at_start=True)
    pl.seed_everything(0, verbose=False)
    model = LitClassifier(SmallCNN())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, val = digits_loaders(n=64, size=16, batch_size=16)
    trainer = make_trainer(tmp_path, [cb], max_epochs=1, num_sanity_val_steps=0)
    with pytest.raises(ValueError, match=message):
        trainer.fit(model, train, val)
    assert trainer.global_step == 0 and cb.calls == 0
    # not one optimizer step
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_arguments_are_validated_with_named_messages() -> None:
    with pytest.raises(TypeError, match="`layers`"):
        DatasetExamples([])
    with pytest.raises(
        ValueError, match="`projection` must be one of 'guided', 'deconvnet', 'gradient' or None"
    ):
        DatasetExamples("a", projection="lrp")
    with pytest.raises(ValueError, match="`k`"):
        DatasetExamples("a", k=0)
    with pytest.raises(ValueError, match="`channels`"):
        DatasetExamples("a", channels=[-1])
    with pytest.raises(ValueError, match="`pool_size`"):
        DatasetExamples("a", pool_size=0)
    with pytest.raises(ValueError, match="every_n_train_steps"):
        DatasetExamples("a", every_n_train_steps=2)
    # the pool's messages name this callback's arguments (`pool`, `pool_size`), not the probe
    # helper's
    with pytest.raises(TypeError, match="`pool` must be a tensor, a path or None, got int"):
        DatasetExamples("a", pool=5)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="`pool` path '/no/such/pool.pt' does not exist"):
        DatasetExamples("a", pool="/no/such/pool.pt")
    with pytest.raises(ValueError, match=r"`pool` tensor must be \(N, C, H, W\)"):
        DatasetExamples("a", pool=torch.zeros(4))
    model = LitClassifier(SmallCNN())
    with pytest.raises(RuntimeError, match="no pool images yet: pass `pool=`"), isolated(model):
        DatasetExamples("net.features.6").visualize(None, model, Event(step=0, epoch=0))  # type: ignore[arg-type]
    # channels per layer
    with pytest.raises(
        ValueError, match=r"`channels` names layer 'b', which is not in `layers` \(a\)"
    ):
        DatasetExamples("a", channels={"b": [0]})
    with pytest.raises(ValueError, match=r"`channels\['a'\]` must be a non-empty list"):
        DatasetExamples("a", channels={"a": []})
    # the channels distinguish two instances in a checkpoint
    assert (
        DatasetExamples("a", channels=[0]).state_key
        != DatasetExamples("a", channels=[1]).state_key
        != DatasetExamples("a").state_key
    )


def test_tensor_pool_without_crops_or_projections_and_state_round_trip() -> None:
    pl.seed_everything(0, verbose=False)
    model = LitClassifier(SmallCNN())
    pool = torch.randn(20, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    variants = {
        "bare": DatasetExamples(
            "net.features.6",
            channels=[3, 1, 4],
            k=5,
            pool=pool,
            projection=None,
            crops=False,
            min_size=32,
        ),
        "deconvnet": DatasetExamples(
            "net.features.6",
            channels=[3, 1, 4],
            k=5,
            pool=pool,
            projection="deconvnet",
            crops=False,
            min_size=32,
        ),
        "crops": DatasetExamples(
            "net.features.6", channels=[3, 1, 4], k=5, pool=pool, projection=None, min_size=32
        ),
    }
    sizes = {}
    for name, cb in variants.items():
        event = Event(step=7, epoch=1)
        with isolated(model):
            cb.visualize(None, model, event)  # type: ignore[arg-type]  # the trainer is not used
        (logged,) = event.images
        assert logged.key == "featurewatch/examples/net.features.6"
        assert "rows: channels 3, 1, 4" in logged.caption and "of 20 pool images" in logged.caption
        sizes[name] = logged.pixels.shape
        # each row is titled with its channel and (as many as fit of) its top pool indices
        width = logged.pixels.shape[1] - 8
        pixels = np.asarray(logged.pixels)
        for row, (c, pairs) in enumerate(caption_values(logged.caption).items()):
            y = HEADER + 4 + row * (STRIP + 38)
            title = f"ch {c} · top 5: " + ", ".join(f"#{i} ({v:.3g})" for i, v in pairs)
            row_w = (5 * 33 + 1) * (1 if name == "bare" else 2) + (0 if name == "bare" else 6)
            strip = pixels[y : y + STRIP, 4 : 4 + row_w]
            assert has_text(strip) and width >= row_w
            expected = to_uint8(text_band(row_w, title, size=11, background=0.94))
            assert np.array_equal(strip, expected), (name, c)
            assert not np.array_equal(
                strip, to_uint8(text_band(row_w, f"ch {c + 1}", size=11, background=0.94))
            )
    group = 5 * 33 + 1
    height = HEADER + 3 * (STRIP + 38) + 4
    bare_width = sizes["bare"][1]
    assert sizes["bare"][0] == height and bare_width >= group + 8  # widened for the header
    assert sizes["deconvnet"] == sizes["crops"] == (height, 2 * group + 6 + 8, 3)
    assert hooks_left(model) == []

    state = variants["bare"].state_dict()
    assert torch.equal(state["probe"], pool)
    again = DatasetExamples("net.features.6", channels=[3, 1, 4], k=5, min_size=32)
    again.load_state_dict(state)
    assert again._pool.fixed is not None and torch.equal(again._pool.fixed, pool)
    # the layers and channels identify the state; other arguments (here k and the pool) make
    # another unnamed instance (tests/callbacks/test_identity.py); the pre-`name=` key stays
    assert (
        again._legacy_state_key
        == variants["bare"]._legacy_state_key
        != DatasetExamples("net.features.2")._legacy_state_key
    )
    assert again.state_key != variants["bare"].state_key


def test_a_pool_from_a_file_is_normalized_and_checked_against_the_model(tmp_path: Path) -> None:
    saved = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    torch.save(saved, tmp_path / "pool.pt")
    cb = DatasetExamples(
        "net.features.2", k=2, pool=str(tmp_path / "pool.pt"), normalize=((0.5,), (0.25,))
    )
    model = LitClassifier(SmallCNN())
    with isolated(model):
        cb.check_input(model, torch.zeros(3, 1, 16, 16))
        event = Event(step=0, epoch=0)
        cb.visualize(None, model, event)  # type: ignore[arg-type]
    assert cb._pool.fixed is not None and torch.allclose(cb._pool.fixed, (saved - 0.5) / 0.25)
    assert "of 5 pool images" in event.images[0].caption
    bad = DatasetExamples("net.features.2", channels=[9], pool=str(tmp_path / "pool.pt"))
    with pytest.raises(ValueError, match=r"channel 9 out of range.*valid: 0\.\.7"), isolated(model):
        bad.check_input(model, torch.zeros(3, 1, 16, 16))


def test_without_validation_the_pool_is_the_first_training_inputs(tmp_path: Path) -> None:
    cb = DatasetExamples("net.features.6", max_channels=1, k=2, pool_size=20, projection=None)
    fit(tmp_path, [cb], epochs=1, val=False)
    assert cb._pool.fixed is not None and cb._pool.fixed.shape == (20, 1, 16, 16)
    # the training loader shuffles: the pool must be made of training images (rows of the train set)
    train_x = digits_loaders(n=64, size=16, batch_size=16)[0].dataset.tensors[0]  # type: ignore[attr-defined]
    same = (cb._pool.fixed.flatten(1)[:, None] == train_x.flatten(1)[None]).all(2)  # (pool, train)
    assert same.any(1).all()
    (image,) = [
        r for r in records(tmp_path) if r["kind"] == "image" and "/filmstrip" not in r["key"]
    ]
    assert "of 20 pool images" in image["caption"]


class SideHead(SmallCNN):
    """SmallCNN with a side head on *detached* features: its units do not depend on the input
    through autograd, so their receptive fields cannot be measured (the layer fails)."""

    def __init__(self) -> None:
        super().__init__()
        self.side = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        self.side(features.detach())
        return self.fc(self.pool(features).flatten(1))


def test_a_failing_layer_is_reported_and_the_other_layers_are_still_logged(tmp_path: Path) -> None:
    # the failing layer comes first: it must not take the others down with it
    cb = DatasetExamples(["net.side", "net.features.6"], max_channels=2, k=2, pool_size=16)
    with pytest.warns(
        FeatureWatchWarning, match="DatasetExamples: layer 'net.side' failed at step 4"
    ):
        fit(tmp_path, [cb], epochs=1, net=SideHead())
    recs = records(tmp_path)
    assert [(r["key"], r["step"]) for r in recs if r["kind"] == "image"] == [
        ("featurewatch/examples/net.features.6", 4),
        ("featurewatch/examples/net.features.6/filmstrip", 4),  # at the end of training
    ]
    (error,) = [r for r in recs if r["kind"] == "text"]
    assert error["key"] == "featurewatch/examples/net.side/error"
    assert "do not depend on the input through autograd" in error["value"]
    assert "Traceback" in error["value"]
    assert cb.calls == 1 and cb.failures == 1  # the call counts as failed once
    # strict: the layer's error is raised
    strict = DatasetExamples(
        ["net.side", "net.features.6"], k=2, pool=torch.randn(6, 1, 16, 16), strict=True
    )
    model = LitClassifier(SideHead())
    with pytest.raises(ValueError, match="do not depend on the input"), isolated(model):
        strict.visualize(None, model, Event(step=0, epoch=0))  # type: ignore[arg-type]


class Recorder(nn.Module):
    """Identity that records the batch size of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(int(x.shape[0]))
        return x


def test_the_pool_runs_through_the_model_once_per_batch_for_all_layers() -> None:
    rec = [Recorder() for _ in range(3)]
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        rec[0],
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, padding=1),  # 3: watched
        rec[1],
        nn.ReLU(inplace=True),  # 5: watched, the deepest
        rec[2],
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10),
    )
    model = LitClassifier(net)
    pool = torch.randn(10, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    bare = DatasetExamples(
        ["net.3", "net.5"],
        channels=[0, 1],
        k=2,
        pool=pool,
        batch_size=4,
        projection=None,
        crops=False,
    )
    for step in range(2):
        event = Event(step=step, epoch=0)
        with isolated(model):
            bare.visualize(None, model, event)  # type: ignore[arg-type]
        assert [i.key for i in event.images] == [
            "featurewatch/examples/net.3",
            "featurewatch/examples/net.5",
        ]
    # one single-image forward counts module calls (once for the run); then per call each module up
    # to the deepest layer runs once per pool batch, and nothing after it ever runs on the pool
    assert rec[0].batches == rec[1].batches == [1, 4, 4, 2, 4, 4, 2]
    assert rec[2].batches == [1]
    # with crops and projections: their forwards stop at each layer too
    full = DatasetExamples(["net.3", "net.5"], channels=[0, 1], k=2, pool=pool, batch_size=4)
    for r in rec:
        r.batches.clear()
    with isolated(model):
        full.visualize(None, model, Event(step=0, epoch=0))  # type: ignore[arg-type]
    assert rec[2].batches == [1]


class ReLU6Net(nn.Module):
    """MobileNet in miniature: in-place ReLU6 after residual sums (which grow past 6 under any
    positive stand-in), a Hardswish, global pooling and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(inplace=True)
        )
        self.blocks = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(3))
        self.act = nn.ReLU6(inplace=True)
        self.last = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Hardswish())
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for conv in self.blocks:
            x = self.act(x + conv(x))
        return self.fc(self.last(x).mean((2, 3)))


class FunctionalReLUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.c2(F.relu(self.c1(x)))).mean((2, 3)))


def test_relu6_networks_get_crops_and_guided_projections_functional_relu_say_plain_gradient() -> (
    None
):
    torch.manual_seed(0)
    pool = torch.randn(12, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    captions = {}
    for name, net, layers in (
        ("relu6", ReLU6Net(), ["net.last.1", "net.act", "net.fc"]),
        ("functional", FunctionalReLUNet(), ["net.c2"]),
    ):
        model = LitClassifier(net)
        cb = DatasetExamples(layers, max_channels=2, k=3, pool=pool, strict=True)
        event = Event(step=0, epoch=0)
        with isolated(model):
            cb.visualize(None, model, event)  # type: ignore[arg-type]
        assert [i.key for i in event.images] == [f"featurewatch/examples/{la}" for la in layers]
        captions.update({(name, i.key.rsplit("/", 1)[1]): i.caption for i in event.images})
    for layer in ("net.last.1", "net.act"):
        assert (
            "columns: top images | receptive-field crops | guided-backprop projections\n"
            in captions[("relu6", layer)]
        )
    assert "guided-backprop projections\n" in captions[("relu6", "net.fc")]
    assert (
        "guided-backprop projections (no nn.ReLU/ReLU6/LeakyReLU module before this layer: "
        "plain gradient)" in captions[("functional", "net.c2")]
    )


def test_channels_per_layer() -> None:
    model = LitClassifier(SmallCNN())
    pool = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    cb = DatasetExamples(
        ["net.features.2", "net.features.6"],
        channels={"net.features.6": [9, 2]},
        max_channels=3,
        k=2,
        pool=pool,
    )
    event = Event(step=0, epoch=0)
    with isolated(model):
        cb.check_input(model, pool)
        cb.visualize(None, model, event)  # type: ignore[arg-type]
    rows = {i.key: i.caption.splitlines()[0].split("rows: ")[1].split(";")[0] for i in event.images}
    assert rows == {
        "featurewatch/examples/net.features.2": "channels 0, 1, 2",
        "featurewatch/examples/net.features.6": "channels 9, 2",
    }
    bad = DatasetExamples(
        ["net.features.2", "net.features.6"], channels={"net.features.2": [8]}, pool=pool
    )
    with (
        pytest.raises(ValueError, match=r"channel 8 out of range for layer 'net.features.2'"),
        isolated(model),
    ):
        bad.check_input(model, pool)


def test_checkpoint_pool_false_keeps_the_pool_out_of_checkpoints_and_collects_it_again(
    tmp_path: Path,
) -> None:
    def callbacks() -> list[DatasetExamples]:
        schedule: dict[str, Any] = {
            "max_channels": 1,
            "k": 2,
            "pool_size": 48,
            "projection": None,
            "every_n_epochs": None,
            "every_n_train_steps": 2,
        }
        return [
            DatasetExamples("net.features.2", checkpoint_pool=True, **schedule),
            DatasetExamples("net.features.6", checkpoint_pool=False, name="dropped", **schedule),
        ]

    kept, dropped = callbacks()
    trainer, _ = fit(tmp_path / "first", [kept, dropped], epochs=1)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]
    val_x = torch.cat([x for x, _ in digits_loaders(n=64, size=16, batch_size=16)[1]])
    assert torch.equal(saved[kept.state_key]["probe"], val_x[:48])
    assert "probe" not in saved[dropped.state_key] and saved[dropped.state_key]["calls"] == 2

    # resume for a second epoch: the calls (steps 6 and 8, before the epoch's validation) show the
    # checkpointed pool, or - without it - the 32 images the resumed run's sanity check has shown;
    # the pool is then fixed again by the validation epoch (the same 48 images: no shuffling)
    kept, dropped = callbacks()
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders(n=64, size=16, batch_size=16)
    make_trainer(tmp_path / "resumed", [kept, dropped], max_epochs=2).fit(
        LitClassifier(SmallCNN()), train, val, ckpt_path=tmp_path / "last.ckpt"
    )
    images = {
        (r["key"].rsplit("/", 1)[1], r["step"]): r["caption"]
        for r in records(tmp_path / "resumed")
        if r["kind"] == "image" and not r["key"].endswith("/filmstrip")
    }
    assert sorted(images) == [
        (la, step) for la in ("net.features.2", "net.features.6") for step in (6, 8)
    ]
    for step in (6, 8):
        assert "of 48 pool images" in images[("net.features.2", step)]
        assert "of 32 pool images" in images[("net.features.6", step)]
    assert torch.equal(kept._pool.fixed, val_x[:48])  # type: ignore[arg-type]
    assert torch.equal(dropped._pool.fixed, val_x[:48])  # type: ignore[arg-type]


def test_drift_is_the_jaccard_distance_of_consecutive_top_k_indices(tmp_path: Path) -> None:
    layer = "net.features.6"
    key = f"featurewatch/examples/{layer}"
    pool = digits_loaders(n=64, size=16, batch_size=16)[1].dataset.tensors[0][:40]  # type: ignore[attr-defined]
    cb = DatasetExamples(
        layer,
        max_channels=4,
        k=4,
        pool=pool,
        projection=None,
        crops=False,
        every_n_epochs=None,
        every_n_train_steps=2,
    )
    trainer, model = fit(tmp_path, [cb])
    recs = records(tmp_path)
    images = [r for r in recs if r["key"] == key]
    assert [r["step"] for r in images] == [2, 4, 6, 8]
    tops = [caption_values(r["caption"]) for r in images]
    drift = {r["step"]: r["value"] for r in recs if r["key"] == f"{key}/drift"}
    assert sorted(drift) == [4, 6, 8]  # nothing at the first call
    moved = []
    for before, now, rec in zip(tops, tops[1:], images[1:]):
        expected = []
        for c in range(4):
            p, q = {i for i, _ in before[c]}, {i for i, _ in now[c]}
            expected.append(1 - len(p & q) / len(p | q))
        assert drift[rec["step"]] == pytest.approx(float(np.mean(expected)), abs=1e-9)
        logged = [float(v) for v in re.findall(r"; drift ([\d.]+)", rec["caption"])]
        assert logged == pytest.approx(expected, abs=1e-3)
        moved.extend(expected)
    assert max(moved) > 0, "the top images never changed: the test shows nothing"
    # the run's last top images are the model's: recomputed from the pool
    with isolated(model):
        last = top_examples(model, pool, layer, [0, 1, 2, 3], k=4)
    assert [sorted(i for i, _ in tops[-1][c]) for c in range(4)] == [
        sorted(row) for row in last.indices.tolist()
    ]
    # resume: the indices, the pool mark and the filmstrip's thumbnails are in the checkpoint
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"][cb.state_key]
    again = DatasetExamples(layer, max_channels=4, k=4, pool=pool, projection=None, crops=False)
    again.load_state_dict(state)
    assert torch.equal(again._previous[layer][2], cb._previous[layer][2])
    assert again._pool_mark == cb._pool_mark and len(again._films[key].frames) == 4
    (strip,) = [r for r in recs if r["key"] == f"{key}/filmstrip"]
    assert strip["step"] == 8 and "columns: 4 of 4 calls" in strip["caption"]
    assert (tmp_path / "featurewatch_logs" / strip["animation"]).is_file()


def test_auto_keeps_a_small_pool_and_only_the_fingerprint_of_a_large_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import featurewatch.callbacks.dataset_examples as module

    def make() -> DatasetExamples:
        return DatasetExamples(
            "net.features.6",
            max_channels=1,
            k=2,
            pool_size=48,
            projection=None,
            every_n_epochs=None,
            every_n_train_steps=2,
        )

    small = make()
    trainer, _ = fit(tmp_path / "small", [small], epochs=1)
    assert torch.equal(small.state_dict()["probe"], small._pool.fixed)  # 48 KiB: kept

    monkeypatch.setattr(module, "MAX_CHECKPOINT_POOL_BYTES", 1024)  # as a 224 px pool would be
    large = make()
    trainer, _ = fit(tmp_path / "large", [large], epochs=1)
    trainer.save_checkpoint(tmp_path / "large.ckpt")
    saved = torch.load(tmp_path / "large.ckpt", weights_only=True)["callbacks"][large.state_key]
    assert "probe" not in saved
    assert saved["pool_fingerprint"] == [
        48.0,
        1.0,
        16.0,
        16.0,
        float(large._pool.fixed.double().sum()),
    ]

    # the same validation images after resuming: no warning, the drift goes on from the checkpoint
    resumed = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureWatchWarning)
        fit(tmp_path / "resumed", [resumed], epochs=2, ckpt=tmp_path / "large.ckpt")
    assert resumed._pool.fixed is not None and torch.equal(resumed._pool.fixed, large._pool.fixed)

    # other validation images (here: a different order) are said to differ
    other = make()
    with pytest.warns(FeatureWatchWarning, match="pool collected after resuming differs"):
        fit(tmp_path / "other", [other], epochs=2, ckpt=tmp_path / "large.ckpt", shuffle_val=True)


def test_checkpoint_pool_takes_auto_or_a_bool() -> None:
    with pytest.raises(ValueError, match="`checkpoint_pool` must be 'auto', True or False, got 1"):
        DatasetExamples("net.features.6", checkpoint_pool=1)  # type: ignore[arg-type]


def test_small_inputs_are_drawn_large_by_default() -> None:
    """16 px digits as 64 px tiles, each pixel a 4 x 4 block (issue 10: 32 px was a blur)."""
    model = LitClassifier(SmallCNN())
    pool = torch.randn(12, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    cb = DatasetExamples(
        "net.features.6", channels=[0], k=2, pool=pool, projection=None, crops=False
    )
    event = Event(step=0, epoch=0)
    with isolated(model):
        cb.check_input(model, pool)
        cb.visualize(None, model, event)  # type: ignore[arg-type]
    (logged,) = event.images
    # one row of 64 px tiles under its title strip and the header (32 px tiles: 79 px in all)
    assert logged.pixels.shape[0] >= 64 + 40, logged.pixels.shape


def test_the_examples_also_come_as_a_table_of_rows() -> None:
    """One row per example (for W&B's sortable table): the caption's indices and values."""
    model = LitClassifier(SmallCNN())
    pool = torch.randn(12, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    cb = DatasetExamples("net.features.6", channels=[2, 5], k=3, pool=pool, projection=None)
    event = Event(step=0, epoch=0)
    with isolated(model):
        cb.check_input(model, pool)
        cb.visualize(None, model, event)  # type: ignore[arg-type]
    (table,) = event.tables
    assert table.key == "featurewatch/examples/net.features.6/table"
    assert table.columns[:4] == ("channel", "rank", "pool index", "activation")
    expected = caption_values(event.images[0].caption)
    assert [(r[0], r[1]) for r in table.rows] == [(c, j) for c in (2, 5) for j in (1, 2, 3)]
    for c in (2, 5):
        got = [(r[2], r[3]) for r in table.rows if r[0] == c]
        assert [i for i, _ in got] == [i for i, _ in expected[c]]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in expected[c]], rtol=1e-2)
    assert all(r[4].startswith("rows ") for r in table.rows)  # the receptive field
    assert all(r[5].shape == (16, 16, 3) and r[5].dtype == np.uint8 for r in table.rows)
