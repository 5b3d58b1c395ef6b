"""Training-step time with vs without DeadNeuronMonitor's per-step statistics.

Two models, batch 32, CPU:

* ``digits``: the example's network (``DigitsNet`` of ``examples/train_digits.py``: four
  conv-BN-ReLU blocks, in-place ReLUs, 16-64 channels) on 32x32 digits (4 monitored ReLUs);
* ``resnet18``: torchvision ResNet-18, random init, 10 classes, ``--size`` pixels (default 64),
  where one ReLU module per block runs twice per forward (17 monitored call sites).

Two measurements per model, in one process:

1. **hot path** - a plain training loop (forward, cross-entropy, backward, SGD step) in which the
   monitor's hooks (``ChannelStatsRecorder``, what ``DeadNeuronMonitor`` attaches during ``fit``)
   are attached for one step of each pair, in ABBA order, both steps on the same batch, so slow
   drifts of the machine cancel. Overhead = 10%-trimmed mean of the per-pair time ratios - 1, with
   a 95% bootstrap interval; the ratio of the medians is printed as a check. Measured with the
   monitor's default ``rates_every_n_steps=4`` (firing and maxima every step, rates every 4th) and
   with ``rates_every_n_steps=1`` (everything every step).
2. **Lightning** (on by default; ``--no-lightning`` skips it) - one real ``Trainer.fit`` with the
   real ``DeadNeuronMonitor``, whose hooks are attached for one step of each pair and detached for
   the other (ABBA); per-step time from ``on_train_batch_start`` to ``on_train_batch_end``
   (forward, backward, optimizer step, Lightning's logging and every callback hook). This is the
   training step the issue's target is about. The evaluation at the end of the window (reduction,
   logging, heatmaps) is reported separately: it runs once per window, not per step.

Usage::

    python bench/dead_overhead.py                  # both models, 1 and 2 threads
    python bench/dead_overhead.py --threads 2 --size 112 --pairs 40 --no-lightning

Thread counts: with 1 thread the step time is stable even when other processes share the CPUs;
with 2 threads on a loaded 2-core machine, interference dominates (check the printed load average).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from featurewatch.core.stats import ChannelStatsRecorder


def trimmed_mean(values: list[float], cut: float = 0.1) -> float:
    """Mean without the lowest and highest ``cut`` fraction: robust to a few disturbed steps, yet
    unbiased for the 1-in-n mixture of cheap and full steps that ``rates_every_n_steps`` makes
    (a median would report the cheap steps only)."""
    ordered = sorted(values)
    k = int(len(ordered) * cut)
    kept = ordered[k : len(ordered) - k] or ordered
    return sum(kept) / len(kept)


def make_model(kind: str) -> nn.Module:
    """The example's ``DigitsNet`` (examples/train_digits.py) or a random-init ResNet-18."""
    torch.manual_seed(0)
    if kind == "digits":
        sys.path.insert(0, str(ROOT / "examples"))
        from train_digits import DigitsNet

        return DigitsNet(in_channels=1, num_classes=10)
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


def make_data(
    kind: str, size: int, batch: int, n_batches: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if kind == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
        x = (F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False) - 0.3) / 0.4
        y = torch.tensor(d.target)
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch * n_batches, 3, size, size, generator=g)
        y = torch.randint(0, 10, (batch * n_batches,), generator=g)
    return [
        (x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]) for i in range(n_batches)
    ]


