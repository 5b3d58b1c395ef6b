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

**Animations.** :func:`add_animation` adds a :class:`LoggedAnimation` to an event: an ordinary
image (every sink shows it, a custom sink included) that also carries the bytes of an animated GIF.
Sinks that can show an animation write the GIF as well: the files sink next to the PNG (shown on
its page), W&B as a ``wandb.Video`` under ``<key>/animation``, MLflow as the artifact
``<key>/step_<step:08d>.gif``; TensorBoard has no working animation type (``add_video`` is broken
with moviepy 2) and shows the still image only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from featurewatch.core.images import to_uint8
from featurewatch.loggers._shared import strip_context
from featurewatch.loggers.base import (
    Event,
    FailedItem,
    LoggedImage,
    LoggedTable,
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
    "LoggedAnimation",
    "LoggedImage",
    "LoggedTable",
    "MLflowSink",
    "Sink",
    "SinkBrokenError",
    "SinkFactory",
    "SinkWriteError",
    "TensorBoardSink",
    "WandbSink",
    "WriteReport",
    "add_animation",
    "any_healthy",
    "files_next_to",
    "register_sink",
    "sinks_for",
    "strip_context",
]


@dataclass(frozen=True)
class LoggedAnimation(LoggedImage):
    """An image that also comes as an animated GIF (``gif``: the file's bytes, encoded once).

    ``pixels`` is the still shown by every sink; sinks that can show animations read ``gif``
    (see the package docstring).
    """

    gif: bytes = b""


def add_animation(
    event: Event, key: str, still: torch.Tensor | np.ndarray, gif: bytes, caption: str = ""
) -> None:
    """Add the image ``still`` under ``key`` with its animated version ``gif`` (GIF bytes, e.g.
    from :func:`featurewatch.core.filmstrip.encode_gif`).

    Raises:
        ValueError: if ``gif`` is not GIF data.
    """
    if not isinstance(gif, bytes) or not gif.startswith((b"GIF87a", b"GIF89a")):
        raise ValueError(f"`gif` must hold the bytes of a GIF file, got {type(gif).__name__}")
    event.images.append(LoggedAnimation(key, to_uint8(still), caption, gif))
