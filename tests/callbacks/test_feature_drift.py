"""FeatureDrift with real Trainers: logged CKA equals CKA recomputed from per-epoch checkpoints,
the chart, resume, model hygiene and bad configuration."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from featurewatch.callbacks.feature_drift import FeatureDrift
from tests._models import LitClassifier, SmallCNN, digits_loaders
from tests.callbacks.conftest import hooks_left, make_trainer
from tests.callbacks.test_contract import DropoutCNN

DEFAULT_LAYERS = ["net.features.0", "net.features.4"]  # SmallCNN's convs
LAYERS = ["net.features.2", "net.features.6"]  # its two (in-place) ReLUs


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Feature-space linear CKA in float64 (Kornblith et al., 2019), independent of the package."""
    x = x.reshape(len(x), -1).astype(np.float64)
    y = y.reshape(len(y), -1).astype(np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def activations(ckpt: Path, probe: torch.Tensor, layers: list[str]) -> dict[str, np.ndarray]:
    """Outputs of ``layers`` for ``probe`` from the weights in a checkpoint, with plain hooks."""
    model = LitClassifier(SmallCNN())
    state = torch.load(ckpt, weights_only=True)
    model.load_state_dict(state.get("state_dict", state))
    model.eval()
    got: dict[str, np.ndarray] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: got.__setitem__(name, o.detach().clone().numpy())
        )
        for name in layers
    ]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in handles:
            h.remove()
    return got


def scalars(log_dir: str) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {
        tag: {e.step: e.value for e in acc.Scalars(tag)}
        for tag in acc.Tags()["scalars"]
        if tag.startswith("featurewatch/drift/")
    }


def images(log_dir: str, tag: str) -> dict[int, np.ndarray]:
    acc = EventAccumulator(log_dir, size_guidance={"images": 0})
    acc.Reload()
    return {
        e.step: np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB"))
        for e in acc.Images(tag)
    }


def checkpoints(folder: Path) -> dict[int, Path]:
    """global step -> checkpoint file (``epoch=E-step=S.ckpt``; ``init.pt``: the weights at 0)."""
    found = {int(re.search(r"step=(\d+)", p.name).group(1)): p for p in folder.glob("*.ckpt")}
    assert found, f"no checkpoint in {folder}"
    if (folder / "init.pt").exists():
        found[0] = folder / "init.pt"
    return found


