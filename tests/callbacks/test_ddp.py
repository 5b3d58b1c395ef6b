"""Two CPU processes, gloo backend: the callbacks work under DDP and log each image once."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ddp_fit.py"


def test_ddp_two_processes_logs_each_image_once(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,  # the return code is asserted below, with the output
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert (
        ranks[0]["global_step"] == ranks[1]["global_step"] == 8
    )  # 128 samples / 2 ranks / 16 per batch x 2 epochs
    assert ranks[0]["calls"] == [2, 2, 2, 2] and ranks[0]["failures"] == [
        0,
        0,
        0,
        0,
    ]
    # work on rank zero only, except DatasetExamples: every rank searches its share of the pool
    assert ranks[1]["calls"] == [0, 0, 0, 2] and ranks[1]["failures"] == [0, 0, 0, 0]

    event_files = list((tmp_path / "tb" / "version_0").glob("events.out.tfevents.*"))
    acc = EventAccumulator(
        str(tmp_path / "tb" / "version_0"), size_guidance={"images": 0, "scalars": 0}
    )
    acc.Reload()
    tags = acc.Tags()["images"]
    for tag in (
        "featurewatch/filters/net.features.0",
        "featurewatch/activations/net.features.2",
        "featurewatch/attribution/saliency",
        "featurewatch/attribution/gradcam",
        "featurewatch/examples/net.features.6",
    ):
        assert tag in tags, tags
        assert [e.step for e in acc.Images(tag)] == [4, 8]  # once per epoch, not once per rank
    assert len(event_files) == 1  # rank 1 wrote no event file
