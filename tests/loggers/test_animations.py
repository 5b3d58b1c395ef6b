"""Animated images (LoggedAnimation): every sink writes the still, the ones that can show
animations the GIF too; each read back with its back-end's own reader."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurewatch.core.filmstrip import encode_gif
from featurewatch.loggers import (
    Event,
    FilesSink,
    LoggedAnimation,
    MLflowSink,
    TensorBoardSink,
    WandbSink,
    add_animation,
)
from tests.loggers.conftest import Dom, run_chromium

KEY = "featurewatch/channels/conv1/filmstrip"
STEP = 3


def frames() -> list[np.ndarray]:
    return [np.full((12, 20, 3), v, np.uint8) for v in (0, 120, 240)]


def still() -> np.ndarray:
    return np.concatenate(frames(), axis=1)


GIF = encode_gif(frames())


def animated_event() -> Event:
    event = Event(step=STEP, epoch=1)
    add_animation(event, KEY, still(), GIF, caption="3 calls")
    event.add_image("featurewatch/channels/conv1", frames()[1], caption="plain")
    return event


def test_add_animation_adds_an_image_that_carries_a_gif() -> None:
    event = animated_event()
    (anim, plain) = event.images
    assert isinstance(anim, LoggedAnimation) and anim.gif == GIF
    np.testing.assert_array_equal(anim.pixels, still())
    assert not isinstance(plain, LoggedAnimation)
    with pytest.raises(ValueError, match="GIF"):
        add_animation(Event(step=0, epoch=0), KEY, still(), b"\x89PNG not a gif")


def test_files_sink_writes_the_gif_next_to_the_png_and_shows_it(tmp_path: Path) -> None:
    import json

    sink = FilesSink(tmp_path / "featurewatch")
    sink.write(animated_event())
    sink.close()
    recs = [json.loads(line) for line in sink.events_jsonl.read_text().splitlines()]
    (rec,) = [r for r in recs if r["key"] == KEY]
    assert rec["path"].endswith("step_00000003.png")
    assert rec["animation"] == rec["path"][:-4] + ".gif"
    assert (sink.root / rec["animation"]).read_bytes() == GIF
    np.testing.assert_array_equal(np.asarray(Image.open(sink.root / rec["path"])), still())
    (plain,) = [r for r in recs if r["key"] == "featurewatch/channels/conv1"]
    assert "animation" not in plain

    dom = Dom(run_chromium(sink.index_html.as_uri(), tmp_path / "profile", "--dump-dom"))
    (body,) = dom.find("body")
    assert body.attrs["data-ready"] == "1"
    (gif,) = [i for i in dom.find("img") if "animation" in i.attrs.get("class", "").split()]
    assert gif.attrs["src"].endswith("step_00000003.gif")
    assert (gif.attrs["data-natural-width"], gif.attrs["data-natural-height"]) == ("20", "12")
    assert len(dom.find("img")) == 3  # the two stills and the one animation


def test_tensorboard_shows_the_still(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path)
    TensorBoardSink(writer).write(animated_event())
    writer.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    (image,) = acc.Images(KEY)
    assert image.step == STEP
    png = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
    np.testing.assert_array_equal(png, still())


def test_mlflow_logs_the_gif_as_an_artifact(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("fw", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    MLflowSink(client, run_id).write(animated_event())
    local = client.download_artifacts(run_id, f"{KEY}/step_{STEP:08d}.gif", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == GIF
    pngs = [a.path for a in client.list_artifacts(run_id, "images")]
    assert any(
        re.match(rf"images/{re.escape(KEY.replace('/', '~'))}\+step\+{STEP}\+", p) for p in pngs
    )


def test_wandb_offline_run_holds_the_gif_as_a_video(tmp_path: Path, monkeypatch) -> None:
    import wandb

    from tests._wandb import wandb_records

    for var, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DIR": str(tmp_path),
        "WANDB_CONFIG_DIR": str(tmp_path / "config"),
        "WANDB_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_DATA_DIR": str(tmp_path / "data"),
    }.items():
        monkeypatch.setenv(var, value)
    run = wandb.init(project="featurewatch-tests", dir=str(tmp_path))
    try:
        WandbSink(run).write(animated_event())
        run_dir = Path(run.dir).parent
    finally:
        run.finish()
    (run_file,) = run_dir.glob("run-*.wandb")
    (row,) = [r["history"]["item"] for r in wandb_records(run_file) if r["type"] == "history"]
    assert row["trainer/global_step"] == STEP
    assert row[f"{KEY}._type"] == "image-file"
    assert row[f"{KEY}/animation._type"] == "video-file"
    video = run_dir / "files" / row[f"{KEY}/animation.path"]
    assert video.suffix == ".gif" and video.read_bytes() == GIF
    assert row[f"{KEY}/animation.caption"] == f"epoch 1 · step {STEP} · 3 calls"
