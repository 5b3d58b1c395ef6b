"""Shared pieces for callback tests."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from torch import nn

from featurewatch import (
    ActivationGrid,
    AttributionMaps,
    ChannelVisualization,
    ClassModelVisualization,
    DatasetExamples,
    DeadNeuronMonitor,
    DeepDream,
    FeatureWatchCallback,
    FilterWeights,
)


def make_trainer(root, callbacks, **kwargs: Any) -> pl.Trainer:
    """A small CPU Trainer with no progress bar; files go under ``root``."""
    options: dict[str, Any] = {
        "default_root_dir": root,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "max_epochs": 1,
        "deterministic": True,
    }
    options.update(kwargs)
    return pl.Trainer(callbacks=list(callbacks), **options)  # Lightning appends to the list it gets


def all_callbacks(
    every_n_train_steps: int | None = None, at_start: bool = False
) -> list[FeatureWatchCallback]:
    """One instance of every featurewatch callback, configured for ``LitClassifier(SmallCNN())``."""
    schedule: dict[str, Any] = (
        {"every_n_epochs": None, "every_n_train_steps": every_n_train_steps}
        if every_n_train_steps
        else {}
    )
    schedule["at_start"] = at_start
    return [
        FilterWeights(**schedule),
        ActivationGrid(layers=["net.features.2", "net.features.6"], num_images=2, **schedule),
        DeadNeuronMonitor(**{k: v for k, v in schedule.items() if k != "at_start"}),
        ChannelVisualization(["net.features.2"], max_channels=4, steps=4, **schedule),
        ClassModelVisualization(classes=[0, 1], steps=4, **schedule),
        DeepDream("net.features.6", num_images=2, octaves=2, steps=2, **schedule),
        AttributionMaps(
            methods=("saliency", "smoothgrad", "occlusion", "gradcam", "cam"),
            num_images=2,
            smooth_samples=2,
            **schedule,
        ),
        DatasetExamples(["net.features.6"], max_channels=2, k=2, pool_size=32, **schedule),
    ]


def hooks_left(model: nn.Module) -> list[str]:
    """Names of modules that still carry any hook."""
    return [
        name
        for name, m in model.named_modules()
        if m._forward_hooks
        or m._forward_pre_hooks
        or m._backward_hooks
        or getattr(m, "_backward_pre_hooks", None)
    ]
