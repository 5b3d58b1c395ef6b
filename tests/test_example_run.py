"""The example run on the user's own data: ``examples/train_digits.py --data <ImageFolder>``.

A small ImageFolder of RGB photo crops (scikit-image's cat and coffee photos, shipped inside the
package) stands in for the user's data: the run must train with every callback and log each of
them, read back from the files sink next to the CSV logs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parents[1]


def make_image_folder(root: Path, per_class: int = 12, size: int = 48) -> Path:
    rng = np.random.default_rng(0)
    for name, photo in (("cat", data.chelsea()), ("coffee", data.coffee())):
        folder = root / name
        folder.mkdir(parents=True)
        h, w = photo.shape[:2]
        for i in range(per_class):
            top, left = int(rng.integers(0, h - 4 * size)), int(rng.integers(0, w - 4 * size))
            crop = Image.fromarray(photo[top : top + 4 * size, left : left + 4 * size]).resize(
                (size, size)
            )
            crop.save(folder / f"{i:02d}.png")
    return root


def test_example_trains_on_an_image_folder_with_every_callback(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "photos")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "train_digits.py"),
            "--data",
            str(folder),
            "--fast",
            "--budget",  # every callback must log here: no time budget deferring calls
            "0",
            "--logger",
            "none",
            "--out",
            str(tmp_path / "out"),
            "--size",
            "32",
            "--batch-size",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    # the page it says to open exists (with --logger none it is under featurewatch_logs/)
    (page,) = re.findall(r"open (\S+index\.html) in a browser", run.stdout + run.stderr)
    assert (tmp_path / page).is_file(), page
    (events,) = (tmp_path / "out").rglob("featurewatch_logs/events.jsonl")
    records = [json.loads(line) for line in events.read_text().splitlines()]
    images = {r["key"] for r in records if r["kind"] == "image"}
    for prefix in (
        "featurewatch/channels/",
        "featurewatch/class_model/",
        "featurewatch/deepdream/",
        "featurewatch/filters/",
        "featurewatch/activations/",
        "featurewatch/attribution/",
        "featurewatch/examples/",
        "featurewatch/dead/",
        "featurewatch/drift/",
    ):
        assert any(k.startswith(prefix) for k in images), (prefix, sorted(images))
    assert not [r for r in records if r["key"].endswith("/error")], [
        r["key"] for r in records if "error" in r["key"]
    ]
    # RGB input: the class-model images are in colour (a grayscale run gives R == G == B)
    (last,) = [r for r in records if r["key"] == "featurewatch/class_model/output"][-1:]
    pixels = np.asarray(Image.open(events.parent / last["path"]).convert("RGB")).astype(int)
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() > 30
    assert "val/acc" in run.stdout
