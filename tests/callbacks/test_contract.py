"""The callback contract, checked with real Trainers on tiny models."""

from __future__ import annotations

import warnings

import pytest
import pytorch_lightning as pl
import torch
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
    FeatureWatchWarning,
    FilterWeights,
)
from tests._models import LitClassifier, SmallCNN, TinyResNet, digits_loaders, rgb_digits_loaders
from tests.callbacks.conftest import all_callbacks, hooks_left, make_trainer


class DropoutCNN(SmallCNN):
    """SmallCNN with dropout, so a disturbed global RNG would change the trained weights."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(self.features(x)).flatten(1)))


def _train(tmp_path, callbacks, seed=0, **kw):
    pl.seed_everything(seed, verbose=False)
    model = LitClassifier(DropoutCNN())
    train, val = digits_loaders(n=128, batch_size=32)
    trainer = make_trainer(tmp_path, callbacks=callbacks, max_epochs=2, **kw)
    trainer.fit(model, train, val)
    return model, trainer


def test_run_with_all_callbacks_is_bit_identical_to_run_without(tmp_path):
    base_model, _ = _train(tmp_path / "a", [])
    rng_without = torch.get_rng_state()
    cbs = all_callbacks(every_n_train_steps=2)
    model, _trainer = _train(tmp_path / "b", cbs)
    rng_with = torch.get_rng_state()
    assert all(cb.calls >= 2 and cb.failures == 0 for cb in cbs), [
        (type(c).__name__, c.calls, c.failures) for c in cbs
    ]
    for (name, a), (_, b) in zip(base_model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs"  # weights and BatchNorm running statistics
    assert torch.equal(rng_with, rng_without)
    assert [p.requires_grad for p in model.parameters()] == [
        p.requires_grad for p in base_model.parameters()
    ]
    assert model.training == base_model.training
    assert not hooks_left(model)


def test_at_start_never_draws_from_the_users_dataloader(tmp_path):
    """With no sanity check, `at_start` work must use the batch Lightning fetched, not pull one from
    the loader itself: that would advance the loader's own generator and reshuffle the run."""

    def run(callbacks):
        pl.seed_everything(0, verbose=False)
        x, y = digits_loaders(n=128)[0].dataset.tensors
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y),
            batch_size=32,
            shuffle=True,
            generator=torch.Generator().manual_seed(7),
        )
        model = LitClassifier(DropoutCNN())
        trainer = make_trainer(tmp_path, callbacks=callbacks, max_epochs=2, num_sanity_val_steps=0)
        trainer.fit(model, loader)
        return model, loader.generator.get_state()

    base, base_gen = run([])
    cbs = all_callbacks(at_start=True)
    model, gen = run(cbs)
    assert all(cb.failures == 0 for cb in cbs), [(type(c).__name__, c.failures) for c in cbs]
    assert all(cb.calls == 3 for cb in cbs if cb.at_start)  # start + 2 epoch ends
    assert torch.equal(gen, base_gen)
    for (name, a), (_, b) in zip(base.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs"


class Exploding(FeatureWatchCallback):
    default_name = "exploding"

    def visualize(self, trainer, pl_module, event):
        raise RuntimeError("kaboom in a visualization")


def test_failing_visualization_warns_and_training_continues(tmp_path):
    cb = Exploding()
    with pytest.warns(FeatureWatchWarning, match="kaboom in a visualization"):
        _model, trainer = _train(tmp_path, [cb])
    assert trainer.current_epoch == 2 and trainer.global_step == 8
    assert cb.calls == 2 and cb.failures == 2


def test_failing_visualization_raises_when_strict(tmp_path):
    with pytest.raises(RuntimeError, match="kaboom"):
        _train(tmp_path, [Exploding(strict=True)])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"every_n_epochs": 1, "every_n_train_steps": 5},
            "either `every_n_epochs` or `every_n_train_steps`",
        ),
        ({"every_n_epochs": 0}, "`every_n_epochs` must be a positive int"),
        (
            {"every_n_epochs": None, "every_n_train_steps": -2},
            "`every_n_train_steps` must be a positive int",
        ),
    ],
)
def test_bad_schedule_fails_in_init(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FilterWeights(**kwargs)


AT_K = (
    r"layer 'net.features.2' runs 1 time per forward, so 'net.features.2@1' does not exist; "
    r"valid: 'net.features.2@0', or 'net.features.2'"
)


class CountingModel(LitClassifier):
    steps = 0

    def training_step(self, batch, batch_idx):
        CountingModel.steps += 1
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize(
    "callback, match",
    [
        (
            lambda: ActivationGrid(layers=["net.features.9"]),
            r"layer 'net.features.9' not found in CountingModel.*net.features.0",
        ),
        (lambda: ActivationGrid(layers=["net.feature.2"]), r"did you mean 'net.features.2'"),
        (lambda: FilterWeights(layer="net.fc"), r"but that layer is a Linear; the first nn.Conv2d"),
        (
            lambda: FilterWeights(layer="net.features.4"),
            r"has 8 input channels and the images have 1",
        ),
        (
            lambda: ActivationGrid(layers=["net.features.2"], channels=[3, 8]),
            r"channel 8 out of range .*\(valid: 0..7\)",
        ),
        (lambda: ActivationGrid(layers=["net.fc"]), r"outputs shape \(1, 10\)"),
        (
            lambda: DatasetExamples(["net.features.9"]),
            r"'net.features.9' not found .*did you mean 'net.features.6'",
        ),
        (
            lambda: DatasetExamples(["net.features.6"], channels=[40]),
            r"channel 40 out of range .*\(valid: 0..15\)",
        ),
        (lambda: AttributionMaps(target=12), r"target class 12 out of range; .* \(valid: 0..9\)"),
        (
            lambda: AttributionMaps(methods=("gradcam",), layer="net.fc"),
            r"'net.fc' outputs shape \(1, 10\)",
        ),
        (
            lambda: AttributionMaps(methods=("cam",), layer="net.features.2"),
            r"use layer='net.features.6' for CAM",
        ),
        # a call index past the module's last call: every callback that renders or reads a layer
        (lambda: ActivationGrid(layers=["net.features.2@1"]), AT_K),
        (lambda: ChannelVisualization("net.features.2@1", steps=2), AT_K),
        (lambda: DeepDream("net.features.2@1"), AT_K),
        (lambda: DatasetExamples(["net.features.2@1"]), AT_K),
    ],
)
def test_bad_configuration_fails_before_first_training_step(tmp_path, callback, match):
    CountingModel.steps = 0
    train, val = digits_loaders(n=64)
    trainer = make_trainer(tmp_path, callbacks=[callback()], max_epochs=1, num_sanity_val_steps=0)
    with pytest.raises(ValueError, match=match):
        trainer.fit(CountingModel(), train, val)
    assert CountingModel.steps == 0


def test_no_work_in_sanity_check_or_fast_dev_run(tmp_path):
    cb = FilterWeights(every_n_train_steps=1, every_n_epochs=None)
    train, val = digits_loaders(n=64)
    trainer = pl.Trainer(
        fast_dev_run=2, callbacks=[cb], default_root_dir=tmp_path, enable_progress_bar=False
    )
    trainer.fit(LitClassifier(), train, val)
    assert cb.calls == 0


def test_schedule_by_steps_and_final_run(tmp_path):
    by_steps = FilterWeights(every_n_epochs=None, every_n_train_steps=3)
    by_epoch = FilterWeights(
        layer="net.features.0", every_n_epochs=2, at_start=True, name="filters_by_epoch"
    )
    train, val = digits_loaders(n=128)  # 4 steps per epoch, 3 epochs -> 12 steps
    trainer = make_trainer(tmp_path, callbacks=[by_steps, by_epoch], max_epochs=3)
    trainer.fit(LitClassifier(), train, val)
    assert by_steps.calls == 4  # steps 3, 6, 9, 12; the final run at step 12 is not repeated
    assert by_epoch.calls == 3  # start (step 0), epoch 2 end (step 8), end of training (step 12)


def test_resume_keeps_state_and_probe(tmp_path):
    train, val = digits_loaders(n=64)
    grid = ActivationGrid(layers=["net.features.2"], num_images=3)
    trainer = make_trainer(
        tmp_path, callbacks=[grid, FilterWeights()], max_epochs=1, enable_checkpointing=True
    )
    trainer.fit(LitClassifier(), train, val)
    ckpt = trainer.checkpoint_callback.best_model_path
    probe = grid._probe.fixed.clone()
    assert probe.shape[0] == 3

    resumed = ActivationGrid(layers=["net.features.2"], num_images=3)
    # another instance coexists under its own name (and state key)
    other = ActivationGrid(layers=["net.features.6"], num_images=3, name="deep_activations")
    assert resumed.state_key != other.state_key
    trainer2 = make_trainer(
        tmp_path, callbacks=[resumed, other], max_epochs=2, enable_checkpointing=True
    )
    trainer2.fit(LitClassifier(), train, val, ckpt_path=ckpt)
    assert torch.equal(resumed._probe.fixed, probe)
    assert resumed.calls == 2  # 1 before the checkpoint + 1 after resuming
    assert other.calls == 1


def test_models_users_train_resnet_vgg_rgb_bf16(tmp_path):
    from torchvision.models import resnet18, vgg11_bn

    train, val = rgb_digits_loaders(n=32, size=32, batch_size=16)
    for net, layers in [
        (resnet18(num_classes=10), ["net.layer1.0.relu@0", "net.layer1.0.relu", "net.layer2"]),
        (vgg11_bn(num_classes=10), ["net.features.2", "net.features.6"]),
        (TinyResNet(), ["net.layer1.relu@0", "net.layer1.relu@1"]),
    ]:
        if isinstance(net, type(vgg11_bn())):
            net.avgpool = nn.AdaptiveAvgPool2d(1)
            net.classifier = nn.Linear(512, 10)
        cbs = [
            FilterWeights(),
            ActivationGrid(layers=layers, num_images=2, max_channels=8),
            DeadNeuronMonitor(),
            ChannelVisualization(layers[-1], max_channels=2, steps=2),
            ClassModelVisualization(classes=[3], steps=2),
            DeepDream(layers[0], num_images=1, octaves=1, steps=1),
            AttributionMaps(methods=("saliency", "occlusion", "gradcam", "cam"), num_images=2),
            DatasetExamples([layers[0], layers[-1]], max_channels=2, k=2, pool_size=8),
        ]
        trainer = make_trainer(tmp_path, callbacks=cbs, max_epochs=1, precision="bf16-mixed")
        before = {k: v.clone() for k, v in net.state_dict().items()}
        with warnings.catch_warnings():
            warnings.simplefilter("error", FeatureWatchWarning)
            trainer.fit(LitClassifier(net, lr=0.01), train, val)
        assert all(cb.calls == 1 and cb.failures == 0 for cb in cbs)
        assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())  # it trained
        assert not hooks_left(net)
