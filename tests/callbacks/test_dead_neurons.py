"""DeadNeuronMonitor with a real Trainer: planted dead filters, alerts, hygiene, resume."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from featurewatch.callbacks.activation_grid import ActivationGrid
from featurewatch.callbacks.dead_neurons import (
    AUTO_HEATMAP_LAYERS,
    DeadNeuronError,
    DeadNeuronMonitor,
    DeadNeuronWarning,
)
from tests._models import (
    LitClassifier,
    SmallCNN,
    TinyResNet,
    digits_loaders,
    seed_everything_quietly,
)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trainer(logger=False) writes featurewatch's files under the working directory."""
    monkeypatch.chdir(tmp_path)


def _records(kind: str | None = None) -> list[dict[str, Any]]:
    """What the files sink wrote (``featurewatch_logs/events.jsonl``), read back as JSON."""
    lines = (Path("featurewatch_logs") / "events.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r for r in records if kind is None or r["kind"] == kind]


def _trainer(callbacks: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = {
        "max_epochs": 2,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "accelerator": "cpu",
        "devices": 1,
        "num_sanity_val_steps": 0,
    }
    defaults.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **defaults)


def _hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _dead_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, DeadNeuronWarning)]


class PlainCNN(nn.Module):
    """Conv -> ReLU (not in-place) modules, no BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(16, 10)
        with (
            torch.no_grad()
        ):  # a healthy baseline: every channel starts well inside its "on" regime
            self.features[0].bias.fill_(0.5)
            self.features[3].bias.fill_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


class FunctionalCNN(nn.Module):
    """forward calls F.relu: the monitored layers are the conv / BN producing its input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        return self.fc(x.mean((2, 3)))


def _planted(kind: str) -> tuple[nn.Module, list[str] | None, dict[str, list[int]]]:
    """A network with chosen channels that can never fire, the layers to name, the expected
    report."""
    seed_everything_quietly(0)
    if kind == "relu_module":
        net: nn.Module = PlainCNN()
        with torch.no_grad():
            net.features[0].bias[[1, 6]] = -1e4
            net.features[3].bias[[0, 9, 15]] = -1e4
        return net, None, {"net.features.1": [1, 6], "net.features.4": [0, 9, 15]}
    if kind == "inplace_relu":
        net = SmallCNN()
        with torch.no_grad():
            net.features[1].bias[3] = -100.0  # BN shift: the in-place ReLU after it never fires
            net.features[5].bias[[2, 11]] = -100.0
        return net, None, {"net.features.2": [3], "net.features.6": [2, 11]}
    if kind == "reused_relu":
        net = TinyResNet(in_channels=1)
        with torch.no_grad():
            net.layer1.bn1.bias[2] = -100.0  # first call of layer1.relu
            net.layer1.bn2.bias[5] = -1000.0  # second call, after the residual sum
        return net, None, {"net.relu": [], "net.layer1.relu@0": [2], "net.layer1.relu@1": [5]}
    if kind == "functional_relu":
        net = FunctionalCNN()
        with torch.no_grad():
            net.conv1.bias[[0, 7]] = -1e4
            net.bn2.bias[4] = -100.0
        return net, ["net.conv1", "net.bn2"], {"net.conv1": [0, 7], "net.bn2": [4]}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["relu_module", "inplace_relu", "reused_relu", "functional_relu"])
