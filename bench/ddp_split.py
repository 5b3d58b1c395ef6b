"""Calls split across 2 DDP ranks (gloo, one thread each) vs one process with one thread.

For ChannelVisualization (``tests/scripts/ddp_render_fit.py``: a digits CNN, one layer, a call
at every epoch end) and DatasetExamples (``tests/scripts/ddp_examples_fit.py``: the same CNN, a
fixed pool of 256 digits at 96 px, top 6 of 8 channels with guided-backprop projections), runs
each fit with ``--devices 1`` and ``--devices 2``, alternating, ``--rounds`` times, every
process with ``OMP_NUM_THREADS=1``; prints the median seconds of a call (``visualize``, as rank
zero times it) in each setting, their ratio, and whether the split call's results equal one
process's on the same weights (images: the largest difference; examples: the same top indices
and values, the largest projection difference).

On this project's 2-core machine two busy single-thread processes also slow each other down
(shared caches and memory bandwidth), which is part of what a user with 2 ranks per machine gets.

Usage::

    python bench/ddp_split.py                 # ~5 minutes
    python bench/ddp_split.py --only channels --channels 32 --size 64
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
SCRIPTS = ROOT / "tests" / "scripts"


def run(out: Path, devices: int, what: str, args: argparse.Namespace) -> dict:
    if what == "channels":
        command = [sys.executable, str(SCRIPTS / "ddp_render_fit.py"), str(out)]
        command += ["--channels", str(args.channels), "--steps", str(args.steps)]
        command += ["--size", str(args.size), "--width", str(args.width), "--layer", args.layer]
    else:
        command = [sys.executable, str(SCRIPTS / "ddp_examples_fit.py"), str(out), "--fixed-pool"]
        command += ["--pool", "256", "--size", str(args.size), "--width", str(args.width)]
        command += ["--channels", "8", "--k", "6"]
    command += ["--devices", str(devices), "--epochs", str(args.epochs)]
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
    p.add_argument("--epochs", type=int, default=4, help="calls per fit")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", choices=["channels", "examples"])
    args = p.parse_args(argv)
    for what in [args.only] if args.only else ["channels", "examples"]:
        calls: dict[int, list[float]] = {1: [], 2: []}
        same: list[str] = []
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                for devices in (1, 2):
                    got = run(Path(tmp) / f"r{r}d{devices}", devices, what, args)
                    calls[devices] += got["seconds"][1:]  # the first call also sets up
                    if devices == 2 and what == "channels":
                        same.append(f"max |image diff| {got['max_diff']:.1e}")
                    elif devices == 2:
                        same.append(
                            f"same top: {got['same_top']}, max |projection diff| "
                            f"{got['projection_diff']:.1e}"
                        )
        one, two = statistics.median(calls[1]), statistics.median(calls[2])
        if what == "channels":
            title = (
                f"ChannelVisualization({args.layer!r}, max_channels={args.channels}, "
                f"steps={args.steps}, size={args.size})"
            )
        else:
            title = f"DatasetExamples('net.features.6', 256-image pool at {args.size} px, k=6)"
        print(f"{title}, {len(calls[1])} calls per setting (after the first):")
        print(f"  1 process, 1 thread          {one:6.2f} s per call (median)")
        print(f"  2 DDP ranks, 1 thread each   {two:6.2f} s per call (median)")
        print(f"  speedup                      {one / two:6.2f}x")
        print(f"  split vs one process: {'; '.join(sorted(set(same)))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
