"""Reused and coexisting instances (issue 11, items 3 and 4).

* The same callback objects used for a second ``fit`` start as fresh as when constructed: same
  calls, same steps, no failures, also with another model whose inputs differ (the probe and input
  size of the first fit must not carry over); a resumed fit still gets its checkpointed state.
* ``name=`` makes an instance's keys and its checkpoint state key distinct; two instances of one
  trainer that would log under one prefix fail at ``setup``, before any training step, saying to
  pass ``name=`` (not with Lightning's "more than one stateful callback" at ``Trainer(...)``).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from featurewatch import (
    ActivationGrid,
    AttributionMaps,
    ChannelVisualization,
    DatasetExamples,
    FeatureDrift,
    FeatureWatchCallback,
    FeatureWatchWarning,
)
from tests._files import records
from tests._models import LitClassifier, SmallCNN, digits_loaders, rgb_digits_loaders
from tests.callbacks.conftest import all_callbacks, make_trainer


def steps_by_callback(root: Path) -> dict[str, list[int]]:
    """``featurewatch/<name>/seconds`` -> the steps it was logged at."""
    out: dict[str, list[int]] = {}
    for r in records(root):
        if r["key"].endswith("/seconds"):
            out.setdefault(r["key"].split("/")[1], []).append(r["step"])
    return out


def fit(root: Path, callbacks: list, *, rgb: bool = False, **kwargs: Any) -> pl.Trainer:
    pl.seed_everything(0, verbose=False)
    if rgb:  # another model: 3 input channels, 24 px inputs
        model = LitClassifier(SmallCNN(in_channels=3))
        train, val = rgb_digits_loaders(n=64, size=24, batch_size=16)
    else:
        model = LitClassifier(SmallCNN())
        train, val = digits_loaders(n=64, size=16, batch_size=16)  # 4 steps per epoch
    ckpt_path = kwargs.pop("ckpt_path", None)
    trainer = make_trainer(root, callbacks, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureWatchWarning)  # any failed call fails the test
        trainer.fit(model, train, val, ckpt_path=ckpt_path)
    return trainer


def callbacks() -> list[FeatureWatchCallback]:
    return [
        *all_callbacks(every_n_train_steps=2),
        FeatureDrift(every_n_epochs=None, every_n_train_steps=2),
    ]


def test_a_reused_instance_starts_every_fit_fresh_even_on_another_model(tmp_path: Path) -> None:
    cbs = callbacks()
    fit(tmp_path / "first", cbs)
    first = steps_by_callback(tmp_path / "first")
    assert len(first) == len(cbs) and all(s == [2, 4] for s in first.values()), first
    calls = [cb.calls for cb in cbs]
    assert calls == [2] * len(cbs)

    # the same objects, the same length of run: before the fix nothing was logged (step 4 was
    # the "last step" already), and the first fit's calls were still counted
    fit(tmp_path / "second", cbs)
    assert steps_by_callback(tmp_path / "second") == first
    assert [cb.calls for cb in cbs] == calls
    assert [cb.failures for cb in cbs] == [0] * len(cbs)

    # another model (RGB, 24 px): probes, input sizes and references of the first fits are gone
    fit(tmp_path / "third", cbs, max_epochs=2)
    third = steps_by_callback(tmp_path / "third")
    assert all(s == [2, 4, 6, 8] for s in third.values()), third
    assert [cb.failures for cb in cbs] == [0] * len(cbs)
    grid = next(cb for cb in cbs if isinstance(cb, ActivationGrid))
    probe = [r for r in records(tmp_path / "third") if r["key"] == "featurewatch/activations/probe"]
    assert len(probe) == 1  # logged again at the new fit's first call, not skipped as "seen"
    assert grid.failures == 0


def test_a_resumed_fit_still_loads_its_checkpointed_state(tmp_path: Path) -> None:
    cbs = callbacks()
    trainer = fit(tmp_path / "run", cbs, enable_checkpointing=True)
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    # reuse the same objects to resume: the fresh start happens, then the checkpoint restores
    fit(tmp_path / "resumed", cbs, max_epochs=2, ckpt_path=ckpt)
    resumed = steps_by_callback(tmp_path / "resumed")
    assert all(s == [6, 8] for s in resumed.values()), resumed
    assert [cb.calls for cb in cbs] == [4] * len(cbs)  # 2 before the checkpoint, 2 after
    drift = next(cb for cb in cbs if isinstance(cb, FeatureDrift))
    cka_first = [
        r["value"] for r in records(tmp_path / "resumed") if r["key"].endswith("/cka_first")
    ]
    # compared with the first call of the original run, not restarted at 1.0
    assert cka_first and all(v < 1.0 for v in cka_first), cka_first
    assert drift.failures == 0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"size": 16}, {"size": 24}),
        ({"steps": 4}, {"steps": 6}),
        ({"every_n_epochs": 1}, {"every_n_epochs": 2}),
        ({"unit": "channel"}, {"unit": "neuron"}),
    ],
    ids=["size", "steps", "schedule", "unit"],
)
def test_two_instances_with_one_prefix_fail_at_setup_saying_to_pass_name(
    tmp_path: Path, a: dict, b: dict
) -> None:
    first = ChannelVisualization(["net.features.2"], max_channels=2, **{"steps": 4, **a})
    second = ChannelVisualization(["net.features.2"], max_channels=2, **{"steps": 4, **b})
    assert first.state_key != second.state_key  # so Trainer(...) accepts them both
    model = LitClassifier(SmallCNN())
    before = [p.detach().clone() for p in model.parameters()]
    train, val = digits_loaders(n=32, size=16, batch_size=16)
    trainer = make_trainer(tmp_path, [first, second])
    with pytest.raises(ValueError, match=r"featurewatch/channels/.*pass a distinct `name=`"):
        trainer.fit(model, train, val)
    assert trainer.global_step == 0
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))


def test_name_gives_each_instance_its_own_keys_files_and_checkpoint_state(tmp_path: Path) -> None:
    small = ChannelVisualization(["net.features.2"], max_channels=2, steps=4, size=16)
    big = ChannelVisualization(["net.features.2"], max_channels=2, steps=4, size=24, name="big")
    neurons = ChannelVisualization(
        ["net.features.2"], max_channels=2, steps=4, unit="neuron", name="neurons"
    )
    examples = DatasetExamples(["net.features.6"], max_channels=2, k=2, pool_size=16, name="ex2")
    examples_default = DatasetExamples(["net.features.6"], max_channels=2, k=2, pool_size=16)
    cbs = [small, big, neurons, examples, examples_default]
    trainer = fit(tmp_path, cbs)
    images = {r["key"]: r for r in records(tmp_path) if r["kind"] == "image" and r["step"] == 4}
    for prefix, side in (("channels", 16), ("big", 24), ("neurons", 16)):
        image = images[f"featurewatch/{prefix}/net.features.2"]
        png = tmp_path / "featurewatch_logs" / image["path"]
        assert png.is_file(), png
    files = {images[f"featurewatch/{p}/net.features.2"]["path"] for p in ("channels", "big")}
    assert len(files) == 2  # two PNGs, not one overwritten by the other
    assert {"featurewatch/examples/net.features.6", "featurewatch/ex2/net.features.6"} <= set(
        images
    )
    assert set(steps_by_callback(tmp_path)) == {"channels", "big", "neurons", "ex2", "examples"}
    keys = [cb.state_key for cb in cbs]
    assert len(set(keys)) == len(keys)
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)["callbacks"]
    assert {k: saved[k]["calls"] for k in keys} == dict.fromkeys(keys, 1)


def test_a_named_state_key_survives_changed_arguments_and_an_unnamed_one_does_not() -> None:
    def cv(**kw: Any) -> ChannelVisualization:
        return ChannelVisualization(["conv"], **kw)

    assert cv(size=32, name="x").state_key == cv(size=64, name="x").state_key
    assert cv(size=32).state_key != cv(size=64).state_key
    assert cv(size=32).state_key == cv(size=32).state_key
    assert "'name': 'x'" in cv(name="x").state_key


def test_an_unnamed_state_key_is_the_same_in_another_process() -> None:
    # a digest of addresses or object ids would lose the state of every resumed run
    code = (
        "import torch; from featurewatch import AttributionMaps, ChannelVisualization\n"
        "print(AttributionMaps(probe=torch.arange(12.).reshape(1, 3, 2, 2)).state_key)\n"
        "print(AttributionMaps(output_key=abs).state_key)"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    here = [
        AttributionMaps(probe=torch.arange(12.0).reshape(1, 3, 2, 2)).state_key,
        AttributionMaps(output_key=abs).state_key,
    ]
    assert other == here


@pytest.mark.parametrize("name", ["", "a/b", "has space", "-lead"])
def test_a_name_that_is_not_one_key_segment_fails_at_construction(name: str) -> None:
    with pytest.raises(ValueError, match="ChannelVisualization: `name` must be one key segment"):
        ChannelVisualization(["conv"], name=name)
    with pytest.raises(TypeError, match="`name` must be a str"):
        ChannelVisualization(["conv"], name=3)  # type: ignore[arg-type]


def test_a_checkpoint_of_a_version_before_name_still_resumes(tmp_path: Path) -> None:
    """Earlier versions saved the state under ``Class{fields}``; Lightning finds it there."""
    cbs = callbacks()
    trainer = fit(tmp_path / "run", cbs)
    ckpt = trainer._checkpoint_connector.dump_checkpoint()
    ckpt["callbacks"] = {
        next(cb._legacy_state_key for cb in cbs if cb.state_key == k): v
        for k, v in ckpt["callbacks"].items()
    }
    assert not set(ckpt["callbacks"]) & {cb.state_key for cb in cbs}
    torch.save(ckpt, tmp_path / "old.ckpt")
    again = callbacks()
    fit(tmp_path / "resumed", again, max_epochs=2, ckpt_path=tmp_path / "old.ckpt")
    assert [cb.calls for cb in again] == [4] * len(again)
