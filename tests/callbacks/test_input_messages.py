"""Clear messages for batches and images featurewatch cannot use (issue 11, item 7).

A dict batch whose first tensor is the labels, a ``forward`` that takes the whole dict, and a probe
or DeepDream image with the wrong channel count each stopped ``fit`` with a raw ``IndexError`` or
a conv2d error from deep inside torch. Each now fails before the first training step with a
``TypeError``/``ValueError`` that names the callback and the argument to change, and the argument
it names makes the run work.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from featurewatch import (
    ActivationGrid,
    AttributionMaps,
    DatasetExamples,
    DeepDream,
    FeatureDrift,
    FilterWeights,
)
from tests._models import LitClassifier, SmallCNN, digits_loaders, digits_tensors
from tests.callbacks.conftest import make_trainer


class DictDigits(Dataset):
    """Digits as ``{"label": y, "image": x}``: the label comes first."""

    def __init__(self, n: int = 32) -> None:
        self.x, self.y = digits_tensors(n, 16)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"label": self.y[i], "image": self.x[i]}


class DictBatches(LitClassifier):
    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return F.cross_entropy(self(batch["image"]), batch["label"])

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return None


class WholeDictForward(DictBatches):
    """``forward`` takes the whole batch dict, as some codebases write it."""

    def forward(self, batch: Any) -> torch.Tensor:  # type: ignore[override]
        return self.net(batch["image"])

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return F.cross_entropy(self(batch), batch["label"])


READERS = {
    "FilterWeights": lambda **kw: FilterWeights(layer="net.features.0", **kw),
    "ActivationGrid": lambda **kw: ActivationGrid(["net.features.2"], num_images=2, **kw),
    "AttributionMaps": lambda **kw: AttributionMaps(("saliency",), num_images=2, **kw),
    "DatasetExamples": lambda **kw: DatasetExamples(
        ["net.features.6"], max_channels=2, k=2, pool_size=16, **kw
    ),
    "FeatureDrift": lambda **kw: FeatureDrift(["net.features.2"], num_images=4, **kw),
    "DeepDream": lambda **kw: DeepDream("net.features.6", num_images=2, steps=1, **kw),
}


def fit(tmp_path, module: pl.LightningModule, callbacks: list, **kwargs: Any) -> pl.Trainer:
    pl.seed_everything(0, verbose=False)
    loader = DataLoader(DictDigits(), batch_size=16)
    trainer = make_trainer(tmp_path, callbacks, max_steps=2, **kwargs)
    trainer.fit(module, loader, loader)
    return trainer


@pytest.mark.parametrize("callback", sorted(READERS))
def test_a_dict_batch_with_the_label_first_says_to_pass_input_key(tmp_path, callback) -> None:
    module = DictBatches(SmallCNN())
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises(TypeError, match=r"entry 'label'.*looks like labels.*pass input_key="):
        fit(tmp_path / "bad", module, [READERS[callback]()])
    assert all(torch.equal(p, q) for p, q in zip(before, module.parameters(), strict=True))

    trainer = fit(
        tmp_path / "good", DictBatches(SmallCNN()), [cb := READERS[callback](input_key="image")]
    )
    assert trainer.global_step == 2
    assert cb.calls >= 1 and cb.failures == 0


def test_a_forward_that_takes_the_whole_dict_is_named_as_the_cause(tmp_path) -> None:
    with pytest.raises(
        TypeError,
        match=r"ActivationGrid: the model failed on the batch's input"
        r".*give forward a tensor argument",
    ):
        fit(tmp_path, WholeDictForward(SmallCNN()), [READERS["ActivationGrid"](input_key="image")])


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda t: AttributionMaps(("saliency",), probe=t), "probe"),
        (lambda t: ActivationGrid(["net.features.2"], probe=t), "probe"),
        (lambda t: FeatureDrift(["net.features.2"], probe=t), "probe"),
        (lambda t: DeepDream("net.features.6", image=t, steps=1), "image"),
        (lambda t: DatasetExamples(["net.features.6"], pool=t, k=2, max_channels=2), "pool"),
    ],
    ids=["AttributionMaps", "ActivationGrid", "FeatureDrift", "DeepDream", "DatasetExamples"],
)
def test_images_with_the_wrong_channel_count_fail_at_setup(tmp_path, make, argument) -> None:
    rgb = torch.rand(4, 3, 16, 16)
    callback = make(rgb)
    train, val = digits_loaders(n=32, size=16, batch_size=16)
    trainer = make_trainer(tmp_path, [callback], max_steps=2)
    model = LitClassifier(SmallCNN())  # 1-channel digits
    with pytest.raises(
        ValueError,
        match=rf"{type(callback).__name__}: `{argument}` has 3 channels .* no convolution of the "
        r"model takes 3 \(the first, 'net.features.0', takes 1\)",
    ):
        trainer.fit(model, train, val)
    assert trainer.global_step == 0

    # the right channel count works
    gray = torch.rand(4, 1, 16, 16)
    trainer = make_trainer(tmp_path / "ok", [cb := make(gray)], max_steps=2)
    trainer.fit(LitClassifier(SmallCNN()), train, val)
    assert cb.calls >= 1 and cb.failures == 0


class TwoStems(SmallCNN):
    """A model with convolutions of both channel counts: setup cannot tell which sees pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.side = torch.nn.Conv2d(3, 3, 1)  # registered, never called on the inputs


def test_a_probe_setup_cannot_judge_fails_at_the_first_batch_with_both_shapes(tmp_path) -> None:
    train, val = digits_loaders(n=32, size=16, batch_size=16)
    callback = AttributionMaps(("saliency",), probe=torch.rand(2, 3, 16, 16))
    trainer = make_trainer(tmp_path, [callback], max_steps=2)
    with pytest.raises(
        ValueError,
        match=r"AttributionMaps: `probe` has shape \(2, 3, 16, 16\), but the model's "
        r"inputs are \(16, 1, 16, 16\)",
    ):
        trainer.fit(LitClassifier(TwoStems()), train, val)
    assert trainer.global_step == 0
