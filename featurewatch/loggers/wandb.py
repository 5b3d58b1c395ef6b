"""Weights & Biases adapter: one ``run.log`` call per event, stepped like ``WandbLogger``."""

from __future__ import annotations

import contextlib
import html
import io
import logging
import warnings
from typing import Any

import numpy as np

from featurewatch.loggers._shared import bin_values, check_pixels, context_caption
from featurewatch.loggers.base import Event, Sink, WriteReport

__all__ = ["WandbSink", "wandb_row"]

#: W&B shows at most this many images under one key of one ``log`` call.
MAX_IMAGES_PER_KEY = 108

#: The step field ``WandbLogger.log_metrics`` adds to every row (and defines as the x-axis of
#: ``*``).
STEP_KEY = "trainer/global_step"

#: The epoch field Lightning adds to every row it logs (``LoggerConnector``: ``epoch``).
EPOCH_KEY = "epoch"

#: Fields every featurewatch row carries; an item under one of these keys is moved aside.
ROW_FIELDS = (STEP_KEY, EPOCH_KEY)

#: The keys :class:`WandbSink` defines with ``STEP_KEY`` as their x-axis.
METRIC_GLOB = "featurewatch/*"


class WandbSink(Sink):
    """Write events to a W&B run with a single ``run.log`` call each.

    Like Lightning's own rows, every row carries ``"trainer/global_step": step`` and
    ``"epoch": epoch``, and there is no ``step=`` argument: Lightning lets W&B count its own
    ``_step`` and makes ``trainer/global_step`` the x-axis of every metric, so passing ``step=``
    here would clash with (and drop) Lightning's own rows. One call per event keeps an event's
    media on one ``_step``, so image panels line up.

    Steps: the sink defines ``featurewatch/*`` with ``trainer/global_step`` as its step metric
    (``run.define_metric``; ``WandbLogger`` defines ``*`` the same way, a run made by
    ``wandb.init`` gets it here), so featurewatch's charts have the global step as x-axis. Media
    cannot be stepped that way from the SDK: W&B names media files after its own ``_step``
    (``media/images/<key>_<_step>_<hash>.png``) and image panels step through ``_step`` unless the
    panel's stepper metric is set to ``trainer/global_step`` in the W&B app. Captions therefore
    start with ``epoch E · step S`` (the global step), in that order, without repeating a
    context the callback's caption already starts with.

    Row contents: images as ``wandb.Image`` (``uint8``, caption prefixed with epoch and step;
    several images under one key become a list, at most 108 of them, W&B's limit), an animated
    image's GIF (:class:`~featurewatch.loggers.LoggedAnimation`) also as ``wandb.Video`` under
    ``<key>/animation`` (the file as it is: no moviepy needed), scalars as
    numbers, histograms as ``wandb.Histogram`` (30 bins over the finite values), tables
    (:meth:`~featurewatch.loggers.Event.add_table`) as ``wandb.Table`` with image cells as
    ``wandb.Image``, texts as ``wandb.Html`` (preformatted). If two items of different kinds
    share a key, the later kind's key gets a ``/<kind>`` suffix instead of overwriting the first
    (and a key
    ``trainer/global_step`` or ``epoch`` is moved aside the same way, so those fields always hold
    the step and epoch). An
    item that cannot be converted
    (``wandb.Image`` refusing an image) is left out of the row and named in the
    :class:`~featurewatch.loggers.SinkWriteError` raised after the rest was logged.

    Args:
        run: a ``wandb`` run, usually ``WandbLogger.experiment``.
    """

    def __init__(self, run: Any) -> None:
        if not callable(getattr(run, "log", None)):
            raise TypeError(
                f"WandbSink needs a wandb run (with `log`), got {type(run).__name__}; "
                "pass WandbLogger.experiment"
            )
        self.run = run
        define = getattr(run, "define_metric", None)
        if callable(define):  # WandbLogger's run and wandb.init's have it; a dummy has not
            try:
                define(STEP_KEY)
                define(METRIC_GLOB, step_metric=STEP_KEY, step_sync=True)
            except Exception as err:  # noqa: BLE001 - an axis hint only; a finished run fails
                logging.getLogger("featurewatch").debug(  # at its first write, loudly
                    "featurewatch: W&B refused define_metric(%r): %s", METRIC_GLOB, err
                )

    @property
    def destination(self) -> str:
        name = getattr(self.run, "name", None) or getattr(self.run, "id", None)
        return f"WandbSink (run {name})" if isinstance(name, str) and name else "WandbSink"

    def write(self, event: Event) -> None:
        if not event:
            return
        report = WriteReport(self, event)
        row = wandb_row(event, report)
        try:
            self.run.log(row)
        except Exception as err:  # noqa: BLE001 - one call: every item of the row is lost
            report.lost(err)
        report.raise_failures()


def wandb_row(event: Event, report: WriteReport | None = None) -> dict[str, Any]:
    """The one row :class:`WandbSink` logs for ``event`` (see its docstring for the contents).

    With a ``report``, an item that cannot be converted is recorded there and left out of the row;
    without one, the conversion error is raised.
    """
    import wandb

    row: dict[str, Any] = {}

    def convert(kind: str, key: str) -> Any:
        return report.item(kind, key) if report is not None else contextlib.nullcontext()

    def put(key: str, kind: str, value: Any) -> None:
        row[f"{key}/{kind}" if key in row or key in ROW_FIELDS else key] = value

    images: dict[str, list[Any]] = {}
    for image in event.images:
        with convert("image", image.key):
            caption = context_caption(image.caption, event.step, event.epoch)
            logged = wandb.Image(check_pixels(image), caption=caption)
            images.setdefault(image.key, []).append(logged)
    for key, items in images.items():
        if len(items) > MAX_IMAGES_PER_KEY:
            warnings.warn(
                f"featurewatch: {len(items)} images under W&B key {key!r} at step {event.step}; "
                f"W&B shows at most {MAX_IMAGES_PER_KEY} per key, logging the first "
                f"{MAX_IMAGES_PER_KEY}. Tile them into one grid image "
                "(featurewatch.core.images.grid) to keep them all.",
                stacklevel=3,
            )
            items = items[:MAX_IMAGES_PER_KEY]
        put(key, "image", items[0] if len(items) == 1 else items)
    for image in event.images:
        gif = getattr(image, "gif", b"")  # a LoggedAnimation: its GIF as a W&B video
        if gif:
            with convert("animation", f"{image.key}/animation"):
                caption = context_caption(image.caption, event.step, event.epoch)
                video = wandb.Video(io.BytesIO(gif), caption=caption, format="gif")
                put(f"{image.key}/animation", "video", video)
    for key, value in event.scalars.items():
        with convert("scalar", key):
            put(key, "scalar", value)
    for key, values in event.histograms.items():
        with convert("histogram", key):
            hist = bin_values(values)
            if not hist.empty:
                put(key, "histogram", wandb.Histogram(np_histogram=(hist.counts, hist.edges)))
    for table in event.tables:
        with convert("table", table.key):
            data = [
                [wandb.Image(c) if isinstance(c, np.ndarray) else c for c in row]
                for row in table.rows
            ]
            put(table.key, "table", wandb.Table(columns=list(table.columns), data=data))
    for key, text in event.texts.items():
        with convert("text", key):
            put(key, "text", wandb.Html(f"<pre>{html.escape(text)}</pre>", inject=False))
    row[STEP_KEY] = event.step
    row[EPOCH_KEY] = event.epoch
    return row
