"""One real fit with FilterWeights, ActivationGrid, AttributionMaps and DatasetExamples logging to
TensorBoard, W&B (offline), MLflow and CSV at once; everything is read back with each back-end's own
reader."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from featurewatch import (
    ActivationGrid,
    AttributionMaps,
    DatasetExamples,
    FeatureWatchCallback,
    FilterWeights,
)
from tests._models import LitClassifier, digits_loaders
from tests._wandb import wandb_records
from tests.callbacks.conftest import make_trainer
from tests.callbacks.test_class_model import has_text, labelled_cells, strip_of

FILTERS = "featurewatch/filters/net.features.0"
ACTS = "featurewatch/activations/net.features.6"
GRADCAM = "featurewatch/attribution/gradcam"
EXAMPLES = "featurewatch/examples/net.features.6"
STEPS = [0, 4, 8]  # at_start, end of epoch 0 and of epoch 1 (4 steps per epoch)
# the header strip above a picture (layer, epoch, step): one line of 11 px / 12 px text
HEADER_11, HEADER_12 = 20, 21
# the title strip above a tile narrower than 77 px (10 px text)
STRIP_10 = 19
# SmallCNN: 8 filters of 1x3x3, enlarged 11x to 33 px (>= 32), 2 rows x 4 columns, 2 px padding
FILTER_SIZE = (HEADER_11 + 2 * 35 + 2, 4 * 35 + 2)


class Failing(FeatureWatchCallback):
    default_name = "failing"

    def visualize(self, trainer, pl_module, event):
        raise ValueError("visualization exploded")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("all_loggers")
    with pytest.MonkeyPatch.context() as env:
        for var, value in {
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "WANDB_CONSOLE": "off",
            "WANDB_DISABLE_GIT": "true",
            "WANDB_DIR": str(root),
            "WANDB_CONFIG_DIR": str(root / "wandb_config"),
            "WANDB_CACHE_DIR": str(root / "wandb_cache"),
            "WANDB_DATA_DIR": str(root / "wandb_data"),
        }.items():
            env.setenv(var, value)
        loggers = [
            TensorBoardLogger(root / "tb", name="run", version=0),
            WandbLogger(save_dir=root, project="featurewatch-tests"),
            MLFlowLogger(
                experiment_name="fw",
                tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                artifact_location=str(root / "mlartifacts"),
            ),
            CSVLogger(root / "csv", name="run", version=0),
        ]
        callbacks = [
            FilterWeights(at_start=True),
            ActivationGrid(layers=["net.features.6"], num_images=3, at_start=True),
            AttributionMaps(methods=("gradcam",), num_images=3, at_start=True),
            DatasetExamples(["net.features.6"], max_channels=2, k=2, pool_size=16, at_start=True),
            Failing(),
        ]
        train, val = digits_loaders(n=128)
        trainer = make_trainer(root, callbacks, logger=loggers, max_epochs=2, log_every_n_steps=1)
        with pytest.warns(UserWarning, match="visualization exploded"):
            trainer.fit(LitClassifier(), train, val)
        wandb_dir = Path(loggers[1].experiment.dir).parent
        loggers[1].experiment.finish()
    return root, loggers, wandb_dir


def test_tensorboard_event_reader(run):
    _root, loggers, _ = run
    acc = EventAccumulator(
        loggers[0].log_dir, size_guidance={"images": 0, "scalars": 0, "tensors": 0}
    )
    acc.Reload()
    assert [e.step for e in acc.Images(FILTERS)] == STEPS
    assert [(e.height, e.width) for e in acc.Images(FILTERS)] == [FILTER_SIZE] * 3
    acts = acc.Images(ACTS)
    assert [e.step for e in acts] == STEPS
    png = Image.open(io.BytesIO(acts[-1].encoded_image_string))
    # 16 maps of 8x8 enlarged to 32 px in a 4x4 grid (1 px padding) = 133 px wide, each under
    # its channel's title strip, under the probe's title; 3 probes side by side (4 px), under
    # the header
    block = HEADER_11 + 1 + 1 + 4 * (STRIP_10 + 32 + 1)
    size = (3 * (133 + 4) + 4, HEADER_12 + block + 8)
    assert png.size == (acts[-1].width, acts[-1].height) == size
    # each map under its channel index: crop probe 0's block and read its cells' strips
    pixels = np.asarray(png.convert("RGB"))
    first = pixels[HEADER_12 + 4 : HEADER_12 + 4 + block, 4 : 4 + 133]
    for c, (strip, tile) in enumerate(labelled_cells(first, 16, 32, 4, pad=1)):
        assert np.array_equal(strip, strip_of((f"ch {c}", str(c)), 32)), c
        assert has_text(strip), c
    assert [e.step for e in acc.Scalars("featurewatch/filters/seconds")] == STEPS
    assert "featurewatch/filters/net.features.0/weights" in acc.Tags()["histograms"]
    for key in (GRADCAM, EXAMPLES):
        assert [e.step for e in acc.Images(key)] == STEPS, key
    error_tags = [t for t in acc.Tags()["tensors"] if t.startswith("featurewatch/failing/error")]
    assert error_tags, acc.Tags()["tensors"]


def test_wandb_offline_run_files(run):
    _, _, wandb_dir = run
    (run_file,) = wandb_dir.glob("run-*.wandb")
    rows = [r["history"]["item"] for r in wandb_records(run_file) if r["type"] == "history"]
    ours = [r for r in rows if f"{FILTERS}._type" in r]
    assert [r["trainer/global_step"] for r in ours] == STEPS
    for row in ours:
        png = Image.open(wandb_dir / "files" / row[f"{FILTERS}.path"])
        assert (png.height, png.width) == FILTER_SIZE
        assert f"step {row['trainer/global_step']}" in row[f"{FILTERS}.caption"]
    assert sum(f"{ACTS}._type" in r for r in rows) == 3
    for key in (GRADCAM, EXAMPLES):
        assert [r["trainer/global_step"] for r in rows if f"{key}._type" in r] == STEPS, key
    assert sum("featurewatch/failing/error._type" in r for r in rows) == 2  # 2 epoch ends


def test_mlflow_local_store(run, tmp_path):
    root, loggers, _ = run
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    run_id = loggers[2].run_id
    seconds = client.get_metric_history(run_id, "featurewatch/filters/seconds")
    assert sorted(m.step for m in seconds) == STEPS
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    assert images, "no image artifacts"
    local = Path(client.download_artifacts(run_id, "images", str(tmp_path)))
    pngs = [p for p in local.rglob("*.png") if "filters~net.features.0+step" in p.name]
    assert len(pngs) == 3 and {Image.open(p).size[::-1] for p in pngs} == {FILTER_SIZE}


def test_files_sink_next_to_csv_logs(run):
    _root, loggers, _ = run
    files = Path(loggers[3].log_dir) / "featurewatch"
    records = [json.loads(line) for line in (files / "events.jsonl").read_text().splitlines()]
    filter_records = [r for r in records if r.get("key") == FILTERS]
    assert [r["step"] for r in filter_records] == STEPS
    for r in filter_records:
        png = Image.open(files / r["path"])
        assert (png.height, png.width) == FILTER_SIZE
    errors = [r for r in records if r.get("key") == "featurewatch/failing/error"]
    assert len(errors) == 2 and "visualization exploded" in errors[0]["value"]
    assert (files / "index.html").is_file()


def test_every_backend_shows_the_same_pixels(run, tmp_path):
    """The last Grad-CAM and dataset-example images, read back from TensorBoard's event file, W&B's
    media file, MLflow's artifact store and the files sink, are the same pixels."""
    root, loggers, wandb_dir = run
    acc = EventAccumulator(loggers[0].log_dir, size_guidance={"images": 0})
    acc.Reload()
    (run_file,) = wandb_dir.glob("run-*.wandb")
    rows = [r["history"]["item"] for r in wandb_records(run_file) if r["type"] == "history"]
    files = Path(loggers[3].log_dir) / "featurewatch"
    records = [json.loads(line) for line in (files / "events.jsonl").read_text().splitlines()]
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    local = Path(client.download_artifacts(loggers[2].run_id, "images", str(tmp_path)))
    for key, mlflow_name in (
        (GRADCAM, "attribution~gradcam"),
        (EXAMPLES, "examples~net.features.6"),
    ):
        tb = Image.open(io.BytesIO(acc.Images(key)[-1].encoded_image_string)).convert("RGB")
        (wb_row,) = [
            r for r in rows if f"{key}._type" in r and r["trainer/global_step"] == STEPS[-1]
        ]
        wb = Image.open(wandb_dir / "files" / wb_row[f"{key}.path"]).convert("RGB")
        (rec,) = [r for r in records if r.get("key") == key and r["step"] == STEPS[-1]]
        fs = Image.open(files / rec["path"]).convert("RGB")
        (ml,) = [q for q in local.rglob("*.png") if f"{mlflow_name}+step+{STEPS[-1]}+" in q.name]
        ml_img = Image.open(ml).convert("RGB")
        assert (
            tb.size[0] > 100 and tb.tobytes() == wb.tobytes() == fs.tobytes() == ml_img.tobytes()
        ), key
