"""TensorBoard adapter: writes events through the ``SummaryWriter`` of a ``TensorBoardLogger``."""

from __future__ import annotations

from typing import Any

from featurewatch.loggers._shared import (
    captions_by_group,
    captions_key,
    check_pixels,
    finite_values,
)
from featurewatch.loggers.base import Event, Sink, WriteReport

__all__ = ["TensorBoardSink"]


class TensorBoardSink(Sink):
    """Write events to a TensorBoard ``SummaryWriter``.

    Images go to the Images tab (``dataformats="HWC"``, ``uint8``, so the PNG holds exactly the
    logged pixels), scalars to Scalars, raw values to Histograms (TensorBoard bins them) and texts
    to Text. The writer is flushed once per event: TensorBoard otherwise buffers up to 120 s.
    Each item is written on its own: an image TensorBoard refuses costs that image only, and the
    event's other items are still written before a :class:`~featurewatch.loggers.SinkWriteError`
    names what was lost.

    TensorBoard images have no caption, so the captions of one event are logged as a single Markdown
    table per key group, under ``featurewatch/<what>/captions`` (one text entry per callback and
    step instead of one per image). Texts are shown preformatted (indented), because featurewatch
    texts are messages and tracebacks, which Markdown would reflow. Histograms without any finite
    value are left out (TensorBoard cannot bin them); non-finite values are dropped before binning.
    An animated image (:class:`~featurewatch.loggers.LoggedAnimation`) is logged as its still:
    ``add_video`` is broken with moviepy 2 and TensorBoard shows no GIF.

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

    @property
    def destination(self) -> str:
        log_dir = getattr(self.writer, "log_dir", None)
        return f"TensorBoardSink ({log_dir})" if log_dir else "TensorBoardSink"

    def write(self, event: Event) -> None:
        step, report = event.step, WriteReport(self, event)
        for image in event.images:
            with report.item("image", image.key):
                self.writer.add_image(image.key, check_pixels(image), step, dataformats="HWC")
        for group, table in captions_by_group(event.images, step, event.epoch).items():
            with report.item("captions", captions_key(group)):
                self.writer.add_text(captions_key(group), table, step)
        for key, value in event.scalars.items():
            with report.item("scalar", key):
                self.writer.add_scalar(key, value, step)
        for key, values in event.histograms.items():
            with report.item("histogram", key):
                finite, _ = finite_values(values)
                if finite.size:
                    self.writer.add_histogram(key, finite, step)
        for key, text in event.texts.items():
            with report.item("text", key):
                self.writer.add_text(key, _preformatted(text), step)
        try:
            self.writer.flush()
        except Exception as err:  # noqa: BLE001 - what the writer held may not have reached disk
            report.lost(err)
        report.raise_failures()

    def close(self) -> None:
        if not self.broken:
            self.writer.flush()


def _preformatted(text: str) -> str:
    """Markdown code block by indentation (TensorBoard renders text entries as Markdown)."""
    return "\n".join("    " + line for line in text.splitlines()) or "    "
