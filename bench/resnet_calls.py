"""One featurewatch call per callback on a torchvision ResNet-18 at 224 px: seconds and peak RSS.

Each callback runs in a child process of its own (``python bench/resnet_calls.py --child NAME``)
so that its peak resident set is its own: a one-epoch Lightning ``fit`` (4 training steps of 16
images, validation on the 256 images that are DatasetExamples' pool), with the callback's
defaults, called once at the end of the epoch (``at_end`` finds that step logged). A child with no
callback gives the baseline peak RSS. Printed per callback: the call's own seconds (the
``featurewatch/<name>/seconds`` it logs, what a user sees on the dashboard), the child's peak RSS,
its difference from the baseline child's (which varies by about 0.3 GB from run to run: the
allocator), the growth of the peak during the call itself (the steadier figure: the same
process before and after), and the bytes the callback adds to a checkpoint.

The images are 224 px crops of scikit-image's photos (no download), the network has random
weights (nothing pretrained can be fetched here); per-call cost does not depend on training.

Usage::

    python bench/resnet_calls.py                 # every callback, ~6 minutes on 2 cores
    python bench/resnet_calls.py --only DatasetExamples ChannelVisualization

``bench/overhead.py`` runs this after its example runs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: name -> the callback with its defaults, plus the layer arguments a ResNet-18 needs.
CALLBACKS: dict[str, Callable[[Any], Any]] = {
    "ClassModelVisualization": lambda fw: fw.ClassModelVisualization(),
    "ChannelVisualization": lambda fw: fw.ChannelVisualization("net.layer3"),
    "DatasetExamples": lambda fw: fw.DatasetExamples("net.layer3"),
    "AttributionMaps": lambda fw: fw.AttributionMaps(),
    "DeepDream": lambda fw: fw.DeepDream("net.layer3"),
    "ActivationGrid": lambda fw: fw.ActivationGrid(),
    "FeatureDrift": lambda fw: fw.FeatureDrift(),
    "FilterWeights": lambda fw: fw.FilterWeights(),
}

SIZE = 224
POOL = 256


def photos(n: int, size: int, seed: int = 0) -> Any:
    """``n`` random ``size`` px crops (with flips) of scikit-image's colour photos, normalized."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from skimage import data

    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field"]
    images = []
    for name in names:
        img = np.asarray(getattr(data, name)())
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        images.append(torch.from_numpy(img[..., :3].copy()).permute(2, 0, 1).float() / 255)
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        img = images[int(torch.randint(len(images), (1,), generator=gen))]
        side = int(torch.randint(size, min(img.shape[1:]) + 1, (1,), generator=gen))
        top = int(torch.randint(img.shape[1] - side + 1, (1,), generator=gen))
        left = int(torch.randint(img.shape[2] - side + 1, (1,), generator=gen))
        crop = img[None, :, top : top + side, left : left + side]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)[0]
        out[i] = crop.flip(-1) if i % 2 else crop
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return (out - mean) / std


def child(name: str | None, out: Path) -> dict[str, Any]:
    """The fit of one callback (or none); returns its figures."""
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    import torchvision
    from torch.utils.data import DataLoader, TensorDataset

    import featurewatch as fw

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.manual_seed(0)

    class Net(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torchvision.models.resnet18(num_classes=6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", F.cross_entropy(self(x), y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    images = photos(64 + POOL, SIZE)
    labels = torch.arange(len(images)) % 6
    train = DataLoader(TensorDataset(images[:64], labels[:64]), batch_size=16)
    val = DataLoader(TensorDataset(images[64:], labels[64:]), batch_size=64)
    callbacks = [CALLBACKS[name](fw)] if name else []
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,  # featurewatch writes its files sink under default_root_dir
        default_root_dir=str(out),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    before: list[int] = []
    if callbacks:
        visualize = callbacks[0].visualize

        def measured(*args: Any) -> None:
            before.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            visualize(*args)

        callbacks[0].visualize = measured
    start = time.perf_counter()
    trainer.fit(Net(), train, val)
    wall = time.perf_counter() - start
    figures: dict[str, Any] = {"wall": wall}
    if callbacks:
        cb = callbacks[0]
        figures["seconds"] = cb.last_seconds
        figures["calls"] = cb.state_dict()["calls"]
        figures["failures"] = cb.state_dict()["failures"]
        buffer = io.BytesIO()
        torch.save(cb.state_dict(), buffer)
        figures["checkpoint_bytes"] = buffer.getbuffer().nbytes
    # ru_maxrss is in KiB on Linux
    figures["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    figures["peak_before_call"] = before[0] if before else figures["peak_rss"]
    return figures


def run_child(name: str | None, threads: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", name or "none"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "BENCH_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(only: list[str] | None = None, threads: int = 2) -> None:
    """Run the children one after the other and print the table."""
    names = only or list(CALLBACKS)
    print(f"ResNet-18 at {SIZE} px, {POOL} validation images, {threads} threads, one call each:")
    base = run_child(None, threads)
    print(f"  baseline fit without featurewatch: peak RSS {base['peak_rss'] / 2**30:.2f} GiB")
    print(
        f"  {'callback':26s} {'s/call':>7s} {'peak RSS':>9s} {'vs base':>9s} "
        f"{'by call':>9s} {'ckpt':>9s}"
    )
    for name in names:
        got = run_child(name, threads)
        growth = (got["peak_rss"] - base["peak_rss"]) / 2**20
        by_call = (got["peak_rss"] - got["peak_before_call"]) / 2**20
        ckpt = got["checkpoint_bytes"] / 2**10
        note = "" if got["calls"] == 1 and not got["failures"] else f"  calls {got['calls']}"
        print(
            f"  {name:26s} {got['seconds']:7.1f} {got['peak_rss'] / 2**30:7.2f} G "
            f"{growth:+7.0f} M {by_call:+7.0f} M {ckpt:7.0f} K{note}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(CALLBACKS), help="these callbacks only")
    p.add_argument("--threads", type=int, default=2, help="torch threads per child (default 2)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            name = None if args.child == "none" else args.child
            print(json.dumps(child(name, Path(tmp))))
        return 0
    report(args.only, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
