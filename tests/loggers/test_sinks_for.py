"""sinks_for: one sink per logger, chosen through the one table, for both Lightning packages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as L
import lightning.pytorch.loggers as Lloggers
import pytest
import pytorch_lightning as pl
import pytorch_lightning.loggers as plloggers

from featurewatch.loggers import FilesSink, Sink, TensorBoardSink, register_sink, sinks_for
from featurewatch.loggers.base import Event


def make_trainer(package: Any, root: Path, **kwargs: Any) -> Any:
    return package.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


@pytest.mark.parametrize(
    "package, loggers",
    [(pl, plloggers), (L, Lloggers)],
    ids=["pytorch_lightning", "lightning.pytorch"],
)
def test_every_logger_gets_its_adapter(tmp_path, package, loggers):
    tb = loggers.TensorBoardLogger(save_dir=tmp_path / "tb")
    csv = loggers.CSVLogger(save_dir=tmp_path / "csv")
    trainer = make_trainer(package, tmp_path, logger=[tb, csv])

    sinks = sinks_for(trainer)

    assert [type(s) for s in sinks] == [TensorBoardSink, FilesSink]
    assert sinks[0].writer is tb.experiment
    assert sinks[1].root == Path(csv.log_dir) / "featurewatch"


@pytest.mark.parametrize("package", [pl, L], ids=["pytorch_lightning", "lightning.pytorch"])
def test_no_logger_still_gets_files_under_default_root_dir(tmp_path, package):
    trainer = make_trainer(package, tmp_path, logger=False)

    sinks = sinks_for(trainer)

    assert [type(s) for s in sinks] == [FilesSink]
    assert sinks[0].root == tmp_path / "featurewatch_logs"
    assert not (
        tmp_path / "featurewatch_logs"
    ).exists()  # nothing is written before the first event
    sinks[0].write(Event(step=0, epoch=0, scalars={"a": 1.0}))
    assert (tmp_path / "featurewatch_logs" / "index.html").is_file()


def test_fast_dev_run_logs_nothing(tmp_path):
    trainer = make_trainer(pl, tmp_path, fast_dev_run=True)
    assert type(trainer.loggers[0]).__name__ == "DummyLogger"
    assert sinks_for(trainer) == []


class MyTensorBoardLogger(plloggers.TensorBoardLogger):
    pass


class DirlessLogger(plloggers.Logger):
    """A third-party logger with no adapter and no directory of its own."""

    name = "dirless"
    version = 0

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass


class SaveDirLogger(DirlessLogger):
    def __init__(self, save_dir: Path) -> None:
        super().__init__()
        self._save_dir = save_dir

    @property
    def save_dir(self) -> str:
        return str(self._save_dir)


def test_subclasses_match_and_unknown_loggers_get_files_next_to_them(tmp_path):
    loggers = [
        MyTensorBoardLogger(tmp_path / "tb"),
        SaveDirLogger(tmp_path / "third"),
        DirlessLogger(),
        DirlessLogger(),
    ]
    trainer = make_trainer(pl, tmp_path, logger=loggers)

    sinks = sinks_for(trainer)

    assert [type(s) for s in sinks] == [
        TensorBoardSink,
        FilesSink,
        FilesSink,
    ]  # the two dirless share one
    assert sinks[1].root == tmp_path / "third" / "featurewatch"
    assert sinks[2].root == tmp_path / "featurewatch_logs"


class RecordingSink(Sink):
    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.events: list[Event] = []

    def write(self, event: Event) -> None:
        self.events.append(event)


@pytest.mark.usefixtures("clean_registry")
def test_register_sink_adds_and_replaces_adapters(tmp_path):
    register_sink("DirlessLogger", lambda logger, trainer: RecordingSink(logger))
    register_sink("TensorBoardLogger", lambda logger, trainer: None)  # opt out of a built-in one
    dirless = DirlessLogger()
    trainer = make_trainer(pl, tmp_path, logger=[plloggers.TensorBoardLogger(tmp_path), dirless])

    sinks = sinks_for(trainer)

    assert len(sinks) == 1 and isinstance(sinks[0], RecordingSink) and sinks[0].logger is dirless


@pytest.mark.usefixtures("clean_registry")
def test_register_sink_rejects_bad_arguments_and_factories(tmp_path):
    with pytest.raises(TypeError, match="class name such as"):
        register_sink("lightning.pytorch.loggers.CSVLogger", lambda logger, trainer: None)
    with pytest.raises(TypeError, match="must be callable"):
        register_sink("CSVLogger", FilesSink(tmp_path))
    register_sink("CSVLogger", lambda logger, trainer: "not a sink")
    trainer = make_trainer(pl, tmp_path, logger=plloggers.CSVLogger(tmp_path))
    with pytest.raises(TypeError, match="returned str; it must return a featurewatch.loggers.Sink"):
        sinks_for(trainer)


class NoCollectives:
    """A trainer whose ``log_dir`` (a DDP collective) must not be read; the rest passes through."""

    def __init__(self, trainer: pl.Trainer) -> None:
        self._trainer = trainer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trainer, name)

    @property
    def log_dir(self) -> str:
        raise AssertionError("sinks_for read trainer.log_dir, a collective under DDP")


def test_sinks_for_never_reads_trainer_log_dir(tmp_path):
    loggers = [
        plloggers.TensorBoardLogger(tmp_path),
        plloggers.CSVLogger(tmp_path),
        DirlessLogger(),
    ]
    for trainer in (
        make_trainer(pl, tmp_path, logger=loggers),
        make_trainer(pl, tmp_path, logger=False),
    ):
        assert sinks_for(NoCollectives(trainer))


_SYNC_SCRIPT = """
import sys
from pathlib import Path
import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from featurewatch.loggers import sinks_for

root, sync = Path(sys.argv[1]), sys.argv[2] == "1"
tb = TensorBoardLogger(save_dir=root / "tb")
wb = WandbLogger(save_dir=str(root / "wandb"), project="fw-test", sync_tensorboard=sync)
kw = dict(default_root_dir=root, accelerator="cpu", devices=1, enable_checkpointing=False,
          enable_progress_bar=False, enable_model_summary=False)
both = [type(s).__name__ for s in sinks_for(pl.Trainer(logger=[tb, wb], **kw))]
alone = [type(s).__name__ for s in sinks_for(pl.Trainer(logger=[wb], **kw))]
wb.experiment.finish()
print(both, alone)
"""


@pytest.mark.parametrize("sync", [False, True])
def test_wandb_run_that_syncs_tensorboard_gets_no_second_copy(tmp_path, sync):
    """WandbLogger(sync_tensorboard=True) mirrors the TensorBoard event files into W&B: with a
    TensorBoardLogger beside it, featurewatch writes to TensorBoard only, else W&B shows it twice.
    Without a TensorBoard logger there is nothing to mirror, and the W&B sink stays. (In a
    subprocess: W&B's TensorBoard patch outlives the run and would leak into other tests.)"""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}
    env["PYTHONPATH"] = (
        str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    )
    run = subprocess.run(
        [sys.executable, "-c", _SYNC_SCRIPT, str(tmp_path), "1" if sync else "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    both = ["TensorBoardSink"] if sync else ["TensorBoardSink", "WandbSink"]
    assert run.stdout.strip().splitlines()[-1] == f"{both} ['WandbSink']"
