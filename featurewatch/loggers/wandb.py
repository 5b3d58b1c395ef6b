"""Weights & Biases adapter: one ``run.log`` call per event, stepped like ``WandbLogger``."""

from __future__ import annotations

import html
import warnings
from typing import Any

from featurewatch.loggers._shared import bin_values, check_pixels, context_caption
from featurewatch.loggers.base import Event, Sink

__all__ = ["WandbSink", "wandb_row"]

#: W&B shows at most this many images under one key of one ``log`` call.
MAX_IMAGES_PER_KEY = 108

#: The step field ``WandbLogger.log_metrics`` adds to every row (and defines as the x-axis of ``*``).
STEP_KEY = "trainer/global_step"


class WandbSink(Sink):
    """Write events to a W&B run with a single ``run.log`` call each.

    Like ``WandbLogger.log_metrics``, the row carries ``"trainer/global_step": step`` and no
    ``step=`` argument: Lightning lets W&B count its own ``_step`` and makes ``trainer/global_step``
    the x-axis of every metric, so passing ``step=`` here would clash with (and drop) Lightning's own
    rows. One call per event keeps an event's media on one ``_step``, so image panels line up.

    Row contents: images as ``wandb.Image`` (``uint8``, caption prefixed with epoch and step; several
    images under one key become a list, at most 108 of them, W&B's limit), scalars as numbers,
    histograms as ``wandb.Histogram`` (30 bins over the finite values), texts as ``wandb.Html``
    (preformatted). If two items of different kinds share a key, the later kind's key gets a
    ``/<kind>`` suffix instead of overwriting the first (and a key ``trainer/global_step`` is moved
    aside the same way, so that field always holds the step).

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

    def write(self, event: Event) -> None:
        if event:
            self.run.log(wandb_row(event))


def wandb_row(event: Event) -> dict[str, Any]:
    """The one row :class:`WandbSink` logs for ``event`` (see its docstring for the contents)."""
    import wandb

    row: dict[str, Any] = {}

    def put(key: str, kind: str, value: Any) -> None:
        row[f"{key}/{kind}" if key in row or key == STEP_KEY else key] = value

    images: dict[str, list[Any]] = {}
    for image in event.images:
        caption = context_caption(image.caption, event.step, event.epoch)
        images.setdefault(image.key, []).append(wandb.Image(check_pixels(image), caption=caption))
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
    for key, value in event.scalars.items():
        put(key, "scalar", value)
    for key, values in event.histograms.items():
        hist = bin_values(values)
        if not hist.empty:
            put(key, "histogram", wandb.Histogram(np_histogram=(hist.counts, hist.edges)))
    for key, text in event.texts.items():
        put(key, "text", wandb.Html(f"<pre>{html.escape(text)}</pre>", inject=False))
    row[STEP_KEY] = event.step
    return row
