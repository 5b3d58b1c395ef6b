"""Say on the progress bar what featurewatch is doing while it works.

An epoch-end call can take tens of seconds (optimized images of several layers); without a word the
bar sits at 100% and the run looks hung. During a call, the description of Lightning's training
bar (``TQDMProgressBar``) says which callback runs and, when the callback reports it, which part
(``featurewatch: ChannelVisualization · features.5 (2/4)``), then gets its own text back. Only on
an interactive terminal: in a log file every refresh would be one more line, so there nothing is
written. Other progress bars (``RichProgressBar``, none) are left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

__all__ = ["Announcer"]


def _bar(trainer: Any) -> Any | None:
    """The training bar of a ``TQDMProgressBar`` on a terminal, else ``None``."""
    callback = getattr(trainer, "progress_bar_callback", None)
    try:
        bar = callback.train_progress_bar  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - no TQDM bar, or not created yet
        return None
    stream = getattr(bar, "fp", None)
    isatty = getattr(stream, "isatty", None)
    if (
        getattr(bar, "disable", True)
        or not callable(isatty)
        or not callable(getattr(bar, "set_description_str", None))
    ):
        return None
    try:
        return bar if isatty() else None
    except (OSError, ValueError):  # a closed stream
        return None


class Announcer:
    """The text on the bar for one callback's calls (see the module docstring)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._bar: Any | None = None

    @contextmanager
    def during(self, trainer: Any) -> Iterator[None]:
        """Show ``featurewatch: <what>`` while the body runs; restore the bar's text after."""
        self._bar = _bar(trainer)
        if self._bar is None:
            yield
            return
        before = self._bar.desc
        try:
            self.say("")
            yield
        finally:
            bar, self._bar = self._bar, None
            with suppress(Exception):  # a closed bar: nothing to restore
                bar.set_description_str(before, refresh=True)

    def say(self, detail: str) -> None:
        """Update the text with ``detail`` (e.g. the layer being drawn); a no-op off a terminal."""
        if self._bar is None:
            return
        text = f"featurewatch: {self.what}" + (f" · {detail}" if detail else "")
        try:
            self._bar.set_description_str(text, refresh=True)
        except Exception:  # noqa: BLE001 - the bar must never cost the call
            self._bar = None
