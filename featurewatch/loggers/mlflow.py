"""MLflow adapter: writes events through the ``MlflowClient`` and run of an ``MLFlowLogger``."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from featurewatch.loggers._shared import (
    bin_values,
    captions_by_group,
    captions_key,
    check_pixels,
    histogram_image,
    safe_segments,
)
from featurewatch.loggers.base import Event, Sink, WriteReport

__all__ = ["MLflowSink", "mlflow_key"]


def mlflow_key(key: str) -> str:
    """Make ``key`` a valid MLflow metric / image key.

    MLflow accepts letters, digits, ``_ - . /`` and spaces, and rejects names that
    ``posixpath.normpath`` would change (``a//b``, ``a/../b``); anything else becomes ``_``.
    ``featurewatch/<what>/<layer>`` keys pass unchanged.
    """
    return "/".join(safe_segments(key, allow_space=True))


class MLflowSink(Sink):
    """Write events to an MLflow run.

    * scalars: one ``log_batch`` call per event (metric history with ``step``);
    * images: ``log_image(run_id, uint8, key=..., step=...)``, shown in the run's image grid with a
      step slider;
    * histograms: MLflow has no histogram type, so each is drawn as a bar chart (30 bins over the
      finite values) and logged like an image under its own key;
    * animations (the GIF of a :class:`~featurewatch.loggers.LoggedAnimation`, whose still is
      logged like any image): the artifact ``<key>/step_<step:08d>.gif`` (``log_artifact``);
    * texts: ``log_text`` artifacts ``<key>/step_<step:08d>.txt``;
    * captions (MLflow images have none): one Markdown artifact per key group and event,
      ``featurewatch/<what>/captions/step_<step:08d>.md``.

    Keys are made valid with :func:`mlflow_key` (slashes are fine in MLflow). Each call above is
    made on its own, so one refused image costs only that image; the
    :class:`~featurewatch.loggers.SinkWriteError` raised afterwards names what was lost.

    Args:
        client: an ``mlflow.MlflowClient``, usually ``MLFlowLogger.experiment``.
        run_id: the run to write to, usually ``MLFlowLogger.run_id``.
    """

    def __init__(self, client: Any, run_id: str) -> None:
        for method in ("log_batch", "log_image", "log_text"):
            if not callable(getattr(client, method, None)):
                raise TypeError(
                    f"MLflowSink needs an MlflowClient (with `{method}`), "
                    f"got {type(client).__name__}; "
                    "pass MLFlowLogger.experiment"
                )
        if not isinstance(run_id, str) or not run_id:
            raise ValueError(
                f"MLflowSink needs the id of an MLflow run, got {run_id!r}; "
                "pass MLFlowLogger.run_id"
            )
        self.client = client
        self.run_id = run_id

    @property
    def destination(self) -> str:
        return f"MLflowSink (run {self.run_id})"

    def write(self, event: Event) -> None:
        step, report = event.step, WriteReport(self, event)
        if event.scalars:
            with report.item("scalar", *event.scalars):  # one log_batch call for all of them
                from mlflow.entities import Metric

                now = int(time.time() * 1000)
                metrics = [Metric(mlflow_key(k), v, now, step) for k, v in event.scalars.items()]
                self.client.log_batch(self.run_id, metrics=metrics)
        for image in event.images:
            with report.item("image", image.key):
                self.client.log_image(
                    self.run_id, check_pixels(image), key=mlflow_key(image.key), step=step
                )
        for image in event.images:
            gif = getattr(image, "gif", b"")  # a LoggedAnimation: its GIF as an artifact
            if gif:
                with report.item("animation", image.key):
                    self._log_gif(image.key, gif, step)
        for key, values in event.histograms.items():
            with report.item("histogram", key):
                chart = histogram_image(bin_values(values), title=f"{key} · step {step}")
                self.client.log_image(self.run_id, chart, key=mlflow_key(key), step=step)
        for key, text in event.texts.items():
            with report.item("text", key):
                self.client.log_text(self.run_id, text, f"{mlflow_key(key)}/step_{step:08d}.txt")
        for group, table in captions_by_group(event.images, step, event.epoch).items():
            with report.item("captions", captions_key(group)):
                self.client.log_text(
                    self.run_id, table, f"{mlflow_key(captions_key(group))}/step_{step:08d}.md"
                )
        report.raise_failures()

    def _log_gif(self, key: str, gif: bytes, step: int) -> None:
        log_artifact = getattr(self.client, "log_artifact", None)
        if not callable(log_artifact):
            raise TypeError(
                f"{type(self.client).__name__} has no `log_artifact`; pass MLFlowLogger.experiment"
            )
        with tempfile.TemporaryDirectory(prefix="featurewatch-") as tmp:
            path = Path(tmp) / f"step_{step:08d}.gif"
            path.write_bytes(gif)
            log_artifact(self.run_id, str(path), mlflow_key(key))
