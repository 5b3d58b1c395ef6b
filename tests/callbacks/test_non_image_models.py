"""Non-image models (issue 11, item 6): a tabular MLP over ``(N, 20)`` and a ``Conv1d`` net over
``(N, 1, 800)`` signals.

The callbacks that watch any model run; FilterWeights and ActivationGrid also run on the
``Conv1d`` net (curves and channel x time heatmaps, issue 14), AttributionMaps on both (waveforms
with their maps, bars per feature; Grad-CAM and CAM, which need positions, refused on the tabular
model and CAM on the 1-D net, naming what applies); every other callback that draws images
refuses at the start of ``fit``, before the first training step, with a ``ValueError`` that says
what it works on and what to use instead - never an ``IndexError`` mid-run, never a
recommendation of the very layer it refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import featurewatch as fw


class Lit(pl.LightningModule):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _i: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _i: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3)), torch.randn(64, 20)


def audio() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(1, 8, 9, stride=4),
        nn.ReLU(),
        nn.Conv1d(8, 8, 5, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    return net, torch.randn(64, 1, 800)


IMAGE_ONLY: dict[str, Callable[[], fw.FeatureWatchCallback]] = {
    "ChannelVisualization": lambda: fw.ChannelVisualization(["net.1"], unit="neuron", steps=2),
    "ClassModelVisualization": lambda: fw.ClassModelVisualization(steps=2),
    "DatasetExamples": lambda: fw.DatasetExamples(["net.1"], k=2, pool_size=16),
    "FilterWeights": lambda: fw.FilterWeights(),
    "ActivationGrid": lambda: fw.ActivationGrid(),
    "AttributionMaps": lambda: fw.AttributionMaps(methods=("saliency",), num_images=2),
    "DeepDream": lambda: fw.DeepDream("net.1", num_images=1, steps=1, octaves=1),
}
ANY_MODEL: dict[str, Callable[[], fw.FeatureWatchCallback]] = {
    "DeadNeuronMonitor": lambda: fw.DeadNeuronMonitor(),
    "FeatureDrift": lambda: fw.FeatureDrift(["net.1"], num_images=8),
}


def fit(make_model: Callable[[], tuple[nn.Module, torch.Tensor]], cb: pl.Callback, tmp_path):
    net, x = make_model()
    y = torch.randint(0, 3, (len(x),), generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[cb],
        num_sanity_val_steps=1,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Lit(net), loader, loader)
    return trainer, net, before


#: Drawn for 1-D nets too (issue 14): refused on the tabular model only.
ONE_D_TOO = {"FilterWeights", "ActivationGrid", "DatasetExamples"}
#: Drawn for both (issue 14): signals as waveforms with their maps, feature vectors as bars.
BOTH_TOO = {"AttributionMaps"}
REFUSALS = [
    pytest.param(make_model, name, id=f"{name}-{tag}")
    for make_model, tag in ((mlp, "tabular"), (audio, "conv1d"))
    for name in sorted(IMAGE_ONLY)
    if not (make_model is audio and name in ONE_D_TOO) and name not in BOTH_TOO
]


@pytest.mark.parametrize(("make_model", "name"), REFUSALS)
def test_image_callbacks_refuse_before_training_and_say_what_to_use(make_model, name, tmp_path):
    net, x = make_model()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError) as refused:
        fit(lambda: (net, x), IMAGE_ONLY[name](), tmp_path)
    message = str(refused.value)
    assert name in message
    assert "DeadNeuronMonitor and FeatureDrift watch any model" in message
    assert "net.0" not in message or "is a Conv1d" in message  # never recommends the refused layer
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # no step taken


RUNS = [
    pytest.param(make_model, name, id=f"{name}-{tag}")
    for make_model, tag in ((mlp, "tabular"), (audio, "conv1d"))
    for name in sorted(ANY_MODEL)
] + [pytest.param(audio, name, id=f"{name}-conv1d") for name in sorted(ONE_D_TOO)]
RUNS += [
    pytest.param(make_model, name, id=f"{name}-{tag}")
    for make_model, tag in ((mlp, "tabular"), (audio, "conv1d"))
    for name in sorted(BOTH_TOO)
]


@pytest.mark.parametrize(("make_model", "name"), RUNS)
def test_model_agnostic_callbacks_run_on_non_image_models(make_model, name, tmp_path):
    cb = {**ANY_MODEL, **IMAGE_ONLY}[name]()
    trainer, net, before = fit(make_model, cb, tmp_path)
    assert trainer.global_step == 4
    assert cb.calls >= 1 and cb.failures == 0
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())  # it trained


@pytest.mark.parametrize(
    ("make_model", "methods", "why"),
    [
        pytest.param(mlp, "gradcam", "feature vectors have none", id="gradcam-tabular"),
        pytest.param(mlp, "cam", "feature vectors have none", id="cam-tabular"),
        pytest.param(audio, "cam", "CAM is defined on a 2-D feature map", id="cam-conv1d"),
    ],
)
def test_attribution_methods_without_positions_refuse_naming_the_ones_that_apply(
    make_model, methods, why, tmp_path
):
    net, x = make_model()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError) as refused:
        fit(lambda: (net, x), fw.AttributionMaps(methods=methods, num_images=2), tmp_path)
    message = str(refused.value)
    assert f"AttributionMaps: method {methods!r} does not apply" in message and why in message
    assert "use 'saliency', 'smoothgrad', 'occlusion'" in message
    assert ("'gradcam'" in message.split("; use ")[1]) == (make_model is audio)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # no step taken
