"""TensorBoard adapter: writes events through the ``SummaryWriter`` of a ``TensorBoardLogger``."""

from __future__ import annotations

from typing import Any

from featurewatch.loggers._shared import (
    captions_by_group,
    captions_key,
    check_pixels,
    finite_values,
)
from featurewatch.loggers.base import Event, Sink

__all__ = ["TensorBoardSink"]


class TensorBoardSink(Sink):
    """Write events to a TensorBoard ``SummaryWriter``.

    Images go to the Images tab (``dataformats="HWC"``, ``uint8``, so the PNG holds exactly the
    logged pixels), scalars to Scalars, raw values to Histograms (TensorBoard bins them) and texts
    to Text. The writer is flushed once per event: TensorBoard otherwise buffers up to 120 s.

    TensorBoard images have no caption, so the captions of one event are logged as a single Markdown
    table per key group, under ``featurewatch/<what>/captions`` (one text entry per callback and
    step instead of one per image). Texts are shown preformatted (indented), because featurewatch
    texts are messages and tracebacks, which Markdown would reflow. Histograms without any finite
    value are left out (TensorBoard cannot bin them); non-finite values are dropped before binning.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (or tensorboardX's), usually
            ``TensorBoardLogger.experiment``. It stays owned by the logger: :meth:`close` only
            flushes it.
    """

    def __init__(self, writer: Any) -> None:
        for method in ("add_image", "add_scalar", "add_histogram", "add_text", "flush"):
            if not callable(getattr(writer, method, None)):
                raise TypeError(
                    f"TensorBoardSink needs a SummaryWriter (with `{method}`), "
                    f"got {type(writer).__name__}; pass TensorBoardLogger.experiment"
                )
        self.writer = writer

    def write(self, event: Event) -> None:
        step = event.step
        for image in event.images:
            self.writer.add_image(image.key, check_pixels(image), step, dataformats="HWC")
        for group, table in captions_by_group(event.images, step, event.epoch).items():
            self.writer.add_text(captions_key(group), table, step)
        for key, value in event.scalars.items():
            self.writer.add_scalar(key, value, step)
        for key, values in event.histograms.items():
            finite, _ = finite_values(values)
            if finite.size:
                self.writer.add_histogram(key, finite, step)
        for key, text in event.texts.items():
            self.writer.add_text(key, _preformatted(text), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()


def _preformatted(text: str) -> str:
    """Markdown code block by indentation (TensorBoard renders text entries as Markdown)."""
    return "\n".join("    " + line for line in text.splitlines()) or "    "
