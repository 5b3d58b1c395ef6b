"""Trained networks kept aside: no default of featurewatch was chosen on them.

The class-model score was chosen on ``tests/core/_trained.py``'s DigitsNet; these four digits
networks (a BatchNorm CNN, a tanh LeNet with average pooling, an MLP and a strided GELU CNN) and a
faces-vs-non-faces CNN on other data (scikit-image's ``lfw_subset``, 25 x 25 grey patches) only
check that the choice holds elsewhere. Each trains in about a second on one thread.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from tests._models import SmallCNN, digits_tensors


class LeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),
            nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.Tanh(),
            nn.AvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class StridedGELU(nn.Module):
    def __init__(self, width: int = 24) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.GELU(),
        )  # fmt: skip
        self.fc = nn.Linear(2 * w * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class FacesCNN(nn.Module):
    """Two classes: 0 = not a face, 1 = a face."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(12, 24, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.fc = nn.Linear(24, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def faces_tensors(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's lfw_subset: 100 faces then 100 non-faces, 25 x 25 in [0, 1]; normalized as
    the digits are ((p - 0.3) / 0.4), shuffled with ``seed``."""
    from skimage.data import lfw_subset

    x = torch.tensor(lfw_subset(), dtype=torch.float32)[:, None]
    y = torch.cat([torch.ones(100), torch.zeros(100)]).long()
    order = torch.randperm(200, generator=torch.Generator().manual_seed(seed))
    return (x[order] - 0.3) / 0.4, y[order]


MAKERS = {
    "SmallCNN-BN": lambda: SmallCNN(width=16),
    "LeNet-tanh": LeNet,
    "MLP": MLP,
    "StridedGELU": StridedGELU,
    "FacesCNN": FacesCNN,
}


@functools.cache
def _trained(name: str, seed: int) -> tuple[dict[str, torch.Tensor], float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = MAKERS[name]()
        gen = torch.Generator().manual_seed(seed)
        if name == "FacesCNN":
            x, y = faces_tensors(seed)
            tx, ty, vx, vy = x[:160], y[:160], x[160:], y[160:]
        else:
            x, y = digits_tensors(size=16)
            tx, ty, vx, vy = x[:1400], y[:1400], x[1400:], y[1400:]
        opt = torch.optim.Adam(net.parameters(), lr=3e-3 if name == "MLP" else 1e-2)
        net.train()
        for _ in range(10 if name != "FacesCNN" else 40):
            order = torch.randperm(len(tx), generator=gen)
            for lo in range(0, len(order), 32):
                idx = order[lo : lo + 32]
                loss = F.cross_entropy(net(tx[idx]), ty[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            accuracy = float((net(vx).argmax(1) == vy).float().mean())
        return {k: v.detach().clone() for k, v in net.state_dict().items()}, accuracy
    finally:
        torch.set_num_threads(threads)


def held_out_net(name: str, seed: int = 1) -> tuple[nn.Module, float]:
    """A fresh copy of held-out network ``name`` (eval mode) and its validation accuracy."""
    state, accuracy = _trained(name, seed)
    net = MAKERS[name]()
    net.load_state_dict(state)
    return net.eval(), accuracy
