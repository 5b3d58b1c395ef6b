"""MLflowSink with a real MLFlowLogger (SQLite tracking store), read back with MlflowClient."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
from mlflow import MlflowClient
from PIL import Image
from pytorch_lightning.loggers import MLFlowLogger

from featurewatch.loggers import Event, MLflowSink, sinks_for
from featurewatch.loggers.mlflow import mlflow_key
from tests.loggers.conftest import (
    HISTOGRAM_KEY,
    IMAGE_KEYS,
    SCALAR_KEY,
    TEXT_KEY,
    caption,
    pattern,
    sample_event,
)

STEPS = (0, 3)
ODD_KEY = "featurewatch/probe/odd:key[0]//x"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two events written through the sink sinks_for builds for an MLFlowLogger; the run read "
    "back."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    logger = MLFlowLogger(
        experiment_name="featurewatch-tests",
        tracking_uri=uri,
        artifact_location=str(root / "artifacts"),
    )
    trainer = pl.Trainer(
        default_root_dir=root,
        logger=logger,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
    )
    (sink,) = sinks_for(trainer)
    assert isinstance(sink, MLflowSink) and sink.run_id == logger.run_id
    for epoch, step in enumerate(STEPS):
        event = sample_event(step, epoch)
        event.add_scalar(ODD_KEY, 1.5)
        sink.write(event)
    client = MlflowClient(tracking_uri=uri)
    return client, logger.run_id, root


def artifact(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path:
    return Path(client.download_artifacts(run_id, path, str(dst)))


def test_scalars_have_their_steps(run):
    client, run_id, _ = run
    history = client.get_metric_history(run_id, SCALAR_KEY)
    assert sorted((m.step, m.value) for m in history) == [(s, pytest.approx(s / 10)) for s in STEPS]
    assert mlflow_key(ODD_KEY) == "featurewatch/probe/odd_key_0_/_/x"
    assert [m.value for m in client.get_metric_history(run_id, mlflow_key(ODD_KEY))] == [1.5, 1.5]


def test_images_round_trip_exactly_per_step(run, tmp_path):
    client, run_id, _ = run
    pngs = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]
    for key, shift, shape in ((IMAGE_KEYS[0], 0, (6, 5)), (IMAGE_KEYS[1], 1, (4, 7))):
        for step in STEPS:
            name = key.replace("/", "~")
            (path,) = [p for p in pngs if re.match(rf"images/{re.escape(name)}\+step\+{step}\+", p)]
            pixels = np.asarray(Image.open(artifact(client, run_id, path, tmp_path)))
            np.testing.assert_array_equal(pixels, pattern(step + shift, *shape))
    # Histograms are drawn as charts and logged as images under their own key, one per step.
    charts = [p for p in pngs if p.startswith(f"images/{HISTOGRAM_KEY.replace('/', '~')}+step+")]
    assert len(charts) == len(STEPS)
    chart = np.asarray(Image.open(artifact(client, run_id, charts[0], tmp_path)).convert("RGB"))
    assert chart.shape[0] > 100 and chart.std() > 10
    assert client.get_run(run_id).data.tags["mlflow.loggedImages"] == "True"


def test_texts_and_captions_are_artifacts_per_step(run, tmp_path):
    client, run_id, _ = run
    for epoch, step in enumerate(STEPS):
        note = artifact(client, run_id, f"{TEXT_KEY}/step_{step:08d}.txt", tmp_path).read_text()
        assert note.startswith(f"note at step {step}\n    indented line")
        table = artifact(
            client, run_id, f"featurewatch/probe/captions/step_{step:08d}.md", tmp_path
        ).read_text()
        assert table.startswith(f"epoch {epoch} · step {step}\n")
        assert caption(IMAGE_KEYS[1], step).replace("|", "\\|") in table


def test_rejects_what_is_not_a_client_or_run(run):
    client, _, _ = run
    with pytest.raises(TypeError, match="pass MLFlowLogger.experiment"):
        MLflowSink(object(), "abc")
    with pytest.raises(ValueError, match="pass MLFlowLogger.run_id"):
        MLflowSink(client, None)


def test_empty_event_writes_nothing(run):
    client, run_id, _ = run
    before = client.get_metric_history(run_id, SCALAR_KEY)
    MLflowSink(client, run_id).write(Event(step=99, epoch=0))
    assert client.get_metric_history(run_id, SCALAR_KEY) == before
