"""TimeBudget in real fits: featurewatch stays within its share of the training time.

The training steps sleep ``STEP_SLEEP`` seconds on top of SmallCNN's own step: they stand for a
model bigger than the tests can afford to train, and make the training time stable on 2 busy CPU
cores (a sleep does not slow down when other processes compete; featurewatch's renders do, which
only raises the unbudgeted share the tests compare against). Every bound below is a ratio.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from featurewatch import ChannelVisualization, FeatureWatchCallback, TimeBudget
from featurewatch.cli.readers import read_files
from tests._models import LitClassifier, SmallCNN, digits_loaders
from tests.callbacks.conftest import make_trainer

STEP_SLEEP = 0.04
FRACTION = 0.15
EVERY = 2
KEY = "featurewatch/channels/net.features.2"


class SlowSteps(LitClassifier):
    """SmallCNN whose training step takes ``STEP_SLEEP`` seconds longer."""

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        time.sleep(STEP_SLEEP)
        return super().training_step(batch, batch_idx)


def _channels(**kwargs: Any) -> ChannelVisualization:
    # 8 channels x 32 steps every 2 training steps: without a budget, several times the
    # training time's 15%
    return ChannelVisualization(
        ["net.features.2"],
        max_channels=8,
        steps=32,
        every_n_epochs=None,
        every_n_train_steps=EVERY,
        **kwargs,
    )


def _fit(root: Path, callbacks: list[pl.Callback], **kwargs: Any) -> dict[str, Any]:
    torch.manual_seed(0)
    train, val = digits_loaders(512, batch_size=16)  # 32 steps per epoch
    trainer = make_trainer(root, callbacks, max_epochs=2, **kwargs)
    start = time.perf_counter()
    trainer.fit(SlowSteps(SmallCNN()), train, val)
    wall = time.perf_counter() - start
    ours = [cb for cb in callbacks if isinstance(cb, FeatureWatchCallback)]
    return {
        "trainer": trainer,
        "wall": wall,
        "featurewatch": sum(cb.total_seconds for cb in ours),
        "run": read_files(Path(root) / "featurewatch_logs"),
    }


@pytest.fixture(scope="module")
def unbudgeted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cb = _channels()
    return {**_fit(tmp_path_factory.mktemp("plain"), [cb]), "callback": cb}


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cb, budget = _channels(), TimeBudget(fraction=FRACTION)
    return {
        **_fit(tmp_path_factory.mktemp("budget"), [cb, budget]),
        "callback": cb,
        "budget": budget,
    }


def test_featurewatch_stays_within_its_fraction_plus_one_call(
    unbudgeted: dict[str, Any], budgeted: dict[str, Any]
) -> None:
    # without the budget featurewatch clearly exceeds 15% (against an upper bound of the training
    # time: the whole fit minus featurewatch)
    plain = unbudgeted["featurewatch"] / (unbudgeted["wall"] - unbudgeted["featurewatch"])
    assert plain > 3 * FRACTION, plain
    assert unbudgeted["callback"].calls == 64 // EVERY

    budget, cb = budgeted["budget"], budgeted["callback"]
    training = budget.training_seconds
    # the budget's training time is measured on the steps: within the fit, never more than it
    assert 0.3 * (budgeted["wall"] - budgeted["featurewatch"]) < training
    assert training < budgeted["wall"] - budgeted["featurewatch"]
    # featurewatch's time is the calls' seconds as the callbacks measured them
    assert budget.featurewatch_seconds == pytest.approx(cb.total_seconds)
    # the acceptance: within the fraction of the training time, plus at most one call (the
    # largest; the first call of a run, which compiles and warms up, is usually that one)
    largest = max(budgeted["run"].scalars["featurewatch/channels/seconds"], key=lambda p: p.value)
    one_call = largest.value * 1.5  # the logged seconds exclude the writing; last_seconds has it
    assert budget.featurewatch_seconds <= FRACTION * training + one_call
    # ... and the budget is used, not left idle: deferral happens only over the budget
    assert budget.featurewatch_seconds >= 0.5 * FRACTION * training
    assert 0 < budget.deferred["channels"] < 64 // EVERY
    # images are still produced, more than once, exactly as without the budget at those steps
    frames = budgeted["run"].images[KEY]
    assert len(frames) >= 2 and len(frames) == cb.calls
    plain_steps = {f.step for f in unbudgeted["run"].images[KEY]}
    assert {f.step for f in frames} <= plain_steps
    shapes = {(f.width, f.height) for f in unbudgeted["run"].images[KEY]}
    assert {(f.width, f.height) for f in frames} == shapes


def test_deferred_calls_are_logged_and_read_back(budgeted: dict[str, Any]) -> None:
    run, budget = budgeted["run"], budgeted["budget"]
    deferred = run.scalars["featurewatch/channels/deferred"]
    # a point at every deferred call and every call that ran from the first deferral on,
    # counting up to the budget's count (no zeros before it)
    ran = {f.step for f in run.images[KEY]}
    assert [p.value for p in deferred] == sorted(p.value for p in deferred)
    assert deferred[0].value == 1 and deferred[-1].value == budget.deferred["channels"]
    first = deferred[0].step
    assert first not in ran
    later_calls = len([s for s in ran if s > first])
    assert len(deferred) == budget.deferred["channels"] + later_calls
    skipped = sorted({p.step for p in deferred} - ran)
    assert len(skipped) == budget.deferred["channels"]
    assert all(s % EVERY == 0 for s in skipped)
    # the first call after deferred ones says which steps were deferred
    notes = run.texts["featurewatch/channels/budget"]
    said = [n for n in notes if n.step in ran]
    assert said, notes
    for note in said:
        before = [s for s in skipped if s < note.step][-1]
        assert "deferred" in note.text and str(before) in note.text
        assert f"fraction={FRACTION:g}" in note.text
    # the budget's own figures
    used = run.scalars["featurewatch/budget/fraction_used"]
    assert used[-1].value == pytest.approx(budget.fraction_used, rel=0.05)
    assert {p.step for p in used} == ran | {p.step for p in deferred}
    assert "featurewatch/budget/training_seconds" in run.scalars
    if 64 not in ran:  # the final call was skipped: said so, with the step of the latest images
        (final,) = [n for n in notes if n.step == 64]
        assert "final call" in final.text and f"step {max(ran)}" in final.text


def test_without_a_budget_nothing_changes(unbudgeted: dict[str, Any]) -> None:
    run = unbudgeted["run"]
    # every due step logged (at_end falls on the last periodic step: logged once)
    expected = list(range(EVERY, 65, EVERY))
    assert [f.step for f in run.images[KEY]] == expected
    assert run.steps == expected
    assert not [k for k in [*run.scalars, *run.texts] if "budget" in k or "deferred" in k]


def test_two_expensive_callbacks_take_turns(tmp_path: Path, unbudgeted: dict[str, Any]) -> None:
    # the same render twice, due at the same steps: the one listed second asks second every time,
    # yet it must not starve behind the first. A large fraction (there are more calls to share,
    # so a slow moment of a busy machine cannot decide the outcome; the unbudgeted fit ran first
    # in this process, so its first, slowest call is not one of these)
    first, second = _channels(name="first"), _channels(name="second")
    budget = TimeBudget(fraction=0.5)
    _fit(tmp_path, [first, second, budget])
    assert first.calls >= 2 and second.calls >= 2, (first.calls, second.calls)
    assert abs(first.calls - second.calls) <= 1, (first.calls, second.calls)
    assert budget.deferred["first"] > 0 and budget.deferred["second"] > 0


class _Seen(pl.Callback):
    """Keeps the budget's state as the resumed fit starts (after the checkpoint is loaded)."""

    def __init__(self, budget: TimeBudget) -> None:
        self.budget = budget
        self.state: dict[str, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.state = self.budget.state_dict()


def test_resume_keeps_the_budget_state(tmp_path: Path) -> None:
    torch.manual_seed(0)
    train, val = digits_loaders(256, batch_size=16)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    budget = TimeBudget(fraction=FRACTION)
    trainer = make_trainer(
        tmp_path, [_channels(), budget, ckpt], max_epochs=1, enable_checkpointing=True
    )
    trainer.fit(SlowSteps(SmallCNN()), train, val)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]
    state = saved["TimeBudget"]
    assert state["training_seconds"] > 0 and state["accounts"]["channels"]["deferred"] > 0

    again = TimeBudget(fraction=FRACTION)
    seen = _Seen(again)
    trainer = make_trainer(
        tmp_path, [_channels(), again, seen], max_epochs=2, enable_checkpointing=False
    )
    trainer.fit(SlowSteps(SmallCNN()), train, val, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert seen.state["training_seconds"] == pytest.approx(state["training_seconds"])
    assert seen.state["featurewatch_seconds"] == pytest.approx(state["featurewatch_seconds"])
    assert seen.state["accounts"] == state["accounts"]
    # the resumed fit goes on counting from there
    assert again.deferred["channels"] >= state["accounts"]["channels"]["deferred"]
    assert again.training_seconds > state["training_seconds"]


@pytest.mark.parametrize(
    ("fraction", "error", "said"),
    [
        (0, ValueError, "got 0"),
        (-0.1, ValueError, "got -0.1"),
        (15, ValueError, "0.15 for 15%"),
        (math.nan, ValueError, "nan"),
        ("0.1", TypeError, "must be a number"),
        (True, TypeError, "must be a number"),
        (None, TypeError, "NoneType"),
    ],
)
def test_bad_fractions_fail_at_construction(fraction: Any, error: type, said: str) -> None:
    with pytest.raises(error, match="TimeBudget: `fraction`") as info:
        TimeBudget(fraction=fraction)
    assert said in str(info.value)


def test_one_budget_per_trainer(tmp_path: Path) -> None:
    # Lightning refuses two stateful callbacks with one state key at construction already
    with pytest.raises(RuntimeError, match="more than one stateful callback of type `TimeBudget`"):
        make_trainer(tmp_path, [_channels(), TimeBudget(0.1), TimeBudget(0.2)])


def test_ddp_ranks_take_the_same_decisions(tmp_path: Path) -> None:
    # two gloo processes whose own clocks disagree: DeadNeuronMonitor's collectives run on every
    # rank, so every rank must run (or defer) the same calls; a mismatch would hang the run
    script = Path(__file__).resolve().parents[1] / "scripts" / "ddp_budget_fit.py"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 16
    assert ranks[0]["dead_calls"] == ranks[1]["dead_calls"] >= 1
    assert ranks[0]["dead_deferred"] == ranks[1]["dead_deferred"] > 0
    # ChannelVisualization renders on every rank (its share), so its decisions are shared too
    assert ranks[0]["channels_calls"] == ranks[1]["channels_calls"] >= 1
    assert ranks[0]["channels_deferred"] == ranks[1]["channels_deferred"] > 0
    assert ranks[0]["grid_calls"] >= 1 and ranks[1]["grid_calls"] == 0  # rank zero's work only


def test_cheap_calls_always_run_and_still_count(tmp_path: Path) -> None:
    """A dead-neuron evaluation (milliseconds) is never deferred: it would only delay its alert;
    the expensive renders beside it still are."""
    from featurewatch import DeadNeuronMonitor

    dead = DeadNeuronMonitor(every_n_epochs=None, every_n_train_steps=EVERY)
    cb, budget = _channels(), TimeBudget(fraction=FRACTION)
    _fit(tmp_path, [cb, dead, budget])
    assert budget.deferred.get("channels", 0) > 0  # the budget did bind
    assert budget.deferred.get("dead", 0) == 0
    assert dead.calls == 64 // EVERY  # every due evaluation (2 epochs x 32 steps)
    assert budget.featurewatch_seconds == pytest.approx(cb.total_seconds + dead.total_seconds)
