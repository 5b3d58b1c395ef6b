"""The one small interface between callbacks and logging back-ends.

A callback fills an :class:`Event` (everything one call produced, at one step) and hands it to every
:class:`Sink`; each sink writes the whole event in one go (W&B in a single ``log`` call, TensorBoard
followed by one ``flush``). No callback knows which back-ends exist.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from featurewatch.core.images import figure_to_array, to_uint8

__all__ = ["Event", "LoggedImage", "Sink"]


@dataclass(frozen=True)
class LoggedImage:
    """An ``(H, W, 3)`` ``uint8`` image with its caption."""

    key: str
    pixels: np.ndarray
    caption: str = ""


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

    def __bool__(self) -> bool:
        return bool(self.images or self.scalars or self.histograms or self.texts)


class Sink(ABC):
    """A logging back-end. Implementations write an :class:`Event` completely or raise."""

    @abstractmethod
    def write(self, event: Event) -> None:
        """Write every item of ``event`` at ``event.step``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (called at the end of fit)."""
