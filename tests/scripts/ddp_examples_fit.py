"""Run by tests and bench/ddp_split.py under 2-process DDP (gloo, CPU): DatasetExamples searches
and projects its share on each rank. Lightning re-launches this script for rank 1.

Usage: python tests/scripts/ddp_examples_fit.py OUT_DIR [--devices 2] [--pool 24] [--width 8]
       [--channels 3] [--k 4] [--epochs 2] [--size 16] [--fixed-pool]
With --fixed-pool the pool is a given tensor of --pool digits at --size px (the same work in
every setting; bench/ddp_split.py), else the first --pool validation inputs rank zero sees.
Writes OUT_DIR/rank<k>.json: calls, the seconds of each call, and whether the last call's top
examples and projections equal one process's on rank zero's pool and the same weights.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

import featurewatch.callbacks.dataset_examples as module
from featurewatch import DatasetExamples
from featurewatch.core.examples import top_examples_multi
from featurewatch.core.projection import project_detailed
from tests._models import LitClassifier, SmallCNN, digits_loaders, digits_tensors

LAYER = "net.features.6"


class Recording(DatasetExamples):
    """Keeps the last call's top examples and times each call."""

    def _drift(self, event, layer, top):  # type: ignore[no-untyped-def]
        self.top = top
        return super()._drift(event, layer, top)

    def visualize(self, *args):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        super().visualize(*args)
        self.seconds.append(time.perf_counter() - start)


def main(a: argparse.Namespace) -> None:
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders(n=256, size=a.size, batch_size=16)
    fixed = digits_tensors(a.pool, a.size)[0] if a.fixed_pool else None
    projected: list = []
    split_projection = module.split_projection

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        projected[:] = [args, kwargs, split_projection(*args, **kwargs)]
        return projected[2]

    module.split_projection = recording  # type: ignore[assignment]
    cb = Recording([LAYER], max_channels=a.channels, k=a.k, pool_size=a.pool, pool=fixed)
    cb.seconds = []
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=a.devices,
        strategy="ddp" if a.devices > 1 else "auto",
        max_epochs=a.epochs,
        logger=TensorBoardLogger(str(a.out), name="tb", version=0),
        callbacks=[cb],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(a.out),
    )
    model = LitClassifier(SmallCNN(width=a.width))
    trainer.fit(model, train, val)
    held = cb._shared_pool._held  # rank zero's pool as the calls used it (sent to rank 1)
    pool = held[1] if held is not None else cb._peek_pool()
    alone = top_examples_multi(model, pool, {LAYER: cb.top.channels}, k=a.k)[LAYER]
    args, kwargs, split = projected
    alone_projection = project_detailed(*args, **kwargs)
    report = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "calls": cb.calls,
        "failures": cb.failures,
        "seconds": cb.seconds,
        "pool": len(pool),
        "pool_sum": float(pool.double().sum()),
        "indices": cb.top.indices.tolist(),
        "same_top": bool(
            torch.equal(cb.top.indices, alone.indices) and torch.equal(cb.top.values, alone.values)
        ),
        "projections": int(split.gradients.shape[0]),
        "projection_diff": float((split.gradients - alone_projection.gradients).abs().max()),
    }
    (a.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--pool", type=int, default=24)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--fixed-pool", action="store_true")
    main(p.parse_args())
