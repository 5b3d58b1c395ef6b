"""The one small interface between callbacks and logging back-ends.

A callback fills an :class:`Event` (everything one call produced, at one step) and hands it to every
:class:`Sink`; each sink writes the whole event in one go (W&B in a single ``log`` call, TensorBoard
followed by one ``flush``). No callback knows which back-ends exist.

Faults stay as small as they can be:

* one item that cannot be written (an image TensorBoard refuses) costs only that item: a sink writes
  every item independently (:class:`WriteReport`) and then raises one :class:`SinkWriteError` that
  lists the items it lost, so the caller warns once per event, not once per item;
* a sink that cannot write at all (a read-only log folder, a finished W&B run) is marked
  :attr:`Sink.broken` after its first such failure, which raises :class:`SinkBrokenError` once; from
  then on it receives nothing (its ``write`` returns at once), so the caller warns once per sink,
  and :func:`any_healthy` tells a callback when no sink can receive its work any more.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import torch

from featurewatch.core.images import figure_to_array, to_uint8

__all__ = [
    "Event",
    "FailedItem",
    "LoggedImage",
    "LoggedTable",
    "Sink",
    "SinkBrokenError",
    "SinkWriteError",
    "WriteReport",
    "any_healthy",
]

#: Failed items named in a :class:`SinkWriteError` message (all of them stay in ``failed``).
ITEMS_IN_MESSAGE = 5


@dataclass(frozen=True)
class LoggedImage:
    """An ``(H, W, 3)`` ``uint8`` image with its caption."""

    key: str
    pixels: np.ndarray
    caption: str = ""


#: A table cell: text, a number, or an image (``(H, W, 3)`` ``uint8``; see :meth:`Event.add_table`).
Cell = str | int | float | np.ndarray


@dataclass(frozen=True)
class LoggedTable:
    """Rows of cells under named columns (W&B shows them as a ``wandb.Table``)."""

    key: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


@dataclass
class Event:
    """Everything one featurewatch call logs at one training step.

    Keys follow ``featurewatch/<what>/<layer>``. ``step`` is the trainer's global step and
    ``epoch`` the current epoch (sinks put it in captions / metadata).
    """

    step: int
    epoch: int
    images: list[LoggedImage] = field(default_factory=list)
    scalars: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, np.ndarray] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    tables: list[LoggedTable] = field(default_factory=list)

    def add_image(self, key: str, image: torch.Tensor | np.ndarray, caption: str = "") -> None:
        """Add a display image (``(C, H, W)`` float in [0, 1], or ``(H, W, C)`` array/``uint8``)."""
        self.images.append(LoggedImage(key, to_uint8(image), caption))

    def add_figure(self, key: str, figure: Any, caption: str = "") -> None:
        """Add a matplotlib figure; it is rasterized here and closed."""
        self.images.append(LoggedImage(key, figure_to_array(figure), caption))

    def add_scalar(self, key: str, value: float) -> None:
        self.scalars[key] = float(value)

    def add_histogram(self, key: str, values: torch.Tensor | np.ndarray | Sequence[float]) -> None:
        """Add raw values; each sink bins them its own way."""
        if isinstance(values, torch.Tensor):
            values = values.detach().float().cpu().numpy()
        self.histograms[key] = np.asarray(values, dtype=np.float64).ravel()

    def add_text(self, key: str, text: str) -> None:
        self.texts[key] = str(text)

    def add_table(
        self,
        key: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[str | int | float | torch.Tensor | np.ndarray]],
    ) -> None:
        """Add a table: one row per item, cells of text, numbers or images (``(C, H, W)`` float in
        [0, 1] or ``(H, W, C)`` arrays, converted here).

        W&B shows it as a sortable ``wandb.Table``; the other back-ends skip tables (what a
        callback puts in one is also in the caption of its image).

        Raises:
            ValueError: if a row's length differs from the columns'.
        """
        names = tuple(str(c) for c in columns)
        converted = []
        for row in rows:
            if len(row) != len(names):
                raise ValueError(
                    f"table {key!r}: a row of {len(row)} cells for {len(names)} columns"
                )
            converted.append(
                tuple(to_uint8(c) if isinstance(c, (torch.Tensor, np.ndarray)) else c for c in row)
            )
        self.tables.append(LoggedTable(key, names, tuple(converted)))

    def __bool__(self) -> bool:
        return bool(self.images or self.scalars or self.histograms or self.texts or self.tables)


@dataclass(frozen=True)
class FailedItem:
    """One item of an event that a sink could not write.

    ``kind`` is ``"image"``, ``"scalar"``, ``"histogram"``, ``"text"``, ``"captions"`` or a
    sink's own kind (e.g. ``"page"`` for the files sink's ``index.html``).
    """

    kind: str
    key: str
    error: BaseException

    def __str__(self) -> str:
        return f"{self.kind} {self.key!r} ({type(self.error).__name__}: {self.error})"


class SinkWriteError(RuntimeError):
    """A sink wrote an event only in part: ``failed`` lists what it lost, the rest was written.

    Attributes:
        sink: name of the sink and where it writes, e.g. ``"FilesSink (runs/featurewatch)"``.
        step: the event's step.
        failed: every item that could not be written, with its error.
        written: how many items were written.
    """

    def __init__(self, sink: str, step: int, failed: Sequence[FailedItem], written: int) -> None:
        self.sink, self.step, self.failed, self.written = sink, step, tuple(failed), written
        named = "; ".join(str(item) for item in self.failed[:ITEMS_IN_MESSAGE])
        more = len(self.failed) - ITEMS_IN_MESSAGE
        if more > 0:
            named += f"; and {more} more"
        super().__init__(
            f"{sink} could not write {len(self.failed)} of {len(self.failed) + written} item(s) "
            f"at step {step}: {named}. The other items of this event were written."
        )


class SinkBrokenError(SinkWriteError):
    """A sink could write nothing of an event; it is now :attr:`Sink.broken` and gets no more."""

    def __init__(self, sink: str, step: int, failed: Sequence[FailedItem], cause: str) -> None:
        self.sink, self.step, self.failed, self.written = sink, step, tuple(failed), 0
        RuntimeError.__init__(
            self,
            f"{sink} could not write anything at step {step} ({cause}); featurewatch sends it "
            "nothing more in this run (check that the destination is writable, e.g. the log "
            "folder's permissions, free space, or that the logger's run is still open)",
        )


class WriteReport:
    """Write each item of one event independently, then report the ones that failed.

    A sink wraps each item's write in :meth:`item`; an exception there is recorded, not raised,
    so the next item is still written. :meth:`raise_failures` at the end raises one
    :class:`SinkWriteError` listing every lost item (or nothing if all were written).

    Example::

        report = WriteReport(self, event)
        for image in event.images:
            with report.item("image", image.key):
                self.writer.add_image(image.key, image.pixels, event.step)
        report.raise_failures()

    Args:
        sink: the sink writing (named in the error through :attr:`Sink.destination`).
        event: the event being written.
    """

    def __init__(self, sink: Sink, event: Event) -> None:
        self.sink, self.step = sink, event.step
        self.written: list[tuple[str, str]] = []
        self.failed: list[FailedItem] = []

    def item(self, kind: str, *keys: str) -> _Item:
        """Context for writing the item(s) ``keys`` of ``kind`` as one unit (``log_batch`` of
        several scalars fails or succeeds for all of them)."""
        return _Item(self, kind, keys)

    def lost(self, error: BaseException) -> None:
        """The items counted as written were lost after all (the call that would have stored them,
        such as W&B's one ``log`` or the files sink's append, failed)."""
        self.failed.extend(FailedItem(kind, key, error) for kind, key in self.written)
        self.written = []

    def raise_failures(self) -> None:
        """Raise one :class:`SinkWriteError` naming every failed item, if any failed."""
        if self.failed:
            raise SinkWriteError(self.sink.destination, self.step, self.failed, len(self.written))


class _Item:
    def __init__(self, report: WriteReport, kind: str, keys: tuple[str, ...]) -> None:
        self.report, self.kind, self.keys = report, kind, keys

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            self.report.written.extend((self.kind, key) for key in self.keys)
            return False
        if not isinstance(exc, Exception):
            return False  # KeyboardInterrupt and the like are not write failures
        self.report.failed.extend(FailedItem(self.kind, key, exc) for key in self.keys)
        return True


class Sink(ABC):
    """A logging back-end.

    Implementations define :meth:`write` and should write every item of the event independently
    (see :class:`WriteReport`), raising a :class:`SinkWriteError` for the items they lost. The base
    class wraps every subclass's ``write`` so that the protocol holds for any sink, built in or
    registered with :func:`~featurewatch.loggers.register_sink`:

    * a write that could store nothing marks the sink :attr:`broken` and raises
      :class:`SinkBrokenError` (chained to the cause) once, so the caller warns once. "Nothing":
      it raised anything but a partial :class:`SinkWriteError`, except a ``TypeError`` or
      ``ValueError`` (or a :class:`SinkWriteError` of only those), which say that the event's
      values were refused (an empty image), not the destination;
    * a broken sink's ``write`` returns at once: it receives no more events in this run (sinks are
      built anew for each ``fit``).
    """

    #: True once a write could store nothing; the sink then receives no more events.
    broken: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        write = cls.__dict__.get("write")
        if write is not None and not getattr(write, "_guarded", False):
            cls.write = _guarded(write)  # type: ignore[method-assign]

    @property
    def healthy(self) -> bool:
        """False once the sink is :attr:`broken`."""
        return not self.broken

    @property
    def destination(self) -> str:
        """The sink's name and where it writes, for messages (adapters add their folder/run)."""
        return type(self).__name__

    @abstractmethod
    def write(self, event: Event) -> None:
        """Write every item of ``event`` at ``event.step``."""

    def close(self) -> None:
        """Release resources (called at the end of fit)."""


