"""2-process gloo DDP: DeadNeuronMonitor reports exactly what one process sees on the same data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "_dead_ddp_run.py"
ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT")
    }
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    env = _env()
    ddp = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path), "ddp"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    single = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "single"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out, _ = ddp.communicate(timeout=180)
    assert ddp.returncode == 0, out[-3000:]
    assert single.returncode == 0, single.stdout[-1500:] + single.stderr[-1500:]

    ranks = [json.loads((tmp_path / f"ddp_rank{r}.json").read_text()) for r in (0, 1)]
    one = json.loads((tmp_path / "single_rank0.json").read_text())
    assert [r["world_size"] for r in ranks] == [2, 2] and one["world_size"] == 1

    # Both ranks took part in the reduction and hold the same numbers.
    assert ranks[0]["history"] == ranks[1]["history"]
    assert ranks[0]["dead_channels"] == ranks[1]["dead_channels"]

    # ... which are exactly what a single process sees on the union of their data.
    expected_dead = {"net.relu@0": [3], "net.relu@1": [], "net.conv3": [1, 5]}
    assert one["dead_channels"] == expected_dead
    assert ranks[0]["dead_channels"] == expected_dead
    assert ranks[0]["on_count"] == one["on_count"]
    assert one["on_count"]["net.conv3"][1] == 0 and sum(one["on_count"]["net.relu@1"]) > 0
    assert [e["step"] for e in ranks[0]["history"]] == [e["step"] for e in one["history"]] == [4, 8]
    for got, want in zip(ranks[0]["history"], one["history"]):
        assert got["layers"].keys() == want["layers"].keys() == expected_dead.keys()
        for key, w in want["layers"].items():
            g = got["layers"][key]
            assert g["positions"] == w["positions"] == 128 * 16 * 16, key
            assert g["updates"] == w["updates"] == 4, key
            assert g["on_rate"] == w["on_rate"], key
            assert g["silent_steps"] == w["silent_steps"], key
            assert g["max_abs"] == w["max_abs"], key
            # Sums of magnitudes are added in a different order: equal up to float rounding.
            assert g["mean_abs"] == pytest.approx(w["mean_abs"], rel=1e-6, abs=1e-9), key


def test_strict_problem_on_one_rank_raises_on_every_rank(tmp_path: Path) -> None:
    """Only rank 1's hook sees a bad tensor; with strict=True both ranks raise at the same
    evaluation (the first, after step 4) instead of rank 0 hanging in the next collective."""
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "strict"],
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode != 0, run.stdout[-1500:] + run.stderr[-1500:]
    rank0 = (tmp_path / "strict_rank0.txt").read_text()
    rank1 = (tmp_path / "strict_rank1.txt").read_text()
    assert rank1.startswith("step 4: ") and "'net.tap' call 0 changed from 1 channels" in rank1, (
        rank1
    )
    assert rank0.startswith("step 4: ") and "failed on another process" in rank0, rank0
