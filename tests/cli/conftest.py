"""One short real fit logged to TensorBoard and to the files sink at once, for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from featurewatch import ActivationGrid, DeadNeuronMonitor, FeatureWatchCallback, FilterWeights
from featurewatch.callbacks.feature_drift import FeatureDrift
from featurewatch.loggers import Event
from tests._models import LitClassifier, SmallCNN, digits_loaders

#: every call of the fit below (at_start, then 3 epoch ends of 4 steps)
STEPS = [0, 4, 8, 12]


class Complaining(FeatureWatchCallback):
    """Fails at every call: its error text is what the report must show collapsed."""

    default_name = "complaining"

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        raise RuntimeError(f"no picture at step {trainer.global_step}")


@dataclass(frozen=True)
class FitRun:
    root: Path
    tensorboard_dir: Path  # the TensorBoardLogger's log_dir
    csv_dir: Path  # the CSVLogger's log_dir (the files sink is its featurewatch/ folder)


@pytest.fixture(scope="session")
def fit_run(tmp_path_factory) -> FitRun:
    root = tmp_path_factory.mktemp("cli_run")
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders(n=128, batch_size=32)
    tb, csv = TensorBoardLogger(root, name="tb"), CSVLogger(root, name="csv")
    trainer = pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        max_epochs=3,
        logger=[tb, csv],
        callbacks=[
            FilterWeights(at_start=True),
            ActivationGrid(num_images=3, at_start=True),
            FeatureDrift(num_images=16, at_start=True),
            DeadNeuronMonitor(),
            Complaining(at_start=True),
        ],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=2,
    )
    with pytest.warns(UserWarning, match="no picture at step"):
        trainer.fit(LitClassifier(SmallCNN(), lr=0.2), train, val)
    return FitRun(root, Path(tb.log_dir), Path(csv.log_dir))


def featurewatch_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``featurewatch`` command (the [project.scripts] entry point)."""
    exe = Path(sys.executable).with_name("featurewatch")
    assert exe.exists(), f"the featurewatch entry point is not installed next to {sys.executable}"
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "COLUMNS": "100"},
        check=False,
    )
