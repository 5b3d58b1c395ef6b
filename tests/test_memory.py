"""Memory stays flat over a long run: hundreds of calls of every callback do not grow the RSS.

Leaks in this field are real and large (pytorch-grad-cam issue 117: hooks left behind, 441 GB RSS
after 11 epochs). Every featurewatch callback runs in one real ``fit`` with tiny settings, logging
to TensorBoard and to the files sink (a CSVLogger's folder), at every training step; FeatureDrift,
whose chart of its whole history is most of its time, at every fourth. DeadNeuronMonitor runs
without its heatmap: the heatmap redraws every evaluation so far, so at every step its cost grows
with the run (0.3 s per call after 100 calls), which would take this test far over its time; its
statistics, history and logging are measured at every step.

Each measurement runs in a fresh Python process: a pytest worker that has already run other tests
holds their caches and fragments, and its RSS moves for reasons that are not this run's. The
resident set size is taken after a warm-up (imports, first allocations, caches, the allocator's
first arenas: the RSS still rises by 1.5 to 7 MB between steps 30 and 80) and again after
:data:`MEASURED_STEPS` more steps, each time after garbage collection and ``malloc_trim`` (so freed
memory the allocator keeps neither hides nor fakes growth), as every :data:`COLLECT_EVERY` steps
in between (see :class:`RSSMeter`); the difference must stay under
:data:`BOUND_MB`. The same measurement of a callback that keeps each of its results (a deliberate
leak of about 120 KB per call) must exceed the bound, so the bound has teeth.

The child runs with ``PYTHONMALLOC=malloc``, so that the RSS after ``malloc_trim`` counts the memory
in use. With Python's own small-object allocator the RSS of this run grows by about 45 KB per step
although the live objects do not (tracemalloc: +1.9 KB per step; without the files sink, or with
its page never rewritten, the growth is 7 KB per step): the files sink rebuilds ``index.html`` from
the whole ``events.jsonl`` (about 12 KB per step here) every few seconds per sink, so that
transient peak grows with the run, and pymalloc's 1 MiB arenas that a few long-lived objects
allocated meanwhile still occupy are never handed back. That is the files sink's page cost (see
``featurewatch/loggers/files.py``), not a leak, and it would hide a leak of the same size.

What does grow, by design: DeadNeuronMonitor keeps every evaluation in ``history`` (it is
checkpointed; about 5 KB per evaluation for this model's two sites) and FeatureDrift keeps its
history too. Measured with ``PYTHONMALLOC=malloc`` and a collection every
:data:`COLLECT_EVERY` steps: 1.8 to 2.2 MB over the measured steps (three runs), against 17.6 MB
for the leak, so the bound of 6 MB has a margin of almost 3x on either side.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

import featurewatch.callbacks
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
from featurewatch.callbacks.feature_drift import FeatureDrift
from featurewatch.loggers import Event
from tests._models import LitClassifier, SmallCNN, digits_tensors

#: Allowed RSS growth between the warm-up and the end, in MB (measured: 1.8 to 2.2 MB for every
#: callback, 17.6 MB for the leak).
BOUND_MB = 6.0
WARMUP_STEPS = 80
MEASURED_STEPS = 150
#: Steps between two garbage collections + ``malloc_trim`` (see :class:`RSSMeter`).
COLLECT_EVERY = 25


def rss_mb() -> float:
    """Resident set size of this process in MB (psutil if installed, else /proc/self/statm)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    return psutil.Process().memory_info().rss / 2**20


class RSSMeter(pl.Callback):
    """Takes the RSS (after garbage collection and ``malloc_trim``) every :data:`COLLECT_EVERY`
    steps; the readings after the warm-up step and after the last step are the measurement.

    Placed after the featurewatch callbacks, so their work of that step is done when it measures.
    Collecting regularly, not only at the two readings, matters: Python's full collections are
    rare, and the cyclic garbage of many steps (figures, events, Lightning's loop objects) piles up
    and fragments the heap when it is finally freed. The same run grew by 6.5 to 8 MB with a
    collection at the two readings only (with or without a trim every 5 steps), by 1.1 to 1.5 MB
    with one every 10 or 25 steps. A collection takes 0.35 s here.
    """

    def __init__(self, warmup_steps: int, last_step: int) -> None:
        self.warmup_steps = warmup_steps
        self.last_step = last_step
        self.readings: dict[str, float] = {}
        self.trace: dict[int, float] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if step % COLLECT_EVERY and step not in (self.warmup_steps, self.last_step):
            return
        self.trace[step] = round(_collected_rss(), 2)
        if step == self.warmup_steps:
            self.readings["warm"] = self.trace[step]
        if step == self.last_step:
            self.readings["end"] = self.trace[step]

    @property
    def growth_mb(self) -> float:
        return self.readings["end"] - self.readings["warm"]


def _collected_rss() -> float:
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)  # hand freed heap back, so the RSS counts what is still in use
    return rss_mb()


