"""The benches on CUDA, when a GPU is present: render ratios, and host synchronizations in loops.

On a machine with a CUDA device this

1. renders 8 channels of a torchvision ResNet-18 (``layer2``, 64 px, 32 steps) with
   ``torch.cuda.set_sync_debug_mode("warn")`` and counts the warnings: each is a host
   synchronization inside the render loop (an ``.item()``, a ``.cpu()``, a data-dependent
   shape) that stalls the GPU's queue; the render's own set-up and its final copy to the CPU
   are outside the counted steps;
2. runs ``bench/render_bench.py --device cuda`` (ours vs the naive per-channel loop vs the
   floor), the same ratios as on the CPU.

Without a CUDA device it says so and exits 0: nothing here can be measured on a CPU (this
project's own machine has no GPU, so the CUDA path has not been run here).

Usage::

    python bench/gpu.py [--steps 32]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def count_syncs(steps: int) -> int:
    """Host synchronizations warned by CUDA's sync debug mode during the render's steps."""
    import torchvision

    from featurewatch.core.render import render, unit_objective

    model = torchvision.models.resnet18().cuda().eval()
    objective, seeds = unit_objective("layer2", list(range(8)))
    render(model, objective, _spec(), seeds=seeds, steps=1)  # warm-up: set-up and kernels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            render(model, objective, _spec(), seeds=seeds, steps=steps)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    # a render has a fixed number outside its loop (set-up probe, first value, final copy);
    # a sync per step would show as at least `steps` more
    return len(syncs)


def _spec():  # type: ignore[no-untyped-def]
    from featurewatch.core.param import ImageSpec

    return ImageSpec(channels=3, size=(64, 64))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=32)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure (run this on a machine with a GPU)")
        return 0
    print(f"CUDA device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    syncs = count_syncs(args.steps)
    print(
        f"host synchronizations in a {args.steps}-step render: {syncs} (fixed ones only if < steps)"
    )
    command = [sys.executable, str(ROOT / "bench" / "render_bench.py"), "--device", "cuda"]
    command += ["--steps", str(args.steps)]
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
