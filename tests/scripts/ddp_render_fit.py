"""Run by tests and bench/ddp_split.py under 2-process DDP (gloo, CPU): ChannelVisualization
(or, with ``--callback class_model``, ClassModelVisualization) renders its units split across the
ranks. Lightning re-launches this script for rank 1.

Usage: python tests/scripts/ddp_render_fit.py OUT_DIR [--devices 2] [--channels 5] [--steps 8]
       [--size PX] [--width 8] [--layer net.features.2] [--callback channels|class_model]
Writes OUT_DIR/rank<k>.json: the call count, the seconds of each call, and how far the last
call's images are from a one-process render of the same objective on the same weights.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from featurewatch import ChannelVisualization, ClassModelVisualization
from featurewatch.callbacks import rendering
from tests._models import LitClassifier, SmallCNN, digits_loaders


class Recording:
    """Keeps what the last call rendered, and what it was asked."""

    def _render(self, *args):  # type: ignore[no-untyped-def]
        self.asked = args
        self.last = super()._render(*args)  # type: ignore[misc]
        return self.last


class Channels(Recording, ChannelVisualization):
    pass


class ClassModel(Recording, ClassModelVisualization):
    pass


def main(
    out: Path,
    devices: int,
    channels: int,
    steps: int,
    size: int | None,
    width: int,
    layer: str,
    epochs: int,
    callback: str,
) -> None:
    pl.seed_everything(0, verbose=False)
    shares: list = []  # the elements each render of this process was asked for
    render = rendering.render

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        shares.append(kwargs.get("elements"))
        return render(*args, **kwargs)

    rendering.render = recording  # type: ignore[assignment]
    train, val = digits_loaders(n=128, batch_size=16)
    if callback == "class_model":
        cb: Recording = ClassModel(steps=steps, size=size)
    else:
        cb = Channels([layer], max_channels=channels, steps=steps, size=size)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=epochs,
        logger=TensorBoardLogger(str(out), name="tb", version=0),
        callbacks=[cb],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(out),
    )
    seconds: list[float] = []
    original = cb.visualize

    def timed(*args):  # type: ignore[no-untyped-def]
        import time

        start = time.perf_counter()
        original(*args)
        seconds.append(time.perf_counter() - start)

    cb.visualize = timed  # type: ignore[method-assign]
    model = LitClassifier(SmallCNN(width=width))
    trainer.fit(model, train, val)
    # the same objective on the final weights, in this process alone
    cb.all_ranks = False  # type: ignore[misc]
    split = cb.last
    in_fit = list(shares)
    alone = cb._render(*cb.asked)
    report = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "calls": cb.calls,
        "failures": cb.failures,
        "seconds": seconds,
        "render_seconds": split.seconds,  # the slowest share's render of the last call
        "alone_seconds": alone.seconds,  # this process alone, every channel
        "shares": in_fit,
        "images": list(split.images.shape),
        "max_diff": float((split.images - alone.images).abs().max()),
        "values_diff": float((split.values - alone.values).abs().max()),
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))
    torch.distributed.destroy_process_group() if torch.distributed.is_initialized() else None


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--channels", type=int, default=5)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--layer", default="net.features.2")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--callback", choices=["channels", "class_model"], default="channels")
    a = p.parse_args()
    main(a.out, a.devices, a.channels, a.steps, a.size, a.width, a.layer, a.epochs, a.callback)