def test_planted_dead_channels_are_exactly_reported(kind: str) -> None:
    net, layers, expected = _planted(kind)
    monitor = DeadNeuronMonitor(layers, dead_alert_fraction=0.5)
    train, val = digits_loaders(128)
    _trainer([monitor]).fit(LitClassifier(net), train, val)
    assert monitor.dead_channels == expected
    assert [e["step"] for e in monitor.history] == [4, 8]
    # Read back what was logged at the last evaluation.
    scalars = {r["key"]: r["value"] for r in _records("scalar") if r["step"] == 8}
    histograms = {r["key"]: r for r in _records("histogram") if r["step"] == 8}
    images = {r["key"]: r for r in _records("image") if r["step"] == 8}
    for key, dead in expected.items():
        channels = monitor.latest[key].channels
        assert scalars[f"featurewatch/dead/{key}/dead_fraction"] == pytest.approx(
            len(dead) / channels
        )
        assert 0.0 <= scalars[f"featurewatch/dead/{key}/dying_fraction"] <= 1.0
        assert histograms[f"featurewatch/dead/{key}/on_rate"]["count"] == channels
        rates = monitor.latest[key].on_rate
        assert np.flatnonzero(rates.numpy() == 0).tolist() == dead
        heatmap = images[f"featurewatch/dead/{key}/heatmap"]
        with Image.open(Path("featurewatch_logs") / heatmap["path"]) as png:
            assert png.size == (heatmap["width"], heatmap["height"]) and png.size[0] > 100
    assert sum(k.endswith("/heatmap") for k in images) == len(expected)


def test_healthy_networks_have_no_dead_channels() -> None:
    train, _ = digits_loaders(128)
    for net in (SmallCNN(), TinyResNet(in_channels=1)):
        seed_everything_quietly(0)
        monitor = DeadNeuronMonitor(dead_alert_fraction=0.0, heatmap=False)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            _trainer([monitor]).fit(LitClassifier(net), train)
        assert monitor.dead_channels and all(dead == [] for dead in monitor.dead_channels.values())
        assert _dead_warnings(record) == []


class SpikedLR(LitClassifier):
    """SGD whose learning rate jumps x`factor` for the optimizer step taken at `spike_step`."""

    def __init__(self, net: nn.Module, spike_step: int, factor: float = 100.0) -> None:
        super().__init__(net, lr=0.05)
        self.spike_step, self.factor = spike_step, factor

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = self.lr * (self.factor if self.global_step == self.spike_step else 1.0)


