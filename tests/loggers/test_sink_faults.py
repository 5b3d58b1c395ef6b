"""Logger faults stay small: one refused item costs that item, a dead sink warns once, goes quiet.

Every fault here is real: an empty image (TensorBoard, W&B and the files sink refuse it through
PIL's "cannot write empty image", MLflow with its own "zero-size array" error), a log folder
whose path runs through a regular file (the tests run as root, who ignores ``chmod``, so a
read-only folder cannot be made; a regular file in the way fails ``mkdir`` for everyone), a
finished W&B run. No writer is monkeypatched.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from featurewatch.callbacks.base import FeatureWatchWarning
from featurewatch.loggers import (
    Event,
    FilesSink,
    MLflowSink,
    Sink,
    SinkBrokenError,
    SinkWriteError,
    TensorBoardSink,
    WandbSink,
    any_healthy,
)
from featurewatch.loggers.base import LoggedImage
from tests.loggers.conftest import (
    HISTOGRAM_KEY,
    IMAGE_KEYS,
    SCALAR_KEY,
    TEXT_KEY,
    Probe,
    fit,
    pattern,
    sample_event,
)

EMPTY_KEY = "featurewatch/probe/empty"


def faulty_event(step: int) -> Event:
    """:func:`sample_event` with an empty image first: the first item fails, the rest must not."""
    event = sample_event(step)
    event.images.insert(0, LoggedImage(EMPTY_KEY, np.zeros((0, 5, 3), np.uint8)))
    return event


def assert_only_the_empty_image_failed(
    raised: pytest.ExceptionInfo[SinkWriteError], reason: str = "cannot write empty image"
) -> None:
    err = raised.value
    assert not isinstance(err, SinkBrokenError)
    assert [(f.kind, f.key) for f in err.failed] == [("image", EMPTY_KEY)]
    assert isinstance(err.failed[0].error, ValueError)
    assert reason in str(err) and "other items of this event were written" in str(err)
    assert err.written >= 5  # two images, scalar, histogram, text (and captions)


def read_tensorboard(log_dir: str) -> EventAccumulator:
    acc = EventAccumulator(
        log_dir, size_guidance={"images": 0, "scalars": 0, "histograms": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def test_tensorboard_writes_the_rest_of_an_event_when_add_image_raises(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    sink = TensorBoardSink(logger.experiment)
    with pytest.raises(SinkWriteError) as raised:
        sink.write(faulty_event(3))
    assert_only_the_empty_image_failed(raised)
    assert sink.healthy
    sink.write(sample_event(4))  # the sink goes on: the next event is complete

    acc = read_tensorboard(logger.log_dir)
    assert EMPTY_KEY not in acc.Tags()["images"]
    for key in IMAGE_KEYS:
        assert [e.step for e in acc.Images(key)] == [3, 4]
    assert [(e.step, e.value) for e in acc.Scalars(SCALAR_KEY)] == [
        (3, pytest.approx(0.3)),
        (4, pytest.approx(0.4)),
    ]
    assert [e.step for e in acc.Histograms(HISTOGRAM_KEY)] == [3, 4]
    assert [e.step for e in acc.Tensors(f"{TEXT_KEY}/text_summary")] == [3, 4]
    assert [e.step for e in acc.Tensors("featurewatch/probe/captions/text_summary")] == [3, 4]


def read_jsonl(sink: FilesSink) -> list[dict]:
    return [json.loads(line) for line in sink.events_jsonl.read_text().splitlines()]


def test_files_sink_writes_the_rest_when_an_image_cannot_be_written(tmp_path):
    sink = FilesSink(tmp_path, page_every=0)
    blocked = tmp_path / "images" / "featurewatch" / "probe" / "layer2"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a regular file where the images of layer2 would go")
    with pytest.raises(SinkWriteError) as raised:
        sink.write(faulty_event(3))
    err = raised.value
    assert [(f.kind, f.key) for f in err.failed] == [("image", EMPTY_KEY), ("image", IMAGE_KEYS[1])]
    assert isinstance(err.failed[1].error, OSError) and err.written == 4
    assert sink.healthy  # some items were written: the folder works

    records = read_jsonl(sink)
    assert sorted((r["kind"], r["key"]) for r in records) == sorted(
        [("image", IMAGE_KEYS[0]), ("scalar", SCALAR_KEY)]
        + [("histogram", HISTOGRAM_KEY), ("text", TEXT_KEY)]
    )
    (image,) = [r for r in records if r["kind"] == "image"]
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / image["path"])), pattern(3))
    assert sink.index_html.is_file()


def test_files_sink_that_cannot_write_is_broken_after_one_error_and_then_quiet(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    sink = FilesSink(tmp_path / "file" / "featurewatch")
    with pytest.raises(SinkBrokenError, match="could not write anything at step 0") as raised:
        sink.write(sample_event(0))
    assert isinstance(raised.value.__cause__, OSError)
    assert "sends it nothing more in this run" in str(raised.value)
    assert sink.broken and not sink.healthy
    for step in (1, 2, 3):
        sink.write(sample_event(step))  # no error, no attempt: it is broken
    sink.close()  # nothing to write, no error

    healthy = FilesSink(tmp_path / "ok")
    assert not any_healthy([sink]) and any_healthy([sink, healthy]) and not any_healthy([])


def test_refused_values_do_not_break_a_sink_but_failing_destinations_do():
    class Flaky(Sink):
        def __init__(self, error: Exception) -> None:
            self.error, self.attempts = error, 0

        def write(self, event: Event) -> None:
            self.attempts += 1
            raise self.error

    refusing = Flaky(ValueError("value out of range"))
    for _ in range(2):
        with pytest.raises(ValueError, match="out of range"):
            refusing.write(sample_event(0))
    assert refusing.healthy and refusing.attempts == 2

    failing = Flaky(ConnectionError("server gone"))
    with pytest.raises(SinkBrokenError, match=r"Flaky could not write .*ConnectionError: server"):
        failing.write(sample_event(0))
    failing.write(sample_event(1))
    assert failing.broken and failing.attempts == 1


def test_wandb_logs_the_rest_of_the_row_and_a_finished_run_breaks_the_sink(tmp_path, monkeypatch):
    import wandb

    from tests._wandb import wandb_records

    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    run = wandb.init(project="featurewatch-tests", dir=tmp_path)
    sink = WandbSink(run)
    with pytest.raises(SinkWriteError) as raised:
        sink.write(faulty_event(3))
    assert_only_the_empty_image_failed(raised)
    run_dir = Path(run.dir).parent
    run.finish()
    (row,) = [
        r["history"]["item"]
        for r in wandb_records(next(run_dir.glob("run-*.wandb")))
        if r["type"] == "history"
    ]
    assert f"{EMPTY_KEY}._type" not in row
    assert all(f"{key}._type" in row for key in IMAGE_KEYS)
    assert row[SCALAR_KEY] == pytest.approx(0.3) and row["trainer/global_step"] == 3

    with pytest.raises(SinkBrokenError, match=r"WandbSink \(run .*\) could not write anything"):
        sink.write(sample_event(4))  # the run is finished: W&B refuses every log call
    assert sink.broken
    sink.write(sample_event(5))


def test_mlflow_logs_the_rest_of_an_event_when_an_image_is_refused(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("faults", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    sink = MLflowSink(client, run_id)
    with pytest.raises(SinkWriteError) as raised:
        sink.write(faulty_event(3))
    assert_only_the_empty_image_failed(raised, "zero-size array")  # MLflow's own check
    assert [m.value for m in client.get_metric_history(run_id, SCALAR_KEY)] == [pytest.approx(0.3)]
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    assert any(p.startswith("images/featurewatch~probe~layer1+step+3+") for p in images)
    assert not any("empty" in p for p in images)
    assert client.list_artifacts(run_id, TEXT_KEY)


class OtherProbe(Probe):
    default_name = "other_probe"


def fit_recording_warnings(root: Path, logger, callbacks) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(root, logger, callbacks)
    return [str(w.message) for w in caught if issubclass(w.category, FeatureWatchWarning)]


def test_unwritable_log_folder_warns_once_per_sink_not_per_call(tmp_path):
    csv = CSVLogger(tmp_path)
    Path(csv.log_dir).mkdir(parents=True)
    (Path(csv.log_dir) / "featurewatch").write_text("a file where featurewatch's folder would go")
    probes = [
        Probe(every_n_epochs=None, every_n_train_steps=1, at_start=True),
        OtherProbe(every_n_epochs=None, every_n_train_steps=1),
    ]
    messages = fit_recording_warnings(tmp_path, csv, probes)
    assert probes[0].calls == 5 and probes[1].calls == 4  # steps 0-4 and 1-4: many calls
    assert len(messages) == 2, messages  # one per sink (each callback has its own), not per call
    assert all("could not write anything" in m and "featurewatch" in m for m in messages)
    assert (Path(csv.log_dir) / "metrics.csv").is_file()  # Lightning's own logging went on


def test_a_broken_sink_does_not_cost_the_healthy_one(tmp_path):
    csv = CSVLogger(tmp_path / "csv")
    Path(csv.log_dir).mkdir(parents=True)
    (Path(csv.log_dir) / "featurewatch").write_text("in the way")
    tensorboard = TensorBoardLogger(tmp_path / "tb")
    probe = Probe(every_n_epochs=None, every_n_train_steps=1, at_start=True)
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        logger=[csv, tensorboard],
        callbacks=[probe],
        max_epochs=2,
        limit_train_batches=2,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    from tests.loggers.conftest import TinyModule, tiny_loader

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyModule(), tiny_loader())
    ours = [w for w in caught if issubclass(w.category, FeatureWatchWarning)]
    assert len(ours) == 1 and "FilesSink" in str(ours[0].message)
    acc = read_tensorboard(tensorboard.log_dir)
    assert [e.step for e in acc.Scalars(SCALAR_KEY)] == [0, 1, 2, 3, 4]