def hot_path(
    kind: str, size: int, batch: int, pairs: int, warmup: int, rates_every: int
) -> dict[str, float]:
    model = make_model(kind).train()  # a plain nn.Module forward in both cases
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = make_data(kind, size, batch, 16)
    recorder = ChannelStatsRecorder(model, rates_every=rates_every)

    def step(i: int) -> float:
        x, y = data[i % len(data)]
        recorder.new_forward()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        return time.perf_counter() - start

    for i in range(warmup):
        with recorder:
            step(i)
        step(i)
    with_t: list[float] = []
    without_t: list[float] = []
    ratios: list[float] = []
    for p in range(pairs):
        order = (True, False) if p % 2 == 0 else (False, True)  # ABBA
        got = {}
        for monitored in order:  # both steps of a pair train on the same batch
            if monitored:
                recorder.attach()
            got[monitored] = step(p)
            recorder.detach()
        with_t.append(got[True])
        without_t.append(got[False])
        ratios.append(got[True] / got[False])
    sites = len(recorder.layout())
    start = time.perf_counter()
    recorder.summaries()
    summarize = time.perf_counter() - start
    # 95% bootstrap interval of the median pair ratio (private RNG: the bench draws nothing global).
    rng = random.Random(0)
    boots = sorted(trimmed_mean(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return {
        "with_ms": 1e3 * statistics.median(with_t),
        "without_ms": 1e3 * statistics.median(without_t),
        "overhead_pct": 100 * (statistics.median(with_t) / statistics.median(without_t) - 1),
        "pair_ratio_pct": 100 * (trimmed_mean(ratios) - 1),
        "ci_low": 100 * (boots[50] - 1),
        "ci_high": 100 * (boots[1949] - 1),
        "sites": sites,
        "summary_ms": 1e3 * summarize,
    }


def lightning(kind: str, size: int, batch: int, pairs: int, warmup: int) -> dict[str, float]:
    """ABBA steps inside one real ``Trainer.fit`` with the real ``DeadNeuronMonitor``.

    The monitor's hooks are attached for one step of each pair and detached for the other (in
    ``on_train_batch_start``, before the timer starts), so both arms share the process, the
    allocator state and Lightning's own per-step work (logging, optimizer closure, callbacks).
    """
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from featurewatch.callbacks.dead_neurons import DeadNeuronMonitor

    class Lit(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_model(kind)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, b, _i):  # type: ignore[no-untyped-def]
            return F.cross_entropy(self(b[0]), b[1])

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    total = warmup + 2 * pairs

    def monitored(i: int) -> bool:  # warm-up alternates; then pairs in ABBA order
        if i < warmup:
            return i % 2 == 0
        p, j = divmod(i - warmup, 2)
        return (j == 0) if p % 2 == 0 else (j == 1)

    class ABMonitor(DeadNeuronMonitor):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
            assert self._recorder is not None
            if monitored(batch_idx):
                self._recorder.attach()
            else:
                self._recorder.detach()

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t = 0.0

        def on_train_batch_start(self, *args: object) -> None:
            self._t = time.perf_counter()

        def on_train_batch_end(self, *args: object) -> None:
            self.times.append(time.perf_counter() - self._t)

    data = make_data(kind, size, batch, 16)
    x = torch.cat([d[0] for d in data])
    y = torch.cat([d[1] for d in data])
    index = torch.arange(total * batch) % x.shape[0]
    loader = DataLoader(TensorDataset(x[index], y[index]), batch_size=batch, shuffle=False)
    monitor = ABMonitor(heatmap=True)
    timer = StepTimer()  # after the monitor: its clock starts once the hooks are in place
    module = make_model(kind) if kind == "digits" else Lit()  # DigitsNet is a LightningModule
    trainer = pl.Trainer(
        default_root_dir=tempfile.mkdtemp(prefix="dead_overhead_"),  # the files sink writes here
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor, timer],
        accelerator="cpu",
        devices=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader)
    steps = timer.times[warmup:]
    with_t = [t for i, t in enumerate(steps) if monitored(warmup + i)]
    without_t = [t for i, t in enumerate(steps) if not monitored(warmup + i)]
    ratios = [
        steps[2 * p + (0 if p % 2 == 0 else 1)] / steps[2 * p + (1 if p % 2 == 0 else 0)]
        for p in range(pairs)
    ]
    rng = random.Random(0)
    boots = sorted(trimmed_mean(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return {
        "with_ms": 1e3 * statistics.median(with_t),
        "without_ms": 1e3 * statistics.median(without_t),
        "pair_ratio_pct": 100 * (trimmed_mean(ratios) - 1),
        "ci_low": 100 * (boots[50] - 1),
        "ci_high": 100 * (boots[1949] - 1),
        "evaluation_ms": 1e3 * monitor.total_seconds / max(monitor.calls, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="digits,resnet18")
    parser.add_argument(
        "--size", type=int, default=64, help="ResNet-18 input size in pixels (digits: 32)"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--threads", default="1,2", help="torch intra-op thread counts to measure with"
    )
    parser.add_argument(
        "--pairs", type=int, default=0, help="ABBA step pairs (default: 100 digits, 30 resnet18)"
    )
    parser.add_argument("--lightning", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load:.1f}, batch "
        f"{args.batch}"
    )
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for kind in args.models.split(","):
            size = 32 if kind == "digits" else args.size
            pairs = args.pairs or (100 if kind == "digits" else 30)
            for rates_every in (4, 1):  # the monitor's default, then every statistic on every step
                r = hot_path(kind, size, args.batch, pairs, warmup=3, rates_every=rates_every)
                print(
                    f"[{kind} {size}px, {threads} thread(s)] hot path, "
                    f"rates_every_n_steps={rates_every}: {pairs} "
                    f"ABBA step pairs, {r['sites']} monitored call sites: step "
                    f"{r['without_ms']:.1f} ms without, "
                    f"{r['with_ms']:.1f} ms with -> overhead {r['pair_ratio_pct']:+.2f}% "
                    "(10%-trimmed mean of pair ratios; "
                    f"95% CI {r['ci_low']:+.2f}..{r['ci_high']:+.2f}%; ratio of medians "
                    f"{r['overhead_pct']:+.2f}%); "
                    f"end-of-window summary {r['summary_ms']:.2f} ms",
                    flush=True,
                )
            if args.lightning:
                lr = lightning(kind, size, args.batch, pairs, warmup=6)
                print(
                    f"[{kind} {size}px, {threads} thread(s)] Lightning fit, {pairs} ABBA step "
                    "pairs with the real "
                    f"DeadNeuronMonitor: step {lr['without_ms']:.1f} ms without, "
                    f"{lr['with_ms']:.1f} ms with -> "
                    f"overhead {lr['pair_ratio_pct']:+.2f}% (95% CI "
                    f"{lr['ci_low']:+.2f}..{lr['ci_high']:+.2f}%); "
                    "evaluation at the end of the window (reduction, scalars, heatmaps): "
                    f"{lr['evaluation_ms']:.0f} ms",
                    flush=True,
                )


if __name__ == "__main__":
    main()
