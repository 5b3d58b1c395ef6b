"""Offline W&B runs for the tests: the environment of a run that stays on disk, and its records
read back with W&B's own reader."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

#: Variables that keep a run offline and quiet, with no git probing.
OFFLINE = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_CONSOLE": "off",
    "WANDB_DISABLE_GIT": "true",
}


@contextmanager
def offline_wandb(root: Path) -> Iterator[None]:
    """Inside, a W&B run is offline and keeps its run, config, cache and data under ``root``
    (never the user's home)."""
    with pytest.MonkeyPatch.context() as env:
        for var, value in OFFLINE.items():
            env.setenv(var, value)
        for var, sub in (
            ("WANDB_DIR", ""),
            ("WANDB_CONFIG_DIR", "config"),
            ("WANDB_CACHE_DIR", "cache"),
            ("WANDB_DATA_DIR", "data"),
        ):
            (root / sub).mkdir(exist_ok=True)
            env.setenv(var, str(root / sub))
        yield


def finish(logger: Any) -> Path:
    """Finish the ``WandbLogger``'s run; its ``.wandb`` transaction log."""
    run_dir = Path(logger.experiment.dir).parent
    logger.experiment.finish()
    (run_file,) = run_dir.glob("run-*.wandb")
    return run_file


def wandb_records(run_file: Path) -> list[dict]:
    """The records of a ``.wandb`` transaction log, decoded by W&B's own ``wandb leet inspect``."""
    done = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
