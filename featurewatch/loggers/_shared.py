"""Helpers every adapter shares, so that all back-ends bin, caption and name things the same way.

Nothing here imports a logging back-end; matplotlib is imported only when a histogram is drawn.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from featurewatch.loggers.base import LoggedImage

#: Bins of every histogram featurewatch draws or stores itself (TensorBoard bins on its own).
HISTOGRAM_BINS = 30


@dataclass(frozen=True)
class Histogram:
    """Raw values binned once: ``counts[i]`` values fall in ``[edges[i], edges[i + 1])``.

    Non-finite values cannot be binned; they are counted in ``nonfinite`` and left out.
    """

    counts: np.ndarray  # (bins,) int64
    edges: np.ndarray  # (bins + 1,) float64
    nonfinite: int

    @property
    def empty(self) -> bool:
        """No finite value to show (every back-end skips such a histogram except the files)."""
        return self.counts.size == 0


def finite_values(values: np.ndarray) -> tuple[np.ndarray, int]:
    """The finite entries of ``values`` and how many were dropped (NaN/inf break every binner)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    mask = np.isfinite(values)
    return values[mask], int(values.size - mask.sum())


def bin_values(values: np.ndarray, bins: int = HISTOGRAM_BINS) -> Histogram:
    """Bin raw values into ``bins`` equal-width bins over their finite range."""
    finite, dropped = finite_values(values)
    if finite.size == 0:
        return Histogram(np.zeros(0, np.int64), np.zeros(0, np.float64), dropped)
    counts, edges = np.histogram(finite, bins=bins)
    return Histogram(counts.astype(np.int64), edges.astype(np.float64), dropped)


def histogram_image(hist: Histogram, title: str = "") -> np.ndarray:
    """Draw a binned histogram as an ``(H, W, 3)`` ``uint8`` bar chart.

    For back-ends without a histogram type (MLflow): an image is what their UI can show per step.
    Uses a bare :class:`matplotlib.figure.Figure` (no pyplot state, no display needed).
    """
    from matplotlib.figure import Figure

    from featurewatch.core.images import figure_to_array

    fig = Figure(figsize=(4.0, 2.4), dpi=80)
    ax = fig.add_subplot()
    if hist.empty:
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    else:
        widths = np.diff(hist.edges)
        ax.bar(hist.edges[:-1], hist.counts, width=widths, align="edge", color="#4c72b0")
    if hist.nonfinite:
        title = f"{title} ({hist.nonfinite} non-finite left out)".strip()
    if title:
        ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return figure_to_array(fig, close=False)


def check_pixels(image: LoggedImage) -> np.ndarray:
    """Return ``image.pixels`` after checking it is what :func:`~featurewatch.core.images.to_uint8`
    makes; a sink never converts pixels itself (all back-ends must show the same image)."""
    pixels = image.pixels
    if (
        not isinstance(pixels, np.ndarray)
        or pixels.dtype != np.uint8
        or pixels.ndim != 3
        or pixels.shape[2] != 3
    ):
        dtype, shape = getattr(pixels, "dtype", ""), getattr(pixels, "shape", "")
        got = f"{type(pixels).__name__} {dtype} {shape}".strip()
        raise TypeError(
            f"image {image.key!r}: expected an (H, W, 3) uint8 array, got {got}; add images with "
            "Event.add_image / Event.add_figure, which convert them"
        )
    return pixels


#: A caption's own leading context: "epoch 0, step 24: ...", "step 24, epoch 0 - ...",
#: "epoch 0 · step 24 · ...", "step 24: ..." (one or both, in either order).
_CONTEXT = re.compile(
    r"(?P<k1>epoch|step) (?P<v1>\d+)(?:\s*[,·;]\s*(?P<k2>epoch|step) (?P<v2>\d+))?"
    r"\s*(?:(?:[:·,;|–—]|-(?=\s))\s*|$)",
    re.IGNORECASE,
)


def strip_context(caption: str, step: int, epoch: int) -> str:
    """``caption`` without a leading "epoch E, step S" that repeats the event's own epoch/step.

    Callbacks may start a caption with its context in either order ("epoch 0, step 24: ..." or
    "step 24, epoch 0: ..."); the back-ends put the context in front themselves, in one order,
    so the caption's own copy would be said twice. A leading context naming another step or
    epoch (a reference point, e.g. "step 10: first seen") is part of the message and is kept.
    """
    match = _CONTEXT.match(caption.lstrip())
    if match is None:
        return caption
    found = {match["k1"].lower(): int(match["v1"])}
    if match["k2"] is not None:
        if match["k2"].lower() in found:
            return caption  # "step 3, step 4": not a context
        found[match["k2"].lower()] = int(match["v2"])
    if found.get("step", step) != step or found.get("epoch", epoch) != epoch:
        return caption
    return caption.lstrip()[match.end() :]


def context_caption(caption: str, step: int, epoch: int) -> str:
    """``"epoch 3 · step 120 · <caption>"``: where in training an image comes from.

    Dashboards show the step on a slider but not the epoch; the caption carries both, always in
    this order. A caption that already starts with the same epoch and/or step (in any order, see
    :func:`strip_context`) does not get them twice: ``"step 120, epoch 3: on-rate"`` becomes
    ``"epoch 3 · step 120 · on-rate"``.
    """
    head = f"epoch {epoch} · step {step}"
    caption = strip_context(caption, step, epoch)
    return f"{head} · {caption}" if caption else head


def key_group(key: str) -> str:
    """The part of a key before its last ``/`` (``featurewatch/<what>``), or ``""``."""
    return key.rsplit("/", 1)[0] if "/" in key else ""


def captions_by_group(images: Iterable[LoggedImage], step: int, epoch: int) -> dict[str, str]:
    """One Markdown table per key group listing the captions of that group's images.

    Back-ends whose images carry no caption (TensorBoard, MLflow) log this as one text entry per
    callback and step (``<group>/captions``) instead of one per image, which would flood their UI.
    Each table is headed ``epoch E · step S`` (the same head as :func:`context_caption`), so the
    cells leave out a leading context that repeats it (:func:`strip_context`).
    Groups whose images all have empty captions are left out.
    """
    rows: dict[str, list[str]] = {}
    for image in images:
        if image.caption:
            name = image.key[len(key_group(image.key)) :].lstrip("/")
            text = strip_context(image.caption, step, epoch) or image.caption
            cell = text.replace("|", "\\|").replace("\n", " ")
            rows.setdefault(key_group(image.key), []).append(f"| `{name}` | {cell} |")
    head = context_caption("", step, epoch)
    return {
        group: f"{head}\n\n| image | caption |\n|---|---|\n" + "\n".join(lines)
        for group, lines in rows.items()
    }


def captions_key(group: str) -> str:
    """The text key under which :func:`captions_by_group` output is logged."""
    return f"{group}/captions" if group else "captions"


_UNSAFE = re.compile(r"[^A-Za-z0-9_.\- ]")


def safe_segments(key: str, *, allow_space: bool = False) -> list[str]:
    """Split a key at ``/`` into segments safe as file and artifact names.

    Characters other than letters, digits, ``_``, ``.``, ``-`` (and space if allowed) become ``_``;
    empty, ``.`` and ``..`` segments become ``_`` so that a key can never leave its directory.
    """
    out = []
    for segment in key.split("/"):
        segment = _UNSAFE.sub("_", segment)
        if not allow_space:
            segment = segment.replace(" ", "_")
        out.append("_" if segment in ("", ".", "..") else segment)
    return out
