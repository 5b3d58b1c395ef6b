"""ActivationGrid's default layers on a deep network, read back from the files sink."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from featurewatch import ActivationGrid
from tests._models import LitClassifier, digits_loaders
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
