"""Models whose forward updates their own state: featurewatch's forwards must not count.

Eval mode does not freeze every buffer. The fake-quant observers of a ``prepare_qat`` model update
their statistics on every forward, and a user buffer may count calls or cache the last input. A run
with featurewatch callbacks must end with exactly the weights and buffers of the run without them.
"""

from __future__ import annotations

import warnings

import pytorch_lightning as pl
import torch
from torch import nn

from featurewatch import ActivationGrid, AttributionMaps, ChannelVisualization
from tests._hygiene import same_tensor
from tests._models import LitClassifier, SmallCNN, digits_loaders
from tests.callbacks.conftest import hooks_left, make_trainer

EPOCHS = 2


class CountingCNN(SmallCNN):
    """SmallCNN with a buffer counting its forward calls (in place, as user code does it)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("forwards", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return super().forward(x)


class CountingSteps(LitClassifier):
    """Counts the training and validation forwards Lightning makes (a plain int: not a buffer)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net)
        self.steps_seen = 0

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.steps_seen += 1
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.steps_seen += 1
        return super().validation_step(batch, batch_idx)


def qat_cnn() -> nn.Module:
    """SmallCNN prepared for quantization-aware training: fake-quant observers on every layer."""
    from torch.ao.quantization import get_default_qat_qconfig, prepare_qat

    net = SmallCNN()
    net.qconfig = get_default_qat_qconfig("x86")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation, reduce_range note
        return prepare_qat(net.train())


def callbacks() -> list[pl.Callback]:
    schedule = {"every_n_epochs": None, "every_n_train_steps": 2, "at_start": True}
    return [
        ActivationGrid(layers=["net.features.2", "net.features.6"], num_images=2, **schedule),
        ChannelVisualization(["net.features.6"], max_channels=2, steps=2, **schedule),
        AttributionMaps(methods=("saliency", "gradcam"), num_images=2, **schedule),
    ]


def fit(tmp_path, make_net, with_callbacks: bool) -> tuple[CountingSteps, list[pl.Callback]]:
    pl.seed_everything(0, verbose=False)
    model = CountingSteps(make_net())
    train, val = digits_loaders(n=128, batch_size=32)
    cbs = callbacks() if with_callbacks else []
    trainer = make_trainer(tmp_path, callbacks=cbs, max_epochs=EPOCHS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's few-workers hints
        trainer.fit(model, train, val)
    return model, cbs


def assert_same_run(base: nn.Module, model: nn.Module) -> None:
    base_state, state = base.state_dict(), model.state_dict()
    assert base_state.keys() == state.keys()
    differ = [k for k, v in base_state.items() if not same_tensor(v, state[k])]
    assert not differ, f"weights or buffers differ from the run without featurewatch: {differ}"


def hook_counts(model: nn.Module) -> dict[str, int]:
    return {
        name: len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for name, m in model.named_modules()
    }


def test_quantization_aware_training_run_is_identical_with_featurewatch(tmp_path):
    base, _ = fit(tmp_path / "without", qat_cnn, with_callbacks=False)
    model, cbs = fit(tmp_path / "with", qat_cnn, with_callbacks=True)
    assert all(cb.calls >= 3 and cb.failures == 0 for cb in cbs), [
        (type(c).__name__, c.calls, c.failures) for c in cbs
    ]
    observers = [k for k in model.state_dict() if k.endswith(("min_val", "scale"))]
    assert len(observers) > 10  # the model really carries observer state
    assert_same_run(base.net, model.net)
    assert hook_counts(model.net) == hook_counts(base.net)  # prepare_qat's own hooks, no more


def test_buffer_counting_forwards_counts_only_the_training_runs(tmp_path):
    base, _ = fit(tmp_path / "without", CountingCNN, with_callbacks=False)
    model, cbs = fit(tmp_path / "with", CountingCNN, with_callbacks=True)
    assert all(cb.calls >= 3 and cb.failures == 0 for cb in cbs), [
        (type(c).__name__, c.calls, c.failures) for c in cbs
    ]
    # 4 training batches x 2 epochs, 2 validation batches x 2 epochs, 2 sanity-check batches
    assert model.steps_seen == base.steps_seen == 4 * EPOCHS + 2 * EPOCHS + 2
    assert int(model.net.forwards) == model.steps_seen
    assert_same_run(base.net, model.net)
    assert not hooks_left(model.net)
