"""Train a small CNN with every featurewatch callback attached, and watch it learn.

Default data: scikit-learn's 1,797 handwritten digits (real scans shipped inside the package, no
download), upsampled from 8x8 to 32x32. Your own data: ``--data /path/to/cifar-10-batches-py`` (the
CIFAR-10 python folder, already on disk) or ``--data /path/to/imagefolder`` (one sub-folder per
class).

    python examples/train_digits.py                 # TensorBoard logs under runs/
    python examples/train_digits.py --fast          # < 1 minute, for CI
    python examples/train_digits.py --logger wandb  # W&B (offline unless you are logged in)
    python examples/train_digits.py --budget 0      # every featurewatch call, no time budget

Featurewatch shares a ``TimeBudget(fraction=1.0)``: its own time stays within the training time
(plus at most one call); a call over the budget is deferred to the callback's next due call
(logged as ``featurewatch/<name>/deferred``; DeadNeuronMonitor's evaluations are never deferred).
This network trains in about 11 s, and every call of every callback, unbudgeted, takes about twice
that (``bench/overhead.py`` prints the figures): the budget keeps roughly half of the calls, enough
to watch every callback evolve over the 12 epochs. ``--budget 0.15`` (the share issue 12 asks
of a real run) leaves one or two calls per callback here: one ChannelVisualization call alone
costs more than 15% of so short a training; a larger network's slower steps buy more calls.
``--budget 0`` runs every call. The run prints featurewatch's share at the end.

Then: ``tensorboard --logdir runs --samples_per_plugin images=500`` and open the IMAGES tab
(TensorBoard shows only 10 steps per image tag without the flag).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

import featurewatch as fw

DIGIT_MEAN, DIGIT_STD = 0.2, 0.3


class DigitsNet(pl.LightningModule):
    """conv-BN-ReLU blocks on ``size`` x ``size`` images, global average pool, linear classifier.

    Layer names (for featurewatch): ``features.0`` first conv, ``features.2`` its ReLU, ...
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        class_names: list[str] | None = None,
        lr: float = 5e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.class_names = class_names or [str(i) for i in range(num_classes)]

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *block(in_channels, 16),  # 0 conv, 1 bn, 2 relu
            *block(16, 32),  # 3, 4, 5
            nn.MaxPool2d(2),  # 6
            *block(32, 64),  # 7, 8, 9
            nn.MaxPool2d(2),  # 10
            *block(64, 64),  # 11, 12, 13
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y))
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)


def load_data(
    spec: str, size: int, seed: int
) -> tuple[Dataset, Dataset, list[str], int, tuple[list[float], list[float]]]:
    """Return (train, val, class names, image channels, (mean, std)) for ``--data``."""
    if spec == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        x = (x - DIGIT_MEAN) / DIGIT_STD
        y = torch.tensor(d.target)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        x, y = x[order], y[order]
        n_val = 297
        return (
            TensorDataset(x[n_val:], y[n_val:]),
            TensorDataset(x[:n_val], y[:n_val]),
            [str(i) for i in range(10)],
            1,
            ([DIGIT_MEAN], [DIGIT_STD]),
        )
    import torchvision.transforms as T
    from torchvision.datasets import CIFAR10, ImageFolder

    path = Path(spec)
    if not path.exists():
        raise SystemExit(
            f"--data {spec!r}: no such folder (use 'digits', a CIFAR-10 python folder or an "
            "ImageFolder)"
        )
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    tf = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    if (path / "data_batch_1").exists() or (path / "cifar-10-batches-py").exists():
        root = path.parent if (path / "data_batch_1").exists() else path
        train = CIFAR10(str(root), train=True, transform=tf, download=False)
        val = CIFAR10(str(root), train=False, transform=tf, download=False)
        return train, val, list(train.classes), 3, (mean, std)
    full = ImageFolder(str(path), transform=tf)
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, len(full) // 10)
    return (
        Subset(full, order[n_val:]),
        Subset(full, order[:n_val]),
        list(full.classes),
        3,
        (mean, std),
    )