def fit(root: Path, epochs: int, callback: FeatureDrift, resume: Path | None = None):
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders(n=128, batch_size=32)  # 4 steps per epoch
    trainer = make_trainer(
        root,
        callbacks=[
            callback,
            ModelCheckpoint(
                dirpath=root / "ckpt",
                filename="{epoch}-{step}",
                save_top_k=-1,
                every_n_epochs=1,
                save_on_train_epoch_end=True,  # after the callback's epoch-end call
            ),
        ],
        logger=TensorBoardLogger(root, name="tb"),
        enable_checkpointing=True,
        max_epochs=epochs,
    )
    model = LitClassifier(SmallCNN(), lr=0.3)
    if resume is None:
        (root / "ckpt").mkdir(parents=True)
        torch.save(model.state_dict(), root / "ckpt" / "init.pt")
    trainer.fit(model, train, val, ckpt_path=resume)
    return trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A: 3 epochs (calls at steps 0, 4, 8, 12). Run B: resumed from A's step-8 checkpoint with
    a new callback, to 5 epochs (calls at 12, 16, 20)."""
    root = tmp_path_factory.mktemp("drift")
    a = FeatureDrift(LAYERS, num_images=16, at_start=True)
    trainer_a = fit(root / "a", 3, a)
    b = FeatureDrift(LAYERS, num_images=16, at_start=True)
    trainer_b = fit(root / "b", 5, b, resume=checkpoints(root / "a" / "ckpt")[8])
    return {
        "a": (a, trainer_a.logger.log_dir, checkpoints(root / "a" / "ckpt")),
        "b": (b, trainer_b.logger.log_dir, checkpoints(root / "b" / "ckpt")),
    }


def assert_same_cka(logged: float, expected: float, what: object) -> None:
    """Equal to 1e-3 (the promise), and ``1 - CKA`` (the drift, a few percent here) to 1%: the
    logged value is the recomputed one, not merely another number close to 1."""
    assert logged == pytest.approx(expected, abs=1e-3), what
    assert 1 - logged == pytest.approx(1 - expected, rel=0.01, abs=2e-6), what


def test_logged_cka_equals_cka_recomputed_from_checkpoints(runs):
    cb, log_dir, ckpts = runs["a"]
    assert cb.calls == 4 and cb.failures == 0
    assert sorted(ckpts) == [0, 4, 8, 12]
    probe = cb._probe.fixed
    assert probe.shape[0] == 16
    acts = {step: activations(path, probe, LAYERS) for step, path in ckpts.items()}
    logged = scalars(log_dir)
    assert sorted(logged) == sorted(
        [
            f"featurewatch/drift/{la}/{what}"
            for la in LAYERS
            for what in ("cka_previous", "cka_first")
        ]
        + ["featurewatch/drift/seconds"]
    )
    for layer in LAYERS:
        previous = logged[f"featurewatch/drift/{layer}/cka_previous"]
        first = logged[f"featurewatch/drift/{layer}/cka_first"]
        assert sorted(previous) == [4, 8, 12]  # not at the first call
        assert sorted(first) == [0, 4, 8, 12]
        assert first[0] == pytest.approx(1.0, abs=1e-6)
        for step in (4, 8, 12):
            expected_prev = reference_cka(acts[step - 4][layer], acts[step][layer])
            expected_first = reference_cka(acts[0][layer], acts[step][layer])
            assert_same_cka(previous[step], expected_prev, (layer, step, "previous"))
            assert_same_cka(first[step], expected_first, (layer, step, "first"))
    # training moved the layers, the deeper one more: values that tell layers apart
    deep, shallow = (logged[f"featurewatch/drift/{la}/cka_first"][12] for la in LAYERS[::-1])
    assert deep < shallow < 1 - 1e-3
    # the history behind the chart holds the same values
    assert [e["step"] for e in cb.history] == [0, 4, 8, 12]
    assert cb.history[3]["cka_first"][LAYERS[1]] == pytest.approx(deep, abs=1e-6)
    # only two N x N matrices per layer are kept between calls
    assert sorted(cb.first_grams) == sorted(cb.previous_grams) == LAYERS
    assert all(k.shape == (16, 16) and k.dtype == torch.float64 for k in cb.first_grams.values())


def test_the_chart_of_every_layers_cka_previous_is_logged(runs):
    cb, log_dir, _ = runs["a"]
    charts = images(log_dir, "featurewatch/drift/cka_previous")
    assert sorted(charts) == [4, 8, 12]  # from the second call on
    for chart in charts.values():
        assert chart.shape[0] > 200 and chart.shape[1] > 500 and chart.std() > 20
    fig = cb.chart()
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == LAYERS
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[4, 8, 12]] * 2
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [
        [max(1.0 - e["cka_previous"][la], 1e-6) for e in cb.history[1:]] for la in LAYERS
    ]
    assert ax.get_yscale() == "log" and ax.get_ylim() == (1e-6, 1.0)
    assert ax.get_xlabel() == "global step (epoch)" and "1 - CKA" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4\nep 0", "8\nep 1", "12\nep 2"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == LAYERS


def test_resume_continues_the_curves_against_the_original_first_call(runs):
    a, _, ckpts_a = runs["a"]
    b, log_dir, ckpts_b = runs["b"]
    assert torch.equal(b._probe.fixed, a._probe.fixed)  # the probe came back from the checkpoint
    assert [e["step"] for e in b.history] == [0, 4, 8, 12, 16, 20]
    assert b.history[:3] == a.history[:3]
    probe = a._probe.fixed
    first = activations(ckpts_a[0], probe, LAYERS)
    before = activations(ckpts_a[8], probe, LAYERS)
    acts = {step: activations(path, probe, LAYERS) for step, path in ckpts_b.items()}
    assert sorted(acts) == [12, 16, 20]
    logged = scalars(log_dir)
    for layer in LAYERS:
        cka_first = logged[f"featurewatch/drift/{layer}/cka_first"]
        cka_previous = logged[f"featurewatch/drift/{layer}/cka_previous"]
        assert sorted(cka_first) == sorted(cka_previous) == [12, 16, 20]  # no "first call" again
        for step in (12, 16, 20):
            expected = reference_cka(first[layer], acts[step][layer])
            assert_same_cka(cka_first[step], expected, (layer, step))
        assert_same_cka(cka_previous[12], reference_cka(before[layer], acts[12][layer]), layer)
    # the resumed chart carries the curves from before the checkpoint
    (ax,) = b.chart().axes
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[4, 8, 12, 16, 20]] * 2


def test_default_layers_are_the_spatial_convs_as_in_activation_grid(tmp_path):
    train, val = digits_loaders(n=64, batch_size=32)
    drift = FeatureDrift(num_images=8)
    make_trainer(tmp_path, callbacks=[drift], max_epochs=2).fit(
        LitClassifier(SmallCNN()), train, val
    )
    assert drift.failures == 0
    assert [sorted(e["cka_first"]) for e in drift.history] == [DEFAULT_LAYERS] * 2
    assert sorted(drift.history[1]["cka_previous"]) == DEFAULT_LAYERS


def _train(root: Path, callbacks):
    pl.seed_everything(0, verbose=False)
    model = LitClassifier(DropoutCNN())
    train, val = digits_loaders(n=128, batch_size=32)
    make_trainer(root, callbacks=callbacks, max_epochs=2).fit(model, train, val)
    return model


def test_training_is_bit_identical_with_and_without_the_callback(tmp_path):
    base = _train(tmp_path / "a", [])
    rng_without = torch.get_rng_state()
    drift = FeatureDrift(
        ["net.features.2", "net.features.6", "net.fc"],
        num_images=8,
        every_n_epochs=None,
        every_n_train_steps=2,
        at_start=True,
    )
    model = _train(tmp_path / "b", [drift])
    assert drift.calls == 5 and drift.failures == 0  # steps 0, 2, 4, 6, 8
    assert torch.equal(torch.get_rng_state(), rng_without)
    for (name, x), (_, y) in zip(base.state_dict().items(), model.state_dict().items()):
        assert torch.equal(x, y), f"{name} differs"  # weights and BatchNorm running statistics
    assert [p.requires_grad for p in model.parameters()] == [
        p.requires_grad for p in base.parameters()
    ]
    assert model.training == base.training
    assert not hooks_left(model)
    # in-place ReLU outputs and a non-spatial (N, 10) output are compared as written
    assert set(drift.history[-1]["cka_first"]) == {"net.features.2", "net.features.6", "net.fc"}


class WithDeadBranch(SmallCNN):
    """SmallCNN plus a side conv whose output is the same for every input (weights and bias 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.side = nn.Conv2d(1, 2, 3)
        nn.init.zeros_(self.side.weight)
        nn.init.zeros_(self.side.bias)
        self.side.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 0.0 * self.side(x).mean()


def test_a_constant_layer_is_reported_and_the_others_are_still_logged(tmp_path):
    train, val = digits_loaders(n=64, batch_size=32)
    drift = FeatureDrift(["net.side", "net.features.2"], num_images=8)
    with pytest.warns(UserWarning, match="layer 'net.side' failed.*same for all 8 examples"):
        make_trainer(tmp_path, callbacks=[drift], max_epochs=2).fit(
            LitClassifier(WithDeadBranch()), train, val
        )
    assert drift.calls == 2 and drift.failures == 2
    assert [sorted(e["cka_first"]) for e in drift.history] == [["net.features.2"]] * 2
    assert list(drift.history[1]["cka_previous"]) == ["net.features.2"]
    records = (tmp_path / "featurewatch_logs" / "events.jsonl").read_text()
    assert '"featurewatch/drift/net.side/error"' in records
    assert '"featurewatch/drift/net.features.2/cka_previous"' in records


class Counting(LitClassifier):
    steps = 0

    def training_step(self, batch, batch_idx):
        Counting.steps += 1
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: FeatureDrift(layers=["net.features.9"]),
            r"layer 'net.features.9' not found in Counting.*net\.features\.0, net\.features\.2",
        ),
        (
            lambda: FeatureDrift(layers=["net.features.2@1"]),
            r"'net.features.2@1' does not exist; valid: 'net.features.2@0'",
        ),
    ],
)
def test_bad_layers_fail_before_the_first_training_step(tmp_path, make, match):
    train, val = digits_loaders(n=64)
    Counting.steps = 0
    with pytest.raises(ValueError, match=match):
        make_trainer(tmp_path, callbacks=[make()], max_epochs=1).fit(
            Counting(SmallCNN()), train, val
        )
    assert Counting.steps == 0


def test_a_model_without_convs_needs_layers(tmp_path):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 10))
    train, val = digits_loaders(n=64)
    with pytest.raises(ValueError, match=r"has no conv layer.*pass `layers=` \(e\.g\. net\.1"):
        make_trainer(tmp_path, callbacks=[FeatureDrift()], max_epochs=1).fit(
            LitClassifier(mlp), train, val
        )


def test_argument_validation():
    with pytest.raises(ValueError, match=r"`num_images` must be an int >= 2, got 1"):
        FeatureDrift(num_images=1)
    with pytest.raises(ValueError, match=r"at least 2 of them, got a probe tensor of shape"):
        FeatureDrift(probe=torch.zeros(1, 1, 8, 8))
    with pytest.raises(TypeError, match="`layers` must be a layer name"):
        FeatureDrift(layers=[3])
    with pytest.raises(ValueError, match="`max_layers` must be a positive int"):
        FeatureDrift(max_layers=0)
    assert FeatureDrift(["a"]).state_key != FeatureDrift(["b"]).state_key