def _glibc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def every_callback() -> list[FeatureWatchCallback]:
    """Each featurewatch callback at every step, with the smallest settings that still do the
    work."""
    s: dict[str, Any] = {"every_n_epochs": None, "every_n_train_steps": 1, "at_end": False}
    return [
        FilterWeights(**s),
        ActivationGrid(layers=["net.features.2", "net.features.6"], num_images=2, **s),
        DeadNeuronMonitor(heatmap=False, **s),
        ChannelVisualization(["net.features.6"], max_channels=2, steps=1, **s),
        ClassModelVisualization(classes=[0, 1], steps=1, **s),
        DeepDream("net.features.6", num_images=1, octaves=1, steps=1, **s),
        AttributionMaps(methods=("saliency", "gradcam", "cam"), num_images=1, **s),
        DatasetExamples(["net.features.6"], max_channels=2, k=2, pool_size=16, **s),
        FeatureDrift(layers=["net.features.6"], num_images=4, **{**s, "every_n_train_steps": 4}),
    ]


def run(tmp_path, callbacks: list[pl.Callback], steps: int) -> RSSMeter:
    meter = RSSMeter(WARMUP_STEPS, steps)
    x, y = digits_tensors(64, size=12)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        logger=[TensorBoardLogger(tmp_path), CSVLogger(tmp_path)],
        callbacks=[*callbacks, meter],
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=50,
    )
    pl.seed_everything(0, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's few-workers hint
        trainer.fit(LitClassifier(SmallCNN(width=4)), loader)
    return meter


def test_every_callback_is_measured():
    exported = {
        obj
        for name in featurewatch.callbacks.__all__
        if isinstance(obj := getattr(featurewatch.callbacks, name), type)
        and issubclass(obj, FeatureWatchCallback)
        and obj is not FeatureWatchCallback
    }
    measured = {type(cb) for cb in every_callback()}
    assert exported <= measured, f"add {exported - measured} to every_callback() in this file"


ROOT = Path(__file__).resolve().parents[1]


def measure(what: str, folder: Path) -> dict[str, Any]:
    """Run :func:`main` in a fresh interpreter and return what it printed (one JSON line)."""
    code = f"from tests.test_memory import main; main({what!r}, {str(folder)!r})"
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        # the RSS then counts the memory in use, not pymalloc arenas pinned by a few objects
        env={**os.environ, "PYTHONMALLOC": "malloc"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(what: str, folder: str) -> None:
    """One measured run (``what`` is ``"every"`` or ``"leaky"``); prints one JSON line."""
    torch.set_num_threads(1)  # tiny ops on 2 shared cores: one thread is faster and steadier
    steps = WARMUP_STEPS + MEASURED_STEPS
    if what == "every":
        callbacks: list[FeatureWatchCallback] = every_callback()
    else:
        callbacks = [
            LeakyGrid(
                layers=["net.features.2", "net.features.6"],
                num_images=2,
                every_n_epochs=None,
                every_n_train_steps=1,
                at_end=False,
            )
        ]
    meter = run(Path(folder), callbacks, steps)
    kept_mb = sum(i.pixels.nbytes for e in LeakyGrid.kept for i in e.images) / 2**20
    calls = {type(cb).__name__: [cb.calls, cb.failures] for cb in callbacks}
    expected = {type(cb).__name__: [steps // cb.every_n_train_steps, 0] for cb in callbacks}
    result = {**meter.readings, "growth": meter.growth_mb, "kept_mb": kept_mb, "trace": meter.trace}
    result["allocator"] = os.environ.get("PYTHONMALLOC", "pymalloc")
    print(json.dumps({**result, "calls": calls, "expected": expected}))


def test_rss_stays_flat_over_hundreds_of_calls_of_every_callback(tmp_path):
    r = measure("every", tmp_path)
    assert r["calls"] == r["expected"]
    assert r["allocator"] == "malloc"
    print(f"RSS {r['warm']:.1f} -> {r['end']:.1f} MB over {MEASURED_STEPS} steps")
    assert r["growth"] < BOUND_MB, (
        f"RSS grew by {r['growth']:.1f} MB over {MEASURED_STEPS} calls of every callback "
        f"(from {r['warm']:.0f} MB after the warm-up); bound {BOUND_MB} MB; RSS by step: "
        f"{r['trace']}"
    )


class LeakyGrid(ActivationGrid):
    """An ActivationGrid that keeps every event it fills: the leak the bound must catch."""

    kept: ClassVar[list[Event]] = []

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        super().visualize(trainer, pl_module, event)
        self.kept.append(event)


def test_keeping_each_result_exceeds_the_bound(tmp_path):
    r = measure("leaky", tmp_path)
    assert r["calls"] == r["expected"]
    assert r["allocator"] == "malloc"
    print(f"kept {r['kept_mb']:.1f} MB of events: RSS grew by {r['growth']:.1f} MB")
    assert r["growth"] > BOUND_MB, (
        f"keeping {r['kept_mb']:.1f} MB of events raised the RSS by only {r['growth']:.1f} MB"
    )
