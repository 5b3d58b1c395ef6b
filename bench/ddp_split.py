"""ChannelVisualization's call split across 2 DDP ranks (gloo, one thread each) vs one process.

Runs ``tests/scripts/ddp_render_fit.py`` (a digits CNN, ChannelVisualization on one layer, a
call at every epoch end) with ``--devices 1`` and ``--devices 2``, alternating, ``--rounds``
times each, every process with ``OMP_NUM_THREADS=1``; prints the median seconds of a call
(``visualize``, as rank zero times it) in each setting, their ratio, and the largest difference
between the split call's images and those of one process rendering every channel on the same
weights (0 when the split changes nothing).

On this project's 2-core machine two busy single-thread processes also slow each other down
(shared caches and memory bandwidth), which is part of what a user with 2 ranks per machine gets.

Usage::

    python bench/ddp_split.py                 # 16 channels of 96 px, 64 steps; ~3 minutes
    python bench/ddp_split.py --channels 32 --size 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "ddp_render_fit.py"


def run(out: Path, devices: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, str(SCRIPT), str(out), "--devices", str(devices)]
    command += ["--channels", str(args.channels), "--steps", str(args.steps)]
    command += ["--size", str(args.size), "--width", str(args.width), "--layer", args.layer]
    command += ["--epochs", str(args.epochs)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "rank0.json").read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--width", type=int, default=32, help="SmallCNN width (layer has 2x channels)")
    p.add_argument("--layer", default="net.features.6")
    p.add_argument("--epochs", type=int, default=3, help="calls per fit")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    calls: dict[int, list[float]] = {1: [], 2: []}
    diffs: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for devices in (1, 2):
                got = run(Path(tmp) / f"r{r}d{devices}", devices, args)
                calls[devices] += got["seconds"]
                diffs.append(got["max_diff"])
    one, two = statistics.median(calls[1]), statistics.median(calls[2])
    print(
        f"ChannelVisualization({args.layer!r}, max_channels={args.channels}, steps={args.steps}, "
        f"size={args.size}), {len(calls[1])} calls per setting:"
    )
    print(f"  1 process, 1 thread          {one:6.2f} s per call (median)")
    print(f"  2 DDP ranks, 1 thread each   {two:6.2f} s per call (median)")
    print(f"  speedup                      {one / two:6.2f}x")
    print(f"  largest |split - one process| over the images: {max(diffs):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
