"""Tiny models and data shared by the tests: real behaviour, seconds on 2 CPU cores."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def digits_tensors(
    n: int | None = None, size: int = 16, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 handwritten digits (real data shipped in the package), upsampled."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    if n is not None:
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
        x, y = x[idx], y[idx]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - 0.3) / 0.4, y


def digits_loaders(
    n: int = 256, size: int = 16, batch_size: int = 32
) -> tuple[DataLoader, DataLoader]:
    x, y = digits_tensors(n + 64, size)
    train = DataLoader(
        TensorDataset(x[:n], y[:n]), batch_size=batch_size, shuffle=True, num_workers=0
    )
    val = DataLoader(TensorDataset(x[n:], y[n:]), batch_size=batch_size, num_workers=0)
    return train, val


class SmallCNN(nn.Module):
    """conv-BN-ReLU x2, global pool, linear: a Sequential with in-place ReLUs."""

    def __init__(self, in_channels: int = 1, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class TinyResBlock(nn.Module):
    """torchvision BasicBlock in miniature: one in-place ReLU module called twice in forward."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, in_channels: int = 3, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = TinyResBlock(width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        return self.fc(self.avgpool(x).flatten(1))


class LitClassifier(pl.LightningModule):
    """Wraps any classifier ``net``; the wrapped net is reachable as ``net.<name>`` in layer
    names."""

    def __init__(self, net: nn.Module | None = None, lr: float = 0.05) -> None:
        super().__init__()
        self.net = net if net is not None else SmallCNN()
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def rgb_digits_loaders(
    n: int = 128, size: int = 16, batch_size: int = 32
) -> tuple[DataLoader, DataLoader]:
    """Digits repeated to 3 channels with a per-channel tint, for RGB models."""
    x, y = digits_tensors(n + 32, size)
    tint = torch.tensor([1.0, 0.6, 0.3]).reshape(1, 3, 1, 1)
    x = x.repeat(1, 3, 1, 1) * tint
    train = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(x[n:], y[n:]), batch_size=batch_size)
    return train, val


def seed_everything_quietly(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    import random

    random.seed(seed)


class DigitsDataModule(pl.LightningDataModule):
    """Digits as a DataModule (for LightningCLI)."""

    def __init__(self, n: int = 128, size: int = 16, batch_size: int = 32) -> None:
        super().__init__()
        self.n, self.size, self.batch_size = n, size, batch_size

    def setup(self, stage: str) -> None:
        self._train, self._val = digits_loaders(self.n, self.size, self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._train

    def val_dataloader(self) -> DataLoader:
        return self._val
