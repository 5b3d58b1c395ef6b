"""Train with DeadNeuronMonitor, single-process or 2-process gloo DDP, and dump what it reports.

Used by ``tests/callbacks/test_dead_neurons_ddp.py``::

    python tests/_dead_ddp_run.py OUT_DIR ddp      # Lightning re-runs this script for rank 1
    python tests/_dead_ddp_run.py OUT_DIR single
    python tests/_dead_ddp_run.py OUT_DIR strict   # 2 processes; a hook problem on rank 1 only

Each process writes ``OUT_DIR/<mode>_rank<r>.json``. The data are identical in both modes: 128
digits; one process takes batches of 32 in order, each DDP rank batches of 16 through Lightning's
DistributedSampler (which decides which samples a step sees), and 128 % (2 * 16) == 0 means no
padding, so each epoch (one window) sees the same 128 samples in both runs. The convolutions are
frozen (only the classifier trains), so the activations each sample produces are the same in both
runs and the statistics can be compared exactly.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featurewatch.callbacks.dead_neurons import DeadNeuronMonitor
from tests._models import LitClassifier, digits_tensors


class ReusedNet(nn.Module):
    """One ReLU module called twice, then a functional ReLU fed by ``conv3``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 12, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x) + x)
        x = F.relu(self.conv3(x))
        return self.fc(x.mean((2, 3)))


def build() -> LitClassifier:
    torch.manual_seed(0)
    net = ReusedNet()
    with torch.no_grad():
        for conv in (net.conv1, net.conv2, net.conv3):
            conv.bias.fill_(0.2)  # a healthy baseline, so only the planted channels are dead
        net.conv1.bias[3] = -1e4
        net.conv3.bias[[1, 5]] = -1e4
    for module in (net.conv1, net.conv2, net.conv3):
        module.requires_grad_(False)
    return LitClassifier(net, lr=0.05)


class OneRankBreaks(ReusedNet):
    """Rank 1 feeds ``tap`` a different channel count from its second forward on: a hook problem
    that only one process sees."""

    def __init__(self) -> None:
        super().__init__()
        self.tap = nn.Identity()
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.forwards += 1
        self.tap(x if rank == 0 or self.forwards < 2 else x[:, :0])
        return super().forward(x)


def run_strict(out_dir: str) -> None:
    """``strict=True`` under DDP: a problem on one rank must make *every* rank raise (together),
    not leave rank 0 waiting in the next collective."""
    torch.set_num_threads(1)
    x, y = digits_tensors(128, size=16)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[DeadNeuronMonitor(["net.tap"], heatmap=False, strict=True)],
    )
    torch.manual_seed(0)
    try:
        trainer.fit(LitClassifier(OneRankBreaks(), lr=0.05), loader)
    except ValueError as err:
        (Path(out_dir) / f"strict_rank{trainer.global_rank}.txt").write_text(
            f"step {trainer.global_step}: {err}"
        )
        raise


def run(out_dir: str, mode: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    x, y = digits_tensors(128, size=16)
    devices = 2 if mode == "ddp" else 1
    loader = DataLoader(
        TensorDataset(x, y), batch_size=32 // devices, shuffle=False, drop_last=False
    )
    # rates_every_n_steps=1: every step in the window is measured, so the order in which the
    # samples reach the ranks (DistributedSampler) cannot matter, only their union
    monitor = DeadNeuronMonitor(
        ["net.relu", "net.conv3"], heatmap=False, dead_alert_fraction=0.5, rates_every_n_steps=1
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if mode == "ddp" else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[monitor],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(build(), loader)
    result = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "dead_channels": monitor.dead_channels,
        # The last window at full precision: exact counts of values above the threshold.
        "on_count": {
            k: (s.on_rate * s.positions).round().long().tolist() for k, s in monitor.latest.items()
        },
        "history": [
            {
                "step": e["step"],
                "layers": {
                    key: {
                        "on_rate": v["on_rate"].tolist(),
                        "max_abs": v["max_abs"].tolist(),
                        "mean_abs": v["mean_abs"].tolist(),
                        "silent_steps": v["silent_steps"].tolist(),
                        "positions": v["positions"],
                        "updates": v["updates"],
                    }
                    for key, v in e["layers"].items()
                },
            }
            for e in monitor.history
        ],
    }
    path = Path(out_dir) / f"{mode}_rank{trainer.global_rank}.json"
    path.write_text(json.dumps(result))
    return result


if __name__ == "__main__":
    if sys.argv[2] == "strict":
        run_strict(sys.argv[1])
    else:
        run(sys.argv[1], sys.argv[2])
