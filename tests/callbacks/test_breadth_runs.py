"""Beyond 2-D CNNs (issue 14): a 1-D net over signals and a small vision transformer, each trained
in a real Lightning run on embedded real data (scikit-learn's handwritten digits) with every
featurewatch callback that applies to it. Every one of them logs (read back from the files sink:
``events.jsonl`` and the PNGs); the ones that do not apply refuse before any training step with a
``ValueError`` that says why.

The 1-D data: each 8 x 8 digit read as a signal of 64 samples (its pixels in reading order), one
channel - real, labelled, and with the structure of a short waveform (strokes are bursts that
repeat every 8 samples).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import VisionTransformer

import featurewatch as fw
from tests._files import records
from tests._models import LitClassifier, digits_loaders
from tests.callbacks.conftest import make_trainer


# ---------------------------------------------------------------------------------- the models
def digit_signals(n: int = 256, batch_size: int = 32) -> tuple[DataLoader, DataLoader]:
    """The digits as ``(1, 64)`` signals (standardized), ``n`` to train and 64 to validate."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[: n + 64]
    x, y = (x[idx] - 0.3) / 0.4, y[idx]
    train = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(x[n:], y[n:]), batch_size=batch_size)
    return train, val


#: 6 digits as (1, 64) signals, standardized like digit_signals' (a given probe tensor)
PROBE_SIGNALS = torch.stack([next(iter(digit_signals()[1]))[0][i] for i in range(6)])


class SignalNet(nn.Module):
    """Conv1d-BN-ReLU x2, max pool between, global average pool, linear: an audio-like net."""

    def __init__(self, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(2),
            nn.Conv1d(width, 2 * width, 5, padding=2),
            nn.BatchNorm1d(2 * width),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def small_vit() -> nn.Module:
    """torchvision's VisionTransformer at 16 px, patches of 4 (a 4 x 4 grid and a class token),
    with a 1-channel patch embedding for the grey digits."""
    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=16,
        patch_size=4,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=10,
    )
    vit.conv_proj = nn.Conv2d(1, 32, kernel_size=4, stride=4)
    return vit


BLOCK = "net.encoder.layers.encoder_layer_{}"  # (N, 17, 32) tokens
GELU = BLOCK + ".mlp.1"  # (N, 17, 64) MLP units


