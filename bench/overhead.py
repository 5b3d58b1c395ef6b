"""Featurewatch's share of the training time on the example, with and without ``TimeBudget``.

Runs ``examples/train_digits.py`` (every featurewatch callback, digits, CPU, no logger: the files
sink) twice in child processes, one after the other, same seed and data: once with ``--budget 0``
(every due call runs, as without featurewatch's budget) and once with ``--budget FRACTION``. For
each it prints:

* **share** - featurewatch's seconds (the sum of the calls' own timing) / the rest of the fit
  (the fit's wall time minus featurewatch: an upper bound of the training time, measured the same
  way in both runs);
* with the budget, also the budget's own measure: featurewatch / the training steps and
  validation loops (what the budget keeps within ``FRACTION`` plus one call), and how many calls
  were deferred.

Usage::

    python bench/overhead.py                  # the example's 12 epochs, ~2.5 minutes on 2 cores
    python bench/overhead.py --fast           # its --fast runs (3 epochs), ~40 s
    python bench/overhead.py --budget 0.1
    python bench/overhead.py --no-resnet      # the example runs only

Then, unless ``--no-resnet``, the per-call seconds, peak RSS and checkpoint bytes of every callback
on a torchvision ResNet-18 at 224 px (``bench/resnet_calls.py``, one child process per callback,
about 6 minutes more).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "train_digits.py"


def run_example(out: Path, budget: float, full: bool) -> dict[str, Any]:
    summary = out / "summary.json"
    command = [sys.executable, str(EXAMPLE), "--logger", "none", "--out", str(out)]
    command += ["--budget", str(budget), "--summary", str(summary)]
    if not full:
        command.append("--fast")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return json.loads(summary.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--budget", type=float, default=0.15, help="TimeBudget fraction (default 0.15)")
    p.add_argument("--fast", action="store_true", help="the example's --fast runs (3 epochs)")
    p.add_argument("--no-resnet", action="store_true", help="skip the ResNet-18 per-call table")
    args = p.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"example: {'--fast (3 epochs)' if args.fast else '12 epochs'}; load average {load:.2f}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for budget in (0.0, args.budget):
            start = time.perf_counter()
            results[budget] = run_example(Path(tmp) / f"budget{budget:g}", budget, not args.fast)
            print(f"  run with --budget {budget:g} took {time.perf_counter() - start:.0f} s")
    plain, kept = results[0.0], results[args.budget]
    print("\nfeaturewatch's share of the training time (featurewatch s / rest of the fit s):")
    print(
        f"  without TimeBudget      {plain['share']:6.1%}   ({plain['featurewatch_seconds']:.1f} "
        f"/ {plain['rest_seconds']:.1f} s, {sum(plain['calls'].values())} calls)"
    )
    print(
        f"  TimeBudget({args.budget:g})       {kept['share']:6.1%}   "
        f"({kept['featurewatch_seconds']:.1f} / {kept['rest_seconds']:.1f} s, "
        f"{sum(kept['calls'].values())} calls, {kept['deferred']} deferred)"
    )
    print(
        f"  budget's own measure    {kept['budget_share']:6.1%}   (featurewatch / "
        f"{kept['training_seconds']:.1f} s of training steps and validation)"
    )
    print("\ncalls per callback (without / with the budget):")
    for name, calls in plain["calls"].items():
        print(f"  {name:14s} {calls:3d} / {kept['calls'].get(name, 0):3d}")
    if not args.no_resnet:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import resnet_calls

        print()
        resnet_calls.report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
