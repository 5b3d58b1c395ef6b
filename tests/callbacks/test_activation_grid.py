"""ActivationGrid's default layers on a deep network, read back from the files sink."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from featurewatch import ActivationGrid
from tests._models import LitClassifier, SmallCNN, digits_loaders, digits_tensors
from tests.callbacks.conftest import make_trainer


class DeepWithSqueeze(nn.Module):
    """12 spatial 3x3 convs, each but the last followed by a squeeze-excitation gate whose 1x1 conv
    sees a pooled 1x1 map."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(1 if i == 0 else 4, 4, 3, padding=1) for i in range(12)]
        )
        self.gates = nn.ModuleList([nn.Conv2d(4, 4, 1) for _ in range(11)])
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x))
            if i < 11:
                x = x * torch.sigmoid(self.gates[i](x.mean((2, 3), keepdim=True)))
        return self.fc(x.mean((2, 3)))


def test_default_layers_are_evenly_spaced_spatial_convs(tmp_path: Path) -> None:
    train, val = digits_loaders(n=32)
    trainer = make_trainer(tmp_path, callbacks=[ActivationGrid(num_images=2)], max_epochs=1)
    trainer.fit(LitClassifier(DeepWithSqueeze()), train, val)
    lines = (tmp_path / "featurewatch_logs" / "events.jsonl").read_text().splitlines()
    keys = sorted(
        {r["key"] for r in map(json.loads, lines) if r["kind"] == "image"}
        - {"featurewatch/activations/probe"}
    )
    # 8 of the 12 spatial convs, first and last included; no 1x1 gate conv
    expected = [f"featurewatch/activations/net.convs.{i}" for i in (0, 2, 3, 5, 6, 8, 9, 11)]
    assert keys == sorted(expected)


#: A probe pixel value no digit has: the probe image that carries it makes NaNNet diverge.
MARK = 99.0


class NaNNet(SmallCNN):
    """SmallCNN whose second conv outputs NaN in a 2 x 2 patch of channel 0, for the images whose
    top-left pixel is :data:`MARK` only: training and the other probe images stay healthy, and
    everything downstream of ``net.features.4`` (BN, ReLU, pool, logits) is NaN for that image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        marked = (x[:, 0, 0, 0] == MARK)[:, None, None, None]
        h = self.features[:5](x)
        patch = torch.zeros_like(h, dtype=torch.bool)
        patch[:, 0, 1:3, 1:3] = True
        h = self.features[5:](torch.where(marked & patch, float("nan"), h))
        return self.fc(self.pool(h).flatten(1))


def nan_probe() -> torch.Tensor:
    """Two 16 x 16 digits; the second is marked, so NaNNet gives NaN for it."""
    probe = digits_tensors(2, size=16)[0].clone()
    probe[1, 0, 0, 0] = MARK
    return probe


def magenta(pixels: np.ndarray) -> np.ndarray:
    """Mask of the pixels painted NONFINITE_RGB."""
    return (pixels == np.array([255, 0, 255])).all(-1)


def test_nan_in_one_layer_is_magenta_there_and_the_healthy_layers_are_logged(
    tmp_path: Path,
) -> None:
    train, val = digits_loaders(n=32)
    layers = ["net.features.2", "net.features.6"]  # before and after the NaN
    cb = ActivationGrid(layers=layers, probe=nan_probe())
    trainer = make_trainer(tmp_path, callbacks=[cb], max_epochs=1)
    trainer.fit(LitClassifier(NaNNet()), train, val)
    root = tmp_path / "featurewatch_logs"
    recs = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]
    assert not [r for r in recs if r["kind"] == "text"], "no part of the call failed"
    assert cb.failures == 0
    images = {r["key"]: r for r in recs if r["kind"] == "image"}
    assert sorted(images) == sorted(
        [*(f"featurewatch/activations/{la}" for la in layers), "featurewatch/activations/probe"]
    )

    def pixels(layer: str) -> np.ndarray:
        with Image.open(root / images[f"featurewatch/activations/{layer}"]["path"]) as im:
            return np.asarray(im.convert("RGB"))

    healthy, sick = pixels("net.features.2"), pixels("net.features.6")
    assert not magenta(healthy).any()
    assert "non-finite" not in images["featurewatch/activations/net.features.2"]["caption"]
    # the two probe images' grids side by side: the healthy one has no magenta, the NaN one has
    half = sick.shape[1] // 2
    assert not magenta(sick[:, :half]).any()
    assert magenta(sick[:, half:]).sum() > 0
    # only the NaN cells: the image's other values keep their finite scale (4 of its 1024 values)
    assert magenta(sick[:, half:]).mean() < 0.02, magenta(sick[:, half:]).mean()
    # 4 NaN values in channel 0 of 16 channels of 8 x 8, for probe image #1 only
    assert images["featurewatch/activations/net.features.6"]["caption"].endswith(
        "; non-finite values (NaN/Inf, shown magenta): probe image #1 4 of 1024"
    )


class Wide(nn.Module):
    """8 convs of 16 channels that keep a 32 x 32 map: 8 large grids per call."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            *[
                nn.Sequential(nn.Conv2d(1 if i == 0 else 16, 16, 3, padding=1), nn.ReLU())
                for i in range(8)
            ]
        )
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x).mean((2, 3)))


def test_the_layers_of_one_call_share_its_pixel_bound(tmp_path: Path) -> None:
    def sizes(root: Path, max_pixels: int | None) -> dict[str, tuple[int, str]]:
        train, val = digits_loaders(n=32, size=32)
        cb = ActivationGrid(num_images=2, max_pixels=max_pixels)
        make_trainer(root, [cb], max_epochs=1).fit(LitClassifier(Wide()), train, val)
        recs = [
            json.loads(r)
            for r in (root / "featurewatch_logs" / "events.jsonl").read_text().splitlines()
        ]
        out = {}
        for r in recs:
            if r["kind"] == "image" and not r["key"].endswith("/probe"):
                w, h = Image.open(root / "featurewatch_logs" / r["path"]).size
                out[r["key"]] = (w * h, r["caption"])
        return out

    free = sizes(tmp_path / "free", None)
    shared = sizes(tmp_path / "shared", 200_000)
    assert sorted(free) == sorted(shared) and len(shared) == 8
    # unbounded, each grid alone is about 2 x 16 x 32 x 32 = 33k pixels of maps ...
    assert all(px > 33_000 for px, _ in free.values())
    assert not any("averaged down" in caption for _, caption in free.values())
    assert sum(px for px, _ in free.values()) > 2 * 200_000
    # ... shared, the 8 layers get 25k each: maps averaged down, said in the caption; the
    # title strips come on top
    assert sum(px for px, _ in shared.values()) <= 2 * 200_000
    assert all("averaged down" in caption for _, caption in shared.values())