# ---------------------------------------------------------------------------------- helpers
def fit(root: Path, model: nn.Module, loaders: tuple[DataLoader, DataLoader], callbacks: list):
    torch.manual_seed(0)
    trainer = make_trainer(root, callbacks=callbacks, max_epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(LitClassifier(model), *loaders)
    return trainer


def png(root: Path, record: dict[str, Any]) -> np.ndarray:
    with Image.open(root / "featurewatch_logs" / record["path"]) as im:
        return np.asarray(im.convert("RGB"))


def logged_prefixes(recs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """``{callback prefix: kinds logged under it}`` for everything but timing."""
    out: dict[str, set[str]] = {}
    for r in recs:
        if r["key"].endswith("/seconds"):
            continue
        out.setdefault(r["key"].split("/")[1], set()).add(r["kind"])
    return out


def assert_refused_before_training(
    root: Path,
    model: nn.Module,
    loaders: tuple[DataLoader, DataLoader],
    cb: pl.Callback,
    who: str,
    why: str,
) -> str:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as refused:
        fit(root, model, loaders, [cb])
    message = str(refused.value)
    assert who in message, message
    assert why in message, message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "a step ran"
    return message


# ---------------------------------------------------------------------------------- 1-D net
def test_every_applicable_callback_logs_on_a_1d_signal_net(tmp_path: Path) -> None:
    callbacks = [
        fw.FilterWeights(),
        fw.ActivationGrid(layers=["net.features.2", "net.features.6"], num_images=3),
        fw.DeadNeuronMonitor(),
        fw.FeatureDrift(["net.features.2", "net.features.6"], num_images=8),
        # a given (N, C, L) probe: N signals of a 1-D net, not one image
        fw.FeatureDrift(["net.features.6"], probe=PROBE_SIGNALS, name="drift_given"),
        fw.AttributionMaps(methods=("saliency", "occlusion", "gradcam"), num_images=2),
        fw.DatasetExamples(["net.features.6"], max_channels=2, k=2, pool_size=32),
    ]
    trainer = fit(tmp_path, SignalNet(), digit_signals(), callbacks)
    assert trainer.global_step == 8
    assert all(cb.calls >= 1 and cb.failures == 0 for cb in callbacks)
    recs = records(tmp_path)
    assert not [r for r in recs if r["kind"] == "text"], "no part failed"
    assert logged_prefixes(recs) == {
        "filters": {"image", "histogram"},
        "activations": {"image"},
        "dead": {"scalar", "histogram", "image"},
        "drift": {"scalar"},
        "drift_given": {"scalar"},
        "attribution": {"image"},
        "examples": {"image"},
    }
    images = {r["key"]: r for r in recs if r["kind"] == "image"}
    for method in ("saliency", "occlusion", "gradcam"):
        assert png(tmp_path, images[f"featurewatch/attribution/{method}"]).std() > 10
    assert "featurewatch/examples/net.features.6" in images

    # FilterWeights: 8 curve plots of the first Conv1d, a near-square 3 x 3 layout
    curves = png(tmp_path, images["featurewatch/filters/net.features.0"])
    assert curves.shape[0] > 300 and curves.shape[1] > 400, curves.shape
    blue = (np.abs(curves.astype(int) - [31, 119, 180]).sum(-1) < 40).sum()  # the C0 lines
    assert blue > 500, blue

    # ActivationGrid: one channels x time heatmap per probe signal, and the probe itself
    for layer, channels in (("net.features.2", 8), ("net.features.6", 16)):
        record = images[f"featurewatch/activations/{layer}"]
        assert f"{channels} channels ({channels} shown) for 3 probe signals" in record["caption"]
        heat = png(tmp_path, record)
        assert heat.shape[1] > 2 * heat.shape[0]  # three panels side by side
        assert heat.std() > 20  # not a blank picture
    assert "featurewatch/activations/probe" in images
    assert images["featurewatch/activations/probe"]["caption"] == "probe signals"

    scalars = {r["key"] for r in recs if r["kind"] == "scalar"}
    assert "featurewatch/dead/net.features.2/dead_fraction" in scalars
    assert "featurewatch/drift/net.features.6/cka_first" in scalars


#: Callbacks that draw images or optimize an input: on a 1-D net they refuse, saying why.
SIGNAL_REFUSALS: dict[str, tuple[Callable[[], fw.FeatureWatchCallback], str]] = {
    "ChannelVisualization": (
        lambda: fw.ChannelVisualization(["net.features.2"], steps=2),
        "1-D signals (N, C, L)",
    ),
    "ClassModelVisualization": (
        lambda: fw.ClassModelVisualization(steps=2),
        "1-D signals (N, C, L)",
    ),
    "DeepDream": (
        lambda: fw.DeepDream("net.features.2", num_images=1, steps=1, octaves=1),
        "1-D signals (N, C, L)",
    ),
}


@pytest.mark.parametrize("name", sorted(SIGNAL_REFUSALS))
def test_callbacks_that_do_not_apply_to_a_1d_net_refuse_before_training(
    name: str, tmp_path: Path
) -> None:
    make, why = SIGNAL_REFUSALS[name]
    message = assert_refused_before_training(
        tmp_path, SignalNet(), digit_signals(n=32), make(), name, why
    )
    assert "works on image inputs (N, C, H, W)" in message


# ---------------------------------------------------------------------------------- ViT
def vit_callbacks() -> list[fw.FeatureWatchCallback]:
    return [
        fw.FilterWeights(),  # the patch embedding, a 4 x 4 stride-4 Conv2d
        fw.ActivationGrid(layers=["net.conv_proj", BLOCK.format(1)], num_images=2),
        fw.DeadNeuronMonitor(layers=[GELU.format(0), GELU.format(1)]),
        fw.FeatureDrift([BLOCK.format(0), BLOCK.format(1)], num_images=8),
        fw.AttributionMaps(
            methods=("saliency", "smoothgrad", "occlusion", "gradcam"),
            num_images=2,
            smooth_samples=2,
        ),
        # Grad-CAM at a token layer, laid on the 4 x 4 patch grid
        fw.AttributionMaps(
            methods=("gradcam",), num_images=2, layer=BLOCK.format(0), name="token_cam"
        ),
        fw.ClassModelVisualization(classes=[0, 1], steps=4),
        fw.ChannelVisualization(["net.conv_proj"], max_channels=4, steps=4),
        fw.DeepDream(BLOCK.format(1), num_images=2, octaves=1, steps=2),  # one size: ViT's own
        fw.DatasetExamples(["net.conv_proj"], max_channels=2, k=2, pool_size=32),
    ]


def test_every_applicable_callback_logs_on_a_vision_transformer(tmp_path: Path) -> None:
    callbacks = vit_callbacks()
    trainer = fit(tmp_path, small_vit(), digits_loaders(n=128), callbacks)
    assert trainer.global_step == 4
    assert all(cb.calls >= 1 for cb in callbacks)
    assert [type(cb).__name__ for cb in callbacks if cb.failures] == []
    recs = records(tmp_path)
    assert not [r for r in recs if r["kind"] == "text"], [r["value"][:300] for r in recs]
    prefixes = logged_prefixes(recs)
    assert set(prefixes) == {
        "filters",
        "activations",
        "dead",
        "drift",
        "attribution",
        "class_model",
        "channels",
        "deepdream",
        "examples",
        "token_cam",
    }
    images = {r["key"]: r for r in recs if r["kind"] == "image"}
    assert png(tmp_path, images["featurewatch/token_cam/gradcam"]).std() > 10
    for method in ("saliency", "smoothgrad", "occlusion", "gradcam"):
        assert f"featurewatch/attribution/{method}" in images
    # the token layer drawn on the 4 x 4 patch grid (class token dropped)
    tokens = images[f"featurewatch/activations/{BLOCK.format(1)}"]
    assert "17 tokens laid on the 4x4 patch grid" in tokens["caption"]
    assert "32 channels (32 shown) for 2 probe images" in tokens["caption"]
    assert png(tmp_path, tokens).std() > 10
    scalars = {r["key"] for r in recs if r["kind"] == "scalar"}
    assert f"featurewatch/dead/{GELU.format(1)}/dormant_fraction" in scalars
    assert f"featurewatch/drift/{BLOCK.format(1)}/cka_first" in scalars
    assert png(tmp_path, images["featurewatch/filters/net.conv_proj"]).shape[0] >= 32


#: On a ViT these refuse, each for its reason (to be lifted where the core already can).
VIT_REFUSALS: dict[str, tuple[Callable[[], fw.FeatureWatchCallback], str, str]] = {
    "cam": (
        lambda: fw.AttributionMaps(methods=("cam",), num_images=2),
        "AttributionMaps",
        "globally average-pooled feature map",
    ),
    "neuron_of_gelu": (
        lambda: fw.ChannelVisualization([GELU.format(1)], unit="neuron", steps=2),
        "ChannelVisualization",
        "outputs shape (1, 17, 64)",
    ),
    "examples_of_tokens": (
        lambda: fw.DatasetExamples([BLOCK.format(1)], k=2, pool_size=16),
        "DatasetExamples",
        "outputs shape (1, 17, 32)",
    ),
}


@pytest.mark.parametrize("case", sorted(VIT_REFUSALS))
def test_callbacks_that_do_not_apply_to_a_vit_refuse_before_training(
    case: str, tmp_path: Path
) -> None:
    make, who, why = VIT_REFUSALS[case]
    assert_refused_before_training(tmp_path, small_vit(), digits_loaders(n=32), make(), who, why)