def make_callbacks(
    normalize: tuple[list[float], list[float]], fast: bool, budget: float = 1.0
) -> list[pl.Callback]:
    """Every featurewatch callback, at defaults that keep a 2-core CPU run pleasant, sharing a
    ``TimeBudget(budget)`` (none with ``budget=0``)."""
    steps = 32 if fast else 64
    shared: list[pl.Callback] = [fw.TimeBudget(fraction=budget)] if budget else []
    return shared + [
        # images optimized to excite each channel: strokes and edges at features.2, parts deeper
        fw.ChannelVisualization(
            ["features.2", "features.9"],
            max_channels=16,
            steps=steps,
            normalize=normalize,
            at_start=True,
        ),
        # inputs that maximize each class logit, captioned with the class names of the model
        fw.ClassModelVisualization(steps=steps, normalize=normalize, at_start=True),
        fw.DeepDream("features.9", num_images=4, normalize=normalize, at_start=True),
        fw.FilterWeights(at_start=True),
        fw.ActivationGrid(
            layers=["features.2", "features.9", "features.13"],
            num_images=4,
            max_channels=32,
            at_start=True,
        ),
        # where the network looks on 8 fixed validation digits, for its current top class
        fw.AttributionMaps(
            methods=("saliency", "occlusion", "gradcam", "cam"), num_images=8, at_start=True
        ),
        # the 6 validation digits (of a fixed pool of 256) that excite each of 8 channels most, with
        # receptive-field crops and guided-backprop projections (Zeiler & Fergus)
        fw.DatasetExamples(["features.5", "features.13"], max_channels=8, k=6, at_start=True),
        # dead/dying filters of every ReLU (features.2, .5, .9, .13); warns once per layer
        fw.DeadNeuronMonitor(dead_alert_fraction=0.1, on_dead="warn"),
        # how much each ReLU's representation of 64 fixed validation digits changed (linear CKA
        # with the previous epoch and with initialization): do the layers settle bottom-up?
        fw.FeatureDrift(
            ["features.2", "features.5", "features.9", "features.13"], num_images=64, at_start=True
        ),
    ]


def make_logger(kind: str, out: Path) -> Any:
    if kind == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        return TensorBoardLogger(str(out), name="digits")
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(str(out), name="digits")
    if kind == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
            os.environ["WANDB_MODE"] = "offline"
        return WandbLogger(project="featurewatch-digits", save_dir=str(out))
    if kind == "mlflow":
        from pytorch_lightning.loggers import MLFlowLogger

        out.mkdir(parents=True, exist_ok=True)
        return MLFlowLogger(
            experiment_name="featurewatch-digits",
            tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}",
            artifact_location=str((out / "mlflow-artifacts").resolve()),
        )
    if kind == "none":
        return False
    raise SystemExit(f"--logger {kind!r}: choose tensorboard, wandb, mlflow, csv or none")


def how_to_open(kind: str, out: Path, trainer: pl.Trainer) -> str:
    if kind == "tensorboard":
        # without --samples_per_plugin, TensorBoard keeps 10 steps per image tag
        return (
            f"tensorboard --logdir {out} --samples_per_plugin images=500"
            "    # then http://localhost:6006, IMAGES tab"
        )
    if kind == "wandb":
        return f"wandb sync {out}/wandb/offline-run-*   # or open the run page if you are online"
    if kind == "mlflow":
        return f"mlflow ui --backend-store-uri sqlite:///{(out / 'mlflow.db').resolve()}"
    if trainer.logger is None:  # no logger: the files sink writes under the root directory
        root = Path(trainer.default_root_dir) / "featurewatch_logs"
    else:
        root = Path(trainer.log_dir or trainer.default_root_dir) / "featurewatch"
    return f"open {root / 'index.html'} in a browser"