def _plain_net() -> nn.Module:
    seed_everything_quietly(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def test_lr_spike_alerted_at_first_evaluation_after() -> None:
    # 8 steps per epoch; the spike is the optimizer step at global step 10, mid epoch 1.
    train, _ = digits_loaders(128, batch_size=16)
    monitor = DeadNeuronMonitor(patience=4, dead_alert_fraction=0.2, heatmap=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _trainer([monitor], max_epochs=3).fit(SpikedLR(_plain_net(), spike_step=10), train)
    alerts = _dead_warnings(record)
    assert [e["step"] for e in monitor.history] == [8, 16, 24]
    # Before the spike: quiet. The first evaluation after it alerts, in a warning and in the log.
    assert alerts and "step 16" in alerts[0]
    assert next(r["step"] for r in _records("text") if r["key"] == "featurewatch/dead/alerts") == 16
    dead_at_16 = monitor.history[1]["layers"]
    assert (
        max(float((layer["silent_steps"] >= 4).double().mean()) for layer in dead_at_16.values())
        > 0.2
    )
    # Warned once per layer, not again at step 24 although the filters are still dead.
    assert len(alerts) == len({a.split("'")[1] for a in alerts})

    # The same run without the spike raises no alert: the alert is caused by the spike.
    quiet = DeadNeuronMonitor(patience=4, dead_alert_fraction=0.2, heatmap=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _trainer([quiet], max_epochs=2).fit(
            SpikedLR(_plain_net(), spike_step=10, factor=1.0), train
        )
    assert _dead_warnings(record) == []


def test_on_dead_stop_stops_training_with_the_reason() -> None:
    net, _, _ = _planted("inplace_relu")
    monitor = DeadNeuronMonitor(
        on_dead="stop", dead_alert_fraction=0.1, every_n_epochs=None, every_n_train_steps=2
    )
    train, _ = digits_loaders(256)
    trainer = _trainer([monitor], max_steps=40, max_epochs=None)
    with pytest.warns(DeadNeuronWarning, match="stopped training") as record:
        trainer.fit(LitClassifier(net), train)
    assert trainer.global_step == 2 and trainer.should_stop
    assert monitor.stop_reason is not None
    assert "'net.features.6'" in monitor.stop_reason and "[2, 11]" in monitor.stop_reason
    assert "step 2" in monitor.stop_reason
    texts = [r for r in _records("text") if r["key"] == "featurewatch/dead/alerts"]
    assert [(r["step"], r["value"]) for r in texts] == [(2, monitor.stop_reason)]
    assert any(monitor.stop_reason in str(w.message) for w in record)
    assert _hooks_left(net) == 0


def test_on_dead_raise_and_hooks_removed_after_exceptions() -> None:
    net, _, _ = _planted("relu_module")
    model = LitClassifier(net)
    monitor = DeadNeuronMonitor(
        on_dead="raise", every_n_epochs=None, every_n_train_steps=2, heatmap=False
    )
    train, _ = digits_loaders(128)
    with pytest.raises(DeadNeuronError, match=r"net\.features\.1.*\[1, 6\]"):
        _trainer([monitor]).fit(model, train)
    assert _hooks_left(model) == 0

    class Crash(LitClassifier):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if batch_idx == 2:
                raise RuntimeError("user bug")
            return super().training_step(batch, batch_idx)

    crash = Crash(TinyResNet(in_channels=1))
    monitor = DeadNeuronMonitor(heatmap=False)
    with pytest.raises(RuntimeError, match="user bug"):
        _trainer([monitor]).fit(crash, train)
    assert _hooks_left(crash) == 0


def test_hooks_removed_after_fit_and_run_unchanged() -> None:
    train, val = digits_loaders(64)
    params = []
    for with_monitor in (True, False):
        seed_everything_quietly(0)
        model = LitClassifier(TinyResNet(in_channels=1))
        seed_everything_quietly(1)  # same shuffling stream in both runs
        callbacks: list[pl.Callback] = (
            [DeadNeuronMonitor(include_validation=True, heatmap=False)] if with_monitor else []
        )
        _trainer(callbacks).fit(model, train, val)
        assert _hooks_left(model) == 0
        params.append({k: v.clone() for k, v in model.state_dict().items()})
    assert params[0].keys() == params[1].keys()
    for key in params[0]:
        assert torch.equal(params[0][key], params[1][key]), key


def test_counts_only_training_forwards() -> None:
    train, val = digits_loaders(128)  # 128 training images, 64 validation images, 16x16
    positions = {}
    for include in (False, True):
        seed_everything_quietly(0)
        monitor = DeadNeuronMonitor(
            ["net.features.2"], include_validation=include, heatmap=False, rates_every_n_steps=1
        )
        grid = ActivationGrid(["net.features.2"])  # featurewatch's own forwards, every epoch
        _trainer([monitor, grid], max_epochs=1, num_sanity_val_steps=2).fit(
            LitClassifier(SmallCNN()), train, val
        )
        positions[include] = monitor.latest["net.features.2"].positions
        assert grid.calls >= 1
    assert positions[False] == 128 * 16 * 16
    assert positions[True] == (128 + 64) * 16 * 16


def test_sampling_counts_every_n_th_training_batch() -> None:
    train, _ = digits_loaders(128)  # 4 batches of 32 per epoch
    monitor = DeadNeuronMonitor(
        ["net.features.2"], sample_every_n_steps=3, heatmap=False, rates_every_n_steps=1
    )
    _trainer([monitor], max_epochs=1).fit(LitClassifier(SmallCNN()), train)
    summary = monitor.latest["net.features.2"]
    assert summary.updates == 2 and summary.positions == 2 * 32 * 16 * 16  # batches 0 and 3


class UnusedBranch(SmallCNN):
    """Has a ReLU module that ``forward`` never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.spare = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())


def test_layer_no_forward_reaches_is_reported_not_silently_dropped() -> None:
    train, _ = digits_loaders(64)
    monitor = DeadNeuronMonitor(heatmap=False)  # every ReLU module, the spare one included
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _trainer([monitor], max_epochs=2).fit(LitClassifier(UnusedBranch()), train)
    assert sorted(monitor.dead_channels) == ["net.features.2", "net.features.6"]
    said = [w for w in _dead_warnings(record) if "net.spare.1" in w]
    assert len(said) == 1 and "is not run by any counted forward" in said[0], _dead_warnings(record)
    texts = [r for r in _records("text") if r["key"] == "featurewatch/dead/net.spare.1/error"]
    assert len(texts) == 1 and "is it called by `forward`?" in texts[0]["value"]

    strict = DeadNeuronMonitor(heatmap=False, strict=True)
    with pytest.raises(ValueError, match="net.spare.1"):
        _trainer([strict], max_epochs=1).fit(LitClassifier(UnusedBranch()), train)


class ScheduledFiring(nn.Module):
    """conv -> ReLU -> linear; channel 1 never fires, channel 2 only in the training forwards ``n``
    (counted from 0) for which ``fires(n)``, channels 0 and 3 always."""

    def __init__(self, fires: Callable[[int], bool]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 10)
        self.fires = fires
        self.forwards = 0
        with torch.no_grad():
            self.conv.bias.fill_(0.5)
            self.conv.bias[1] = -1e4
            self.conv.bias[2] = -1e4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.conv(x)
        if self.training:
            if self.fires(self.forwards):
                pre = pre + torch.tensor([0.0, 0.0, 2e4, 0.0]).view(1, 4, 1, 1)
            self.forwards += 1
        return self.fc(self.relu(pre).mean((2, 3)))


def test_default_rates_every_4th_step_keep_dead_detection_exact() -> None:
    """With the default rates_every_n_steps=4, on-rates come from steps 0 and 4 of an 8-step epoch,
    but a channel that fires only at step 5 (never on a rate step) is alive, not dead: firing is
    checked on every forward. A planted dead channel is still reported exactly."""

    train, _ = digits_loaders(128, batch_size=16)  # 8 steps per epoch
    seed_everything_quietly(0)
    net = ScheduledFiring(
        lambda n: n == 5
    )  # channel 2 fires only in the training forward of step 5
    net.conv.requires_grad_(False)
    monitor = DeadNeuronMonitor(["net.relu"], heatmap=False, patience=None)
    _trainer([monitor], max_epochs=1).fit(LitClassifier(net), train)
    s = monitor.latest["net.relu"]
    assert s.updates == 8 and s.positions == 2 * 16 * 16 * 16  # rates from steps 0 and 4
    assert monitor.dead_channels == {"net.relu": [1]}, (s.silent_steps, s.max_abs, net.forwards)
    assert (
        s.on_rate[2] == 0 and bool(s.fired[2]) and s.silent_steps[2] == 2
    )  # fired at step 5 of 0..7
    assert 2 in s.dying(0.01) and s.max_abs[2] > 1e3  # the maximum saw step 5 too


def test_resume_keeps_history(tmp_path: Path) -> None:
    train, _ = digits_loaders(128)
    net, _, expected = _planted("reused_relu")
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = DeadNeuronMonitor()
    _trainer([first, ckpt], enable_checkpointing=True).fit(LitClassifier(net), train)
    path = tmp_path / "last.ckpt"
    state = torch.load(path, weights_only=True)  # plain values and tensors only
    assert any("DeadNeuronMonitor" in k for k in state["callbacks"])

    net2, _, _ = _planted("reused_relu")
    second = DeadNeuronMonitor()
    _trainer(
        [second, ModelCheckpoint(dirpath=tmp_path)], max_epochs=3, enable_checkpointing=True
    ).fit(LitClassifier(net2), train, ckpt_path=path)
    assert [e["step"] for e in second.history] == [4, 8, 12]
    for old, new in zip(first.history, second.history[:2]):
        assert old["layers"].keys() == new["layers"].keys()
        for key in old["layers"]:
            assert torch.equal(old["layers"][key]["on_rate"], new["layers"][key]["on_rate"])
    assert second.dead_channels == expected
    fig = second.heatmap_figure("net.layer1.relu@1")
    assert fig.axes[0].images[0].get_array().shape == (8, 3)  # channels x evaluations


def test_argument_validation() -> None:
    with pytest.raises(
        ValueError, match="`on_dead` must be one of 'warn', 'raise', 'stop', got 'explode'"
    ):
        DeadNeuronMonitor(on_dead="explode")
    with pytest.raises(ValueError, match=r"`dead_alert_fraction` must be in \[0, 1\), got 1.5"):
        DeadNeuronMonitor(dead_alert_fraction=1.5)
    with pytest.raises(ValueError, match=r"`dying_rate` must be in \(0, 1\]"):
        DeadNeuronMonitor(dying_rate=0)
    with pytest.raises(
        TypeError,
        match="`layers` must be a layer name or a non-empty list of layer names or None, "
        "got \\[\\]",
    ):
        DeadNeuronMonitor(layers=[])
    with pytest.raises(ValueError, match="`sample_every_n_steps` must be a positive int, got 0"):
        DeadNeuronMonitor(sample_every_n_steps=0)
    with pytest.raises(ValueError, match="`patience`"):
        DeadNeuronMonitor(patience=0)
    for name in ("dead_alert_fraction", "dying_rate", "dormancy_threshold", "threshold"):
        with pytest.raises(ValueError, match=f"`{name}` must be a number, got nan"):
            DeadNeuronMonitor(**{name: float("nan")})
    with pytest.raises(ValueError, match="`channel_dim`"):
        DeadNeuronMonitor(channel_dim=2)
    with pytest.raises(ValueError, match="did you mean 'net.features.2'"):
        _trainer([DeadNeuronMonitor(["net.features.22"])]).fit(
            LitClassifier(SmallCNN()), digits_loaders(32)[0]
        )


def test_short_leftover_window_at_the_end_is_no_evidence_of_death() -> None:
    """Evaluations every 5 steps of a 16-step run leave a 1-step window for the end-of-training
    evaluation. A channel that fired in every regular window but not in that last step is not
    dead; a planted dead channel stays dead. The end evaluation is labelled with the last epoch."""

    train, _ = digits_loaders(256, batch_size=16)  # 16 steps
    seed_everything_quietly(0)
    net = ScheduledFiring(
        lambda n: n < 15
    )  # channel 2 fires in the training forwards 0..14, not 15
    net.conv.requires_grad_(False)
    monitor = DeadNeuronMonitor(
        ["net.relu"],
        heatmap=False,
        on_dead="raise",
        dead_alert_fraction=0.3,
        every_n_epochs=None,
        every_n_train_steps=5,
    )
    _trainer([monitor], max_epochs=1).fit(LitClassifier(net), train)  # would raise on channel 2
    assert [(e["step"], e["layers"]["net.relu"]["updates"]) for e in monitor.history] == [
        (5, 5),
        (10, 5),
        (15, 5),
        (16, 1),
    ]
    assert monitor.dead_channels == {"net.relu": [1]}
    assert monitor.history[-1]["epoch"] == 0  # the run had one epoch, 0

    # ... but a leftover window long enough for `patience` does show a channel that died in it:
    # evaluations every 2 epochs of 8 steps, 3 epochs; channel 2 silent for the whole third epoch
    seed_everything_quietly(0)
    net = ScheduledFiring(lambda n: n < 16)
    net.conv.requires_grad_(False)
    monitor = DeadNeuronMonitor(["net.relu"], heatmap=False, patience=5, every_n_epochs=2)
    _trainer([monitor], max_epochs=3).fit(LitClassifier(net), digits_loaders(128, batch_size=16)[0])
    assert [(e["step"], e["layers"]["net.relu"]["updates"]) for e in monitor.history] == [
        (16, 16),
        (24, 8),
    ]
    assert monitor.dead_channels == {"net.relu": [1, 2]}


def test_a_call_site_that_does_not_exist_is_reported_with_the_valid_names() -> None:
    train, _ = digits_loaders(64)
    monitor = DeadNeuronMonitor(["net.features.2@0", "net.features.2@3"], heatmap=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _trainer([monitor], max_epochs=1).fit(LitClassifier(SmallCNN()), train)
    assert list(monitor.dead_channels) == ["net.features.2@0"]
    said = [w for w in _dead_warnings(record) if "net.features.2@3" in w]
    assert (
        len(said) == 1
        and "runs 1 time per forward" in said[0]
        and "valid: 'net.features.2@0', or 'net.features.2'" in said[0]
    )
    texts = [r for r in _records("text") if r["key"] == "featurewatch/dead/net.features.2@3/error"]
    assert len(texts) == 1


def test_two_differently_measuring_monitors_coexist() -> None:
    train, _ = digits_loaders(64)
    net, layers, expected = _planted("relu_module")
    every, sampled = (
        DeadNeuronMonitor(layers, rates_every_n_steps=1, heatmap=False),
        DeadNeuronMonitor(layers, heatmap=False, name="dead_sampled"),
    )
    _trainer([every, sampled], max_epochs=1).fit(LitClassifier(net), train)
    assert every.dead_channels == sampled.dead_channels == expected
    assert every.state_key != sampled.state_key


def test_resume_with_other_decisions_or_from_an_old_checkpoint_keeps_the_history(
    tmp_path: Path,
) -> None:
    """`on_dead` and `patience` decide, they do not measure: changing them on resume keeps the
    history. A checkpoint that stored the state under the earlier key (layers and threshold)
    loads."""
    train, _ = digits_loaders(128)
    net, _, _ = _planted("reused_relu")
    first = DeadNeuronMonitor(on_dead="stop", dead_alert_fraction=0.9, heatmap=False)
    _trainer(
        [first, ModelCheckpoint(dirpath=tmp_path, save_last=True)], enable_checkpointing=True
    ).fit(LitClassifier(net), train)
    path = tmp_path / "last.ckpt"
    old = torch.load(path, weights_only=True)
    old["callbacks"] = {
        first._legacy_state_key if k == first.state_key else k: v
        for k, v in old["callbacks"].items()
    }
    torch.save(old, tmp_path / "old.ckpt")
    for ckpt in (path, tmp_path / "old.ckpt"):
        net2, _, _ = _planted("reused_relu")
        second = DeadNeuronMonitor(on_dead="warn", patience=5, heatmap=False)
        _trainer([second], max_epochs=3).fit(LitClassifier(net2), train, ckpt_path=ckpt)
        assert [e["step"] for e in second.history] == [4, 8, 12], ckpt.name


def test_auto_heatmaps_on_a_deep_network_only_for_layers_with_dead_or_dying_channels() -> None:
    """20 ReLU sites (> AUTO_HEATMAP_LAYERS): heatmaps only for the two layers with planted dead
    channels."""

    class Deep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()]
            for _ in range(19):
                layers += [nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()]
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(4, 10)
            with torch.no_grad():
                for m in self.features:
                    if isinstance(m, nn.Conv2d):
                        m.bias.fill_(5.0)  # every channel fires ...
                self.features[6].bias[1] = -1e4  # ... but these two
                self.features[30].bias[3] = -1e4

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.features(x).mean((2, 3)))

    assert AUTO_HEATMAP_LAYERS < 20
    train, _ = digits_loaders(64)
    seed_everything_quietly(0)
    net = Deep()
    net.features.requires_grad_(False)
    monitor = DeadNeuronMonitor()
    _trainer([monitor], max_epochs=1).fit(LitClassifier(net), train)
    assert {k: v for k, v in monitor.dead_channels.items() if v} == {
        "net.features.7": [1],
        "net.features.31": [3],
    }
    drawn = sorted(r["key"] for r in _records("image"))
    assert drawn == [
        "featurewatch/dead/net.features.31/heatmap",
        "featurewatch/dead/net.features.7/heatmap",
    ]
    with pytest.raises(ValueError, match="`heatmap`"):
        DeadNeuronMonitor(heatmap="some")
