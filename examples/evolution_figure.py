"""Make one picture of how a logged image evolved over training, from a featurewatch files folder.

    python examples/evolution_figure.py runs/digits/version_0/featurewatch \\
        featurewatch/channels/features.2 featurewatch/class_model/output --out evolution.png

Reads ``events.jsonl`` written by :class:`featurewatch.loggers.FilesSink` (the ``--logger csv`` or
``--logger none`` runs of ``train_digits.py``); for each key, a row of the images at up to
``--columns`` evenly spread steps, titled with their epoch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("folder", type=Path, help="a featurewatch files folder (holds events.jsonl)")
    p.add_argument("keys", nargs="+", help="image keys, e.g. featurewatch/channels/features.2")
    p.add_argument("--columns", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("evolution.png"))
    args = p.parse_args(argv)

    records = [
        json.loads(line)
        for line in (args.folder / "events.jsonl").read_text().splitlines()
        if line.strip()
    ]
    rows = []
    for key in args.keys:
        images = sorted(
            (r for r in records if r.get("kind") == "image" and r["key"] == key),
            key=lambda r: r["step"],
        )
        if not images:
            known = sorted({r["key"] for r in records if r.get("kind") == "image"})
            raise SystemExit(f"no images under {key!r}; keys in this folder: {', '.join(known)}")
        picks = np.unique(
            np.linspace(0, len(images) - 1, min(args.columns, len(images))).round().astype(int)
        )
        rows.append((key, [images[i] for i in picks]))
    ncols = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(3.2 * ncols, 3.4 * len(rows)), squeeze=False
    )
    for (key, picked), ax_row in zip(rows, axes):
        for ax, rec in zip(ax_row, picked):
            ax.imshow(np.asarray(Image.open(args.folder / rec["path"])), interpolation="nearest")
            label = "init" if rec["step"] == 0 else f"epoch {rec['epoch']}"
            ax.set_title(f"{label} (step {rec['step']})", fontsize=10)
        for ax in ax_row:
            ax.axis("off")
        ax_row[0].text(
            -0.06,
            0.5,
            key.removeprefix("featurewatch/"),
            transform=ax_row[0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=10,
        )
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