def any_healthy(sinks: Iterable[Sink]) -> bool:
    """True if at least one of ``sinks`` can still receive events (is not :attr:`Sink.broken`).

    A callback checks it before computing: when every sink has failed (or there is none), nothing
    could receive the work, so it is not worth doing.
    """
    return any(sink.healthy for sink in sinks)


def _guarded(write: Callable[[Sink, Event], None]) -> Callable[[Sink, Event], None]:
    """``write`` with the broken-sink protocol of :class:`Sink` around it."""

    @functools.wraps(write)
    def guarded(self: Sink, event: Event) -> None:
        if self.broken:
            return
        try:
            write(self, event)
        except SinkBrokenError:
            raise  # a parent class's write, called through super(), already marked it
        except SinkWriteError as err:
            if err.written or all(_refused(item.error) for item in err.failed):
                raise
            self.broken = True
            raise SinkBrokenError(
                self.destination, err.step, err.failed, _first_cause(err)
            ) from err
        except Exception as err:
            if _refused(err):
                raise
            self.broken = True
            cause = f"{type(err).__name__}: {err}"
            raise SinkBrokenError(self.destination, event.step, (), cause) from err

    guarded._guarded = True  # type: ignore[attr-defined]
    return guarded


def _refused(error: BaseException) -> bool:
    """A ``TypeError``/``ValueError`` says that a value was refused (an empty image, wrong pixel
    type), not that the destination failed: the next event may well be written."""
    return isinstance(error, (TypeError, ValueError))


def _first_cause(err: SinkWriteError) -> str:
    first = next((item.error for item in err.failed if not _refused(item.error)), err)
    return f"{type(first).__name__}: {first}"
