"""TensorBoard adapter: writes events through the ``SummaryWriter`` of a ``TensorBoardLogger``."""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from typing import Any

from featurewatch.loggers._shared import (
    captions_by_group,
    captions_key,
    check_pixels,
    finite_values,
)
from featurewatch.loggers.base import Event, Sink, WriteReport

__all__ = ["CustomScalarsLayout", "TensorBoardSink"]

#: The tag under which ``SummaryWriter.add_custom_scalars`` stores the layout (TensorBoard's
#: ``custom_scalar.metadata.CONFIG_SUMMARY_TAG``).
LAYOUT_TAG = "custom_scalars__config__"

#: Title of the category holding the charts across callbacks (``featurewatch/<name>/<metric>``).
ACROSS_CALLBACKS = "featurewatch"


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

    Custom Scalars tab: scalars are also combined into one chart per metric
    (:class:`CustomScalarsLayout`, derived from the key scheme alone): a per-layer scalar
    ``featurewatch/<name>/<layer>/<metric>`` joins the chart "<metric> (all layers)" of category
    ``featurewatch/<name>`` (so ``dead_fraction``, ``dying_fraction`` and ``dormant_fraction`` of
    every layer make three charts), and a per-callback scalar ``featurewatch/<name>/<metric>``
    joins the chart "<metric> (all callbacks)" of category ``featurewatch`` (one ``seconds`` chart
    for the wall time of every callback). The layout is written with ``add_custom_scalars`` when
    it first has a chart and again only when a later event brings a new chart or series (a
    callback's first call). TensorBoard's plugin serves the last layout a run wrote (it reads one
    point of ``custom_scalars__config__``, and its down-sampling always keeps the last), so the
    layout is one per writer, shared by the sinks of all callbacks, and each write holds all of
    their charts. A writer without ``add_custom_scalars`` gets no layout.

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
        #: the layout of the writer's run, shared by every sink on this writer (see layout_of)
        self.layout = layout_of(writer)

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
        written = []
        for key, value in event.scalars.items():
            with report.item("scalar", key):
                self.writer.add_scalar(key, value, step)
                written.append(key)
        self.layout.add(written)
        if self.layout.pending and callable(getattr(self.writer, "add_custom_scalars", None)):
            with report.item("layout", LAYOUT_TAG):
                self.writer.add_custom_scalars(self.layout.as_dict())
                self.layout.pending = False  # a failed write is tried again at the next event
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


class CustomScalarsLayout:
    """TensorBoard Custom Scalars charts combining featurewatch scalars, from the key scheme.

    Keys are ``featurewatch/<name>/<layer>/<metric>`` (per layer) or
    ``featurewatch/<name>/<metric>`` (per callback); other keys are not charted. Per-layer
    scalars make one chart per callback and metric holding every layer; per-callback scalars one
    chart per metric holding every callback. Each chart's regular expression matches exactly the
    tags seen (names and layers are escaped: ``features.2`` matches only itself), e.g.
    ``^featurewatch/dead/(?:features\\.2|features\\.5)/dead_fraction$``.

    Example::

        layout = CustomScalarsLayout()
        layout.add(["featurewatch/dead/conv1/dead_fraction", "featurewatch/dead/seconds"])
        writer.add_custom_scalars(layout.as_dict())
    """

    def __init__(self) -> None:
        # (category, metric, per layer) -> the layers (or callback names) seen, in order
        self._charts: dict[tuple[str, str, bool], dict[str, None]] = {}
        #: True from a change until the sink has written the layout
        self.pending = False

    def add(self, keys: Iterable[str]) -> bool:
        """Take in scalar keys; True if a chart or a series was added (the layout changed)."""
        grew = False
        for key in keys:
            parts = key.split("/")
            if len(parts) < 3 or parts[0] != "featurewatch" or "" in parts:
                continue
            if len(parts) == 3:  # featurewatch/<name>/<metric>: one series per callback
                chart, series = (ACROSS_CALLBACKS, parts[2], False), parts[1]
            else:  # featurewatch/<name>/<layer>/<metric>: one series per layer
                chart, series = (f"featurewatch/{parts[1]}", parts[-1], True), "/".join(parts[2:-1])
            seen = self._charts.setdefault(chart, {})
            if series not in seen:
                seen[series] = None
                grew = self.pending = True
        return grew

    def as_dict(self) -> dict[str, dict[str, list[Any]]]:
        """The layout in ``SummaryWriter.add_custom_scalars`` form,
        ``{category: {chart title: ["Multiline", [regex]]}}``: the across-callbacks category
        first, then one category per callback, charts in the order first seen."""
        layout: dict[str, dict[str, list[Any]]] = {}
        ordered = sorted(self._charts.items(), key=lambda item: item[0][0] != ACROSS_CALLBACKS)
        for (category, metric, per_layer), seen in ordered:
            title = f"{metric} (all layers)" if per_layer else f"{metric} (all callbacks)"
            alternatives = "|".join(re.escape(series) for series in seen)
            # the category is the tags' common prefix: featurewatch or featurewatch/<name>
            regex = f"^{re.escape(category)}/(?:{alternatives})/{re.escape(metric)}$"
            layout.setdefault(category, {})[title] = ["Multiline", [regex]]
        return layout

    def __bool__(self) -> bool:
        return bool(self._charts)


#: One layout per writer: every callback has its own sink, all writing to the logger's one writer,
#: and TensorBoard shows only the last layout a run wrote, so each must write the union.
_LAYOUTS: weakref.WeakKeyDictionary[Any, CustomScalarsLayout] = weakref.WeakKeyDictionary()


def layout_of(writer: Any) -> CustomScalarsLayout:
    """The :class:`CustomScalarsLayout` of ``writer``'s run, shared by all sinks on it (and kept
    across ``fit`` calls on one logger, so a second fit adds to the same layout)."""
    try:
        return _LAYOUTS.setdefault(writer, CustomScalarsLayout())
    except TypeError:  # neither hashable nor weakly referable: a layout of this sink's own
        return CustomScalarsLayout()
