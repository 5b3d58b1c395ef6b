"""Logging back-ends behind one small interface (:class:`Sink`).

Callbacks fill an :class:`Event` and hand it to every sink that :func:`sinks_for` built from the
trainer's loggers; they never touch ``logger.experiment`` themselves. Adapters:

* :class:`TensorBoardSink` for ``TensorBoardLogger``;
* :class:`WandbSink` for ``WandbLogger``;
* :class:`MLflowSink` for ``MLFlowLogger``;
* :class:`FilesSink` (PNGs, ``events.jsonl`` and a static ``index.html``) for ``CSVLogger``, any
  logger without an adapter, and trainers without a logger.

:func:`register_sink` adds or replaces an adapter. A sink writes each item of an event on its own
and names the items it lost in one :class:`SinkWriteError`; a sink that can write nothing is marked
broken and gets no more events (:func:`any_healthy` says whether any sink can still receive).
Importing this package imports no back-end (TensorBoard, W&B, MLflow are optional dependencies).
"""

from featurewatch.loggers.base import (
    Event,
    FailedItem,
    LoggedImage,
    Sink,
    SinkBrokenError,
    SinkWriteError,
    WriteReport,
    any_healthy,
)
from featurewatch.loggers.files import FilesSink
from featurewatch.loggers.mlflow import MLflowSink
from featurewatch.loggers.registry import SinkFactory, files_next_to, register_sink, sinks_for
from featurewatch.loggers.tensorboard import TensorBoardSink
from featurewatch.loggers.wandb import WandbSink

__all__ = [
    "Event",
    "FailedItem",
    "FilesSink",
    "LoggedImage",
    "MLflowSink",
    "Sink",
    "SinkBrokenError",
    "SinkFactory",
    "SinkWriteError",
    "TensorBoardSink",
    "WandbSink",
    "WriteReport",
    "any_healthy",
    "files_next_to",
    "register_sink",
    "sinks_for",
]
