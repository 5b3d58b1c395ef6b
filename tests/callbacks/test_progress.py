"""While featurewatch works, the training bar says so - on a terminal only (issue 10).

A real ``fit`` with Lightning's ``TQDMProgressBar`` in a child process, once with its output on a
pseudo-terminal and once into a pipe (a log file, CI): the bar's text names the callback and, for
the part it reports, the layer; in the pipe no featurewatch text appears at all.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import pytorch_lightning as pl
from featurewatch import ActivationGrid, ChannelVisualization, FilterWeights
from tests._models import LitClassifier, SmallCNN, digits_loaders

layers = ["net.features.2", "net.features.6"]
train, val = digits_loaders(n=32, size=16, batch_size=16)
trainer = pl.Trainer(
    max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
    enable_model_summary=False, default_root_dir=ROOT_DIR,
    callbacks=[
        ActivationGrid(layers, num_images=2),
        ChannelVisualization(layers, max_channels=2, steps=2),
        FilterWeights(),
    ],
)
trainer.fit(LitClassifier(SmallCNN()), train, val)
print("DONE")
"""


def run(tmp_path: Path, *, terminal: bool) -> str:
    code = SCRIPT.replace("ROOT_DIR", repr(str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    if not terminal:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, env=env, timeout=300, check=True
        )
        return (done.stdout + done.stderr).decode(errors="replace")
    leader, follower = pty.openpty()
    # a real terminal has a size; tqdm draws nothing on a 0-column one
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=follower, stderr=follower, env=env, close_fds=True
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(timeout=300) == 0, out[-3000:]
    return out.decode(errors="replace")


def test_the_bar_names_the_callback_and_its_part_on_a_terminal(tmp_path: Path) -> None:
    out = run(tmp_path, terminal=True)
    assert "DONE" in out
    # which callback, which layer, how far - in the order the layers are drawn
    for name in ("ActivationGrid", "ChannelVisualization"):
        first = out.index(f"featurewatch: {name} · net.features.2 (1/2)")
        assert out.index(f"featurewatch: {name} · net.features.6 (2/2)", first) > first
    assert "featurewatch: FilterWeights" in out


def test_nothing_is_written_into_a_log_file(tmp_path: Path) -> None:
    out = run(tmp_path, terminal=False)
    assert "DONE" in out
    assert "featurewatch:" not in out
