"""DeadNeuronMonitor on a ``torch.compile``-d LightningModule (issue 11, item 2).

The monitor says at setup what compilation changes, and with a backend that does not fuse
kernels the run is bit-identical to the compiled run without it, while the dead channels are found.
"""

from __future__ import annotations

import warnings

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from featurewatch import DeadNeuronMonitor, FeatureWatchWarning
from tests._models import LitClassifier, SmallCNN, digits_tensors


def fit(monitor: DeadNeuronMonitor | None) -> tuple[dict[str, torch.Tensor], list[str]]:
    torch._dynamo.reset()
    pl.seed_everything(0, verbose=False)
    x, y = digits_tensors(64, size=12)
    net = SmallCNN(width=4)
    with torch.no_grad():
        net.features[5].bias[:2] = -50.0  # BatchNorm shift: two channels never fire
    module = LitClassifier(net)
    trainer = pl.Trainer(
        max_steps=8,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor] if monitor is not None else [],
        accelerator="cpu",
        devices=1,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = DataLoader(TensorDataset(x, y), batch_size=8)
        trainer.fit(torch.compile(module, backend="aot_eager"), loader)
    said = [str(w.message) for w in caught if issubclass(w.category, FeatureWatchWarning)]
    return {k: v.detach().clone() for k, v in module.state_dict().items()}, said


def test_compiled_module_is_monitored_said_so_and_bit_identical_without_fusion() -> None:
    plain, _ = fit(None)
    monitor = DeadNeuronMonitor(heatmap=False, every_n_epochs=None, every_n_train_steps=4)
    watched, said = fit(monitor)
    assert any("torch.compile" in s and "inductor" in s for s in said), said
    for key, value in plain.items():
        assert torch.equal(value, watched[key]), key
    assert monitor.dead_channels["net.features.6"] == [0, 1]
