"""A small CNN trained on scikit-learn's digits inside the test run (about two seconds on one core).

Attribution methods are easy to get right on random weights, whose maps are smooth and mostly of one
sign; a trained network has maps with strong positive and negative regions side by side, where the
order of operations (ReLU before or after upsampling) shows.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from tests._models import digits_tensors

SIZE = 16


class DigitsNet(nn.Module):
    """(conv-ReLU-max-pool) x 2, conv-ReLU, global average pool, linear.

    The ReLUs are not in place (pytorch-grad-cam's hooks need that); on 16 x 16 inputs the feature
    maps are 16 x 16 (``features.0``, ``features.1``), 8 x 8 (``features.3``, ``features.4``) and
    4 x 4 (``features.6``, ``features.7``, the map pooled into ``fc``).
    """

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


@functools.cache
def _trained_state() -> tuple[dict[str, torch.Tensor], float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny: as fast on one thread, and immune to a busy neighbour
    try:
        gen = torch.Generator().manual_seed(0)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = DigitsNet()
        x, y = digits_tensors(size=SIZE)
        train_x, train_y, val_x, val_y = x[:1400], y[:1400], x[1400:], y[1400:]
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(10):
            order = torch.randperm(len(train_x), generator=gen)
            for lo in range(0, len(order), 64):
                idx = order[lo : lo + 64]
                loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(val_x).argmax(1) == val_y).float().mean())
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return state, accuracy
    finally:
        torch.set_num_threads(threads)


def trained_digits_net() -> tuple[DigitsNet, float]:
    """A fresh copy of the trained network (eval mode) and its validation accuracy."""
    state, accuracy = _trained_state()
    model = DigitsNet()
    model.load_state_dict(state)
    return model.eval(), accuracy


def validation_digits(n: int = 8) -> torch.Tensor:
    """``n`` normalized digits the network was not trained on."""
    x, _ = digits_tensors(size=SIZE)
    return x[1400 : 1400 + n].clone()