def share_of_training(trainer: pl.Trainer, wall: float) -> dict[str, Any]:
    """Featurewatch's share of the training time after ``fit`` (``wall`` seconds long).

    ``share`` = featurewatch's seconds (the calls' own timing) / the rest of the fit (an upper
    bound of the training time, the same with or without a budget); with a ``TimeBudget``, also
    its own figures (training = the steps and the validation loops).
    """
    ours = [cb for cb in trainer.callbacks if isinstance(cb, fw.FeatureWatchCallback)]
    featurewatch = sum(cb.total_seconds for cb in ours)
    summary: dict[str, Any] = {
        "wall_seconds": wall,
        "featurewatch_seconds": featurewatch,
        "rest_seconds": wall - featurewatch,
        "share": featurewatch / max(wall - featurewatch, 1e-9),
        "calls": {cb.name: cb.calls for cb in ours},
    }
    budget = next((cb for cb in trainer.callbacks if isinstance(cb, fw.TimeBudget)), None)
    if budget is not None:
        summary.update(
            budget=budget.fraction,
            training_seconds=budget.training_seconds,
            budget_share=budget.fraction_used,
            deferred=sum(budget.deferred.values()),
            deferred_per_callback=budget.deferred,
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data",
        default="digits",
        help="'digits' (embedded), a CIFAR-10 python folder, or an ImageFolder",
    )
    p.add_argument(
        "--logger", default="tensorboard", help="tensorboard | wandb | mlflow | csv | none"
    )
    p.add_argument("--out", default="runs", type=Path, help="where logs go (default: runs/)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--size", type=int, default=32, help="training image size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fast", action="store_true", help="a short run (under a minute) for CI and a first look"
    )
    p.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="featurewatch's share of the training time (TimeBudget fraction, default 1.0; "
        "0: no budget)",
    )
    p.add_argument("--summary", type=Path, help="also write the timing figures to this JSON file")
    args = p.parse_args(argv)

    pl.seed_everything(args.seed, verbose=False)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    train, val, classes, channels, normalize = load_data(args.data, args.size, args.seed)
    epochs = args.epochs
    if args.fast:
        epochs = 3
        train = Subset(train, range(min(len(train), 1500)))
        val = Subset(val, range(min(len(val), 300)))
    model = DigitsNet(in_channels=channels, num_classes=len(classes), class_names=classes)
    logger = make_logger(args.logger, args.out)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=logger,
        default_root_dir=str(args.out),
        callbacks=make_callbacks(normalize, args.fast, args.budget),
        log_every_n_steps=5,
        enable_checkpointing=False,
    )
    start = time.perf_counter()
    trainer.fit(
        model,
        DataLoader(train, batch_size=args.batch_size, shuffle=True),
        DataLoader(val, batch_size=256),
    )
    wall = time.perf_counter() - start
    ours = [cb for cb in trainer.callbacks if isinstance(cb, fw.FeatureWatchCallback)]
    spent = {type(cb).__name__: cb.total_seconds for cb in ours}
    print(f"\ntrained {epochs} epochs in {wall:.1f} s; featurewatch time per callback:")
    for name, seconds in spent.items():
        print(f"  {name:28s} {seconds:6.2f} s")
    summary = share_of_training(trainer, wall)
    print(
        f"featurewatch: {summary['featurewatch_seconds']:.1f} s, "
        f"{summary['share']:.1%} of the training time (the fit's other "
        f"{summary['rest_seconds']:.1f} s)"
    )
    if "budget" in summary:
        print(
            f"TimeBudget(fraction={summary['budget']:g}): {summary['budget_share']:.1%} of the "
            f"{summary['training_seconds']:.1f} s of training steps and validation; "
            f"{summary['deferred']} calls deferred"
        )
    if args.summary is not None:
        args.summary.write_text(json.dumps(summary, indent=1))
    print(f"val/acc = {float(trainer.callback_metrics.get('val/acc', float('nan'))):.3f}")
    print(
        "\nTo look at what the network learned:\n  " + how_to_open(args.logger, args.out, trainer)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
